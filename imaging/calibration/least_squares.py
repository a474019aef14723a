r"""Self-calibration by linear least squares and by the spectral method (Ling & Strohmer, SIAM J. Imaging Sci. 2018).

With s = 1/d (entrywise), y_l = diag(d) A_l x becomes linear in z = [s; x]: diag(y_l) s − A_l x = 0 for every l,
i.e. M z = 0 with M = [diag(y_1), −A_1; …; diag(y_p), −A_p] ∈ C^{mp×(m+n)}. The null space is one-dimensional when
mp ≥ m + n − 1 (and the A_l are generic), which fixes z up to scale.

- Least squares: min ‖M z‖² subject to mean(s) = 1, by preconditioned conjugate gradients on the normal equations
  restricted to the constraint (projected PCG with the Jacobi preconditioner diag(MᴴM)).
- Spectral: z = the right singular vector of M for its smallest singular value, by inverse iteration from the
  least-squares solution (PCG solves of (MᴴM + δI) q = z).

Both back-transform d = 1/s and fix the gauge mean(d) = 1. One PCG iteration applies
MᴴM [s; x] = [Σ_l |y_l|² s − Σ_l ȳ_l ⊙ A_l x ;  Σ_l A_lᴴ A_l x − Σ_l A_lᴴ (y_l ⊙ s)]
with a single `normal_pass` over the sensing matrices.
"""
from __future__ import annotations

import torch

from imaging.calibration.common import (CalibrationResult, History, check_measurements, expand_truth, fix_gauge,
                                        loss_of)
from imaging.calibration.sensing import GainSensing
from imaging.linalg import batch_dot, conjugate_gradient


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


def _pcg(op: _NormalEquations, rhs: tuple[torch.Tensor, torch.Tensor], z0: tuple[torch.Tensor, torch.Tensor],
         constrained: bool, tol: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve op(z) = rhs by the library's conjugate gradient from z0 (batched, block unknowns (s, x)) with the
    Jacobi preconditioner, to a relative preconditioned residual `tol`; with `constrained`, on the subspace
    Σ_i s_i = const (the preconditioned residual is projected obliquely onto Σ_i g_s = 0)."""
    inv = tuple(1 / d for d in op.diagonal)

    def precondition(r):
        g = (inv[0] * r[0], inv[1] * r[1])
        if constrained:  # g − D⁻¹w (wᵀg)/(wᵀD⁻¹w) with w = [1_m; 0]
            g = (g[0] - inv[0] * (g[0].sum(1, keepdim=True) / inv[0].sum(1, keepdim=True)), g[1])
        return g

    return conjugate_gradient(op, rhs, z0, tol=tol, max_iter=max_iter, preconditioner=precondition,
                              relative_to_start=True).x


def _back_transform(z: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    s, x = z
    return fix_gauge(x, 1 / s)


def _finish(sensing, y, z, history, passes, owner_passes):
    x, gains = _back_transform(z)
    r = gains[:, None, :] * sensing.sense(x) - y
    history.record(x, gains, loss_of(r), passes + owner_passes)
    return x, gains


def _default_tol(tol: float | None, y: torch.Tensor) -> float:
    return tol if tol is not None else (1e-10 if y.real.dtype == torch.float64 else 1e-5)


def least_squares(sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
                  x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
                  progress: bool = False) -> CalibrationResult:
    """Linear least-squares self-calibration: min Σ_l ‖y_l ⊙ s − A_l x‖² subject to mean(s) = 1, then d = 1/s.
    Exact (noiseless) when mp ≥ m + n − 1; tol is the relative preconditioned residual of the CG solve (default
    1e-10 in float64, 1e-5 in float32)."""
    owner = "calibration.least_squares"
    check_measurements(sensing, y, owner)
    tol = _default_tol(tol, y)
    B, p, m = y.shape
    history = History(expand_truth(x_true, B), expand_truth(gains_true, B), 1, progress, "least squares")
    with torch.no_grad():
        op = _NormalEquations(sensing, y, shift=0.0)
        zero_x = torch.zeros(B, sensing.pixels, dtype=y.dtype, device=y.device)
        ones = torch.ones(B, m, dtype=y.dtype, device=y.device)
        history.record(zero_x, ones, loss_of(-y), 0)
        # z = z_p + t with z_p = [1; 0] on the constraint and t on its tangent space: solve MᴴM t = −MᴴM z_p.
        z = _pcg(op, (torch.zeros_like(ones), zero_x), (ones, zero_x), constrained=True, tol=tol, max_iter=max_iter)
        x, gains = _finish(sensing, y, z, history, op.passes, 1)
    return history.result(x, gains, 1, torch.ones(B, dtype=torch.bool, device=y.device))


def spectral(sensing: GainSensing, y: torch.Tensor, *, tol: float | None = None, max_iter: int = 1000,
             inverse_iterations: int = 3, x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
             progress: bool = False) -> CalibrationResult:
    """Spectral self-calibration: z = [s; x] = the smallest right singular vector of M (sign fixed so that
    Re mean(s) > 0), by inverse iteration from the least-squares solution; then d = 1/s with mean(d) = 1."""
    owner = "calibration.spectral"
    check_measurements(sensing, y, owner)
    tol = _default_tol(tol, y)
    B, p, m = y.shape
    history = History(expand_truth(x_true, B), expand_truth(gains_true, B), inverse_iterations + 1, progress,
                      "spectral")
    with torch.no_grad():
        exact = _NormalEquations(sensing, y, shift=0.0)
        zero_x = torch.zeros(B, sensing.pixels, dtype=y.dtype, device=y.device)
        ones = torch.ones(B, m, dtype=y.dtype, device=y.device)
        history.record(zero_x, ones, loss_of(-y), 0)
        z = _pcg(exact, (torch.zeros_like(ones), zero_x), (ones, zero_x), constrained=True, tol=tol,
                 max_iter=max_iter)
        shifted = _NormalEquations(sensing, y, shift=1e-12)
        for _ in range(inverse_iterations):
            norm = batch_dot(z, z).sqrt()[:, None]
            z = (z[0] / norm, z[1] / norm)
            # Problems whose z is already a null vector (Rayleigh quotient at the shift: the noiseless case) keep it:
            # their right-hand side becomes (MᴴM + δI) z, solved by z itself.
            Az = shifted(z)
            is_null = (batch_dot(z, Az) <= 2 * shifted.shift)[:, None]
            rhs = (torch.where(is_null, Az[0], z[0]), torch.where(is_null, Az[1], z[1]))
            z = _pcg(shifted, rhs, z, constrained=False, tol=tol, max_iter=max_iter)
        phase = z[0].mean(1, keepdim=True)
        phase = phase / phase.abs()
        z = (z[0] / phase, z[1] / phase)
        x, gains = _finish(sensing, y, z, history, exact.passes + shifted.passes, 1)
    return history.result(x, gains, inverse_iterations, torch.ones(B, dtype=torch.bool, device=y.device))
