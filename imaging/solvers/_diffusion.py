"""What the diffusion samplers used as inverse-problem solvers share (DPS, DiffPIR, DDRM): the problem check, the
timestep schedule, the DDIM-type update and the stopping rule of a fixed schedule."""
from __future__ import annotations

import math

import torch

from imaging.operators.base import Operator
from imaging.priors.generative import DiffusionPrior
from imaging.solvers._variational import check_measurement, problem_first


def check_problem(A, y, prior, who: str, steps: int, noise_level: float | None, *,
                  noise_required: bool = False) -> tuple:
    """(A, y, prior) checked: the problem first, a `DiffusionPrior`, finite measurements, 1 <= steps <= T and a
    finite noise level >= 0 (or None, unless `noise_required`)."""
    A, y, prior = problem_first(A, y, prior, DiffusionPrior, who)
    y = check_measurement(A, y, who)
    if not (isinstance(steps, int) and 1 <= steps <= prior.num_timesteps):
        raise ValueError(f"{who}: argument 'steps' must be an integer in [1, {prior.num_timesteps}], got {steps!r}")
    if noise_level is None and noise_required:
        raise ValueError(f"{who}: argument 'noise_level' is required (σ per measurement entry; "
                         f"imaging.estimate_noise(y, A) estimates it)")
    if noise_level is not None and not (isinstance(noise_level, (int, float)) and math.isfinite(noise_level)
                                        and noise_level >= 0):
        raise ValueError(f"{who}: argument 'noise_level' must be a finite number >= 0, got {noise_level!r}")
    return A, y, prior


def timesteps(prior: DiffusionPrior, steps: int, spacing: str = "uniform") -> list[int]:
    """Descending timesteps: "uniform" t = T − T/K, …, T/K, 0 (every T/K-th, as DDIM and DDRM respace), or
    "quadratic" t_i = round((i/(K−1))² (T − 1)), denser near t = 0 (DiffPIR's "quad" skipping)."""
    T = prior.num_timesteps
    if spacing == "uniform":
        return list(range(0, T, T // steps))[::-1][:steps]
    if spacing == "quadratic":
        if steps == 1:
            return [T - 1]
        return sorted({round((i / (steps - 1)) ** 2 * (T - 1)) for i in range(steps)}, reverse=True)
    raise ValueError(f"argument 'spacing' must be 'uniform' or 'quadratic', got {spacing!r}")


def alpha_bar(prior: DiffusionPrior, t: int) -> float:
    """ᾱ_t, with ᾱ = 1 at t < 0 (the end of the schedule)."""
    return 1.0 if t < 0 else float(prior.alphas_cumprod[t])


def ddim_update(x0: torch.Tensor, eps: torch.Tensor, abar_prev: float, sigma: float,
                noise: torch.Tensor) -> torch.Tensor:
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z (Song et al., DDIM, eq. 12); σ² = η² β̃ gives DDIM(η),
    η = 1 the DDPM ancestral step on the respaced schedule."""
    return abar_prev ** 0.5 * x0 + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps + sigma * noise


def ancestral_sigma(abar: float, abar_prev: float, eta: float) -> float:
    """σ of DDIM(η) between ᾱ_t and ᾱ_{t'}: η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'})."""
    return eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5


def data_rms(A: Operator, x: torch.Tensor, y: torch.Tensor) -> float:
    """RMS of A(x) − y over all samples and entries (image units)."""
    r = A(x) - y
    return float((r.abs() ** 2).mean()) ** 0.5
