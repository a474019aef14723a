r"""Gain sensing, the forward model of blind gain calibration, as compiled ops with torch references.

For B independent problems, p snapshots, m sensors with gains g and n pixels:

    y[b, l] = diag(g[b]) A_l x[b]          A: (p, m, n) shared by the problems, or (B, p, m, n)

- `gain_forward(A, x, gains)` -> y (B, p, m); without gains, the plain sensing u = A x.
- `gain_adjoint(A, r, gains, u)` -> (Σ_l A_lᴴ (ḡ ⊙ r_l), Σ_l ū_l ⊙ r_l): the vector-Jacobian product of the forward
  model for a cotangent r, i.e. the image and per-sensor gain gradients of ½ Σ_l ‖g ⊙ A_l x − y_l‖² when r is the
  residual and u = A x.
- `gain_normal_pass(A, s, w, c)` -> (v = A s, Q = Aᴴ(w ⊙ v), P = Aᴴ c, e = Σ_l |v_l|²) in one pass over A.

Compiled kernels (`imaging::gain_*`, csrc/cpu/gain_sensing.cpp, csrc/cuda/gain_sensing.cu) handle real
float32/float64; complex tensors (complex gains: gain and phase) and other dtypes use the torch references, which
are written with conjugates so the same formulas hold. `gain_forward` and `gain_adjoint` are differentiable
(twice); `gain_normal_pass` is a solver building block and is not.
"""
from __future__ import annotations

import torch

from imaging._ext import HAS_EXT
from imaging.ops._common import register_not_differentiable, use_kernel


def _einsum_prefix(A: torch.Tensor) -> str:
    return "lmn" if A.dim() == 3 else "blmn"


def _gain_forward_torch(A: torch.Tensor, x: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
    u = torch.einsum(f"{_einsum_prefix(A)},bn->blm", A, x)
    return u if gains is None else u * gains[:, None, :]


def _sense_adjoint_torch(A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Σ_l A_lᴴ c_l: (B, p, m) -> (B, n)."""
    return torch.einsum(f"{_einsum_prefix(A)},blm->bn", A.conj(), c)


def _gain_adjoint_torch(A: torch.Tensor, r: torch.Tensor, gains: torch.Tensor | None = None,
                        u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    weighted = r if gains is None else r * gains.conj()[:, None, :]
    grad_gains = (u.conj() * r).sum(1) if u is not None else r.new_zeros(r.shape[0], 0)
    return _sense_adjoint_torch(A, weighted), grad_gains


def _gain_normal_pass_torch(A: torch.Tensor, s: torch.Tensor, weights: torch.Tensor, c: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    v = _gain_forward_torch(A, s)
    Q = _sense_adjoint_torch(A, v * weights[:, None, :])
    P = _sense_adjoint_torch(A, c) if c is not None else torch.zeros_like(Q)
    return v, Q, P, (v.abs() ** 2).sum(1)


def _check(op: str, A: object, **tensors: torch.Tensor | None) -> tuple[int, int, int, int]:
    """Check A (p, m, n) or (B, p, m, n) and the named tensors; returns (B, p, m, n)."""
    if not isinstance(A, torch.Tensor) or A.dim() not in (3, 4) or A.numel() == 0:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"{op}: argument 'A' must be a non-empty tensor of shape (p, m, n) or (B, p, m, n), got {got}")
    p, m, n = A.shape[-3:]
    layouts = {"x": ("(B, n)", (n,)), "s": ("(B, n)", (n,)), "gains": ("(B, m)", (m,)), "weights": ("(B, m)", (m,)),
               "r": ("(B, p, m)", (p, m)), "u": ("(B, p, m)", (p, m)), "c": ("(B, p, m)", (p, m))}
    batch = A.shape[0] if A.dim() == 4 else None
    for name, t in tensors.items():
        if t is None:
            continue
        layout, trailing = layouts[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if batch is None:
            batch = t.shape[0] if t.dim() == len(trailing) + 1 else None
        if t.dim() != len(trailing) + 1 or tuple(t.shape[1:]) != trailing or t.shape[0] != batch:
            raise ValueError(f"{op}: argument '{name}' must have shape {layout} = {(batch, *trailing)} for A of shape "
                             f"{tuple(A.shape)}, got {tuple(t.shape)}")
        if t.dtype != A.dtype or t.device != A.device:
            raise TypeError(f"{op}: argument '{name}' must have A's dtype {A.dtype} and device {A.device}, "
                            f"got {t.dtype} on {t.device}")
    return batch, p, m, n


def _compiled(A: torch.Tensor) -> bool:
    return use_kernel(A) and not A.is_complex()


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def gain_forward(A: torch.Tensor, x: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
    """y[b, l] = diag(gains[b]) A_l x[b]: A (p, m, n) or (B, p, m, n), x (B, n), gains (B, m) -> (B, p, m)."""
    _check("gain_forward", A, x=x, gains=gains)
    if _compiled(A):
        return torch.ops.imaging.gain_forward(A.contiguous(), x.contiguous(), _contiguous(gains))
    return _gain_forward_torch(A, x, gains)


def gain_adjoint(A: torch.Tensor, r: torch.Tensor, gains: torch.Tensor | None = None,
                 u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_l A_lᴴ (ḡ ⊙ r_l) (B, n), Σ_l ū_l ⊙ r_l (B, m), or (B, 0) without u) for r (B, p, m)."""
    _check("gain_adjoint", A, r=r, gains=gains, u=u)
    if _compiled(A):
        return torch.ops.imaging.gain_adjoint(A.contiguous(), r.contiguous(), _contiguous(gains), _contiguous(u))
    return _gain_adjoint_torch(A, r, gains, u)


def gain_normal_pass(A: torch.Tensor, s: torch.Tensor, weights: torch.Tensor, c: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over A: (v = A s (B, p, m), Q = Σ_l A_lᴴ (w ⊙ v_l) (B, n), P = Σ_l A_lᴴ c_l (B, n) (zeros without
    c), e = Σ_l |v_l|² (B, m)). With w = |g|², Q is the normal operator Aᴴ diag(|g|²) A applied to s."""
    _check("gain_normal_pass", A, s=s, weights=weights, c=c)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (A, s, weights, c)):
        raise RuntimeError("gain_normal_pass: not differentiable (the fused pass of the calibration solvers, which "
                           "run without autograd); detach the inputs, or compose gain_forward / gain_adjoint, which "
                           "are")
    if _compiled(A):
        return torch.ops.imaging.gain_normal_pass(A.contiguous(), s.contiguous(), weights.contiguous(),
                                                  _contiguous(c))
    return _gain_normal_pass_torch(A, s, weights, c)


if HAS_EXT:

    @torch.library.register_fake("imaging::gain_forward")
    def _(A, x, gains=None):
        return x.new_empty(x.shape[0], A.shape[-3], A.shape[-2])

    @torch.library.register_fake("imaging::gain_adjoint")
    def _(A, r, gains=None, u=None):
        return r.new_empty(r.shape[0], A.shape[-1]), r.new_empty(r.shape[0], A.shape[-2] if u is not None else 0)

    @torch.library.register_fake("imaging::gain_normal_pass")
    def _(A, s, weights, c=None):
        B, (p, m, n) = s.shape[0], A.shape[-3:]
        return s.new_empty(B, p, m), s.new_empty(B, n), s.new_empty(B, n), s.new_empty(B, m)

    def _outer(A: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gradient in A of Σ <c, A x>: c (B, p, m) ⊗ x (B, n), summed over B when A is shared."""
        return torch.einsum("blm,bn->lmn" if A.dim() == 3 else "blm,bn->blmn", c, x)

    def _padded(values, count: int, fill=False) -> tuple:
        """Inputs or needs_input_grad, completed with the trailing optional arguments the caller left out."""
        return tuple(values) + (fill,) * (count - len(values))

    def _save_forward(ctx, inputs, output) -> None:
        ctx.save_for_backward(*_padded(inputs, 3, None))

    def _forward_backward(ctx, grad):
        A, x, gains = ctx.saved_tensors
        grad = grad.contiguous()
        need_A, need_x, need_gains = _padded(ctx.needs_input_grad, 3)
        u = torch.ops.imaging.gain_forward(A, x, None) if need_gains or (need_A and gains is not None) else None
        grad_x, grad_gains = torch.ops.imaging.gain_adjoint(A, grad, gains, u if need_gains else None)
        grad_A = _outer(A, grad if gains is None else grad * gains[:, None, :], x) if need_A else None
        return grad_A, grad_x if need_x else None, grad_gains if need_gains else None

    def _save_adjoint(ctx, inputs, output) -> None:
        ctx.save_for_backward(*_padded(inputs, 4, None))

    def _adjoint_backward(ctx, grad_x_bar, grad_gains_bar):
        A, r, gains, u = ctx.saved_tensors
        need_A, need_r, need_gains, need_u = _padded(ctx.needs_input_grad, 4)
        # grad_x = Σ_l A_lᵀ (g ⊙ r_l) and grad_gains = Σ_l u_l ⊙ r_l are linear in r, g, A and u.
        Ab = torch.ops.imaging.gain_forward(A, grad_x_bar.contiguous(), None)  # A grad_x_bar: (B, p, m)
        grad_r = Ab if gains is None else Ab * gains[:, None, :]
        has_u = u is not None and grad_gains_bar.numel() > 0
        if has_u:
            grad_r = grad_r + u * grad_gains_bar[:, None, :]
        grad_g = (r * Ab).sum(1) if (need_gains and gains is not None) else None
        grad_u = r * grad_gains_bar[:, None, :] if (need_u and has_u) else None
        grad_A = _outer(A, r if gains is None else r * gains[:, None, :], grad_x_bar) if need_A else None
        return grad_A, grad_r if need_r else None, grad_g, grad_u

    torch.library.register_autograd("imaging::gain_forward", _forward_backward, setup_context=_save_forward)
    torch.library.register_autograd("imaging::gain_adjoint", _adjoint_backward, setup_context=_save_adjoint)
    register_not_differentiable("gain_normal_pass", "a fused pass of the solvers; differentiate gain_forward / "
                                "gain_adjoint (or the GainSensing operator) instead")
