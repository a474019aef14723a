r"""Lower-level problems of bilevel learning and their certified solver.

    h(x; θ) = ½‖A x − y‖² + R_θ(x)        (per sample; A = identity for denoising)

with R_θ smooth and convex (a `FieldOfExperts` with the "abs" potential, a smoothed `TotalVariation`, or any module
with `value`, `grad` and `hvp`), so h is μ-strongly convex with μ = λ_min(AᵀA) (μ = 1 for denoising) and has an
L-Lipschitz gradient.

`accelerated_gradient` runs Nesterov's method for strongly convex functions, x⁺ = z − ∇h(z)/L,
z⁺ = x⁺ + β (x⁺ − x) with the constant momentum β = (√L − √μ)/(√L + √μ) (non-zero; the official MAID code's
momentum is silently zero), with a backtracking estimate of L. It stops when ‖∇h(z)‖/μ ≤ ε per sample, which
certifies ‖z − x*‖ ≤ ε (strong convexity), and returns that z.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from imaging.operators.base import LinearOperator
from imaging.solvers.base import IterativeSolver, Result


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


class RegularisedLeastSquares:
    """h(x) = ½‖A x − y‖² + Σ R(x) per sample, with `regulariser` providing value (N,), grad and hvp.

    Args:
        y: data (N, C, H, W) (or A's output shape).
        regulariser: e.g. `FieldOfExperts`, `TotalVariation(eps > 0)`.
        A: forward operator (None: identity, denoising).
        mu: strong-convexity modulus, λ_min(AᵀA) for a convex regulariser; required when A is given.
    """

    def __init__(self, y: torch.Tensor, regulariser, A: LinearOperator | None = None, mu: float | None = None
                 ) -> None:
        if A is not None and mu is None:
            raise ValueError("RegularisedLeastSquares: argument 'mu' (λ_min(AᵀA) > 0) is required with an operator A")
        self.y, self.regulariser, self.A = y, regulariser, A
        self.mu = float(mu) if mu is not None else 1.0
        if self.mu <= 0:
            raise ValueError(f"RegularisedLeastSquares: argument 'mu' must be positive, got {mu}")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.A is None else self.A(x)) - self.y

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.residual(x).abs() ** 2).flatten(1).sum(1) + self.regulariser.value(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual(x)
        return (r if self.A is None else self.A.adjoint(r)) + self.regulariser.grad(x)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        data = v if self.A is None else self.A.adjoint(self.A(v))
        return data + self.regulariser.hvp(x, v)

    def initial(self) -> torch.Tensor:
        return self.y.clone() if self.A is None else self.A.adjoint(self.y)


@dataclass
class LowerLevelResult(Result):
    """The library's `Result` of the lower-level solve: x the certified iterate, `iterations`, `converged`
    (error_bound ≤ ε for every sample), the history (max error bound per iteration, as "residual"), and
    error_bound: ‖∇h(x)‖/μ ≥ ‖x − x*‖ per sample; evaluations: gradient and value evaluations; lipschitz: the final
    backtracking estimate of L per sample."""

    error_bound: torch.Tensor | None = None
    evaluations: int = 0
    lipschitz: torch.Tensor | None = None


class LowerLevelSolver(IterativeSolver):
    """Nesterov's accelerated gradient for the μ-strongly convex h on the library's loop (see
    `accelerated_gradient`); residual = max_samples ‖∇h(z)‖/μ, tol = ε."""

    name = "lower level"

    def __init__(self, problem: RegularisedLeastSquares, eps: float, *, lipschitz: float | torch.Tensor = 1.0,
                 max_iter: int = 2000, progress: bool = False, callback=None) -> None:
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"accelerated_gradient: argument 'eps' must be positive, got {eps}")
        self.owner = "accelerated_gradient"
        super().__init__(max_iter=max_iter, tol=eps, progress=progress, callback=callback)
        self.problem, self.lipschitz = problem, lipschitz

    def _measure(self, state: dict) -> dict:
        state["g"] = g = self.problem.grad(state["z"])
        state["evaluations"] += 1
        state["bound"] = _norms(g) / self.problem.mu
        return {"residual": float(state["bound"].max())}

    def init(self, x0: torch.Tensor | None) -> dict:
        x = (self.problem.initial() if x0 is None else x0).clone()
        B = x.shape[0]
        L = torch.as_tensor(self.lipschitz, dtype=x.real.dtype, device=x.device).expand(B).clone()
        state = {"x": x, "z": x, "L": L.clamp_min(self.problem.mu), "evaluations": 0,
                 "shape": (B,) + (1,) * (x.dim() - 1)}
        state["start"] = self._measure(state)
        return state

    def initial_metrics(self, state: dict) -> dict:
        return state["start"]

    def step(self, state: dict):
        problem, mu, shape = self.problem, self.problem.mu, state["shape"]
        z, g, L = state["z"], state["g"], state["L"]
        h_z = problem.value(z)
        g2 = _norms(g) ** 2
        # The decrease test is only informative while the predicted decrease exceeds the rounding of h; below that,
        # L is kept as it is (adapting it to rounding noise would shrink it until the iteration diverges).
        informative = g2 / (2 * L) > 1e-9 * h_z.abs().clamp_min(1e-300)
        while True:  # backtracking on L, per sample
            x_new = z - g / L.view(shape)
            ok = ~informative | (problem.value(x_new) <= h_z - g2 / (2 * L))
            state["evaluations"] += 1
            if bool(ok.all()):
                break
            L = torch.where(ok, L, 2 * L)
            informative = informative & (g2 / (2 * L) > 1e-9 * h_z.abs().clamp_min(1e-300))
        beta = (L.sqrt() - mu ** 0.5) / (L.sqrt() + mu ** 0.5)
        x_prev, x = state["x"], x_new
        state.update(x=x, z=x + beta.view(shape) * (x - x_prev), L=torch.where(informative, (0.9 * L).clamp_min(mu), L))
        return state, self._measure(state)

    def estimate(self, state: dict) -> torch.Tensor:
        return state["z"]

    def finish(self, result: Result, state: dict) -> LowerLevelResult:
        return LowerLevelResult(x=result.x, history=result.history, iterations=result.iterations,
                                converged=result.converged, error_bound=state["bound"],
                                evaluations=state["evaluations"], lipschitz=state["L"])


def accelerated_gradient(problem: RegularisedLeastSquares, eps: float, x0: torch.Tensor | None = None, *,
                         lipschitz: float | torch.Tensor = 1.0, max_iter: int = 2000, progress: bool = False,
                         callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                         warn: bool = True) -> LowerLevelResult:
    """Minimise the μ-strongly convex h from x0 (warm start; default: the data) until ‖∇h(z)‖/μ ≤ eps per sample.

    L starts at `lipschitz` (a scalar or per sample) and is doubled until the sufficient-decrease condition
    h(z − ∇h(z)/L) ≤ h(z) − ‖∇h(z)‖²/(2L) holds, and shrunk by 0.9 after each success (so a loose start costs
    little), while that condition is above the rounding of h; then L stays fixed. Runs on the library's loop
    (under torch.no_grad, a `ConvergenceWarning` when max_iter runs out first); callback(iteration, z,
    error_bound) is called after each iteration."""
    loop_callback = None if callback is None else (lambda i, state, metrics: callback(i, state["z"], state["bound"]))
    solver = LowerLevelSolver(problem, eps, lipschitz=lipschitz, max_iter=max_iter, progress=progress,
                              callback=loop_callback)
    return solver.run(x0, warn=warn)
