"""MAID against HOAG for learning a small field of experts: upper loss against lower-level + CG iterations.

Denoising at σ = 25/255 on four offline 48×48 grey crops; a field of experts of 8 filters 5×5 (smoothed-|·|
potential) that starts as the TV with λ = 0.05, ν = 0.01 plus DCT atoms of weight λ/1000, with learnable weights. Runs MAID (adaptive accuracy),
MAID with a fixed tight accuracy, and HOAG with geometric and quadratic accuracy schedules, for the same number of
outer steps, and writes out/maid_vs_hoag.png. Run: `python examples/maid_vs_hoag.py [--steps 40]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from imaging.data import noisy_crops  # noqa: E402
from imaging.learning import hoag, maid  # noqa: E402
from imaging.learning.denoising import DenoisingBilevel  # noqa: E402
from imaging.plotting import save_figure  # noqa: E402
from imaging.priors import FieldOfExperts  # noqa: E402

TRAIN = ("camera", "coins", "moon", "brick")


def tv_like_experts(weight: float, nu: float, count: int) -> FieldOfExperts:
    """The TV's two difference filters (weight λ) plus DCT atoms at weight λ/1000, all weights learnable: the
    log-weight parametrisation whose hypergradients span orders of magnitude (a hard problem for fixed steps)."""
    tv = FieldOfExperts.from_tv(weight, nu, count, 5, atom_scale=1.0)
    filters = tv.filters.detach() / weight
    weights = torch.full((count,), weight * 1e-3, dtype=filters.dtype)
    weights[:2] = weight
    return FieldOfExperts(filters, weights, nu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=40, help="outer steps of every method")
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--out", default="out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    x_true, y = noisy_crops(TRAIN, args.size, 25 / 255, seed=0)

    def problem() -> DenoisingBilevel:
        return DenoisingBilevel(y, x_true, tv_like_experts(0.05, 0.01, args.filters))

    progress = not args.no_progress
    methods = {
        "MAID": lambda p: maid(p, p.theta(), eps0=1e-1, delta0=1e-1, step0=1e-2, max_iter=args.steps, tol=1e-8,
                               progress=progress),
        "MAID, fixed ε = δ = 1e-5": lambda p: maid(p, p.theta(), eps0=1e-5, delta0=1e-5, relax=1.0, step0=1e-2,
                                                   max_iter=args.steps, tol=1e-8, progress=progress),
        "HOAG, geometric": lambda p: hoag(p, p.theta(), eps0=1e-1, schedule="geometric", step0=1e-2,
                                          max_iter=args.steps, progress=progress),
        "HOAG, quadratic": lambda p: hoag(p, p.theta(), eps0=1e-1, schedule="quadratic", step0=1e-2,
                                          max_iter=args.steps, progress=progress),
    }
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    first = None
    print(f"{'method':26s} {'first loss':>11s} {'last loss':>11s} {'best loss':>11s} {'LL+CG it':>9s} {'time s':>7s}")
    for name, run in methods.items():
        start = time.perf_counter()
        result = run(problem())
        seconds = time.perf_counter() - start
        upper, cost = result.history["upper"], result.history["cost"]
        print(f"{name:26s} {upper[0]:11.5f} {upper[-1]:11.5f} {min(upper):11.5f} {int(cost[-1]):9d} {seconds:7.1f}")
        ax.plot(cost, upper, marker=".", ms=3, label=name)
        first = upper[0] if first is None else first
    ax.set_xscale("log")
    ax.set_ylim(None, 1.02 * first)  # HOAG has no line search: its overshoots leave the plot
    ax.set_xlabel("lower-level + CG iterations")
    ax.set_ylabel("upper loss (mean ½‖x̂ − x‖²)")
    ax.set_title(f"learning a {args.filters}-filter field of experts, σ = 25/255, {len(TRAIN)} crops "
                 f"{args.size}×{args.size}")
    ax.legend(fontsize=8)
    print(f"-> {save_figure(fig, f'{args.out}/maid_vs_hoag.png')}")
    plt.close(fig)


if __name__ == "__main__":
    main()
