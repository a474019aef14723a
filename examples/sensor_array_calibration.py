"""Blind gain calibration of a sensor array: recover an image and the unknown pixel gains from random snapshots.

A size×size sensor array with vignetting × PRNU gains d (mean 1) records p snapshots y_l = diag(d) A_l x + noise
of the Shepp–Logan phantom x through known random sensing matrices A_l (i.i.d. Gaussian, "dense", or random-sign
DCT masks, "dct-mask"; `imaging.calibration.simulate`). Ignoring the gains leaves a haze over the reconstruction;
the blind calibration methods of `imaging.calibration` (projected gradient descent with exact line searches and
with a fixed step, alternating minimisation, Ling–Strohmer least squares and the spectral method) recover both.

Figure 1, out/sensor_array_calibration.png: truth, true gains, uncalibrated least squares, back projection ξ₀;
calibrated image (PGD), estimated gains, estimated vs true gains, convergence (relative errors against passes over
the sensing matrices). With --phase-transition, figure 2, out/sensor_array_phase_transition.png: empirical success
rates over (m, p) at n = 32 for PGD, least squares and the spectral method, with the counting bound mp = m + n − 1.
Run: `python examples/sensor_array_calibration.py [--size 64] [--snapshots 10] [--snr 30|inf] [--op dense|dct-mask]
[--phase-transition [--trials 10]] [--gain-subspace] [--device cuda]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from imaging.calibration import (DenseGainSensing, alternating, back_projection, least_squares, pgd,  # noqa: E402
                                 relative_error, spectral, uncalibrated)
from imaging.calibration.simulate import (SensorArrayProblem, sensor_array_problem, smooth_gain_basis,  # noqa: E402
                                          vignetting_gains)
from imaging.metrics import psnr  # noqa: E402
from imaging.plotting import save_figure  # noqa: E402

DENSE_FLOAT64_LIMIT = 2**30  # bytes: larger dense float64 matrices are stored in float32 (--dtype auto)
ERROR_SCALE = 0.05  # colour scale of the |error| insets of figure 1


# ----------------------------------------------------------------------------------------------------------------
# Figure 1: one sensor-array problem, every method
# ----------------------------------------------------------------------------------------------------------------

def run_methods(problem: SensorArrayProblem, max_iter: int, progress: bool) -> dict[str, dict]:
    """Every method on the problem: estimates, final errors, passes over the matrices, history and time."""
    sensing, y = problem.sensing, problem.y
    truth = {"x_true": problem.x, "gains_true": problem.gains}
    methods = {
        "PGD (line search)": lambda: pgd(sensing, y, max_iter=max_iter, progress=progress, **truth),
        "PGD (fixed μ=0.5)": lambda: pgd(sensing, y, max_iter=max_iter, line_search=False, step=0.5,
                                         progress=progress, **truth),
        "alternating": lambda: alternating(sensing, y, max_iter=max_iter, progress=progress, **truth),
        "least squares": lambda: least_squares(sensing, y, progress=progress, **truth),
        "spectral": lambda: spectral(sensing, y, progress=progress, **truth),
        "uncalibrated": lambda: uncalibrated(sensing, y, progress=progress, **truth),
    }
    runs = {}
    start = time.perf_counter()
    with torch.no_grad():
        xi0 = back_projection(sensing, y)
    runs["back projection ξ₀"] = {"x": xi0[0], "gains": torch.ones_like(problem.gains[0]), "iterations": 0,
                                  "passes": 1, "seconds": time.perf_counter() - start, "history": None}
    for name, solve in methods.items():
        start = time.perf_counter()
        result = solve()
        seconds = time.perf_counter() - start
        runs[name] = {"x": result.x[0], "gains": result.gains[0], "iterations": result.iterations,
                      "passes": int(result.history["passes"][-1, 0]), "seconds": seconds,
                      "history": {k: v[:, 0] for k, v in result.history.items()}}
    for run in runs.values():
        run["error_x"] = relative_error(run["x"][None], problem.x).item()
        run["error_gains"] = relative_error(run["gains"][None], problem.gains).item()
        run["psnr"] = image_psnr(problem, run["x"])
    return runs


def image_psnr(problem: SensorArrayProblem, x: torch.Tensor) -> float:
    """PSNR in dB of a flattened estimate against the phantom (values in [0, 1], data range 1)."""
    as_image = lambda t: t.reshape(1, 1, *problem.shape).double().cpu()  # noqa: E731
    return psnr(as_image(x), as_image(problem.x)).item()


def print_table(runs: dict[str, dict]) -> None:
    print(f"{'method':20s} {'rel-err x':>10s} {'rel-err d':>10s} {'PSNR dB':>8s} {'iters':>6s} {'passes':>7s} "
          f"{'time s':>7s}")
    for name, run in runs.items():
        gains = "-" if name in ("back projection ξ₀", "uncalibrated") else f"{run['error_gains']:.2e}"
        print(f"{name:20s} {run['error_x']:10.2e} {gains:>10s} {run['psnr']:8.2f} {run['iterations']:6d} "
              f"{run['passes']:7d} {run['seconds']:7.2f}")


def figure_calibration(problem: SensorArrayProblem, runs: dict[str, dict], title: str, path: str) -> str:
    H, W = problem.shape
    image = lambda t: t.reshape(H, W).double().cpu().numpy()  # noqa: E731
    true_gains = image(problem.gains[0])
    best = runs["PGD (line search)"]
    gain_range = (min(true_gains.min(), image(best["gains"]).min()), max(true_gains.max(), image(best["gains"]).max()))
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), layout="constrained")

    def show_image(ax, t, label, error_inset=True):
        ax.imshow(image(t), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
        if error_inset:  # |estimate − truth| in the lower-right corner, on a fixed scale shared by the panels
            inset = ax.inset_axes([0.7, 0.0, 0.3, 0.3])
            inset.imshow(np.abs(image(t) - image(problem.x[0])), cmap="magma", vmin=0, vmax=ERROR_SCALE,
                         interpolation="nearest")
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("w")
            inset.set_title(f"|error| 0–{ERROR_SCALE:g}", fontsize=7, color="w", pad=2)

    def show_gains(ax, t, label):
        shown = ax.imshow(image(t), cmap="viridis", vmin=gain_range[0], vmax=gain_range[1], interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)

    uncal, xi0 = runs["uncalibrated"], runs["back projection ξ₀"]
    show_image(axes[0, 0], problem.x[0], "true image x", error_inset=False)
    show_gains(axes[0, 1], problem.gains[0], f"true gains d (range {true_gains.min():.2f}–{true_gains.max():.2f})")
    show_image(axes[0, 2], uncal["x"], f"uncalibrated (LS with d = 1)\n{uncal['psnr']:.1f} dB, "
                                       f"rel-err {uncal['error_x']:.2e}")
    show_image(axes[0, 3], xi0["x"], r"back projection $\xi_0 = \Sigma_l A_l^\top y_l\,/\,mp$"
               f"\n{xi0['psnr']:.1f} dB, rel-err {xi0['error_x']:.2e}")
    show_image(axes[1, 0], best["x"], f"calibrated x̂ (PGD)\n{best['psnr']:.1f} dB, rel-err {best['error_x']:.2e}")
    show_gains(axes[1, 1], best["gains"], f"estimated gains d̂ (PGD)\nrel-err {best['error_gains']:.2e}")

    ax = axes[1, 2]
    ax.scatter(true_gains.ravel(), image(best["gains"]).ravel(), s=2, alpha=0.4, color="C0", rasterized=True)
    ax.plot(gain_range, gain_range, color="k", lw=0.8, ls="--", label="d̂ = d")
    ax.set_xlabel("true gain d")
    ax.set_ylabel("estimated gain d̂ (PGD)")
    ax.set_title(f"d̂ against d ({true_gains.size} pixels)", fontsize=10)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1, 3]
    curves = ("PGD (line search)", "PGD (fixed μ=0.5)", "alternating", "least squares")
    for colour, name in zip(("C0", "C1", "C2", "C3"), curves):
        history = runs[name]["history"]
        passes, error_x, error_d = (history[k].numpy() for k in ("passes", "error_x", "error_gains"))
        label = f"{name}: {runs[name]['error_x']:.1e}"
        ax.semilogy(passes, error_x, color=colour, lw=1.4, label=label)  # least squares: one point per CG step
        ax.semilogy(passes, error_d, color=colour, lw=0.9, ls="--")
    ax.axhline(uncal["error_x"], color="0.5", lw=0.8, ls=":", label=f"uncalibrated: {uncal['error_x']:.1e}")
    ax.set_xlabel("passes over the sensing matrices")
    ax.set_ylabel("relative error (solid: x;  dashed: d)")
    ax.set_title("convergence", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    fig.suptitle(title, fontsize=12)
    saved = str(save_figure(fig, path))
    plt.close(fig)
    return saved


# ----------------------------------------------------------------------------------------------------------------
# Figure 2: phase transition over (m, p) at n = 32
# ----------------------------------------------------------------------------------------------------------------

PT_PIXELS = 32
PT_SENSORS = tuple(2 ** k for k in range(1, 8))
PT_SNAPSHOTS = (1, 2, 3, 4, 6, 8, 16)
PT_RHO = 0.5


def phase_transition(trials: int, max_iter: int, seed: int, device: str, progress: bool
                     ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Success rates (p × m arrays) of PGD, LS and spectral on `trials` noiseless problems per cell, each cell one
    batched call per method. x ~ N(0, I_32); gains uniform in [1 − ρ, 1 + ρ] (ρ = 0.5), rescaled to mean 1;
    A_l i.i.d. N(0, 1) (float64). Success: max(rel-err x, rel-err d) < 1e-3 after the gauge."""
    n = PT_PIXELS
    methods = {"PGD": lambda S, y: pgd(S, y, max_iter=max_iter),
               "least squares": lambda S, y: least_squares(S, y),
               "spectral": lambda S, y: spectral(S, y)}
    rates = {name: np.zeros((len(PT_SNAPSHOTS), len(PT_SENSORS))) for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    generator = torch.Generator().manual_seed(seed)
    cells = [(i, p, j, m) for i, p in enumerate(PT_SNAPSHOTS) for j, m in enumerate(PT_SENSORS)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cells), desc="phase transition", leave=False)
    for i, p, j, m in cells:
        sensing = DenseGainSensing.gaussian(p, m, n, batch=trials, seed=seed + 1000 * p + m, device=device)
        x = torch.randn(trials, n, generator=generator, dtype=torch.float64).to(device)
        d = 1 + PT_RHO * (2 * torch.rand(trials, m, generator=generator, dtype=torch.float64) - 1)
        d = (d / d.mean(1, keepdim=True)).to(device)
        with torch.no_grad():
            y = sensing(x, d)
        for name, solve in methods.items():
            start = time.perf_counter()
            result = solve(sensing, y)
            seconds[name] += time.perf_counter() - start
            error = torch.maximum(relative_error(result.x, x), relative_error(result.gains, d))
            rates[name][i, j] = (error < 1e-3).double().mean().item()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rates, seconds


def print_phase_transition(rates: dict[str, np.ndarray]) -> None:
    names = list(rates)
    print(f"success rates {' / '.join(names)} (n = {PT_PIXELS}; rows p, columns m; * marks mp >= m + n - 1)")
    print(f"{'p | m':>6s} " + " ".join(f"{m:>15d}" for m in PT_SENSORS))
    for i, p in enumerate(PT_SNAPSHOTS):
        cells = []
        for j, m in enumerate(PT_SENSORS):
            mark = "*" if m * p >= m + PT_PIXELS - 1 else " "
            cells.append(f"{'/'.join(f'{rates[k][i, j]:.1f}' for k in names)}{mark}".rjust(15))
        print(f"{p:>6d} " + " ".join(cells))


def figure_phase_transition(rates: dict[str, np.ndarray], trials: int, max_iter: int, path: str) -> str:
    def edges(values):
        logs = np.log2(values)
        middle = (logs[1:] + logs[:-1]) / 2
        return 2 ** np.concatenate([[logs[0] - (middle[0] - logs[0])], middle, [logs[-1] + (logs[-1] - middle[-1])]])

    m_edges, p_edges = edges(np.array(PT_SENSORS, float)), edges(np.array(PT_SNAPSHOTS, float))
    m_curve = np.geomspace(m_edges[0], m_edges[-1], 200)
    fig, axes = plt.subplots(1, len(rates), figsize=(5.2 * len(rates), 4.6), layout="constrained")
    for ax, (name, rate) in zip(np.atleast_1d(axes), rates.items()):
        mesh = ax.pcolormesh(m_edges, p_edges, rate, cmap="Greys_r", vmin=0, vmax=1)
        for i, p in enumerate(PT_SNAPSHOTS):
            for j, m in enumerate(PT_SENSORS):
                ax.text(m, p, f"{rate[i, j]:.2g}".lstrip("0") or "0", ha="center", va="center",
                        fontsize=8, color="k" if rate[i, j] > 0.5 else "w")
        ax.plot(m_curve, (m_curve + PT_PIXELS - 1) / m_curve, color="C3", lw=1.8, label="mp = m + n − 1")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlim(m_edges[0], m_edges[-1])
        ax.set_ylim(p_edges[0], p_edges[-1])
        ax.set_xticks(PT_SENSORS, [str(m) for m in PT_SENSORS])
        ax.set_yticks(PT_SNAPSHOTS, [str(p) for p in PT_SNAPSHOTS])
        ax.minorticks_off()
        ax.set_xlabel("sensors m")
        ax.set_ylabel("snapshots p")
        label = f"{name} (≤ {max_iter} iterations)" if name == "PGD" else name
        ax.set_title(label, fontsize=11)
        ax.legend(loc="lower left", fontsize=8)
    fig.colorbar(mesh, ax=axes, fraction=0.025, label="success rate")
    fig.suptitle(f"noiseless phase transition, n = {PT_PIXELS}, Gaussian A_l, gains in [{1 - PT_RHO:g}, "
                 f"{1 + PT_RHO:g}], {trials} trials per cell, success: max rel-err (x, d) < 1e-3", fontsize=10)
    saved = str(save_figure(fig, path))
    plt.close(fig)
    return saved


# ----------------------------------------------------------------------------------------------------------------
# Optional: smooth gains, with and without the subspace prior
# ----------------------------------------------------------------------------------------------------------------

def gain_subspace(size: int, snapshots: int, k: int, max_iter: int, seed: int, dtype: torch.dtype, device: str,
                  progress: bool) -> None:
    """Gains in the span of the k×k lowest 2-D DCT atoms (the vignetting × PRNU gains projected onto it), dct-mask
    sensing with few snapshots, noiseless: PGD with the gain prior (`gain_basis`) and without."""
    problem = sensor_array_problem(size, snapshots, "dct-mask", None, seed, dtype, device)
    basis = smooth_gain_basis(problem.shape, k, dtype).to(device)
    d = basis @ (basis.T @ vignetting_gains(problem.shape, seed=seed, dtype=dtype).to(device))
    d = (d / d.mean())[None]
    with torch.no_grad():
        y = problem.sensing(problem.x, d)
    print(f"\ngain subspace: {size}x{size} dct-mask, p = {snapshots}, noiseless, gains in the {k}x{k} lowest DCT "
          f"atoms (range {d.min():.2f}-{d.max():.2f})")
    print(f"{'PGD':20s} {'rel-err x':>10s} {'rel-err d':>10s} {'PSNR dB':>8s} {'iters':>6s} {'time s':>7s}")
    for label, options in (("with gain prior", {"gain_basis": basis}), ("without prior", {})):
        start = time.perf_counter()
        result = pgd(problem.sensing, y, max_iter=max_iter, progress=progress, **options)
        seconds = time.perf_counter() - start
        error_x = relative_error(result.x, problem.x).item()
        error_d = relative_error(result.gains, d).item()
        print(f"{label:20s} {error_x:10.2e} {error_d:10.2e} {image_psnr(problem, result.x[0]):8.2f} "
              f"{result.iterations:6d} {seconds:7.2f}")


# ----------------------------------------------------------------------------------------------------------------

def parse_snr(text: str) -> float | None:
    if text.lower() in ("inf", "none", "noiseless"):
        return None
    return float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image and sensor array size (size x size)")
    parser.add_argument("--snapshots", type=int, default=10, help="p, the number of random snapshots")
    parser.add_argument("--snr", type=parse_snr, default=30.0, help="SNR in dB, or 'inf' for noiseless")
    parser.add_argument("--noiseless", action="store_true", help="same as --snr inf")
    parser.add_argument("--op", default="auto", choices=("auto", "dense", "dct-mask"),
                        help="sensing matrices (auto: dense up to size 48, dct-mask above)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float64"),
                        help="auto: float64, float32 for dense matrices over 1 GiB in float64")
    parser.add_argument("--max-iter", type=int, default=500, help="iteration cap of PGD and alternating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="out")
    parser.add_argument("--phase-transition", action="store_true", help="also the (m, p) phase transition figure")
    parser.add_argument("--trials", type=int, default=10, help="problems per phase-transition cell")
    parser.add_argument("--pt-max-iter", type=int, default=3000, help="PGD iteration cap in the phase transition")
    parser.add_argument("--gain-subspace", action="store_true",
                        help="also run smooth gains with p = 2, with and without the subspace prior")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    snr = None if args.noiseless else args.snr
    progress = not args.no_progress
    op = args.op if args.op != "auto" else ("dense" if args.size <= 48 else "dct-mask")
    n = args.size ** 2
    dense_bytes64 = args.snapshots * n * n * 8
    if args.dtype == "auto":
        dtype = torch.float32 if op == "dense" and dense_bytes64 > DENSE_FLOAT64_LIMIT else torch.float64
    else:
        dtype = getattr(torch, args.dtype)

    start = time.perf_counter()
    problem = sensor_array_problem(args.size, args.snapshots, op, snr, args.seed, dtype, args.device)
    setup = time.perf_counter() - start
    storage = (f", A = {dense_bytes64 * torch.finfo(dtype).bits // 64 / 1e6:.0f} MB" if op == "dense" else "")
    noise = "noiseless" if snr is None else f"SNR {snr:g} dB"
    g = problem.gains
    description = (f"{args.size}x{args.size} sensor array, p = {args.snapshots} {op} snapshots, {noise}, "
                   f"{str(dtype).removeprefix('torch.')}{storage}; gains {g.min():.2f}-{g.max():.2f}")
    print(f"{description} (set-up {setup:.1f} s)")
    runs = run_methods(problem, args.max_iter, progress)
    print_table(runs)
    path = figure_calibration(problem, runs, f"blind gain calibration: {description}",
                              f"{args.out}/sensor_array_calibration.png")
    print(f"-> {path}")

    if args.gain_subspace:
        gain_subspace(args.size, 2, 4, 2000, args.seed, dtype if op == "dct-mask" else torch.float64, args.device,
                      progress)

    if args.phase_transition:
        start = time.perf_counter()
        rates, seconds = phase_transition(args.trials, args.pt_max_iter, args.seed, args.device, progress)
        total = time.perf_counter() - start
        print(f"\nphase transition: {len(PT_SNAPSHOTS) * len(PT_SENSORS)} cells x {args.trials} trials in "
              f"{total:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ")")
        print_phase_transition(rates)
        path = figure_phase_transition(rates, args.trials, args.pt_max_iter,
                                       f"{args.out}/sensor_array_phase_transition.png")
        print(f"-> {path}")


if __name__ == "__main__":
    main()
