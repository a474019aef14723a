"""Benchmark: the generative and plug-and-play solvers at their defaults (only `noise_level` given) against their
best setting per task, and where their data misfit ends.

Held-out pictures (`_tasks.held_out`: Set12 and offline scikit-image crops, never used in training or tuning),
tasks deblurring, 4× SR, 50 % inpainting, 30 % CS and the user-written `SmearAndSubsample`, noise σ = 0.01 and
0.05. Methods, each with the natural-image priors:
- RED-Diff (`DiffusionPrior.pretrained("natural")`): defaults, and the best of λ × {0.3, 1, 3} of its default
  and lr ∈ {0.25, 0.5} per task;
- FLAIR over that DDPM read as a flow: defaults, and the best regularisation ρ of {0.05, 0.1, 0.2, 0.5, 1} per task;
- PnP-ADMM with `pretrained_lpn("natural")`: defaults (ρ chosen by the discrepancy principle), and the best
  ρ of {0.002, 0.005, 0.01, 0.02, 0.05, 0.1} per task.
The best per task is an oracle (chosen against the truth, mean over the pictures). Prints, per method, task and
σ: PSNR at the defaults, the best PSNR and its setting, and the final data misfit as RMS/σ (the issue's target:
within 10 % of 1); then the mean and worst loss of the defaults. Writes out/generative_defaults.json.
Run: `python benchmarks/generative_defaults.py [--size 64] [--images 3] [--steps 100] [--methods ...]
[--tasks ...] [--noises ...] [--threads 1]`; `--pictures train` runs on train400 crops instead (where defaults are
chosen).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import imaging
from _tasks import SHARED, held_out, operator, training_crops
from imaging.metrics import psnr
from imaging.operators import GaussianNoise

TASKS = ("deblur", "sr4", "inpaint50", "cs30", "custom")
NOISES = (0.01, 0.05)
METHODS = ("RED-Diff", "FLAIR-DDPM", "PnP-LPN")


def solvers(steps: int) -> tuple[dict, dict]:
    """(run(A, y, σ, **setting) -> Result per method, grid of settings per method (callables of the defaults))."""
    from imaging.priors import DiffusionPrior, FlowPrior, pretrained_lpn
    from imaging.solvers import Flair, PnPADMM, RedDiff

    ddpm = DiffusionPrior.pretrained("natural")
    flow, lpn = FlowPrior.from_diffusion(ddpm), pretrained_lpn("natural")

    def red_diff(A, y, sigma, lam_factor=None, **setting):
        if lam_factor is not None:
            default = RedDiff(A, y, ddpm, steps=steps, noise_level=sigma)
            setting["lam"] = lam_factor * default.default_lam(A.adjoint(y))
        return RedDiff(A, y, ddpm, steps=steps, noise_level=sigma, seed=0, **setting).run()

    runs = {"RED-Diff": red_diff,
            "FLAIR-DDPM": lambda A, y, sigma, **s: Flair(A, y, flow, steps=steps, noise_level=sigma, seed=0,
                                                           **s).run(),
            "PnP-LPN": lambda A, y, sigma, **s: PnPADMM(A, y, lpn.prox, box=(0.0, 1.0), max_iter=steps,
                                                        noise_level=sigma, **s).run()}
    grids = {"RED-Diff": [{"lam_factor": f, "lr": lr} for f, lr in itertools.product((0.3, 1.0, 3.0), (0.25, 0.5))],
             "FLAIR-DDPM": [{"lam": r} for r in (0.05, 0.1, 0.2, 0.5, 1.0)],
             "PnP-LPN": [{"rho": r} for r in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)]}
    return runs, grids


def misfit_ratio(A, x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """Mean over the pictures of RMS(A x − y)/σ."""
    with torch.no_grad():
        r = (A(x) - y).abs().pow(2).flatten(1).mean(1).sqrt()
    return float(r.mean()) / sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--noises", nargs="+", type=float, default=list(NOISES))
    parser.add_argument("--no-grid", action="store_true", help="only the defaults (no per-task best)")
    parser.add_argument("--pictures", choices=("held-out", "train"), default="held-out",
                        help="train: crops of --data (for choosing defaults), never reported as results")
    parser.add_argument("--data", default=str(SHARED / "train400"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="out/generative_defaults.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs, grids = solvers(args.steps)
    truth = (held_out(args.size, args.images) if args.pictures == "held-out"
             else training_crops(args.data, args.size, args.images))
    print(f"{len(truth)} {args.pictures} pictures {args.size}², {args.steps} steps; torch threads {torch.get_num_threads()}")
    table: dict = {}
    for name, task, sigma in itertools.product(args.methods, args.tasks, args.noises):
        A = operator(task, args.size)
        y = GaussianNoise(sigma)(A(truth), generator=torch.Generator().manual_seed(0))
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", imaging.ConvergenceWarning)
            result = runs[name](A, y, sigma)
            seconds = time.perf_counter() - began
            row = {"default": float(psnr(result.x.clamp(0, 1), truth).mean()), "seconds": seconds,
                   "misfit_ratio": misfit_ratio(A, result.x, y, sigma), "converged": result.converged}
            if result.lam is not None:
                row["chosen"] = result.lam
            if not args.no_grid:
                scores = {json.dumps(s): float(psnr(runs[name](A, y, sigma, **s).x.clamp(0, 1), truth).mean())
                          for s in grids[name]}
                best = max(scores, key=scores.get)
                row.update(best=scores[best], best_setting=json.loads(best), grid=scores)
        table.setdefault(name, {}).setdefault(task, {})[str(sigma)] = row
        best = f"best {row['best']:6.2f} at {row['best_setting']}" if "best" in row else ""
        print(f"{name:<11} {task:<10} σ={sigma:<5} default {row['default']:6.2f} dB  misfit RMS/σ "
              f"{row['misfit_ratio']:.2f}  {seconds / len(truth):5.1f} s/image  {best}", flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"size": args.size, "images": len(truth), "steps": args.steps,
                                               "results": table}, indent=1))
    for name, rows in table.items():
        cells = [cell for by_sigma in rows.values() for cell in by_sigma.values()]
        ratios = [cell["misfit_ratio"] for cell in cells]
        line = (f"{name}: misfit RMS/σ in [{min(ratios):.2f}, {max(ratios):.2f}], "
                f"{sum(abs(r - 1) <= 0.1 for r in ratios)}/{len(ratios)} within 10 %")
        if all("best" in cell for cell in cells):
            losses = [cell["best"] - cell["default"] for cell in cells]
            line += f"; defaults {np.mean(losses):.2f} dB below the per-task best on average, worst {max(losses):.2f}"
        print(line)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
