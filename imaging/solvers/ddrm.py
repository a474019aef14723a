r"""DDRM (Kawar et al., "Denoising diffusion restoration models", NeurIPS 2022).

For an operator with a known SVD A = U diag(s) Vᴴ, sampling runs in A's spectral coordinates c = Vᴴx, where the
measurement is ȳ_i = (Uᴴy)_i / s_i with noise σ_y/s_i on every coefficient with s_i > 0. In the variance-exploding
parametrisation x_t = x_0 + σ_t n (σ_t² = (1 − ᾱ_t)/ᾱ_t, in the image range) with ĉ_0 = Vᴴ x̂_0 from the network,
each step from σ_t to σ_{t'} draws, per coefficient (z ~ N(0, 1)):

    s_i = 0 (unseen):          c' = ĉ_0 + σ_{t'} (√(1 − η²) (c − ĉ_0)/σ_t + η z)
    σ_{t'} < σ_y/s_i:          c' = ĉ_0 + σ_{t'} (√(1 − η²) (ȳ − ĉ_0)/(σ_y/s_i) + η z)
    σ_{t'} ≥ σ_y/s_i:          c' = (1 − η_b) ĉ_0 + η_b ȳ + √(σ_{t'}² − η_b² σ_y²/s_i²) z

and x' = V c'. The network runs under torch.no_grad (one evaluation per step). Published settings: 20 steps,
η = 0.85, η_b = 1. Operators with an SVD in closed form: `Identity`, `Inpainting`, `Blur(mode="circular")`,
`Downsampling(filter="box")`, `StructuredCompressedSensing` (or any `LinearOperator` implementing `svd(like)`).
"""
from __future__ import annotations

import math

import torch

from imaging.operators.base import LinearOperator
from imaging.priors.generative import DiffusionPrior
from imaging.solvers._diffusion import alpha_bar, check_problem, data_rms, timesteps
from imaging.solvers._variational import SeededNoise, schedule_check
from imaging.solvers.base import IterativeSolver, real_part, require_linear


class DDRM(IterativeSolver):
    """DDRM for y = A x + noise with a `DiffusionPrior` and an operator with an SVD: `DDRM(A, y, prior,
    noise_level=σ).run()`.

    Args:
        A: a `LinearOperator` with `svd(like)` (see the module docstring); others raise a TypeError.
        y: measurements (N, ...). prior: the diffusion model.
        noise_level: σ_y of the measurement noise per entry (image units; 0: noiseless, the data are kept exactly).
        steps: K timesteps (every T/K-th). eta: η, eta_b: η_b (the paper's 0.85 and 1).
        seed: for the initial noise and the draws (None: random), or a list of one seed per sample (a batch then answers
            what each sample alone would).
    Converged: the schedule ran to its end and the final data RMS is at most 1.1 σ_y (0 noise: 1e-6 of ‖y‖'s RMS).
    History per step: t, data_rms (RMS of A x̂_0 − y).
    """

    name = "DDRM"

    def __init__(self, A: LinearOperator, y: torch.Tensor, prior: DiffusionPrior, *, noise_level: float,
                 steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, seed: int | list[int] | None = 0,
                 **loop_options) -> None:
        A, y, prior = check_problem(A, y, prior, "DDRM", steps, noise_level, noise_required=True)
        require_linear(A, "DDRM")
        for name, value in (("eta", eta), ("eta_b", eta_b)):
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"DDRM: argument '{name}' must be in [0, 1], got {value!r}")
        like = real_part(A.adjoint(y))
        try:
            self.svd = A.svd(like)
        except NotImplementedError as error:
            raise TypeError(f"DDRM: needs an operator with a singular value decomposition: {error}") from None
        self.operator, self.y, self.prior, self.like = A, y, prior, like
        self.timesteps = timesteps(prior, steps)
        self.noise_level, self.eta, self.eta_b, self.seed = float(noise_level), float(eta), float(eta_b), seed
        super().__init__(max_iter=len(self.timesteps), **loop_options)

    def sigma(self, t: int) -> float:
        """σ_t of the variance-exploding parametrisation, in the image range (0 at the end, t < 0)."""
        abar = alpha_bar(self.prior, t)
        return ((1 - abar) / abar) ** 0.5 / self.prior.scale

    def init(self, x0: torch.Tensor | None):
        if x0 is not None:
            raise ValueError("DDRM: it samples from noise; argument 'x0' is not used")
        self.prior.check_image(self.like, "DDRM", "the image A^H y")
        svd, noise = self.svd, SeededNoise(self.seed)
        s = svd.s
        seen = s > 0
        ybar = svd.u_adjoint(self.y) / torch.where(seen, s, torch.ones_like(s))
        level = self.noise_level / torch.where(seen, s, torch.ones_like(s))  # σ_y / s_i
        sigma_T = self.sigma(self.timesteps[0])
        z = svd.v_adjoint(noise.like(self.like))
        # x_T = x_0 + σ_T n: where the measurement is less noisy than that, it is x_T's mean (the rest of the
        # variance added); elsewhere (unseen, or σ_y/s_i > σ_T) x_T is noise of scale σ_T
        informative = seen & (level < sigma_T)
        c = torch.where(informative, ybar + (sigma_T ** 2 - level ** 2).clamp_min(0).sqrt() * z, sigma_T * z)
        return {"c": c, "k": 0, "noise": noise, "ybar": ybar, "level": level, "seen": seen}

    def step(self, state):
        prior, svd, k = self.prior, self.svd, state["k"]
        t = self.timesteps[k]
        t_prev = self.timesteps[k + 1] if k + 1 < len(self.timesteps) else -1
        sigma, sigma_prev = self.sigma(t), self.sigma(t_prev)
        c, ybar, level, seen = state["c"], state["ybar"], state["level"], state["seen"]
        x = svd.v(c)
        abar = alpha_bar(prior, t)
        x0_model, _ = prior.tweedie(abar ** 0.5 * prior.to_model(x), t)
        c0 = svd.v_adjoint(prior.to_image(x0_model))
        z = svd.v_adjoint(state["noise"].like(x))
        eta, eta_b, keep = self.eta, self.eta_b, (1 - self.eta ** 2) ** 0.5
        unseen = c0 + sigma_prev * (keep * (c - c0) / sigma + eta * z)
        safe_level = torch.where(level > 0, level, torch.ones_like(level))
        below = c0 + sigma_prev * (keep * (ybar - c0) / safe_level + eta * z)
        above = (1 - eta_b) * c0 + eta_b * ybar + (sigma_prev ** 2 - eta_b ** 2 * level ** 2).clamp_min(0).sqrt() * z
        c = torch.where(~seen, unseen, torch.where(sigma_prev < level, below, above))
        state.update(c=c, k=k + 1)
        return state, {"t": float(t), "data_rms": data_rms(self.operator, svd.v(c0), self.y)}

    def final_check(self, state, metrics):
        rms = data_rms(self.operator, self.estimate(state), self.y)
        floor = self.noise_level if self.noise_level > 0 else 1e-6 * float((self.y.abs() ** 2).mean()) ** 0.5 / 1.1
        return schedule_check(state["k"], len(self.timesteps), rms, floor)

    def estimate(self, state) -> torch.Tensor:
        return self.svd.v(state["c"])
