"""What the benchmarks on held-out pictures share: the tasks (forward operators), the pictures, training crops.

Tasks: denoising, Gaussian deblurring (std 1.6 px), 4× super-resolution (box), 50 % random inpainting, 30 %
compressed sensing (structured: random signs, DCT, random rows), 4× Cartesian MRI, sparse-view CT (20 angles over 180°: fewer measurements than pixels), and a
user-written forward-only operator (`SmearAndSubsample`: plain torch, adjoint by autograd).
Pictures never used in training: centre crops of Set12 (when ../shared/datasets is present) and of offline
scikit-image pictures (coffee, chelsea, astronaut; grey).
"""
from __future__ import annotations

from pathlib import Path

import torch

from imaging.data import PatchDataset, image_files, load_image, read_image
from imaging.operators import (MRI, Blur, Downsampling, Identity, Inpainting, LinearOperator, Radon,
                               StructuredCompressedSensing, cartesian_mask, gaussian_kernel)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TASKS = ("denoise", "deblur", "sr4", "inpaint50", "cs30", "mri4", "ct20", "custom")


class SmearAndSubsample(LinearOperator):
    """A user's forward model written as `forward` only: a horizontal 3-tap smear, then every second column.
    Its adjoint comes from autograd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smeared = (x + torch.roll(x, 1, dims=-1) + torch.roll(x, 2, dims=-1)) / 3
        return smeared[..., ::2]


def operator(task: str, size: int) -> LinearOperator:
    """The forward operator of a task for size×size grey images."""
    if task == "denoise":
        return Identity()
    if task == "deblur":
        return Blur(gaussian_kernel(1.6), mode="reflect")
    if task == "sr4":
        return Downsampling(4, "box")
    if task == "inpaint50":
        return Inpainting((torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(7)) > 0.5).float())
    if task == "cs30":
        return StructuredCompressedSensing(int(0.3 * size * size), (1, size, size), seed=7)
    if task == "mri4":
        return MRI(cartesian_mask((size, size), 4, seed=7))
    if task == "ct20":
        return Radon((size, size), 20)
    if task == "custom":
        return SmearAndSubsample()
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def held_out(size: int, count: int) -> torch.Tensor:
    """Centre crops size×size of Set12 (when present) and of offline scikit-image pictures, (N, 1, size, size);
    the last `count` of them."""
    crops = []
    set12 = SHARED / "set12"
    pictures = [read_image(p)[None] for p in image_files(set12)] if set12.is_dir() else []
    pictures += [load_image(name, size=int(1.5 * size), channels=1).float() for name in ("coffee", "chelsea",
                                                                                       "astronaut")]
    for picture in pictures:
        h, w = picture.shape[-2:]
        crops.append(picture[0, :, (h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size])
    return torch.stack(crops[-count:] if count < len(crops) else crops)


def training_crops(data: str, size: int, count: int) -> torch.Tensor:
    """`count` random crops size×size of a training folder (e.g. train400), seeded, without augmentation."""
    dataset = PatchDataset(data, size, augment=False, seed=123)
    return torch.stack([dataset[i]["clean"] for i in range(count)])
