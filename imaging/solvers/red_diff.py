r"""RED-Diff (Mardani et al., ICLR 2024): regularisation by denoising diffusion, a variational posterior mode.

With q(x_0 | y) = δ(x_0 − μ) in the model range, RED-Diff minimises over μ by Adam, sweeping t from T to 0:

    ℓ(μ) = w_obs s² ‖y − A(x(μ))‖² / (2 n_y) + λ w(σ_t/α_t) ⟨sg(ε_θ(α_t μ + σ_t ε, t) − ε), μ⟩ / n_x,

ε ~ N(0, I) drawn afresh at each step, sg the stop-gradient (the network is never differentiated: it runs under
torch.no_grad), x(μ) the image of μ, s the model-range units per image unit (so the data term is the paper's for
images in [−1, 1]) and w the SNR weighting (default linear, w(r) = r = 1/√SNR_t). Both terms are per-pixel means, as
in the official code, so λ does not depend on the image size. Timesteps t = T − T/K, …, T/K, 0 for K steps; Adam
betas (0.9, 0.99). The data term goes through any `Operator` (linear or not) by autograd.

Given the noise level σ, the data term acts only while a sample's residual exceeds the noise,
‖y − A(x)‖² > τ n_y σ² (its hinge max(‖y − A(x)‖² − τ n_y σ², 0) replaces ‖y − A(x)‖²; τ = `discrepancy`): the
prior is then not fought by a data term that keeps fitting the noise in the last, weakly regularised steps (small
t), and the final misfit lies at the noise level (the discrepancy principle, as FLAIR's data steps; our addition:
the paper's plain data term over-fits, its final RMS between 0.1 σ and σ on held-out pictures).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from imaging.operators.base import Operator
from imaging.priors.generative import DiffusionPrior
from imaging.solvers._variational import (SeededNoise, check_measurement, problem_first, schedule_check,
                                          squared_misfit, starting_image)
from imaging.solvers.base import DivergenceError, IterativeSolver
from imaging.solvers.parameter_choice import Discrepancy, prepare_search, search_solver


def linear_weighting(r: float) -> float:
    """w(r) = r = σ_t/α_t (the paper's default)."""
    return r


def sqrt_weighting(r: float) -> float:
    return math.sqrt(r)


def square_weighting(r: float) -> float:
    return r * r


def log_weighting(r: float) -> float:
    return math.log1p(r)


def clipped_weighting(r: float) -> float:
    return min(r, 1.0)


def constant_weighting(r: float) -> float:
    return 1.0


class RedDiff(IterativeSolver):
    """RED-Diff for y ≈ A(x) with a `DiffusionPrior`: `RedDiff(A, y, prior, ...)`; `run(x0=None)` starts from A⁺y
    (linear A) or x0.

    Args:
        A: any `Operator` acting on images (N, C, H, W) in the image range (linear or not).
        y: measurements (N, ...); N independent problems are solved together.
        prior: the diffusion model.
        steps: K timesteps (≤ T). lr: Adam step size. lam: λ, the prior weight relative to the data term; None
            (default): 3σ·n_x/n_y from `noise_level` σ (n_x pixels, n_y measurements per sample: the prior then
            weighs the same against the likelihood whatever the number of measurements; the factor 3 was chosen on
            train400 crops over deblurring, inpainting, 4× SR and CS at σ = 0.01 and 0.05; CS prefers about 10),
            else the paper's 0.25. "auto" (or `Discrepancy(...)`): a few full runs with the paper's data term,
            each from the same start, keeping the λ whose final data misfit is at the noise level (the
            discrepancy principle by a search; `discrepancy` does it within one run).
        obs_weight: w_obs. weighting: w(σ_t/α_t) (`linear_weighting`, `sqrt_weighting`, …, any float -> float).
        sigma_x0: std of the noise added to μ before diffusing (0 in the paper's setting).
        noise_level: σ of the measurement noise (per entry), if known. RED-Diff runs its whole schedule; it has
            converged when the schedule is done and, given σ, the final data RMS is at most 1.1 σ (the data are
            explained); otherwise a `ConvergenceWarning` gives the RMS reached.
        discrepancy: τ; given σ, the data term acts only while a sample's mean squared residual exceeds τσ² (see
            the module docstring). None (or σ unknown): the paper's data term, which fits y as far as it can.
        seed: for the noise draws (None: random), or a list of one seed per sample (a batch then answers what each
            sample alone would).
    History per step: t, data_rms (RMS of A(x) − y in image units), prior_loss (mean (ε_θ − ε)²).
    """

    name = "RED-Diff"

    def __init__(self, A: Operator, y: torch.Tensor, prior: DiffusionPrior, *, steps: int = 100,
                 lr: float = 0.25, lam: float | str | None = None, obs_weight: float = 1.0,
                 weighting: Callable[[float], float] = linear_weighting, sigma_x0: float = 0.0,
                 noise_level: float | None = None, discrepancy: float | None = 1.0, seed: int | list[int] | None = 0,
                 **loop_options) -> None:
        operator, y, prior = problem_first(A, y, prior, DiffusionPrior, "RedDiff")
        if not 1 <= steps <= prior.num_timesteps:
            raise ValueError(f"RedDiff: argument 'steps' must be in [1, {prior.num_timesteps}], got {steps}")
        options = dict(steps=steps, lr=lr, obs_weight=obs_weight, weighting=weighting, sigma_x0=sigma_x0, seed=seed,
                       discrepancy=discrepancy, **loop_options)
        if prepare_search(self, 0.0 if lam is None else lam, y, operator, noise_level, options, "RedDiff",
                          auto=Discrepancy()):
            lam, noise_level = None, self.noise_level
        for name, value in (("lr", lr), ("lam", 0.0 if lam is None else lam), ("obs_weight", obs_weight),
                            ("sigma_x0", sigma_x0), ("discrepancy", 0.0 if discrepancy is None else discrepancy),
                            ("noise_level", 0.0 if noise_level is None else noise_level)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"RedDiff: argument '{name}' must be finite and >= 0, got {value}")
        super().__init__(max_iter=steps, **loop_options)
        self.prior, self.operator = prior, operator
        self.y = check_measurement(operator, y, "RedDiff")
        self.lr, self.lam, self.obs_weight, self.weighting, self.sigma_x0 = lr, lam, obs_weight, weighting, sigma_x0
        stride = prior.num_timesteps // steps
        self.timesteps = list(range(0, prior.num_timesteps, stride))[::-1][:steps]
        self.seed, self.noise_level = seed, noise_level
        self.discrepancy = discrepancy or 0.0

    def default_lam(self, x0: torch.Tensor) -> float:
        """3σ·n_x/n_y with the noise level σ, else the paper's 0.25 (see `lam`)."""
        return 3.0 * self.noise_level * x0[0].numel() / self.y[0].numel() if self.noise_level else 0.25

    def search_parameter(self, x0: torch.Tensor | None):
        with torch.no_grad():
            start = starting_image(self.operator, self.y, x0, self.prior.image_range, "RedDiff")
        options = {**self.options, "discrepancy": None}  # the search itself brings the misfit to the noise
        return search_solver(lambda value, data: RedDiff(self.operator, data, self.prior, lam=value,
                                                         noise_level=self.noise_level, **options),
                             self.operator, self.y, self.parameter_rule, self.noise_level, self.default_lam(start),
                             start, "RedDiff", warm=False)

    def prior_direction(self, mu: torch.Tensor, t: int, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w(σ_t/α_t)·(ε_θ(α_t μ + σ_t ε, t) − ε), ε_θ − ε): the stop-gradient prior direction (times λ/n_x it
        is the prior term's gradient in μ) and the raw denoising residual."""
        alpha, sigma = self.prior.alpha_sigma(t)
        residual = self.prior.eps(alpha * mu + sigma * eps, t) - eps
        return self.weighting(sigma / alpha) * residual, residual

    def init(self, x0: torch.Tensor | None):
        x0 = starting_image(self.operator, self.y, x0, self.prior.image_range, "RedDiff")
        self.prior.check_image(x0, "RedDiff", "x0")
        if self.lam is None:
            self.lam = self.default_lam(x0)
        mu = self.prior.to_model(x0).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([mu], lr=self.lr, betas=(0.9, 0.99))
        return {"mu": mu, "optimizer": optimizer, "noise": SeededNoise(self.seed), "k": 0, "previous": mu.detach()}

    def step(self, state):
        mu, optimizer, noise = state["mu"], state["optimizer"], state["noise"]
        t = self.timesteps[state["k"]]
        state["k"] += 1
        x0 = mu.detach() + self.sigma_x0 * noise.like(mu) if self.sigma_x0 > 0 else mu.detach()
        direction, residual = self.prior_direction(x0, t, noise.like(mu))
        n_x, n_y = mu[0].numel(), self.y[0].numel()
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=False)
            misfit = squared_misfit(self.operator, self.prior.to_image(mu), self.y)
            excess = misfit - self.discrepancy * n_y * (self.noise_level or 0.0) ** 2
            loss = self.obs_weight * self.prior.scale ** 2 * excess.clamp_min(0).sum() / (2 * n_y)
            loss.backward()
        mu.grad += (self.lam / n_x) * direction  # the stop-gradient prior term, added to autograd's data gradient
        optimizer.step()
        size = float(mu.detach().abs().max())
        if not size <= 1e3:  # the model range is [−1, 1]: far outside it, the steps are too large
            raise DivergenceError(f"RedDiff: diverged: the iterate reached {size:.3g} in model units (range [−1, 1]) "
                                  f"at step {state['k']}; lower the step size 'lr' (now {self.lr:g})",
                                  self.prior.to_image(state["previous"]), state["k"] - 1)
        state["previous"] = mu.detach().clone()
        return state, {"t": float(t), "data_rms": math.sqrt(float(misfit.mean()) / n_y),
                       "prior_loss": float((residual * residual).mean())}

    def final_check(self, state, metrics):
        return schedule_check(state["k"], len(self.timesteps), metrics["data_rms"], self.noise_level)

    def estimate(self, state) -> torch.Tensor:
        return self.prior.to_image(state["mu"].detach())
