r"""Conjugate gradient for Hermitian positive (semi-)definite systems, and regularised least squares on top of it.

CG solves H x = b, one independent system per batch sample, by the library's one conjugate gradient
(`imaging.linalg`), stopping when every sample's ‖r‖/‖b‖ ≤ tol. `least_squares` applies it to the normal equations

    (A^H A + λ R^H R) x = A^H y      i.e.   x = argmin ½‖A x − y‖² + ½ λ ‖R x‖²

(R = I when λ > 0 and no R is given; λ = 0 gives the least-squares solution, of minimum norm from x₀ = 0).
"""
from __future__ import annotations

from typing import Callable

import torch

from imaging.linalg import CGState, cg_start, cg_step, check_finite
from imaging.operators.base import LinearOperator
from imaging.solvers.base import IterativeSolver, Result, adjoint_of, check_linearity, real_part, require_linear
from imaging.solvers.parameter_choice import choose_parameter, parameter_rule, resolve_noise_level, squared_norm


class CG(IterativeSolver):
    """Conjugate gradient on H x = b for a Hermitian PSD `normal` map (a callable or a LinearOperator's normal),
    one system per sample (`imaging.linalg.cg_step`), optionally preconditioned; it stops once every sample's
    residual ‖r‖/‖b‖ is at most tol (with a preconditioner M: √⟨r, M r⟩ / √⟨b, M b⟩)."""

    name = "CG"

    def __init__(self, normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, max_iter: int = 100,
                 tol: float = 1e-6, preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 owner: str = "CG", **loop_options) -> None:
        self.owner = owner  # the entry point the user called, for error messages
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        self.normal, self.preconditioner = normal, preconditioner
        self.rhs = check_finite(rhs, "CG", "rhs")

    def init(self, x0: torch.Tensor | None):
        if x0 is not None:
            if x0.shape != self.rhs.shape:
                raise ValueError(f"{self.owner}: argument 'x0' must have shape {tuple(self.rhs.shape)}, got "
                                 f"{tuple(x0.shape)}")
            x0 = x0.to(self.rhs.dtype).clone()
        return cg_start(self.normal, self.rhs, x0, tol=self.tol, preconditioner=self.preconditioner)

    def step(self, state: CGState):
        state = cg_step(self.normal, state, preconditioner=self.preconditioner)
        return state, {"residual": float(state.relative_residual.max())}

    def estimate(self, state: CGState) -> torch.Tensor:
        return state.x


def least_squares(A: LinearOperator, y: torch.Tensor, lam: float | str = 0.0,
                  regulariser: LinearOperator | None = None, x0: torch.Tensor | None = None, tol: float = 1e-6,
                  max_iter: int = 100, noise_level: float | None = None, warn: bool = True,
                  **loop_options) -> Result:
    """argmin_x ½‖A x − y‖² + ½ λ ‖R x‖² by CG on the normal equations; returns a `Result` (history: residual).

    Args:
        A: the forward operator; y: measurements (N, ...), finite.
        lam: λ ≥ 0, or "auto" (the discrepancy principle from `noise_level`; `Discrepancy(...)` / `SURE(...)` to
            choose the rule; see `imaging.solvers.parameter_choice`): the chosen value is `result.lam`.
        regulariser: R (e.g. `FiniteDifference()` for smoothness), identity if None.
        x0: starting point (also tells A's input shape to custom operators never called before).
        noise_level: σ per measurement entry, for lam="auto" (estimated from y when None).
        warn: emit a `ConvergenceWarning` when max_iter ends the solve before tol (False for inner solves).
    """
    require_linear(A, "least_squares")
    check_finite(y, "least_squares", "y")
    rule = parameter_rule(lam, "least_squares")
    if x0 is not None:
        check_finite(x0, "least_squares", "x0")
        A(x0)  # lets operators with autograd-derived adjoints learn their input shape
    check_linearity(A, real_part(x0) if x0 is not None else real_part(A.adjoint(y)), "least_squares")
    if rule is not None:
        sigma = resolve_noise_level(noise_level, y, A, "least_squares")

        def solve(value: float, start: torch.Tensor | None, data: torch.Tensor | None) -> Result:
            return _solve_normal(A, y if data is None else data, value, regulariser, start, tol, max_iter, False,
                                 loop_options)

        return choose_parameter(solve, A, y, rule, sigma, lambda data: 10 * sigma * squared_norm(A, data), x0,
                                "least_squares")
    return _solve_normal(A, y, float(lam), regulariser, x0, tol, max_iter, warn, loop_options)


def _solve_normal(A: LinearOperator, y: torch.Tensor, lam: float, regulariser: LinearOperator | None,
                  x0: torch.Tensor | None, tol: float, max_iter: int, warn: bool, loop_options: dict) -> Result:
    rhs = adjoint_of(A, y, "least_squares")

    def normal(x: torch.Tensor) -> torch.Tensor:
        out = A.normal(x)
        if lam > 0:
            out = out + lam * (regulariser.normal(x) if regulariser is not None else x)
        return out

    return CG(normal, rhs, max_iter=max_iter, tol=tol, owner="least_squares", **loop_options).run(x0, warn=warn)
