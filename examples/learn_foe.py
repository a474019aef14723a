"""Learn a field of experts for denoising (σ = 25/255) with MAID and compare it with learned TV on held-out images.

Training: grey crops of offline scikit-image pictures with seeded noise; held-out: crops of other pictures. The
FoE has K filters (starting from the learned TV: its two difference filters, plus small 2-D DCT atoms), the
convex smoothed-|·| potential and reflect padding; θ = (filters, log ν), the weights being folded into the filters
(`FieldOfExperts.from_tv`). TV (λ, ν) is learned on the
same data first and is the baseline. Writes out/learn_foe.png (filters, denoised test crop for TV and FoE, upper loss against cost) and,
with --save, imaging/weights/foe_denoise_sigma25.safetensors (loaded by `FieldOfExperts.pretrained("denoise-sigma25")`).
With `--data FOLDER` the training crops are `--crops` random crops of that folder's images (e.g.
`../shared/datasets/train400`, through `imaging.data.PatchDataset`, seeded noise) instead of the offline pictures;
`--filters 48 --filter-size 7` is the size of the published natural-image FoE.
Run: `python examples/learn_foe.py [--size 64] [--filters 24] [--filter-size 5] [--max-iter 100] [--save]
[--data FOLDER --crops 16 --out-file imaging/weights/foe_natural_sigma25.safetensors]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from imaging.data import PatchDataset, noisy_crops, save_weights  # noqa: E402
from imaging.learning import maid, solve_lower  # noqa: E402
from imaging.learning.denoising import DenoisingBilevel  # noqa: E402
from imaging.metrics import psnr  # noqa: E402
from imaging.plotting import save_figure  # noqa: E402
from imaging.priors import FieldOfExperts, SmoothedTV  # noqa: E402

TRAIN = ("camera", "coins", "moon", "astronaut", "brick", "text")
TEST = ("coffee", "chelsea", "rocket")
SIGMA = 25 / 255


def denoise(problem, theta, y):
    return solve_lower(problem, theta, y.clone(), 1e-5).x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="training and test crops: size x size")
    parser.add_argument("--filters", type=int, default=24)
    parser.add_argument("--filter-size", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=100, help="MAID steps for the FoE")
    parser.add_argument("--tv-max-iter", type=int, default=40, help="MAID steps for the TV baseline")
    parser.add_argument("--step0", type=float, default=1e-5, help="MAID's first step size for the FoE")
    parser.add_argument("--out", default="out")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--resume", nargs="?", const="denoise-sigma25", metavar="NAME_OR_FILE",
                        help="start from a shipped FoE (default denoise-sigma25) or a .safetensors file (e.g. a "
                             "--snapshot) instead of the learned TV: how a long MAID run continues")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--data", help="train on random crops of this folder of images (e.g. train400)")
    parser.add_argument("--crops", type=int, default=16, help="how many training crops with --data")
    parser.add_argument("--out-file", default="imaging/weights/foe_denoise_sigma25.safetensors", help="where --save writes")
    parser.add_argument("--atom-scale", type=float, default=0.1,
                        help="the DCT atoms' starting size relative to the TV filters (FieldOfExperts.from_tv)")
    parser.add_argument("--zero-mean", action="store_true", help="zero-mean filters (FieldOfExperts(zero_mean=True))")
    parser.add_argument("--snapshot", help="write θ here every 10 MAID steps (keep what a long run reached)")
    args = parser.parse_args()
    progress = not args.no_progress
    if args.data:
        crops = PatchDataset(args.data, args.size, sigma=SIGMA, augment=False, seed=0)
        x_true = torch.stack([crops[i]["clean"] for i in range(args.crops)]).double()
        y = torch.stack([crops[i]["noisy"] for i in range(args.crops)]).double()
    else:
        x_true, y = noisy_crops(TRAIN, args.size, SIGMA, seed=0)
    test_true, test_y = noisy_crops(TEST, args.size, SIGMA, seed=1)

    tv = DenoisingBilevel(y, x_true, SmoothedTV(0.05, 0.01).double())
    start = time.perf_counter()
    tv_result = maid(tv, tv.theta(), eps0=1e-1, delta0=1e-1, step0=1.0, max_iter=args.tv_max_iter, tol=1e-6)
    tv_test = DenoisingBilevel(test_y, test_true, SmoothedTV().double())
    tv_psnr = psnr(denoise(tv_test, tv_result.theta, test_y).clamp(0, 1), test_true)
    print(f"TV learned in {time.perf_counter() - start:.1f} s: λ = {tv_result.theta[0].exp():.4f}, "
          f"ν = {tv_result.theta[1].exp():.5f}; held-out PSNR {tv_psnr.mean():.2f} dB "
          f"(per image {', '.join(f'{p:.2f}' for p in tv_psnr.tolist())}; noisy "
          f"{psnr(test_y.clamp(0, 1), test_true).mean():.2f} dB)")

    lam, nu = float(tv_result.theta[0].exp()), float(tv_result.theta[1].exp())
    if args.resume:
        model = (FieldOfExperts.pretrained(args.resume) if args.resume in FieldOfExperts.SHIPPED else
                 FieldOfExperts.load(args.resume))
    else:
        model = FieldOfExperts.from_tv(lam, nu, args.filters, args.filter_size, atom_scale=args.atom_scale,
                                       zero_mean=args.zero_mean)
    model.log_weights.requires_grad_(False)  # folded into the filters (see FieldOfExperts.from_tv)
    settings = getattr(model, "settings", {})
    previous_steps = settings.get("max_iter", settings.get("maid_steps", 0))
    problem = DenoisingBilevel(y, x_true, model)
    start = time.perf_counter()

    form = {"potential": model.potential, "padding": model.padding, "zero_mean": model.zero_mean}  # what .load reads

    def snapshot(iteration, state, metrics):
        if args.snapshot and iteration % 10 == 0:
            problem.load(state["theta"])
            save_weights(dict(model.named_parameters()), args.snapshot,  # with MAID's accuracies and step, so that
                         {**form, "maid_steps": iteration, "upper": metrics.get("upper"),  # --resume continues them
                          **{key: metrics.get(key) for key in ("eps", "delta", "step")}})

    # a snapshot's accuracies and step: MAID goes on from them instead of loosening to 0.1 and climbing back
    eps0, delta0, step0 = (settings.get(key) or default for key, default in
                           (("eps", 1e-1), ("delta", 1e-1), ("step", args.step0)))
    result = maid(problem, problem.theta(), eps0=eps0, delta0=delta0, step0=step0, max_iter=args.max_iter, tol=1e-6,
                  progress=progress, callback=snapshot)
    seconds = time.perf_counter() - start
    problem.load(result.theta)
    foe_test = DenoisingBilevel(test_y, test_true, model)
    denoised = denoise(foe_test, result.theta, test_y)
    foe_psnr = psnr(denoised.clamp(0, 1), test_true)
    print(f"FoE ({args.filters} filters {args.filter_size}x{args.filter_size}) learned in {seconds:.1f} s, "
          f"{len(result.history['upper']) - 1} MAID steps, {int(result.history['cost'][-1])} LL+CG iterations: "
          f"upper loss {result.history['upper'][0]:.4f} -> {result.history['upper'][-1]:.4f}; held-out PSNR "
          f"{foe_psnr.mean():.2f} dB (per image {', '.join(f'{p:.2f}' for p in foe_psnr.tolist())}), "
          f"{foe_psnr.mean() - tv_psnr.mean():+.2f} dB over learned TV")

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), layout="constrained")
    filters = model.effective_filters().detach()
    grid, k = int(len(filters) ** 0.5 + 0.999), args.filter_size
    tiles = torch.zeros(grid * (k + 1), grid * (k + 1), dtype=filters.dtype)
    for i, f in enumerate(filters):
        r, c = divmod(i, grid)
        tiles[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = f / f.abs().max()
    axes[0].imshow(tiles.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0].set_title("learned filters")
    tv_x = denoise(tv_test, tv_result.theta, test_y)
    for ax, image, label in ((axes[1], tv_x[0, 0], f"learned TV ({tv_psnr[0]:.2f} dB)"),
                             (axes[2], denoised[0, 0], f"learned FoE ({foe_psnr[0]:.2f} dB)")):
        ax.imshow(image.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label)
    for ax in axes[:3]:
        ax.axis("off")
    axes[3].semilogx(result.history["cost"], result.history["upper"])
    axes[3].set_xlabel("lower-level + CG iterations")
    axes[3].set_ylabel("upper loss")
    axes[3].set_title("MAID")
    print(f"-> {save_figure(fig, f'{args.out}/learn_foe.png')}")
    plt.close(fig)
    if args.save:
        settings = {"train": args.data or TRAIN, "crops": len(x_true), "crop": args.size, "sigma": SIGMA, "filters": args.filters,
                    "filter_size": args.filter_size, "atom_scale": args.atom_scale, "max_iter": previous_steps + args.max_iter, "step0": args.step0,
                    **form, "heldout_psnr": float(foe_psnr.mean()), "tv_heldout_psnr": float(tv_psnr.mean()),
                    "script": "examples/learn_foe.py --save"}
        save_weights(dict(model.named_parameters()), args.out_file, settings)
        print(f"-> {args.out_file}")


if __name__ == "__main__":
    main()
