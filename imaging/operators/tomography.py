r"""Parallel-beam Radon transform for CT, with its matched (exact) adjoint, the backprojection.

For angle θ and detector offset s (pixels from the centre), the ray is {s·(cos θ, sin θ) + t·(−sin θ, cos θ)}, and

    (R f)(θ, s) = Σ_t f(s cos θ − t sin θ, s sin θ + t cos θ) · Δt,   Δt = 1 pixel,

with bilinear interpolation of f (zero outside the image; x to the right, y down the rows). The sum runs over
`n_detectors` samples per ray, enough to cross the whole image. The adjoint is the exact transpose of this discrete
sum (scatter of the same bilinear weights), so CG and PDHG see a matched pair.
Images (N, C, H, W) -> sinograms (N, C, n_angles, n_detectors).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imaging.operators.base import LinearOperator, check_input, check_shape, check_size

_POINTS_PER_CHUNK = 1 << 22


class Radon(LinearOperator):
    """Parallel-beam projector for images of size `image_shape` = (H, W).

    Args:
        image_shape: (H, W).
        angles: projection angles in radians (1-D tensor or sequence), or an int n for n angles uniform in [0, π).
        n_detectors: detector bins (spacing one pixel); default ceil(sqrt(H² + W²)) so rays cover the image.
    """

    def __init__(self, image_shape: tuple[int, int], angles: int | torch.Tensor = 180,
                 n_detectors: int | None = None) -> None:
        super().__init__()
        h, w = check_shape(image_shape, "Radon", "image_shape", 2, " (H, W)")
        if isinstance(angles, int):
            angles = check_size(angles, "Radon", "angles")
            angles = torch.arange(angles, dtype=torch.float64) * math.pi / angles
        angles = torch.as_tensor(angles, dtype=torch.float64).flatten()
        if angles.numel() == 0 or not bool(torch.isfinite(angles).all()):
            raise ValueError("Radon: argument 'angles' must hold at least one finite angle (radians)")
        self.image_shape = (h, w)
        self.n_detectors = check_size(n_detectors, "Radon", "n_detectors") if n_detectors is not None else \
            math.ceil(math.hypot(h, w))
        self.register_buffer("angles", angles)

    def _grids(self, dtype: torch.dtype):
        """Yield (angle slice, sampling grid (1, a·n_det, n_t, 2)) in chunks bounded by _POINTS_PER_CHUNK."""
        h, w = self.image_shape
        n = self.n_detectors
        offsets = torch.arange(n, dtype=torch.float64, device=self.angles.device) - (n - 1) / 2
        chunk = max(1, _POINTS_PER_CHUNK // (n * n))
        for start in range(0, self.angles.numel(), chunk):
            theta = self.angles[start:start + chunk, None, None]
            s, t = offsets[None, :, None], offsets[None, None, :]
            x = s * torch.cos(theta) - t * torch.sin(theta)
            y = s * torch.sin(theta) + t * torch.cos(theta)
            grid = torch.stack((2 * x / w, 2 * y / h), dim=-1).reshape(1, -1, n, 2)
            yield slice(start, start + theta.shape[0]), grid.to(dtype)

    def _check(self, x: torch.Tensor, arg: str, shape: tuple[int, int]) -> torch.Tensor:
        check_input(self, x, arg)
        if x.dim() != 4 or tuple(x.shape[-2:]) != shape:
            raise ValueError(f"Radon: argument '{arg}' must have shape (N, C, {shape[0]}, {shape[1]}), "
                             f"got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, "x", self.image_shape)
        if x.is_complex():
            return torch.complex(self.forward(x.real), self.forward(x.imag))
        nb, c, h, w = x.shape
        image = x.reshape(1, nb * c, h, w)
        parts = []
        for _, grid in self._grids(x.dtype):
            samples = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            parts.append(samples.sum(-1).reshape(nb, c, -1, self.n_detectors))
        return torch.cat(parts, dim=2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, "y", (self.angles.numel(), self.n_detectors))
        if y.is_complex():
            return torch.complex(self.adjoint(y.real), self.adjoint(y.imag))
        nb, c = y.shape[:2]
        h, w = self.image_shape
        image = y.new_zeros(1, nb * c, h, w)
        out = y.new_zeros(1, nb * c, h, w)
        for angles, grid in self._grids(y.dtype):
            rays = y[:, :, angles].reshape(1, nb * c, -1, 1).expand(-1, -1, -1, self.n_detectors)
            out += torch.ops.aten.grid_sampler_2d_backward(rays, image, grid, 0, 0, False, [True, False])[0]
        return out.reshape(nb, c, h, w)
