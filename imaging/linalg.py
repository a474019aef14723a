r"""Linear algebra every solver shares: per-sample inner products and norms, and the one conjugate gradient.

A batch holds N independent problems along the first dimension. A *vector* is a tensor (N, ...) or a tuple of
such tensors (a block unknown, e.g. calibration's (gains, image)); inner products are per sample, real parts of
⟨a, b⟩ summed over every block.

The conjugate gradient solves H x = b for a Hermitian positive (semi-)definite H, one system per sample, with an
optional preconditioner M ≈ H⁻¹ (Hermitian positive definite, or a projected one):

    r₀ = b − H x₀, z₀ = M r₀, p₀ = z₀;   α = ⟨r, z⟩ / ⟨p, H p⟩;   x ← x + α p;   r ← r − α H p;
    z ← M r;   p ← z + (⟨r', z'⟩ / ⟨r, z⟩) p

per sample, each sample stopping (its step sizes set to 0) once √⟨r, z⟩ ≤ max(tol · ref, atol), ref = √⟨b, M b⟩
(or √⟨r₀, z₀⟩ with `relative_to_start`). `cg_start` / `cg_step` are the iteration for loops that report each step
(`imaging.solvers.CG`); `conjugate_gradient` runs it to the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from imaging.ops._common import require_values

Vector = Union[torch.Tensor, tuple]


class ConvergenceWarning(UserWarning):
    """A solver used all of `max_iter` before its stopping rule was met; the message says what was reached."""


def _blocks(v: Vector) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def _like(template: Vector, blocks) -> Vector:
    return tuple(blocks) if isinstance(template, tuple) else blocks[0]


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped (N, 1, ..., 1) to broadcast against `like`."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def batch_dot(a: Vector, b: Vector) -> torch.Tensor:
    """Re ⟨a, b⟩ per sample, (N,) (summed over the blocks of tuple vectors)."""
    return sum((x.conj() * y).real.flatten(1).sum(1) for x, y in zip(_blocks(a), _blocks(b)))


def batch_norm(a: Vector) -> torch.Tensor:
    """‖a‖ per sample, (N,)."""
    return batch_dot(a, a).clamp_min(0).sqrt()


def axpy(x: Vector, alpha: torch.Tensor, p: Vector) -> Vector:
    """x + α p with a per-sample α (N,)."""
    return _like(x, [xi + per_sample(alpha, xi).to(xi.dtype) * pi for xi, pi in zip(_blocks(x), _blocks(p))])


def check_finite(t: torch.Tensor, owner: str, arg: str) -> torch.Tensor:
    """Raise a clear error unless `t` is a non-empty tensor of finite values."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner}: argument '{arg}' must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{owner}: argument '{arg}' must be non-empty")
    require_values(t, owner, arg)
    if not torch.isfinite(t).all():
        raise ValueError(f"{owner}: argument '{arg}' has non-finite values (NaN or inf)")
    return t


@dataclass
class CGState:
    """The conjugate gradient's iterate: x, residual r, preconditioned residual z, direction p, ⟨r, z⟩ per sample,
    the per-sample threshold on ⟨r, z⟩ and its reference (⟨b, M b⟩ or ⟨r₀, M r₀⟩), the samples halted by a
    breakdown (⟨p, H p⟩ ≤ 0 before their threshold), the applications of H so far, and `aux` = B x when `normal`
    also returns B p for a linear B (kept without applying B again)."""

    x: Vector
    r: Vector
    z: Vector
    p: Vector
    rz: torch.Tensor
    stop: torch.Tensor
    reference2: torch.Tensor
    halted: torch.Tensor
    matvecs: int
    aux: Vector | None = None

    @property
    def converged(self) -> torch.Tensor:
        """Samples that met their threshold, (N,) bool."""
        return self.rz <= self.stop

    @property
    def active(self) -> torch.Tensor:
        """Samples still iterating, (N,) bool."""
        return ~self.converged & ~self.halted

    @property
    def relative_residual(self) -> torch.Tensor:
        """√⟨r, z⟩ over its reference, per sample."""
        return (self.rz.clamp_min(0) / self.reference2).sqrt()


def _apply(normal: Callable, v: Vector, track: bool):
    out = normal(v)
    return out if track else (out, None)


def cg_start(normal: Callable[[Vector], Vector], rhs: Vector, x0: Vector | None = None, *, tol: float = 1e-6,
             atol: float = 0.0, preconditioner: Callable[[Vector], Vector] | None = None,
             relative_to_start: bool = False, track: bool = False, aux0: Vector | None = None,
             residual0: Vector | None = None) -> CGState:
    """The starting state of `conjugate_gradient` (see there for the arguments)."""
    if not (tol >= 0 and atol >= 0):
        raise ValueError(f"conjugate_gradient: need tol >= 0 and atol >= 0, got {tol} and {atol}")
    precondition = preconditioner if preconditioner is not None else (lambda v: v)
    matvecs = 0
    if x0 is None:
        x = _like(rhs, [torch.zeros_like(b) for b in _blocks(rhs)])
        r = _like(rhs, [b.clone() for b in _blocks(rhs)])
    elif residual0 is not None:
        x, r = x0, residual0
    else:
        hx, aux_x = _apply(normal, x0, track)
        matvecs = 1
        x, r = x0, _like(rhs, [b - h for b, h in zip(_blocks(rhs), _blocks(hx))])
        aux0 = aux_x if aux0 is None else aux0
    z = precondition(r)
    rz = batch_dot(r, z)
    reference2 = rz if relative_to_start else batch_dot(rhs, precondition(rhs))
    for value, name in ((reference2, "⟨b, M b⟩"), (rz, "⟨r₀, M r₀⟩")):
        if bool(torch.isinf(value).any()):
            raise FloatingPointError(f"conjugate_gradient: {name} overflows {value.dtype}: the right-hand side's "
                                     f"scale is too large for this precision; rescale A (and y) or use float64")
        if bool(torch.isnan(value).any()):
            raise FloatingPointError(f"conjugate_gradient: {name} is NaN: the right-hand side, the start or the "
                                     f"preconditioner has non-finite values")
    tiny = torch.finfo(rz.dtype).tiny
    reference2 = reference2.clamp_min(tiny)
    stop = torch.maximum(tol ** 2 * reference2, torch.full_like(reference2, atol ** 2))
    return CGState(x, r, z, z, rz, stop, reference2, torch.zeros_like(rz, dtype=torch.bool), matvecs, aux0)


def check_cg_finite(state: CGState, iterations: int, who: str = "conjugate_gradient") -> None:
    """Raise FloatingPointError when a CG step left a non-finite residual (H or the preconditioner broke)."""
    if not bool(torch.isfinite(state.rz).all()):
        if not bool(torch.isnan(state.rz).any()):
            raise FloatingPointError(f"{who}: the residual overflowed {state.rz.dtype} at step {iterations}: the "
                                     f"operator's scale is too large for this precision; rescale A (and y) or use "
                                     f"float64")
        raise FloatingPointError(f"{who}: the residual became {float(state.rz.max())} at step {iterations}: H "
                                 f"(normal) or the preconditioner returned non-finite values")


def cg_step(normal: Callable[[Vector], Vector], state: CGState, *,
            preconditioner: Callable[[Vector], Vector] | None = None, track: bool = False) -> CGState:
    """One conjugate-gradient step; samples that have met their threshold keep their iterate."""
    precondition = preconditioner if preconditioner is not None else (lambda v: v)
    hp, bp = _apply(normal, state.p, track)
    php = batch_dot(state.p, hp)
    if bool((state.active & torch.isinf(php)).any()):
        raise FloatingPointError(f"conjugate_gradient: ⟨p, H p⟩ overflows {php.dtype}: the operator's scale is too "
                                 f"large for this precision; rescale A (and y) or use float64")
    tiny = torch.finfo(php.dtype).tiny
    moving = state.active & ((php > 0) | ~torch.isfinite(php))  # non-finite H p: NaN propagates, callers raise
    alpha = torch.where(moving, state.rz / torch.where(php > 0, php, php.clamp_min(tiny)), torch.zeros_like(php))
    x = axpy(state.x, alpha, state.p)
    r = axpy(state.r, -alpha, hp)
    aux = axpy(state.aux, alpha, bp) if track and state.aux is not None else state.aux
    z = precondition(r)
    rz = torch.where(moving, batch_dot(r, z), state.rz)
    beta = torch.where(moving, rz / state.rz.clamp_min(tiny), torch.zeros_like(rz))
    p = axpy(z, beta, state.p)
    halted = state.halted | (state.active & ~moving)
    return CGState(x, r, z, p, rz, state.stop, state.reference2, halted, state.matvecs + 1, aux)


@dataclass
class CGResult:
    """x, the CG steps taken, the applications of H (steps plus the initial residual when x0 was given), the
    relative residual √⟨r, z⟩ / ref per sample, which samples met their threshold, and `aux` (= B x when tracked)."""

    x: Vector
    iterations: int
    matvecs: int
    residual: torch.Tensor
    converged: torch.Tensor
    aux: Vector | None = None


def conjugate_gradient(normal: Callable[[Vector], Vector], rhs: Vector, x0: Vector | None = None, *,
                       tol: float = 1e-6, atol: float = 0.0, max_iter: int = 100,
                       preconditioner: Callable[[Vector], Vector] | None = None, relative_to_start: bool = False,
                       track: bool = False, aux0: Vector | None = None, residual0: Vector | None = None) -> CGResult:
    """Solve H x = b per sample by (preconditioned) conjugate gradient; see the module docstring.

    Args:
        normal: v -> H v (batched; on tuple vectors when rhs is a tuple). With `track`, v -> (H v, B v) for a
            linear B, and the result's `aux` is B x (from `aux0` = B x₀) without applying B again.
        rhs: b, (N, ...) or a tuple of blocks. x0: the start (zeros when None); residual0: b − H x₀ when the
            caller has it already (saves one application of H).
        tol, atol: a sample stops once √⟨r, M r⟩ ≤ max(tol·√⟨b, M b⟩, atol) (relative to √⟨r₀, M r₀⟩ with
            `relative_to_start`). max_iter: CG steps at most.
        preconditioner: r -> M r (None: the identity).
    """
    state = cg_start(normal, rhs, x0, tol=tol, atol=atol, preconditioner=preconditioner,
                     relative_to_start=relative_to_start, track=track, aux0=aux0, residual0=residual0)
    iterations = 0
    while iterations < max_iter and bool(state.active.any()):
        state = cg_step(normal, state, preconditioner=preconditioner, track=track)
        iterations += 1
        check_cg_finite(state, iterations)
    return CGResult(state.x, iterations, state.matvecs, state.relative_residual, state.converged, state.aux)
