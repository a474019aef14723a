"""Train a small DDPM (ε-prediction) on the offline LFW faces of scikit-image and save it to data/ddpm_faces32.

Data: `imaging.data.load_faces` at 32×32, faces 0..79 for training (mapped to [-1, 1], augmented by horizontal flips
and random shifts of ±2 px with reflect padding to limit memorisation), faces 80..99 held out. Model: a diffusers
`UNet2DModel` (1 channel, block_out_channels (32, 64, 64), one resnet per level, self-attention at 8×8; 1.1 M
parameters) with the standard `DDPMScheduler()` (T = 1000, β linear from 1e-4 to 0.02). AdamW, linear warmup then
cosine decay of the learning rate, gradient clipping at 1, an exponential moving average (EMA) of the weights, which
is what is evaluated and saved.

Writes, atomically, the diffusers folder `<out>/unet/` + `<out>/scheduler/` (safetensors; loaded by
`UNet2DModel.from_pretrained("data/ddpm_faces32/unet")` and `DDPMScheduler.from_pretrained(
"data/ddpm_faces32/scheduler")`, or `DiffusionPrior.from_pretrained("data/ddpm_faces32")`), plus
`<out>/training.json` (settings and results of each run), and out/train_ddpm_faces.png: 16 samples by deterministic
DDIM (50 steps) and 16 by stochastic DDPM (250 steps, same seed), the nearest training face of each DDPM sample and 8
training faces. Prints the final training loss, the training time and the ε-MSE averaged over t on the held-out faces
and on the (unaugmented) training faces: a held-out loss much above the training one means memorisation.
Run: `python examples/train_ddpm_faces.py [--steps 1500] [--batch 32] [--lr 1e-3] [--seed 0] [--out data/ddpm_faces32]
[--threads 1] [--resume] [--evaluate-only]` (about 0.6 s a step on one CPU thread). The shipped model: the defaults,
then `--resume --lr 5e-4 --warmup 50` (1500 more steps).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402
from tqdm import tqdm  # noqa: E402

from imaging.data import load_faces  # noqa: E402
from imaging.plotting import save_figure  # noqa: E402

SIZE = 32
SHIFT = 2  # pixels, augmentation


def build_unet() -> UNet2DModel:
    """The 1.1 M-parameter UNet: 32×32 -> 16×16 -> 8×8 (self-attention at 8×8)."""
    return UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64), norm_num_groups=8, attention_head_dim=32,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random shifts of up to ±SHIFT px (reflect padding) of (B, C, H, W) images."""
    batch, _, height, width = images.shape
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (SHIFT,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * SHIFT + 1, (batch, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, step: int, max_decay: float) -> None:
    """EMA of the weights with the usual warmup of the decay, min(max_decay, (1 + step) / (10 + step))."""
    decay = min(max_decay, (1 + step) / (10 + step))
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


def noise_prediction_loss(unet: UNet2DModel, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                          alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Per-sample ε-MSE (B,) of x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε."""
    abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return (unet(x_t, timesteps).sample - noise).pow(2).mean(dim=(1, 2, 3))


@torch.no_grad()
def mean_loss_over_t(unet: UNet2DModel, x0: torch.Tensor, alphas_cumprod: torch.Tensor, num_t: int = 50,
                     seed: int = 1234, batch: int = 100) -> float:
    """ε-MSE averaged over the faces x0 (N, 1, H, W) in [-1, 1] and num_t timesteps at the middles of num_t equal
    bins of [0, T) (an estimate of the training loss's uniform average over t), with seeded noise (the same for
    every call with the same shapes)."""
    unet.eval()
    total = len(alphas_cumprod)
    grid = ((torch.arange(num_t) + 0.5) * total / num_t).long()
    timesteps = grid.repeat_interleave(len(x0))
    images = x0.repeat(num_t, 1, 1, 1)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    losses = [noise_prediction_loss(unet, images[i:i + batch], timesteps[i:i + batch], noise[i:i + batch],
                                    alphas_cumprod) for i in range(0, len(images), batch)]
    unet.train()
    return torch.cat(losses).mean().item()


@torch.no_grad()
def ddim_sample(unet: UNet2DModel, alphas_cumprod: torch.Tensor, count: int, steps: int = 50,
                seed: int = 0) -> torch.Tensor:
    """count samples (count, 1, SIZE, SIZE) in [-1, 1] by deterministic DDIM: x0 = (x − σ ε)/α, x' = α' x0 + σ' ε."""
    unet.eval()
    x = torch.randn((count, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
    total = len(alphas_cumprod)
    timesteps = list(range(0, total, total // steps))[::-1]
    for i, t in enumerate(timesteps):
        abar = alphas_cumprod[t]
        eps = unet(x, torch.full((count,), t)).sample
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        abar_next = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
        x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
    unet.train()
    return x


@torch.no_grad()
def ancestral_sample(unet: UNet2DModel, alphas_cumprod: torch.Tensor, count: int, steps: int = 250,
                     seed: int = 0) -> torch.Tensor:
    """count samples in [-1, 1] by stochastic DDPM (ancestral, η = 1) over `steps` evenly strided timesteps:
    x' = α' x0 + √(σ'² − s²) ε + s z, s² = (σ'²/σ²)(1 − ᾱ/ᾱ'), z fresh noise."""
    unet.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 1, SIZE, SIZE), generator=generator)
    total = len(alphas_cumprod)
    timesteps = list(range(0, total, total // steps))[::-1]
    for i, t in enumerate(timesteps):
        abar = alphas_cumprod[t]
        eps = unet(x, torch.full((count,), t)).sample
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        if i + 1 == len(timesteps):
            x = x0
            break
        abar_next = alphas_cumprod[timesteps[i + 1]]
        variance = (1 - abar_next) / (1 - abar) * (1 - abar / abar_next)
        x = (abar_next.sqrt() * x0 + (1 - abar_next - variance).sqrt() * eps
             + variance.sqrt() * torch.randn(x.shape, generator=generator))
    unet.train()
    return x


def save_atomically(folder: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary_folder) on a fresh folder next to `folder`, then swap it in by renames (an existing
    folder is replaced only once the new one is complete)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        write(temporary)
        for path in [temporary, *temporary.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
            os.replace(folder, old / folder.name)
        os.replace(temporary, folder)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def mosaic(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, 1, H, W) -> one (rows·H, columns·W) image, 1-px white gaps."""
    count, _, height, width = images.shape
    rows = math.ceil(count / columns)
    canvas = torch.ones(rows * (height + 1) - 1, columns * (width + 1) - 1)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas[row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = \
            image[0]
    return canvas


def fit(model: torch.nn.Module, batch_loss: Callable[[], tuple[torch.Tensor, torch.Tensor]], *, steps: int,
        lr: float, warmup: int, ema_decay: float, desc: str, metric: str = "loss", digits: int = 4,
        after_step: Callable[[int, torch.nn.Module, tqdm], None] | None = None) -> tuple[torch.nn.Module, float, float]:
    """AdamW (weight decay 1e-4) with warmup + cosine learning rate, gradient clipping at 1 and an EMA copy of the
    weights, for `steps` steps of `batch_loss() -> (loss to minimise, value to report)`; `after_step(step, ema,
    progress)` runs after each step. Returns (EMA copy, mean reported value over the last 100 steps, time in s)."""
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, steps, warmup))
    recent: list[float] = []
    start = time.perf_counter()
    progress = tqdm(range(steps), desc=desc, mininterval=5.0)
    for step in progress:
        loss, reported = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        update_ema(ema, model, step, ema_decay)
        recent = (recent + [reported.item()])[-100:]
        progress.set_postfix({metric: f"{sum(recent) / len(recent):.{digits}f}"}, refresh=False)
        if after_step is not None:
            after_step(step, ema, progress)
    progress.close()
    return ema, sum(recent) / len(recent), time.perf_counter() - start


def train(unet: UNet2DModel, train_faces: torch.Tensor, test_faces: torch.Tensor, alphas_cumprod: torch.Tensor,
          args: argparse.Namespace) -> tuple[UNet2DModel, float, float]:
    """Train `unet` on augmented faces; returns (EMA copy, final training loss, training time in s)."""
    generator = torch.Generator().manual_seed(args.seed)

    def batch_loss() -> tuple[torch.Tensor, torch.Tensor]:
        indices = torch.randint(0, len(train_faces), (args.batch,), generator=generator)
        x0 = augment(train_faces[indices], generator)
        timesteps = torch.randint(0, len(alphas_cumprod), (args.batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        loss = noise_prediction_loss(unet, x0, timesteps, noise, alphas_cumprod).mean()
        return loss, loss

    def evaluate(step: int, ema_unet: torch.nn.Module, progress: tqdm) -> None:
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            held_out = mean_loss_over_t(ema_unet, test_faces, alphas_cumprod, num_t=10)
            train_mse = mean_loss_over_t(ema_unet, train_faces, alphas_cumprod, num_t=10)
            progress.write(f"step {step + 1}: EMA ε-MSE train {train_mse:.4f}, held-out {held_out:.4f}")

    return fit(unet, batch_loss, steps=args.steps, lr=args.lr, warmup=args.warmup, ema_decay=args.ema_decay,
               desc="DDPM", after_step=evaluate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=int, default=100, help="warmup steps of the learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/ddpm_faces32", help="diffusers folder to write")
    parser.add_argument("--figure", default="out/train_ddpm_faces.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=500, help="held-out loss (10 timesteps) every so many steps")
    parser.add_argument("--resume", action="store_true",
                        help="start from the (EMA) weights already in --out instead of a fresh UNet")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: evaluate the model in --out and write the figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_faces = load_faces("train", SIZE) * 2 - 1
    test_faces = load_faces("test", SIZE) * 2 - 1
    scheduler = DDPMScheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    load = args.resume or args.evaluate_only
    unet = (UNet2DModel.from_pretrained(Path(args.out) / "unet") if load else build_unet()).train()
    runs = json.loads((Path(args.out) / "training.json").read_text()).get("runs", []) if load else []
    print(f"UNet2DModel: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters; "
          f"{len(train_faces)} training faces, {len(test_faces)} held out")

    if args.evaluate_only:
        ema_unet = unet.requires_grad_(False)
    else:
        ema_unet, final_loss, training_time = train(unet, train_faces, test_faces, alphas_cumprod, args)
        print(f"trained {args.steps} steps (batch {args.batch}) in {training_time:.0f} s "
              f"({training_time / args.steps:.3f} s/step); final training loss (mean of the last 100 steps, "
              f"augmented) {final_loss:.4f}")
    train_mse = mean_loss_over_t(ema_unet, train_faces, alphas_cumprod)
    held_out_mse = mean_loss_over_t(ema_unet, test_faces, alphas_cumprod)
    print(f"EMA ε-MSE averaged over 50 timesteps: training faces {train_mse:.4f}, held-out faces {held_out_mse:.4f} "
          f"(ratio {held_out_mse / train_mse:.3f})")

    if not args.evaluate_only:
        results = {"final_training_loss": final_loss, "train_eps_mse": train_mse, "held_out_eps_mse": held_out_mse,
                   "training_time_s": training_time}
        settings = {key: value for key, value in vars(args).items()
                    if key not in ("threads", "figure", "out", "evaluate_only")}
        runs = runs + [{"settings": settings, "results": results}]

        def write(folder: Path) -> None:
            ema_unet.save_pretrained(folder / "unet", safe_serialization=True)
            scheduler.save_pretrained(folder / "scheduler")
            (folder / "training.json").write_text(json.dumps(
                {"script": "examples/train_ddpm_faces.py",
                 "data": "imaging.data.load_faces('train', 32), faces 0..79", "runs": runs}, indent=2) + "\n")

        save_atomically(args.out, write)
        print(f"saved {args.out}/unet and {args.out}/scheduler")

    train_01 = (train_faces + 1) / 2
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4), gridspec_kw={"width_ratios": [4, 4, 4, 2]})
    ddim = ((ddim_sample(ema_unet, alphas_cumprod, 16, steps=50, seed=args.seed) + 1) / 2).clamp(0, 1)
    ancestral = ((ancestral_sample(ema_unet, alphas_cumprod, 16, steps=250, seed=args.seed) + 1) / 2).clamp(0, 1)
    for name, samples in (("DDIM", ddim), ("ancestral", ancestral)):
        distances = torch.cdist(samples.flatten(1), train_01.flatten(1)).min(dim=1).values / SIZE
        print(f"{name} samples: RMS distance to the nearest training face {distances.mean():.4f} on average")
    nearest = train_01[torch.cdist(ancestral.flatten(1), train_01.flatten(1)).argmin(dim=1)]
    panels = [(mosaic(ddim, 4), "16 samples (DDIM, 50 steps)"), (mosaic(ancestral, 4), "16 samples (DDPM, 250 steps)"),
              (mosaic(nearest, 4), "nearest training face (DDPM)"), (mosaic(train_01[:8], 2), "training faces")]
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
