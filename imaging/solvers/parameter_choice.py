r"""Choosing the regularisation weight without the ground truth, from the noise level σ: `lam="auto"`.

A solver given `lam="auto"` (or a rule below) and `noise_level=σ` (estimated by `imaging.estimate_noise` when not
given) solves its problem for a handful of λ, warm-starting each solve from the nearest one before, and keeps one:

- `Discrepancy(tau=1.0)` (what "auto" means, except for denoising): the discrepancy principle, λ with
  ‖A x̂_λ − y‖² = τ·m·σ² (m real or complex entries in y, E|n_i|² = σ²). The misfit grows with λ, so this is a
  scalar root search in log λ: bracketing by factors of 10 from a first guess, then regula falsi (Illinois) on
  log(misfit / target), safeguarded by bisection, until the misfit is within `rtol` of the target.
- `SURE()` (what "auto" means when A is the identity): Monte-Carlo SURE (Ramani, Blu and Unser 2008). For
  denoising it is an unbiased estimate of the mean squared error ‖x̂_λ − x‖²; for any other A it estimates the
  prediction risk ‖A(x̂_λ − x)‖² (the generalised SURE in the measurement domain):
      R(λ) = ‖A x̂_λ − y‖² − m σ² + 2σ² bᵀ(A x̂_λ(y + εb) − A x̂_λ(y))/ε,   b ~ N(0, I),
  two solves per λ; minimised by golden-section search in log λ after bracketing.
- `GSURE()`: generalised SURE (Eldar 2009), the projected image error ‖P(x̂_λ − x)‖² (P the projection on the range
  of Aᴴ) instead of the prediction error, through the pseudo-inverse (CG): for masks, k-space sampling, CS with
  orthonormal rows and down-sampling by averaging (well-conditioned A Aᴴ), not for blur. Same search as SURE.

The result records the choice: `Result.lam` (the chosen value) and `Result.parameter_search` (a `ParameterSearch`:
criterion, the λ tried in order, the criterion's values, the number of solves).
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from imaging.operators.base import LinearOperator
from imaging.operators.noise import estimate_noise
from imaging.solvers._variational import squared_misfit
from imaging.solvers.base import ConvergenceWarning, Result, real_part

LOGGER = logging.getLogger("imaging")


@dataclass(frozen=True)
class Discrepancy:
    """Discrepancy principle: ‖A x̂_λ − y‖² = tau·m·σ² (within rtol), at most `max_solves` solves."""

    tau: float = 1.0
    rtol: float = 0.02
    max_solves: int = 15

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"Discrepancy: argument 'tau' must be positive, got {self.tau}")
        if not 0 < self.rtol < 1:
            raise ValueError(f"Discrepancy: argument 'rtol' must be in (0, 1), got {self.rtol}")
        _check_solves(self.max_solves, "Discrepancy")


def _check_solves(max_solves, who: str) -> None:
    if isinstance(max_solves, bool) or not isinstance(max_solves, int) or not 1 <= max_solves <= 10 ** 6:
        raise ValueError(f"{who}: argument 'max_solves' must be an integer >= 1, got {max_solves!r}")


@dataclass(frozen=True)
class SURE:
    """Monte-Carlo SURE (image risk for denoising, prediction risk otherwise); `epsilon` is the finite-difference
    step relative to σ, `seed` draws the probe b (an unusual number: a probe equal to the noise, e.g. both drawn
    with seed 0, would bias the estimate); log λ is located to a factor `xtol`. SURE differentiates the solver's
    output, so its solves must be accurate (a tight `tol`)."""

    epsilon: float = 0.1
    seed: int = 913_766_201
    xtol: float = 1.3
    max_solves: int = 30

    def __post_init__(self) -> None:
        who = type(self).__name__
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"{who}: argument 'epsilon' must be a finite number > 0, got {self.epsilon}")
        if not (math.isfinite(self.xtol) and self.xtol > 1):
            raise ValueError(f"{who}: argument 'xtol' (a factor on λ) must be a finite number > 1, got {self.xtol}")
        _check_solves(self.max_solves, who)


@dataclass(frozen=True)
class GSURE(SURE):
    """Generalised SURE (Eldar 2009): an unbiased estimate of the projected image error ‖P(x̂_λ − x)‖² (P the
    projection on the range of Aᴴ, what the measurements can tell about x) instead of the prediction error.
    It needs the pseudo-inverse (by CG, to `cg_tol`), so it applies where A Aᴴ is well conditioned: masks,
    sampled k-space, compressed sensing with orthonormal rows, down-sampling by averaging; with blur the
    pseudo-inverse amplifies the noise and the estimate is useless (use `Discrepancy`). Like `SURE`, it assumes
    the estimate depends on y through Aᴴy (true of every regularised least-squares solver)."""

    cg_tol: float = 1e-8
    cg_max_iter: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.cg_tol) and self.cg_tol >= 0):
            raise ValueError(f"GSURE: argument 'cg_tol' must be a finite number >= 0, got {self.cg_tol}")
        if isinstance(self.cg_max_iter, bool) or not isinstance(self.cg_max_iter, int) or self.cg_max_iter < 1:
            raise ValueError(f"GSURE: argument 'cg_max_iter' must be an integer >= 1, got {self.cg_max_iter!r}")


@dataclass
class ParameterSearch:
    """How λ was chosen: the criterion, every λ tried (in order) with the criterion's value there, the solves."""

    criterion: str
    noise_level: float
    lams: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    solves: int = 0
    target: float | None = None


AUTO = "auto"

# lam="auto" of the variational solvers (TV by PDHG / tv_reconstruct, smooth priors such as the field of experts by
# AcceleratedGradient) with σ given (not estimated): the discrepancy principle at τ = 0.9, chosen on train400 crops
# (benchmarks/parameter_choice.py --pictures train --tau): TV at 96² (deblurring, 30 % CS, 50 % inpainting, σ = 0.005
# and 0.05) 0.12 dB below the grid's best on average against 0.29 at τ = 1; the field of experts at 64² (deblurring,
# 50 % inpainting, a user-written operator, σ = 0.01 and 0.05) 0.26 dB against 0.48, better in every cell for both
# (τ = 0.8 broke FoE deblurring at σ = 0.05: the misfit curve is flat there). With σ estimated from y, τ = 1: the
# estimate runs low on blurred measurements, and a smaller τ would under-regularise further. Denoising keeps SURE.
VARIATIONAL_TAU = 0.9


def variational_auto(A, noise_level: float | None):
    """What "auto" means for the variational solvers (`prepare_search`'s `auto`): `Discrepancy(tau=VARIATIONAL_TAU)`
    when σ was given and A is not the identity, else the general "auto"."""
    from imaging.operators.base import Identity

    return Discrepancy(tau=VARIATIONAL_TAU) if noise_level is not None and not isinstance(A, Identity) else AUTO


def parameter_rule(lam, who: str, name: str = "lam", per_sample: bool = False):
    """The rule for `lam` ("auto", a `Discrepancy` or a `SURE`), or None for a number (checked finite, >= 0); a
    tensor of several weights only where the solver takes them (`per_sample`)."""
    if isinstance(lam, str):
        if lam != AUTO:
            raise ValueError(f"{who}: argument '{name}' must be a number >= 0, \"auto\", Discrepancy(...) or "
                             f"SURE(...), got {lam!r}")
        return AUTO
    if isinstance(lam, (Discrepancy, SURE)):
        return lam
    if isinstance(lam, torch.Tensor):
        if lam.numel() != 1 and not per_sample:
            raise ValueError(f"{who}: argument '{name}' must be one number (a tensor of {lam.numel()} weights was "
                             f"given; tv_reconstruct / PDHG take per-sample or per-channel weights)")
        if not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
            raise ValueError(f"{who}: argument '{name}' must be finite and >= 0")
        return None
    if not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{who}: argument '{name}' must be finite and >= 0, or \"auto\", Discrepancy(...) or "
                         f"SURE(...), got {lam!r}")
    return None


def resolve_noise_level(noise_level: float | None, y: torch.Tensor, A, who: str) -> float:
    """σ as given (checked positive and finite), else estimated from y (and A) by `estimate_noise`."""
    if noise_level is None:
        try:
            sigma = estimate_noise(y, A if isinstance(A, LinearOperator) else None)
        except ValueError as error:
            raise ValueError(f"{who}: argument 'noise_level' was not given and could not be estimated from y "
                             f"({error})") from None
        LOGGER.info("%s: noise_level not given; estimated σ = %.4g from y", who, sigma)
        return sigma
    if not (isinstance(noise_level, (int, float)) and math.isfinite(noise_level) and noise_level > 0):
        raise ValueError(f"{who}: argument 'noise_level' must be a positive number (the noise standard deviation "
                         f"per measurement entry), got {noise_level!r}")
    return float(noise_level)


def _misfit(A, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(squared_misfit(A, x, y).sum())


def squared_norm(A, y: torch.Tensor) -> float:
    """‖A‖² on images shaped like Aᴴy (its real part for complex measurements of real images): a λ scale."""
    return A.norm(real_part(A.adjoint(y))) ** 2


def prepare_search(solver, value, y: torch.Tensor, A, noise_level: float | None, options: dict, who: str,
                   name: str = "lam", auto=AUTO, per_sample: bool = False) -> bool:
    """Set `solver.parameter_rule` from `value` (None for a number); for a rule also `solver.noise_level` and
    `solver.options` (what every solve of the search is built with). `auto` is what "auto" means for this solver.
    Returns whether `run` will search."""
    rule = parameter_rule(value, who, name, per_sample)
    solver.parameter_rule = auto if rule == AUTO else rule
    if rule is None:
        return False
    solver.noise_level = resolve_noise_level(noise_level, y, A, who)
    solver.options = options
    return True


def choose_parameter(solve: Callable[[float, torch.Tensor | None, torch.Tensor | None], Result], A, y: torch.Tensor,
                     rule, noise_level: float, guess: float | Callable[[torch.Tensor], float], x0: torch.Tensor | None,
                     who: str, warm: bool = True) -> Result:
    """Run the search of `rule` over λ > 0 and return the `Result` at the chosen λ, with `lam` and
    `parameter_search` set. `solve(λ, warm_start, y_or_None)` solves the problem (for other measurements when the
    third argument is given, which SURE needs) and returns its `Result`, run with warn=False. `warm=False` starts
    every solve from x0 (methods whose answer depends on the start, such as RED-Diff). `guess`, the first λ
    tried, may be a function of the measurements (each sample of a batch then gets its own)."""
    if y.shape[0] > 1:
        return _per_sample(solve, A, y, rule, noise_level, guess, x0, who, warm)
    guess = guess(y) if callable(guess) else guess
    if not (math.isfinite(guess) and guess > 0):
        guess = 1.0
    if rule == AUTO:  # SURE estimates the image error itself where A is the identity; elsewhere the discrepancy
        from imaging.operators.base import Identity

        rule = SURE() if isinstance(A, Identity) else Discrepancy()
    if isinstance(rule, Discrepancy):
        return _discrepancy(solve, A, y, rule, noise_level, guess, x0, who, warm)
    return _sure(solve, A, y, rule, noise_level, guess, x0, who, warm)


def _per_sample(solve, A, y: torch.Tensor, rule, noise_level: float, guess: float, x0, who: str,
                warm: bool) -> Result:
    """A batch: every sample gets its own search and λ, exactly as if it were solved alone (a batch of
    independent measurements, e.g. the command line's --batch-size, must not share one λ). `Result.lam` is then
    a (N,) tensor, `parameter_search` a list of N searches; the history holds, per iteration, the sum over samples
    of "objective" and the largest value of every other metric (as a batched run reports them); warnings of the
    samples' searches are emitted once per kind, with the number of samples they concern."""
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(y.shape[0]):
            data = y[i:i + 1]
            start = x0[i:i + 1] if x0 is not None and x0.shape[0] == y.shape[0] else x0

            def solve_one(value, warm_start, other, data=data):
                return solve(value, warm_start, data if other is None else other)

            results.append(choose_parameter(solve_one, A, data, rule, noise_level, guess, start, who, warm))
    kinds: dict[type, list] = {}
    for record in caught:
        kinds.setdefault(record.category, []).append(record)
    for category, records in kinds.items():
        warnings.warn(f"{records[0].message} ({len(records)} of {y.shape[0]} samples; the first shown)", category,
                      stacklevel=4)
    history: dict[str, list[float]] = {}
    for key in {key for r in results for key in r.history}:
        runs = [r.history[key] for r in results if r.history.get(key)]
        length = max(len(run) for run in runs)
        padded = [run + run[-1:] * (length - len(run)) for run in runs]
        combine = sum if key == "objective" else max
        history[key] = [float(combine(values)) for values in zip(*padded)]
    return Result(torch.cat([r.x for r in results]), history, max(r.iterations for r in results),
                  all(bool(r.converged) for r in results),
                  torch.tensor([r.lam for r in results], dtype=torch.float64),
                  [r.parameter_search for r in results])


class _Solves:
    """Solves kept by log λ, each warm-started from the closest one before (or all from x0: `warm=False`)."""

    def __init__(self, solve, x0, search: ParameterSearch, limit: int, warm: bool = True) -> None:
        self.solve, self.x0, self.search, self.limit, self.warm = solve, x0, search, limit, warm
        self.results: dict[float, Result] = {}
        self.starts: dict[float, torch.Tensor | None] = {}

    def __call__(self, log_lam: float) -> Result:
        if log_lam in self.results:
            return self.results[log_lam]
        nearest = min(self.results, key=lambda k: abs(k - log_lam), default=None)
        start = self.results[nearest].x if nearest is not None and self.warm else self.x0
        result = self.solve(math.exp(log_lam), start, None)
        self.search.solves += 1
        self.results[log_lam], self.starts[log_lam] = result, start
        return result

    @property
    def exhausted(self) -> bool:
        return self.search.solves >= self.limit


def _finish(result: Result, log_lam: float, search: ParameterSearch, who: str) -> Result:
    result.lam, result.parameter_search = math.exp(log_lam), search
    LOGGER.info("%s: %s chose λ = %.4g after %d solves", who, search.criterion, result.lam, search.solves)
    if not result.converged:
        warnings.warn(f"{who}: the solve at the chosen λ = {result.lam:.4g} stopped by max_iter before its stopping "
                      f"rule was met (raise max_iter or tol)", ConvergenceWarning, stacklevel=3)
    return result


def _discrepancy(solve, A, y, rule: Discrepancy, sigma: float, guess: float, x0, who: str, warm: bool) -> Result:
    target = rule.tau * y[0].numel() * y.shape[0] * sigma ** 2
    search = ParameterSearch("discrepancy", sigma, target=target)
    solves = _Solves(solve, x0, search, rule.max_solves, warm)
    ln10, accept = math.log(10.0), math.log1p(rule.rtol)

    misfits: dict[float, float] = {}

    def g(log_lam: float) -> float:  # log(misfit / target), increasing in λ
        misfit = misfits[log_lam] = _misfit(A, solves(log_lam).x, y)
        search.lams.append(math.exp(log_lam))
        search.values.append(misfit)
        return math.log(max(misfit, 1e-300) / target)

    a, ga = math.log(guess), g(math.log(guess))
    if abs(ga) <= accept:
        return _finish(solves(a), a, search, who)
    direction = -1.0 if ga > 0 else 1.0  # misfit too large: smaller λ
    origin, b, gb = a, a, ga
    while gb * ga > 0:
        if solves.exhausted or abs(b - origin) >= 5 * ln10:  # 5 decades from the first guess
            closest = min(misfits, key=lambda k: abs(math.log(max(misfits[k], 1e-300) / target)))
            kept = "whose misfit came closest"
            if direction < 0:  # the misfit stays above the target as λ -> 0 (σ under-estimated, or a floor the
                # solver cannot go below): the smallest λ only fits noise. A heuristic: the largest λ whose misfit
                # is within 25 % of the floor (TV deblurring of camera 64² at σ = 0.02 given as 0.012: 30.85 dB,
                # against 31.34 with the true σ and 24.39 at the smallest λ tried)
                floor = min(misfits.values())
                closest = max(k for k, value in misfits.items() if value <= 1.25 * floor)
                kept = "whose misfit is within 25 % of the smallest"
            warnings.warn(f"{who}: the discrepancy principle found no λ with ‖A x − y‖² = {rule.tau:g}·m·σ² "
                          f"(σ = {sigma:.4g}) between {math.exp(min(origin, b)):.3g} and "
                          f"{math.exp(max(origin, b)):.3g}; keeping the largest λ {kept} "
                          f"({math.exp(closest):.3g}). Is noise_level right?", UserWarning, stacklevel=3)
            return _finish(solves(closest), closest, search, who)
        a, ga = b, gb
        b = b + direction * ln10
        gb = g(b)
        if abs(gb) <= accept:
            return _finish(solves(b), b, search, who)
    # a and b bracket the root; regula falsi with the Illinois modification, bisection as the safeguard
    lo, glo, hi, ghi = (a, ga, b, gb) if a < b else (b, gb, a, ga)
    side = 0
    best, gbest = (lo, glo) if abs(glo) < abs(ghi) else (hi, ghi)
    while not solves.exhausted and hi - lo > 1e-3:
        c = hi - ghi * (hi - lo) / (ghi - glo)
        if not lo + 0.05 * (hi - lo) < c < hi - 0.05 * (hi - lo):
            c = 0.5 * (lo + hi)
        gc = g(c)
        if abs(gc) < abs(gbest):
            best, gbest = c, gc
        if abs(gc) <= accept:
            break
        if gc < 0:
            lo, glo = c, gc
            if side == -1:
                ghi /= 2
            side = -1
        else:
            hi, ghi = c, gc
            if side == 1:
                glo /= 2
            side = 1
    return _finish(solves(best), best, search, who)


def _probe(shape, like: torch.Tensor, seed: int, complex_: bool) -> torch.Tensor:
    """b ~ N(0, I), unit variance per real component, seeded."""
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn(shape, generator=generator, dtype=like.real.dtype)
    if complex_:  # unit variance per real component; circular noise has σ²/2 per component
        probe = torch.complex(probe, torch.randn(shape, generator=generator, dtype=like.real.dtype))
    return probe.to(like.device)


def _sure_risk(solve, solves, A, y: torch.Tensor, rule: SURE, sigma: float) -> Callable[[float], float]:
    """Monte-Carlo SURE of the prediction error ‖A(x̂_λ − x)‖² (the image error where A is the identity), up to a
    constant: ‖A x̂ − y‖² − mσ² + 2σ² bᵀ(A x̂(y + εb) − A x̂(y))/ε."""
    probe = _probe(y.shape, y, rule.seed, y.is_complex())
    per_component = sigma ** 2 / 2 if y.is_complex() else sigma ** 2
    eps = rule.epsilon * sigma
    m = y.numel()

    def risk(log_lam: float) -> float:
        result = solves(log_lam)
        fitted = A(result.x)
        # the same start as the unperturbed solve: their solver errors cancel in the finite difference
        perturbed = solve(math.exp(log_lam), solves.starts[log_lam], y + eps * probe)
        solves.search.solves += 1
        divergence = float((probe.conj() * (A(perturbed.x) - fitted)).real.sum()) / eps
        return float((fitted - y).abs().pow(2).sum()) - m * sigma ** 2 + 2 * per_component * divergence

    return risk


def _gsure_risk(solve, solves, A, y: torch.Tensor, rule: GSURE, sigma: float) -> Callable[[float], float]:
    """Monte-Carlo GSURE of ‖P(x̂_λ − x)‖², up to the constant ‖P x‖²: with N = Re AᴴA (real images) and the
    pseudo-inverse N⁺ by CG from zero (on right-hand sides in N's range),
        ‖P x̂‖² − 2⟨x̂, x_LS⟩ + 2σ² bᵀ(x̂(y + εδ) − x̂(y))/ε,   x_LS = N⁺ Aᴴy,  δ = A N⁺ P b,  b ~ N(0, I)
    (σ² per real component): the perturbation δ moves Aᴴy by ε P b, so the finite difference is the Jacobian of
    x̂ in Aᴴy along b, whose trace weighted by σ² is the divergence term of Eldar's estimator."""
    from imaging.solvers.cg import CG

    def normal(v: torch.Tensor) -> torch.Tensor:
        return real_part(A.adjoint(A(v)))

    def pinv_normal(rhs: torch.Tensor) -> torch.Tensor:  # N⁺ rhs for rhs in the range of N
        return CG(normal, rhs, max_iter=rule.cg_max_iter, tol=rule.cg_tol).run(warn=False).x

    adjoint_y = real_part(A.adjoint(y))
    least_squares = pinv_normal(adjoint_y)
    probe = _probe(adjoint_y.shape, adjoint_y, rule.seed, False)
    direction = A(pinv_normal(pinv_normal(normal(probe))))  # A N⁺ P b, P b = N⁺N b
    per_component = sigma ** 2 / 2 if y.is_complex() else sigma ** 2
    eps = rule.epsilon * sigma / max(float(direction.abs().pow(2).mean().sqrt()), 1e-30)

    def risk(log_lam: float) -> float:
        x = solves(log_lam).x
        perturbed = solve(math.exp(log_lam), solves.starts[log_lam], y + eps * direction)
        solves.search.solves += 1
        divergence = float((probe * real_part(perturbed.x - x)).sum()) / eps
        projected = pinv_normal(normal(real_part(x)))
        return (float(projected.pow(2).sum()) - 2 * float((real_part(x) * least_squares).sum())
                + 2 * per_component * divergence)

    return risk


def _sure(solve, A, y, rule: SURE, sigma: float, guess: float, x0, who: str, warm: bool) -> Result:
    generalised = isinstance(rule, GSURE)
    search = ParameterSearch("gsure" if generalised else "sure", sigma)
    solves = _Solves(solve, x0, search, rule.max_solves, warm)
    estimate = (_gsure_risk if generalised else _sure_risk)(solve, solves, A, y, rule, sigma)

    def risk(log_lam: float) -> float:
        with torch.no_grad():
            value = estimate(log_lam)
        search.lams.append(math.exp(log_lam))
        search.values.append(value)
        return value

    ln10 = math.log(10.0)
    centre = math.log(guess)
    grid = {k: risk(centre + k * ln10) for k in (-1, 0, 1)}  # λ = guess·10^k; walk downhill to bracket a minimum
    while grid[min(grid)] < grid[min(grid) + 1] and not solves.exhausted and min(grid) > -8:
        grid[min(grid) - 1] = risk(centre + (min(grid) - 1) * ln10)
    while grid[max(grid)] < grid[max(grid) - 1] and not solves.exhausted and max(grid) < 8:
        grid[max(grid) + 1] = risk(centre + (max(grid) + 1) * ln10)
    points = {centre + k * ln10: value for k, value in grid.items()}
    best = min(points, key=points.get)
    lo, hi = best - ln10, best + ln10
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = risk(c), risk(d)
    while hi - lo > math.log(rule.xtol) and not solves.exhausted:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = risk(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = risk(d)
    candidates = {**points, c: fc, d: fd}
    chosen = min(candidates, key=candidates.get)
    return _finish(solves(chosen), chosen, search, who)


def search_solver(make: Callable[[float, torch.Tensor], "object"], A, y: torch.Tensor, rule, noise_level: float,
                  guess: float | Callable[[torch.Tensor], float], x0: torch.Tensor | None, who: str,
                  warm: bool = True) -> Result:
    """`choose_parameter` for a solver class: `make(λ, y)` builds the solver for one λ (and measurements)."""
    def solve(value: float, start: torch.Tensor | None, data: torch.Tensor | None) -> Result:
        return make(value, y if data is None else data).run(start, warn=False)

    return choose_parameter(solve, A, y, rule, noise_level, guess, x0, who, warm)
