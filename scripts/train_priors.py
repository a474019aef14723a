"""Train the shipped natural-image priors on a folder of images (train400) with `imaging.learning.Trainer`.

    python scripts/train_priors.py ddpm --data ../shared/datasets/train400 [--hours 1.9] [--threads 1]
    python scripts/train_priors.py ddpm --export imaging/weights/ddpm_natural       # EMA weights -> shipped diffusers folder
    python scripts/train_priors.py lpn --data ../shared/datasets/train400
    python scripts/train_priors.py lpn --export imaging/weights/lpn_natural.safetensors
    accelerate launch scripts/train_priors.py ddpm --data ...            # several GPUs / nodes, same script

Every prior's settings are the SETTINGS entry below (the run folder records them). A run lives in
`runs/<prior>/` (checkpoint.safetensors, log.jsonl); calling the script again continues it where it stopped,
so a long training runs in chunks (`--hours`) across sessions. `--export` writes the EMA weights where the
library loads them by name, with `training.json` (settings, steps, wall time, loss curve).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from imaging.data import PatchDataset, save_folder_atomically
from imaging.learning.trainer import LOG, Trainer

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
}


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
    if prior == "lpn":
        from imaging.learning.lpn_training import Stage, StagedLoss, l1_loss, l2_loss
        from imaging.priors.lpn import LPNConv

        model = LPNConv(**settings["network"])
        patch, steps = settings["patch_size"], settings["steps"]
        losses = {"l1": l1_loss, "l2": l2_loss}
        count = len(settings["losses"])  # equal stages; the Trainer's cosine schedule sets the rate
        schedule = [Stage(steps // count + (k < steps % count), losses[name], settings["lr"])
                    for k, name in enumerate(settings["losses"])]
        dataset = None if data is None else PatchDataset(data, patch, sigma=tuple(settings["sigma"]),
                                                         seed=settings["seed"], length=10 ** 9)
        return model, StagedLoss(schedule), dataset, LPNConv.clip_weights, None
    raise ValueError(f"unknown prior {prior!r}; choose one of {sorted(SETTINGS)}")


def export(prior: str, trainer: Trainer, extra, folder: Path, data: str | None) -> None:
    log = [json.loads(line) for line in (trainer.output_dir / LOG).read_text().splitlines() if line.strip()]
    record = {"script": "scripts/train_priors.py", "prior": prior, "data": data or "train400 (../shared/datasets)",
              "settings": trainer.settings, "steps": trainer.step,
              "training_seconds": log[-1]["seconds"] if log else 0.0,
              "loss": [[entry["step"], round(entry["loss"], 5)] for entry in log]}
    model = trainer.ema_model()

    if prior == "lpn":
        model.save(str(folder), {**record, "loss": record["loss"][-20:]})
        return

    def write(target: Path) -> None:
        if prior == "ddpm":
            model.to(torch.float16).save_pretrained(target / "unet", safe_serialization=True)  # half the size
            extra.save_pretrained(target / "scheduler")
        (target / "training.json").write_text(json.dumps(record, indent=1) + "\n")

    save_folder_atomically(folder, write)


def plot_curve(prior: str, run: Path, figure_path: str) -> None:
    """The training loss (log.jsonl) against steps; the title gives the steps and the training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imaging.plotting import save_figure

    log = [json.loads(line) for line in (run / LOG).read_text().splitlines() if line.strip()]
    steps, losses = [e["step"] for e in log], [e["loss"] for e in log]
    figure, axis = plt.subplots(figsize=(6, 3.2), layout="constrained")
    axis.plot(steps, losses, lw=0.8)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (mean of each logged window)")
    axis.set_yscale("log")
    axis.set_title(f"{prior}: {steps[-1]} steps, {log[-1]['seconds'] / 3600:.2f} h on the CPU")
    print(f"-> {save_figure(figure, figure_path)}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", choices=sorted(SETTINGS))
    parser.add_argument("--data", help="folder of training images (PNG/TIFF/NPY), e.g. ../shared/datasets/train400")
    parser.add_argument("--run", help="run folder (default runs/<prior>)")
    parser.add_argument("--hours", type=float, default=None, help="stop this chunk after so many hours")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--export", metavar="FOLDER", help="write the EMA weights of the run to FOLDER and exit")
    parser.add_argument("--curves", metavar="FIGURE", help="plot the loss curve of the run (log.jsonl) and exit")
    parser.add_argument("--init", metavar="EXPORTED",
                        help="a run folder without a checkpoint starts from these exported weights and their step "
                             "(e.g. imaging/weights/ddpm_natural, imaging/weights/lpn_natural.safetensors): how a run "
                             "continues in a fresh checkout; AdamW's moments restart")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SETTINGS[args.prior]
    run = Path(args.run or f"runs/{args.prior}")
    if args.curves:
        plot_curve(args.prior, run, args.curves)
        return
    if args.export is None and args.data is None:
        parser.error("--data is required to train")
    torch.manual_seed(settings["seed"])
    model, loss, dataset, after_step, extra = build(args.prior, args.data, settings)
    trainer = Trainer(model, loss, dataset if dataset is not None else [None], batch_size=settings["batch_size"],
                      steps=settings["steps"], lr=settings["lr"], warmup=settings["warmup"],
                      weight_decay=settings["weight_decay"], ema_decay=settings["ema_decay"],
                      grad_clip=settings["grad_clip"], seed=settings["seed"], output_dir=run, checkpoint_every=250,
                      log_every=50, progress=True, after_step=after_step,
                      settings={"prior": args.prior, **settings})
    if args.export is not None:
        trainer.load_checkpoint(trainer.checkpoint_path)
        export(args.prior, trainer, extra, Path(args.export), args.data)
        print(f"exported step {trainer.step} of {run} to {args.export}")
        return
    if args.init and not trainer.checkpoint_path.exists():
        weights, step = exported_weights(args.prior, Path(args.init))
        trainer.warm_start(weights, step)
        print(f"starting from {args.init} at step {step}", file=sys.stderr)
    result = trainer.fit(max_seconds=None if args.hours is None else args.hours * 3600)
    print(f"{args.prior}: step {result.resumed_from} -> {result.steps} of {settings['steps']} in "
          f"{result.seconds:.0f} s; loss {result.loss:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
