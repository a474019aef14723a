r"""Blind gain calibration: recover an image x and unknown sensor gains d from p snapshots y_l = diag(d) A_l x + noise
through known sensing matrices A_l (Cambareri & Jacques 2019; Ling & Strohmer 2018).

    result = imaging.calibration.calibrate(y, A, method="pgd")     # y (p, m), A (p, m, n)
    result.x (n,), result.gains (m,) with mean 1, result.history["loss"], ...

Methods: "pgd" (projected gradient descent with exact line searches, `pgd`), "ls" (linear least squares in
(1/d, x), `least_squares`), "spectral" (smallest singular vector, `spectral`), "alternating" (closed-form gains +
CG on the image, `alternating`), "uncalibrated" (least squares with unit gains, the baseline). The gains and the
image are only defined up to a common scale: every estimate is normalised to mean gain 1.
"""
from __future__ import annotations

import torch

from imaging.calibration.alternating import Alternating, alternating, image_cg, uncalibrated
from imaging.calibration.common import (CalibrationResult, CalibrationSolver, back_projection, fix_gauge, project_gains,
                                        relative_error)
from imaging.calibration.least_squares import least_squares, spectral
from imaging.calibration.pgd import PGD, pgd
from imaging.calibration.sensing import DenseGainSensing, GainSensing, RandomMaskDCTSensing

METHODS = {"pgd": pgd, "ls": least_squares, "spectral": spectral, "alternating": alternating,
           "uncalibrated": uncalibrated}


def calibrate(y: torch.Tensor, A: torch.Tensor | GainSensing, method: str = "pgd", **options) -> CalibrationResult:
    """Estimate the image and the gains from measurements y of shape (p, m) (or (B, p, m) for B problems) through
    dense sensing matrices A of shape (p, m, n) (or (B, p, m, n)) or any `GainSensing` operator.

    options go to the method's function (e.g. rho, max_iter, tol, x_true, gains_true, progress). Returns a
    `CalibrationResult` with x (n,), gains (m,) (mean 1) and the history; batched input keeps the leading B."""
    if method not in METHODS:
        raise ValueError(f"calibrate: argument 'method' must be one of {sorted(METHODS)}, got {method!r}")
    sensing = A if isinstance(A, GainSensing) else DenseGainSensing(A)
    if not isinstance(y, torch.Tensor) or y.dim() not in (2, 3):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"calibrate: argument 'y' must have shape (p, m) or (B, p, m), got {got}")
    single = y.dim() == 2
    result = METHODS[method](sensing, y[None] if single else y, **options)
    return result.squeeze() if single else result


__all__ = ["calibrate", "CalibrationResult", "CalibrationSolver", "PGD", "Alternating", "GainSensing", "DenseGainSensing",
           "RandomMaskDCTSensing", "pgd",
           "least_squares", "spectral", "alternating", "uncalibrated", "image_cg", "project_gains", "fix_gauge",
           "relative_error", "back_projection", "METHODS"]
