"""Train a small latent rectified-flow model on the offline LFW faces of scikit-image and save it to imaging/weights/flow_faces32.

Data: `imaging.data.load_faces` at 32×32 in [-1, 1], faces 0..79 for training (augmented by horizontal flips and
shifts of ±2 px with reflect padding), faces 80..99 held out.
(a) Autoencoder: a diffusers `AutoencoderKL` (1 channel, block_out_channels (16, 32, 64), 32×32 -> 8×8 with 8 latent
    channels (--latent-channels); 0.68 M parameters), trained with MSE reconstruction + a small KL weight, EMA of the weights. Latent
    scaling follows diffusers' SD3 convention: latent = (posterior mean − shift_factor) · scaling_factor with
    shift_factor = mean and scaling_factor = 1/std of the training latents (all 50 flips/shifts of each face),
    stored in the autoencoder's config.
(b) Velocity model: a diffusers `SD3Transformer2DModel` (8×8×8 latents, patch 2, 4 layers, 4 heads of 16 channels;
    0.58 M parameters), unconditional (zero prompt embeddings), rectified flow z_t = (1 − t) z_0 + t ε (t = 1 is
    noise), target v = ε − z_0, timestep passed as 1000·t, t logit-normal.
Both are trained by the library's engine, `imaging.learning.Trainer` (AdamW, diffusers' warmup + cosine schedule and
EMA; objectives from `imaging.learning.flow_training`; resumable checkpoints in runs/flow_faces32). The shipped
weights were trained by this script's earlier, hand-written loop with the same settings. The latents z_0 are those of the frozen autoencoder on all 50 augmented copies of every training face.

(c) FLAIR's calibration: the velocity error L(t) on 100 points of [0, 1] (training faces) and the weight curve
    w ∝ 1/L, in `<out>/calibration.safetensors` (read by `FlowPrior.from_pretrained`).
Writes, atomically, `<out>/transformer/` and `<out>/vae/` (safetensors; loaded by `SD3Transformer2DModel.from_pretrained
("imaging/weights/flow_faces32/transformer")`, `AutoencoderKL.from_pretrained("imaging/weights/flow_faces32/vae")` or
`FlowPrior.from_pretrained("imaging/weights/flow_faces32")`) and `<out>/training.json`, plus out/train_flow_faces.png: 16
samples (Euler, 50 steps from t = 1 to 0) with the nearest training face of each, training faces, held-out faces and
their autoencoder reconstructions. Prints the final losses, times, the held-out autoencoder PSNR and the flow loss
averaged over t on the held-out and (unaugmented) training faces.
Run: `python examples/train_flow_faces.py [--ae-steps 4000] [--flow-steps 6000] [--seed 0] [--out imaging/weights/flow_faces32]
[--threads 1]` (one CPU thread: about 0.2 s an autoencoder step, 0.05 s a flow step; 18 min in all).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from imaging.data import PatchDataset, load_faces, save_folder_atomically  # noqa: E402
from imaging.learning import Trainer  # noqa: E402
from imaging.learning.flow_training import (AutoencoderLoss, AutoencoderNoise, FlowNoise, PosteriorSample,  # noqa: E402
                                            VelocityLoss)
from imaging.plotting import mosaic, save_figure  # noqa: E402
from imaging.priors import FlowPrior  # noqa: E402
from imaging.solvers.flair import calibrated_weights, flow_velocity_error  # noqa: E402

SIZE = 32
LATENT_CHANNELS = 8  # default of --latent-channels
LATENT_SIZE = 8
TIMESTEP_SCALE = 1000.0
SHIFT = 2  # pixels, augmentation


def build_autoencoder(latent_channels: int = LATENT_CHANNELS) -> AutoencoderKL:
    """1-channel 32×32 <-> 4×8×8 autoencoder (three levels, two of them downsampling by 2)."""
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 64), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=8, sample_size=SIZE)


def build_transformer(latent_channels: int = LATENT_CHANNELS) -> SD3Transformer2DModel:
    """Unconditional SD3-style joint transformer on 8×8×C latents (2×2 patches: 16 tokens)."""
    heads, head_dim = 4, 16
    return SD3Transformer2DModel(sample_size=LATENT_SIZE, patch_size=2, in_channels=latent_channels,
                                 out_channels=latent_channels, num_layers=4, attention_head_dim=head_dim,
                                 num_attention_heads=heads, joint_attention_dim=32,
                                 caption_projection_dim=heads * head_dim, pooled_projection_dim=32,
                                 pos_embed_max_size=LATENT_SIZE)


def all_augmentations(images: torch.Tensor) -> torch.Tensor:
    """Every flip × shift (±SHIFT px, reflect padding) of (N, C, H, W) images: (N · 2 · (2·SHIFT+1)², C, H, W)."""
    _, _, height, width = images.shape
    copies = []
    for flipped in (images, images.flip(-1)):
        padded = F.pad(flipped, (SHIFT,) * 4, mode="reflect")
        for dy in range(2 * SHIFT + 1):
            for dx in range(2 * SHIFT + 1):
                copies.append(padded[:, :, dy:dy + height, dx:dx + width])
    return torch.cat(copies)


def psnr_01(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured in [0, 1] (peak 1), from the MSE over all images."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).mean()
    return (10 * torch.log10(1 / mse)).item()


@torch.no_grad()
def encode_mean(vae: AutoencoderKL, images: torch.Tensor, batch: int = 200) -> torch.Tensor:
    """Posterior means (N, 4, 8, 8) of images (N, 1, 32, 32) in [-1, 1], unscaled."""
    return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Decode the posterior mean."""
    return vae.decode(encode_mean(vae, images)).sample


def train_autoencoder(train_faces: torch.Tensor, args: argparse.Namespace) -> tuple[AutoencoderKL, float, float]:
    """Train the autoencoder on augmented faces (in [-1, 1]); returns (EMA autoencoder, final loss, time in s)."""
    vae = build_autoencoder(args.latent_channels)
    print(f"AutoencoderKL: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
    padded = F.pad((train_faces + 1) / 2, (SHIFT,) * 4, mode="reflect")  # random shifts of ±SHIFT px
    data = PatchDataset(list(padded), SIZE, augment="flip", seed=args.seed, length=10 ** 9,
                        transform=AutoencoderNoise((args.latent_channels, LATENT_SIZE, LATENT_SIZE)))
    trainer = Trainer(PosteriorSample(vae), AutoencoderLoss(args.kl_weight), data, batch_size=args.ae_batch,
                      steps=args.ae_steps, lr=args.ae_lr, warmup=args.warmup, ema_decay=args.ema_decay,
                      seed=args.seed, output_dir=Path(args.run) / "autoencoder", progress=True)
    result = trainer.fit()
    return trainer.ema_model().vae, result.loss, result.seconds


def flow_loss(transformer: SD3Transformer2DModel, z0: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """Per-sample rectified-flow loss (B,): ‖v_θ(z_t, t) − (ε − z0)‖² / dim with z_t = (1 − t) z0 + t ε."""
    return VelocityLoss(TIMESTEP_SCALE, reduction="none")(transformer, {"clean": z0, "t": t, "noise": noise})


@torch.no_grad()
def mean_flow_loss_over_t(transformer: SD3Transformer2DModel, z0: torch.Tensor, num_t: int = 50, seed: int = 1234,
                          batch: int = 500) -> float:
    """Flow loss averaged over the latents z0 and num_t evenly spread t = (i + 1/2)/num_t, seeded noise."""
    t = ((torch.arange(num_t) + 0.5) / num_t).repeat_interleave(len(z0))
    latents = z0.repeat(num_t, 1, 1, 1)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    losses = [flow_loss(transformer, latents[i:i + batch], t[i:i + batch], noise[i:i + batch])
              for i in range(0, len(latents), batch)]
    return torch.cat(losses).mean().item()


def train_flow(latents: torch.Tensor, args: argparse.Namespace) -> tuple[SD3Transformer2DModel, float, float]:
    """Train the velocity model on scaled latents (N, C, 8, 8); returns (EMA transformer, final loss, time in s)."""
    transformer = build_transformer(args.latent_channels)
    print(f"SD3Transformer2DModel: {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f} M parameters; "
          f"{len(latents)} training latents")
    data = PatchDataset(list(latents), LATENT_SIZE, augment=False, seed=args.seed, length=10 ** 9,
                        transform=FlowNoise())
    trainer = Trainer(transformer, VelocityLoss(TIMESTEP_SCALE), data, batch_size=args.flow_batch,
                      steps=args.flow_steps, lr=args.flow_lr, warmup=args.warmup, ema_decay=args.ema_decay,
                      seed=args.seed, output_dir=Path(args.run) / "flow", progress=True)
    result = trainer.fit()
    return trainer.ema_model(), result.loss, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-channels", type=int, default=LATENT_CHANNELS,
                        help="latent channels at 8x8 (8: 2x compression of the 32x32 faces)")
    parser.add_argument("--calibration-points", type=int, default=100,
                        help="points of FLAIR's velocity-error curve (on the training faces)")
    parser.add_argument("--ae-steps", type=int, default=4000)
    parser.add_argument("--ae-batch", type=int, default=16)
    parser.add_argument("--ae-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL term (per latent, summed)")
    parser.add_argument("--flow-steps", type=int, default=6000)
    parser.add_argument("--flow-batch", type=int, default=64)
    parser.add_argument("--flow-lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100, help="warmup steps of the learning rates")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="imaging/weights/flow_faces32", help="folder to write (transformer/ and vae/)")
    parser.add_argument("--run", default="runs/flow_faces32", help="checkpoints and logs (resumable)")
    parser.add_argument("--figure", default="out/train_flow_faces.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_faces = load_faces("train", SIZE) * 2 - 1
    test_faces = load_faces("test", SIZE) * 2 - 1
    print(f"{len(train_faces)} training faces, {len(test_faces)} held out")

    vae, ae_loss, ae_time = train_autoencoder(train_faces, args)
    test_reconstructions = reconstruct(vae, test_faces)
    ae_psnr_test = psnr_01(test_reconstructions, test_faces)
    ae_psnr_train = psnr_01(reconstruct(vae, train_faces), train_faces)
    print(f"autoencoder: {args.ae_steps} steps in {ae_time:.0f} s ({ae_time / args.ae_steps:.3f} s/step); final "
          f"reconstruction MSE (augmented, [-1, 1]) {ae_loss:.5f}; PSNR training faces {ae_psnr_train:.2f} dB, "
          f"held-out faces {ae_psnr_test:.2f} dB")

    raw_latents = encode_mean(vae, all_augmentations(train_faces))
    shift, scale = raw_latents.mean().item(), 1.0 / raw_latents.std().item()
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    latents = (raw_latents - shift) * scale
    print(f"latent shift_factor {shift:.4f}, scaling_factor {scale:.4f} (from {len(raw_latents)} augmented faces)")

    transformer, flow_final_loss, flow_time = train_flow(latents, args)
    train_latents = (encode_mean(vae, train_faces) - shift) * scale
    test_latents = (encode_mean(vae, test_faces) - shift) * scale
    flow_train = mean_flow_loss_over_t(transformer, train_latents)
    flow_held_out = mean_flow_loss_over_t(transformer, test_latents)
    print(f"flow: {args.flow_steps} steps (batch {args.flow_batch}) in {flow_time:.0f} s "
          f"({flow_time / args.flow_steps:.3f} s/step); final training loss (last logged window, logit-normal "
          f"t) {flow_final_loss:.4f}")
    print(f"EMA flow loss averaged over 50 uniform t: training faces {flow_train:.4f}, held-out faces "
          f"{flow_held_out:.4f} (ratio {flow_held_out / flow_train:.3f})")

    # FLAIR's calibrated weight curve: the velocity error L(t) on linspace(1, 0, M), w ∝ 1/L (mean 1). Measured on
    # the (unaugmented) training faces: the held-out faces stay unused until evaluation.
    prior = FlowPrior(transformer.eval(), vae.eval())
    _, velocity_errors = flow_velocity_error(prior, load_faces("train", SIZE), points=args.calibration_points,
                                             samples=4, seed=args.seed)
    weights = calibrated_weights(velocity_errors)
    print(f"FLAIR calibration: velocity error {velocity_errors.max():.3f} (max) .. {velocity_errors.min():.3f} (min, "
          f"t = {1 - int(velocity_errors.argmin()) / (args.calibration_points - 1):.2f}); weights "
          f"{weights.min():.2f} .. {weights.max():.2f}")

    results = {"ae_final_mse": ae_loss, "ae_psnr_train_db": ae_psnr_train, "ae_psnr_held_out_db": ae_psnr_test,
               "ae_time_s": ae_time, "flow_final_loss": flow_final_loss, "flow_loss_train": flow_train,
               "flow_loss_held_out": flow_held_out, "flow_time_s": flow_time}
    settings = {key: value for key, value in vars(args).items() if key not in ("threads", "figure", "out", "run")}

    def write(folder: Path) -> None:
        transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        # the sampling schedule, as in a Stable Diffusion 3 folder (shift 1: the plain rectified-flow grid)
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=int(TIMESTEP_SCALE), shift=1.0).save_pretrained(
            folder / "scheduler")
        save_file({"errors": velocity_errors.float().contiguous(), "weights": weights.float().contiguous()},
                  str(folder / "calibration.safetensors"))
        (folder / "training.json").write_text(json.dumps(
            {"script": "examples/train_flow_faces.py", "data": "imaging.data.load_faces('train', 32), faces 0..79",
             "settings": settings, "results": results}, indent=2) + "\n")

    save_folder_atomically(args.out, write)
    print(f"saved {args.out}/transformer, vae and scheduler")

    samples = prior.sample(16, steps=50, seed=args.seed).clamp(0, 1)  # Euler on the scheduler's grid, decoded
    train_01 = (train_faces + 1) / 2
    distances = torch.cdist(samples.flatten(1), train_01.flatten(1))
    nearest = train_01[distances.argmin(dim=1)]
    print(f"sample-to-nearest-training-face RMS distance: mean {distances.min(dim=1).values.mean() / SIZE:.4f}")
    figure, axes = plt.subplots(1, 5, figsize=(17, 4.4), gridspec_kw={"width_ratios": [4, 4, 2, 2, 2]})
    panels = [(mosaic(samples, 4), "16 samples (Euler, 50 steps)"), (mosaic(nearest, 4), "nearest training face"),
              (mosaic(train_01[:8], 2), "training faces"), (mosaic((test_faces[:8] + 1) / 2, 2), "held-out faces"),
              (mosaic(((test_reconstructions[:8] + 1) / 2).clamp(0, 1), 2), "their AE reconstructions")]
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle(f"latent rectified flow on LFW faces 32×32: AE held-out PSNR {ae_psnr_test:.1f} dB; flow loss "
                    f"train {flow_train:.3f}, held-out {flow_held_out:.3f}")
    save_figure(figure, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
