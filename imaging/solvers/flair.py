r"""FLAIR (Erbach et al., NeurIPS 2025): a variational posterior mode in the latent space of a flow-matching model.

The latent μ (image x = D(μ)) minimises the data misfit plus the flow-matching loss of q(z_t | y) =
N((1 − t) μ, t² I), t = 1 noise. Per time t of the grid linspace(1, t_min, K + 2) without its ends (descending):

    ε   = a x̂₁ + √(1 − a²) ξ,  a = 1 − t            (deterministic trajectory adjustment; a = 0 without it)
    z_t = t ε + (1 − t) μ,   v = v_θ(z_t, t),   x̂₁ = z_t + (1 − t) v     (the predicted noise endpoint)
    μ  ← μ − η_R λ(t) (v − (ε − μ))                 (prior step; the velocity network is never differentiated)
    then up to J data steps  μ ← μ − η ∇_μ s² ‖A(D(μ)) − y‖²,  stopping once the per-pixel mean squared
    residual is at most the noise level²    (decoupled "hard" data consistency, through the decoder)
    or, per sample, once a step lowers the misfit by less than 1 % (the decoder cannot fit y closer; our addition)

with the paper's η = η_D λ(t), or by default the Polyak step η = s²(‖A(D(μ)) − y‖² − n σ²)/‖∇‖², which needs no
tuning per operator or image size (the paper's η_D ranges from 0.1 to 12 across its tasks).

λ(t) = ρ·w(t) with the calibrated weight w ∝ 1/E‖v_θ(z_t, t) − (ε − z_0)‖² (mean 1 over the grid; computed
offline by `flow_velocity_error` + `calibrated_weights`) or w = 1 (constant weight). s is the model-range units
per image unit, so the data step equals the paper's for images in [−1, 1].
"""
from __future__ import annotations

import math
import warnings

import torch

from imaging._progress import progress_bar
from imaging.operators.base import LinearOperator, Operator
from imaging.priors.generative import FlowPrior
from imaging.solvers._variational import (SeededNoise, check_measurement, problem_first, schedule_check,
                                          squared_misfit, starting_image)
from imaging.solvers.base import IterativeSolver
from imaging.solvers.cg import CG
from imaging.solvers.parameter_choice import resolve_noise_level


class Flair(IterativeSolver):
    """FLAIR for y ≈ A(x) with a `FlowPrior`: `Flair(A, y, prior, ...)`; `run(x0=None)` starts from E(A⁺y)
    (linear A) or E(x0).

    Args:
        A: any `Operator` on images in the image range (linear or not).
        y: measurements (N, ...), N independent problems.
        prior: the flow model (and its autoencoder).
        steps: K prior steps on the grid linspace(1, t_min, K + 2)[1:-1].
        weights: the calibrated weight curve w (M,) on linspace(1, 0, M) (looked up at the nearest t); None takes
            the prior's `calibrated_weights` if it has them, else a constant 1 (`torch.ones(1)` forces the
            constant). lam: ρ, the prior weight's scale (the paper's regularisation weight; `regularisation=` is its
            deprecated name); None: the prior's `default_regularisation` (0.5 with calibrated weights, 0.1 for a
            diffusion model read as a flow).
        lr_prior: η_R. lr_data: η_D, the paper's fixed data step (to be tuned per operator and image size), or
            None (default) for the Polyak step s²(‖r‖² − nσ²)/‖∇‖², which aims each data step at the noise level
            and needs no tuning. data_steps: J (0: no data steps). noise_level: σ, the data steps stop once the
            RMS residual (image units) reaches it; None: estimated from y by `imaging.estimate_noise` (an error
            asks for it where y is not image-shaped and A leaves no entry unobserved); 0: fit y as far as J allows. min_decrease: a sample's data steps also stop once one step
            lowered its misfit by less than this fraction (the decoder cannot fit y any closer; 0: never).
        trajectory_adjustment: mix the predicted noise x̂₁ into ε (DTA); False draws ε afresh.
        decoupled: data steps in their own loop after the prior step (HDC); False takes one data gradient step
            together with each prior step.
        decoder_error: τ, the autoencoder's RMS reconstruction error (image units), or None. When given (linear
            operators), the result is refined in pixel space as the MAP of x given y and x ~ N(D(μ), τ²I):
            (AᴴA + β I) x = Aᴴy + β D(μ), β = σ²/τ², by CG; it restores the measured content the decoder cannot
            represent (not part of the paper's method).
        seed: for ξ and the first x̂₁ (None: random), or a list of one seed per sample (a batch then answers what each
            sample alone would).
    History per step: t, data_rms (after the data steps), prior_loss (mean (v − (ε − μ))²), data_steps.
    """

    name = "FLAIR"

    def __init__(self, A: Operator, y: torch.Tensor, prior: FlowPrior, *, steps: int = 50,
                 t_min: float = 0.18, weights: torch.Tensor | None = None, lam: float | None = None,
                 lr_prior: float = 1.0, lr_data: float | None = None, data_steps: int = 15,
                 noise_level: float | None = None,
                 min_decrease: float = 0.01, trajectory_adjustment: bool = True, decoupled: bool = True,
                 decoder_error: float | None = None,
                 seed: int | list[int] | None = 0, regularisation: float | None = None,
                 **loop_options) -> None:
        operator, y, prior = problem_first(A, y, prior, FlowPrior, "Flair")
        if regularisation is not None:
            warnings.warn("Flair: argument 'regularisation' is deprecated, pass lam", DeprecationWarning,
                          stacklevel=2)
            lam = regularisation if lam is None else lam
        if steps < 1 or not 0 <= t_min < 1:
            raise ValueError(f"Flair: need steps >= 1 and t_min in [0, 1), got {steps} and {t_min}")
        if lam is None:
            lam = getattr(prior, "default_regularisation", 0.5)
        for name, value in (("lam", lam), ("lr_prior", lr_prior),
                            ("lr_data", 0.0 if lr_data is None else lr_data),
                            ("noise_level", 0.0 if noise_level is None else noise_level)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Flair: argument '{name}' must be finite and >= 0, got {value}")
        if not (isinstance(data_steps, int) and data_steps >= 0):
            raise ValueError(f"Flair: argument 'data_steps' must be an integer >= 0, got {data_steps!r}")
        if not 0 <= min_decrease < 1:
            raise ValueError(f"Flair: argument 'min_decrease' must be in [0, 1), got {min_decrease}")
        if weights is not None and (weights.dim() != 1 or not bool(torch.isfinite(weights).all())
                                    or not bool((weights >= 0).all())):
            raise ValueError("Flair: argument 'weights' must be a 1-D curve of finite non-negative weights")
        if decoder_error is not None and not (isinstance(operator, LinearOperator) and decoder_error > 0
                                              and noise_level != 0):
            raise ValueError("Flair: argument 'decoder_error' needs a LinearOperator and decoder_error, noise_level > 0")
        if noise_level is None:  # estimated from y (and A), or a clear error asking for it
            noise_level = resolve_noise_level(None, check_measurement(operator, y, "Flair"), operator, "Flair")
        super().__init__(max_iter=steps, **loop_options)
        self.prior, self.operator = prior, operator
        self.y = check_measurement(operator, y, "Flair")
        self.times = torch.linspace(1, t_min, steps + 2)[1:-1].tolist()
        self.weights = weights if weights is not None else prior.calibrated_weights
        self.lam = lam
        self.lr_prior, self.lr_data, self.data_steps, self.noise_level = lr_prior, lr_data, data_steps, noise_level
        self.trajectory_adjustment, self.decoupled, self.seed = trajectory_adjustment, decoupled, seed
        self.min_decrease = min_decrease
        self.decoder_error = decoder_error

    def weight(self, t: float) -> float:
        """λ(t) = ρ w(t), w looked up at the nearest point of linspace(1, 0, M)."""
        if self.weights is None:
            return self.lam
        m = self.weights.shape[0]
        return self.lam * float(self.weights[round((1 - t) * (m - 1))])

    def prior_direction(self, mu: torch.Tensor, t: float, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_θ(z_t, t) − (ε − μ), x̂₁) at z_t = t ε + (1 − t) μ: the stop-gradient prior direction (the flow-
        matching loss's gradient in μ without the network's Jacobian) and the predicted noise endpoint."""
        z_t = t * eps + (1 - t) * mu
        v = self.prior.velocity(z_t, t)
        return v - (eps - mu), z_t + (1 - t) * v

    def _data_gradient(self, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇_μ s²‖A(D(μ)) − y‖² per sample, ‖A(D(μ)) − y‖² per sample)."""
        with torch.enable_grad():
            mu_ = mu.detach().requires_grad_(True)
            misfit = squared_misfit(self.operator, self.prior.decode(mu_), self.y)
            grad, = torch.autograd.grad(self.prior.scale ** 2 * misfit.sum(), mu_)
        return grad, misfit.detach()

    def _data_step(self, grad: torch.Tensor, excess: torch.Tensor, lam: float) -> torch.Tensor:
        """Per-sample step size (N, 1, ...): the paper's η_D λ(t), or with lr_data None the Polyak step
        s²(‖r‖² − n σ²)/‖∇‖² towards the noise level (0 where the residual is already at the noise level)."""
        shape = (-1, *[1] * (grad.dim() - 1))
        if self.lr_data is not None:
            return (self.lr_data * lam * (excess > 0).to(grad.dtype)).reshape(shape)
        grad_norm2 = (grad * grad).flatten(1).sum(1).clamp(min=1e-30)
        return (self.prior.scale ** 2 * excess / grad_norm2).reshape(shape)

    @torch.no_grad()
    def _data_descent(self, mu: torch.Tensor, grad: torch.Tensor, misfit: torch.Tensor, excess: torch.Tensor,
                      lam: float, fraction: torch.Tensor, halvings: int = 8) -> torch.Tensor:
        """One data step. With the Polyak step, try `fraction` (N,) of it and halve per sample until the misfit
        decreases (Armijo, c = 1e-4): the noise level may be below what the decoder can reach, and then the Polyak
        step is too long. `fraction` is updated in place to twice the accepted fraction (at most 1), so the next
        step starts near the last accepted one instead of re-trying the full Polyak step."""
        step = self._data_step(grad, excess, lam)
        if self.lr_data is not None:
            return mu - step * grad
        shape = step.shape
        decrease = 1e-4 * (grad * grad).flatten(1).sum(1) / self.prior.scale ** 2
        accepted = torch.zeros_like(misfit, dtype=torch.bool)
        out = mu.clone()
        trial_fraction = fraction.clone()
        for _ in range(halvings):
            step_k = step * trial_fraction.reshape(shape)
            trial = mu - step_k * grad
            new = squared_misfit(self.operator, self.prior.decode(trial), self.y)
            ok = ~accepted & (new <= misfit - step_k.flatten() * decrease)
            out[ok] = trial[ok]
            accepted |= ok
            if bool(accepted.all()):
                break
            trial_fraction = torch.where(accepted, trial_fraction, trial_fraction / 2)
        fraction.copy_(torch.where(accepted, (2 * trial_fraction).clamp(max=1.0), trial_fraction))
        return out

    def init(self, x0: torch.Tensor | None):
        x0 = starting_image(self.operator, self.y, x0, self.prior.image_range, "Flair")
        with torch.no_grad():
            mu = self.prior.encode(x0)
        noise = SeededNoise(self.seed)
        return {"mu": mu, "x1": noise.like(mu), "noise": noise, "k": 0,
                "fraction": torch.ones(mu.shape[0], dtype=mu.dtype, device=mu.device)}

    def step(self, state):
        mu, noise = state["mu"], state["noise"]
        t = self.times[state["k"]]
        state["k"] += 1
        a = 1 - t if self.trajectory_adjustment else 0.0
        eps = a * state["x1"] + math.sqrt(1 - a * a) * noise.like(mu)
        direction, state["x1"] = self.prior_direction(mu, t, eps)
        lam = self.weight(t)
        n_y = self.y[0].numel()
        tolerance = self.noise_level ** 2 * n_y
        used = 0
        if self.decoupled:
            mu = mu - self.lr_prior * lam * direction
            previous = None
            for _ in range(self.data_steps):
                grad, misfit = self._data_gradient(mu)
                excess = (misfit - tolerance).clamp(min=0)
                if previous is not None:  # stalled samples (the decoder cannot fit y better) stop too
                    excess = torch.where(misfit > (1 - self.min_decrease) * previous, 0.0, excess)
                if not bool((excess > 0).any()):
                    break
                previous = misfit
                mu = self._data_descent(mu, grad, misfit, excess, lam, state["fraction"])
                used += 1
        else:
            grad, misfit = self._data_gradient(mu)
            step = self._data_step(grad, (misfit - tolerance).clamp(min=0), lam)
            mu = mu - self.lr_prior * lam * direction - step * grad
        state["mu"] = mu
        with torch.no_grad():
            misfit = squared_misfit(self.operator, self.prior.decode(mu), self.y)
        return state, {"t": t, "data_rms": math.sqrt(float(misfit.mean()) / n_y),
                       "prior_loss": float((direction * direction).mean()), "data_steps": float(used)}

    def final_check(self, state, metrics):
        return schedule_check(state["k"], len(self.times), metrics["data_rms"], self.noise_level or None)

    def estimate(self, state) -> torch.Tensor:
        with torch.no_grad():
            x = self.prior.decode(state["mu"])
            if self.decoder_error is None:
                return x
            beta = (self.noise_level / self.decoder_error) ** 2
            op = self.operator
            rhs = op.adjoint(self.y)
            rhs = (rhs.real if rhs.is_complex() else rhs) + beta * x
            normal = lambda v: (lambda w: w.real if w.is_complex() else w)(op.adjoint(op(v))) + beta * v  # noqa: E731
            return CG(normal, rhs, max_iter=200, tol=1e-6).run(x, warn=False).x.clamp(*self.prior.image_range)


@torch.no_grad()
def flow_velocity_error(prior: FlowPrior, images: torch.Tensor, points: int = 100, samples: int = 4,
                        seed: int = 0, batch: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow model's velocity error L(t) = E‖v_θ(z_t, t) − (ε − z_0)‖² / numel on the grid t = linspace(1, 0,
    points), z_0 = E(x) for held-out `images` (N, C, H, W), `samples` noise draws per image. Returns (t, L)."""
    z0 = torch.cat([prior.encode(chunk) for chunk in images.split(batch)])
    noise = SeededNoise(seed)
    grid = torch.linspace(1, 0, points)
    errors = torch.zeros(points, dtype=torch.float64)
    for i, t in enumerate(progress_bar(grid.tolist(), desc="velocity error", enabled=progress)):
        total = 0.0
        for _ in range(samples):
            for chunk in z0.split(batch):
                eps = noise.like(chunk)
                v = prior.velocity(t * eps + (1 - t) * chunk, t)
                total += float(((v - (eps - chunk)) ** 2).sum())
        errors[i] = total / (samples * z0.numel())
    return grid, errors


def calibrated_weights(errors: torch.Tensor) -> torch.Tensor:
    """FLAIR's calibrated weight curve from the velocity errors L (on linspace(1, 0, M)): w = 1/(L + 1e-7),
    normalised to mean 1."""
    w = 1.0 / (errors + 1e-7)
    return w / w.mean()
