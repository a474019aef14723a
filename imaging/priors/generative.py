r"""Pretrained generative models as priors: an ε-prediction diffusion model (`DiffusionPrior`, for RED-Diff) and a
rectified-flow velocity model with an optional autoencoder (`FlowPrior`, for FLAIR).

Both wrap either a diffusers model or any plain callable, map images in `image_range` (default [0, 1]) to the
model's range (default [-1, 1]) and back, run the network without autograd (the solvers use stop-gradient
priors) in the network's own dtype (bf16/fp16 allowed) and return results in the caller's dtype. Models are loaded
from local folders only: nothing is downloaded.

Conventions. DDPM: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, t ∈ {0, …, T−1} integer, t = 0 nearly clean; ᾱ from the
diffusers scheduler's `alphas_cumprod`. Rectified flow: z_t = (1 − t) z_0 + t ε, t ∈ [0, 1], **t = 1 is noise**,
velocity v = ε − z_0; diffusers transformers get the timestep `timestep_scale · t` (1000 for SD3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from imaging._optional import require
from torch import nn

__all__ = ["DiffusionPrior", "DiffusionVelocity", "FlowPrior", "PromptEmbeddings"]

SHIPPED_DIFFUSION = {"natural": "ddpm_natural", "faces": "ddpm_faces32"}


def _local_folder(path: str | Path, who: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{who}: {str(path)!r} is not a local folder. imaging never downloads models: download it once "
            f"(e.g. `huggingface-cli download <repo> --local-dir <folder>` on a machine with network access) and "
            f"pass the local folder")
    return folder


def _load_model(model_class: Any, folder: Path, who: str, dtype: torch.dtype | None) -> Any:
    """`model_class.from_pretrained(folder)` (local files only) with clear errors naming the folder for what
    diffusers lets through: a config.json far larger than the weights files (checked on the meta device, before
    anything is allocated), missing or unexpected weights (diffusers would initialise missing ones at random) and
    weights holding NaN or infinite values."""
    files = [file for file in folder.iterdir() if file.suffix in (".safetensors", ".bin") and file.is_file()]
    if files:  # without weights files, diffusers' own error names them
        with torch.device("meta"):
            skeleton = model_class.from_config(model_class.load_config(str(folder), local_files_only=True))
        count, size = sum(p.numel() for p in skeleton.parameters()), sum(file.stat().st_size for file in files)
        if count > 4 * size:  # >= a byte a parameter (8-bit); the slack leaves missing weights to the key check
            raise ValueError(f"{who}: {folder / 'config.json'} describes a model of {count:.3g} parameters but the "
                             f"weights files in {folder} ({', '.join(file.name for file in files)}) hold {size} "
                             f"bytes: its sizes (e.g. block_out_channels) do not match the weights")
    model, info = model_class.from_pretrained(str(folder), torch_dtype=dtype, low_cpu_mem_usage=False,
                                              local_files_only=True, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys"):
        if info.get(kind):
            raise ValueError(f"{who}: the weights files in {folder} do not match its config.json: "
                             f"{len(info[kind])} {kind.replace('_', ' ')} (first: {sorted(info[kind])[:4]})")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{who}: the weights files in {folder} hold non-finite values (NaN or inf) in "
                             f"{name!r}; they are corrupt")
    return model


def _net_dtype(net: Any) -> torch.dtype | None:
    if isinstance(net, nn.Module):
        for p in net.parameters():
            return p.dtype
    return None


def _output(out: Any) -> torch.Tensor:
    """The tensor of a diffusers output (`.sample`), a tuple's first element, or the tensor itself."""
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _check_finite(x: torch.Tensor, who: str, arg: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{who}: argument '{arg}' must be a tensor of shape (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who}: argument '{arg}' contains NaN or infinite values")


class _RangeMap(nn.Module):
    """The affine map between the image range and the model range."""

    def __init__(self, image_range: tuple[float, float], model_range: tuple[float, float]) -> None:
        super().__init__()
        (a, b), (c, d) = image_range, model_range
        if not (b > a and d > c):
            raise ValueError(f"{type(self).__name__}: ranges must be increasing (low, high), got {image_range} and "
                             f"{model_range}")
        self.image_range, self.model_range = (float(a), float(b)), (float(c), float(d))
        self.scale = (d - c) / (b - a)  # model units per image unit

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Image range -> model range."""
        return (x - self.image_range[0]) * self.scale + self.model_range[0]

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Model range -> image range."""
        return (x - self.model_range[0]) / self.scale + self.image_range[0]


class DiffusionPrior(_RangeMap):
    r"""An ε-prediction diffusion model ε_θ(x_t, t) with its noise schedule ᾱ_t.

    Args:
        model: a diffusers `UNet2DModel` (or any module returning `.sample`) called as `model(x_t, t)`, or any
            callable `eps(x_t, t)` with x_t (B, C, H, W) in the model range and t (B,) integer timesteps. If it
            returns 2C channels (learned variance), the first C are ε.
        scheduler: a diffusers scheduler with `alphas_cumprod` (e.g. `DDPMScheduler`), or a 1-D tensor ᾱ (T,);
            None uses the DDPM default (T = 1000, β linear from 1e-4 to 0.02).
        image_shape: (C, H, W) the model expects; read from a diffusers model's config when not given. A diffusers
            UNet without attention blocks is fully convolutional: it takes any H, W divisible by its down-sampling
            (`size_multiple`), and only the channels are checked.
    """

    def __init__(self, model: Callable, scheduler: Any = None, *, image_range: tuple[float, float] = (0.0, 1.0),
                 model_range: tuple[float, float] = (-1.0, 1.0),
                 image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__(image_range, model_range)
        if not callable(model):
            raise TypeError(f"DiffusionPrior: argument 'model' must be callable, got {type(model).__name__}")
        self.model = model
        if scheduler is None:
            require("diffusers", "DiffusionPrior")
            from diffusers import DDPMScheduler

            scheduler = DDPMScheduler()
        alphas = scheduler if isinstance(scheduler, torch.Tensor) else getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(alphas, torch.Tensor) or alphas.dim() != 1 or not bool(((alphas > 0) & (alphas < 1)).all()):
            raise ValueError("DiffusionPrior: argument 'scheduler' must have alphas_cumprod, a 1-D tensor in (0, 1)")
        self.register_buffer("alphas_cumprod", alphas.detach().double().clone(), persistent=False)
        self.scheduler = None if isinstance(scheduler, torch.Tensor) else scheduler
        config = getattr(model, "config", None)
        self.channels, self.size_multiple = None, 1
        if image_shape is None and config is not None and getattr(config, "sample_size", None) is not None:
            blocks = tuple(getattr(config, "down_block_types", ())) + tuple(getattr(config, "up_block_types", ()))
            if blocks and not any("Attn" in block for block in blocks):  # fully convolutional
                self.channels = int(config.in_channels)
                self.size_multiple = 2 ** (len(config.block_out_channels) - 1)
            else:
                size = config.sample_size
                size = (size, size) if isinstance(size, int) else tuple(size)
                image_shape = (config.in_channels, *size)
        self.image_shape = tuple(image_shape) if image_shape is not None else None

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu", **kwargs) -> "DiffusionPrior":
        """Load a diffusers DDPM folder (`unet/` + `scheduler/`, as written by `save_pretrained` of a pipeline)
        from a local path, e.g. a downloaded google/ddpm-celebahq-256 or the shipped `imaging/weights/ddpm_faces32`."""
        require("diffusers", "DiffusionPrior.from_pretrained")
        from diffusers import DDPMScheduler, UNet2DModel

        root = _local_folder(folder, "DiffusionPrior.from_pretrained")
        unet_dir = root / "unet" if (root / "unet").is_dir() else root
        unet = _load_model(UNet2DModel, unet_dir, "DiffusionPrior.from_pretrained", dtype).to(device).eval()
        scheduler_dir = root / "scheduler"
        scheduler = (DDPMScheduler.from_pretrained(str(scheduler_dir), local_files_only=True)
                     if scheduler_dir.is_dir() else None)
        return cls(unet, scheduler, **kwargs)

    @classmethod
    def pretrained(cls, name: str = "natural", *, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", **kwargs) -> "DiffusionPrior":
        """A DDPM shipped with imaging, by name (offline, from any working directory):

        - "natural": grey natural images, a fully convolutional diffusers `UNet2DModel` trained on random 64×64
          crops of the 400 Berkeley training images (train400) by `scripts/train_priors.py ddpm`; any image size
          divisible by 4;
        - "faces": 32×32 grey faces (scikit-image's LFW subset, faces 0–79), `examples/train_ddpm_faces.py`.
        """
        from imaging.data import shipped_file

        folder = shipped_file("DiffusionPrior.pretrained", SHIPPED_DIFFUSION, name,
                              "python scripts/train_priors.py ddpm --data <train400> then --export imaging/weights/ddpm_natural")
        return cls.from_pretrained(folder, dtype=dtype, device=device, **kwargs)

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def timestep_for_noise(self, sigma: float) -> int:
        """The timestep t whose noise-to-signal ratio √(1 − ᾱ_t)/√ᾱ_t is closest to `sigma` in the model range
        (log scale): an image with Gaussian noise of that level, scaled by √ᾱ_t, is distributed as x_t."""
        ratio = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        return int((ratio.log() - torch.log(torch.tensor(float(sigma), dtype=ratio.dtype))).abs().argmin())

    @torch.no_grad()
    def denoise(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        r"""One-step denoiser (Tweedie): the posterior mean E[x_0 | x_t] of the network at the timestep matching the
        noise level `sigma` (standard deviation in the image range) of y = x + σ n, returned in the image range
        (any image size for a fully convolutional model: reflect-padded to its down-sampling and cropped back).

            x_t = √ᾱ_t · to_model(y),   x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t
        """
        _check_finite(y, "DiffusionPrior.denoise", "y")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"DiffusionPrior.denoise: argument 'sigma' must be a positive number, got {sigma!r}")
        height, width = y.shape[-2:]
        m = self.size_multiple  # a fully convolutional model: reflect-pad to its down-sampling, crop back
        padded = torch.nn.functional.pad(y, (0, -width % m, 0, -height % m), mode="reflect") if m > 1 else y
        self.check_image(padded, "DiffusionPrior.denoise", "y")
        t = self.timestep_for_noise(sigma * self.scale)
        x0, _ = self.tweedie(self.alpha_sigma(t)[0] * self.to_model(padded), t)
        return self.to_image(x0)[..., :height, :width]

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) at integer timestep t."""
        abar = float(self.alphas_cumprod[t])
        return abar ** 0.5, (1 - abar) ** 0.5

    def check_image(self, x: torch.Tensor, who: str, arg: str) -> None:
        """Raise a clear error unless x is a finite (N, C, H, W) tensor of the shape the model expects."""
        _check_finite(x, who, arg)
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{who}: argument '{arg}' has images of shape {tuple(x.shape[1:])} but the diffusion "
                             f"model expects {self.image_shape} (C, H, W)")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(f"{who}: argument '{arg}' has {x.shape[1]} channels but the diffusion model expects "
                             f"{self.channels}")
        if any(side % self.size_multiple for side in x.shape[2:]):
            raise ValueError(f"{who}: argument '{arg}' has images of size {tuple(x.shape[2:])}; the diffusion model "
                             f"needs sides divisible by {self.size_multiple} (pad the image, e.g. with reflection)")

    def eps(self, x_t: torch.Tensor, t: int | torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """ε_θ(x_t, t) for x_t (B, C, H, W) in the model range, in x_t's dtype. No autograd graph unless
        `differentiable=True` (only for methods that backpropagate through the network, such as DPS)."""
        with torch.set_grad_enabled(differentiable):
            t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
            dtype = _net_dtype(self.model) or x_t.dtype
            out = _output(self.model(x_t.to(dtype), t)).to(x_t.dtype)
            channels = x_t.shape[1]
            return out[:, :channels] if out.shape[1] == 2 * channels else out

    def tweedie(self, x_t: torch.Tensor, t: int, *, differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε_θ): the posterior mean E[x_0 | x_t] = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t and the network's
        ε, both in the model range."""
        alpha, sigma = self.alpha_sigma(t)
        eps = self.eps(x_t, t, differentiable=differentiable)
        return (x_t - sigma * eps) / alpha, eps

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, *, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
        """n samples in the image range by deterministic DDIM (diffusers' `DDIMScheduler`, η = 0, on this
        prior's ᾱ) over `steps` timesteps, of `shape` (C, H, W) (default: the model's own; any size its
        down-sampling divides for a fully convolutional model)."""
        require("diffusers", "DiffusionPrior sampling")
        from diffusers import DDIMScheduler

        shape = tuple(shape) if shape is not None else self.image_shape
        if shape is None:
            raise ValueError("DiffusionPrior.sample: the image shape is unknown; pass shape=(C, H, W)")
        if not (isinstance(steps, int) and 1 <= steps <= self.num_timesteps):
            raise ValueError(f"DiffusionPrior.sample: argument 'steps' must be in 1..{self.num_timesteps}, got {steps}")
        betas = 1 - self.alphas_cumprod / torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        scheduler = DDIMScheduler(num_train_timesteps=self.num_timesteps, trained_betas=betas.float().numpy(),
                                  clip_sample=False, set_alpha_to_one=True)
        scheduler.set_timesteps(steps)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn((n, *shape), generator=gen, dtype=dtype).to(device)
        for t in scheduler.timesteps:
            x = scheduler.step(self.eps(x, int(t)), t, x, eta=0.0).prev_sample
        return self.to_image(x)


class PromptEmbeddings:
    """Precomputed text conditioning for a text-to-image flow model (so that no text encoder is needed at solve
    time): `prompt` (1 or B, S, D) and `pooled` (1 or B, P), e.g. from `StableDiffusion3Pipeline.encode_prompt`
    run once and saved with safetensors."""

    def __init__(self, prompt: torch.Tensor, pooled: torch.Tensor) -> None:
        if prompt.dim() != 3 or pooled.dim() != 2:
            raise ValueError(f"PromptEmbeddings: expected prompt (B, S, D) and pooled (B, P), got "
                             f"{tuple(prompt.shape)} and {tuple(pooled.shape)}")
        self.prompt, self.pooled = prompt, pooled

    def expand(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.prompt.to(device, dtype).expand(batch, -1, -1), self.pooled.to(device, dtype).expand(batch, -1))


class DiffusionVelocity(nn.Module):
    r"""The rectified-flow velocity of an ε-prediction diffusion model, so that FLAIR can use any DDPM.

    The flow state z_t = (1 − t) x_0 + t ε, divided by s_t = √((1 − t)² + t²), is a diffusion state with
    ᾱ = (1 − t)²/s_t²; the model is queried at the timestep k whose ᾱ_k is nearest in log-SNR, and

        v = ε̂ − x̂_0 = (ε̂ − z_t)/(1 − t),   ε̂ = ε_θ(z_t / s_t, k),   x̂_0 = (z_t − t ε̂)/(1 − t)

    (exact for the optimal model; the predicted noise endpoint z_t + (1 − t) v is ε̂ itself). Called as v(z, t) with
    z (B, C, H, W) in the model range and t (B,) in [0, 1] (clamped to 1 − 1e-4: errors in ε̂ grow as 1/(1 − t)).
    """

    def __init__(self, prior: "DiffusionPrior") -> None:
        super().__init__()
        if not isinstance(prior, DiffusionPrior):
            raise TypeError(f"DiffusionVelocity: argument 'prior' must be a DiffusionPrior, got {type(prior).__name__}")
        self.prior = prior
        abar = prior.alphas_cumprod
        self.register_buffer("log_snr", (abar / (1 - abar)).log(), persistent=False)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The diffusion timesteps (B,) nearest in log-SNR to flow times t (B,)."""
        t = t.double().clamp(1e-6, 1 - 1e-6)
        log_snr = 2 * ((1 - t) / t).log()
        return (self.log_snr[None, :] - log_snr[:, None]).abs().argmin(1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.clamp(max=1 - 1e-4)  # at t = 1 the ε-model carries no velocity information (1/(1 − t) blows up)
        tt = t.to(z.dtype).reshape(-1, *[1] * (z.dim() - 1))
        scale = ((1 - tt) ** 2 + tt ** 2).sqrt()
        eps = self.prior.eps(z / scale, self.timestep(t).to(z.device))
        return (eps - z) / (1 - tt)


class FlowPrior(_RangeMap):
    r"""A rectified-flow velocity model v_θ(z_t, t) (t = 1 is noise) in the latent space of an autoencoder.

    Args:
        velocity: a diffusers `SD3Transformer2DModel` (called with `timestep_scale · t` and the prompt embeddings),
            a diffusers `UNet2DModel` trained on velocities (called as `model(z, timestep_scale · t)`), or any
            callable `v(z, t)` with t (B,) float in [0, 1].
        autoencoder: a diffusers `AutoencoderKL` (latent = (mean − shift_factor) · scaling_factor) or
            `AutoencoderTiny`, any module with `encode`/`decode` returning tensors, or None (a pixel-space flow).
        prompt, negative_prompt: `PromptEmbeddings` for text-conditioned transformers; None gives zero embeddings
            (an unconditional model, or the "null" prompt). Classifier-free guidance with `guidance_scale` w > 1:
            v = v_neg + w (v_prompt − v_neg).
        latent_shape: (C, h, w) of the latents, for the size check; read from the transformer's config if absent.
        scheduler: optionally the model's diffusers `FlowMatchEulerDiscreteScheduler`: its `num_train_timesteps`
            becomes `timestep_scale` and `sample()` follows its (shifted) time grid, as the model's pipeline does.
            FLAIR itself uses the paper's grid.
    """

    def __init__(self, velocity: Callable, autoencoder: Any = None, *, prompt: PromptEmbeddings | None = None,
                 negative_prompt: PromptEmbeddings | None = None, guidance_scale: float = 1.0,
                 timestep_scale: float = 1000.0, image_range: tuple[float, float] = (0.0, 1.0),
                 model_range: tuple[float, float] = (-1.0, 1.0),
                 latent_shape: tuple[int, int, int] | None = None, scheduler: Any = None) -> None:
        super().__init__(image_range, model_range)
        if not callable(velocity):
            raise TypeError(f"FlowPrior: argument 'velocity' must be callable, got {type(velocity).__name__}")
        if guidance_scale < 1.0:
            raise ValueError(f"FlowPrior: argument 'guidance_scale' must be >= 1, got {guidance_scale}")
        self.velocity_model, self.autoencoder = velocity, autoencoder
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.guidance_scale, self.timestep_scale = float(guidance_scale), float(timestep_scale)
        if scheduler is not None:
            steps = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)
            if steps is None or not hasattr(scheduler, "set_timesteps"):
                raise TypeError("FlowPrior: argument 'scheduler' must be a diffusers flow-matching scheduler (with "
                                f"config.num_train_timesteps and set_timesteps), got {type(scheduler).__name__}")
            self.timestep_scale = float(steps)
        self.scheduler = scheduler
        config = getattr(velocity, "config", None)
        self._joint = config is not None and hasattr(config, "joint_attention_dim")
        if latent_shape is None and config is not None and getattr(config, "sample_size", None) is not None:
            size = config.sample_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            latent_shape = (config.in_channels, *size)
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else None
        ae_config = getattr(autoencoder, "config", None)
        self.scaling_factor = float(getattr(ae_config, "scaling_factor", None) or 1.0)
        self.calibrated_weights: torch.Tensor | None = None  # FLAIR's weight curve on linspace(1, 0, M), if known
        # FLAIR's prior weight ρ for this model when the user gives none (the paper's scale with calibrated weights)
        self.default_regularisation = 0.5
        self.shift_factor = float(getattr(ae_config, "shift_factor", None) or 0.0)

    @classmethod
    def from_diffusion(cls, prior: DiffusionPrior) -> "FlowPrior":
        """A pixel-space flow prior from an ε-prediction diffusion model (`DiffusionVelocity`): FLAIR with a DDPM."""
        flow = cls(DiffusionVelocity(prior), None, image_range=prior.image_range, model_range=prior.model_range,
                   latent_shape=prior.image_shape)
        # a constant weight (no calibration curve): ρ = 0.1 was the best single setting for the natural-image DDPM on
        # train400 crops over deblurring, 4× SR, inpainting, CS and a user operator at σ = 0.01
        # (benchmarks/inverse_natural.py --tune); ρ = 0.5 loses 5–9 dB there
        flow.default_regularisation = 0.1
        return flow

    @classmethod
    def pretrained(cls, name: str = "natural", *, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> "FlowPrior":
        """A flow prior shipped with imaging, by name (offline, from any working directory):

        - "natural": grey natural images of any size (divisible by 4), the shipped natural-image DDPM
          (`DiffusionPrior.pretrained("natural")`) read as a pixel-space rectified flow (`from_diffusion`): on
          train400 this is better than a latent flow trained in the same CPU budget (see docs/natural_priors.md);
        - "faces": 32×32 grey faces, a latent rectified flow (`SD3Transformer2DModel` on an `AutoencoderKL`) with
          FLAIR's calibrated weights (`examples/train_flow_faces.py`).
        """
        from imaging.data import shipped_file

        folder = shipped_file("FlowPrior.pretrained", {"natural": SHIPPED_DIFFUSION["natural"], "faces": "flow_faces32"},
                              name, "python scripts/train_priors.py / examples/train_flow_faces.py")
        if name == "natural":
            return cls.from_diffusion(DiffusionPrior.pretrained("natural", dtype=dtype, device=device))
        return cls.from_pretrained(folder, dtype=dtype, device=device)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu", autoencoder: str = "vae", **kwargs) -> "FlowPrior":
        """Load the `transformer/` (SD3Transformer2DModel), autoencoder (`vae/`, AutoencoderKL, or a folder of
        an AutoencoderTiny such as taesd3 given by path) and `scheduler/` (FlowMatchEulerDiscreteScheduler, if
        present) of a Stable Diffusion 3 folder, or the shipped `imaging/weights/flow_faces32`, from a local path. Text encoders are not loaded: pass `prompt=PromptEmbeddings(...)`.
        A `calibration.safetensors` in the folder (key "weights", from `imaging.solvers.flair.calibrated_weights`)
        becomes `calibrated_weights`, FLAIR's default weight curve."""
        require("diffusers", "FlowPrior.from_pretrained")
        from diffusers import AutoencoderKL, AutoencoderTiny, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

        root = _local_folder(folder, "FlowPrior.from_pretrained")
        transformer_dir = _local_folder(root / "transformer", "FlowPrior.from_pretrained (transformer/)")
        transformer = _load_model(SD3Transformer2DModel, transformer_dir, "FlowPrior.from_pretrained", dtype)
        ae_dir = Path(autoencoder) if Path(autoencoder).is_absolute() else root / autoencoder
        ae_dir = _local_folder(ae_dir, "FlowPrior.from_pretrained (autoencoder)")
        config = (ae_dir / "config.json").read_text() if (ae_dir / "config.json").exists() else ""
        ae_class = AutoencoderTiny if '"AutoencoderTiny"' in config else AutoencoderKL
        vae = _load_model(ae_class, ae_dir, "FlowPrior.from_pretrained", dtype)
        if (root / "scheduler").is_dir() and "scheduler" not in kwargs:
            kwargs["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(str(root / "scheduler"),
                                                                                  local_files_only=True)
        prior = cls(transformer.to(device).eval(), vae.to(device).eval(), **kwargs)
        calibration = root / "calibration.safetensors"
        if calibration.exists():
            from imaging.data import load_weights

            weights = load_weights(calibration, "FlowPrior.from_pretrained")[0].get("weights")
            if weights is None or weights.dim() != 1 or not bool(torch.isfinite(weights).all()) \
                    or not bool((weights >= 0).all()):
                raise ValueError(f"FlowPrior.from_pretrained: {calibration} must hold 'weights', a 1-D curve of "
                                 f"finite non-negative weights (imaging.solvers.flair.calibrated_weights)")
            prior.calibrated_weights = weights
        return prior

    def check_latent(self, z: torch.Tensor, who: str, arg: str) -> None:
        _check_finite(z, who, arg)
        if self.latent_shape is not None and tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"{who}: argument '{arg}' gives latents of shape {tuple(z.shape[1:])} but the flow model "
                             f"expects {self.latent_shape} (C, h, w); resize the images to match the model")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) in the image range -> latent z_0 (the autoencoder's mean, scaled and shifted)."""
        _check_finite(x, "FlowPrior.encode", "x")
        x = self.to_model(x)
        if self.autoencoder is None:
            z = x
        else:
            dtype = _net_dtype(self.autoencoder) or x.dtype
            out = self.autoencoder.encode(x.to(dtype))
            dist = getattr(out, "latent_dist", None)
            z = dist.mean if dist is not None else getattr(out, "latents", out)
            z = (_output(z) if not isinstance(z, torch.Tensor) else z).to(x.dtype)
            z = (z - self.shift_factor) * self.scaling_factor
        self.check_latent(z, "FlowPrior.encode", "x")
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, c, h, w) -> image in the image range; differentiable (the data steps go through it)."""
        if self.autoencoder is None:
            return self.to_image(z)
        dtype = _net_dtype(self.autoencoder) or z.dtype
        x = _output(self.autoencoder.decode((z / self.scaling_factor + self.shift_factor).to(dtype)))
        return self.to_image(x.to(z.dtype))

    def _call(self, z: torch.Tensor, t: torch.Tensor, prompt: PromptEmbeddings | None) -> torch.Tensor:
        net = self.velocity_model
        dtype = _net_dtype(net) or z.dtype
        if self._joint:
            config = net.config
            if prompt is None:
                prompt = PromptEmbeddings(torch.zeros(1, 1, config.joint_attention_dim),
                                          torch.zeros(1, config.pooled_projection_dim))
            states, pooled = prompt.expand(z.shape[0], z.device, dtype)
            out = net(hidden_states=z.to(dtype), timestep=(self.timestep_scale * t).to(dtype),
                      encoder_hidden_states=states, pooled_projections=pooled)
        elif hasattr(net, "config"):
            out = net(z.to(dtype), (self.timestep_scale * t).to(dtype))
        else:
            out = net(z.to(dtype), t.to(dtype))
        return _output(out).to(z.dtype)

    @torch.no_grad()
    def velocity(self, z_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """v_θ(z_t, t), t ∈ [0, 1] (1 = noise), with classifier-free guidance when guidance_scale > 1."""
        t = torch.as_tensor(t, dtype=z_t.dtype, device=z_t.device).reshape(-1).expand(z_t.shape[0])
        v = self._call(z_t, t, self.prompt)
        if self.guidance_scale != 1.0:
            v_neg = self._call(z_t, t, self.negative_prompt)
            v = v_neg + self.guidance_scale * (v - v_neg)
        return v

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, *, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n samples in the image range by Euler integration of dz/dt = v from t = 1 to 0 (on the scheduler's grid
        when there is one)."""
        if self.latent_shape is None:
            raise ValueError("FlowPrior.sample: the latent shape is unknown; pass latent_shape to the constructor")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn((n, *self.latent_shape), generator=gen, dtype=dtype).to(device)
        if self.scheduler is not None:  # the pipeline's grid (e.g. SD3's shift 3), ending at 0
            self.scheduler.set_timesteps(steps)
            ts = self.scheduler.sigmas.double().cpu()
        else:
            ts = torch.linspace(1, 0, steps + 1)
        for t, t_next in zip(ts[:-1], ts[1:]):
            z = z + (t_next - t).item() * self.velocity(z, float(t))
        return self.decode(z)
