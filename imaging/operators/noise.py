r"""Noise models: sample measurements y ~ p(y | A x) and evaluate the negative log-likelihood (data fidelity)."""
from __future__ import annotations

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """y = z + σ n, n ~ N(0, I) (circular complex normal with E|n|² = 1 for complex z).

    nll(y, z) = ‖z − y‖² / (2σ²).
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"GaussianNoise: argument 'sigma' must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else z.device
        noise = torch.randn(z.shape, dtype=z.dtype, generator=generator, device=device).to(z.device)
        return z + self.sigma * noise

    def nll(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-sample negative log-likelihood up to a constant, shape (N,)."""
        return (z - y).abs().pow(2).flatten(1).sum(1) / (2 * self.sigma ** 2)


class PoissonNoise(nn.Module):
    """y = Poisson(gain · z) / gain for intensities z ≥ 0; `gain` = photons per unit intensity (higher = less noise).

    nll(y, z) = Σ gain·z − gain·y·log(gain·z), up to a constant.
    """

    def __init__(self, gain: float) -> None:
        super().__init__()
        if gain <= 0:
            raise ValueError(f"PoissonNoise: argument 'gain' must be > 0, got {gain}")
        self.gain = float(gain)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if z.is_complex():
            raise TypeError("PoissonNoise: intensities must be real, got a complex tensor")
        if (z < 0).any():
            raise ValueError("PoissonNoise: intensities must be non-negative")
        device = generator.device if generator is not None else z.device
        return torch.poisson((self.gain * z).to(device), generator=generator).to(z.device) / self.gain

    def nll(self, y: torch.Tensor, z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
        """Per-sample negative log-likelihood up to a constant, shape (N,)."""
        rate = self.gain * z
        return (rate - self.gain * y * torch.log(rate.clamp_min(eps))).flatten(1).sum(1)
