"""The recipes of the shipped natural-image priors: their settings, models, losses and data, trained with `Trainer`.

    from imaging.learning.recipes import train_prior, export_prior
    train_prior("ddpm", "../shared/datasets/train400", "runs/ddpm", hours=1.9)    # resumable chunks
    export_prior("ddpm", "runs/ddpm", "imaging/weights/ddpm_natural")             # EMA weights, loadable by name

A run lives in its folder (checkpoint.safetensors, log.jsonl); calling `train_prior` again continues it where it
stopped. `scripts/train_priors.py` and `imaging train` are thin front ends; under `accelerate launch` or
`torchrun` the same call trains on several GPUs / nodes (the Trainer's accelerate).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from imaging.data import PatchDataset, save_folder_atomically
from imaging.learning.trainer import LOG, Trainer, TrainingResult

SETTINGS = {
    # DiffusionPrior.pretrained("natural"): ε-prediction DDPM, diffusers UNet2DModel (32, 64, 128) without
    # attention, T = 1000 linear β (DDPMScheduler defaults), 64×64 crops of train400 with flips / rotations.
    "ddpm": {"patch_size": 64, "batch_size": 16, "steps": 12_000, "lr": 5e-4, "warmup": 200, "weight_decay": 1e-4,
             "ema_decay": 0.999, "grad_clip": 1.0, "seed": 0,
             "unet": {"block_out_channels": [32, 64, 128], "layers_per_block": 1, "norm_num_groups": 8}},
    # pretrained_lpn("natural"): multi-scale convolutional LPN (226 k parameters), 40×40 crops, noise σ ~ U[0.08,
    # 0.12] (around 25/255), L1 for the first half of the steps, then L2: the network is then the prox of the prior
    # whose prox is the MMSE denoiser (the best PSNR, what plug-and-play wants); `proximal_matching_schedule` would
    # aim at the MAP denoiser of the data's own prior instead. Core weights clipped to ≥ 0 after every step.
    "lpn": {"losses": ["l1", "l2"], "patch_size": 40, "batch_size": 16, "steps": 12_000, "lr": 1e-3, "warmup": 200,
            "weight_decay": 0.0, "ema_decay": 0.999, "grad_clip": 1.0, "seed": 0, "sigma": [0.08, 0.12],
            "network": {"hidden": 64, "depth": 7, "pools": [False, False, True, False, True, False]}},
    # The LPN grown to 128 channels per layer (894 k parameters): starts as pretrained_lpn("natural") (the "lpn"
    # recipe's result, widened by LPNConv.widened, the same prox) and continues with the L2 loss on fresh crops.
    "lpn-wide": {"losses": ["l2"], "patch_size": 40, "batch_size": 16, "steps": 6_000, "lr": 5e-4, "warmup": 100,
                 "weight_decay": 0.0, "ema_decay": 0.999, "grad_clip": 1.0, "seed": 1, "sigma": [0.08, 0.12],
                 "grow": "natural", "network": {"hidden": 128, "depth": 7,
                                                "pools": [False, False, True, False, True, False]}},
    # UnrolledFoE.pretrained("natural-sigma25-student"): 48 Student-t experts 7x7 (zero-mean DCT atoms at the start),
    # 10 gradient steps on 1/2 |x - y|^2 + R(x) with learned step sizes, trained end to end (mean squared error of the
    # last step) on 64x64 crops of train400 with noise sigma = 25/255.
    "foe": {"patch_size": 64, "batch_size": 8, "steps": 4_000, "lr": 1e-2, "warmup": 50, "weight_decay": 0.0,
            "ema_decay": 0.99, "grad_clip": 1.0, "seed": 0, "sigma": 25 / 255,
            "model": {"count": 48, "size": 7, "steps": 10, "weight": 3e-4, "nu": 0.05}},
}


def mean_squared_error(model, batch: dict) -> torch.Tensor:
    """The loss of a denoiser: mean (model(noisy) − clean)² over the batch."""
    return (model(batch["noisy"]) - batch["clean"]).pow(2).mean()


def build(prior: str, data: str | None, settings: dict):
    """(model, loss, dataset, after_step) of a prior."""
    if prior == "ddpm":
        from diffusers import DDPMScheduler

        from imaging.learning.diffusion_training import DiffusionNoise, EpsilonLoss, natural_unet

        scheduler = DDPMScheduler()
        model = natural_unet(**settings["unet"], sample_size=settings["patch_size"])
        dataset = None if data is None else PatchDataset(
            data, settings["patch_size"], seed=settings["seed"],
            transform=DiffusionNoise(scheduler.config.num_train_timesteps), length=10 ** 9)
        return model, EpsilonLoss(scheduler), dataset, None, scheduler
    if prior in ("lpn", "lpn-wide"):
        from imaging.learning.lpn_training import Stage, StagedLoss, l1_loss, l2_loss
        from imaging.priors.lpn import LPNConv, pretrained_lpn

        if "grow" in settings:  # a trained LPN, widened (same prox), continues
            model = pretrained_lpn(settings["grow"]).widened(settings["network"]["hidden"])
            if model.config() != LPNConv(**settings["network"]).config():
                raise ValueError(f"{prior}: the network grown from {settings['grow']!r} does not match the recipe's "
                                 f"{settings['network']}")
        else:
            model = LPNConv(**settings["network"])
        patch, steps = settings["patch_size"], settings["steps"]
        losses = {"l1": l1_loss, "l2": l2_loss}
        count = len(settings["losses"])  # equal stages; the Trainer's cosine schedule sets the rate
        schedule = [Stage(steps // count + (k < steps % count), losses[name], settings["lr"])
                    for k, name in enumerate(settings["losses"])]
        dataset = None if data is None else PatchDataset(data, patch, sigma=tuple(settings["sigma"]),
                                                         seed=settings["seed"], length=10 ** 9)
        return model, StagedLoss(schedule), dataset, LPNConv.clip_weights, None
    if prior == "foe":
        from imaging.priors.foe import UnrolledFoE

        model = UnrolledFoE.natural(sigma=settings["sigma"], **settings["model"])
        dataset = None if data is None else PatchDataset(data, settings["patch_size"], sigma=settings["sigma"],
                                                         seed=settings["seed"], length=10 ** 9)
        return model, mean_squared_error, dataset, None, None
    raise ValueError(f"unknown prior {prior!r}; choose one of {sorted(SETTINGS)}")


def export(prior: str, trainer: Trainer, extra, folder: Path, data: str | None) -> None:
    """Write the EMA weights of a trained run where the library loads them by name, with the record of the run."""
    log = [json.loads(line) for line in (trainer.output_dir / LOG).read_text().splitlines() if line.strip()]
    record = {"script": "imaging.learning.recipes (scripts/train_priors.py, imaging train)", "prior": prior, "data": data or "train400 (../shared/datasets)",
              "settings": trainer.settings, "steps": trainer.step,
              "training_seconds": log[-1]["seconds"] if log else 0.0,
              "loss": [[entry["step"], round(entry["loss"], 5)] for entry in log]}
    model = trainer.ema_model()

    if prior in ("lpn", "lpn-wide"):
        model.save(str(folder), {**record, "loss": record["loss"][-20:]})
        return
    if prior == "foe":
        model.save(folder, record)
        return

    def write(target: Path) -> None:
        if prior == "ddpm":
            model.to(torch.float16).save_pretrained(target / "unet", safe_serialization=True)  # half the size
            extra.save_pretrained(target / "scheduler")
        (target / "training.json").write_text(json.dumps(record, indent=1) + "\n")

    save_folder_atomically(folder, write)


def exported_weights(prior: str, path: Path) -> tuple[dict, int]:
    """(state dict in float32, step) of an exported prior."""
    from safetensors import safe_open

    if prior == "ddpm":
        file, record = path / "unet" / "diffusion_pytorch_model.safetensors", path / "training.json"
        step = json.loads(record.read_text())["steps"]
    else:
        file = path
    with safe_open(str(file), "pt") as f:
        weights = {key: f.get_tensor(key).float() for key in f.keys()}
        if prior != "ddpm":
            step = json.loads(f.metadata()["settings"])["steps"]
    return weights, step


def make_trainer(prior: str, data: str | None, run: str | Path, *, steps: int | None = None,
                 progress: bool = True) -> tuple[Trainer, object]:
    """(trainer, extra) of a prior's recipe, its run folder `run` (steps: override the recipe's, e.g. a smoke
    test; recorded in the run's settings)."""
    if prior not in SETTINGS:
        raise ValueError(f"unknown prior {prior!r}; choose one of {sorted(SETTINGS)}")
    settings = {**SETTINGS[prior], **({"steps": steps} if steps else {})}
    torch.manual_seed(settings["seed"])
    model, loss, dataset, after_step, extra = build(prior, data, settings)
    trainer = Trainer(model, loss, dataset if dataset is not None else [None], batch_size=settings["batch_size"],
                      steps=settings["steps"], lr=settings["lr"], warmup=settings["warmup"],
                      weight_decay=settings["weight_decay"], ema_decay=settings["ema_decay"],
                      grad_clip=settings["grad_clip"], seed=settings["seed"], output_dir=Path(run),
                      checkpoint_every=250, log_every=50, progress=progress, after_step=after_step,
                      settings={"prior": prior, **settings})
    return trainer, extra


def train_prior(prior: str, data: str, run: str | Path, *, hours: float | None = None, init: str | None = None,
                steps: int | None = None, progress: bool = True) -> TrainingResult:
    """Train (or continue) a shipped prior's recipe on a folder of images for at most `hours`; `init`: a run
    without a checkpoint starts from these exported weights and their step (AdamW's moments restart)."""
    trainer, _ = make_trainer(prior, data, run, steps=steps, progress=progress)
    if init and not trainer.checkpoint_path.exists():
        weights, step = exported_weights(prior, Path(init))
        trainer.warm_start(weights, step)
    return trainer.fit(max_seconds=None if hours is None else hours * 3600)


def export_prior(prior: str, run: str | Path, folder: str | Path, data: str | None = None, *,
                 steps: int | None = None) -> int:
    """Export the run's EMA weights to `folder` (the layout the library loads by name); returns the step. `steps`:
    the run's own override of the recipe's steps, if it had one."""
    trainer, extra = make_trainer(prior, None, run, steps=steps, progress=False)
    if not trainer.checkpoint_path.exists():
        raise FileNotFoundError(f"export_prior: {str(run)!r} has no checkpoint to export")
    trainer.load_checkpoint(trainer.checkpoint_path)
    export(prior, trainer, extra, Path(folder), data)
    return trainer.step
