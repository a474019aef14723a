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

from imaging.calibration.common import (CalibrationResult, CalibrationSolver, History, back_projection, check_rho,
                                        loss_of, project_gains)
from imaging.calibration.sensing import GainSensing
from imaging.solvers.base import check_option


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


class _Iteration:
    """The PGD state and one iteration that updates it in place, without host synchronisation, so that a block of
    iterations can be captured in a CUDA graph and replayed (on CUDA, launches dominate at these sizes)."""

    def __init__(self, sensing: GainSensing, y: torch.Tensor, Z, Bg, box, line_search: bool, step: float,
                 tol: float, history: History) -> None:
        self.sensing, self.y, self.Z, self.Bg, self.box = sensing, y, Z, Bg, box
        self.line_search, self.step, self.tol, self.history = line_search, step, tol, history
        B, p, m = y.shape
        self.m, self.mp = m, m * p
        real = y.real.dtype
        self.xi = _project(back_projection(sensing, y), Z)
        self.gam = torch.ones(B, m, dtype=y.dtype, device=y.device)
        self.fixed_gain_step = step * m / _norm2(self.xi).clamp_min(torch.finfo(real).tiny)
        self.u, self.g_x, self.g_g, self.f = self.exact(self.xi, self.gam)
        self.f0 = self.f.clone()
        self.floor = (100 * torch.finfo(real).eps) ** 2
        self.active = torch.ones(B, dtype=torch.bool, device=y.device)
        self.converged = torch.zeros_like(self.active)
        self.iterations = torch.zeros(B, dtype=torch.long, device=y.device)
        self.scale = torch.ones(B, dtype=real, device=y.device)  # halved after a rejected step

    def exact(self, xi: torch.Tensor, gam: torch.Tensor):
        """(u = A ξ, ∇_ξ f, ∇_γ f, f) from scratch: two passes."""
        u = self.sensing.sense(xi)
        r = gam[:, None, :] * u - self.y
        g_x, g_g = self.sensing.gradients(r, gam, u)
        return u, _project(g_x / self.mp, self.Z), g_g / self.mp, loss_of(r)

    def refresh(self) -> None:
        """Recompute u and the gradients exactly, ending the drift of the linearity updates."""
        for mine, fresh in zip((self.u, self.g_x, self.g_g, self.f), self.exact(self.xi, self.gam)):
            mine.copy_(fresh)

    def __call__(self) -> dict[str, torch.Tensor]:
        mp, y, u, gam, g_x = self.mp, self.y, self.u, self.gam, self.g_x
        h = self.g_g - self.g_g.mean(1, keepdim=True) if self.Bg is None else _project(self.g_g, self.Bg)
        h_norm2 = _norm2(h)
        if self.line_search:
            mu_g = mp * _safe_ratio(h_norm2, (h.abs() ** 2 * (u.abs() ** 2).sum(1)).sum(1))
        else:
            mu_g = self.fixed_gain_step
        mu_g = mu_g * self.scale
        gam_new = project_gains(gam - mu_g[:, None] * h, self.box)
        c = gam_new.conj()[:, None, :] * (gam_new[:, None, :] * u - y)
        v, Q, P, energy = self.sensing.normal_pass(g_x, (gam_new.abs() ** 2).to(self.scale.dtype), c)
        g_x_norm2 = _norm2(g_x)
        if self.line_search:
            mu_x = mp * _safe_ratio(g_x_norm2, ((gam.abs() ** 2) * energy).sum(1))
        else:
            mu_x = torch.full_like(self.scale, self.step)
        mu_x = mu_x * self.scale
        xi_new = self.xi - mu_x[:, None] * g_x
        u_new = u - mu_x[:, None, None] * v
        g_x_new = _project((P - mu_x[:, None] * Q) / mp, self.Z)
        r = gam_new[:, None, :] * u_new - y
        g_g_new, f_new = (u_new.conj() * r).sum(1) / mp, loss_of(r)
        f = self.f
        accept = self.active & (f_new <= f * (1 + 1e-12))
        step2 = mu_x ** 2 * g_x_norm2 / _norm2(self.xi).clamp_min(1e-300) + mu_g ** 2 * h_norm2 / self.m
        done = accept & ((step2 < self.tol ** 2) | (f - f_new <= 1e-10 * f) | (f_new <= self.floor * self.f0))
        keep = accept[:, None]
        for mine, new in ((self.xi, xi_new), (self.gam, gam_new), (self.g_x, g_x_new), (self.g_g, g_g_new)):
            mine.copy_(torch.where(keep, new, mine))
        self.u.copy_(torch.where(keep[:, None], u_new, u))
        self.f.copy_(torch.where(accept, f_new, f))
        self.iterations.add_(self.active.long())
        self.scale.copy_(torch.where(accept | ~self.active, torch.ones_like(self.scale), self.scale / 2))
        self.converged.logical_or_(done)
        self.active.logical_and_(~done & (self.scale > 1e-12))
        return self.history.entries(self.xi, self.gam, self.f)


def _capture(iteration: _Iteration, block: int):
    """Capture `block` iterations in a CUDA graph, after the warm-up torch requires (on a side stream; those are real
    iterations too). Returns the graph, its stacked records (K, B) (overwritten by every replay) and the warm-up's."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm = [iteration() for _ in range(block)]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        records = [iteration() for _ in range(block)]
        stacked = {key: torch.stack([r[key] for r in records]) for key in records[0]}
    warm = {key: torch.stack([r[key] for r in warm]) for key in warm[0]}
    return graph, stacked, warm


class PGD(CalibrationSolver):
    """Projected gradient descent calibration on the library's loop (see `pgd`): a step is one iteration, or on
    CUDA with `cuda_graph` a block of 10 replayed from a CUDA graph."""

    name = "PGD"
    block = 10

    def __init__(self, sensing: GainSensing, y: torch.Tensor, *, rho: float | None = 0.99, max_iter: int = 500,
                 tol: float | None = None, line_search: bool = True, step: float = 0.5,
                 image_basis: torch.Tensor | None = None, gain_basis: torch.Tensor | None = None,
                 refresh_every: int = 50, cuda_graph: bool | None = None, x_true: torch.Tensor | None = None,
                 gains_true: torch.Tensor | None = None, progress: bool = False, callback=None) -> None:
        owner = "calibration.pgd"
        self.use_graph = y.is_cuda if cuda_graph is None else cuda_graph
        if self.use_graph and not y.is_cuda:
            raise ValueError(f"{owner}: cuda_graph=True needs CUDA tensors, got {y.device}")
        steps = (max_iter // self.block + max_iter % self.block) if self.use_graph and isinstance(max_iter, int) \
            else max_iter
        super().__init__(sensing, y, owner, max_iter=max_iter, steps=steps, x_true=x_true, gains_true=gains_true,
                         progress=progress, callback=callback)
        if gain_basis is None:
            check_rho(rho, owner)
        if refresh_every < 1:
            raise ValueError(f"{owner}: argument 'refresh_every' must be >= 1, got {refresh_every}")
        if tol is not None:
            check_option(tol, owner, "tol")
        check_option(step, owner, "step", positive=True)
        m = y.shape[2]
        self.tol_pgd = tol if tol is not None else (1e-7 if y.real.dtype == torch.float64 else 1e-5)
        Z = orthonormal_basis(image_basis, sensing.pixels, owner, "image_basis") if image_basis is not None else None
        self.Z = Z.to(y.dtype) if Z is not None else None
        self.Bg = (orthonormal_basis(gain_basis, m, owner, "gain_basis", remove_mean=True).to(y.dtype)
                   if gain_basis is not None else None)
        self.rho = None if self.Bg is not None else rho
        self.line_search, self.step_size, self.refresh_every = line_search, step, refresh_every

    def init(self, x0):
        if x0 is not None:
            raise ValueError("calibration.pgd: starts from the back projection; argument 'x0' is not used")
        it = _Iteration(self.sensing, self.y, self.Z, self.Bg, self.rho, self.line_search, self.step_size,
                        self.tol_pgd, self.history)
        passes = [3]  # back projection + the first exact gradient
        self.history.append(self.history.entries(it.xi, it.gam, it.f), passes)
        return {"it": it, "passes": passes, "done": 0, "refreshed": 0, "graph": None}

    def step(self, state):
        it, passes, done = state["it"], state["passes"], state["done"]
        if self.use_graph and self.iteration_limit - done >= self.block:  # whole blocks from the graph
            if state["graph"] is None:
                state["graph"], state["stacked"], records = _capture(it, self.block)
            else:
                state["graph"].replay()
                records = {key: value.clone() for key, value in state["stacked"].items()}
            count = self.block
        else:
            records, count = it(), 1
        base = passes[-1]
        passes.extend([base + k + 1 for k in range(count)])  # one pass per iteration
        done += count
        self.history.append(records, passes)
        if done // self.refresh_every > state["refreshed"] and done < self.iteration_limit:
            state["refreshed"] = done // self.refresh_every
            it.refresh()
            passes[-1] += 2
        state["done"] = done
        return state, self.step_metrics(it.f)

    def stopped(self, state) -> torch.Tensor:
        return ~state["it"].active

    def converged(self, state) -> torch.Tensor:
        return state["it"].converged

    def iterate(self, state):
        return state["it"].xi, state["it"].gam

    def iterations(self, state) -> int:
        return int(state["it"].iterations.max())


def pgd(sensing: GainSensing, y: torch.Tensor, *, rho: float | None = 0.99, max_iter: int = 500,
        tol: float | None = None, line_search: bool = True, step: float = 0.5,
        image_basis: torch.Tensor | None = None, gain_basis: torch.Tensor | None = None,
        refresh_every: int = 50, cuda_graph: bool | None = None, x_true: torch.Tensor | None = None,
        gains_true: torch.Tensor | None = None, progress: bool = False, callback=None,
        warn: bool = True) -> CalibrationResult:
    """Projected gradient descent for y_l = diag(d) A_l x (batched: y (B, p, m)).

    rho: gains kept in [1 − ρ, 1 + ρ] (None: only mean 1; ignored with gain_basis). tol: stop when the relative
    step (μ_ξ‖∇_ξ f‖/‖ξ‖)² + (μ_γ‖h‖)²/m < tol² (default 1e-7 in float64, 1e-5 in float32), when f ≤ (100 ε)² f₀
    (ε: machine epsilon), or when f stops decreasing (relative change < 1e-10). line_search=False uses the fixed
    steps μ_ξ = step, μ_γ = step·m/‖ξ₀‖². cuda_graph (default: on CUDA tensors) replays blocks of 10 iterations from
    a CUDA graph and checks convergence once per block. Runs on the library's loop (`PGD`): a `ConvergenceWarning`
    when a problem has not converged. Returns gauge-normalised estimates and the history (see
    `CalibrationResult`)."""
    return PGD(sensing, y, rho=rho, max_iter=max_iter, tol=tol, line_search=line_search, step=step,
               image_basis=image_basis, gain_basis=gain_basis, refresh_every=refresh_every, cuda_graph=cuda_graph,
               x_true=x_true, gains_true=gains_true, progress=progress, callback=callback).run(warn=warn)
