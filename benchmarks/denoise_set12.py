"""Benchmark: grey denoising on Set12 at σ = 15, 25, 50 (0–255 scale), imaging's priors against TV and BM3D.

Noise: y = x + (σ/255)·n, n ~ N(0, 1) seeded per image (seed = image index), the same for every method. Methods:
- TV (oracle): `imaging.ops.tv_prox` (isotropic ROF) with, for each image, the best λ of a grid measured against
  the truth: an upper bound of what TV can do, not a method a user can run;
- BM3D: the `bm3d` package (PyPI) with the true σ, measured side by side (skipped when not installed);
- FoE: `FieldOfExperts.pretrained(...)` (its σ only), ½‖x − y‖² + R(x) minimised by `accelerated_gradient`;
  `UnrolledFoE.pretrained(...)`(y, σ), the Student-t FoE trained end to end for 10 gradient steps at σ = 25 (other
  σ: it denoises y·25/σ and scales back, a transfer it was not trained for);
- LPN: `pretrained_lpn(...)`.prox(y) (the natural one trained for σ in [0.08, 0.12]), and any exported LPN
  file given with `--lpn-file` (e.g. a training run's `--export`);
- DDPM one-step: `DiffusionPrior.pretrained(...)`.denoise(y, σ), the network's posterior mean at the matching
  timestep (no per-image or per-σ tuning).
Images are never used in training (Set12 is the validation set; the shipped priors train on train400).
Prints a Markdown table of mean PSNR (dB) / SSIM with the published numbers, the seconds per image, and writes
JSON to out/denoise_set12.json. Peak memory: the largest growth of the process's resident set during one call.
Run: `python benchmarks/denoise_set12.py [--data ../shared/datasets/set12] [--sigmas 15 25 50] [--images N]
[--methods tv bm3d foe lpn ddpm] [--lpn-file FILE ...] [--threads 1]`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _timing import PeakMemory
from imaging.data import image_files, read_image
from imaging.metrics import psnr, ssim

PUBLISHED = {  # mean PSNR on Set12 (DnCNN paper, Table 3; FFDNet paper)
    15: {"BM3D": 32.37, "WNNM": 32.70, "TNRD": 32.50, "DnCNN-S": 32.86, "FFDNet": 32.75},
    25: {"BM3D": 29.97, "WNNM": 30.26, "TNRD": 30.06, "DnCNN-S": 30.44, "FFDNet": 30.43},
    50: {"BM3D": 26.72, "WNNM": 27.05, "TNRD": 26.81, "DnCNN-S": 27.18, "FFDNet": 27.32}}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "set12"
TV_GRID = np.geomspace(0.15, 2.5, 21)  # λ / σ; neighbours 15 % apart (< 0.01 dB from the best λ)


def tv_oracle(noisy: torch.Tensor, clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """TV denoising with the best λ of a grid around the noise level, chosen against the truth (oracle)."""
    from imaging.ops import tv_prox

    best, best_psnr = None, -1.0
    for lam in TV_GRID * sigma:
        x = tv_prox(noisy, float(lam), tol=1e-4, max_iter=500)[0].clamp(0, 1)
        value = float(psnr(x, clean))
        if value > best_psnr:
            best, best_psnr = x, value
    return best


def make_methods(names: list[str], sigma255: int, lpn_files: tuple[str, ...] = ()) -> dict:
    methods = {}
    sigma = sigma255 / 255
    if "tv" in names:
        methods["TV (oracle λ)"] = lambda y, x: tv_oracle(y, x, sigma)
    if "bm3d" in names:
        try:
            import bm3d

            methods["BM3D"] = lambda y, x: torch.from_numpy(
                np.asarray(bm3d.bm3d(y[0, 0].double().numpy(), sigma_psd=sigma))).to(y.dtype)[None, None].clamp(0, 1)
        except ImportError:
            print("BM3D skipped: `pip install bm3d`")
    if "foe" in names and sigma255 == 25:
        from imaging.learning import RegularisedLeastSquares, accelerated_gradient
        from imaging.priors import FieldOfExperts

        for name in FieldOfExperts.SHIPPED if hasattr(FieldOfExperts, "SHIPPED") else ["denoise-sigma25"]:
            try:
                model = FieldOfExperts.pretrained(name)
            except (FileNotFoundError, ValueError):
                continue
            if abs(model.settings.get("sigma", sigma) - sigma) > 1e-6:
                continue
            methods[f"FoE ({name})"] = lambda y, x, model=model: accelerated_gradient(
                RegularisedLeastSquares(y.double(), model), 1e-3, lipschitz=10.0).x.to(y.dtype).clamp(0, 1)
    if "foe" in names:
        from imaging.priors import UnrolledFoE

        for name in UnrolledFoE.SHIPPED:
            try:
                unrolled = UnrolledFoE.pretrained(name)
            except FileNotFoundError:
                continue
            label = f"FoE unrolled ({name})" + ("" if sigma255 == 25 else ", input scaled")
            methods[label] = lambda y, x, m=unrolled: m(y.float(), sigma).clamp(0, 1)
    if "lpn" in names:
        from imaging.priors import pretrained_lpn

        for name in ("natural", "natural-wide", "image"):
            try:
                lpn = pretrained_lpn(name)
            except (FileNotFoundError, ValueError):
                continue
            methods[f"LPN ({name})"] = lambda y, x, lpn=lpn: lpn.prox(y).detach().clamp(0, 1)
    for path in lpn_files:  # e.g. a run's export before it ships
        from imaging.priors.lpn import load_lpn

        lpn = load_lpn(path)
        methods[f"LPN ({Path(path).name})"] = lambda y, x, lpn=lpn: lpn.prox(y).detach().clamp(0, 1)
    if "ddpm" in names:
        from imaging.priors.generative import DiffusionPrior

        try:
            prior = DiffusionPrior.pretrained("natural")
            methods["DDPM one-step (natural)"] = lambda y, x: prior.denoise(y, sigma).clamp(0, 1)
        except FileNotFoundError as error:
            print(f"DDPM skipped: {error}")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    parser.add_argument("--images", type=int, default=None, help="only the first N images")
    parser.add_argument("--methods", nargs="+", default=["tv", "bm3d", "foe", "lpn", "ddpm"])
    parser.add_argument("--lpn-file", nargs="+", default=[], help="also these exported LPN files (load_lpn)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default="out/denoise_set12.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = image_files(args.data)[:args.images]
    images = [read_image(path)[None] for path in files]
    print(f"Set12: {len(images)} images from {args.data}; torch threads {torch.get_num_threads()}")
    results: dict = {}
    for sigma255 in args.sigmas:
        methods = make_methods(args.methods, sigma255, tuple(args.lpn_file))
        rows = {"noisy": [[], [], 0.0, 0], **{name: [[], [], 0.0, 0] for name in methods}}
        for index, clean in enumerate(images):
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(index))
            noisy = clean + sigma255 / 255 * noise
            rows["noisy"][0].append(float(psnr(noisy.clamp(0, 1), clean)))
            rows["noisy"][1].append(float(ssim(noisy.clamp(0, 1), clean)))
            for name, method in methods.items():
                start = time.perf_counter()
                with PeakMemory("cpu") as memory, torch.no_grad():
                    x = method(noisy, clean)
                rows[name][2] += time.perf_counter() - start
                rows[name][3] = max(rows[name][3], memory.bytes)
                rows[name][0].append(float(psnr(x.float(), clean)))
                rows[name][1].append(float(ssim(x.float(), clean)))
        results[sigma255] = {name: {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "psnr_per_image": p,
                                    "seconds_per_image": t / len(images), "peak_mib": m / 2 ** 20}
                             for name, (p, s, t, m) in rows.items()}
        print(f"\nσ = {sigma255}: mean over {len(images)} images (published Set12 means: "
              + ", ".join(f"{k} {v}" for k, v in PUBLISHED[sigma255].items()) + ")")
        print("| method | PSNR (dB) | SSIM | s / image | peak extra MiB |\n|---|---|---|---|---|")
        for name, row in results[sigma255].items():
            print(f"| {name} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['seconds_per_image']:.2f} | "
                  f"{row['peak_mib']:.0f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"data": str(args.data), "threads": torch.get_num_threads(),
                                           "results": results}, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
