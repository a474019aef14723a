r"""Subsampled Fourier operator for MRI: y = M ⊙ F x, F the centred orthonormal 2-D DFT, M a k-space mask.

F x = fftshift(fft2(ifftshift(x), norm="ortho")) over the last two dims, so the k-space centre (DC) sits in the
middle of the array, as masks and k-space figures are drawn. Images (N, C, H, W), real or complex; k-space is
complex (N, C, H, W) with zeros where not sampled. F is unitary, so ‖A‖ ≤ 1 and A^H A = F^H M² F.
"""
from __future__ import annotations

import math
import numbers

import torch

from imaging.operators.base import LinearOperator, check_input, check_shape
from imaging.operators.sampling import _generator

_DIMS = (-2, -1)


def centered_fft2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DFT with the zero frequency at the centre of the last two dims."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def centered_ifft2(k: torch.Tensor) -> torch.Tensor:
    """Inverse (= adjoint) of `centered_fft2`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def cartesian_mask(shape: tuple[int, int], acceleration: float = 4.0, center_fraction: float = 0.08,
                   seed: int | None = 0) -> torch.Tensor:
    """Cartesian undersampling mask (H, W): fully sampled central columns plus random phase-encode columns.

    A fraction `center_fraction` of the W columns around the centre is always kept; the rest are drawn at random so
    that about W / `acceleration` columns are sampled in total.
    """
    h, w = check_shape(shape, "cartesian_mask", "shape", 2, " (H, W)")
    if not (isinstance(acceleration, numbers.Real) and math.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"cartesian_mask: argument 'acceleration' must be a finite number >= 1, got {acceleration!r}")
    if not (isinstance(center_fraction, numbers.Real) and 0 <= center_fraction <= 1):
        raise ValueError(f"cartesian_mask: argument 'center_fraction' must be a number in [0, 1] (the fraction of "
                         f"columns always kept), got {center_fraction!r}")
    center = max(1, round(w * center_fraction))
    keep = torch.zeros(w, dtype=torch.bool)
    start = w // 2 - center // 2
    keep[start:start + center] = True
    wanted = max(round(w / acceleration) - center, 0)
    others = (~keep).nonzero().flatten()
    chosen = others[torch.randperm(others.numel(), generator=_generator(seed))[:wanted]]
    keep[chosen] = True
    return keep[None, :].expand(h, w).double()


class MRI(LinearOperator):
    """Single-coil Cartesian MRI: y = M ⊙ F x (complex k-space of the image size), A^H y = F^H (M ⊙ y).

    Args:
        mask: real k-space mask (H, W) (or broadcastable against (N, C, H, W)) in centred layout; see `cartesian_mask`.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(mask, torch.Tensor) or mask.is_complex() or mask.dim() < 2:
            raise ValueError("MRI: argument 'mask' must be a real tensor of shape (H, W) or broadcastable to "
                             "(N, C, H, W)")
        if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
            raise ValueError("MRI: argument 'mask' has non-finite values (NaN or inf); expected weights, typically 0 "
                             "(not sampled) and 1 (sampled)")
        self.register_buffer("mask", mask.double())

    def _check(self, x: torch.Tensor, arg: str) -> torch.Tensor:
        check_input(self, x, arg)
        if x.dim() != 4 or tuple(x.shape[-2:]) != tuple(self.mask.shape[-2:]):
            raise ValueError(f"MRI: argument '{arg}' must have shape (N, C, {self.mask.shape[-2]}, "
                             f"{self.mask.shape[-1]}), got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        return centered_fft2(x) * self.mask.to(x.real.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y")
        return centered_ifft2(y * self.mask.to(y.real.dtype))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x")
        return centered_ifft2(centered_fft2(x) * self.mask.to(x.real.dtype) ** 2)

    @property
    def acceleration(self) -> float:
        """Undersampling factor: k-space locations over sampled ones."""
        return self.mask.numel() / max(float(self.mask.sum()), 1.0)
