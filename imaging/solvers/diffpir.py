r"""DiffPIR (Zhu et al., "Denoising diffusion models for plug-and-play image restoration", CVPRW 2023).

Half-quadratic splitting with the diffusion model as the denoiser, along the sampling schedule:

    x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t                       (the denoiser: Tweedie's posterior mean)
    x̃_0 = argmin_x ‖y − A x‖² + ρ_t ‖x − x̂_0‖²,   ρ_t = λ σ_n² / σ̄_t²,  σ̄_t² = (1 − ᾱ_t)/ᾱ_t   (data step)
    ε̂ = (x_t − √ᾱ_t x̃_0) / √(1 − ᾱ_t),   x_{t−1} = √ᾱ_{t−1} x̃_0 + √(1 − ᾱ_{t−1}) (√(1 − ζ) ε̂ + √ζ z)

with σ_n the noise level in the model range. The data step is a linear least-squares problem, solved by the
library's conjugate gradient warm-started at x̂_0 (closed form for operators where CG converges in one step).
The network runs under torch.no_grad: one evaluation per step, no backpropagation. Published settings (FFHQ 256²):
100 steps with quadratic spacing, λ = 1, ζ = 0.1 for deblurring and super-resolution at σ = 0.05; inpainting 20
steps, ζ = 1. Here ζ defaults to 1 (chosen on training crops for the shipped prior, see `zeta`).
"""
from __future__ import annotations

import math

import torch

from imaging.linalg import conjugate_gradient
from imaging.operators.base import LinearOperator
from imaging.priors.generative import DiffusionPrior
from imaging.solvers._diffusion import alpha_bar, check_problem, data_rms, ddim_update, timesteps
from imaging.solvers._variational import SeededNoise, schedule_check
from imaging.solvers.base import IterativeSolver, check_linearity, real_part, require_linear


class DiffPIR(IterativeSolver):
    """DiffPIR for y = A x + noise (A linear) with a `DiffusionPrior`: `DiffPIR(A, y, prior, noise_level=σ).run()`.

    Args:
        A: a `LinearOperator` on images (N, C, H, W) in the image range.
        y: measurements (N, ...).
        prior: the diffusion model.
        noise_level: σ of the measurement noise per entry (image units); 0 enforces A x = y at every step.
        steps: K timesteps; spacing: "quadratic" (the paper's) or "uniform".
        lam: λ, the weight of the prior step against the data (ρ_t = λ σ_n² / σ̄_t²).
        zeta: ζ in [0, 1], the share of fresh noise in each step (0: deterministic). Default 1: the best of 0.1 /
            0.3 / 0.5 / 1 on train400 crops with the shipped natural prior at σ = 0.01 and 0.05 (23.85 dB against
            18.73 for the paper's 0.1, which it set for deblurring and SR at σ = 0.05 with its 256² FFHQ models;
            benchmarks/diffusion_solvers.py --tune).
        cg_iter, cg_tol: the conjugate gradient of the data step.
        seed: for the initial noise and the draws (None: random), or a list of one seed per sample (a batch then answers
            what each sample alone would).
    Converged: the schedule ran to its end and the final data RMS is at most 1.1 σ.
    History per step: t, data_rms (RMS of A x̃_0 − y), rho.
    """

    name = "DiffPIR"

    def __init__(self, A: LinearOperator, y: torch.Tensor, prior: DiffusionPrior, *, noise_level: float,
                 steps: int = 100, spacing: str = "quadratic", lam: float = 1.0, zeta: float = 1.0,
                 cg_iter: int = 50, cg_tol: float = 1e-6, seed: int | list[int] | None = 0, **loop_options) -> None:
        A, y, prior = check_problem(A, y, prior, "DiffPIR", steps, noise_level, noise_required=True)
        require_linear(A, "DiffPIR")
        check_linearity(A, real_part(A.adjoint(y)), "DiffPIR")
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
            raise ValueError(f"DiffPIR: argument 'lam' must be a finite number > 0, got {lam!r}")
        if not (isinstance(zeta, (int, float)) and 0 <= zeta <= 1):
            raise ValueError(f"DiffPIR: argument 'zeta' must be in [0, 1], got {zeta!r}")
        self.operator, self.y, self.prior = A, y, prior
        self.adjoint_y = real_part(A.adjoint(y))  # Aᴴy: the data step's constant part, and the image's shape
        self.timesteps = timesteps(prior, steps, spacing)
        self.noise_level, self.lam, self.zeta, self.seed = float(noise_level), float(lam), float(zeta), seed
        self.cg_iter, self.cg_tol = cg_iter, cg_tol
        super().__init__(max_iter=len(self.timesteps), **loop_options)

    def init(self, x0: torch.Tensor | None):
        if x0 is not None:
            raise ValueError("DiffPIR: it samples from noise; argument 'x0' is not used")
        noise = SeededNoise(self.seed)
        self.prior.check_image(self.adjoint_y, "DiffPIR", "the image A^H y")
        return {"x": noise.like(self.adjoint_y), "k": 0, "noise": noise}

    def rho(self, t: int) -> float:
        """ρ_t = λ σ_n² / σ̄_t² (σ_n in the model range)."""
        abar = alpha_bar(self.prior, t)
        return self.lam * (self.prior.scale * self.noise_level) ** 2 * abar / (1 - abar)

    def data_step(self, x0: torch.Tensor, rho: float) -> torch.Tensor:
        """argmin_x ‖y − A x‖² + ρ ‖x − x0‖² in the image range: (AᴴA + ρ I) x = Aᴴy + ρ x0 by CG from x0."""
        def normal(v: torch.Tensor) -> torch.Tensor:
            return real_part(self.operator.normal(v)) + rho * v

        return conjugate_gradient(normal, self.adjoint_y + rho * x0, x0=x0, tol=self.cg_tol, max_iter=self.cg_iter).x

    def step(self, state):
        prior, k = self.prior, state["k"]
        t = self.timesteps[k]
        t_prev = self.timesteps[k + 1] if k + 1 < len(self.timesteps) else -1
        abar, abar_prev = alpha_bar(prior, t), alpha_bar(prior, t_prev)
        x_t = state["x"]
        x0, _ = prior.tweedie(x_t, t)
        rho = self.rho(t)
        x0 = prior.to_model(self.data_step(prior.to_image(x0), rho))
        eps = (x_t - abar ** 0.5 * x0) / (1 - abar) ** 0.5
        sigma = (self.zeta * (1 - abar_prev)) ** 0.5
        state.update(x=ddim_update(x0, eps, abar_prev, sigma, state["noise"].like(x0)), k=k + 1)
        return state, {"t": float(t), "data_rms": data_rms(self.operator, prior.to_image(x0), self.y), "rho": rho}

    def final_check(self, state, metrics):
        return schedule_check(state["k"], len(self.timesteps), metrics["data_rms"], self.noise_level)

    def estimate(self, state) -> torch.Tensor:
        return self.prior.to_image(state["x"])  # after the last step (ᾱ = 1, no noise) x is the data-step x̃_0
