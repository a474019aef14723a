r"""Plug-and-play (PnP) solvers: ADMM and proximal gradient with any prox or denoiser D in place of a prox.

With D = prox_R (e.g. a learned proximal network, `imaging.priors.lpn`, which is exactly a prox), PnP-ADMM solves

    min_x ½‖A x − y‖² + ρ R(x):
        x ← argmin_x ½‖A x − y‖² + (ρ/2)‖x − z + u‖²    i.e.  (A^H A + ρ I) x = A^H y + ρ (z − u)   (by CG)
        z ← D(x + u)
        u ← u + x − z

and PnP-PGD (proximal gradient with step τ) solves min_x ½‖A x − y‖² + R(x)/τ:

        x ← D(x − τ A^H (A x − y))          [optionally clipped to a box]

(for PGD, τ‖A‖² < 1 is the classical step condition for a nonconvex R; `relax(D, s)` weakens a fixed D while
keeping it a prox). D may be any callable (N, ...) -> same
shape: an LPN (`model.prox`), `lambda v: tv_denoise(v, 0.02)`, a patch-wise LPN... It is called inside
`torch.enable_grad()` (a learned prox differentiates its potential) and its output is detached. The regularisation
strength of a fixed D is set by ρ (ADMM) or τ (PGD).

History per iteration: "residual" (max over the batch of the relative change ‖x_k − x_{k−1}‖/‖x_k‖ for PGD; of
max(‖x − z‖, ‖z_k − z_{k−1}‖)/‖z‖ for ADMM, the primal and dual residuals), so `tol` stops the loop; ADMM also
records "cg_iterations".
"""
from __future__ import annotations

from typing import Callable

import torch

from imaging.operators.base import LinearOperator
from imaging.solvers.base import (IterativeSolver, Result, adjoint_of, box_bounds, check_linearity, check_option,
                                  check_start, real_part, require_linear)
from imaging.linalg import batch_norm, check_finite
from imaging.solvers.cg import CG
from imaging.solvers.parameter_choice import prepare_search, search_solver, squared_norm

Prox = Callable[[torch.Tensor], torch.Tensor]


def _relative(change: torch.Tensor, reference: torch.Tensor) -> float:
    scale = batch_norm(reference).clamp_min(torch.finfo(reference.real.dtype).eps)
    return float((batch_norm(change) / scale).max())


def apply_prox(prox: Prox, v: torch.Tensor, owner: str) -> torch.Tensor:
    """D(v) with autograd enabled (learned proxes differentiate inside), detached, shape checked."""
    with torch.enable_grad():
        out = prox(v)
    if not isinstance(out, torch.Tensor) or out.shape != v.shape:
        raise ValueError(f"{owner}: argument 'prox' must map a tensor of shape {tuple(v.shape)} to the same shape, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    return out.detach().to(v.dtype)


def relax(prox: Prox, strength: float) -> Prox:
    """v ↦ v + s (D(v) − v) for s ∈ (0, 1]: a weaker denoiser. If D = prox_R = ∇ψ (ψ convex, e.g. an LPN), this is
    ∇[(1 − s)½‖v‖² + s ψ(v)], the gradient of a convex function, so it is again exactly a prox (of another prior),
    and the PnP convergence theory still applies. Useful for PnP-PGD, whose regularisation R/τ cannot be weakened
    by τ beyond the step-size limit."""
    if not 0 < strength <= 1:
        raise ValueError(f"relax: argument 'strength' must be in (0, 1], got {strength}")
    return lambda v: v + strength * (prox(v) - v)


def _check_problem(owner: str, A: LinearOperator, y: torch.Tensor, prox: Prox) -> None:
    if not isinstance(A, LinearOperator):
        raise TypeError(f"{owner}: argument 'A' must be a LinearOperator, got {type(A).__name__}")
    check_finite(y, owner, "y")
    if not callable(prox):
        raise TypeError(f"{owner}: argument 'prox' must be callable (a denoiser / prox), got {type(prox).__name__}")
    check_linearity(A, real_part(A.adjoint(y)), owner)


def _start(owner: str, A: LinearOperator, y: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    if x0 is None:
        return adjoint_of(A, y, owner)
    check_finite(x0, owner, "x0")
    if A(x0).shape != y.shape:  # (this also lets operators with autograd-derived adjoints learn their input shape)
        check_start(x0, real_part(A.adjoint(y)), owner)
    return x0.clone()


def _finite_or_overflow(v: torch.Tensor, owner: str, what: str) -> torch.Tensor:
    """v, unless it overflowed (the iterates are finite, so a non-finite value is an overflow of the dtype)."""
    if not bool(torch.isfinite(v).all()):
        raise FloatingPointError(f"{owner}: {what} overflowed {v.dtype}: the operator's or the data's scale is too "
                                 f"large for this precision; rescale A (and y) or use float64")
    return v


def _clip(x: torch.Tensor, box: tuple[float | None, float | None]) -> torch.Tensor:
    return x if box == (None, None) else x.clamp(*box)


class PnPADMM(IterativeSolver):
    """PnP-ADMM for ½‖A x − y‖² + ρ R(x) with D = prox_R (see the module docstring); x₀ = A^H y by default.

    Args:
        A: any LinearOperator; y: measurements; prox: the denoiser D.
        rho: ADMM penalty ρ > 0 (larger = stronger regularisation with a fixed D), or "auto" /
            `Discrepancy(...)` / `SURE(...)`: chosen from `noise_level` (estimated from y when None) by a few
            runs (see `imaging.solvers.parameter_choice`; the choice is `result.lam`). None (default): "auto"
            when `noise_level` is given, else 0.1. On train400 crops (LPN prox, 64², σ = 0.01 / 0.05) the
            discrepancy choice is within 0.15 dB of the best ρ of a grid for inpainting and 4× SR, 0.9 dB below it
            for deblurring at σ = 0.01, and above the grid's best at σ = 0.05.
        cg_iter, cg_tol: CG budget for the x-update (warm-started at the previous x).
        box: optional (lower, upper) clip of z after the prox (e.g. (0, 1) for images).
    """

    name = "PnP-ADMM"

    def __init__(self, A: LinearOperator, y: torch.Tensor, prox: Prox, rho: float | str | None = None,
                 cg_iter: int = 30, cg_tol: float = 1e-5, box: tuple[float, float] | None = None, max_iter: int = 100,
                 tol: float = 1e-4, noise_level: float | None = None, **loop_options) -> None:
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        require_linear(A, "PnPADMM")
        _check_problem("PnPADMM", A, y, prox)
        if rho is None:  # the default: from the noise level when it is given
            rho = "auto" if noise_level is not None else 0.1
        options = dict(cg_iter=cg_iter, cg_tol=cg_tol, box=box, max_iter=max_iter, tol=tol, **loop_options)
        if prepare_search(self, rho, y, A, noise_level, options, "PnPADMM", "rho"):
            rho = 1.0
        if not rho > 0:
            raise ValueError(f"PnPADMM: argument 'rho' must be positive, got {rho}")
        self.A, self.y, self.prox, self.rho = A, y, prox, float(rho)
        check_option(cg_iter, "PnPADMM", "cg_iter", integer=True, positive=True)
        check_option(cg_tol, "PnPADMM", "cg_tol")
        self.cg_iter, self.cg_tol, self.box = cg_iter, cg_tol, box_bounds(box, "PnPADMM")

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        guess = lambda data: 100 * self.noise_level ** 2 * squared_norm(self.A, data)  # noqa: E731
        return search_solver(lambda value, data: PnPADMM(self.A, data, self.prox, value, **self.options), self.A,
                             self.y, self.parameter_rule, self.noise_level, guess, x0, "PnPADMM")

    def init(self, x0: torch.Tensor | None):
        x = _start("PnPADMM", self.A, self.y, x0)
        self.adjoint_y = self.A.adjoint(self.y)
        return x, x.clone(), torch.zeros_like(x)

    def _normal(self, v: torch.Tensor) -> torch.Tensor:
        return self.A.normal(v) + self.rho * v

    def step(self, state):
        x, z, u = state
        rhs = _finite_or_overflow(self.adjoint_y + self.rho * (z - u), "PnPADMM", "the x-update's right-hand side")
        solve = CG(self._normal, rhs, max_iter=self.cg_iter, tol=self.cg_tol).run(x, warn=False)
        x = solve.x
        z_new = _clip(apply_prox(self.prox, x + u, "PnPADMM"), self.box)
        u = u + x - z_new
        primal, dual = _relative(x - z_new, z_new), _relative(z_new - z, z_new)
        return (x, z_new, u), {"residual": max(primal, dual), "primal_residual": primal, "dual_residual": dual,
                               "cg_iterations": float(solve.iterations)}

    def size(self, state) -> float:
        return float(batch_norm(state[0]).max())

    def estimate(self, state) -> torch.Tensor:
        return state[1]


class PnPPGD(IterativeSolver):
    """PnP proximal gradient x ← D(x − τ A^H(A x − y)) (clipped to `box` if given) for ½‖A x − y‖² + R(x)/τ with
    D = prox_R; x₀ = A^H y by default.

    Args:
        step: τ > 0; default 1/‖A‖² (power iteration on x₀'s shape).
    """

    name = "PnP-PGD"

    def __init__(self, A: LinearOperator, y: torch.Tensor, prox: Prox, step: float | None = None,
                 box: tuple[float, float] | None = None, max_iter: int = 100, tol: float = 1e-4,
                 **loop_options) -> None:
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        require_linear(A, "PnPPGD")
        _check_problem("PnPPGD", A, y, prox)
        if step is not None:
            check_option(step, "PnPPGD", "step", positive=True)
        self.A, self.y, self.prox, self.step_size, self.box = A, y, prox, step, box_bounds(box, "PnPPGD")

    def init(self, x0: torch.Tensor | None):
        x = _start("PnPPGD", self.A, self.y, x0)
        if self.step_size is None:
            self.step_size = 1.0 / self.A.norm(x) ** 2
        return x

    def step(self, state):
        x = state
        gradient = self.A.adjoint(self.A(x) - self.y)
        v = _finite_or_overflow(x - self.step_size * gradient, "PnPPGD", "the gradient step")
        x_new = _clip(apply_prox(self.prox, v, "PnPPGD"), self.box)
        return x_new, {"residual": _relative(x_new - x, x_new)}

    def size(self, state) -> float:
        return float(batch_norm(state).max())

    def estimate(self, state) -> torch.Tensor:
        return state
