r"""Noise models: sample measurements y ~ p(y | A x) and evaluate the negative log-likelihood (data fidelity)."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """y = z + σ n, n ~ N(0, I) (circular complex normal with E|n|² = 1 for complex z).

    nll(y, z) = ‖z − y‖² / (2σ²).
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"GaussianNoise: argument 'sigma' must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:.4g}"

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
        if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
            raise ValueError(f"PoissonNoise: argument 'gain' must be a finite number > 0, got {gain!r}")
        self.gain = float(gain)

    def extra_repr(self) -> str:
        return f"gain={self.gain:.4g}"

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if z.is_complex():
            raise TypeError("PoissonNoise: intensities must be real, got a complex tensor")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("PoissonNoise: argument 'z' (the intensities) must be finite, got NaN or inf values")
        if (z < 0).any():
            raise ValueError("PoissonNoise: intensities must be non-negative")
        device = generator.device if generator is not None else z.device
        return torch.poisson((self.gain * z).to(device), generator=generator).to(z.device) / self.gain

    def nll(self, y: torch.Tensor, z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
        """Per-sample negative log-likelihood up to a constant, shape (N,)."""
        rate = self.gain * z
        return (rate - self.gain * y * torch.log(rate.clamp_min(eps))).flatten(1).sum(1)


def estimate_noise(y: torch.Tensor, A=None) -> float:
    r"""Estimate σ, the standard deviation of white Gaussian noise per measurement entry (E|n|² = σ²), from `y`.

    Two estimators, tried in this order:

    1. **Unobserved entries** (needs a `LinearOperator` `A`): entries of y that no image reaches (A Aᴴ is zero
       there, e.g. the missing pixels of `Inpainting`, the unsampled k-space of `MRI`, when the noise was added to
       every entry of A x) hold pure noise: σ² = mean |y_i|² over them (at least 64 such entries).
    2. **Image-shaped y** (real, (..., H, W) with H, W ≥ 16: images, blurred or down-sampled images, sinograms):
       the weak-texture PCA estimator of Liu, Tanaka and Okutomi (2013): the 7×7 patches whose gradient energy is
       what noise alone would give (99 % quantile of its Gamma law) are kept, iteratively, and σ² is the mean of the
       covariance eigenvalues' flat tail (the first tail whose mean is at most its median, Chen et al. 2015).
       Planes (leading dimensions) are estimated one by one and combined as √(mean σ²). When no selection keeps
       enough patches (small or detailed images at low noise, e.g. a 16×16 down-sampled picture: 3–19× too high
       at σ = 0.005), the estimate comes from all patches, texture included, and a `UserWarning` says so.
       scikit-image's wavelet estimator (`skimage.restoration.estimate_sigma`) overestimates low noise on natural
       images (2.4× at σ = 0.005 on Set12), which is why it is not used here.

    Anything else (compressed measurements (N, m), complex k-space without unobserved entries) raises a
    `ValueError` asking for σ. The result counts all noise in y: 8-bit photographs carry 0.3–2 grey levels of their
    own (0.001–0.008), which is added in quadrature to any noise added on top.
    """
    from imaging.operators.base import LinearOperator

    if not isinstance(y, torch.Tensor):
        raise TypeError(f"estimate_noise: argument 'y' must be a torch.Tensor, got {type(y).__name__}")
    if y.numel() == 0 or not bool(torch.isfinite(y).all()):
        raise ValueError("estimate_noise: argument 'y' must be non-empty and finite")
    if A is not None and not isinstance(A, LinearOperator):
        raise TypeError(f"estimate_noise: argument 'A' must be a LinearOperator or None, got {type(A).__name__}")
    if A is not None:
        sigma = _unobserved_entries_sigma(y, A)
        if sigma is not None:
            return sigma
    if not y.is_complex() and y.dim() >= 2 and min(y.shape[-2:]) >= 16:
        planes = y.detach().reshape(-1, *y.shape[-2:]).double().cpu()
        estimates = [_weak_texture_sigma(plane) for plane in planes]
        sigma = float(torch.tensor([value ** 2 for value, _ in estimates]).mean().sqrt())
        if any(rounds == 0 for _, rounds in estimates):
            warnings.warn(f"estimate_noise: y ({'×'.join(map(str, y.shape[-2:]))} per plane) has too few flat "
                          f"patches to tell its noise from its texture, so the estimate {sigma:.3g} may be several "
                          f"times too high (small or detailed images, low noise); pass noise_level=σ if you know it",
                          UserWarning, stacklevel=2)
        return sigma
    raise ValueError(f"estimate_noise: cannot estimate the noise level of measurements shaped {tuple(y.shape)}"
                     f"{' (complex)' if y.is_complex() else ''}: they are not images and "
                     f"{'the operator leaves no entry unobserved' if A is not None else 'no operator was given'}; "
                     "pass noise_level=σ (the noise standard deviation per measurement entry)")


def _unobserved_entries_sigma(y: torch.Tensor, A) -> float | None:
    """σ from the entries of y outside the reach of A (A Aᴴ g = 0 there for random g), or None."""
    generator = torch.Generator().manual_seed(0)
    reach = torch.zeros(y.shape, dtype=y.real.dtype)
    with torch.no_grad():
        for _ in range(2):
            g = torch.randn(y.shape, generator=generator, dtype=y.real.dtype).to(y.device, y.dtype)
            reach = reach + A(A.adjoint(g)).abs().to(reach.dtype).cpu()
    unobserved = reach <= 1e-9 * float(reach.max().clamp_min(torch.finfo(reach.dtype).tiny))
    count = int(unobserved.sum())
    if count < 64:
        return None
    values = y.detach().cpu()[unobserved]
    if not bool((values != 0).any()):  # noise added to the observed entries only: nothing to learn here
        return None
    return float((values.abs() ** 2).double().mean().sqrt())


def _flat_tail_variance(eigenvalues: torch.Tensor) -> float:
    """Mean of the first tail (descending eigenvalues) whose mean is at most its median: the noise variance."""
    for i in range(len(eigenvalues)):
        tail = eigenvalues[i:]
        if tail.mean() <= tail.median():
            return float(tail.mean())
    return float(eigenvalues[-1])


def _weak_texture_sigma(plane: torch.Tensor, confidence: float = 0.99, max_rounds: int = 8) -> tuple[float, int]:
    """(σ, the selection rounds that kept enough weak-texture patches); 0 rounds: σ comes from all patches, texture
    included, and is an over-estimate on detailed images."""
    from scipy.special import gammaincinv

    size = 7 if min(plane.shape) >= 48 else 5
    stride = 1 if plane.numel() <= 512 * 512 else 2
    patches = torch.nn.functional.unfold(plane[None, None], size, stride=stride)[0].T  # (count, size²)
    squares = patches.reshape(-1, size, size)
    energy = (squares[:, :, 1:] - squares[:, :, :-1]).pow(2).sum((1, 2)) + \
        (squares[:, 1:, :] - squares[:, :-1, :]).pow(2).sum((1, 2))
    differences = 2 * size * (size - 1)  # each difference of pure noise has variance 2σ²

    def variance(selected: torch.Tensor) -> float:
        centred = patches[selected] - patches[selected].mean(0)
        covariance = centred.T @ centred / max(len(centred) - 1, 1)
        return _flat_tail_variance(torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0))

    var = variance(torch.ones(len(patches), dtype=torch.bool))
    rounds = 0
    for _ in range(max_rounds):
        threshold = 2 * var * 2 * gammaincinv(differences / 2, confidence)  # Gamma(k/2, scale 2·2σ²) quantile
        selected = energy < threshold
        if int(selected.sum()) < 4 * size * size:
            break
        new = variance(selected)
        rounds += 1
        converged = abs(new - var) <= 1e-3 * var
        var = new
        if converged:
            break
    return var ** 0.5, rounds
