r"""Alternating minimisation baseline for blind gain calibration (a StEFCal-like anchor; in neither paper).

Alternate, on f(ξ, γ) = ½ Σ_l ‖γ ⊙ A_l ξ − y_l‖²:
- the closed-form per-sensor gain update γ_i = Σ_l ū_{li} y_{li} / Σ_l |u_{li}|² (u = A ξ), rescaled to mean 1;
- a few conjugate-gradient steps on ξ for the normal equations Aᴴ diag(|γ|²) A ξ = Aᴴ(γ̄ ⊙ y), warm-started.
Each CG step is one `normal_pass`; the right-hand side comes out of the same pass as the first residual.
"""
from __future__ import annotations

import torch

from imaging.calibration.common import (CalibrationResult, CalibrationSolver, History, back_projection,
                                        check_measurements, expand_truth, loss_of)
from imaging.calibration.sensing import GainSensing
from imaging.solvers.base import check_option
from imaging.linalg import conjugate_gradient


def image_cg(sensing: GainSensing, xi: torch.Tensor, weights: torch.Tensor, c: torch.Tensor, steps: int,
             tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The library's conjugate gradient on Aᴴ diag(w) A ξ = Aᴴ c from ξ, for at most `steps` steps or until
    ‖residual‖ <= tol ‖initial residual‖ per sample; A ξ is kept alongside (from the fused passes' A d).
    Returns (ξ, u = A ξ, passes over the matrices)."""
    u, Q, rhs, _ = sensing.normal_pass(xi, weights, c)

    def normal(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, Ad, _, _ = sensing.normal_pass(d, weights)
        return Ad, v

    result = conjugate_gradient(normal, rhs, xi, tol=tol, max_iter=steps, relative_to_start=True, track=True,
                                aux0=u, residual0=rhs - Q)
    return result.x, result.aux, 1 + result.matvecs


def uncalibrated(sensing: GainSensing, y: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-10,
                 x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                 progress: bool = False) -> CalibrationResult:
    """The baseline that ignores the gains: least squares min Σ_l ‖A_l x − y_l‖² (by CG), gains = 1."""
    owner = "calibration.uncalibrated"
    check_measurements(sensing, y, owner)
    B, p, m = y.shape
    history = History(expand_truth(x_true, B), expand_truth(gains_true, B), 1, progress, "uncalibrated")
    with torch.no_grad():
        ones = torch.ones(B, m, dtype=y.dtype, device=y.device)
        xi = back_projection(sensing, y)
        history.record(xi, ones, loss_of(sensing.sense(xi) - y), 2)
        xi, u, passes = image_cg(sensing, xi, ones.real, y, max_iter, tol)
        history.record(xi, ones, loss_of(u - y), 2 + passes)
    return history.result(xi, ones, 1, torch.ones(B, dtype=torch.bool, device=y.device))


class Alternating(CalibrationSolver):
    """Alternating minimisation on the library's loop (see `alternating`): a step is one outer iteration."""

    name = "alternating"

    def __init__(self, sensing: GainSensing, y: torch.Tensor, *, max_iter: int = 200, cg_steps: int = 3,
                 tol: float | None = None, x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                 progress: bool = False, callback=None) -> None:
        owner = "calibration.alternating"
        super().__init__(sensing, y, owner, max_iter=max_iter, steps=max_iter, x_true=x_true, gains_true=gains_true,
                         progress=progress, callback=callback)
        if cg_steps < 1:
            raise ValueError(f"{owner}: argument 'cg_steps' must be >= 1, got {cg_steps}")
        self.cg_steps = cg_steps
        if tol is not None:
            check_option(tol, owner, "tol")
        self.tol_loss = tol if tol is not None else (1e-7 if y.real.dtype == torch.float64 else 1e-5)

    def init(self, x0):
        if x0 is not None:
            raise ValueError("calibration.alternating: starts from the back projection; argument 'x0' is not used")
        y = self.y
        B, p, m = y.shape
        xi = back_projection(self.sensing, y)
        gam = torch.ones(B, m, dtype=y.dtype, device=y.device)
        u = self.sensing.sense(xi)
        f = loss_of(u - y)
        self.history.record(xi, gam, f, 2)
        return {"xi": xi, "gam": gam, "u": u, "f": f, "f0": f, "passes": 2, "iterations": 0,
                "converged": torch.zeros(B, dtype=torch.bool, device=y.device)}

    def step(self, state):
        y, real_dtype = self.y, self.y.real.dtype
        u, gam = state["u"], state["gam"]
        energy = (u.abs() ** 2).sum(1)
        gam = torch.where(energy > 0, (u.conj() * y).sum(1) / energy.clamp_min(1e-300), gam)
        gam = gam / gam.mean(1, keepdim=True)
        weights = (gam.abs() ** 2).to(real_dtype)
        xi, u, used = image_cg(self.sensing, state["xi"], weights, gam.conj()[:, None, :] * y, self.cg_steps)
        f, f_new = state["f"], loss_of(gam[:, None, :] * u - y)
        floor = (100 * torch.finfo(real_dtype).eps) ** 2 * state["f0"]
        state["converged"] |= ((f - f_new).abs() <= self.tol_loss ** 2 * f) | (f_new <= floor)
        state.update(xi=xi, gam=gam, u=u, f=f_new, passes=state["passes"] + used,
                     iterations=state["iterations"] + 1)
        self.history.record(xi, gam, f_new, state["passes"])
        return state, self.step_metrics(f_new)

    def stopped(self, state) -> torch.Tensor:
        return state["converged"]

    def converged(self, state) -> torch.Tensor:
        return state["converged"]

    def iterate(self, state):
        return state["xi"], state["gam"]

    def iterations(self, state) -> int:
        return state["iterations"]


def alternating(sensing: GainSensing, y: torch.Tensor, *, max_iter: int = 200, cg_steps: int = 3,
                tol: float | None = None, x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                progress: bool = False, callback=None, warn: bool = True) -> CalibrationResult:
    """Alternating minimisation from ξ₀ = (1/mp) Σ_l A_lᴴ y_l; stops after max_iter outer iterations, or when the
    loss stops decreasing (relative change < tol², default tol 1e-7 in float64, 1e-5 in float32). Runs on the
    library's loop (`Alternating`): a `ConvergenceWarning` when a problem has not converged."""
    return Alternating(sensing, y, max_iter=max_iter, cg_steps=cg_steps, tol=tol, x_true=x_true,
                       gains_true=gains_true, progress=progress, callback=callback).run(warn=warn)
