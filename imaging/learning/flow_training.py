r"""Training objectives of flow priors (rectified flow, optionally in an autoencoder's latent space) for
`imaging.learning.Trainer`.

Rectified flow (t = 1 is noise, as in `imaging.priors.FlowPrior`):

    z_t = (1 − t) z_0 + t ε,   target velocity v = ε − z_0,   loss = E ‖v_θ(z_t, t) − v‖² / n,

t drawn logit-normal (sigmoid of a standard normal, SD3's default) and ε by `FlowNoise`, the dataset transform, so
they belong to the deterministic data stream. A diffusers `SD3Transformer2DModel` is called unconditionally (zero
prompt embeddings) with timestep `timestep_scale · t`; other diffusers models as `model(z_t, timestep_scale · t)`.

Autoencoder (`AutoencoderKL`, trained through the `PosteriorSample` wrapper): reconstruction MSE of a posterior
sample plus `kl_weight` × the KL term, the posterior's noise drawn by `AutoencoderNoise`.
"""
from __future__ import annotations

import torch
from torch import nn


class FlowNoise:
    """`PatchDataset` transform adding "t" (logit-normal in (0, 1)) and standard normal "noise" of the item's
    shape."""

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        clean = item["clean"]
        return {**item, "t": torch.sigmoid(torch.randn((), generator=generator)),
                "noise": torch.randn(clean.shape, generator=generator)}


def velocity(model: nn.Module, z_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """v_θ(z_t, timestep) of a diffusers flow model (SD3 transformers unconditionally) or a callable."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "joint_attention_dim"):
        batch = z_t.shape[0]
        out = model(hidden_states=z_t, timestep=timestep,
                    encoder_hidden_states=z_t.new_zeros(batch, 1, config.joint_attention_dim),
                    pooled_projections=z_t.new_zeros(batch, config.pooled_projection_dim))
    else:
        out = model(z_t, timestep)
    return out.sample if hasattr(out, "sample") else out


class VelocityLoss:
    """loss(model, batch): the mean rectified-flow error on a batch with "clean" (z_0), "t" and "noise"; per-item
    losses with `reduction="none"`."""

    def __init__(self, timestep_scale: float = 1000.0, reduction: str = "mean") -> None:
        if reduction not in ("mean", "none"):
            raise ValueError(f"VelocityLoss: argument 'reduction' must be 'mean' or 'none', got {reduction!r}")
        self.timestep_scale, self.reduction = float(timestep_scale), reduction

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        z0, noise, t = batch["clean"], batch["noise"], batch["t"]
        t_ = t.view(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
        z_t = (1 - t_) * z0 + t_ * noise
        error = (velocity(model, z_t, self.timestep_scale * t).float() - (noise - z0)).pow(2)
        per_item = error.flatten(1).mean(1)
        return per_item.mean() if self.reduction == "mean" else per_item


class AutoencoderNoise:
    """`PatchDataset` transform adding "latent_noise" of shape `latent_shape` (C, h, w): the reparametrisation
    noise of the autoencoder's posterior sample."""

    def __init__(self, latent_shape: tuple[int, int, int]) -> None:
        self.latent_shape = tuple(int(s) for s in latent_shape)

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        return {**item, "latent_noise": torch.randn(self.latent_shape, generator=generator)}


class PosteriorSample(nn.Module):
    """Wraps an `AutoencoderKL` for training: forward(images, latent_noise) -> (decode(mean + std · noise), KL per
    item). Train this module (so that DDP sees the forward) and export `.vae`."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, latent_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.mean + posterior.std * latent_noise).sample
        return reconstruction, posterior.kl()


class AutoencoderLoss:
    """loss(PosteriorSample(vae), batch): MSE of the decoded posterior sample against batch["clean"] mapped from
    the image range to [−1, 1], + kl_weight · KL(posterior ‖ N(0, I)) (summed per item, averaged)."""

    def __init__(self, kl_weight: float = 1e-6, image_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.kl_weight = float(kl_weight)
        low, high = image_range
        self.scale, self.offset = 2.0 / (high - low), -1.0 - 2.0 * low / (high - low)

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        images = batch["clean"] * self.scale + self.offset
        reconstruction, kl = model(images, batch["latent_noise"])
        return (reconstruction - images).pow(2).mean() + self.kl_weight * kl.mean()
