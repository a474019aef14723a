r"""DPS (Chung et al., "Diffusion posterior sampling for general noisy inverse problems", ICLR 2023).

Ancestral sampling of the diffusion prior, each step followed by a gradient step on the likelihood of the
posterior-mean estimate (the approximation p(y | x_t) ≈ p(y | x̂_0(x_t))):

    x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t,      x'_{t−1} = DDPM step from x_t towards x̂_0 (clipped),
    x_{t−1} = x'_{t−1} − ζ ∇_{x_t} ‖y − A(x̂_0)‖

with the norm (not its square) in the model range, as in the authors' code. The gradient goes through the network:
DPS is the one solver here that backpropagates through it, so each step costs a forward and a backward pass and
keeps the network's activations for that step in memory (RED-Diff, FLAIR, DiffPIR and DDRM keep none).
Published settings (FFHQ 256², σ = 0.05): 1000 steps, ζ = 0.3 for deblurring and super-resolution, 0.5 for
inpainting.
"""
from __future__ import annotations

import math

import torch

from imaging.operators.base import LinearOperator, Operator
from imaging.priors.generative import DiffusionPrior
from imaging.solvers._diffusion import alpha_bar, ancestral_sigma, check_problem, data_rms, ddim_update, timesteps
from imaging.solvers._variational import SeededNoise, schedule_check
from imaging.solvers.base import IterativeSolver


class DPS(IterativeSolver):
    """DPS for y ≈ A(x) + noise with a `DiffusionPrior`: `DPS(A, y, prior, ...).run()` samples x from noise.

    Args:
        A: any `Operator` on images (N, C, H, W) in the image range, linear or not (differentiated by autograd).
        y: measurements (N, ...): N independent problems, sampled together.
        prior: the diffusion model.
        steps: K timesteps (every T/K-th; the paper: all T = 1000).
        scale: ζ, the step on ‖y − A(x̂_0)‖ in the model range (the paper: 0.3 deblurring and SR, 0.5 inpainting).
        noise_level: σ of the measurement noise per entry, if known: DPS runs its whole schedule and has converged
            when, given σ, the final data RMS is at most 1.1 σ (else a `ConvergenceWarning`).
        eta: 1 (default) the DDPM ancestral step of the paper; 0 a deterministic DDIM step.
        seed: for the initial noise and the ancestral draws (None: random), or a list of one seed per sample (a batch
            then answers what each sample alone would).
    History per step: t, data_rms (RMS of A(x̂_0) − y in image units).
    """

    name = "DPS"

    def __init__(self, A: Operator, y: torch.Tensor, prior: DiffusionPrior, *, steps: int = 1000,
                 scale: float = 0.3, noise_level: float | None = None, eta: float = 1.0,
                 seed: int | list[int] | None = 0,
                 **loop_options) -> None:
        A, y, prior = check_problem(A, y, prior, "DPS", steps, noise_level)
        for name, value in (("scale", scale), ("eta", eta)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"DPS: argument '{name}' must be a finite number >= 0, got {value!r}")
        self.operator, self.y, self.prior = A, y, prior
        self.timesteps = timesteps(prior, steps)
        self.scale, self.noise_level, self.eta, self.seed = float(scale), noise_level, float(eta), seed
        super().__init__(max_iter=len(self.timesteps), **loop_options)

    def init(self, x0: torch.Tensor | None):
        if x0 is not None:
            raise ValueError("DPS: it samples from noise; argument 'x0' is not used")
        noise = SeededNoise(self.seed)
        like = self.operator.adjoint(self.y) if isinstance(self.operator, LinearOperator) else None
        shape = self.shape_of_image(like)
        x = noise.like(torch.empty(shape, dtype=self.y.real.dtype, device=self.y.device))
        return {"x": x, "k": 0, "noise": noise, "x0": None}

    def shape_of_image(self, like: torch.Tensor | None) -> tuple[int, ...]:
        if like is not None:
            return tuple(like.real.shape if like.is_complex() else like.shape)
        if self.prior.image_shape is None:
            raise ValueError("DPS: the image shape is unknown for a nonlinear operator and a fully convolutional "
                             "prior; give the prior an image_shape")
        return (self.y.shape[0], *self.prior.image_shape)

    def step(self, state):
        prior, k = self.prior, state["k"]
        t = self.timesteps[k]
        t_prev = self.timesteps[k + 1] if k + 1 < len(self.timesteps) else -1
        abar, abar_prev = alpha_bar(prior, t), alpha_bar(prior, t_prev)
        with torch.enable_grad():
            x_t = state["x"].detach().requires_grad_(True)
            x0, eps = prior.tweedie(x_t, t, differentiable=True)
            residual = self.operator(prior.to_image(x0)) - self.y
            norms = torch.linalg.vector_norm(prior.scale * residual.flatten(1), dim=1)
            grad = torch.autograd.grad(norms.sum(), x_t)[0]
        with torch.no_grad():
            x0 = x0.detach().clamp(*prior.model_range)
            eps = (x_t.detach() - abar ** 0.5 * x0) / (1 - abar) ** 0.5  # consistent with the clipped x̂_0
            sigma = ancestral_sigma(abar, abar_prev, self.eta) if t_prev >= 0 else 0.0
            x = ddim_update(x0, eps, abar_prev, sigma, state["noise"].like(x0)) - self.scale * grad
        state.update(x=x, k=k + 1, x0=x0)
        rms = float((residual.detach().abs() ** 2).mean()) ** 0.5
        return state, {"t": float(t), "data_rms": rms}

    def final_check(self, state, metrics):
        rms = data_rms(self.operator, self.estimate(state), self.y)
        return schedule_check(state["k"], len(self.timesteps), rms, self.noise_level)

    def estimate(self, state) -> torch.Tensor:
        return self.prior.to_image(state["x"].detach())
