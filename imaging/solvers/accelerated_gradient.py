r"""Accelerated projected gradient for a smooth prior:  min_x ½‖A x − y‖² + lam·R(x)  (+ a box on x).

R is any prior with `value(x) -> (N,)` and `grad(x)` (a `FieldOfExperts`, a smoothed `TotalVariation(eps > 0)`,
a learned regulariser). Per sample, with F = ½‖A·−y‖² + lam·R and Π the projection on the box:

    x_{k+1} = Π(z_k − ∇F(z_k)/L_k),   t_{k+1} = (1 + sqrt(1 + 4 t_k²))/2,
    z_{k+1} = x_{k+1} + ((t_k − 1)/t_{k+1}) (x_{k+1} − x_k)

(Beck and Teboulle's FISTA on the smooth part, the box as its prox). L_k is found by backtracking (doubled until
F(x⁺) ≤ F(z) + ⟨∇F(z), x⁺ − z⟩ + L/2 ‖x⁺ − z‖², shrunk by 0.9 after each step), so neither ‖A‖ nor the prior's
Lipschitz constant needs to be known; the momentum restarts when F would increase (O'Donoghue and Candès'
function restart). Stops when the relative change ‖x_{k+1} − x_k‖/‖x_{k+1}‖ ≤ tol for every sample.
"""
from __future__ import annotations

import torch

from imaging.operators.base import LinearOperator
from imaging.solvers.base import (DivergenceError, IterativeSolver, Result, box_bounds, check_linearity, check_start,
                                  require_linear, unknown_like)
from imaging.linalg import batch_dot, check_finite
from imaging.solvers.parameter_choice import prepare_search, search_solver, squared_norm, variational_auto


class AcceleratedGradient(IterativeSolver):
    """Reconstruction with a smooth prior, e.g. `FieldOfExperts.pretrained(...)`, by accelerated projected gradient.

    Args:
        A, y: linear operator and measurements.
        prior: R with `value(x)` (per sample) and `grad(x)`.
        lam: its weight ≥ 0, or "auto" / `Discrepancy(...)` / `SURE(...)` (chosen from `noise_level`, estimated from
            y when None; see `imaging.solvers.parameter_choice`). "auto" with σ given is the discrepancy principle
            at τ = 0.9 (`parameter_choice.VARIATIONAL_TAU`; SURE for denoising), at τ = 1 with σ estimated.
        box: (lower, upper) bounds on x (either may be None), or None.
        lipschitz: first estimate of L (default ‖A‖² + lam·R's `lipschitz_bound()` when it has one, else ‖A‖²·2);
            backtracking corrects it either way.
        x_like: an image of the unknown's shape (default: Aᴴy).
    """

    name = "AcceleratedGradient"

    def __init__(self, A: LinearOperator, y: torch.Tensor, prior, lam: float | str = 1.0, *,
                 box: tuple[float | None, float | None] | None = None, lipschitz: float | None = None,
                 x_like: torch.Tensor | None = None, max_iter: int = 500, tol: float = 1e-5,
                 noise_level: float | None = None, **loop_options) -> None:
        super().__init__(max_iter=max_iter, tol=tol, **loop_options)
        require_linear(A, "AcceleratedGradient")
        if not (callable(getattr(prior, "value", None)) and callable(getattr(prior, "grad", None))):
            raise TypeError("AcceleratedGradient: argument 'prior' must have value(x) and grad(x) (a smooth prior such "
                            f"as FieldOfExperts or TotalVariation(eps > 0)), got {type(prior).__name__}")
        self.A, self.y, self.prior = A, check_finite(y, "AcceleratedGradient", "y"), prior
        self.lower, self.upper = box_bounds(box, "AcceleratedGradient")
        options = dict(box=box, lipschitz=lipschitz, x_like=x_like, max_iter=max_iter, tol=tol, **loop_options)
        if prepare_search(self, lam, y, A, noise_level, options, "AcceleratedGradient",
                          auto=variational_auto(A, noise_level)):
            lam = 0.0
        self.lam = float(lam)
        self.like = unknown_like(A, y, x_like, "AcceleratedGradient")
        check_linearity(A, self.like, "AcceleratedGradient")
        if lipschitz is None:
            bound, data = getattr(prior, "lipschitz_bound", None), A.norm(self.like) ** 2
            lipschitz = data + (self.lam * float(bound()) if callable(bound) else data)
        if not lipschitz > 0:
            raise ValueError(f"AcceleratedGradient: argument 'lipschitz' must be positive, got {lipschitz}")
        self.lipschitz = float(lipschitz)

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        guess = lambda data: self.noise_level * squared_norm(self.A, data)  # noqa: E731
        return search_solver(lambda value, data: AcceleratedGradient(self.A, data, self.prior, value, **self.options),
                             self.A, self.y, self.parameter_rule, self.noise_level, guess, x0, self.name)

    def objective(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(x) per sample, ∇F(x))."""
        residual = self.A(x) - self.y
        gradient = self.A.adjoint(residual)
        gradient = gradient.real if gradient.is_complex() and not x.is_complex() else gradient
        value = 0.5 * residual.abs().pow(2).flatten(1).sum(1)
        if self.lam > 0:
            value = value + self.lam * self.prior.value(x)
            gradient = gradient + self.lam * self.prior.grad(x)
        return value, gradient

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        value = 0.5 * (self.A(x) - self.y).abs().pow(2).flatten(1).sum(1)
        return value + self.lam * self.prior.value(x) if self.lam > 0 else value

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.lower is None and self.upper is None else x.clamp(self.lower, self.upper)

    def init(self, x0: torch.Tensor | None):
        check_start(x0, self.like, "AcceleratedGradient")
        x = self._project(x0.to(self.like.dtype).clone() if x0 is not None else torch.zeros_like(self.like))
        batch = x.shape[0]
        L = torch.full((batch,), self.lipschitz, dtype=x.real.dtype, device=x.device)
        t = torch.ones(batch, dtype=x.real.dtype, device=x.device)
        self._steps = 0  # steps taken (for the line search's error)
        return x, x.clone(), t, L, self._value(x)

    def step(self, state):
        x, z, t, L, f_x = state
        self._steps += 1
        shape = (-1,) + (1,) * (x.dim() - 1)
        f_z, g = self.objective(z)
        backtracks = 0
        while True:
            x_new = self._project(z - g / L.view(shape))
            d = x_new - z
            f_new = self._value(x_new)
            bound = f_z + _dot(g, d) + 0.5 * L * _dot(d, d)
            # a slack for rounding: near the solution both sides agree only to the precision of F
            ok = f_new <= bound + 10 * torch.finfo(f_z.dtype).eps * f_z.abs()
            if bool(ok.all()):
                break
            if backtracks == 60:  # rounding near the solution is accepted; a step that raises F is not
                if bool((~ok & (f_new > f_z + 10 * torch.finfo(f_z.dtype).eps * f_z.abs())).any()):
                    raise DivergenceError(
                        f"AcceleratedGradient: would diverge: the line search found no descent step after 60 doublings of L "
                        f"(now {float(L.max()):.3g}): the Lipschitz guess 'lipschitz' ({self.lipschitz:.3g}) is far "
                        f"too small, or the objective is not smooth; the exception's .x is the last iterate", x,
                        self._steps)
                break
            L = torch.where(ok, L, 2 * L)
            backtracks += 1
        restart = f_new > f_x  # function restart: drop the momentum of the samples whose objective went up
        t_new = torch.where(restart, torch.ones_like(t), (1 + torch.sqrt(1 + 4 * t * t)) / 2)
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
        z_new = x_new + momentum.view(shape) * (x_new - x)
        change = _dot(x_new - x, x_new - x).sqrt() / _dot(x_new, x_new).sqrt().clamp_min(1e-30)
        metrics = {"objective": float(f_new.sum()), "residual": float(change.max()), "lipschitz": float(L.max()),
                   "backtracks": float(backtracks)}
        return (x_new, z_new, t_new, 0.9 * L, f_new), metrics

    def estimate(self, state) -> torch.Tensor:
        return state[0]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return batch_dot(a, b).flatten()
