"""Benchmark: the regularisation weight chosen without the truth (lam="auto") against the best of a dense grid.

For each task of the operator catalogue (`_tasks.py`: denoising, deblurring, 4× SR, 50 % inpainting, 30 % CS,
4× MRI, CT from 20 angles, a user-written forward-only operator), noise σ = 0.005 / 0.01 / 0.05 and each held-out
picture, TV (`tv_reconstruct`, box [0, 1]), Tikhonov smoothing (`least_squares` with R = finite differences) and
the shipped field of experts (`AcceleratedGradient` with `FieldOfExperts.pretrained("denoise-sigma25")`, box [0, 1])
are solved
- over a dense grid of λ (19 values, factor 1.47 apart, scaled by σ‖A‖², extended by 6 values past an edge
  while the best lies on it), keeping the best PSNR per picture: an oracle, since it needs the truth;
- with lam="auto" and the true σ (Monte-Carlo SURE for denoising, the discrepancy principle otherwise);
- with lam="auto" and σ estimated from y (`imaging.estimate_noise`; "—" where it cannot be estimated).
Prints per task and σ: the oracle PSNR, the loss of each automatic choice (dB) and the solves it took, then the
mean and the worst loss; writes out/parameter_choice.json. `--pictures train --data ../shared/datasets/train400`
runs on training crops instead (how the discrepancy factor τ was chosen: `--tau`); `--rule sure|gsure` uses
Monte-Carlo SURE (prediction risk) or GSURE for every task instead of "auto".
Run: `python benchmarks/parameter_choice.py [--size 96] [--images 4] [--tasks ...] [--noises ...] [--methods tv]`
"""
from __future__ import annotations

import argparse
import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import imaging
from _tasks import SHARED, TASKS, held_out, operator, training_crops
from imaging.metrics import psnr
from imaging.operators import FiniteDifference, GaussianNoise
from imaging.priors import FieldOfExperts
from imaging.solvers import GSURE, SURE, AcceleratedGradient, ConvergenceWarning, Discrepancy

NOISES = (0.005, 0.01, 0.05)
GRID = np.geomspace(10 ** -2.5, 10 ** 0.5, 19)  # times σ‖A‖²
METHODS = ("tv", "tikhonov", "foe")
FOE_SIGMA = 25 / 255  # the shipped field of experts was learned for denoising at this σ with weight 1


@functools.cache
def foe() -> FieldOfExperts:
    return FieldOfExperts.pretrained("denoise-sigma25")


def solve(method: str, A, y: torch.Tensor, lam, sigma: float | None) -> imaging.solvers.Result:
    if method == "foe":
        return AcceleratedGradient(A, y, foe(), lam, box=(0.0, 1.0), tol=1e-5, max_iter=1000, noise_level=sigma).run()
    if method == "tv":
        return imaging.tv_reconstruct(A, y, lam, box=(0.0, 1.0), tol=1e-4, max_iter=1000, noise_level=sigma)
    return imaging.least_squares(A, y, lam, regulariser=FiniteDifference(), tol=1e-6, max_iter=300,
                                 noise_level=sigma, warn=False)


def score(x: torch.Tensor, truth: torch.Tensor) -> float:
    return float(psnr(x.real.clamp(0, 1), truth).mean())


def grid_best(method: str, A, y: torch.Tensor, truth: torch.Tensor, scale: float) -> tuple[float, float]:
    """(best PSNR, its λ) over the grid, for one picture; the grid grows past an edge while the best lies on it."""
    step = GRID[1] / GRID[0]
    lams, scores = [], []
    new = [float(g) * scale for g in GRID]
    for _ in range(4):
        if method == "tv":  # one batched PDHG run: one problem per λ
            result = solve("tv", A, y.expand(len(new), *y.shape[1:]).contiguous(),
                           torch.tensor(new, dtype=y.real.dtype), None)
            values = [score(x[None], truth) for x in result.x]
        else:
            values = [score(solve(method, A, y, lam, None).x, truth) for lam in new]
        lams, scores = sorted(lams + new), [s for _, s in sorted(zip(lams + new, scores + values))]
        best = int(np.argmax(scores))
        if 0 < best < len(lams) - 1:
            break
        edge = lams[best]
        new = [edge * step ** (k if best else -k) for k in range(1, 7)]
    return scores[best], lams[best]


def run(pictures: torch.Tensor, tasks, noises, methods, rule) -> dict:
    table = {}
    for task in tasks:
        A = operator(task, pictures.shape[-1])
        for sigma in noises:
            rows = {method: [] for method in methods}
            for i, truth in enumerate(pictures.split(1)):
                truth = truth.double()
                y = GaussianNoise(sigma)(A(truth), generator=torch.Generator().manual_seed(100 + i))
                like = A.adjoint(y)
                scale = sigma * A.norm(like.real if like.is_complex() else like) ** 2
                for method in methods:
                    start = time.perf_counter()
                    # the field of experts' λ scales like σ² (its energy is a negative log-prior times σ_0²):
                    # its grid spans 0.03–30 × (σ/σ_0)²‖A‖²
                    best, best_lam = grid_best(method, A, y, truth, scale if method != "foe" else
                                               10 * scale * sigma / FOE_SIGMA ** 2)
                    auto = solve(method, A, y, rule, sigma)
                    entry = {"oracle_psnr": best, "oracle_lam": best_lam, "auto_psnr": score(auto.x, truth),
                             "auto_lam": auto.lam, "auto_solves": auto.parameter_search.solves}
                    try:
                        estimated = solve(method, A, y, rule, None)
                        entry.update(estimated_psnr=score(estimated.x, truth), estimated_sigma=
                                     estimated.parameter_search.noise_level, estimated_solves=
                                     estimated.parameter_search.solves)
                    except ValueError:  # the noise level of these measurements cannot be estimated
                        entry.update(estimated_psnr=None)
                    entry["seconds"] = time.perf_counter() - start
                    rows[method].append(entry)
            table[f"{task} σ={sigma}"] = rows
            for method in methods:
                r = rows[method]
                est = [e["estimated_psnr"] - e["oracle_psnr"] for e in r if e["estimated_psnr"] is not None]
                print(f"{task:9s} σ={sigma:<6} {method:8s} oracle {np.mean([e['oracle_psnr'] for e in r]):6.2f} dB"
                      f" | auto {np.mean([e['auto_psnr'] - e['oracle_psnr'] for e in r]):+.2f} dB "
                      f"({np.mean([e['auto_solves'] for e in r]):.1f} solves)"
                      f" | σ estimated " + (f"{np.mean(est):+.2f} dB" if est else "—") +
                      f" | {np.mean([e['seconds'] for e in r]):.1f} s/picture", flush=True)
    return table


def markdown(table: dict, method: str) -> str:
    """The README's table: per task and σ, the oracle PSNR and what each automatic choice loses."""
    lines = ["| task | σ | best λ of the grid (oracle) | lam=\"auto\", σ given | solves | σ estimated |",
             "|---|---|---|---|---|---|"]
    for key, rows in table.items():
        task, sigma = key.split(" σ=")
        r = rows[method]
        est = [e["estimated_psnr"] - e["oracle_psnr"] for e in r if e["estimated_psnr"] is not None]
        lines.append(f"| {task} | {sigma} | {np.mean([e['oracle_psnr'] for e in r]):.2f} dB | "
                     f"{np.mean([e['auto_psnr'] - e['oracle_psnr'] for e in r]):+.2f} dB | "
                     f"{np.mean([e['auto_solves'] for e in r]):.1f} | "
                     + (f"{np.mean(est):+.2f} dB |" if est else "— |"))
    return "\n".join(lines)


def summary(table: dict, methods) -> dict:
    out = {}
    for method in methods:
        auto = [e["auto_psnr"] - e["oracle_psnr"] for rows in table.values() for e in rows[method]]
        per_cell = [np.mean([e["auto_psnr"] - e["oracle_psnr"] for e in rows[method]]) for rows in table.values()]
        est = [e["estimated_psnr"] - e["oracle_psnr"] for rows in table.values() for e in rows[method]
               if e["estimated_psnr"] is not None]
        out[method] = {"auto_mean": float(np.mean(auto)), "auto_worst_cell": float(min(per_cell)),
                       "auto_worst_picture": float(min(auto)),
                       "estimated_mean": float(np.mean(est)) if est else None,
                       "estimated_worst_picture": float(min(est)) if est else None}
        print(f"{method}: lam=\"auto\" (σ given) {out[method]['auto_mean']:+.2f} dB from the oracle on average, "
              f"worst task/σ {out[method]['auto_worst_cell']:+.2f}, worst picture "
              f"{out[method]['auto_worst_picture']:+.2f}; σ estimated: "
              + (f"{out[method]['estimated_mean']:+.2f} dB on average, worst picture "
                 f"{out[method]['estimated_worst_picture']:+.2f}" if est else "—"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--noises", nargs="+", type=float, default=list(NOISES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tau", type=float, default=None,
                        help="use Discrepancy(tau) for every task instead of lam=\"auto\"")
    parser.add_argument("--rule", choices=("auto", "sure", "gsure"), default="auto",
                        help="sure / gsure: Monte-Carlo SURE (prediction risk) / GSURE for every task")
    parser.add_argument("--pictures", choices=("held-out", "train"), default="held-out")
    parser.add_argument("--data", default=str(SHARED / "train400"), help="training folder for --pictures train")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="out/parameter_choice.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pictures = held_out(args.size, args.images) if args.pictures == "held-out" else \
        training_crops(args.data, args.size, args.images)
    rule = Discrepancy(tau=args.tau) if args.tau else {"auto": "auto", "sure": SURE(), "gsure": GSURE()}[args.rule]
    print(f"{len(pictures)} {args.pictures} pictures {args.size}², rule {rule}, torch threads "
          f"{torch.get_num_threads()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the grid's solves share the auto solves' budget
        table = run(pictures, args.tasks, args.noises, args.methods, rule)
    for method in args.methods:
        print(f"\n{method}:\n{markdown(table, method)}")
    result = {"size": args.size, "pictures": args.pictures, "images": len(pictures), "tau": args.tau, "rule": str(rule),
              "summary": summary(table, args.methods), "results": table}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
