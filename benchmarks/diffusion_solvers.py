"""Benchmark: RED-Diff and FLAIR against DPS, DiffPIR and DDRM on the same diffusion prior, side by side.

Prior: `DiffusionPrior.pretrained("natural")` (FLAIR reads it as a flow, `FlowPrior.from_diffusion`). Pictures
never used in training (`_tasks.held_out`: centre crops of Set12 and offline scikit-image pictures). Tasks, each
for noise σ = 0.01 and 0.05: Gaussian deblurring (std 1.6 px, circular, so that DDRM applies), 4× super-resolution
(box), 50 % random inpainting, box inpainting (the centre half-size square missing), 30 % compressed sensing
(structured) and a user-written forward-only operator (`SmearAndSubsample`, no SVD: DDRM does not apply).
Methods, ONE setting each for every task (given σ): the published settings of each paper, and equal-budget
variants at 100 network evaluations (NFE):
- RED-Diff: 100 steps, lr 0.5, λ and the data hinge from σ (the library's defaults); NFE 100;
- FLAIR-DDPM: 100 steps, ρ 0.1 (as in inverse_natural.py), data steps stopped at σ; NFE 100;
- DiffPIR: the paper's λ = 1, ζ = 0.1, 100 steps, quadratic spacing; NFE 100;
- DDRM: the paper's 20 steps, η = 0.85, η_b = 1 (NFE 20), and DDRM-100 (NFE 100);
- DPS-100: 100 steps, ζ = 3 (the paper's 0.3 for 1000 steps, times 10 for 10× fewer steps); NFE 100 forward +
  100 backward; DPS-1000 (the paper's 1000 steps, ζ = 0.3) only with --dps-full (slow on a CPU);
- TV (oracle λ): the best λ per task against the truth, a reference no user can run.
Prints per task and σ the PSNR / SSIM of each method, then per method the mean PSNR, the seconds per image, the
NFE and the peak extra memory (DPS keeps the network's activations for its backward pass; the others run the
network under torch.no_grad), and how often RED-Diff and FLAIR are at least as good as DPS and DiffPIR. LPIPS: when
the `lpips` package and its weights are available offline (not installed here: skipped). Writes
out/diffusion_solvers.json and out/diffusion_solvers.png (PSNR against seconds per image).
Run: `python benchmarks/diffusion_solvers.py [--size 64] [--images 6] [--noises 0.01 0.05] [--tasks ...]
[--methods ...] [--dps-full] [--threads 1]`.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import imaging
from _tasks import SHARED, SmearAndSubsample, held_out
from _timing import PeakMemory
from imaging.metrics import oracle, psnr, ssim
from imaging.operators import (Blur, Downsampling, GaussianNoise, Inpainting, StructuredCompressedSensing,
                               gaussian_kernel)

TASKS = ("deblur", "sr4", "inpaint_random", "inpaint_box", "cs30", "custom")
NOISES = (0.01, 0.05)
TV_GRID = (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2, 2.56e-2, 5.12e-2)


def operator(task: str, size: int):
    if task == "deblur":
        return Blur(gaussian_kernel(1.6), mode="circular")
    if task == "sr4":
        return Downsampling(4, filter="box")
    if task == "inpaint_random":
        return Inpainting((torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(7)) > 0.5).float())
    if task == "inpaint_box":
        mask = torch.ones(1, 1, size, size)
        mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 0
        return Inpainting(mask)
    if task == "cs30":
        return StructuredCompressedSensing(int(0.3 * size * size), (1, size, size), seed=7)
    if task == "custom":
        return SmearAndSubsample()
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


# One setting per method for every task (given σ). The published settings of each paper, and (*) the settings
# chosen by `--tune` on train400 crops (never on the benchmark's pictures) for the methods whose published setting
# was made for another noise level or budget.
SETTINGS = {"RED-Diff": {"steps": 100, "lr": 0.5}, "FLAIR-DDPM": {"steps": 100, "lam": 0.1},
            "DiffPIR": {"steps": 100, "lam": 1.0, "zeta": 0.1}, "DDRM": {"steps": 20}, "DDRM-100": {"steps": 100},
            "DPS-100": {"steps": 100, "scale": 3.0}, "DPS-1000": {"steps": 1000, "scale": 0.3},
            "DiffPIR*": {"steps": 100, "lam": 1.0, "zeta": 1.0}}
# --tune on 4 train400 crops 64², tasks TUNE_TASKS, σ 0.01 and 0.05 (2026-11-29): DiffPIR ζ 0.1 / 0.3 / 0.5 / 1.0:
# 18.73 / 20.76 / 22.02 / 23.85 dB (ζ = 1 kept for DiffPIR*); DPS-100 ζ 1 / 3 / 10: 18.84 / 22.41 / 21.41 dB (the
# scaled published 3 is the best: DPS-100 needs no starred row).
GRIDS = {"DiffPIR*": {"zeta": [0.1, 0.3, 0.5, 1.0]}, "DPS-100": {"scale": [1.0, 3.0, 10.0]}}
TUNE_TASKS = ("deblur", "sr4", "inpaint_random", "cs30")


def methods(dps_full: bool, settings: dict | None = None) -> dict:
    """name -> (run(A, y, σ) -> x, network evaluations, backward passes)."""
    from imaging.priors import DiffusionPrior, FlowPrior
    from imaging.solvers import DDRM, DPS, DiffPIR, Flair, RedDiff

    ddpm = DiffusionPrior.pretrained("natural")
    flow = FlowPrior.from_diffusion(ddpm)
    settings = {**SETTINGS, **(settings or {})}
    kinds = {"RED-Diff": (lambda A, y, s, o: RedDiff(A, y, ddpm, noise_level=s, seed=0, **o), 0),
             "FLAIR-DDPM": (lambda A, y, s, o: Flair(A, y, flow, noise_level=s, seed=0, **o), 0),
             "DiffPIR": (lambda A, y, s, o: DiffPIR(A, y, ddpm, noise_level=s, seed=0, **o), 0),
             "DDRM": (lambda A, y, s, o: DDRM(A, y, ddpm, noise_level=s, seed=0, **o), 0),
             "DPS": (lambda A, y, s, o: DPS(A, y, ddpm, noise_level=s, seed=0, **o), 1)}
    table = {}
    for name, options in settings.items():
        if name == "DPS-1000" and not dps_full:
            continue
        make, backward = kinds[next(kind for kind in kinds if name.startswith(kind))]
        table[name] = (lambda A, y, s, make=make, options=options: make(A, y, s, options).run().x, options["steps"],
                       backward * options["steps"])
    return table


def tune(data: str, size: int, count: int, noises) -> None:
    """Grid-search the starred methods' settings on train400 crops (mean PSNR over TUNE_TASKS and the noises)."""
    from _tasks import training_crops

    crops = training_crops(data, size, count)
    print(f"tuning on {len(crops)} crops of {data}, tasks {TUNE_TASKS}, noises {noises}")
    for name, grid in GRIDS.items():
        scores = {}
        for value in next(iter(grid.values())):
            setting = {**SETTINGS[name], next(iter(grid)): value}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", imaging.ConvergenceWarning)
                table = run(crops, TUNE_TASKS, noises, methods(False, {name: setting}), only=name)
            scores[value] = np.mean([row[name]["psnr"] for row in table.values()])
            print(f"  {name} {setting}: {scores[value]:.2f} dB", flush=True)
        print(f"{name}: best {next(iter(grid))} = {max(scores, key=scores.get)}")


def tv_oracle(A, y, truth):
    return oracle(lambda lam: imaging.tv_reconstruct(A, y, lam, box=(0.0, 1.0), tol=1e-4, max_iter=500), TV_GRID,
                  truth)[0]


def run(truth: torch.Tensor, tasks, noises, runs: dict, only: str | None = None) -> dict:
    """Per task and σ, each method's PSNR / SSIM / time / NFE / memory (only: that method, without TV)."""
    if only is not None:
        runs = {only: runs[only]}
    table = {}
    for task in tasks:
        A = operator(task, truth.shape[-1])
        for sigma in noises:
            y = GaussianNoise(sigma)(A(truth), generator=torch.Generator().manual_seed(0))
            row = {}
            reference = {} if only else {"TV (oracle λ)": (lambda A, y, s: tv_oracle(A, y, truth), 0, 0)}
            for name, (solve, nfe, backward) in {**reference, **runs}.items():
                start = time.perf_counter()
                try:
                    with PeakMemory("cpu") as memory:
                        x = solve(A, y, sigma)
                except TypeError as error:  # DDRM without an SVD
                    row[name] = {"skipped": str(error).split(":")[0]}
                    continue
                row[name] = {"psnr": float(psnr(x.clamp(0, 1), truth).mean()),
                             "ssim": float(ssim(x.clamp(0, 1), truth).mean()),
                             "seconds_per_image": (time.perf_counter() - start) / len(truth),
                             "nfe": nfe, "backward": backward, "peak_mib": memory.bytes / 2 ** 20}
            table[f"{task} σ={sigma}"] = row
            print(f"{task:15s} σ={sigma:<5} " + " | ".join(
                f"{name} {r['psnr']:.2f}" if "psnr" in r else f"{name} —" for name, r in row.items()), flush=True)
    return table


def report(table: dict, names: list[str]) -> dict:
    print("\n| task | σ | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for key, row in table.items():
        task, sigma = key.split(" σ=")
        print(f"| {task} | {sigma} | " + " | ".join(
            f"{row[n]['psnr']:.2f} / {row[n]['ssim']:.3f}" if "psnr" in row[n] else "—" for n in names) + " |")
    summary = {}
    print("\n| method | mean PSNR | mean SSIM | s / image | NFE | backward | peak extra MiB |\n"
          "|---|---|---|---|---|---|---|")
    for n in names:
        rows = [row[n] for row in table.values() if "psnr" in row[n]]
        summary[n] = {key: float(np.mean([r[key] for r in rows])) for key in ("psnr", "ssim", "seconds_per_image")}
        summary[n].update(nfe=rows[0]["nfe"], backward=rows[0]["backward"], peak_mib=max(r["peak_mib"] for r in rows),
                          tasks=len(rows))
        s = summary[n]
        print(f"| {n} | {s['psnr']:.2f} dB ({s['tasks']} tasks) | {s['ssim']:.3f} | {s['seconds_per_image']:.2f} | "
              f"{s['nfe']} | {s['backward']} | {s['peak_mib']:.0f} |")
    for ours in ("RED-Diff", "FLAIR-DDPM"):
        for other in ("DPS-100", "DPS-1000", "DiffPIR", "DiffPIR*", "DDRM-100"):
            if ours in names and other in names:
                pairs = [(row[ours]["psnr"], row[other]["psnr"]) for row in table.values()
                         if "psnr" in row[ours] and "psnr" in row[other]]
                wins = sum(a >= b for a, b in pairs)
                print(f"{ours} >= {other}: {wins} of {len(pairs)} task/noise cells "
                      f"(mean difference {np.mean([a - b for a, b in pairs]):+.2f} dB)")
    return summary


def figure(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imaging.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in summary.items():
        ax.scatter(max(s["seconds_per_image"], 1e-2), s["psnr"], s=40)
        ax.annotate(f"{name} ({s['nfe']} NFE)", (max(s["seconds_per_image"], 1e-2), s["psnr"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (CPU, one thread)")
    ax.set_ylabel("mean PSNR over tasks and noise levels (dB)")
    ax.set_title("Diffusion solvers on the same prior, held-out pictures")
    print(f"-> {save_figure(fig, path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--noises", nargs="+", type=float, default=list(NOISES))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods (default: all)")
    parser.add_argument("--dps-full", action="store_true", help="also DPS with the paper's 1000 steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tune", action="store_true", help="grid-search the starred settings on training crops")
    parser.add_argument("--data", default=str(SHARED / "train400"), help="training folder for --tune")
    parser.add_argument("--json", default="out/diffusion_solvers.json")
    parser.add_argument("--merge", help="a previous JSON of this benchmark (same pictures): its methods join the table")
    parser.add_argument("--figure", default="out/diffusion_solvers.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune:
        tune(args.data, args.size, args.images, args.noises)
        return
    runs = {n: r for n, r in methods(args.dps_full).items() if args.methods is None or n in args.methods}
    truth = held_out(args.size, args.images)
    try:
        import lpips  # noqa: F401
        print("lpips is installed but its weights are not shipped offline: LPIPS skipped")
    except ImportError:
        print("LPIPS skipped: the lpips package is not installed")
    print(f"{len(truth)} held-out pictures {args.size}², noises {args.noises}; torch threads {torch.get_num_threads()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", imaging.ConvergenceWarning)  # fixed schedules; the table says what they reach
        table = run(truth, args.tasks, args.noises, runs)
    names = ["TV (oracle λ)", *runs]
    if args.merge:  # earlier methods first, this run's after them (same tasks, noises and pictures)
        earlier = json.loads(Path(args.merge).read_text())["results"]
        table = {key: {**earlier[key], **row} for key, row in table.items()}
        names = list(dict.fromkeys([*next(iter(earlier.values())), *names]))
    summary = report(table, names)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size": args.size, "images": len(truth), "summary": summary,
                                           "results": table}, indent=1))
    print(f"wrote {args.json}")
    figure(summary, args.figure)


if __name__ == "__main__":
    main()
