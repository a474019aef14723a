r"""Training learned proximal networks (`imaging.priors.lpn`): losses, the paper's schedules, the training loop.

Data: clean x and noisy y = x + σ n; the network f_θ is trained so that f_θ(y) ≈ x under a loss ℓ(f_θ(y), x):

- L2  (mean squared error):   minimiser E[x | y], the MMSE denoiser;
- L1  (mean absolute error):  a (coordinate-wise) posterior median;
- proximal matching:  ℓ_γ(x̂, x) = 1 − exp(−‖x̂ − x‖² / γ²)  (per sample, ‖·‖ over the whole sample; the paper's
  normalising constant dropped): as γ -> 0 the minimiser is the MAP denoiser prox_{−σ² log p}, so f_θ is the prox
  of R_θ ≈ −σ² log p (up to a constant).

The loss saturates far from the target, so training starts with L1 ("pre-training"), then decreases γ by stages:
`proximal_matching_schedule` (image models: γ = 8, 4, 2, 1 × γ_min, γ_min = 0.08·sqrt(n)) and
`laplacian_schedule` (the 1-D experiment). After every optimiser step the core weights are clipped to ≥ 0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from imaging.priors.lpn import LearnedProximalNetwork


# --- losses -------------------------------------------------------------------------------------------------------
def _per_sample(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.shape != target.shape:
        raise ValueError(f"LPN loss: 'output' and 'target' must have the same shape, got {tuple(output.shape)} "
                         f"and {tuple(target.shape)}")
    return (output - target).reshape(len(output), -1)


def proximal_matching_loss(output: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean over the batch of 1 − exp(−‖output − target‖² / γ²) (‖·‖ over all but the batch dim)."""
    if not gamma > 0:
        raise ValueError(f"proximal_matching_loss: argument 'gamma' must be positive, got {gamma}")
    distance2 = (_per_sample(output, target) ** 2).sum(1)
    return (1.0 - torch.exp(-distance2 / gamma ** 2)).mean()


def l1_loss(output: torch.Tensor, target: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    """mean |output − target| over all entries."""
    return _per_sample(output, target).abs().mean()


def l2_loss(output: torch.Tensor, target: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    """mean (output − target)² over all entries."""
    return (_per_sample(output, target) ** 2).mean()


Loss = Callable[[torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]


# --- schedules ----------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """`steps` Adam steps of `loss(output, target, gamma)` (`l1_loss`, `l2_loss`, `proximal_matching_loss` with
    width `gamma`, or your own) at learning rate `lr`."""

    steps: int
    loss: Loss
    lr: float
    gamma: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise TypeError(f"Stage: argument 'loss' must be a loss function such as l1_loss, got {self.loss!r}")
        if self.loss is proximal_matching_loss and not (self.gamma or 0) > 0:
            raise ValueError(f"Stage: proximal matching needs a positive 'gamma', got {self.gamma}")
        if self.steps < 0 or not self.lr > 0:
            raise ValueError(f"Stage: 'steps' >= 0 and 'lr' > 0 required, got {self.steps}, {self.lr}")


def default_gamma_min(sample_shape: tuple[int, ...]) -> float:
    """The paper's smallest proximal-matching width, 0.08·sqrt(n) for samples of n = prod(sample_shape) entries."""
    return 0.08 * math.sqrt(math.prod(sample_shape))


def proximal_matching_schedule(steps: int, gamma_min: float, pretrain_fraction: float = 0.5,
                               lr_pretrain: float = 1e-3, lr: float = 1e-4, lr_final: float | None = None,
                               stages: int = 4) -> list[Stage]:
    """The paper's image schedule: L1 pre-training for pretrain_fraction·steps at lr_pretrain, then `stages` equal
    proximal-matching stages with γ = γ_min·2^(stages−1), ..., 2γ_min, γ_min at lr (the paper), or decaying
    geometrically from lr to lr_final over the stages."""
    pretrain = int(round(pretrain_fraction * steps))
    rest = steps - pretrain
    schedule = [Stage(pretrain, l1_loss, lr_pretrain)] if pretrain else []
    for k in range(stages):
        n = rest // stages + (1 if k < rest % stages else 0)
        rate = lr if lr_final is None or stages == 1 else lr * (lr_final / lr) ** (k / (stages - 1))
        schedule.append(Stage(n, proximal_matching_loss, rate, gamma_min * 2.0 ** (stages - 1 - k)))
    return [stage for stage in schedule if stage.steps > 0]


def laplacian_schedule(loss: Loss = proximal_matching_loss, scale: float = 1.0) -> list[Stage]:
    """The Laplacian experiment's schedule (steps multiplied by `scale`): `l1_loss` / `l2_loss`: 10k steps at 1e-3
    then 10k at 1e-4; `proximal_matching_loss`: the L1 schedule, then γ = 0.5 (2k @1e-3, 2k @1e-4), 0.4 (4k @1e-4), 0.3 (4k @1e-4),
    0.2 (4k @1e-5), 0.1 (4k @1e-5, 4k @1e-6)."""
    n = lambda steps: max(1, int(round(steps * scale)))  # noqa: E731
    if loss in (l1_loss, l2_loss):
        return [Stage(n(10_000), loss, 1e-3), Stage(n(10_000), loss, 1e-4)]
    if loss is not proximal_matching_loss:
        raise ValueError(f"laplacian_schedule: argument 'loss' must be l1_loss, l2_loss or proximal_matching_loss, "
                         f"got {loss!r}")
    pm = [(2_000, 1e-3, 0.5), (2_000, 1e-4, 0.5), (4_000, 1e-4, 0.4), (4_000, 1e-4, 0.3), (4_000, 1e-5, 0.2),
          (4_000, 1e-5, 0.1), (4_000, 1e-6, 0.1)]
    return laplacian_schedule(l1_loss, scale) + [Stage(n(s), proximal_matching_loss, lr, g) for s, lr, g in pm]


# --- data ---------------------------------------------------------------------------------------------------------
def laplacian_batches(batch_size: int = 2000, sigma: float = 1.0, scale: float = 1.0
                      ) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x, y) of shape (batch_size, 1): x ~ Laplace(0, scale), y = x + σ n, n ~ N(0, 1)."""
    def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(batch_size, 1, generator=generator) - 0.5
        x = -scale * torch.sign(u) * torch.log1p(-2 * u.abs().clamp_max(0.5 - 1e-7))
        return x, x + sigma * torch.randn(batch_size, 1, generator=generator)

    return batch


def patch_batches(images: list[torch.Tensor], patch: int, batch_size: int, sigma: float | tuple[float, float],
                  augment: bool = True) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x, y) of random patch×patch crops (N, C, patch, patch) of the images ((1, C, H, W) each, picked
    with probability ∝ area), randomly flipped / rotated by 90° if `augment`, y = x + σ n; σ a number, or
    (σ_min, σ_max) for a σ ~ U[σ_min, σ_max] drawn per sample (the network then stays a fixed prox, trained on a
    range of noise). Whole small images (digits) are patches of their own size, without augmentation."""
    low, high = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else map(float, sigma)
    if not 0 <= low <= high:
        raise ValueError(f"patch_batches: argument 'sigma' must be >= 0 or a pair 0 <= min <= max, got {sigma}")
    areas = torch.tensor([float(im.shape[-1] * im.shape[-2]) for im in images])
    if any(min(im.shape[-2:]) < patch for im in images):
        raise ValueError(f"patch_batches: every image must be at least {patch}×{patch}")
    images = [im.float() for im in images]

    def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        picks = torch.multinomial(areas, batch_size, replacement=True, generator=generator)
        crops = []
        for k in picks.tolist():
            image = images[k]
            i = int(torch.randint(image.shape[-2] - patch + 1, (1,), generator=generator))
            j = int(torch.randint(image.shape[-1] - patch + 1, (1,), generator=generator))
            crop = image[0, :, i:i + patch, j:j + patch]
            if augment:
                crop = torch.rot90(crop, int(torch.randint(4, (1,), generator=generator)), dims=(-2, -1))
                if bool(torch.randint(2, (1,), generator=generator)):
                    crop = crop.flip(-1)
            crops.append(crop)
        x = torch.stack(crops)
        if high > low:
            sigmas = low + (high - low) * torch.rand(len(x), 1, 1, 1, generator=generator)
            return x, x + sigmas * torch.randn(x.shape, generator=generator)
        return x, x + low * torch.randn(x.shape, generator=generator)

    return batch


class StagedLoss:
    """A `Trainer` loss following a schedule of stages (e.g. `proximal_matching_schedule(total_steps, γ_min)`):
    at optimiser step s, the loss of the stage holding s, on batch["noisy"] -> batch["clean"] (the stages'
    learning rates are ignored: the Trainer's schedule sets the rate)."""

    def __init__(self, schedule: list[Stage]) -> None:
        if not schedule:
            raise ValueError("StagedLoss: argument 'schedule' must hold at least one Stage")
        self.schedule = schedule
        self.ends = [sum(stage.steps for stage in schedule[:k + 1]) for k in range(len(schedule))]

    def stage(self, step: int) -> Stage:
        """The stage of optimiser step `step` (the last stage past the schedule's end)."""
        return next((s for s, end in zip(self.schedule, self.ends) if step < end), self.schedule[-1])

    def __call__(self, model: LearnedProximalNetwork, batch: dict) -> torch.Tensor:
        stage = self.stage(int(batch["step"]))
        dtype = next(model.parameters()).dtype
        return stage.loss(model(batch["noisy"].to(dtype)), batch["clean"].to(dtype), stage.gamma)


# --- training -----------------------------------------------------------------------------------------------------
@dataclass
class TrainingHistory:
    """Loss of every step, with the stage index of each step."""

    loss: list[float] = field(default_factory=list)
    stage: list[int] = field(default_factory=list)

    def mean_loss(self, stage: int, last: int = 100) -> float:
        """Mean loss over the last `last` steps of a stage."""
        values = [v for v, s in zip(self.loss, self.stage) if s == stage][-last:]
        return sum(values) / max(1, len(values))


def train_lpn(model: LearnedProximalNetwork, batches: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
              schedule: list[Stage], *, seed: int = 0, checkpoint: str | None = None, checkpoint_every: int = 1000,
              settings: dict | None = None, progress: bool = False,
              callback: Callable[[int, float], None] | None = None) -> TrainingHistory:
    """Train `model` in place with Adam through the stages of `schedule` (the learning rate is set per stage; Adam's
    moments carry over), clipping the core weights to ≥ 0 after every step.

    Args:
        batches: generator -> (clean, noisy) tensors; the network is trained so that model(noisy) ≈ clean.
        checkpoint: safetensors path written atomically every `checkpoint_every` steps and at the end, with the
            model's config, the schedule, `settings` and the step count as metadata (`imaging.priors.lpn.load_lpn`
            reads it back).
        progress: show a tqdm bar; callback(step, loss) is called after every step.
    Raises FloatingPointError when the loss becomes NaN or inf.
    """
    if not schedule:
        raise ValueError("train_lpn: argument 'schedule' must hold at least one Stage")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=schedule[0].lr)
    dtype = next(model.parameters()).dtype
    history = TrainingHistory()
    total = sum(stage.steps for stage in schedule)
    meta = {"schedule": [{**asdict(stage), "loss": getattr(stage.loss, "__name__", repr(stage.loss))}
                         for stage in schedule], "seed": seed, **(settings or {})}
    model.train()
    step = 0
    with tqdm(total=total, desc="train LPN", disable=not progress, leave=False) as bar:
        for index, stage in enumerate(schedule):
            for group in optimiser.param_groups:
                group["lr"] = stage.lr
            for _ in range(stage.steps):
                clean, noisy = (t.to(dtype) for t in batches(generator))
                loss = stage.loss(model(noisy), clean, stage.gamma)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"train_lpn: the loss became {loss.item()} at step {step + 1} "
                                             f"(stage {index}: {stage}); lower the learning rate")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                model.clip_weights()
                step += 1
                history.loss.append(loss.item())
                history.stage.append(index)
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{history.mean_loss(index, 50):.4g}", stage=index, refresh=False)
                if callback is not None:
                    callback(step, loss.item())
                if checkpoint is not None and step % checkpoint_every == 0:
                    model.save(checkpoint, {**meta, "step": step})
    model.eval()
    if checkpoint is not None:
        model.save(checkpoint, {**meta, "step": step})
    return history
