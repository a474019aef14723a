"""Train a small DDPM (ε-prediction) on the offline LFW faces of scikit-image and save it to imaging/weights/ddpm_faces32.

Data: `imaging.data.load_faces` at 32×32, faces 0..79 for training (mapped to [-1, 1], augmented by horizontal flips
and random shifts of ±2 px with reflect padding to limit memorisation), faces 80..99 held out. Model: a diffusers
`UNet2DModel` (1 channel, block_out_channels (32, 64, 64), one resnet per level, self-attention at 8×8; 1.1 M
parameters) with the standard `DDPMScheduler()` (T = 1000, β linear from 1e-4 to 0.02). Trained by the library's
engine, `imaging.learning.Trainer` (AdamW, diffusers' warmup + cosine schedule and EMA, gradient clipping at 1;
checkpoints in runs/ddpm_faces32, so an interrupted run continues where it stopped); the EMA weights are what is
evaluated and saved. (The shipped weights were trained by this script's earlier, hand-written loop with the same
settings.)

Writes, atomically, the diffusers folder `<out>/unet/` + `<out>/scheduler/` (safetensors; loaded by
`UNet2DModel.from_pretrained("imaging/weights/ddpm_faces32/unet")` and `DDPMScheduler.from_pretrained(
"imaging/weights/ddpm_faces32/scheduler")`, or `DiffusionPrior.from_pretrained("imaging/weights/ddpm_faces32")`), plus
`<out>/training.json` (settings and results of each run), and out/train_ddpm_faces.png: 16 samples by deterministic
DDIM (50 steps, diffusers' DDIMScheduler) and 16 by stochastic DDPM (250 steps, diffusers' DDPMScheduler), the nearest training face of each DDPM sample and 8
training faces. Prints the final training loss, the training time and the ε-MSE averaged over t on the held-out faces
and on the (unaugmented) training faces: a held-out loss much above the training one means memorisation.
Run: `python examples/train_ddpm_faces.py [--steps 1500] [--batch 32] [--lr 1e-3] [--seed 0] [--out imaging/weights/ddpm_faces32]
[--run runs/ddpm_faces32] [--threads 1] [--resume] [--evaluate-only]` (about 0.6 s a step on one CPU thread). The shipped model: the defaults,
then `--resume --lr 5e-4 --warmup 50` (1500 more steps).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from imaging.data import PatchDataset, load_faces, save_folder_atomically  # noqa: E402
from imaging.learning import Trainer  # noqa: E402
from imaging.learning.diffusion_training import DiffusionNoise, EpsilonLoss  # noqa: E402
from imaging.plotting import mosaic, save_figure  # noqa: E402
from imaging.priors import DiffusionPrior  # noqa: E402

SIZE = 32
SHIFT = 2  # pixels, augmentation


def build_unet() -> UNet2DModel:
    """The 1.1 M-parameter UNet: 32×32 -> 16×16 -> 8×8 (self-attention at 8×8)."""
    return UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64), norm_num_groups=8, attention_head_dim=32,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def shifted_faces(faces: torch.Tensor, seed: int) -> PatchDataset:
    """Training items: random 32×32 crops of the faces reflect-padded by SHIFT px (random shifts of ±SHIFT px),
    flipped left-right at random, with a diffusion timestep and noise each."""
    padded = F.pad(faces, (SHIFT,) * 4, mode="reflect")
    return PatchDataset(list(padded), SIZE, augment="flip", seed=seed, length=10 ** 9, transform=DiffusionNoise())


@torch.no_grad()
def mean_loss_over_t(unet: UNet2DModel, faces: torch.Tensor, num_t: int = 50, seed: int = 1234) -> float:
    """ε-MSE averaged over the faces (N, 1, H, W) in [0, 1] and num_t timesteps at the middles of num_t equal bins
    of [0, T) (an estimate of the training loss's uniform average over t), with seeded noise."""
    total = 1000
    timesteps = ((torch.arange(num_t) + 0.5) * total / num_t).long().repeat_interleave(len(faces))
    images = faces.repeat(num_t, 1, 1, 1)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    loss = EpsilonLoss()
    values = [float(loss(unet, {"clean": images[i:i + 100], "timestep": timesteps[i:i + 100],
                                 "noise": noise[i:i + 100]})) * len(images[i:i + 100])
              for i in range(0, len(images), 100)]
    return sum(values) / len(images)


@torch.no_grad()
def ancestral_sample(unet: UNet2DModel, count: int, steps: int = 250, seed: int = 0) -> torch.Tensor:
    """count samples in [0, 1] by stochastic DDPM sampling (diffusers' DDPMScheduler over `steps` timesteps)."""
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 1, SIZE, SIZE), generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=int, default=100, help="warmup steps of the learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="imaging/weights/ddpm_faces32", help="diffusers folder to write")
    parser.add_argument("--run", default="runs/ddpm_faces32", help="checkpoint and log of the run (resumable)")
    parser.add_argument("--figure", default="out/train_ddpm_faces.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true",
                        help="start from the (EMA) weights already in --out instead of a fresh UNet")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: evaluate the model in --out and write the figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_faces, test_faces = load_faces("train", SIZE), load_faces("test", SIZE)
    load = args.resume or args.evaluate_only
    unet = (UNet2DModel.from_pretrained(Path(args.out) / "unet") if load else build_unet()).train()
    runs = json.loads((Path(args.out) / "training.json").read_text()).get("runs", []) if load else []
    print(f"UNet2DModel: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters; "
          f"{len(train_faces)} training faces, {len(test_faces)} held out")

    if args.evaluate_only:
        ema_unet = unet.requires_grad_(False).eval()
    else:
        trainer = Trainer(unet, EpsilonLoss(), shifted_faces(train_faces, args.seed), batch_size=args.batch,
                          steps=args.steps, lr=args.lr, warmup=args.warmup, ema_decay=args.ema_decay, seed=args.seed,
                          output_dir=args.run, progress=True)
        began = time.perf_counter()
        result = trainer.fit()
        training_time = time.perf_counter() - began
        ema_unet = trainer.ema_model()
        print(f"trained steps {result.resumed_from}..{result.steps} (batch {args.batch}) in {training_time:.0f} s; "
              f"final training loss (last logged window, augmented) {result.loss:.4f}")
    train_mse, held_out_mse = mean_loss_over_t(ema_unet, train_faces), mean_loss_over_t(ema_unet, test_faces)
    print(f"EMA ε-MSE averaged over 50 timesteps: training faces {train_mse:.4f}, held-out faces {held_out_mse:.4f} "
          f"(ratio {held_out_mse / train_mse:.3f})")

    if not args.evaluate_only:
        results = {"final_training_loss": result.loss, "train_eps_mse": train_mse, "held_out_eps_mse": held_out_mse,
                   "training_time_s": training_time}
        settings = {key: value for key, value in vars(args).items()
                    if key not in ("threads", "figure", "out", "run", "evaluate_only")}
        runs = runs + [{"settings": settings, "results": results}]

        def write(folder: Path) -> None:
            ema_unet.save_pretrained(folder / "unet", safe_serialization=True)
            DDPMScheduler().save_pretrained(folder / "scheduler")
            (folder / "training.json").write_text(json.dumps(
                {"script": "examples/train_ddpm_faces.py",
                 "data": "imaging.data.load_faces('train', 32), faces 0..79", "runs": runs}, indent=2) + "\n")

        save_folder_atomically(args.out, write)
        print(f"saved {args.out}/unet and {args.out}/scheduler")

    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4), gridspec_kw={"width_ratios": [4, 4, 4, 2]})
    ddim = DiffusionPrior(ema_unet).sample(16, steps=50, seed=args.seed).clamp(0, 1)
    ancestral = ancestral_sample(ema_unet, 16, steps=250, seed=args.seed)
    for name, samples in (("DDIM", ddim), ("ancestral", ancestral)):
        distances = torch.cdist(samples.flatten(1), train_faces.flatten(1)).min(dim=1).values / SIZE
        print(f"{name} samples: RMS distance to the nearest training face {distances.mean():.4f} on average")
    nearest = train_faces[torch.cdist(ancestral.flatten(1), train_faces.flatten(1)).argmin(dim=1)]
    panels = [(mosaic(ddim, 4), "16 samples (DDIM, 50 steps)"), (mosaic(ancestral, 4), "16 samples (DDPM, 250 steps)"),
              (mosaic(nearest, 4), "nearest training face (DDPM)"), (mosaic(train_faces[:8], 2), "training faces")]
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(title)
        axis.axis("off")
    total_steps = sum(run["settings"]["steps"] for run in runs)
    figure.suptitle(f"DDPM on LFW faces 32×32: {total_steps} steps; ε-MSE train {train_mse:.4f}, "
                    f"held-out {held_out_mse:.4f}")
    save_figure(figure, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
