r"""Training objectives of the diffusion prior (DDPM, ε-prediction) for `imaging.learning.Trainer`.

    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,   loss = E_{t ~ U{0..T−1}, ε ~ N(0, I)} ‖ε_θ(x_t, t) − ε‖² / n

with x_0 the clean patch mapped from the image range to the model range ([0, 1] -> [-1, 1] by default) and ᾱ from
a diffusers scheduler (`DDPMScheduler`). The timestep and the noise are drawn per item by `DiffusionNoise`, the
dataset transform, so that they are part of the deterministic data stream (exact resume, the same global batch on
any number of processes).

`natural_unet()` builds the grey, fully convolutional diffusers `UNet2DModel` of the shipped natural-image prior
(no attention, so it runs on any image size its two 2× down-samplings divide).
"""
from __future__ import annotations

from typing import Any

import torch

from imaging._optional import require
from torch import nn


def natural_unet(block_out_channels: tuple[int, ...] = (32, 64, 128), layers_per_block: int = 1,
                 norm_num_groups: int = 8, channels: int = 1, sample_size: int = 64) -> nn.Module:
    """A fully convolutional `UNet2DModel` (ResNet blocks, no attention): len(block_out_channels) − 1 down-samplings
    by 2; `sample_size` is only the training crop recorded in its config."""
    require("diffusers", "natural_unet")
    from diffusers import UNet2DModel

    levels = len(block_out_channels)
    return UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                       layers_per_block=layers_per_block, block_out_channels=tuple(block_out_channels),
                       norm_num_groups=norm_num_groups, down_block_types=("DownBlock2D",) * levels,
                       up_block_types=("UpBlock2D",) * levels)


class DiffusionNoise:
    """`PatchDataset` transform adding a timestep "timestep" ~ U{0, …, T − 1} and standard normal "noise" of the
    patch's shape to each item (T = the scheduler's number of training timesteps)."""

    def __init__(self, num_timesteps: int = 1000) -> None:
        if int(num_timesteps) < 1:
            raise ValueError(f"DiffusionNoise: argument 'num_timesteps' must be positive, got {num_timesteps}")
        self.num_timesteps = int(num_timesteps)

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        clean = item["clean"]
        return {**item, "timestep": torch.randint(self.num_timesteps, (), generator=generator),
                "noise": torch.randn(clean.shape, generator=generator)}


class EpsilonLoss:
    """loss(model, batch): the mean ε-prediction error of a DDPM on a batch with "clean", "timestep" and "noise"
    (from `DiffusionNoise`); `scheduler` gives ᾱ (a diffusers scheduler or a 1-D tensor)."""

    def __init__(self, scheduler: Any = None, image_range: tuple[float, float] = (0.0, 1.0),
                 model_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        if scheduler is None:
            from diffusers import DDPMScheduler

            scheduler = DDPMScheduler()
        alphas = scheduler if isinstance(scheduler, torch.Tensor) else scheduler.alphas_cumprod
        self.alphas_cumprod = alphas.detach().float()
        (a, b), (c, d) = image_range, model_range
        self.scale, self.offset = (d - c) / (b - a), c - a * (d - c) / (b - a)

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        x0 = batch["clean"] * self.scale + self.offset
        noise, timestep = batch["noise"], batch["timestep"]
        abar = self.alphas_cumprod.to(x0.device)[timestep].view(-1, *([1] * (x0.dim() - 1)))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        out = model(x_t, timestep)
        out = out.sample if hasattr(out, "sample") else out
        return (out.float() - noise).pow(2).mean()
