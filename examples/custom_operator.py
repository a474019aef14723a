"""Plug in your own forward operator: write `forward` only, get the adjoint from autograd, reconstruct.

The operator here models a low-cost camera: a 5×5 defocus blur, 2×2 pixel binning and a fixed per-pixel
sensitivity map. Nothing but `forward` is written; `imaging.testing.dot_test` confirms the derived adjoint, and
`imaging.least_squares` reconstructs min ½‖A x − y‖² + ½ λ ‖∇x‖². Writes out/custom_operator.png.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import imaging  # noqa: E402
from imaging.data import load_image  # noqa: E402
from imaging.metrics import psnr, ssim  # noqa: E402
from imaging.operators import FiniteDifference, GaussianNoise, LinearOperator  # noqa: E402
from imaging.plotting import save_figure, to_display  # noqa: E402


class CheapCamera(LinearOperator):
    """Defocus (disk kernel) -> 2x2 binning -> sensitivity map. Only `forward` is written."""

    def __init__(self, size: int) -> None:
        super().__init__()
        r = torch.arange(5, dtype=torch.float64) - 2
        disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= 4.5).double()
        self.register_buffer("psf", (disk / disk.sum())[None, None])
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("sensitivity", 0.8 + 0.4 * torch.rand(size // 2, size // 2, generator=gen,
                                                                     dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.psf.to(x.dtype))
        return F.avg_pool2d(blurred, 2) * self.sensitivity.to(x.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lam", type=float, default=3e-3)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()

    truth = load_image("astronaut", size=args.size, channels=1)
    camera = CheapCamera(args.size)
    y = GaussianNoise(0.005)(camera(truth), generator=torch.Generator().manual_seed(1))
    print(f"dot test of the autograd-derived adjoint: {imaging.testing.dot_test(camera, truth):.2e}")

    result = imaging.least_squares(camera, y, lam=args.lam, regulariser=FiniteDifference(), max_iter=500,
                                   tol=1e-7, progress=True)
    upsampled = F.interpolate(y / camera.sensitivity, scale_factor=2, mode="bilinear")
    print(f"bilinear upsampling: PSNR {psnr(upsampled.clamp(0, 1), truth).item():.2f} dB")
    print(f"regularised LS:      PSNR {psnr(result.x, truth).item():.2f} dB, SSIM {ssim(result.x, truth).item():.3f}"
          f" ({result.iterations} CG iterations, converged={result.converged})")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), layout="constrained")
    panels = [(truth[0], "truth"), (y[0], f"measurement ({y.shape[-2]}×{y.shape[-1]})"),
              (result.x[0], f"reconstruction ({psnr(result.x, truth).item():.1f} dB)")]
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    print(f"wrote {save_figure(fig, f'{args.out}/custom_operator.png')}")


if __name__ == "__main__":
    main()
