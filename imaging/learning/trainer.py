r"""One training engine for every trainable prior (diffusion and flow models, learned proximal networks), from a
laptop to a cluster.

    trainer = Trainer(model, loss, dataset, batch_size=32, steps=20_000, lr=2e-4, output_dir="runs/ddpm")
    result = trainer.fit()          # resumes from output_dir/checkpoint.safetensors when it exists

- **Devices and scale-out** by Hugging Face `accelerate`: the same script runs on the CPU, one GPU, several GPUs
  or several nodes (`accelerate launch script.py` or `torchrun --nproc_per_node N script.py`), with DDP and bf16
  autocast on GPU (`mixed_precision="auto"`: bf16 when CUDA is used, full precision on the CPU).
- **Data**: step s uses items s·B, …, (s+1)·B − 1 of the dataset (B the global batch), each a deterministic
  function of its index (`imaging.data.PatchDataset`); process r of W takes the r-th of W equal slices. So the
  global batch, hence the averaged gradient, is the same on one process and on W, and a resumed run sees exactly
  the data an uninterrupted one would.
- **Optimisation**: AdamW, diffusers' `get_cosine_schedule_with_warmup`, gradient clipping, and diffusers'
  `EMAModel` of the weights (the EMA is what `ema_model()` returns and what priors ship).
- **Checkpoints**: every `checkpoint_every` steps and at the end, one safetensors file (model, EMA, optimiser
  moments; the step, schedule and settings as JSON metadata) written atomically: a run killed at any moment
  resumes from its last checkpoint and reaches the same weights as an uninterrupted run.
- **Log**: `log.jsonl` in `output_dir` (one JSON object per logged step: step, loss, learning rate, seconds) and a
  tqdm bar on the main process (off by default).

`loss(model, batch)` gets the process's slice of the batch (a dict of tensors on the device, plus "step", the
index of the optimiser step it is for) and returns the mean
loss over it (a scalar) or per-item losses (averaged here). `after_step(model)` runs after every optimiser step
(e.g. `LearnedProximalNetwork.clip_weights`, keeping a constrained network feasible).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from imaging._optional import require
from imaging._progress import progress_bar
from imaging.data import save_safetensors

logger = logging.getLogger("imaging")

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"


@dataclass
class TrainingResult:
    """What `Trainer.fit` returns: the steps done in total (with earlier runs when resumed), the step this call
    started from, the mean loss of the last logged window, the logged (step, loss) pairs of this call and its
    wall time in seconds."""

    steps: int
    resumed_from: int
    loss: float
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def _collate(items: list[dict]) -> dict:
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


class Trainer:
    """Train `model` on `dataset` by minimising `loss`; see the module docstring.

    Args:
        model: the network (an `nn.Module`).
        loss: `loss(model, batch) -> tensor`, the mean loss over `batch` (or per-item losses).
        dataset: indexable, item i a dict of tensors that depends only on i (e.g. `imaging.data.PatchDataset`);
            indices wrap around its length. A dataset with a `get_batch(first, count)` method (the items first,
            ..., first + count − 1 collated, e.g. `imaging.learning.lpn_training.LaplaceSamples`) is read through
            it, for datasets of many tiny items.
        batch_size: the global batch (all processes together); must be divisible by the number of processes.
        steps: optimiser steps in total (a resumed run continues up to this many).
        lr, weight_decay, warmup, grad_clip: AdamW's peak learning rate and decoupled weight decay, the warmup steps
            of the cosine schedule, the gradient-norm clip (None: no clipping).
        ema_decay: the EMA's maximum decay (diffusers' `EMAModel` with its warmup); None keeps no EMA.
        seed: seeds the model's initialisation-independent randomness (torch's global RNG on every process).
        output_dir: where the checkpoint and the log go (None: nothing is written, no resume).
        checkpoint_every, log_every: in steps.
        mixed_precision: "auto" (bf16 autocast on CUDA, none on the CPU), "no", "bf16" or "fp16".
        cpu: force the CPU even when a GPU is visible.
        progress: a tqdm bar on the main process.
        after_step: `after_step(model)` after each optimiser step (the unwrapped model).
        settings: JSON-serialisable description of the run, stored in the checkpoint's metadata.
        lr_schedule: `lr_schedule(optimizer)` -> a torch learning-rate scheduler stepped once per optimiser step,
            relative to `lr` (e.g. `StagedLoss.lr_schedule(lr)`, diffusers' piecewise-constant schedule); default
            diffusers' `get_cosine_schedule_with_warmup(optimizer, warmup, steps)`.
    """

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, dict], torch.Tensor], dataset: Any, *,
                 batch_size: int, steps: int, lr: float = 1e-3, weight_decay: float = 1e-4, warmup: int = 0,
                 grad_clip: float | None = 1.0, ema_decay: float | None = 0.999, seed: int = 0,
                 output_dir: str | os.PathLike | None = None, checkpoint_every: int = 1000, log_every: int = 50,
                 mixed_precision: str = "auto", cpu: bool = False, progress: bool = False,
                 after_step: Callable[[nn.Module], None] | None = None, settings: dict | None = None,
                 lr_schedule: Callable[[torch.optim.Optimizer], Any] | None = None) -> None:
        require("accelerate", "Trainer")
        from accelerate import Accelerator
        from diffusers.optimization import get_cosine_schedule_with_warmup

        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"Trainer: argument 'loss' must be callable as loss(model, batch), got {loss!r}")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) < 1:
            raise TypeError("Trainer: argument 'dataset' must be a non-empty indexable dataset (len and [i])")
        for name, value in (("batch_size", batch_size), ("steps", steps), ("checkpoint_every", checkpoint_every),
                            ("log_every", log_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Trainer: argument '{name}' must be a positive integer, got {value!r}")
        if not (math.isfinite(lr) and lr > 0) or not weight_decay >= 0 or not (isinstance(warmup, int) and warmup >= 0):
            raise ValueError(f"Trainer: need lr > 0, weight_decay >= 0, warmup >= 0; got {lr}, {weight_decay}, "
                             f"{warmup}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"Trainer: argument 'grad_clip' must be positive or None, got {grad_clip}")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"Trainer: argument 'ema_decay' must lie in (0, 1) or be None, got {ema_decay}")
        if mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"Trainer: argument 'mixed_precision' must be 'auto', 'no', 'bf16' or 'fp16', got "
                             f"{mixed_precision!r}")
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
        from accelerate.state import AcceleratorState

        # accelerate keeps one state per process: let a later Trainer choose its own precision (the distributed
        # set-up, accelerate's PartialState, is kept)
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
        world = self.accelerator.num_processes
        if batch_size % world:
            raise ValueError(f"Trainer: argument 'batch_size' ({batch_size}) must be divisible by the number of "
                             f"processes ({world})")
        torch.manual_seed(seed)
        self.loss_fn, self.dataset, self.after_step = loss, dataset, after_step
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.grad_clip, self.checkpoint_every, self.log_every = grad_clip, checkpoint_every, log_every
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.progress = progress
        self.settings = {"batch_size": batch_size, "steps": steps, "lr": lr, "weight_decay": weight_decay,
                         "warmup": warmup, "grad_clip": grad_clip, "ema_decay": ema_decay, "seed": seed,
                         "mixed_precision": mixed_precision, **(settings or {})}
        model = model.to(self.accelerator.device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        self.model = model
        self.ema = None
        if ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(parameters, decay=ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        self.schedule = (get_cosine_schedule_with_warmup(optimizer, warmup, steps) if lr_schedule is None
                         else lr_schedule(optimizer))
        self.wrapped, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.step = 0
        self.seconds = 0.0  # training wall time of earlier chunks (restored on resume)
        self._began = time.perf_counter()

    # --- data ------------------------------------------------------------------------------------------------
    def batch(self, step: int) -> dict:
        """This process's slice of the global batch of `step`, on the device."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        local = self.batch_size // world
        first = step * self.batch_size + rank * local
        if hasattr(self.dataset, "get_batch"):
            collated = self.dataset.get_batch(first, local)
        else:
            collated = _collate([self.dataset[(first + k) % len(self.dataset)] for k in range(local)])
        batch = {key: value.to(self.accelerator.device) for key, value in collated.items()}
        batch["step"] = step  # for losses that change along the run (e.g. the LPN's proximal-matching stages)
        return batch

    # --- checkpoints -----------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / CHECKPOINT

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Model weights ("model.*"), EMA weights ("ema.*") and AdamW moments ("optimizer.<i>.<name>")."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{i}": p for i, p in enumerate(self.ema.shadow_params)})
        for i, state in self.optimizer.state_dict()["state"].items():
            tensors.update({f"optimizer.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
        return tensors

    def save_checkpoint(self) -> None:
        """Write output_dir/checkpoint.safetensors atomically (main process; all processes wait for it)."""
        if self.checkpoint_path is None:
            return
        if self.accelerator.is_main_process:
            optimizer_state = self.optimizer.state_dict()
            seconds = self.seconds + time.perf_counter() - self._began
            metadata = {"step": str(self.step), "seconds": f"{seconds:.3f}", "settings": json.dumps(self.settings),
                        "schedule": json.dumps(self.schedule.state_dict(), default=str),
                        "param_groups": json.dumps(optimizer_state["param_groups"]),
                        "ema": json.dumps({k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"})
                        if self.ema is not None else "null"}
            save_safetensors(self.state_tensors(), self.checkpoint_path, metadata)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: str | os.PathLike) -> int:
        """Restore model, EMA, optimiser and schedule from a checkpoint; returns its step."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() or {}
        device = self.accelerator.device
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            ema_state = json.loads(metadata.get("ema", "null")) or {}
            count = len(self.ema.shadow_params)
            ema_state["shadow_params"] = [tensors[f"ema.{i}"].to(device) for i in range(count)]
            self.ema.load_state_dict(ema_state)
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
        self.optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
        self.schedule.load_state_dict(json.loads(metadata["schedule"]))
        self.step = int(metadata["step"])
        self.seconds, self._began = float(metadata.get("seconds", 0.0)), time.perf_counter()
        return self.step

    def warm_start(self, weights: dict[str, torch.Tensor], step: int = 0) -> None:
        """Continue a run whose checkpoint is gone from exported weights (e.g. a shipped prior): the model and its
        EMA take `weights`, and the step counter and learning-rate schedule move to `step`. Not an exact resume:
        AdamW's moments start again from zero."""
        import warnings

        if not (isinstance(step, int) and 0 <= step <= self.steps):
            raise ValueError(f"Trainer.warm_start: argument 'step' must be in 0..{self.steps}, got {step!r}")
        self.model.load_state_dict(weights)
        if self.ema is not None:
            trained = [p for p in self.model.parameters() if p.requires_grad]
            self.ema.shadow_params = [p.detach().clone() for p in trained]
            self.ema.optimization_step = step
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step - self.step):
                self.schedule.step()
        self.step = step

    # --- training --------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimiser step on the batch of the current step; returns the loss averaged over all processes."""
        self.wrapped.train()
        batch = self.batch(self.step)
        with self.accelerator.autocast():
            loss = self.loss_fn(self.wrapped, batch)
        loss = loss.float().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Trainer: the loss became {loss.item()} at step {self.step + 1}; lower the "
                                     f"learning rate (the last checkpoint is kept)")
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self.wrapped.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        if self.after_step is not None:
            self.after_step(self.model)
        if self.ema is not None:
            self.ema.step([p for p in self.model.parameters() if p.requires_grad])
        self.step += 1
        return self.accelerator.reduce(loss.detach(), reduction="mean").item()

    def fit(self, resume: bool = True, max_seconds: float | None = None) -> TrainingResult:
        """Train up to `steps` steps, from output_dir's checkpoint when `resume` and it exists; with `max_seconds`,
        stop (with a checkpoint) once that much wall time has passed: a chunk of a longer run, continued by calling
        `fit` again (e.g. in the next session)."""
        start = self.step
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            start = self.load_checkpoint(self.checkpoint_path)
            logger.info("Trainer: resumed from %s at step %d", self.checkpoint_path, start)
        main = self.accelerator.is_main_process
        log_path = self.output_dir / LOG if self.output_dir is not None else None
        if main and log_path is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_log(log_path, start)
        history: list[tuple[int, float]] = []
        window: list[float] = []
        began = self._began = time.perf_counter()
        bar = progress_bar(total=self.steps, initial=start, desc="train", enabled=self.progress and main, leave=True)
        while self.step < self.steps:
            if max_seconds is not None and self._out_of_time(time.perf_counter() - began > max_seconds):
                logger.info("Trainer: time budget of %s s spent at step %d", max_seconds, self.step)
                break
            window.append(self.train_step())
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.steps:
                self._log(window, history, bar, log_path if main else None, began)
                window = []
            if self.step % self.checkpoint_every == 0 and self.step < self.steps:
                self.save_checkpoint()
        if window:  # stopped by the time budget between two log steps
            self._log(window, history, bar, log_path if main else None, began)
        bar.close()
        self.save_checkpoint()
        self.accelerator.wait_for_everyone()
        return TrainingResult(self.step, start, history[-1][1] if history else float("nan"), history,
                              time.perf_counter() - began)

    def _log(self, window: list[float], history: list, bar: Any, log_path: Path | None, began: float) -> None:
        mean = sum(window) / len(window)
        history.append((self.step, mean))
        bar.set_postfix(loss=f"{mean:.4g}", refresh=False)
        if log_path is not None:
            entry = {"step": self.step, "loss": mean, "lr": self.schedule.get_last_lr()[0],
                     "seconds": round(self.seconds + time.perf_counter() - began, 3)}
            with open(log_path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")

    def _out_of_time(self, local: bool) -> bool:
        """True when any process is out of time (so that all stop at the same step)."""
        flag = torch.tensor(float(local), device=self.accelerator.device)
        return self.accelerator.reduce(flag, reduction="sum").item() > 0

    @staticmethod
    def _truncate_log(path: Path, step: int) -> None:
        """Drop log entries past `step` (written after the checkpoint a run resumes from)."""
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def ema_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights (the model itself when there is no EMA), in eval mode."""
        import copy

        model = copy.deepcopy(self.model).eval()
        if self.ema is not None:
            self.ema.copy_to([p for p in model.parameters() if p.requires_grad])
        return model.requires_grad_(False)
