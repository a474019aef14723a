r"""Blind gain calibration by projected gradient descent (Cambareri & Jacques, "Through the haze", 2019).

Minimise f(ξ, γ) = (1/2mp) Σ_l ‖γ ⊙ A_l ξ − y_l‖² over images ξ and gains γ in C_ρ = {mean(γ) = 1,
‖γ − 1‖_∞ ≤ ρ}, from ξ₀ = (1/mp) Σ_l A_lᴴ y_l and γ₀ = 1. With u_l = A_l ξ and r_l = γ ⊙ u_l − y_l:

    ∇_ξ f = (1/mp) Σ_l A_lᴴ(γ̄ ⊙ r_l),     ∇_γ f = (1/mp) Σ_l ū_l ⊙ r_l,     h = ∇_γ f − mean(∇_γ f)

Exact line searches in each block: μ_ξ = mp‖∇_ξ f‖² / Σ_l‖γ ⊙ A_l ∇_ξ f‖² and μ_γ = mp‖h‖² / Σ_l‖h ⊙ u_l‖². Then
ξ ← ξ − μ_ξ ∇_ξ f, u ← u − μ_ξ A ∇_ξ f (by linearity), γ ← P_{C_ρ}(γ − μ_γ h).

One iteration costs ONE pass over the sensing matrices: γ's update does not depend on A∇_ξ f, so the next image
gradient, (1/mp)[Σ A_lᴴ(γ̄'⊙(γ'⊙u_l − y_l)) − μ_ξ Σ A_lᴴ(|γ'|² ⊙ A_l∇_ξ f)], comes out of the same `normal_pass` that
computes A∇_ξ f; u and the gradient are recomputed exactly every `refresh_every` iterations to stop rounding drift.
A step that increases f is undone and retried with halved steps (never observed with the exact line searches,
kept as a safeguard). Known subspaces: x = Z z (`image_basis`) and γ ∈ 1 + span(B) (`gain_basis`): the gradients
are projected onto them (the box is then not used).
"""
from __future__ import annotations

import torch

from imaging.calibration.common import (CalibrationResult, History, back_projection, check_measurements, check_rho,
                                        expand_truth, loss_of, project_gains)
from imaging.calibration.sensing import GainSensing


def orthonormal_basis(basis: torch.Tensor, rows: int, owner: str, arg: str, remove_mean: bool = False
                      ) -> torch.Tensor:
    """Orthonormal columns spanning `basis` (rows, k) (minus its column means when remove_mean)."""
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2 or basis.shape[0] != rows:
        got = tuple(basis.shape) if isinstance(basis, torch.Tensor) else type(basis).__name__
        raise ValueError(f"{owner}: argument '{arg}' must have shape ({rows}, k), got {got}")
    if remove_mean:
        basis = basis - basis.mean(0, keepdim=True)
    left, singular, _ = torch.linalg.svd(basis, full_matrices=False)
    return left[:, singular > 1e-10 * singular.max().clamp_min(1e-300)]


def _project(g: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    return g if basis is None else (g @ basis.conj()) @ basis.T


def _norm2(t: torch.Tensor) -> torch.Tensor:
    return (t.abs() ** 2).flatten(1).sum(1)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def pgd(sensing: GainSensing, y: torch.Tensor, *, rho: float | None = 0.99, max_iter: int = 500,
        tol: float | None = None, line_search: bool = True, step: float = 0.5,
        image_basis: torch.Tensor | None = None, gain_basis: torch.Tensor | None = None,
        refresh_every: int = 50, x_true: torch.Tensor | None = None, gains_true: torch.Tensor | None = None,
        progress: bool = False) -> CalibrationResult:
    """Projected gradient descent for y_l = diag(d) A_l x (batched: y (B, p, m)).

    rho: gains kept in [1 − ρ, 1 + ρ] (None: only mean 1; ignored with gain_basis). tol: stop when the relative step
    (μ_ξ‖∇_ξ f‖/‖ξ‖)² + (μ_γ‖h‖)²/m < tol² (default 1e-7 in float64, 1e-5 in float32), when f ≤ (100 ε)² f₀ (ε: machine epsilon),
    or when f stops decreasing (relative change < 1e-10). line_search=False uses the fixed steps μ_ξ = step,
    μ_γ = step·m/‖ξ₀‖². Returns gauge-normalised estimates and the history (see `CalibrationResult`)."""
    owner = "calibration.pgd"
    check_measurements(sensing, y, owner)
    if gain_basis is None:
        check_rho(rho, owner)
    if max_iter < 0:
        raise ValueError(f"{owner}: argument 'max_iter' must be >= 0, got {max_iter}")
    B, p, m = y.shape
    mp = m * p
    real_dtype = y.real.dtype
    tol = tol if tol is not None else (1e-7 if real_dtype == torch.float64 else 1e-5)
    Z = orthonormal_basis(image_basis, sensing.pixels, owner, "image_basis") if image_basis is not None else None
    Bg = (orthonormal_basis(gain_basis, m, owner, "gain_basis", remove_mean=True).to(y.dtype)
          if gain_basis is not None else None)
    Z = Z.to(y.dtype) if Z is not None else None
    box = None if Bg is not None else rho
    history = History(expand_truth(x_true, B), expand_truth(gains_true, B), max_iter, progress, "PGD")

    with torch.no_grad():
        xi = _project(back_projection(sensing, y), Z)
        gam = torch.ones(B, m, dtype=y.dtype, device=y.device)
        passes = 1
        fixed_gain_step = step * m / _norm2(xi).clamp_min(torch.finfo(real_dtype).tiny)

        def exact_state(xi, gam):
            u = sensing.sense(xi)
            r = gam[:, None, :] * u - y
            g_x, g_g = sensing.gradients(r, gam, u)
            return u, _project(g_x / mp, Z), g_g / mp, loss_of(r)

        u, g_x, g_g, f = exact_state(xi, gam)
        passes += 2
        f0 = f.clone()
        history.record(xi, gam, f, passes)
        active = torch.ones(B, dtype=torch.bool, device=y.device)
        scale = torch.ones(B, dtype=real_dtype, device=y.device)  # halved after a rejected step
        converged = torch.zeros(B, dtype=torch.bool, device=y.device)
        iteration = 0
        for iteration in range(1, max_iter + 1):
            h = g_g - g_g.mean(1, keepdim=True) if Bg is None else _project(g_g, Bg)
            if line_search:
                mu_g = mp * _safe_ratio(_norm2(h), ((h.abs() ** 2) * (u.abs() ** 2).sum(1)).sum(1))
            else:
                mu_g = fixed_gain_step
            mu_g = mu_g * scale
            gam_new = project_gains(gam - mu_g[:, None] * h, box)
            c = gam_new.conj()[:, None, :] * (gam_new[:, None, :] * u - y)
            v, Q, P, energy = sensing.normal_pass(g_x, (gam_new.abs() ** 2).to(real_dtype), c)
            passes += 1
            if line_search:
                mu_x = mp * _safe_ratio(_norm2(g_x), ((gam.abs() ** 2) * energy).sum(1))
            else:
                mu_x = torch.full_like(scale, step)
            mu_x = mu_x * scale
            xi_new = xi - mu_x[:, None] * g_x
            u_new = u - mu_x[:, None, None] * v
            if iteration % refresh_every == 0:
                u_new, g_x_new, g_g_new, f_new = exact_state(xi_new, gam_new)
                passes += 2
            else:
                g_x_new = _project((P - mu_x[:, None] * Q) / mp, Z)
                r = gam_new[:, None, :] * u_new - y
                g_g_new, f_new = (u_new.conj() * r).sum(1) / mp, loss_of(r)
            accept = active & (f_new <= f * (1 + 1e-12))
            step_size = (mu_x * torch.linalg.vector_norm(g_x, dim=1)) ** 2 / _norm2(xi).clamp_min(1e-300) \
                + (mu_g * torch.linalg.vector_norm(h, dim=1)) ** 2 / m
            stalled = (f - f_new) <= 1e-10 * f
            tiny = f_new <= (100 * torch.finfo(real_dtype).eps) ** 2 * f0
            done = accept & ((step_size < tol ** 2) | stalled | tiny)

            def pick(new, old):
                return torch.where(accept.view(-1, *([1] * (new.dim() - 1))), new, old)

            xi, u, gam, g_x, g_g, f = (pick(xi_new, xi), pick(u_new, u), pick(gam_new, gam), pick(g_x_new, g_x),
                                       pick(g_g_new, g_g), pick(f_new, f))
            scale = torch.where(accept | ~active, torch.ones_like(scale), scale / 2)
            converged |= done
            active &= ~done & (scale > 1e-12)
            history.record(xi, gam, f, passes)
            if not bool(active.any()):
                break
    return history.result(xi, gam, iteration, converged)
