r"""Forward finite differences and their exact adjoint (minus the divergence), 2-D and 3-D, batched.

For x of shape (N, C, *S) with S = (H, W) or (D, H, W) and k = 0..len(S)-1:

    (D x)[:, :, k, i] = x[i + e_k] - x[i]   where i + e_k is inside the grid, else 0   (Neumann boundary)

so `finite_diff` maps (N, C, *S) -> (N, C, len(S), *S) and `finite_diff_adjoint` = D^T maps back, with
<D x, g> = <x, D^T g> exactly and D^T = -div. Compiled op `imaging::finite_diff` / `imaging::finite_diff_adjoint`
(csrc/cpu/finite_diff.cpp, csrc/cuda/finite_diff.cu); each is registered as the other's backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imaging._ext import HAS_EXT
from imaging.ops._common import check_tensor, use_kernel

_IMAGE = "(N, C, H, W) or (N, C, D, H, W)"
_FIELD = "(N, C, 2, H, W) or (N, C, 3, D, H, W)"


def _finite_diff_torch(x: torch.Tensor) -> torch.Tensor:
    """Pure-torch reference of `finite_diff` (any dtype, autograd-friendly)."""
    diffs = []
    for axis in range(2, x.dim()):
        last = x.narrow(axis, x.shape[axis] - 1, 1)
        diffs.append(torch.diff(x, dim=axis, append=last))  # x[n-1] - x[n-1] = 0 at the boundary
    return torch.stack(diffs, dim=2)


def _finite_diff_adjoint_torch(g: torch.Tensor) -> torch.Tensor:
    """Pure-torch reference of `finite_diff_adjoint`: out[i] = g_k[i - e_k] - g_k[i], g_k = 0 on the last slice."""
    ndim = g.dim() - 3
    out = None
    for k in range(ndim):
        gk = g.select(2, k)
        axis = 2 + k
        inner = gk.narrow(axis, 0, gk.shape[axis] - 1)
        pad = [0, 0] * (gk.dim() - axis - 1)
        term = F.pad(inner, pad + [1, 0]) - F.pad(inner, pad + [0, 1])
        out = term if out is None else out + term
    return out


def _check_field(g: torch.Tensor, op: str) -> None:
    check_tensor(g, op, "g", (5, 6), _FIELD)
    if g.shape[2] != g.dim() - 3:
        raise ValueError(f"{op}: argument 'g' must hold {g.dim() - 3} difference directions in dim 2 "
                         f"for {g.dim() - 3}-D data, got shape {tuple(g.shape)}")


def finite_diff(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with Neumann boundary: (N, C, *S) -> (N, C, len(S), *S), S = (H, W) or (D, H, W)."""
    check_tensor(x, "finite_diff", "x", (4, 5), _IMAGE)
    if use_kernel(x):
        return torch.ops.imaging.finite_diff(x.contiguous())
    return _finite_diff_torch(x)


def finite_diff_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of `finite_diff` (= minus the divergence): (N, C, len(S), *S) -> (N, C, *S)."""
    _check_field(g, "finite_diff_adjoint")
    if use_kernel(g):
        return torch.ops.imaging.finite_diff_adjoint(g.contiguous())
    return _finite_diff_adjoint_torch(g)


def divergence(g: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence, the negative adjoint of `finite_diff`: div = -D^T."""
    return -finite_diff_adjoint(g)


if HAS_EXT:

    @torch.library.register_fake("imaging::finite_diff")
    def _(x: torch.Tensor) -> torch.Tensor:
        torch._check(x.dim() in (4, 5), lambda: f"imaging::finite_diff: x must be {_IMAGE}, got {tuple(x.shape)}")
        shape = list(x.shape)
        shape.insert(2, x.dim() - 2)
        return x.new_empty(shape)

    @torch.library.register_fake("imaging::finite_diff_adjoint")
    def _(g: torch.Tensor) -> torch.Tensor:
        torch._check(g.dim() in (5, 6), lambda: f"imaging::finite_diff_adjoint: g must be {_FIELD}")
        shape = list(g.shape)
        del shape[2]
        return g.new_empty(shape)

    def _no_context(ctx, inputs, output) -> None:
        pass

    torch.library.register_autograd(
        "imaging::finite_diff",
        lambda ctx, grad: torch.ops.imaging.finite_diff_adjoint(grad.contiguous()),
        setup_context=_no_context,
    )
    torch.library.register_autograd(
        "imaging::finite_diff_adjoint",
        lambda ctx, grad: torch.ops.imaging.finite_diff(grad.contiguous()),
        setup_context=_no_context,
    )
