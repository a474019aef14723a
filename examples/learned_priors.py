"""The learned priors on a picture they never saw: RED-Diff, FLAIR and PnP-ADMM with the natural-image priors
next to TV, on deblurring and 50 % random inpainting (noise σ = 0.01).

Priors: `DiffusionPrior.pretrained("natural")` (RED-Diff; FLAIR over it read as a flow),
`pretrained_lpn("natural")` and `UnrolledFoE.pretrained("natural-sigma25-student")` (PnP-ADMM; ρ from the noise
level for the FoE), trained on train400 by scripts/train_priors.py. The picture: a grey crop of
scikit-image's "coffee" (not in train400). Every method has one setting for both tasks (SETTINGS, the ones
benchmarks/inverse_natural.py reports); TV gets its best λ of a grid measured against the truth (an oracle, so an
upper bound for TV). Writes out/learned_priors.png and prints PSNR / SSIM / seconds.
Run: `python examples/learned_priors.py [--size 128] [--steps 100]` (3.7 minutes on the 2-core machine beside a
training; measured 2026-12-07).
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
from imaging.data import load_image  # noqa: E402
from imaging.metrics import oracle, psnr, ssim  # noqa: E402
from imaging.operators import Blur, GaussianNoise, Inpainting, gaussian_kernel  # noqa: E402
from imaging.plotting import save_figure, to_display  # noqa: E402
from imaging.priors import DiffusionPrior, FlowPrior, UnrolledFoE, pretrained_lpn  # noqa: E402
from imaging.solvers import Flair, PnPADMM, RedDiff  # noqa: E402

NOISE = 0.01
SETTINGS = {"RED-Diff": {"lr": 0.5}, "FLAIR": {"lam": 0.1}, "PnP-LPN": {"rho": 0.005}, "PnP-FoE": {"sigma": 0.03}}
TV_GRID = (2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    truth = load_image("coffee", size=int(1.5 * args.size), channels=1).float()
    start = (truth.shape[-1] - args.size) // 2
    truth = truth[..., start:start + args.size, start:start + args.size].contiguous()
    ddpm = DiffusionPrior.pretrained("natural")
    flow, lpn = FlowPrior.from_diffusion(ddpm), pretrained_lpn("natural")
    foe = UnrolledFoE.pretrained("natural-sigma25-student")
    mask = (torch.rand(truth.shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    tasks = {"deblurring": Blur(gaussian_kernel(1.6), mode="reflect"), "inpainting 50 %": Inpainting(mask)}
    solvers = {
        "RED-Diff": lambda A, y: RedDiff(A, y, ddpm, steps=args.steps, noise_level=NOISE, progress=True,
                                          **SETTINGS["RED-Diff"]).run(),
        "FLAIR": lambda A, y: Flair(A, y, flow, steps=args.steps, noise_level=NOISE, progress=True,
                                    **SETTINGS["FLAIR"]).run(),
        "PnP-LPN": lambda A, y: PnPADMM(A, y, lpn.prox, box=(0.0, 1.0), max_iter=args.steps, progress=True,
                                        **SETTINGS["PnP-LPN"]).run(),
        "PnP-FoE": lambda A, y: PnPADMM(A, y, lambda v: foe(v, SETTINGS["PnP-FoE"]["sigma"]), box=(0.0, 1.0),
                                        max_iter=args.steps, noise_level=NOISE, progress=True).run()}
    figure, axes = plt.subplots(len(tasks), 7, figsize=(18, 2.9 * len(tasks)), layout="constrained", squeeze=False)
    print(f"coffee {args.size}², noise σ = {NOISE}; PSNR, SSIM and time of each method")
    for row, (task, A) in enumerate(tasks.items()):
        y = GaussianNoise(NOISE)(A(truth), generator=torch.Generator().manual_seed(0))
        results = {}
        began = time.perf_counter()
        with warnings.catch_warnings():  # a fixed budget of 500 iterations per λ
            warnings.simplefilter("ignore", imaging.ConvergenceWarning)
            x, lam, _ = oracle(lambda lam: imaging.tv_reconstruct(A, y, lam, box=(0.0, 1.0), tol=1e-4,
                                                                  max_iter=500), TV_GRID, truth)
        results[f"TV (oracle λ={lam:g})"] = (x, time.perf_counter() - began)
        for name, solve in solvers.items():
            began = time.perf_counter()
            results[name] = (solve(A, y).x, time.perf_counter() - began)
        panels = [(truth, "truth"), (y if y.shape == truth.shape else A.adjoint(y), "measurement")]
        for name, (x, seconds) in results.items():
            x = x.clamp(0, 1)
            value = float(psnr(x, truth))
            print(f"{task:<16} {name:<22} {value:6.2f} dB  SSIM {float(ssim(x, truth)):.3f}  {seconds:6.1f} s")
            panels.append((x, f"{name.split(' (')[0]} {value:.2f} dB"))
        for axis, (image, title) in zip(axes[row], panels):
            axis.imshow(to_display(image[0]), cmap="gray", vmin=0, vmax=1)
            axis.set_title(f"{task}: {title}" if title in ("truth",) else title, fontsize=9)
            axis.axis("off")
    print(f"-> {save_figure(figure, f'{args.out}/learned_priors.png')}")


if __name__ == "__main__":
    main()
