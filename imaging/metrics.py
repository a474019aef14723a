"""Image-quality metrics, batched: thin wrappers over scikit-image. Inputs (N, C, H, W); one value per sample.
`oracle` picks the parameter value of a reconstruction that scores best against the truth (for baselines)."""
from __future__ import annotations

import math

import numpy as np
import torch


def _pairs(x: torch.Tensor, reference: torch.Tensor, name: str):
    if x.shape != reference.shape or x.dim() != 4:
        raise ValueError(f"{name}: arguments 'x' and 'reference' must both have shape (N, C, H, W), got "
                         f"{tuple(x.shape)} and {tuple(reference.shape)}")
    to_numpy = lambda t: (t.abs() if t.is_complex() else t).detach().cpu().double().numpy()  # noqa: E731
    return zip(to_numpy(x), to_numpy(reference))


def _data_range(data_range: object, name: str) -> float:
    try:
        value = float(data_range)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: argument 'data_range' must be a finite number > 0 (the span of the values, 1.0 "
                         f"for images in [0, 1]), got {data_range!r}")
    return value


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample, 10 log10(range² / MSE); complex inputs compare magnitudes."""
    from skimage.metrics import peak_signal_noise_ratio

    data_range = _data_range(data_range, "psnr")
    return torch.tensor([peak_signal_noise_ratio(r, np.asarray(a), data_range=data_range)
                         for a, r in _pairs(x, reference, "psnr")])


def ssim(x: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per sample (scikit-image, Gaussian-weighted, averaged over channels)."""
    from skimage.metrics import structural_similarity

    data_range = _data_range(data_range, "ssim")
    return torch.tensor([structural_similarity(r, a, data_range=data_range, channel_axis=0, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False)
                         for a, r in _pairs(x, reference, "ssim")])


def oracle(solve, values, reference: torch.Tensor, metric=psnr) -> tuple[torch.Tensor, object, float]:
    """(x, value, score) for the value of a parameter whose reconstruction `solve(value)` (an (N, C, H, W) tensor, or
    anything with `.x`) scores best against the truth, by the mean `metric` over the batch (clamped to [0, 1] for
    scoring). An oracle: it needs the ground truth, so it is a baseline's upper bound, not a way to choose λ for a
    measurement (for that, lam="auto" with the noise level)."""
    best = None
    for value in values:
        x = solve(value)
        x = getattr(x, "x", x)
        score = float(metric(x.clamp(0, 1) if not x.is_complex() else x, reference).mean())
        if best is None or score > best[2]:
            best = (x, value, score)
    if best is None:
        raise ValueError("oracle: argument 'values' is empty")
    return best
