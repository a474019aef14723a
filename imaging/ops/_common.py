"""Argument checks shared by the Python side of the compiled ops."""
from __future__ import annotations

import torch

from imaging._ext import has_kernel

KERNEL_DTYPES = (torch.float32, torch.float64)


def require_values(t: torch.Tensor, op: str, arg: str) -> None:
    """Refuse a meta tensor (a shape without values) where `op` must read the values (finiteness, scales)."""
    if t.is_meta:
        raise ValueError(f"{op}: argument '{arg}' is a meta tensor (a shape without values), but {op} reads its "
                         f"values; pass a tensor on the CPU or a GPU")


def check_tensor(t: object, op: str, arg: str, dims: tuple[int, ...], layout: str) -> torch.Tensor:
    """Raise a clear error unless `t` is a non-empty floating/complex tensor with one of `dims` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{arg}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in dims:
        raise ValueError(f"{op}: argument '{arg}' must have shape {layout}, got {tuple(t.shape)}")
    if not (t.is_floating_point() or t.is_complex()):
        raise TypeError(f"{op}: argument '{arg}' must be a floating or complex tensor, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{op}: argument '{arg}' must be non-empty, got shape {tuple(t.shape)}")
    return t


def use_kernel(t: torch.Tensor) -> bool:
    """True when the compiled kernel handles `t` (built for its device, float32/float64)."""
    return t.dtype in KERNEL_DTYPES and has_kernel(t.device)


def register_not_differentiable(op: str, hint: str) -> None:
    """An autograd formula for a compiled op that has none: its outputs keep requires_grad (autograd must see the
    op), and backward raises a clear error instead of leaving .grad silently None."""
    def backward(ctx, *grads):
        raise RuntimeError(f"imaging::{op} is not differentiable: {hint}")

    torch.library.register_autograd(f"imaging::{op}", backward, setup_context=lambda ctx, inputs, output: None)
