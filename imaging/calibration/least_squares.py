r"""Self-calibration by linear least squares and by the spectral method (Ling & Strohmer, SIAM J. Imaging Sci. 2018).

With s = 1/d (entrywise), y_l = diag(d) A_l x becomes linear in z = [s; x]: diag(y_l) s − A_l x = 0 for every l,
i.e. M z = 0 with M = [diag(y_1), −A_1; …; diag(y_p), −A_p] ∈ C^{mp×(m+n)}. The null space is one-dimensional when
mp ≥ m + n − 1 (and the A_l are generic), which fixes z up to scale.

- Least squares: min ‖M z‖² subject to mean(s) = 1, by preconditioned conjugate gradients on the normal equations
  restricted to the constraint (projected PCG with the Jacobi preconditioner diag(MᴴM)).
- Spectral: z = the right singular vector of M for its smallest singular value, by inverse iteration from the
  least-squares solution (PCG solves of (MᴴM + δI) q = z).

Both back-transform d = 1/s and fix the gauge mean(d) = 1, and run on the library's loop (`LeastSquares`: a step is
one PCG iteration; `Spectral`: the least-squares solve, then a step per inverse iteration), so `converged` says
whether every PCG solve met its tolerance and a `ConvergenceWarning` says when one did not. One PCG iteration applies
MᴴM [s; x] = [Σ_l |y_l|² s − Σ_l ȳ_l ⊙ A_l x ;  Σ_l A_lᴴ A_l x − Σ_l A_lᴴ (y_l ⊙ s)]
with a single `normal_pass` over the sensing matrices.
"""
from __future__ import annotations

import torch

from imaging.calibration.common import CalibrationResult, CalibrationSolver, fix_gauge, loss_of
from imaging.calibration.sensing import GainSensing
from imaging.linalg import batch_dot, cg_start, cg_step, check_cg_finite, conjugate_gradient


class _NormalEquations:
    """MᴴM (+ shift) on block vectors (s (B, m), x (B, n)), its Jacobi diagonal and a pass counter."""

    def __init__(self, sensing: GainSensing, y: torch.Tensor, shift: float) -> None:
        self.sensing, self.y = sensing, y
        self.y_energy = (y.abs() ** 2).sum(1)                                     # Σ_l |y_l|²   (B, m)
        columns = sensing.column_norms_sq().to(y.real.dtype).expand(y.shape[0], -1)
        self.shift = shift * float(torch.cat([self.y_energy, columns], 1).mean())
        self.diagonal = (self.y_energy + self.shift, columns + self.shift)
        self.passes = 0

    def __call__(self, z: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s, x = z
        ones = torch.ones_like(self.y_energy)
        v, AhAx, Ahys, _ = self.sensing.normal_pass(x, ones, self.y * s[:, None, :])
        self.passes += 1
        return (self.y_energy * s - (self.y.conj() * v).sum(1) + self.shift * s, AhAx - Ahys + self.shift * x)


def _jacobi(op: _NormalEquations, constrained: bool):
    """The Jacobi preconditioner r -> D⁻¹ r of op; with `constrained`, on the subspace Σ_i s_i = const (the
    preconditioned residual is projected obliquely onto Σ_i g_s = 0: g − D⁻¹w (wᵀg)/(wᵀD⁻¹w), w = [1_m; 0])."""
    inv = tuple(1 / d for d in op.diagonal)

    def precondition(r):
        g = (inv[0] * r[0], inv[1] * r[1])
        if constrained:
            g = (g[0] - inv[0] * (g[0].sum(1, keepdim=True) / inv[0].sum(1, keepdim=True)), g[1])
        return g

    return precondition


def _back_transform(z: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    s, x = z
    return fix_gauge(x, 1 / s)


def _default_tol(tol: float | None, y: torch.Tensor) -> float:
    if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"calibration: argument 'tol' must be a number >= 0, got {tol!r}")
    return tol if tol is not None else (1e-10 if y.real.dtype == torch.float64 else 1e-5)


def _start(y: torch.Tensor, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z_p = [1; 0]: unit gains and a zero image (on the constraint mean(s) = 1)."""
    B, _, m = y.shape
    return (torch.ones(B, m, dtype=y.dtype, device=y.device),
            torch.zeros(B, pixels, dtype=y.dtype, device=y.device))


class _SelfCalibration(CalibrationSolver):
    """What the linear methods share: the CG tolerance, the start z_p = [1; 0] recorded in the history, a history
    record per iterate (the calibration loss of its back-transformed estimate) and the step count."""

    def __init__(self, sensing: GainSensing, y: torch.Tensor, owner: str, *, tol: float | None, max_iter: int,
                 steps: int, x_true, gains_true, progress: bool, callback) -> None:
        super().__init__(sensing, y, owner, max_iter=max_iter, steps=steps, x_true=x_true, gains_true=gains_true,
                         progress=progress, callback=callback)
        self.cg_tol = _default_tol(tol, y)

    def _begin(self, x0, start: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit gains, zero image), recorded as the history's first entry."""
        if x0 is not None:
            raise ValueError(f"{self.owner}: starts from {start}; argument 'x0' is not used")
        ones, zero_x = _start(self.y, self.sensing.pixels)
        self.history.record(zero_x, ones, loss_of(-self.y), 0)
        return ones, zero_x

    def _record(self, x: torch.Tensor, gains: torch.Tensor, passes: int) -> torch.Tensor:
        loss = loss_of(gains[:, None, :] * self.sensing.sense(x) - self.y)
        self.history.record(x, gains, loss, passes)
        return loss

    def iterations(self, state) -> int:
        return state["iterations"]


class LeastSquares(_SelfCalibration):
    """Linear least-squares self-calibration on the library's loop (see `least_squares`): a step is one projected
    PCG iteration on the normal equations; the history records the calibration loss of every iterate (its
    `passes` count the normal passes of the solve, not the extra pass that evaluates the loss)."""

    name = "least squares"

    def __init__(self, sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
                 x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                 progress: bool = False, callback=None) -> None:
        super().__init__(sensing, y, "calibration.least_squares", tol=tol, max_iter=max_iter, steps=max_iter,
                         x_true=x_true, gains_true=gains_true, progress=progress, callback=callback)

    def init(self, x0):
        ones, zero_x = self._begin(x0, "unit gains and a zero image")
        self.op = _NormalEquations(self.sensing, self.y, shift=0.0)
        self.precondition = _jacobi(self.op, constrained=True)
        # z = z_p + t with z_p = [1; 0] on the constraint and t on its tangent space: solve MᴴM z = 0 from z_p.
        cg = cg_start(self.op, (torch.zeros_like(ones), zero_x), (ones, zero_x), tol=self.cg_tol,
                      preconditioner=self.precondition, relative_to_start=True)
        return {"cg": cg, "iterations": 0}

    def step(self, state):
        cg = cg_step(self.op, state["cg"], preconditioner=self.precondition)
        state.update(cg=cg, iterations=state["iterations"] + 1)
        check_cg_finite(cg, state["iterations"], self.owner)
        loss = self._record(*_back_transform(cg.x), self.op.passes)
        return state, self.step_metrics(loss)

    def stopped(self, state) -> torch.Tensor:
        return ~state["cg"].active

    def converged(self, state) -> torch.Tensor:
        return state["cg"].converged

    def iterate(self, state):
        return _back_transform(state["cg"].x)


class Spectral(_SelfCalibration):
    """Spectral self-calibration on the library's loop (see `spectral`): the least-squares solve at the start, then
    a step per inverse iteration (one PCG solve of (MᴴM + δI) q = z each); converged when every PCG solve met its
    tolerance."""

    name = "spectral"

    def __init__(self, sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
                 inverse_iterations: int = 3, x_true: torch.Tensor | None = None,
                 gains_true: torch.Tensor | None = None, progress: bool = False, callback=None) -> None:
        owner = "calibration.spectral"
        if not isinstance(inverse_iterations, int) or inverse_iterations < 1:
            raise ValueError(f"{owner}: argument 'inverse_iterations' must be an integer >= 1, got "
                             f"{inverse_iterations!r}")
        super().__init__(sensing, y, owner, tol=tol, max_iter=max_iter, steps=inverse_iterations, x_true=x_true,
                         gains_true=gains_true, progress=progress, callback=callback)

    def _solve(self, op, rhs, z0, constrained: bool, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        solved = conjugate_gradient(op, rhs, z0, tol=self.cg_tol, max_iter=self.iteration_limit,
                                    preconditioner=_jacobi(op, constrained), relative_to_start=True)
        state["converged"] &= solved.converged
        return solved.x

    def init(self, x0):
        ones, zero_x = self._begin(x0, "the least-squares solution")
        self.exact = _NormalEquations(self.sensing, self.y, shift=0.0)
        self.shifted = _NormalEquations(self.sensing, self.y, shift=1e-12)
        state = {"iterations": 0, "converged": torch.ones(self.y.shape[0], dtype=torch.bool, device=self.y.device)}
        state["z"] = self._solve(self.exact, (torch.zeros_like(ones), zero_x), (ones, zero_x), True, state)
        return state

    def step(self, state):
        z = state["z"]
        norm = batch_dot(z, z).sqrt()[:, None]
        z = (z[0] / norm, z[1] / norm)
        # Problems whose z is already a null vector (Rayleigh quotient at the shift: the noiseless case) keep it:
        # their right-hand side becomes (MᴴM + δI) z, solved by z itself.
        Az = self.shifted(z)
        is_null = (batch_dot(z, Az) <= 2 * self.shifted.shift)[:, None]
        rhs = (torch.where(is_null, Az[0], z[0]), torch.where(is_null, Az[1], z[1]))
        state["z"] = self._solve(self.shifted, rhs, z, False, state)
        state["iterations"] += 1
        loss = self._record(*self.iterate(state), self.exact.passes + self.shifted.passes)
        return state, self.step_metrics(loss)

    def stopped(self, state) -> torch.Tensor:
        return torch.zeros_like(state["converged"])  # runs its inverse iterations

    def converged(self, state) -> torch.Tensor:
        return state["converged"]

    def iterate(self, state):
        z = state["z"]
        phase = z[0].mean(1, keepdim=True)
        phase = phase / phase.abs()  # sign (phase) fixed so that mean(s) is real and positive
        return _back_transform((z[0] / phase, z[1] / phase))


def least_squares(sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
                  x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                  progress: bool = False, callback=None, warn: bool = True) -> CalibrationResult:
    """Linear least-squares self-calibration: min Σ_l ‖y_l ⊙ s − A_l x‖² subject to mean(s) = 1, then d = 1/s.
    Exact (noiseless) when mp ≥ m + n − 1; tol is the relative preconditioned residual of the CG solve (default
    1e-10 in float64, 1e-5 in float32), max_iter its iterations. Runs on the library's loop (`LeastSquares`): a
    `ConvergenceWarning` when a problem's CG has not reached tol."""
    return LeastSquares(sensing, y, tol=tol, max_iter=max_iter, x_true=x_true, gains_true=gains_true,
                        progress=progress, callback=callback).run(warn=warn)


def spectral(sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
             inverse_iterations: int = 3, x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
             progress: bool = False, callback=None, warn: bool = True) -> CalibrationResult:
    """Spectral self-calibration: z = [s; x] = the smallest right singular vector of M (sign fixed so that
    Re mean(s) > 0), by `inverse_iterations` inverse iterations from the least-squares solution (PCG solves to
    tol, at most max_iter iterations each); then d = 1/s with mean(d) = 1. Runs on the library's loop
    (`Spectral`): a `ConvergenceWarning` when one of a problem's PCG solves has not reached tol."""
    return Spectral(sensing, y, tol=tol, max_iter=max_iter, inverse_iterations=inverse_iterations, x_true=x_true,
                    gains_true=gains_true, progress=progress, callback=callback).run(warn=warn)
