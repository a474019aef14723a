"""What the calibration solvers share: the result type, the gain set and its projection, the gauge, the history."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from imaging._progress import progress_bar
from imaging.ops._common import require_values
from imaging.calibration.sensing import DenseGainSensing, GainSensing, RandomMaskDCTSensing
from imaging.solvers.base import IterativeSolver, Result, check_linearity


@dataclass
class CalibrationResult(Result):
    """The library's `Result` of a calibration: the image x (B, n), `converged` per problem (B,), and the gains
    (B, m), normalised to mean gain 1 (the gauge); the per-iteration history: `loss` (½Σ‖g⊙A_l x − y_l‖²/(mp)),
    `passes` (cumulative passes over the sensing matrices), and `error_x` / `error_gains` (relative errors after
    the gauge) when the truth was given. Each history entry is a tensor of shape (iterations + 1, B) (kept on the
    device during the solve); unbatched calls squeeze B away everywhere."""

    gains: torch.Tensor | None = None

    def squeeze(self) -> "CalibrationResult":
        """The single-problem view: x (n,), gains (m,), history entries (iterations + 1,)."""
        return CalibrationResult(x=self.x[0], gains=self.gains[0], iterations=self.iterations,
                                 history={k: v[:, 0] for k, v in self.history.items()},
                                 converged=bool(self.converged[0]))


def check_rho(rho: float | None, owner: str) -> None:
    if rho is not None and not (0.0 < rho < 1.0):
        raise ValueError(f"{owner}: argument 'rho' (gains bounded to [1 - rho, 1 + rho]) must lie in (0, 1) so the "
                         f"gains stay positive, got {rho}")


def check_measurements(sensing: GainSensing, y: torch.Tensor, owner: str) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{owner}: measurements must be a torch.Tensor, got {type(y).__name__}")
    sensing.check(y, owner)
    require_values(y, owner, "y")
    if not torch.isfinite(y).all():
        raise ValueError(f"{owner}: measurements have non-finite values (NaN or inf)")
    probe = sensing.probe_like()
    if y.dtype != probe.dtype or y.device != probe.device:
        raise TypeError(f"{owner}: measurements must have the sensing operator's dtype {probe.dtype} and device "
                        f"{probe.device}, got {y.dtype} on {y.device}")
    if type(sensing) not in (DenseGainSensing, RandomMaskDCTSensing):  # a user's model: is its `sense` linear?
        real = probe.real.dtype if probe.is_complex() else probe.dtype
        check_linearity(sensing, torch.zeros(sensing.batch or 1, sensing.pixels, dtype=real, device=probe.device),
                        owner)
    check_scales(sensing, y, owner)


def check_scales(sensing: GainSensing, y: torch.Tensor, owner: str) -> None:
    """Refuse scales whose squares under- or overflow the dtype (the solvers' norms and inner products would turn
    to 0 or inf, and their answer with them): max |y|, the largest column norm of A and their product (the scale of
    Aᴴy) must lie within [√tiny·1e3, √max/1e3] of the dtype; a zero y is allowed (x = 0)."""
    info = torch.finfo(y.real.dtype)
    lo, hi = info.tiny ** 0.5 * 1e3, info.max ** 0.5 / 1e3
    advice = (f"outside what {y.dtype} can square and sum, [{lo:.1e}, {hi:.1e}]; rescale A and y (the gains do "
              f"not change, x scales by y's factor over A's) or use float64")
    y_scale = float(y.abs().max())
    a_scale = float(sensing.column_norms_sq().max().sqrt())
    if a_scale == 0:
        raise ValueError(f"{owner}: the sensing operator's scale is zero (or so small that its squares underflow "
                         f"{y.dtype}); rescale A and y")
    if not lo <= a_scale <= hi:
        raise ValueError(f"{owner}: the sensing operator's scale (largest column norm {a_scale:.3g}) is {advice}")
    if y_scale > 0 and not lo <= y_scale <= hi:
        raise ValueError(f"{owner}: the measurements' scale (max |y| = {y_scale:.3g}) is {advice}")
    if y_scale > 0 and not a_scale * y_scale <= hi:
        raise ValueError(f"{owner}: the scale of Aᴴy (about {a_scale * y_scale:.3g}) is {advice}")


def project_gains(v: torch.Tensor, rho: float | None = None) -> torch.Tensor:
    """Euclidean projection of each row of v (B, m) onto {g : mean(g) = 1, |g_i − 1| <= rho}.

    g_i = clip(v_i − λ, 1 − ρ, 1 + ρ) with the shift λ that makes the mean 1. φ(λ) = mean(clip(v − λ)) is
    piecewise linear and decreasing with breakpoints v_i − (1 ± ρ); it is evaluated at every breakpoint at once
    (sort, searchsorted, prefix sums) and λ interpolated on the bracketing piece: exact, O(m log m), no host
    synchronisation. rho=None: only the mean constraint (also for complex gains)."""
    if rho is None or v.is_complex():
        return v - v.mean(1, keepdim=True) + 1
    lo, hi = 1.0 - rho, 1.0 + rho
    m = v.shape[1]
    values = v.to(torch.float64).sort(1).values
    prefix = torch.nn.functional.pad(values.cumsum(1), (1, 0))             # prefix[:, k] = Σ_{i<k} v_(i)
    breaks = torch.cat([values - hi, values - lo], 1).sort(1).values       # (B, 2m)

    def mean_clipped(lam: torch.Tensor) -> torch.Tensor:                   # φ(λ) for λ of shape (B, K)
        below = torch.searchsorted(values, lam + lo, right=True)           # v_i <= λ + lo: clipped to lo
        above = torch.searchsorted(values, lam + hi, right=False)          # v_i >= λ + hi: clipped to hi
        middle = prefix.gather(1, above) - prefix.gather(1, below) - lam * (above - below)
        n_below, n_above = below.to(values.dtype), (m - above).to(values.dtype)  # int * float would be float32
        return (lo * n_below + hi * n_above + middle) / m

    phi = mean_clipped(breaks)                                             # decreasing from hi to lo
    k = (phi >= 1).sum(1, keepdim=True).clamp(1, 2 * m - 1)                # φ(t_{k-1}) >= 1 > φ(t_k)
    t0, t1 = breaks.gather(1, k - 1), breaks.gather(1, k)
    f0, f1 = phi.gather(1, k - 1), phi.gather(1, k)
    lam = torch.where(f0 > f1, t0 + (f0 - 1) * (t1 - t0) / (f0 - f1).clamp_min(1e-300), t0)
    return (v.to(torch.float64) - lam).clamp(lo, hi).to(v.dtype)


def fix_gauge(x: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x · c, gains / c) with c = mean(gains): the same measurements, with mean gain 1."""
    c = gains.mean(1, keepdim=True)
    return x * c, gains / c


def relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """‖estimate − truth‖ / ‖truth‖ per problem (rows)."""
    return torch.linalg.vector_norm(estimate - truth, dim=1) / torch.linalg.vector_norm(truth, dim=1)


def back_projection(sensing: GainSensing, y: torch.Tensor) -> torch.Tensor:
    """The unbiased initial image ξ₀ = (1/mp) Σ_l A_lᴴ y_l (E ξ₀ = x for isotropic A_l and mean gain 1)."""
    return sensing.sense_adjoint(y) / (sensing.sensors * sensing.snapshots)


def loss_of(r: torch.Tensor) -> torch.Tensor:
    """½ Σ |r|² / (mp) per problem for residuals r (B, p, m)."""
    return 0.5 * (r.abs() ** 2).sum((1, 2)) / (r.shape[1] * r.shape[2])


class History:
    """Per-iteration records, one (B,) tensor per entry and iteration, with the relative errors against the truth
    when `x_true` / `gains_true` (B, n) / (B, m) are given (compared after fixing the gauge)."""

    def __init__(self, x_true: torch.Tensor | None, gains_true: torch.Tensor | None, total: int, progress: bool,
                 name: str) -> None:
        self.x_true, self.gains_true = x_true, gains_true
        self.records: dict[str, list[torch.Tensor]] = {}
        self.bar = progress_bar(total=total, desc=name, enabled=progress)

    def entries(self, x: torch.Tensor, gains: torch.Tensor, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """This iteration's records (no host synchronisation: usable inside a CUDA graph)."""
        entries = {"loss": loss.detach().real.to(torch.float64, copy=True)}  # copy: the state changes in place
        if self.x_true is not None or self.gains_true is not None:
            xs, gs = fix_gauge(x, gains)
            if self.x_true is not None:
                entries["error_x"] = relative_error(xs, self.x_true.to(xs.dtype)).to(torch.float64)
            if self.gains_true is not None:
                entries["error_gains"] = relative_error(gs, self.gains_true.to(gs.dtype)).to(torch.float64)
        return entries

    def append(self, entries: dict[str, torch.Tensor], passes: list[int]) -> None:
        """Append records of shape (B,) (one iteration) or (K, B) (K iterations) with their pass counts."""
        block = entries["loss"].dim() == 2
        count = entries["loss"].shape[0] if block else 1
        for key, value in entries.items():  # kept on the device: no host synchronisation per iteration
            self.records.setdefault(key, []).extend(value.unbind(0) if block else [value])
        reference = entries["loss"][0] if block else entries["loss"]
        self.records.setdefault("passes", []).extend(torch.full_like(reference, p) for p in passes[-count:])
        if len(self.records["loss"]) > 1 and not self.bar.disable:
            self.bar.update(count)
            self.bar.set_postfix(loss=f"{float(reference.max()):.3e}")

    def record(self, x: torch.Tensor, gains: torch.Tensor, loss: torch.Tensor, passes: int) -> None:
        self.append(self.entries(x, gains, loss), [passes])

    def truncate(self, length: int) -> None:
        """Keep the first `length` records (drops the frozen iterations of a last CUDA-graph block)."""
        for values in self.records.values():
            del values[length:]

    def result(self, x: torch.Tensor, gains: torch.Tensor, iterations: int, converged: torch.Tensor
               ) -> CalibrationResult:
        self.bar.close()
        x, gains = fix_gauge(x, gains)
        finite = torch.isfinite(x).all(1) & torch.isfinite(gains).all(1)
        if not bool(finite.all()):  # never a converged NaN: the inputs or the scale broke the solve
            bad = (~finite).nonzero().flatten().tolist()
            raise FloatingPointError(f"calibration: the estimate of problem(s) {bad} is not finite (NaN or inf); "
                                     f"check the sensing operator and the measurements for non-finite values or an "
                                     f"extreme scale (e.g. normalise A and y)")
        history = {key: torch.stack(values).cpu() for key, values in self.records.items()}
        return CalibrationResult(x=x, gains=gains, history=history, iterations=iterations, converged=converged)


class CalibrationSolver(IterativeSolver):
    """The iterative calibration solvers on the library's loop. A step is one iteration (or, on CUDA, a block of
    iterations replayed from a CUDA graph); its records stay on the device in a `History` (no host synchronisation
    per iteration); the loop stops when every problem has stopped (one synchronisation per step) or after
    `max_iter` steps; `converged` is per problem. Subclasses implement init / step / `stopped(state)` (a (B,)
    bool tensor: done or stalled), `converged(state)` ((B,) bool), `iterate(state)` -> (x, gains) and
    `iterations(state)`."""

    def __init__(self, sensing: GainSensing, y: torch.Tensor, owner: str, *, max_iter: int, steps: int,
                 x_true: torch.Tensor | None, gains_true: torch.Tensor | None, progress: bool, callback) -> None:
        check_measurements(sensing, y, owner)
        if not isinstance(max_iter, int) or max_iter < 0:
            raise ValueError(f"{owner}: argument 'max_iter' must be an integer >= 0, got {max_iter!r}")
        self.owner = owner
        super().__init__(max_iter=steps, tol=0.0, progress=progress, callback=callback)
        self.sensing, self.y, self.iteration_limit = sensing, y, max_iter
        B = y.shape[0]
        self.history = History(expand_truth(x_true, B), expand_truth(gains_true, B), max_iter, False, self.name)

    def step_metrics(self, loss: torch.Tensor) -> dict[str, float]:
        """The bar's loss when it is shown (a host synchronisation); nothing otherwise."""
        return {"loss": float(loss.max())} if self.progress else {}

    def should_stop(self, state) -> str | None:
        return None if bool((~self.stopped(state)).any()) else "every problem stopped"

    def final_check(self, state, metrics) -> tuple[bool, str]:
        converged = self.converged(state)
        done = int(converged.sum())
        return done == converged.numel(), (f"{done} of {converged.numel()} problems converged within "
                                           f"{self.iteration_limit} iterations")

    def estimate(self, state) -> torch.Tensor:
        return self.iterate(state)[0]

    def finish(self, result: Result, state) -> "CalibrationResult":
        iterations = self.iterations(state)
        self.history.truncate(iterations + 1)
        x, gains = self.iterate(state)
        return self.history.result(x, gains, iterations, self.converged(state))


def expand_truth(t: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """Accept the truth as (n,) / (m,) or batched (B, ·)."""
    if t is None:
        return None
    return t.expand(batch, -1) if t.dim() == 1 else t
