"""Benchmark: the natural-image priors on inverse problems with held-out pictures, ONE setting per method.

Pictures (never used in training): centre crops of Set12 and of offline scikit-image pictures (coffee, chelsea,
astronaut; grey), `--size`² each. Noise σ = 0.01. Tasks: Gaussian deblurring (std 1.6 px), 4× super-resolution
(box), 50 % random inpainting, 30 % compressed sensing (structured: random signs, DCT, random rows) and a
user-written forward-only operator (`SmearAndSubsample` in _tasks.py: plain torch, adjoint by autograd).
Methods:
- TV (oracle λ): `tv_reconstruct` with, per task, the λ of a grid with the best mean PSNR against the truth;
- RED-Diff with `DiffusionPrior.pretrained("natural")`;
- FLAIR over that DDPM read as a flow (`FlowPrior.from_diffusion`);
- PnP-ADMM with `pretrained_lpn("natural")`, and with the 128-channel `pretrained_lpn("natural-wide")` (PnP-LPN-wide;
  its ρ is the 64-channel one's, not re-tuned);
- PnP-ADMM with the Student-t field of experts `UnrolledFoE.pretrained("natural-sigma25-student")` as the denoiser
  (at the noise level `sigma` of SETTINGS; ρ by the discrepancy principle from the noise level).
Each method has ONE setting (SETTINGS) for all tasks, chosen by `--tune` on crops of training images
(train400), never on these pictures. Prints PSNR / SSIM / seconds per image per task and method, and the mean gain
over TV, and the peak extra memory of each method; writes out/inverse_natural.json.
Run: `python benchmarks/inverse_natural.py [--size 128] [--images 15] [--steps 100] [--tasks ...]`;
`python benchmarks/inverse_natural.py --tune --data ../shared/datasets/train400` prints the grid that chose SETTINGS.
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
import torch.nn.functional as F

import imaging
from _tasks import SHARED, held_out, operator
from _tasks import training_crops as tuning_crops
from _timing import PeakMemory
from imaging.metrics import oracle, psnr, ssim
from imaging.operators import GaussianNoise

NOISE = 0.01
TASKS = ("deblur", "sr4", "inpaint50", "cs30", "custom")
TV_GRID = (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2, 2.56e-2)
# One setting per method, for every task (noise 0.01), from `--tune` on train400 crops; RED-Diff's λ follows the
# noise level (its default 3σ·n_x/n_y, chosen on train400 crops).
SETTINGS = {"RED-Diff": {"lr": 0.5}, "FLAIR-DDPM": {"lam": 0.1},
            "PnP-LPN": {"rho": 0.005}, "PnP-LPN-wide": {"rho": 0.005}, "PnP-FoE": {"sigma": 0.03}}
GRIDS = {"RED-Diff": {"lr": [0.1, 0.25, 0.5], "lam": [0.05, 0.1, 0.25, 0.5]},
         "FLAIR-DDPM": {"lam": [0.02, 0.05, 0.1, 0.2, 0.5]},
         "PnP-LPN": {"rho": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]},
         "PnP-LPN-wide": {"rho": [0.002, 0.005, 0.01, 0.02]},
         "PnP-FoE": {"sigma": [0.02, 0.03, 0.04, 0.06]}}


def methods(steps: int) -> dict:
    from imaging.priors import DiffusionPrior, FlowPrior, UnrolledFoE, pretrained_lpn
    from imaging.solvers import Flair, PnPADMM, RedDiff

    ddpm = DiffusionPrior.pretrained("natural")
    flow = FlowPrior.from_diffusion(ddpm)
    lpn, wide = pretrained_lpn("natural"), pretrained_lpn("natural-wide")
    foe = UnrolledFoE.pretrained("natural-sigma25-student")
    return {"RED-Diff": lambda A, y, **o: RedDiff(A, y, ddpm, steps=steps, noise_level=NOISE, seed=0, **o).run().x,
            "FLAIR-DDPM": lambda A, y, **o: Flair(A, y, flow, steps=steps, noise_level=NOISE, seed=0, **o).run().x,
            "PnP-LPN": lambda A, y, **o: PnPADMM(A, y, lpn.prox, box=(0.0, 1.0), max_iter=steps, **o).run().x,
            "PnP-LPN-wide": lambda A, y, **o: PnPADMM(A, y, wide.prox, box=(0.0, 1.0), max_iter=steps, **o).run().x,
            "PnP-FoE": lambda A, y, sigma: PnPADMM(A, y, lambda v: foe(v, sigma), box=(0.0, 1.0), max_iter=steps,
                                                   noise_level=NOISE).run().x}


def tv_oracle(A, y, truth):
    with warnings.catch_warnings():  # a fixed budget of 500 iterations per λ
        warnings.simplefilter("ignore", imaging.ConvergenceWarning)
        x, lam, _ = oracle(lambda lam: imaging.tv_reconstruct(A, y, lam, box=(0.0, 1.0), tol=1e-4,
                                                              max_iter=500), TV_GRID, truth)
    return x, lam


def measure(truth: torch.Tensor, tasks, runs: dict, settings: dict, with_tv: bool = True) -> dict:
    table = {}
    for task in tasks:
        A = operator(task, truth.shape[-1])
        y = GaussianNoise(NOISE)(A(truth), generator=torch.Generator().manual_seed(0))
        rows = {}
        if with_tv:
            start = time.perf_counter()
            with PeakMemory("cpu") as memory:
                x, lam = tv_oracle(A, y, truth)
            rows["TV (oracle λ)"] = (x, time.perf_counter() - start, {"lam": lam}, memory.bytes)
        for name, run in runs.items():
            start = time.perf_counter()
            with PeakMemory("cpu") as memory:
                x = run(A, y, **settings[name])
            rows[name] = (x, time.perf_counter() - start, settings[name], memory.bytes)
        table[task] = {name: {"psnr": float(psnr(x.clamp(0, 1), truth).mean()),
                              "ssim": float(ssim(x.clamp(0, 1), truth).mean()),
                              "seconds_per_image": seconds / len(truth), "peak_mib": peak / 2 ** 20,
                              "setting": setting}
                       for name, (x, seconds, setting, peak) in rows.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=15)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(SETTINGS), help=f"some of {list(SETTINGS)}")
    parser.add_argument("--no-tv", action="store_true", help="leave out the TV baseline")
    parser.add_argument("--tune", action="store_true", help="grid-search SETTINGS on training crops")
    parser.add_argument("--data", default=str(SHARED / "train400"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="out/inverse_natural.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {name: run for name, run in methods(args.steps).items() if name in args.methods}
    if args.tune:
        crops = tuning_crops(args.data, args.size, args.images)
        print(f"tuning on {len(crops)} crops of {args.data}, mean PSNR over the tasks {args.tasks}")
        for name, grid in ((name, GRIDS[name]) for name in runs):
            scores = {}
            for values in itertools.product(*grid.values()):
                setting = dict(zip(grid, values))
                table = measure(crops, args.tasks, {name: runs[name]}, {name: setting}, with_tv=False)
                scores[json.dumps(setting)] = np.mean([table[t][name]["psnr"] for t in args.tasks])
                print(f"  {name} {setting}: {scores[json.dumps(setting)]:.2f} dB", flush=True)
            print(f"{name}: best {max(scores, key=scores.get)}")
        return
    truth = held_out(args.size, args.images)
    print(f"{len(truth)} held-out pictures {args.size}², noise {NOISE}, {args.steps} steps; torch threads "
          f"{torch.get_num_threads()}")
    table = measure(truth, args.tasks, runs, SETTINGS, with_tv=not args.no_tv)
    print("| task | " + " | ".join(table[args.tasks[0]]) + " |\n|---|" + "---|" * len(table[args.tasks[0]]))
    for task, row in table.items():
        print(f"| {task} | " + " | ".join(f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['seconds_per_image']:.1f} s"
                                          for r in row.values()) + " |")
    print("peak extra MiB (whole batch): " + ", ".join(
        f"{name} {max(table[t][name]['peak_mib'] for t in args.tasks):.0f}" for name in table[args.tasks[0]]))
    for name in runs if not args.no_tv else []:
        gains = [table[t][name]["psnr"] - table[t]["TV (oracle λ)"]["psnr"] for t in args.tasks]
        print(f"{name}: {np.mean(gains):+.2f} dB over TV (oracle) on average, min {min(gains):+.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size": args.size, "images": len(truth), "steps": args.steps,
                                           "noise": NOISE, "results": table}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
