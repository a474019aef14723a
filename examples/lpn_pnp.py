"""Plug-and-play reconstruction with the shipped learned proximal network, next to TV with its best weight.

Held-out grey pictures (coffee, chelsea, rocket: never seen in training) are blurred (Gaussian σ = 1.5, noise 0.01)
or measured by compressed sensing (random signs + subsampled DCT, 30 % of the coefficients, noise 0.01), then
reconstructed by
- TV: `imaging.tv_reconstruct` (box [0, 1]) with the best λ of a grid (per image: an oracle choice),
- PnP-ADMM with the shipped LPN (`pretrained_lpn("image")`) as the prox, best ρ of a small grid, and PnP-PGD (step
  1/‖A‖²) with the relaxed LPN v + s (f_θ(v) − v) (still exactly a prox), best s of a small grid.
Writes out/lpn_pnp.png (truth, measurement, TV, PnP-ADMM, PnP-PGD with PSNR) and prints the PSNRs.
Run: `python examples/lpn_pnp.py [--problem deblur|cs|all] [--size 128] [--max-iter 60] [--model PATH] [--out out]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import imaging  # noqa: E402
from imaging.data import load_image  # noqa: E402
from imaging.metrics import psnr  # noqa: E402
from imaging.operators import Blur, StructuredCompressedSensing, gaussian_kernel  # noqa: E402
from imaging.plotting import save_figure, to_display  # noqa: E402
from imaging.priors.lpn import load_lpn, pretrained_lpn  # noqa: E402
from imaging.solvers.pnp import PnPADMM, PnPPGD, relax  # noqa: E402

HELD_OUT = ("coffee", "chelsea", "rocket")
TV_WEIGHTS = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
ADMM_RHO = {"deblur": (0.01, 0.02, 0.05), "cs": (0.02, 0.05, 0.1)}
PGD_STRENGTH = (0.25, 0.5, 1.0)


def make_problem(name: str, truth: torch.Tensor, seed: int = 0):
    """(operator, noisy measurements) for 'deblur' or 'cs'."""
    if name == "deblur":
        op = Blur(gaussian_kernel(1.5), mode="reflect")
    else:
        op = StructuredCompressedSensing(int(0.3 * truth[0].numel()), tuple(truth.shape[1:]), seed=seed)
    y = op(truth)
    return op, y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)


def best_of(runs: dict, truth: torch.Tensor) -> tuple:
    """(parameter, estimate, PSNR) with the highest PSNR among {parameter: estimate}."""
    scored = [(p, x, float(psnr(x.clamp(0, 1), truth))) for p, x in runs.items()]
    return max(scored, key=lambda item: item[2])


def reconstruct(name: str, truth: torch.Tensor, model, max_iter: int) -> dict:
    op, y = make_problem(name, truth)
    start = time.perf_counter()
    tv = best_of({lam: imaging.tv_reconstruct(op, y, lam, box=(0.0, 1.0), tol=1e-5, max_iter=500).x
                  for lam in TV_WEIGHTS}, truth)
    t_tv = time.perf_counter() - start
    start = time.perf_counter()
    x0 = op.adjoint(y).clamp(0, 1)
    admm_runs, histories = {}, {}
    for rho in ADMM_RHO[name]:
        result = PnPADMM(op, y, model.prox, rho=rho, box=(0.0, 1.0), max_iter=max_iter, tol=1e-4).run(x0)
        admm_runs[rho], histories[rho] = result.x, result
    admm = best_of(admm_runs, truth)
    t_admm = time.perf_counter() - start
    pgd = best_of({s: PnPPGD(op, y, relax(model.prox, s), box=(0.0, 1.0), max_iter=max_iter, tol=1e-4).run(x0).x
                   for s in PGD_STRENGTH}, truth)
    measured = y if name == "deblur" else x0
    return {"truth": truth, "measured": measured, "tv": tv, "admm": admm, "pgd": pgd, "admm_result": histories[admm[0]],
            "t_tv": t_tv, "t_admm": t_admm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="all", choices=("deblur", "cs", "all"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--max-iter", type=int, default=60, help="PnP iteration cap")
    parser.add_argument("--images", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--model", default="", help="an LPN checkpoint (default: the shipped imaging/weights/lpn_image)")
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_lpn(args.model) if args.model else pretrained_lpn("image", dtype=torch.float32)
    problems = ("deblur", "cs") if args.problem == "all" else (args.problem,)
    rows = []
    print(f"{'problem':7s} {'image':8s} {'TV PSNR':>8s} {'(λ)':>8s} {'ADMM PSNR':>10s} {'(ρ)':>6s} {'PGD PSNR':>9s} "
          f"{'(s)':>5s} {'ADMM it':>8s} {'residual':>9s}")
    for problem in problems:
        for image_name in args.images:
            truth = load_image(image_name, size=args.size, channels=1)
            r = reconstruct(problem, truth, model, args.max_iter)
            rows.append((problem, image_name, r))
            history = r["admm_result"].history["residual"]
            print(f"{problem:7s} {image_name:8s} {r['tv'][2]:8.2f} {r['tv'][0]:8.0e} {r['admm'][2]:10.2f} "
                  f"{r['admm'][0]:6.2f} {r['pgd'][2]:9.2f} {r['pgd'][0]:5.2f} {r['admm_result'].iterations:8d} "
                  f"{history[-1]:9.1e}")
    fig, axes = plt.subplots(len(rows), 5, figsize=(13, 2.8 * len(rows)), layout="constrained", squeeze=False)
    for ax_row, (problem, image_name, r) in zip(axes, rows):
        panels = [(r["truth"], f"{image_name} (held out)"),
                  (r["measured"], "blurred, noisy" if problem == "deblur" else "A^H y (CS 30 %)"),
                  (r["tv"][1], f"TV λ={r['tv'][0]:.0e}: {r['tv'][2]:.2f} dB"),
                  (r["admm"][1], f"PnP-ADMM + LPN ρ={r['admm'][0]}: {r['admm'][2]:.2f} dB"),
                  (r["pgd"][1], f"PnP-PGD + relaxed LPN s={r['pgd'][0]}: {r['pgd'][2]:.2f} dB")]
        for ax, (image, label) in zip(ax_row, panels):
            ax.imshow(to_display(image[0]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle("PnP with a learned proximal network vs TV (best λ): deblurring (σ_b 1.5) and CS (30 %), noise 0.01",
                 fontsize=10)
    print(f"PSNR table above; figure -> {save_figure(fig, f'{args.out}/lpn_pnp.png')}")
    plt.close(fig)


if __name__ == "__main__":
    main()
