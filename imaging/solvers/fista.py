r"""FISTA / proximal gradient for  min_x ½‖A x − y‖² + g(x)  with g given by its prox (e.g. the TV prox).

    z₀ = x₀;  x_{k+1} = prox_{g/L}(z_k − (1/L) A^H (A z_k − y));
    t_{k+1} = (1 + sqrt(1 + 4 t_k²)) / 2;  z_{k+1} = x_{k+1} + ((t_k − 1)/t_{k+1}) (x_{k+1} − x_k)

with L = ‖A‖² (power iteration). `accelerated=False` gives plain proximal gradient (PGD). For TV the prox is the
compiled ROF solver, warm-started from the previous dual field and solved to `inner_tol`.
"""
from __future__ import annotations

import math

import torch

from imaging.operators.base import LinearOperator
from imaging.priors.tv import TotalVariation
from imaging.solvers.base import IterativeSolver, Result, box_bounds, require_linear, unknown_like
from imaging.linalg import batch_norm, check_finite
from imaging.solvers.parameter_choice import prepare_search, search_solver


class FISTA(IterativeSolver):
    """FISTA (or PGD) for ½‖A x − y‖² + lam·TV(x) (+ box), with the TV prox as the inner step.

    Args:
        A, y: operator and measurements; lam: TV weight ≥ 0, or "auto" / `Discrepancy(...)` / `SURE(...)` (chosen
            from `noise_level`, estimated from y when None; see `imaging.solvers.parameter_choice`).
        prior: a `TotalVariation` (isotropic by default).
        box: (lower, upper) bounds on x, applied inside the prox (`lower=`/`upper=`: the deprecated spelling).
        inner_tol, inner_max_iter: accuracy of each prox.
        accelerated: FISTA momentum (True) or plain proximal gradient (False).
    """

    name = "FISTA"

    def __init__(self, A: LinearOperator, y: torch.Tensor, lam: float | str, prior: TotalVariation | None = None, *,
                 box: tuple[float | None, float | None] | None = None, x_like: torch.Tensor | None = None,
                 inner_tol: float = 1e-5, inner_max_iter: int = 200, accelerated: bool = True,
                 max_iter: int = 200, tol: float = 1e-5, noise_level: float | None = None,
                 lower: float | None = None, upper: float | None = None, **loop_options) -> None:
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        require_linear(A, "FISTA")
        self.A, self.y = A, check_finite(y, "FISTA", "y")
        lower, upper = box_bounds(box, "FISTA", lower, upper)
        options = dict(prior=prior, box=(lower, upper), x_like=x_like, inner_tol=inner_tol,
                       inner_max_iter=inner_max_iter, accelerated=accelerated, max_iter=max_iter, tol=tol,
                       **loop_options)
        if prepare_search(self, lam, y, A, noise_level, options, "FISTA"):
            lam = 0.0
        self.lam, self.prior = float(lam), prior if prior is not None else TotalVariation()
        self.lower, self.upper = lower, upper
        self.inner_tol, self.inner_max_iter, self.accelerated = inner_tol, inner_max_iter, accelerated
        self.like = unknown_like(A, y, x_like)
        self.step_size = 1.0 / max(A.norm(self.like) ** 2, 1e-30)

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        return search_solver(lambda value, data: FISTA(self.A, data, value, **self.options), self.A, self.y,
                             self.parameter_rule, self.noise_level, self.noise_level / self.step_size, x0, "FISTA")

    def _gradient(self, z: torch.Tensor) -> torch.Tensor:
        g = self.A.adjoint(self.A(z) - self.y)
        return g.real if g.is_complex() and not z.is_complex() else g

    def init(self, x0: torch.Tensor | None):
        x = x0.to(self.like.dtype).clone() if x0 is not None else torch.zeros_like(self.like)
        return x, x.clone(), 1.0, None

    def step(self, state):
        x, z, t, dual = state
        x_new, info = self.prior.prox(z - self.step_size * self._gradient(z), self.lam * self.step_size,
                                      tol=self.inner_tol, max_iter=self.inner_max_iter, lower=self.lower,
                                      upper=self.upper, p0=dual, return_info=True)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2 if self.accelerated else 1.0
        z = x_new + ((t - 1) / t_new) * (x_new - x) if self.accelerated else x_new
        change = float((batch_norm(x_new - x) / batch_norm(x_new).clamp_min(1e-30)).max())
        residual = self.A(x_new) - self.y
        objective = 0.5 * residual.abs().pow(2).sum() + self.lam * self.prior.value(x_new).sum()
        metrics = {"objective": float(objective), "residual": change, "inner_iterations": info["iterations"]}
        return (x_new, z, t_new, info["p"]), metrics

    def estimate(self, state) -> torch.Tensor:
        return state[0]
