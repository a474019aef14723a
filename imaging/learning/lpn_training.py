r"""Training learned proximal networks (`imaging.priors.lpn`): losses, the paper's schedules, data, and the
`Trainer` set-up of an LPN (`lpn_trainer`).

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
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from imaging._optional import require
from imaging.learning.trainer import Trainer
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
class LaplaceSamples:
    """The Laplacian experiment's data for `Trainer`: item i is {"clean": x, "noisy": y} of shape (1,), x ~ Laplace(0,
    `scale`), y = x + σ n, n ~ N(0, 1), a deterministic function of (seed, i). Samples are drawn in blocks of
    `block` items (one generator per block), and `get_batch(first, count)` returns a run of items collated, so that
    batches of thousands of scalars cost no per-item Python work."""

    def __init__(self, sigma: float = 1.0, scale: float = 1.0, *, seed: int = 0, length: int = 10 ** 12,
                 block: int = 4096) -> None:
        if not (math.isfinite(sigma) and sigma >= 0 and math.isfinite(scale) and scale > 0):
            raise ValueError(f"LaplaceSamples: need sigma >= 0 and scale > 0, got {sigma}, {scale}")
        if int(length) < 1 or int(block) < 1:
            raise ValueError(f"LaplaceSamples: arguments 'length' and 'block' must be positive, got {length}, {block}")
        self.sigma, self.scale, self.seed = float(sigma), float(scale), int(seed)
        self.length, self.block = int(length), int(block)
        self._cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.length

    def _block(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] != index:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % (2 ** 63))
            u = torch.rand(self.block, 1, generator=generator) - 0.5
            x = -self.scale * torch.sign(u) * torch.log1p(-2 * u.abs().clamp_max(0.5 - 1e-7))
            self._cache = (index, x, x + self.sigma * torch.randn(self.block, 1, generator=generator))
        return self._cache[1], self._cache[2]

    def get_batch(self, first: int, count: int) -> dict:
        """Items first, ..., first + count − 1 (indices wrap around the length): {"clean", "noisy"} of shape
        (count, 1)."""
        clean, noisy, index = [], [], first % self.length
        while count > 0:
            block, offset = divmod(index, self.block)
            take = min(count, self.block - offset, self.length - index)
            x, y = self._block(block)
            clean.append(x[offset:offset + take])
            noisy.append(y[offset:offset + take])
            count, index = count - take, (index + take) % self.length
        return {"clean": torch.cat(clean), "noisy": torch.cat(noisy)}

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"LaplaceSamples: index {index} out of range for length {self.length}")
        return {key: value[0] for key, value in self.get_batch(index % self.length, 1).items()}


class StagedLoss:
    """A `Trainer` loss following a schedule of stages (e.g. `proximal_matching_schedule(total_steps, γ_min)`):
    at optimiser step s, the loss of the stage holding s, on batch["noisy"] -> batch["clean"] (the stages'
    learning rates are used by `lr_schedule`, or ignored when the Trainer keeps its cosine schedule)."""

    def __init__(self, schedule: list[Stage]) -> None:
        if not schedule:
            raise ValueError("StagedLoss: argument 'schedule' must hold at least one Stage")
        self.schedule = schedule
        self.ends = [sum(stage.steps for stage in schedule[:k + 1]) for k in range(len(schedule))]

    def lr_schedule(self, lr: float) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]:
        """For `Trainer(lr=lr, lr_schedule=...)`: each stage's learning rate, as diffusers' piecewise-constant
        schedule (multiples of `lr`)."""
        require("diffusers", "StagedLoss.lr_schedule")
        from diffusers.optimization import get_piecewise_constant_schedule

        rules = ",".join(f"{stage.lr / lr!r}:{end}" for stage, end in zip(self.schedule, self.ends) if stage.steps)
        rules += f",{self.schedule[-1].lr / lr!r}"
        return lambda optimizer: get_piecewise_constant_schedule(optimizer, rules)

    def describe(self) -> list[dict]:
        """The stages as JSON-serialisable dicts (for a run's settings)."""
        return [{**asdict(stage), "loss": getattr(stage.loss, "__name__", repr(stage.loss))} for stage in self.schedule]

    def stage(self, step: int) -> Stage:
        """The stage of optimiser step `step` (the last stage past the schedule's end)."""
        return next((s for s, end in zip(self.schedule, self.ends) if step < end), self.schedule[-1])

    def __call__(self, model: LearnedProximalNetwork, batch: dict) -> torch.Tensor:
        stage = self.stage(int(batch["step"]))
        dtype = next(model.parameters()).dtype
        return stage.loss(model(batch["noisy"].to(dtype)), batch["clean"].to(dtype), stage.gamma)


# --- training -----------------------------------------------------------------------------------------------------
def lpn_trainer(model: LearnedProximalNetwork, schedule: list[Stage], dataset, *, batch_size: int, seed: int = 0,
                ema_decay: float | None = None, **options) -> Trainer:
    """The `Trainer` of an LPN through the stages of `schedule`: `StagedLoss(schedule)` on the dataset's
    "noisy" -> "clean" items, Adam (no weight decay, no gradient clipping) at each stage's learning rate (diffusers'
    piecewise-constant schedule; the moments carry over from stage to stage), the core weights clipped to ≥ 0
    after every step, no EMA unless `ema_decay` is given. `options` go to `Trainer` (output_dir, progress,
    checkpoint_every, log_every, settings, ...). After `fit()`, `trainer.ema_model().save(path, settings)` writes the
    weights that `imaging.priors.lpn.load_lpn` reads."""
    loss = StagedLoss(schedule)
    lr = schedule[0].lr
    settings = {"schedule": loss.describe(), **options.pop("settings", {})}
    return Trainer(model, loss, dataset, batch_size=batch_size, steps=loss.ends[-1], lr=lr, weight_decay=0.0,
                   grad_clip=None, ema_decay=ema_decay, seed=seed, after_step=type(model).clip_weights,
                   lr_schedule=loss.lr_schedule(lr), settings=settings, **options)
