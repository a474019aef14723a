r"""Checks for forward operators, public so users can validate their own operators.

- `dot_test(op, x)`: normalised adjoint error |<A x, y> − <x, A^H y>| / (‖A x‖ ‖y‖) for random y.
- `check_linear(op, x)`: relative error of A(a x + b x') against a A x + b A x'.
- `adjoint_vs_autograd(op, x)`: relative distance between `op.adjoint` and the adjoint derived by autograd.
For a real input x, inner products are real parts: the adjoint of a real-to-complex map is taken for Re<., .>.
"""
from __future__ import annotations

import torch

from imaging.operators.base import LinearOperator, Operator


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_like(t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Standard normal tensor with the shape, dtype (real or complex) and device of `t`, from a fixed seed."""
    return torch.randn(t.shape, dtype=t.dtype, generator=_generator(seed)).to(t.device)


def _inner(a: torch.Tensor, b: torch.Tensor, real: bool) -> torch.Tensor:
    value = torch.vdot(a.reshape(-1), b.reshape(-1).to(a.dtype) if a.is_complex() or not b.is_complex()
                       else b.reshape(-1))
    return value.real if real else value


def dot_test(op: LinearOperator, x: torch.Tensor, y: torch.Tensor | None = None, seed: int = 0) -> float:
    """Normalised adjoint error |<A x, y> − <x, A^H y>| / (‖A x‖ ‖y‖) for the sample input `x` (random y if None).

    Values near machine precision (< 1e-10 in float64) mean `op.adjoint` is the adjoint of `op.forward`.
    """
    with torch.no_grad():
        ax = op(x)
        y = random_like(ax, seed + 1) if y is None else y
        aty = op.adjoint(y)
    if aty.shape != x.shape:
        raise ValueError(f"dot_test: the adjoint returned shape {tuple(aty.shape)}, expected {tuple(x.shape)}")
    real = not x.is_complex()
    lhs = _inner(ax, y, real)
    rhs = _inner(x.to(aty.dtype) if aty.is_complex() else x, aty, real)
    scale = torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y)
    return float((lhs - rhs).abs() / scale) if scale > 0 else float((lhs - rhs).abs())


def check_linear(op: Operator, x: torch.Tensor, other: torch.Tensor | None = None, a: complex = 0.7,
                 b: complex = -1.3, seed: int = 0) -> float:
    """Relative linearity error ‖A(a x + b x') − a A x − b A x'‖ / (|a| ‖A x‖ + |b| ‖A x'‖)."""
    other = random_like(x, seed + 2) if other is None else other
    if not x.is_complex():
        a, b = float(a.real) if isinstance(a, complex) else a, float(b.real) if isinstance(b, complex) else b
    with torch.no_grad():
        ax, ao = op(x), op(other)
        mixed = op(a * x + b * other)
    scale = abs(a) * torch.linalg.vector_norm(ax) + abs(b) * torch.linalg.vector_norm(ao)
    return float(torch.linalg.vector_norm(mixed - a * ax - b * ao) / scale) if scale > 0 else 0.0


def adjoint_vs_autograd(op: LinearOperator, x: torch.Tensor, seed: int = 0) -> float:
    """‖op.adjoint(y) − A^H_autograd y‖ / ‖A^H_autograd y‖ for random y shaped like A x."""
    with torch.no_grad():
        y = random_like(op(x), seed + 3)
        explicit = op.adjoint(y)
    derived = LinearOperator.adjoint(op, y)
    if not x.is_complex() and explicit.is_complex():
        explicit = explicit.real  # real domain: the adjoint for Re<., .> is the real part
    reference = torch.linalg.vector_norm(derived)
    return float(torch.linalg.vector_norm(explicit - derived) / reference) if reference > 0 else \
        float(torch.linalg.vector_norm(explicit))
