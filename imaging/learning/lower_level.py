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

from imaging._progress import progress_bar
from imaging.operators.base import LinearOperator


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
class LowerLevelResult:
    """x: the certified iterate; error_bound: ‖∇h(x)‖/μ ≥ ‖x − x*‖ per sample; iterations; gradient evaluations;
    converged: error_bound ≤ ε for every sample; lipschitz: the final backtracking estimate of L."""

    x: torch.Tensor
    error_bound: torch.Tensor
    iterations: int
    evaluations: int
    converged: bool
    lipschitz: torch.Tensor


def accelerated_gradient(problem: RegularisedLeastSquares, eps: float, x0: torch.Tensor | None = None, *,
                         lipschitz: float | torch.Tensor = 1.0, max_iter: int = 2000, progress: bool = False,
                         callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
                         ) -> LowerLevelResult:
    """Minimise the μ-strongly convex h from x0 (warm start; default: the data) until ‖∇h(z)‖/μ ≤ eps per sample.

    L starts at `lipschitz` (a scalar or per sample) and is doubled until the sufficient-decrease condition
    h(z − ∇h(z)/L) ≤ h(z) − ‖∇h(z)‖²/(2L) holds, and shrunk by 0.9 after each success (so a loose start costs
    little), while that condition is above the rounding of h; then L stays fixed. Runs under torch.no_grad();
    callback(iteration, z, error_bound) is called after each iteration."""
    if eps <= 0:
        raise ValueError(f"accelerated_gradient: argument 'eps' must be positive, got {eps}")
    mu = problem.mu
    with torch.no_grad():
        x = (problem.initial() if x0 is None else x0).clone()
        B = x.shape[0]
        shape = (B,) + (1,) * (x.dim() - 1)
        L = torch.as_tensor(lipschitz, dtype=x.real.dtype, device=x.device).expand(B).clone().clamp_min(mu)
        z, x_prev = x, x
        evaluations = 0
        bar = progress_bar(total=max_iter, desc="lower level", enabled=progress)
        iteration = 0
        for iteration in range(max_iter + 1):
            g = problem.grad(z)
            evaluations += 1
            bound = _norms(g) / mu
            if callback is not None:
                callback(iteration, z, bound)
            if bool((bound <= eps).all()) or iteration == max_iter:
                break
            h_z = problem.value(z)
            g2 = _norms(g) ** 2
            # The decrease test is only informative while the predicted decrease exceeds the rounding of h; below
            # that, L is kept as it is (adapting it to rounding noise would shrink it until the iteration diverges).
            informative = g2 / (2 * L) > 1e-9 * h_z.abs().clamp_min(1e-300)
            while True:  # backtracking on L, per sample
                x_new = z - g / L.view(shape)
                ok = ~informative | (problem.value(x_new) <= h_z - g2 / (2 * L))
                evaluations += 1
                if bool(ok.all()):
                    break
                L = torch.where(ok, L, 2 * L)
                informative = informative & (g2 / (2 * L) > 1e-9 * h_z.abs().clamp_min(1e-300))
            beta = (L.sqrt() - mu ** 0.5) / (L.sqrt() + mu ** 0.5)
            x_prev, x = x, x_new
            z = x + beta.view(shape) * (x - x_prev)
            L = torch.where(informative, (0.9 * L).clamp_min(mu), L)
            bar.update(1)
        bar.close()
    return LowerLevelResult(z, bound, iteration, evaluations, bool((bound <= eps).all()), L)
