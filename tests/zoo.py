"""The operator registry: every operator of the catalogue (and a user-style operator with no adjoint), each with a
float64 sample input. Every generic test iterates `ZOO`; enrolling an operator here runs the whole battery on it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from imaging.operators import (MRI, Blur, CompressedSensing, Downsampling, FiniteDifference, Identity, Inpainting,
                               LinearOperator, Radon, StructuredCompressedSensing, box_kernel, cartesian_mask,
                               gaussian_kernel, motion_kernel)

H, W = 24, 20


class UserBinning(LinearOperator):
    """What a user writes: forward only (2x2 binning of a shifted image); the adjoint comes from autograd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(torch.roll(x, shifts=1, dims=-1), 2)


@dataclass
class Case:
    """make(): a fresh operator on the CPU; sample(): a float64 (or complex128) batch of 2 inputs;
    wrong_shape: an input shape the operator must reject (None when any image size is accepted)."""

    make: Callable[[], LinearOperator]
    sample: Callable[[], torch.Tensor]
    wrong_shape: tuple[int, ...] | None = None


def _image(channels: int = 3, complex_: bool = False, shape: tuple[int, ...] = (H, W)) -> Callable[[], torch.Tensor]:
    def sample() -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        dtype = torch.complex128 if complex_ else torch.float64
        return torch.randn(2, channels, *shape, generator=gen, dtype=dtype)
    return sample


ZOO: dict[str, Case] = {
    "identity": Case(Identity, _image()),
    "blur_circular": Case(lambda: Blur(gaussian_kernel(1.5)), _image(), (2, 3, H)),
    "blur_circular_complex": Case(lambda: Blur(gaussian_kernel(1.0)), _image(1, complex_=True), (2, 1, H)),
    "blur_zeros_motion": Case(lambda: Blur(motion_kernel(7, 30.0), mode="zeros"), _image(), (2, 3, H)),
    "blur_reflect_box": Case(lambda: Blur(box_kernel((4, 5)), mode="reflect"), _image(), (2, 3, H)),
    "blur_per_channel": Case(lambda: Blur(torch.stack([gaussian_kernel(s, size=5) for s in (0.5, 1.0, 2.0)]),
                                          mode="replicate"), _image(), (2, 2, H, W)),
    "downsampling_gaussian": Case(lambda: Downsampling(2), _image(), (2, 3, H)),
    "downsampling_box": Case(lambda: Downsampling(4, filter="box", mode="circular"), _image(), (2, 3, H)),
    "inpainting": Case(lambda: Inpainting.random((H, W), 0.5), _image(), (2, 3, H, W + 1)),
    "compressed_sensing": Case(lambda: CompressedSensing(200, (3, H, W)), _image(), (2, 3, H, W + 1)),
    "structured_cs": Case(lambda: StructuredCompressedSensing(600, (3, H, W)), _image(), (2, 3, H, W + 1)),
    "mri": Case(lambda: MRI(cartesian_mask((H, W), acceleration=4)), _image(1, complex_=True), (2, 1, H, W + 1)),
    "mri_real_image": Case(lambda: MRI(cartesian_mask((H, W), acceleration=2, seed=1)), _image(2), (2, 2, H - 1, W)),
    "radon": Case(lambda: Radon((H, W), angles=16), _image(1), (2, 1, H, W + 1)),
    "finite_diff_2d": Case(FiniteDifference, _image()),
    "finite_diff_3d": Case(FiniteDifference, _image(1, shape=(5, 6, 7))),
    "composition": Case(lambda: Downsampling(2) @ Blur(gaussian_kernel(1.0)), _image(), (2, 3, H)),
    "sum_and_scale": Case(lambda: 2.0 * Blur(gaussian_kernel(1.0)) - Identity(), _image(), (2, 3, H)),
    "adjoint_of_radon": Case(lambda: Radon((H, W), angles=8).H, _image(1, shape=(8, 32)), (2, 1, 8, 31)),
    "user_binning": Case(UserBinning, _image()),
}


def devices() -> list[str]:
    """Devices to run device tests on: the CPU, and CUDA when present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
