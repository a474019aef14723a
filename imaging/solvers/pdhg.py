r"""PDHG for TV-regularised least squares, and the one-call `tv_reconstruct`.

Problem, per sample:  min_x  P(x) = ½‖A x − y‖² + λ TV(x)   [+ lower ≤ x ≤ upper: box=(lower, upper)]

Primal–dual hybrid gradient (Chambolle–Pock) in the form of Condat (2013) and Vũ (2013), which takes the smooth data
term by its gradient and dualises only the TV term, with p in the unit ball (λ folded into K = λD):

    x' = clamp(x − τ (A^H (A x − y) + λ Dᵀp))
    p ← proj_{|p|≤1}(p + σ λ D (2x' − x))           (2-norm per voxel isotropic, |·| per entry anisotropic)

with steps from the operator norms: τ = 1/‖A‖², σ = 0.99 (1/τ − ‖A‖²/2) / (λ² ‖D‖²) per plane, ‖D‖² ≤ 4·ndim
(Condat's condition 1/τ − σ‖λD‖² ≥ ‖A‖²/2). For A = 0 this is the Chambolle–Pock iteration.

Certificate: with q = A x − y, any p in the unit ball and a box with finite bounds, the dual value
𝒟(q, p) = −½‖q‖² − Re⟨q, y⟩ − Σ max(lower·w, upper·w), w = −(A^H q + λ Dᵀp), lower-bounds P*, so the relative
duality gap (P(x) − 𝒟)/P(x) certifies the objective error; the run stops when it is ≤ tol. Without a box the gap
is not finite and the run stops on the relative change ‖x' − x‖/‖x‖ ≤ tol instead.
For complex measurements of a real image (MRI), A^H(·) is taken as its real part.
"""
from __future__ import annotations

import math

import torch

from imaging.operators.base import LinearOperator
from imaging.ops.finite_diff import finite_diff, finite_diff_adjoint
from imaging.ops.tv import plane_weights
from imaging.priors.tv import TotalVariation
from imaging.solvers.base import (IterativeSolver, Result, box_bounds, check_linearity, require_linear,
                                  unknown_like)
from imaging.linalg import batch_norm, check_finite
from imaging.solvers.parameter_choice import (VARIATIONAL_TAU, prepare_search, search_solver, squared_norm,
                                              variational_auto)


DISCREPANCY_TAU = VARIATIONAL_TAU  # TV's lam="auto" with σ given (see parameter_choice.VARIATIONAL_TAU)


class PDHG(IterativeSolver):
    """Primal–dual method for min ½‖A x − y‖² + λ TV(x) (+ box); see the module docstring.

    Args:
        A: forward operator; y: measurements (N, ...); lam: TV weight ≥ 0 (number, (N,) or (N, C)), or "auto" /
            `Discrepancy(...)` / `SURE(...)`: chosen from `noise_level` (see `imaging.solvers.parameter_choice`).
        noise_level: σ per measurement entry, for lam="auto" (estimated from y when None).
        prior: the `TotalVariation` (exact, eps = 0); None: `TotalVariation(isotropic=isotropic)`.
        isotropic: isotropic or anisotropic TV, when no prior is given.
        box: optional (lower, upper) bounds on x, either may be None (both finite: certified gap); `lower=`/`upper=`
            are the deprecated spelling.
        tau, sigma: step sizes (defaults from the operator norms, see the module docstring).
        x_like: an input-shaped tensor fixing the image shape, dtype and device (default: from A^H y).
    """

    name = "PDHG"

    def __init__(self, A: LinearOperator, y: torch.Tensor, lam: float | torch.Tensor,
                 prior: TotalVariation | None = None, *, isotropic: bool = True,
                 box: tuple[float | None, float | None] | None = None, tau: float | None = None,
                 sigma: float | None = None, x_like: torch.Tensor | None = None, max_iter: int = 2000,
                 tol: float = 1e-3, noise_level: float | None = None, lower: float | None = None,
                 upper: float | None = None, **loop_options) -> None:
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        require_linear(A, "PDHG")
        self.A, self.y = A, check_finite(y, "PDHG", "y")
        lower, upper = box_bounds(box, "PDHG", lower, upper)
        if prior is not None and not isinstance(prior, TotalVariation):
            raise TypeError(f"PDHG: argument 'prior' must be a TotalVariation (PDHG is TV's solver; FISTA takes any "
                            f"prox), got {type(prior).__name__}")
        prior = prior if prior is not None else TotalVariation(isotropic=isotropic)
        if prior.eps != 0:
            raise ValueError("PDHG: the TV prior must be the exact one (eps = 0); a smoothed TV is smooth: use "
                             "AcceleratedGradient")
        options = dict(prior=prior, box=(lower, upper), tau=tau, sigma=sigma, x_like=x_like,
                       max_iter=max_iter, tol=tol, **loop_options)
        if prepare_search(self, lam, y, A, noise_level, options, "PDHG", auto=variational_auto(A, noise_level),
                          per_sample=True):
            lam = 1.0  # steps for a placeholder; each solve of the search builds its own
        self.lower, self.upper, self.prior = lower, upper, prior
        like = unknown_like(A, y, x_like, "PDHG")
        check_linearity(A, like, "PDHG")
        if like.dim() not in (4, 5):
            raise ValueError(f"PDHG: images must be (N, C, H, W) or (N, C, D, H, W), got {tuple(like.shape)}")
        self.like = like
        self.lam = plane_weights(lam, like, "PDHG")
        self.lam_field = self.lam.reshape(*self.lam.shape, *([1] * (like.dim() - 1)))  # against D x
        lipschitz = max(A.norm(like) ** 2, 1e-30)
        self.tau = tau if tau is not None else 1.0 / lipschitz
        d_norm2 = 4.0 * (like.dim() - 2)
        self.sigma = sigma if sigma is not None else \
            0.99 * (1.0 / self.tau - lipschitz / 2) / max(d_norm2 * float(self.lam.max()) ** 2, 1e-30)
        for name, value in (("tau", self.tau), ("sigma", self.sigma)):
            if not (math.isfinite(value) and value > 0):  # NaN fails too
                raise ValueError(f"PDHG: argument '{name}' (a step size) must be a finite number > 0, got {value}")
        # σλ per plane: by default each plane takes its own dual step σ_b = 0.99 (1/τ − ‖A‖²/2) / (λ_b² ‖D‖²) (the
        # planes are independent problems: a batch of several λ, e.g. a grid, converges as each alone would)
        if sigma is None:
            scale = 0.99 * (1.0 / self.tau - lipschitz / 2) / d_norm2
            self.dual_step = torch.where(self.lam_field > 0, scale / self.lam_field.clamp_min(1e-30), 0.0)
        else:
            self.dual_step = self.sigma * self.lam_field

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        return search_solver(lambda value, data: PDHG(self.A, data, value, **self.options), self.A, self.y,
                             self.parameter_rule, self.noise_level,
                             lambda data: self.noise_level * squared_norm(self.A, data), x0, "PDHG")

    def _real(self, t: torch.Tensor) -> torch.Tensor:
        return t.real if t.is_complex() and not self.like.is_complex() else t

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.lower is None and self.upper is None else x.clamp(self.lower, self.upper)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """P(x) = ½‖A x − y‖² + λ TV(x) per sample."""
        tv = self.prior.plane_values(x)
        return 0.5 * (self.A(x) - self.y).abs().pow(2).flatten(1).sum(1) + (self.lam * tv).sum(1)

    def dual_value(self, q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """𝒟 per sample for dual variables with A^H q + λ Dᵀp = −w; −inf unless both box bounds are finite."""
        if self.lower is None or self.upper is None:
            return torch.full((q.shape[0],), -math.inf, dtype=torch.float64, device=q.device)
        support = torch.maximum(self.lower * w, self.upper * w).flatten(1).sum(1)
        return -0.5 * q.abs().pow(2).flatten(1).sum(1) - (q.conj() * self.y).real.flatten(1).sum(1) - support

    def init(self, x0: torch.Tensor | None):
        x = self._clamp(x0.to(self.like.dtype).clone() if x0 is not None else torch.zeros_like(self.like))
        if x.shape != self.like.shape:
            raise ValueError(f"PDHG: argument 'x0' must have shape {tuple(self.like.shape)}, got {tuple(x.shape)}")
        residual = self.A(x) - self.y
        return x, residual, self._real(self.A.adjoint(residual)), torch.zeros_like(finite_diff(x))

    def step(self, state):
        x, residual, gradient, p = state  # residual = A x − y, gradient = A^H residual: one A and one A^H per step
        x_new = self._clamp(x - self.tau * (gradient + finite_diff_adjoint(self.lam_field * p)))
        p = self.prior.project_dual(p + self.dual_step * finite_diff(2 * x_new - x))
        residual_new = self.A(x_new) - self.y
        gradient_new = self._real(self.A.adjoint(residual_new))
        primal = 0.5 * residual_new.abs().pow(2).flatten(1).sum(1) + \
            (self.lam * self.prior.plane_values(x_new)).sum(1)
        metrics = {"objective": float(primal.sum())}
        if self.lower is not None and self.upper is not None:  # certified gap with q = A x' − y
            w = gradient_new + finite_diff_adjoint(self.lam_field * p)
            gap = (primal - self.dual_value(residual_new, -w)) / primal.clamp_min(torch.finfo(primal.dtype).tiny)
            metrics["gap"] = float(gap.max())
        change = (batch_norm(x_new - x) / batch_norm(x_new).clamp_min(1e-30)).max()
        metrics["relative_change"] = float(change)
        metrics["residual"] = metrics.get("gap", metrics["relative_change"])
        return (x_new, residual_new, gradient_new, p), metrics

    def estimate(self, state) -> torch.Tensor:
        return state[0]


def tv_reconstruct(A: LinearOperator, y: torch.Tensor, lam: float | torch.Tensor | str, *, isotropic: bool = True,
                   box: tuple[float | None, float | None] | None = None, x0: torch.Tensor | None = None,
                   tol: float = 1e-3, max_iter: int = 2000, noise_level: float | None = None,
                   progress: bool = False, lower: float | None = None, upper: float | None = None) -> Result:
    """argmin_x ½‖A x − y‖² + lam·TV(x) (+ box) for any LinearOperator A, by PDHG; returns a `Result` whose
    history holds "objective", "relative_change" and, with a finite box, the certified relative "gap".
    lam="auto" chooses λ from `noise_level` (the discrepancy principle; `result.lam` is the choice).
    box=(lower, upper) bounds x (`lower=`/`upper=`: the deprecated spelling)."""
    box = box_bounds(box, "tv_reconstruct", lower, upper)
    return PDHG(A, y, lam, isotropic=isotropic, box=box, x_like=x0, tol=tol, max_iter=max_iter,
                noise_level=noise_level, progress=progress).run(x0)
