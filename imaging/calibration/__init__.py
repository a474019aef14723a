r"""Blind gain calibration: recover an image x and unknown sensor gains d from p snapshots y_l = diag(d) A_l x + noise
through known sensing matrices A_l (Cambareri & Jacques 2019; Ling & Strohmer 2018).

    result = imaging.calibration.calibrate(y, A, method=pgd)     # y (p, m), A (p, m, n)
    result.x (n,), result.gains (m,) with mean 1, result.history["loss"], ...

Methods: `pgd` (projected gradient descent with exact line searches), `least_squares` (linear least squares in
(1/d, x)), `spectral` (smallest singular vector), `alternating` (closed-form gains + CG on the image),
`uncalibrated` (least squares with unit gains, the baseline); each a function and (but the baseline) a
`CalibrationSolver` class on the library's loop (`PGD`, `LeastSquares`, `Spectral`, `Alternating`). The gains and the
image are only defined up to a common scale: every estimate is normalised to mean gain 1.
"""
from __future__ import annotations

import warnings

import torch

from imaging.calibration.alternating import Alternating, alternating, image_cg, uncalibrated
from imaging.calibration.common import (CalibrationResult, CalibrationSolver, back_projection, fix_gauge, project_gains,
                                        relative_error)
from imaging.calibration.least_squares import LeastSquares, Spectral, least_squares, spectral
from imaging.calibration.pgd import PGD, pgd
from imaging.calibration.sensing import DenseGainSensing, GainSensing, RandomMaskDCTSensing

_DEPRECATED_NAMES = {"pgd": pgd, "ls": least_squares, "spectral": spectral, "alternating": alternating,
                     "uncalibrated": uncalibrated}


def calibrate(y: torch.Tensor, A: torch.Tensor | GainSensing, method=pgd, **options) -> CalibrationResult:
    """Estimate the image and the gains from measurements y of shape (p, m) (or (B, p, m) for B problems) through
    dense sensing matrices A of shape (p, m, n) (or (B, p, m, n)) or any `GainSensing` operator.

    method: the solver, a function (`pgd`, `least_squares`, `spectral`, `alternating`, `uncalibrated`) or a
    `CalibrationSolver` class (`PGD`, `LeastSquares`, `Spectral`, `Alternating`); a name ("pgd", "ls", ...) is
    deprecated. options go to it (e.g. rho, max_iter, tol, x_true, gains_true, progress). Returns a
    `CalibrationResult` with x (n,), gains (m,) (mean 1) and the history; batched input keeps the leading B."""
    if isinstance(method, str):
        if method not in _DEPRECATED_NAMES:
            raise ValueError(f"calibrate: argument 'method' must be a calibration solver (e.g. imaging.calibration.pgd "
                             f"or PGD); names are deprecated and must be one of {sorted(_DEPRECATED_NAMES)}, got "
                             f"{method!r}")
        warnings.warn(f"calibrate: method={method!r} is deprecated; pass the solver itself, e.g. "
                      f"method=imaging.calibration.{_DEPRECATED_NAMES[method].__name__}", DeprecationWarning,
                      stacklevel=2)
        method = _DEPRECATED_NAMES[method]
    if not callable(method):
        raise TypeError(f"calibrate: argument 'method' must be a calibration solver function or CalibrationSolver "
                        f"class, got {type(method).__name__}")
    sensing = A if isinstance(A, GainSensing) else DenseGainSensing(A)
    if not isinstance(y, torch.Tensor) or y.dim() not in (2, 3):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"calibrate: argument 'y' must have shape (p, m) or (B, p, m), got {got}")
    single = y.dim() == 2
    result = method(sensing, y[None] if single else y, **options)
    if isinstance(result, CalibrationSolver):
        result = result.run()
    return result.squeeze() if single else result


def __getattr__(name: str):
    if name == "METHODS":  # removed from the API: the names now live at the CLI's edge
        warnings.warn("imaging.calibration.METHODS is deprecated; pass the solver itself to calibrate (e.g. "
                      "method=imaging.calibration.pgd)", DeprecationWarning, stacklevel=2)
        return dict(_DEPRECATED_NAMES)
    raise AttributeError(f"module 'imaging.calibration' has no attribute {name!r}")


__all__ = ["calibrate", "CalibrationResult", "CalibrationSolver", "PGD", "LeastSquares", "Spectral", "Alternating",
           "GainSensing", "DenseGainSensing", "RandomMaskDCTSensing", "pgd", "least_squares", "spectral",
           "alternating", "uncalibrated", "image_cg", "project_gains", "fix_gauge", "relative_error",
           "back_projection"]
