r"""FISTA / proximal gradient for  min_x ½‖A x − y‖² + λ g(x)  with g given by its prox (the TV prox by default,
or any prox).

    z₀ = x₀;  x_{k+1} = prox_{g/L}(z_k − (1/L) A^H (A z_k − y));
    t_{k+1} = (1 + sqrt(1 + 4 t_k²)) / 2;  z_{k+1} = x_{k+1} + ((t_k − 1)/t_{k+1}) (x_{k+1} − x_k)

with L = ‖A‖² (power iteration). `accelerated=False` gives plain proximal gradient (PGD). For TV the prox is the
compiled ROF solver, warm-started from the previous dual field and solved to `inner_tol`; any other prior is a
`prox(v, τ)` = argmin_x ½‖x − v‖² + τ g(x) (a callable, or an object with that `prox` method and optionally
`value(x)` per sample, for the objective).
"""
from __future__ import annotations

import inspect
import math

import torch

from imaging.operators.base import LinearOperator
from imaging.priors.tv import TotalVariation
from imaging.solvers.base import (IterativeSolver, Result, box_bounds, check_linearity, check_option, check_start,
                                  require_linear, unknown_like)
from imaging.linalg import batch_norm, check_finite
from imaging.solvers.parameter_choice import prepare_search, search_solver, squared_norm


class FISTA(IterativeSolver):
    """FISTA (or PGD) for ½‖A x − y‖² + lam·g(x) (+ box), with the prox of g as the inner step.

    Args:
        A, y: operator and measurements; lam: the weight of g ≥ 0, or "auto" / `Discrepancy(...)` / `SURE(...)`
            (chosen from `noise_level`, estimated from y when None; see `imaging.solvers.parameter_choice`).
        prior: g: a `TotalVariation` (isotropic TV by default), or any prox: a callable `prox(v, τ)` or an object
            with a `prox(v, τ)` method (and `value(x)` for the objective in the history).
        box: (lower, upper) bounds on x, applied inside the prox (`lower=`/`upper=`: the deprecated spelling);
            with another prior only if its prox takes `lower=` and `upper=`.
        inner_tol, inner_max_iter: accuracy of each prox.
        accelerated: FISTA momentum (True) or plain proximal gradient (False).
    """

    name = "FISTA"

    def __init__(self, A: LinearOperator, y: torch.Tensor, lam: float | str, prior=None, *,
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
        self.prox = getattr(self.prior, "prox", self.prior)
        if not callable(self.prox):
            raise TypeError(f"FISTA: argument 'prior' must be a TotalVariation, a prox(v, tau) callable or an object "
                            f"with a prox method, got {type(prior).__name__}")
        self.tv = isinstance(self.prior, TotalVariation)
        if not self.tv and (lower is not None or upper is not None) and not _takes_bounds(self.prox):
            raise ValueError("FISTA: argument 'box' needs a prior whose prox takes lower= and upper= (the prox of g "
                             "plus the box is not the clipped prox of g in general)")
        self.lower, self.upper = lower, upper
        check_option(inner_tol, "FISTA", "inner_tol")
        check_option(inner_max_iter, "FISTA", "inner_max_iter", integer=True)
        self.inner_tol, self.inner_max_iter, self.accelerated = inner_tol, inner_max_iter, accelerated
        self.like = unknown_like(A, y, x_like, "FISTA")
        check_linearity(A, self.like, "FISTA")
        self.step_size = 1.0 / max(A.norm(self.like) ** 2, 1e-30)

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        return search_solver(lambda value, data: FISTA(self.A, data, value, **self.options), self.A, self.y,
                             self.parameter_rule, self.noise_level,
                             lambda data: self.noise_level * squared_norm(self.A, data), x0, "FISTA")

    def _gradient(self, z: torch.Tensor) -> torch.Tensor:
        g = self.A.adjoint(self.A(z) - self.y)
        return g.real if g.is_complex() and not z.is_complex() else g

    def init(self, x0: torch.Tensor | None):
        check_start(x0, self.like, "FISTA")
        x = x0.to(self.like.dtype).clone() if x0 is not None else torch.zeros_like(self.like)
        return x, x.clone(), 1.0, None

    def _prox(self, v: torch.Tensor, tau: float, dual) -> tuple[torch.Tensor, dict]:
        if self.tv:
            return self.prior.prox(v, tau, tol=self.inner_tol, max_iter=self.inner_max_iter, lower=self.lower,
                                   upper=self.upper, p0=dual, return_info=True)
        bounds = {} if self.lower is None and self.upper is None else {"lower": self.lower, "upper": self.upper}
        return self.prox(v, tau, **bounds), {"iterations": 0, "p": None}

    def step(self, state):
        x, z, t, dual = state
        x_new, info = self._prox(z - self.step_size * self._gradient(z), self.lam * self.step_size, dual)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2 if self.accelerated else 1.0
        z = x_new + ((t - 1) / t_new) * (x_new - x) if self.accelerated else x_new
        change = float((batch_norm(x_new - x) / batch_norm(x_new).clamp_min(1e-30)).max())
        residual = self.A(x_new) - self.y
        misfit = 0.5 * residual.abs().pow(2).sum()
        metrics = {"objective": float(misfit + self.lam * self.prior.value(x_new).sum())} \
            if hasattr(self.prior, "value") else {"misfit": float(misfit)}  # a bare prox: no value of g to add
        metrics.update(residual=change, inner_iterations=info["iterations"])
        return (x_new, z, t_new, info["p"]), metrics

    def size(self, state) -> float:  # watched for a blow-up where a bare prox gives no objective
        return float(batch_norm(state[0]).max())

    def estimate(self, state) -> torch.Tensor:
        return state[0]


def _takes_bounds(prox) -> bool:
    try:
        parameters = inspect.signature(prox).parameters
    except (TypeError, ValueError):
        return False
    return "lower" in parameters and "upper" in parameters
