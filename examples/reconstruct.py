"""Main demo: six inverse problems over one operator abstraction, each reconstructed by regularised least squares.

    min_x ½‖A x − y‖² + ½ λ ‖∇x‖²   (CG on the normal equations; ∇ = compiled finite differences)

with λ chosen from the noise level alone (lam="auto", noise_level=σ: the discrepancy principle), the same rule for
every problem.

Writes out/reconstruct.png (truth | naive A^H y or zero-filled | reconstruction | error) and prints PSNR/SSIM.
Run: `make demo` or `python examples/reconstruct.py [--size 128] [--out out]`.
"""
from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import imaging  # noqa: E402
from imaging.data import load_image  # noqa: E402
from imaging.metrics import psnr, ssim  # noqa: E402
from imaging.operators import (MRI, Blur, Downsampling, FiniteDifference, GaussianNoise, Inpainting,  # noqa: E402
                               Radon, StructuredCompressedSensing, cartesian_mask, gaussian_kernel)
from imaging.plotting import save_figure, to_display  # noqa: E402


def problems(size: int):
    """(name, operator) for a size×size grey image."""
    shape = (size, size)
    radon = Radon(shape, angles=30)
    scale = 1.0 / radon.norm(torch.zeros(1, 1, *shape, dtype=torch.float64))
    return [
        ("deblurring (Gaussian σ=2)", Blur(gaussian_kernel(2.0), mode="reflect")),
        ("inpainting (60% missing)", Inpainting.random(shape, 0.4, seed=0)),
        ("super-resolution ×2", Downsampling(2, filter="box")),
        ("compressed sensing (30%)", StructuredCompressedSensing(int(0.3 * size * size), (1, *shape))),
        ("MRI (4× Cartesian)", MRI(cartesian_mask(shape, acceleration=4, seed=0))),
        ("sparse-view CT (30 angles)", scale * radon),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=0.01, help="Gaussian noise level on the measurements")
    parser.add_argument("--out", default="out")
    args = parser.parse_args()

    print(imaging._ext.describe())
    truth = load_image("camera", size=args.size, channels=1)
    noise = GaussianNoise(args.sigma)
    rows = []
    for name, op in tqdm(problems(args.size), desc="reconstructing"):
        y = op(truth)
        y = noise(y, generator=torch.Generator().manual_seed(0)) if not y.is_complex() else \
            y + args.sigma * torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
        naive = op.adjoint(y).real
        start = time.perf_counter()
        result = imaging.least_squares(op, y, lam="auto", noise_level=args.sigma, regulariser=FiniteDifference(),
                                       tol=1e-6, max_iter=300)
        seconds = time.perf_counter() - start
        x = result.x.real
        rows.append((name, naive, x, psnr(naive.clamp(0, 1), truth).item(), psnr(x, truth).item(),
                     ssim(x, truth).item(), result.lam, seconds))

    print(f"\n{'problem':30s} {'naive PSNR':>10s} {'PSNR':>7s} {'SSIM':>6s} {'λ (auto)':>9s} {'time':>7s}")
    for name, _, _, p_naive, p, s, lam, seconds in rows:
        print(f"{name:30s} {p_naive:10.2f} {p:7.2f} {s:6.3f} {lam:9.2e} {seconds:6.2f}s")

    fig, axes = plt.subplots(len(rows), 4, figsize=(11, 2.8 * len(rows)), layout="constrained")
    for row, (name, naive, x, p_naive, p, s, _, _) in zip(axes, rows):
        panels = [(truth[0], "truth"), (naive[0], f"A^H y  ({p_naive:.1f} dB)"),
                  (x[0], f"regularised LS ({p:.1f} dB, SSIM {s:.2f})")]
        for ax, (image, title) in zip(row, panels):
            ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
        error = row[3].imshow((x - truth)[0, 0].abs().numpy(), cmap="magma", vmin=0, vmax=0.2)
        row[3].set_title("|error|", fontsize=8)
        fig.colorbar(error, ax=row[3], fraction=0.046)
        row[0].set_ylabel(name, fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("imaging: one operator abstraction, six inverse problems", fontsize=11)
    path = save_figure(fig, f"{args.out}/reconstruct.png")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
