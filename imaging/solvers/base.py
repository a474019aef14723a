"""The loop every iterative solver shares: stopping, history, callbacks, NaN detection, progress bar."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm


@dataclass
class Result:
    """What `run` returns: the estimate, per-iteration metrics, iterations done and whether `tol` was reached."""

    x: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    n_iter: int = 0
    converged: bool = False


class IterativeSolver:
    """Base class: subclasses implement `init(x0) -> state`, `step(state) -> (state, metrics)` and `estimate(state)`.

    `metrics` is a dict of floats; the loop stops when metrics["residual"] <= tol or after max_iter steps, records
    every metric in the history, calls `callback(iteration, state, metrics)` (returning True stops early), raises
    FloatingPointError on a non-finite metric, and shows a tqdm bar when `progress=True`. The loop runs under
    torch.no_grad(): no autograd graph is kept across iterations.
    """

    name = "solver"

    def __init__(self, max_iter: int = 100, tol: float = 1e-6, progress: bool = False,
                 callback: Callable[[int, Any, dict], bool | None] | None = None) -> None:
        if max_iter < 0:
            raise ValueError(f"{type(self).__name__}: argument 'max_iter' must be >= 0, got {max_iter}")
        self.max_iter, self.tol, self.progress, self.callback = max_iter, tol, progress, callback

    def init(self, x0: torch.Tensor | None) -> Any:
        raise NotImplementedError

    def step(self, state: Any) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError

    def estimate(self, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x0: torch.Tensor | None = None) -> Result:
        history: dict[str, list[float]] = {}
        converged = False
        n_iter = 0
        with torch.no_grad():
            state = self.init(x0)
            bar = tqdm(range(self.max_iter), desc=self.name, disable=not self.progress, leave=False)
            for _ in bar:
                state, metrics = self.step(state)
                n_iter += 1
                for key, value in metrics.items():
                    if not math.isfinite(value):
                        raise FloatingPointError(f"{type(self).__name__}: {key} became {value} at iteration "
                                                 f"{n_iter}; check the inputs and step sizes")
                    history.setdefault(key, []).append(value)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()}, refresh=False)
                stop = self.callback(n_iter, state, metrics) if self.callback is not None else False
                converged = metrics.get("residual", math.inf) <= self.tol
                if converged or stop:
                    break
            bar.close()
        return Result(self.estimate(state), history, n_iter, converged)
