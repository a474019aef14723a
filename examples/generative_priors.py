"""RED-Diff and FLAIR with the shipped face priors on held-out faces: inpainting, 4× super-resolution, deblurring.

The priors are the small models in imaging/weights/ (a pixel-space DDPM and a latent rectified flow with its autoencoder,
trained on faces 0–79 of scikit-image's offline LFW subset by examples/train_ddpm_faces.py and
examples/train_flow_faces.py); the test faces 80–99 were never used in training. For each task the script prints
mean PSNR/SSIM over the test faces for the pseudo-inverse, TV (the best λ of a grid, chosen on the test faces
themselves: an upper bound for TV), RED-Diff, FLAIR with the latent flow, and FLAIR with the DDPM read as a
pixel-space flow (`FlowPrior.from_diffusion`, "FLAIR-DDPM"), and writes out/generative_priors.png (one face per task).
With --ablations it also runs FLAIR without trajectory adjustment, with a constant weight and without decoupled
data steps, and RED-Diff with other SNR weightings.
Run: `python examples/generative_priors.py [--faces 20] [--tasks inpainting,sr4,deblur] [--ablations]`.
"""
from __future__ import annotations

import argparse
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import imaging  # noqa: E402
from imaging.data import load_faces  # noqa: E402
from imaging.metrics import oracle, psnr, ssim  # noqa: E402
from imaging.operators import Blur, Downsampling, GaussianNoise, Inpainting, gaussian_kernel  # noqa: E402
from imaging.plotting import save_figure, to_display  # noqa: E402
from imaging.priors import DiffusionPrior, FlowPrior  # noqa: E402
from imaging.solvers import Flair, RedDiff  # noqa: E402
from imaging.solvers.red_diff import constant_weighting, sqrt_weighting  # noqa: E402

NOISE = 0.01
TV_WEIGHTS = (3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3e-2)


def operator(task: str, size: int):
    """The forward model of a task on size×size images."""
    if task == "inpainting":
        mask = torch.ones(1, 1, size, size)
        mask[..., size * 5 // 16: size * 11 // 16, size // 4: size * 3 // 4] = 0  # a box over eyes and nose
        return Inpainting(mask)
    if task == "sr4":
        return Downsampling(4, "box")
    if task == "deblur":
        return Blur(gaussian_kernel(1.5), mode="reflect")
    raise ValueError(f"unknown task {task!r}")


# Per-task solver settings (tuned on training faces, see the README's generative-priors section).
RED_DIFF = {"inpainting": dict(lr=0.1, lam=0.25), "sr4": dict(lr=0.1, lam=0.25), "deblur": dict(lr=0.1, lam=0.05)}
# FLAIR's data steps are Polyak steps (no step size to tune); decoder_error = the autoencoder's RMS error on the
# training faces (31.2 dB), for the pixel-space refinement of inpainting and deblurring.
FLAIR = {"inpainting": dict(lam=0.25, decoder_error=0.028), "sr4": dict(lam=0.1),
         "deblur": dict(lam=0.25, decoder_error=0.028)}
# FLAIR over the DDPM as a flow (constant weight, `steps` prior steps): ρ per task, chosen on training faces.
FLAIR_DDPM = {"inpainting": dict(lam=0.1), "sr4": dict(lam=0.05),
              "deblur": dict(lam=0.05)}


def best_tv(op, y, truth):
    """TV reconstruction with the λ of TV_WEIGHTS that gives the best mean PSNR (box [0, 1]; a fixed budget of 500
    iterations per λ, so its ConvergenceWarnings are silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", imaging.ConvergenceWarning)
        x, lam, _ = oracle(lambda lam: imaging.tv_reconstruct(op, y, lam, box=(0.0, 1.0), tol=1e-4,
                                                              max_iter=500), TV_WEIGHTS, truth)
    return x, lam


def scores(x, truth):
    x = x.clamp(0, 1)
    return float(psnr(x, truth).mean()), float(ssim(x, truth).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=20, help="how many test faces (at most 20)")
    parser.add_argument("--tasks", default="inpainting,sr4,deblur")
    parser.add_argument("--steps", type=int, default=100, help="RED-Diff and FLAIR-DDPM steps (FLAIR with the latent flow uses half)")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--out", default="out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    truth = load_faces("test")[: args.faces]
    ddpm = DiffusionPrior.pretrained("faces")
    flow = FlowPrior.pretrained("faces")
    flow_ddpm = FlowPrior.from_diffusion(ddpm)
    tasks = args.tasks.split(",")
    fig, axes = plt.subplots(len(tasks), 7, figsize=(15, 2.4 * len(tasks)), layout="constrained", squeeze=False)
    print(f"{len(truth)} held-out faces {tuple(truth.shape[-2:])}, noise σ = {NOISE}")
    print(f"{'task':<11} {'method':<26} {'PSNR dB':>8} {'SSIM':>6} {'data RMS':>9} {'time s':>7}")
    for row, task in enumerate(tasks):
        op = operator(task, truth.shape[-1])
        y = GaussianNoise(NOISE)(op(truth), generator=torch.Generator().manual_seed(args.seed))
        results = {}
        start = time.perf_counter()
        results["pseudo-inverse"] = (op.pinv(y).clamp(0, 1), time.perf_counter() - start)
        start = time.perf_counter()
        x_tv, lam = best_tv(op, y, truth)
        results[f"TV (best λ = {lam:g})"] = (x_tv, time.perf_counter() - start)
        runs = {"RED-Diff": lambda **o: RedDiff(op, y, ddpm, steps=args.steps, seed=args.seed,
                                                **{**RED_DIFF[task], **o}).run(),
                "FLAIR": lambda **o: Flair(op, y, flow, steps=args.steps // 2, noise_level=NOISE, seed=args.seed,
                                           **{**FLAIR[task], **o}).run(),
                "FLAIR-DDPM": lambda **o: Flair(op, y, flow_ddpm, steps=args.steps, noise_level=NOISE, seed=args.seed,
                                                **{**FLAIR_DDPM[task], **o}).run()}
        variants = [("RED-Diff", {}), ("FLAIR", {}), ("FLAIR-DDPM", {})]
        if args.ablations:
            variants += [("RED-Diff", {"weighting": sqrt_weighting}), ("RED-Diff", {"weighting": constant_weighting}),
                         ("FLAIR", {"trajectory_adjustment": False}), ("FLAIR", {"weights": torch.ones(1)}),
                         ("FLAIR", {"decoupled": False})]
        for method, options in variants:
            start = time.perf_counter()
            result = runs[method](**options)
            label = method + ("" if not options else " " + ", ".join(
                f"{k}={getattr(v, '__name__', 'constant' if isinstance(v, torch.Tensor) else v)}"
                for k, v in options.items()))
            results[label] = (result.x, time.perf_counter() - start)
        for label, (x, seconds) in results.items():
            p, s = scores(x, truth)
            rms = float(((op(x) - y) ** 2).mean().sqrt())
            print(f"{task:<11} {label:<26} {p:8.2f} {s:6.3f} {rms:9.4f} {seconds:7.1f}")
        panels = [(truth[0], "truth"), (y[0], f"{task}: y"),
                  *[(x[0], f"{label.split(' (')[0]} {scores(x, truth)[0]:.1f} dB")
                    for label, (x, _) in list(results.items())[:5]]]
        for ax, (image, title) in zip(axes[row], panels):
            ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    print(f"-> {save_figure(fig, f'{args.out}/generative_priors.png')}")
    plt.close(fig)


if __name__ == "__main__":
    main()
