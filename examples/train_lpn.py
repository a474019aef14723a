"""Train the shipped learned proximal networks (imaging.priors.lpn) on CPU.

--model laplacian: three 1-D LPNs on y = x + N(0, 1), x ~ Laplace(0, 1), with the L2, L1 and proximal-matching
  losses (the paper's Laplacian experiment; proximal matching continues from the L1 model, then a refinement at
  γ = 0.1 and 0.05, see LAPLACIAN_REFINEMENT), and their errors against the MMSE denoiser, the soft-threshold and the
  prior |x|; about 30 minutes on one thread.
--model image: a fully convolutional LPN (LPNConv, 32 channels, 5 layers) on 32×32 patches of offline scikit-image
  pictures (camera, coins, moon, astronaut, brick, text, clock, page, at full, half and quarter size; coffee, chelsea
  and rocket are held out), noise σ ~ U[0.01, 0.1] per patch (a range of noise keeps the prox well-behaved on the
  artefacts of PnP iterates; with σ = 0.05 alone PnP-ADMM for compressed sensing could stall), L1 pre-training (40 %
  of the steps, lr 5e-3) then proximal matching with the paper's γ schedule (8, 4, 2, 1 × γ_min, lr 1e-3 decaying to
  2e-4); 6000 steps of 16 patches take about 20-35 minutes on one thread.

--model digits: a fixed-size LPN (LPNPatch, 8×8, 64 channels) on scikit-learn's handwritten digits 0..1499 (the
  rest held out), σ = 0.1, L1 pre-training then proximal matching; 10000 steps take about 8 minutes on one thread.
  Its prior is the one of the paper's MNIST study (grows with noise, blur and mixing of digits).

Run: `python examples/train_lpn.py --model laplacian|image|digits|all [--save] [--steps N] [--scale S]`; --save writes
imaging/weights/lpn_*.safetensors (with the training settings as metadata), otherwise the files go to --out.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from imaging.data import load_digits, load_image
from imaging.data import PatchDataset
from imaging.learning.lpn_training import (LaplaceSamples, Stage, default_gamma_min, l1_loss, l2_loss,
                                           laplacian_schedule, lpn_trainer, proximal_matching_loss,
                                           proximal_matching_schedule)
from imaging.priors.lpn import SHIPPED, LearnedProximalNetwork, LPN1d, LPNConv, LPNPatch, load_lpn

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = ("camera", "coins", "moon", "astronaut", "brick", "text", "clock", "page")
HELD_OUT = ("coffee", "chelsea", "rocket")
# After the paper's proximal-matching schedule (which ends at γ = 0.1 with lr 1e-6 and leaves the proximal-matching
# LPN about 0.19 away from the soft-threshold at the kinks y = ±1), a refinement at γ = 0.1 then 0.05 with larger
# batches: the γ-optimal denoiser itself is 0.11 (γ = 0.1) / 0.065 (γ = 0.05) away from the MAP at y = 1, and smaller γ
# (0.03) made training unstable. Each entry: (stage, batch size, seed); every entry starts a fresh Adam.
LAPLACIAN_REFINEMENT = [(Stage(4000, proximal_matching_loss, 1e-4, 0.1), 4000, 10),
                        (Stage(4000, proximal_matching_loss, 1e-4, 0.05), 4000, 11),
                        (Stage(3000, proximal_matching_loss, 3e-5, 0.05), 8000, 30),
                        (Stage(3000, proximal_matching_loss, 1e-5, 0.05), 8000, 31)]


def soft_threshold(y: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    return torch.sign(y) * (y.abs() - threshold).clamp_min(0)


def laplace_mmse(y: torch.Tensor, sigma: float = 1.0, scale: float = 1.0, points: int = 20001) -> torch.Tensor:
    """E[x | y] for x ~ Laplace(0, scale), y = x + N(0, σ²), by quadrature on x ∈ [−40, 40]."""
    x = torch.linspace(-40, 40, points, dtype=torch.float64)
    log_w = -x.abs() / scale - (y.double().reshape(-1, 1) - x) ** 2 / (2 * sigma ** 2)
    w = torch.softmax(log_w, dim=1)
    return (w * x).sum(1).reshape(y.shape).to(y.dtype)


@torch.no_grad()
def laplacian_errors(models: dict[str, LPN1d]) -> dict[str, float]:
    """Max errors on [−3, 3]: L2 model vs MMSE, PM model vs soft-threshold (grid of 601 points and at the integers),
    recovered prior R(x) − R(0) vs |x| for x ∈ [−2, 2] (where R needs the prox only on y = f⁻¹(x) ∈ [−3, 3], the
    range checked above) and for x ∈ [−3, 3] (`_wide`: it needs the prox out to |y| ≈ 4, where 3 % of the samples
    fall and proximal matching at small γ gives almost no gradient, so its tails drift from run to run), and the
    largest inversion error."""
    y = torch.linspace(-3, 3, 601, dtype=torch.float64)[:, None]
    integers = torch.arange(-3, 4, dtype=torch.float64)[:, None]
    errors = {}
    if "l2" in models:
        errors["l2_vs_mmse"] = float((models["l2"].prox(y) - laplace_mmse(y)).abs().max())
    if "l1" in models:
        errors["l1_vs_soft_threshold"] = float((models["l1"].prox(y) - soft_threshold(y)).abs().max())
    if "pm" in models:
        pm = models["pm"]
        errors["pm_vs_soft_threshold"] = float((pm.prox(y) - soft_threshold(y)).abs().max())
        errors["pm_vs_soft_threshold_integers"] = float((pm.prox(integers) - soft_threshold(integers)).abs().max())
        x = torch.linspace(-3, 3, 121, dtype=torch.float64)[:, None]
        estimate = pm.prior(torch.cat([torch.zeros(1, 1, dtype=torch.float64), x]))
        error = (estimate.value[1:] - estimate.value[0] - x[:, 0].abs()).abs()
        errors["pm_prior_vs_abs"] = float(error[x[:, 0].abs() <= 2].max())
        errors["pm_prior_vs_abs_wide"] = float(error.max())
        errors["pm_inversion_error"] = float(estimate.inversion_error.max())
    return errors


def fit(model: LearnedProximalNetwork, schedule: list[Stage], data, batch: int, seed: int, args,
        run: str | None = None, **options) -> LearnedProximalNetwork:
    """Train `model` through `schedule` with the library's Trainer (`lpn_trainer`); with `run`, checkpoints go to
    <out>/runs/<run>/ and a rerun continues from them."""
    output = Path(args.out) / "runs" / run if run else None
    trainer = lpn_trainer(model.requires_grad_(True), schedule, data, batch_size=batch, seed=seed, progress=args.progress,
                          output_dir=output, **options)
    trainer.fit()
    return trainer.ema_model()


def train_laplacian(args) -> None:
    batch = args.batch or 2000
    models = {}
    for loss, loss_fn in (("l2", l2_loss), ("l1", l1_loss)):
        start = time.perf_counter()
        seed = 1 if loss == "l2" else 2
        models[loss] = fit(LPN1d(), laplacian_schedule(loss_fn, args.scale), LaplaceSamples(seed=seed), batch, seed,
                           args)
        print(f"laplacian {loss}: {time.perf_counter() - start:.0f}s")
    start = time.perf_counter()
    pm = LPN1d()
    pm.load_state_dict(models["l1"].state_dict())
    l1_stages = len(laplacian_schedule(l1_loss, args.scale))
    pm = fit(pm, laplacian_schedule(proximal_matching_loss, args.scale)[l1_stages:], LaplaceSamples(seed=3), batch,
             3, args)
    if args.refine:
        for stage, size, seed in LAPLACIAN_REFINEMENT:  # every entry starts a fresh Adam
            stage = Stage(max(1, int(round(stage.steps * args.scale))), stage.loss, stage.lr, stage.gamma)
            pm = fit(pm, [stage], LaplaceSamples(seed=seed), size, seed, args)
    models["pm"] = pm
    print(f"laplacian proximal matching (from the L1 model): {time.perf_counter() - start:.0f}s")
    for name, value in laplacian_errors(models).items():
        print(f"  {name:32s} {value:.4f}")
    folder = ROOT / "imaging" / "weights" if args.save else Path(args.out)
    for key, name in (("l2", "laplacian-l2"), ("l1", "laplacian-l1"), ("pm", "laplacian-pm")):
        models[key].save(str(folder / SHIPPED[name]), {
            "data": "x ~ Laplace(0, 1), y = x + N(0, 1)", "loss": key, "batch": args.batch or 2000,
            "schedule_scale": args.scale, "refinement": bool(args.refine) and key == "pm",
            "script": "examples/train_lpn.py --model laplacian"})
    print(f"wrote {folder}/lpn_laplacian_{{l2,l1,pm}}.safetensors")


SCALES = (1.0, 0.5, 0.25)


def training_images() -> list[torch.Tensor]:
    """The training pictures in grey at every scale of SCALES (anti-aliased resizing)."""
    images = []
    for name in TRAIN_IMAGES:
        h, w = load_image(name, channels=1).shape[-2:]
        images += [load_image(name, size=(int(h * s), int(w * s)), channels=1) for s in SCALES]
    return images


def train_image(args) -> None:
    sigma = tuple(float(v) for v in args.sigma.split(",")) if "," in args.sigma else float(args.sigma)
    patch = args.patch
    pools = tuple(int(p) for p in args.pools.split(",")) if args.pools else None
    model = LPNConv(hidden=args.hidden, depth=args.depth, pools=pools)
    gamma_min = default_gamma_min((1, patch, patch))
    schedule = proximal_matching_schedule(args.steps, gamma_min, pretrain_fraction=0.4, lr_pretrain=5e-3, lr=1e-3,
                                          lr_final=2e-4)
    previous = {}
    if args.resume:  # continue a trained network at γ_min, the learning rate halving over `stages` equal stages
        model = load_lpn(args.resume)
        previous = {"resumed_from": {k: v for k, v in model.settings.items() if k != "schedule"}}
        stages = 3
        schedule = [Stage(args.steps // stages, proximal_matching_loss, args.lr / 2 ** k, gamma_min)
                    for k in range(stages)]
    folder = ROOT / "imaging" / "weights" if args.save else Path(args.out)
    path = str(folder / SHIPPED["image"])
    settings = {**previous, "sigma": sigma, "patch": patch, "batch": args.batch or 16, "train_images": list(TRAIN_IMAGES),
                "scales": list(SCALES), "held_out": list(HELD_OUT),
                "schedule_summary": "L1 40 % at 5e-3, then proximal matching, gamma 8,4,2,1 x gamma_min, lr 1e-3 -> 2e-4",
                "script": f"examples/train_lpn.py --model image --steps {args.steps} --hidden {args.hidden} "
                          f"--depth {args.depth} --pools '{args.pools}' --sigma {args.sigma} --patch {patch}"
                          + (f" --resume {args.resume} --lr {args.lr}" if args.resume else "")}
    start = time.perf_counter()
    data = PatchDataset(training_images(), patch, sigma=sigma, length=10 ** 9)
    model = fit(model, schedule, data, args.batch or 16, 0, args, run="lpn_image", checkpoint_every=200)
    model.save(path, settings)
    print(f"image LPN: {time.perf_counter() - start:.0f}s, wrote {path}")
    clean = torch.cat([load_image(name, size=128, channels=1).float() for name in HELD_OUT])
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = model.prox(noisy)
    mse = lambda a: ((a - clean) ** 2).flatten(1).mean(1)  # noqa: E731
    for name, a, b in zip(HELD_OUT, mse(noisy), mse(denoised)):
        print(f"  held-out {name:8s} (σ = 0.05) noisy PSNR {-10 * math.log10(a):.2f}  LPN PSNR {-10 * math.log10(b):.2f}")


def train_digits(args) -> None:
    """LPNPatch (8×8, 64 channels) on scikit-learn's digits 0..1499 (1500..1796 held out), σ = 0.1, L1
    pre-training (40 %) then proximal matching with the paper's γ schedule."""
    images = list(load_digits("train").split(1))
    model = LPNPatch(8, hidden=64)
    schedule = proximal_matching_schedule(args.digit_steps, default_gamma_min((1, 8, 8)), pretrain_fraction=0.4,
                                          lr_pretrain=1e-3, lr=1e-3, lr_final=1e-4)
    folder = ROOT / "imaging" / "weights" if args.save else Path(args.out)
    path = str(folder / SHIPPED["digits"])
    settings = {"sigma": 0.1, "batch": 64, "data": "sklearn.datasets.load_digits, images 0..1499 (1500.. held out)",
                "schedule_summary": "L1 40 % at 1e-3, then proximal matching, gamma 8,4,2,1 x gamma_min, lr 1e-3 -> 1e-4",
                "script": f"examples/train_lpn.py --model digits --digit-steps {args.digit_steps}"}
    start = time.perf_counter()
    data = PatchDataset(images, 8, sigma=0.1, augment=False, length=10 ** 9)
    model = fit(model, schedule, data, 64, 0, args, run="lpn_digits")
    model.save(path, settings)
    clean = load_digits("test")
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = model.prox(noisy)
    mse = lambda a: float(((a - clean) ** 2).mean())  # noqa: E731
    print(f"digits LPN: {time.perf_counter() - start:.0f}s, wrote {path}; held-out (σ = 0.1) noisy PSNR "
          f"{-10 * math.log10(mse(noisy)):.2f}, LPN PSNR {-10 * math.log10(mse(denoised)):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all", choices=("laplacian", "image", "digits", "all"))
    parser.add_argument("--save", action="store_true", help="write imaging/weights/lpn_*.safetensors")
    parser.add_argument("--out", default="out", help="folder for the weights without --save")
    parser.add_argument("--scale", type=float, default=1.0, help="Laplacian: multiply the paper's step counts")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="Laplacian: stop after the paper's proximal-matching schedule (no γ = 0.05 refinement)")
    parser.add_argument("--steps", type=int, default=6000, help="image LPN: training steps (40 %% L1 pre-training)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (default 2000 Laplacian, 16 image)")
    parser.add_argument("--sigma", default="0.01,0.1", help="image LPN: training noise level, or 'min,max' for U[min, max]")
    parser.add_argument("--patch", type=int, default=32, help="image LPN: patch size")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--pools", default="", help="image LPN: 2×2 pooling before each core layer (0/1)")
    parser.add_argument("--resume", default="", help="image LPN: continue training this checkpoint at γ_min "
                        "(3 stages, lr halving) instead of the full schedule")
    parser.add_argument("--lr", type=float, default=2e-4, help="image LPN with --resume: first learning rate")
    parser.add_argument("--digit-steps", type=int, default=10000, help="digits LPN: training steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model in ("laplacian", "all"):
        train_laplacian(args)
    if args.model in ("image", "all"):
        train_image(args)
    if args.model in ("digits", "all"):
        train_digits(args)


if __name__ == "__main__":
    main()
