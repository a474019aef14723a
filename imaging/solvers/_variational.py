"""What RED-Diff and FLAIR share: the measurement check, the starting image, the data misfit, seeded noise and the
stopping rule of a fixed schedule."""
from __future__ import annotations

import warnings

import torch

from imaging.operators.base import LinearOperator, Operator


def problem_first(A, y, prior, prior_type: type, who: str) -> tuple:
    """(A, y, prior) of a solver called, as every solver is, with the problem first: `Solver(A, y, prior)`. The
    earlier order `Solver(prior, A, y)` still works for one release, with a DeprecationWarning."""
    if isinstance(A, prior_type) and not isinstance(prior, prior_type):
        warnings.warn(f"{who}(prior, A, y) is deprecated: pass the problem first, {who}(A, y, prior)",
                      DeprecationWarning, stacklevel=3)
        A, y, prior = y, prior, A
    if not isinstance(prior, prior_type):
        raise TypeError(f"{who}: argument 'prior' must be a {prior_type.__name__}, got {type(prior).__name__}")
    return A, y, prior


def check_measurement(operator: Operator, y: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(operator, Operator) and not callable(operator):
        raise TypeError(f"{who}: argument 'A' must be an imaging Operator or a callable, got "
                        f"{type(operator).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() < 2:
        raise ValueError(f"{who}: argument 'y' must be a batched tensor (N, ...), got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{who}: argument 'y' contains NaN or infinite values")
    return y


def starting_image(operator: Operator, y: torch.Tensor, x0: torch.Tensor | None, image_range: tuple[float, float],
                   who: str) -> torch.Tensor:
    """x0 if given, else the pseudo-inverse A⁺y of a linear operator, clipped to the image range."""
    if x0 is None:
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"{who}: a nonlinear operator has no pseudo-inverse; pass the starting image x0")
        x0 = operator.pinv(y, warn=False)  # a starting image: an inexact one is fine
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(f"{who}: argument 'x0' contains NaN or infinite values")
    with torch.no_grad():
        x = operator(x0)
    if x.shape != y.shape:
        raise ValueError(f"{who}: the operator maps x0 {tuple(x0.shape)} to {tuple(x.shape)}, which does not match "
                         f"y {tuple(y.shape)}")
    return x0.detach().clamp(*image_range)


def squared_misfit(operator: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖A(x) − y‖² per sample, (N,)."""
    r = operator(x) - y
    return (r.abs() ** 2 if r.is_complex() else r * r).flatten(1).sum(1)


class SeededNoise:
    """Standard normal draws from CPU generators (the same numbers on every device), then moved to `like`'s device:
    one generator for the whole batch (`seed` an int, or None: random), or one per sample (`seed` a list of ints:
    sample i draws what a batch of one seeded with seed[i] draws, so batching does not change its answer)."""

    def __init__(self, seed: int | list[int] | tuple[int, ...] | None) -> None:
        if isinstance(seed, (list, tuple)):
            if not seed or any(isinstance(s, bool) or not isinstance(s, int) for s in seed):
                raise ValueError(f"seed: expected an int, None or a non-empty list of ints (one per sample), got "
                                 f"{seed!r}")
            self.generators = [torch.Generator().manual_seed(s) for s in seed]
        else:
            self.generators = [torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2 ** 63)]
        self.per_sample = isinstance(seed, (list, tuple))

    def like(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_sample:
            return torch.randn(x.shape, generator=self.generators[0], dtype=x.dtype).to(x.device)
        if x.shape[0] != len(self.generators):
            raise ValueError(f"seed: {len(self.generators)} seeds (one per sample) for a batch of {x.shape[0]}")
        draws = [torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype) for g in self.generators]
        return torch.cat(draws).to(x.device)


def schedule_check(done: int, total: int, data_rms: float, noise_level: float | None) -> tuple[bool, str]:
    """The stopping rule of a fixed-schedule solver: the schedule finished and, given σ, data RMS <= 1.1 σ."""
    if done < total:
        return False, f"{done} of {total} scheduled steps"
    if noise_level is not None and data_rms > 1.1 * noise_level:
        return False, (f"data RMS {data_rms:.3g} above 1.1 × noise_level {noise_level:g} after the whole schedule "
                       f"(more steps, a weaker prior or larger data steps)")
    return True, ""
