"""The loop every iterative solver shares: stopping, history, callbacks, NaN detection, progress bar."""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from imaging._progress import progress_bar
from imaging.linalg import ConvergenceWarning  # noqa: F401 (defined with the CG, re-exported here)
from imaging.operators.base import LinearOperator, check_linearity as probe_linearity

LOGGER = logging.getLogger("imaging")


@dataclass
class Result:
    """What `run` returns: the estimate, per-iteration metrics, iterations done and whether the solver's stopping
    rule was met (`converged`)."""

    x: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    iterations: int = 0
    converged: bool = False
    lam: float | None = None  # the regularisation weight chosen by lam="auto" (None when it was given)
    parameter_search: Any = None  # how it was chosen (`imaging.solvers.parameter_choice.ParameterSearch`)

    @property
    def n_iter(self) -> int:
        """Deprecated name of `iterations` (one release)."""
        warnings.warn("Result.n_iter is deprecated; use Result.iterations", DeprecationWarning, stacklevel=2)
        return self.iterations


def real_part(t: torch.Tensor) -> torch.Tensor:
    """t, or its real part when complex (Aᴴ of complex measurements of a real image)."""
    return t.real if t.is_complex() else t


def adjoint_of(A, y: torch.Tensor, who: str) -> torch.Tensor:
    """Aᴴy, with a clear error when it overflows the dtype (an operator or data scaled far from 1 in float32)."""
    out = A.adjoint(y)
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(f"{who}: Aᴴy has non-finite values although y is finite: the operator's scale is too "
                                 f"large for {out.dtype}; rescale A (and y) or use float64")
    return out


def unknown_like(A, y: torch.Tensor, x_like: torch.Tensor | None, who: str = "solver") -> torch.Tensor:
    """A tensor shaped like the unknown: `x_like` when given (checked: A of it has y's shape), else Aᴴy (its real
    part for complex measurements)."""
    if x_like is None:
        return real_part(adjoint_of(A, y, who))
    with torch.no_grad():
        out = A(x_like)
    if out.shape != y.shape:
        raise ValueError(f"{who}: argument 'x_like' (or 'x0') has shape {tuple(x_like.shape)}, but A maps it to "
                         f"{tuple(out.shape)}, not to the shape of y {tuple(y.shape)}")
    return x_like


def check_start(x0: torch.Tensor | None, like: torch.Tensor, who: str) -> None:
    """A start x0, when given, must be a tensor of the unknown's shape."""
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != like.shape):
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"{who}: argument 'x0' must have the unknown's shape {tuple(like.shape)}, got {got}")


def check_option(value, who: str, name: str, *, integer: bool = False, positive: bool = False) -> None:
    """A solver option: a finite real number >= 0 (> 0 with `positive`; an int up to 2**62 with `integer`), else a
    ValueError naming it (NaN fails too)."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value >= 0 and \
        not (positive and value == 0) and not (integer and value > 2 ** 62)
    if not ok:
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{who}: argument '{name}' must be {what} {'>' if positive else '>='} 0, got {value!r}")


NONLINEAR_SOLVERS = "RedDiff, Flair"  # the solvers that accept a nonlinear Operator


def check_linearity(A: LinearOperator, like: torch.Tensor, who: str) -> None:
    """The operators' linearity probe (`imaging.operators.base.check_linearity`: once per operator, shape and
    state), its error naming the solvers that take a nonlinear forward model."""
    probe_linearity(A, like, who, hint=f"subclass Operator for a nonlinear model and use {NONLINEAR_SOLVERS}")


def require_linear(A, who: str) -> None:
    """A TypeError naming the solvers that accept a nonlinear operator, unless A is a `LinearOperator`."""
    if not isinstance(A, LinearOperator):
        raise TypeError(f"{who}: argument 'A' must be a LinearOperator (it uses the adjoint), got "
                        f"{type(A).__name__}; the solvers that accept a nonlinear forward model are "
                        f"{NONLINEAR_SOLVERS}, or wrap a linear map in a LinearOperator subclass")


def box_bounds(box, who: str, lower: float | None = None, upper: float | None = None
               ) -> tuple[float | None, float | None]:
    """(lower, upper) from `box=(lower, upper)` (either may be None), checked; `lower`/`upper` are the deprecated
    keyword spelling of some solvers (one release)."""
    if lower is not None or upper is not None:
        if box is not None:
            raise ValueError(f"{who}: give the bounds as box=(lower, upper), not also as 'lower'/'upper'")
        warnings.warn(f"{who}: arguments 'lower'/'upper' are deprecated; use box=(lower, upper)", DeprecationWarning,
                      stacklevel=3)
        box = (lower, upper)
    if box is None:
        return None, None
    try:
        low, high = box
    except (TypeError, ValueError):
        raise ValueError(f"{who}: argument 'box' must be (lower, upper), got {box!r}") from None
    for value in (low, high):
        if value is not None and (not isinstance(value, (int, float)) or math.isnan(value)):
            raise ValueError(f"{who}: argument 'box' must hold numbers or None, got {box!r}")
    if low is not None and high is not None and not low <= high:
        raise ValueError(f"{who}: argument 'box' must have lower <= upper, got {box!r}")
    return low, high


class DivergenceError(FloatingPointError):
    """A solver's objective (or iterate) blew up: `x` is the last iterate before the blow-up began, reached at
    iteration `iteration`."""

    def __init__(self, message: str, x: torch.Tensor, iteration: int) -> None:
        super().__init__(message)
        self.x, self.iteration = x, iteration


class _BlowUpWatch:
    """Divergence: the watched quantity grew at every one of the last `streak` iterations, by a factor of at least
    `factor` per iteration on average over them, and is more than `total` times its first value. Convergent
    iterations, monotone or not, do not grow geometrically for long (from a zero start an iterate grows about
    linearly); a step above the stability limit does, long before it overflows."""

    factor, streak, total = 1.1, 10, 1e6

    def __init__(self) -> None:
        self.first: float | None = None
        self.recent: list[float] = []
        self.good_state, self.good_iteration, self.iteration = None, 0, 0

    def diverged(self, value: float, previous_state: Any) -> bool:
        value = abs(value)
        self.iteration += 1
        if self.first is None:
            self.first, self.recent, self.good_state = value, [value], previous_state
            return False
        if value <= self.recent[-1]:  # not growing: the growth (if any) starts after this iterate
            self.recent = []
        if not self.recent:
            self.good_state, self.good_iteration = previous_state, self.iteration - 1
        self.recent = (self.recent + [value])[-(self.streak + 1):]
        tiny = torch.finfo(torch.float64).tiny
        return (len(self.recent) > self.streak and value > self.total * max(self.first, tiny)
                and value >= self.factor ** self.streak * self.recent[0])


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
        who = getattr(self, "owner", type(self).__name__)
        if not isinstance(max_iter, int) or isinstance(max_iter, bool) or not 0 <= max_iter <= 2 ** 62:
            raise ValueError(f"{who}: argument 'max_iter' must be >= 0, an integer up to 2**62, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):  # NaN fails too
            raise ValueError(f"{who}: argument 'tol' must be a number >= 0, got {tol!r}")
        self.max_iter, self.tol, self.progress, self.callback = max_iter, tol, progress, callback

    def init(self, x0: torch.Tensor | None) -> Any:
        raise NotImplementedError

    def step(self, state: Any) -> tuple[Any, dict[str, float]]:
        raise NotImplementedError

    def estimate(self, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def size(self, state: Any) -> float | None:
        """A cheap magnitude of the iterate (e.g. its largest per-sample norm) that the loop watches for a blow-up
        when the solver reports no "objective"; None (default): not watched."""
        return None

    def final_check(self, state: Any, metrics: dict[str, float]) -> tuple[bool, str] | None:
        """(converged, what was reached) for solvers whose rule is not `residual <= tol`, checked once after the
        last iteration; None (default) keeps the `residual <= tol` rule."""
        return None

    def initial_metrics(self, state: Any) -> dict[str, float] | None:
        """Metrics of the starting point, recorded as the history's first entry (None, default: not recorded).
        A "residual" <= tol there means the start already meets the stopping rule: no step is taken."""
        return None

    def should_stop(self, state: Any) -> str | None:
        """Why the solver cannot go on (e.g. a budget spent, a failed line search), checked after each step; None
        (default) lets it continue. A stop for a reason is not convergence: a `ConvergenceWarning` names it."""
        return None

    def finish(self, result: Result, state: Any) -> Result:
        """The returned result, from the loop's `Result` and the last state (solvers with more fields override)."""
        return result

    def search_parameter(self, x0: torch.Tensor | None) -> Result:
        """Solvers that take lam="auto" override this: solve for a few λ and keep one (see parameter_choice)."""
        raise NotImplementedError

    def run(self, x0: torch.Tensor | None = None, *, warn: bool = True) -> Result:
        if getattr(self, "parameter_rule", None) is not None:
            return self.search_parameter(x0)
        history: dict[str, list[float]] = {}
        converged, stop, metrics, reason = False, False, {}, None
        n_iter = 0
        with torch.no_grad():
            state = self.init(x0)
            start = self.initial_metrics(state)
            for key, value in (start or {}).items():
                history.setdefault(key, []).append(value)
            converged = start is not None and start.get("residual", math.inf) <= self.tol
            watch = _BlowUpWatch()
            bar = progress_bar(range(0 if converged else self.max_iter), desc=self.name, enabled=self.progress)
            for _ in bar:
                previous = state
                state, metrics = self.step(state)
                n_iter += 1
                for key, value in metrics.items():
                    if not math.isfinite(value):
                        who = getattr(self, "owner", type(self).__name__)
                        raise FloatingPointError(f"{who}: {key} became {value} at iteration {n_iter}; check the "
                                                 f"inputs and step sizes (far from unit scale: rescale A and y, or "
                                                 f"use float64)")
                    history.setdefault(key, []).append(value)
                size = metrics.get("objective", self.size(state))
                if size is not None and watch.diverged(size, previous):
                    raise DivergenceError(
                        f"{type(self).__name__}: diverged: its {'objective' if 'objective' in metrics else 'iterate'}"
                        f" grew geometrically to {size:.3g} by iteration {n_iter} (from {watch.first:.3g}); lower the "
                        f"step size (e.g. tau/step) or check the operator; the exception's .x is the iterate before "
                        f"the blow-up", self.estimate(watch.good_state), watch.good_iteration)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()}, refresh=False)
                stop = self.callback(n_iter, state, metrics) if self.callback is not None else False
                converged = metrics.get("residual", math.inf) <= self.tol
                reason = None if converged or stop else self.should_stop(state)
                if converged or stop or reason:
                    break
            bar.close()
            reached = f"residual {history['residual'][-1]:.3g} > tol {self.tol:g}" if history.get("residual") else ""
            check = self.final_check(state, metrics) if n_iter > 0 else None
            if check is not None:
                converged, reached = check
            if not converged and not stop and warn and reason:
                warnings.warn(f"{self.name}: stopped before its stopping rule was met: {reason}", ConvergenceWarning,
                              stacklevel=2)
            elif not converged and not stop and warn and self.max_iter > 0:
                warnings.warn(f"{self.name}: stopped by max_iter={self.max_iter} before its stopping rule was met: "
                              f"{reached}", ConvergenceWarning, stacklevel=2)
        LOGGER.debug("%s: %d iterations, converged=%s", self.name, n_iter, converged)
        return self.finish(Result(self.estimate(state), history, n_iter, converged), state)
