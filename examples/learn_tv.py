"""Learn the TV weight λ and smoothing ν for denoising (σ = 0.1) with MAID, and check them against a grid search.

Training set: 64×64 grey crops of four scikit-image pictures (offline), noisy copies with σ = 0.1 (seeded); held-out
test crops of two other pictures. The lower level is ½‖x − y‖² + λ Σ_k sqrt((D_k x)² + ν²) per image, the upper
loss the mean ½‖x̂ − x_true‖². Compared: MAID (adaptive accuracy), MAID with a fixed tight accuracy (ε = δ = 1e-6),
HOAG with a geometric accuracy schedule, and a grid search of the same upper loss over (log λ, log ν).
Writes out/learn_tv.png (loss landscape with the MAID path; upper loss against lower-level + CG iterations) and,
with --save, the learned parameters to imaging/weights/tv_denoise_sigma0.1.safetensors (with the settings as metadata).
Run: `python examples/learn_tv.py [--max-iter 60] [--grid 25 9] [--save]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from imaging.data import noisy_crops, save_weights  # noqa: E402
from imaging.learning import hoag, maid, solve_lower  # noqa: E402
from imaging.learning.denoising import DenoisingBilevel, grid_search, upper_loss_at  # noqa: E402
from imaging.priors import SmoothedTV  # noqa: E402
from imaging.metrics import psnr  # noqa: E402
from imaging.plotting import save_figure  # noqa: E402

TRAIN = ("camera", "coins", "moon", "astronaut")
TEST = ("coffee", "chelsea")
SIGMA = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=60, help="MAID / HOAG accepted steps")
    parser.add_argument("--grid", type=int, nargs=2, default=(25, 9), metavar=("N_LAMBDA", "N_NU"))
    parser.add_argument("--out", default="out")
    parser.add_argument("--save", action="store_true", help="write imaging/weights/tv_denoise_sigma0.1.safetensors")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    progress = not args.no_progress
    x_true, y = noisy_crops(TRAIN, args.size, SIGMA, seed=0)
    problem = DenoisingBilevel(y, x_true, SmoothedTV(1e-2, 1e-2).double())
    theta0 = problem.theta()
    print(f"training: {len(TRAIN)} crops {args.size}x{args.size} ({', '.join(TRAIN)}), σ = {SIGMA}; "
          f"θ0 = (log λ, log ν) = ({theta0[0]:.2f}, {theta0[1]:.2f})")

    runs = {}
    for name, solve in (
            ("MAID", lambda: maid(problem, theta0, eps0=1e-1, delta0=1e-1, step0=1.0, max_iter=args.max_iter,
                                  tol=1e-6, progress=progress)),
            ("MAID, fixed ε = δ = 1e-6", lambda: maid(problem, theta0, eps0=1e-6, delta0=1e-6, relax=1.0, step0=1.0,
                                                       max_iter=args.max_iter, tol=1e-6, progress=progress)),
            ("HOAG (geometric)", lambda: hoag(problem, theta0, eps0=1e-1, step0=0.1, max_iter=args.max_iter,
                                              progress=progress))):
        start = time.perf_counter()
        result = solve()
        runs[name] = (result, time.perf_counter() - start)

    log_lambda = torch.linspace(-5.5, -1.5, args.grid[0], dtype=torch.float64)
    log_nu = torch.linspace(-7.0, -2.0, args.grid[1], dtype=torch.float64)
    start = time.perf_counter()
    losses, grid_cost = grid_search(problem, [log_lambda, log_nu])
    grid_seconds = time.perf_counter() - start
    best = divmod(int(losses.argmin()), len(log_nu))
    grid_theta = torch.stack([log_lambda[best[0]], log_nu[best[1]]])
    grid_loss = float(losses.min())

    learned = runs["MAID"][0].theta
    maid_loss, _ = upper_loss_at(problem, learned)
    print(f"\n{'method':26s} {'λ':>9s} {'ν':>9s} {'upper loss':>11s} {'LL+CG it':>9s} {'time s':>7s}")
    for name, (result, seconds) in runs.items():
        loss, _ = upper_loss_at(problem, result.theta)
        print(f"{name:26s} {result.theta[0].exp():9.4f} {result.theta[1].exp():9.5f} {loss:11.5f} "
              f"{int(result.history['cost'][-1]):9d} {seconds:7.1f}")
    print(f"{'grid search ' + str(tuple(args.grid)):26s} {grid_theta[0].exp():9.4f} {grid_theta[1].exp():9.5f} "
          f"{grid_loss:11.5f} {grid_cost:9d} {grid_seconds:7.1f}")
    cell = (log_lambda[1] - log_lambda[0]).item()
    print(f"MAID vs grid: |Δ log λ| = {abs(learned[0] - grid_theta[0]):.3f} (grid cell {cell:.3f}); upper loss "
          f"{100 * (maid_loss - grid_loss) / grid_loss:+.2f} % of the grid minimum")
    for name, (result, _) in runs.items():
        target = 1.01 * grid_loss
        reached = next((c for u, c in zip(result.history["upper"], result.history["cost"]) if u <= target), None)
        print(f"  {name}: LL+CG iterations to reach 1 % of the grid minimum: {reached}")

    # held-out images
    test_true, test_y = noisy_crops(TEST, args.size, SIGMA, seed=1)
    test_problem = DenoisingBilevel(test_y, test_true, SmoothedTV().double())
    for name, theta in (("MAID", learned), ("grid", grid_theta)):
        x = solve_lower(test_problem, theta.to(test_y.dtype), test_y.clone(), 1e-6).x
        print(f"held-out PSNR ({', '.join(TEST)}), {name} parameters: {psnr(x.clamp(0, 1), test_true).mean():.2f} dB "
              f"(noisy: {psnr(test_y.clamp(0, 1), test_true).mean():.2f} dB)")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    shown = ax.pcolormesh(log_lambda.numpy(), log_nu.numpy(), losses.T.log10().numpy(), cmap="viridis",
                          shading="nearest")
    fig.colorbar(shown, ax=ax, label="log10 upper loss")
    path = torch.stack(runs["MAID"][0].thetas)
    ax.plot(path[:, 0], path[:, 1], "w.-", lw=1, ms=3, label="MAID path")
    ax.plot(*grid_theta, "r+", ms=14, mew=2, label="grid minimum")
    ax.set_xlabel("log λ")
    ax.set_ylabel("log ν")
    ax.set_title("upper loss over (log λ, log ν), training crops")
    ax.legend(fontsize=8, loc="upper left")
    for name, (result, _) in runs.items():
        ax2.semilogy(result.history["cost"], [u - 0.999 * grid_loss for u in result.history["upper"]], label=name)
    ax2.set_xscale("log")
    ax2.set_xlabel("lower-level + CG iterations")
    ax2.set_ylabel("upper loss − 0.999 × grid minimum")
    ax2.set_title("cost of learning")
    ax2.legend(fontsize=8)
    print(f"-> {save_figure(fig, f'{args.out}/learn_tv.png')}")
    plt.close(fig)
    if args.save:
        settings = {"train": TRAIN, "size": args.size, "sigma": SIGMA, "seed": 0, "method": "maid",
                    "eps0": 0.1, "delta0": 0.1, "step0": 1.0, "max_iter": args.max_iter,
                    "upper_loss": maid_loss, "script": "examples/learn_tv.py --save"}
        save_weights({"log_weight": learned[0:1], "log_smoothing": learned[1:2]},
                     "imaging/weights/tv_denoise_sigma0.1.safetensors", settings)
        print("-> imaging/weights/tv_denoise_sigma0.1.safetensors")


if __name__ == "__main__":
    main()
