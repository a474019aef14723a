r"""Bilevel learning of denoising regularisers: x̂(θ) = argmin_x ½‖x − y‖² + R_θ(x) per image, upper loss
g(x) = (1/2n) Σ ‖x − x_true‖² over the n training images.

`DenoisingBilevel(y, x_true, regulariser)` turns any regulariser module with learnable parameters and
`value`/`grad`/`hvp` (e.g. `SmoothedTV`, `FieldOfExperts` with the convex "abs" potential) into a `BilevelProblem`
for `maid` / `hoag`: θ is the flat vector of the module's parameters that require grad (freeze one with
`requires_grad_(False)`), h is 1-strongly convex (μ = 1 for a convex
R), L_g = 1/n, and the Jacobian J = ∇²_xθ h is applied by autograd. ‖J‖ is estimated by power iteration (with a
safety factor); the Lipschitz constants of H⁻¹ and J are not known for these problems, so the error bound of MAID
is a heuristic here, not a certificate (it is exact for quadratic problems).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from imaging.learning.maid import BilevelProblem, solve_lower
from imaging.priors.tv import SmoothedTV  # noqa: F401 (the regulariser of the MAID paper's TV experiment)


class DenoisingBilevel(BilevelProblem):
    """Learn the parameters of `regulariser` so that denoising y (n, C, H, W) approaches x_true (n, C, H, W)."""

    def __init__(self, y: torch.Tensor, x_true: torch.Tensor, regulariser: nn.Module,
                 jacobian_safety: float = 1.5) -> None:
        if y.shape != x_true.shape:
            raise ValueError(f"DenoisingBilevel: y {tuple(y.shape)} and x_true {tuple(x_true.shape)} must match")
        self.y, self.x_true, self.module = y, x_true, regulariser
        learnable = [(name, p) for name, p in regulariser.named_parameters() if p.requires_grad]
        if not learnable:
            raise ValueError("DenoisingBilevel: argument 'regulariser' has no parameter with requires_grad=True")
        self.names = [name for name, _ in learnable]
        self.params = [p for _, p in learnable]
        self.shapes = [p.shape for p in self.params]
        self.parameter_count = sum(p.numel() for p in self.params)  # the length θ must have
        self.mu = 1.0
        self.upper_lipschitz = 1.0 / y.shape[0]
        self.jacobian_safety = jacobian_safety

    def theta(self) -> torch.Tensor:
        """The module's current parameters as one vector."""
        return parameters_to_vector(self.params).detach().to(self.y.dtype)

    def load(self, theta: torch.Tensor) -> None:
        """Write θ into the module's parameters."""
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta.to(self.params[0].dtype), self.params)

    def _params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            out[name] = theta[start:start + size].reshape(shape)
            start += size
        return out

    def _call(self, method: str, theta: torch.Tensor, *args):
        return getattr(_Bound(self.module, self._params(theta)), method)(*args)

    def lower_value(self, x, theta):
        return 0.5 * ((x - self.y) ** 2).flatten(1).sum(1) + self._call("value", theta, x)

    def lower_grad(self, x, theta):
        return x - self.y + self._call("grad", theta, x)

    def lower_hvp(self, x, theta, v):
        return v + self._call("hvp", theta, x, v)

    def upper(self, x):
        return 0.5 * ((x - self.x_true) ** 2).sum() / x.shape[0]

    def upper_grad(self, x):
        return (x - self.x_true) / x.shape[0]

    def initial_x(self, theta):
        return self.y.clone()

    def jacobian_norm(self, x, theta, iterations: int = 10) -> float:
        """‖J‖ for J = ∂_θ ∇_x h, by power iteration on JᵀJ (autograd), times the safety factor."""
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        u = u / torch.linalg.vector_norm(u)
        sigma = 0.0
        for _ in range(iterations):  # u ← J Jᵀ u / ‖·‖; σ = ‖J Jᵀ u‖ / ‖Jᵀ u‖ at convergence
            with torch.enable_grad():
                theta_ = theta.detach().requires_grad_()
                w = torch.autograd.grad((self.lower_grad(x, theta_) * u).sum(), theta_)[0]  # Jᵀ u
            Jw = _jvp(self, x, theta, w)
            sigma = float(torch.linalg.vector_norm(Jw)) / max(float(torch.linalg.vector_norm(w)), 1e-300)
            u = Jw / max(float(torch.linalg.vector_norm(Jw)), 1e-300)
        return self.jacobian_safety * sigma


def _jvp(problem: DenoisingBilevel, x: torch.Tensor, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """J w = d/dt ∇_x h(x, θ + t w) at t = 0, by a central difference (the compiled ops' parameter derivatives are
    not differentiable again; this only feeds the estimate of ‖J‖)."""
    with torch.no_grad():
        t = 1e-5 * max(1.0, float(torch.linalg.vector_norm(theta))) / max(float(torch.linalg.vector_norm(w)), 1e-300)
        return (problem.lower_grad(x, theta + t * w) - problem.lower_grad(x, theta - t * w)) / (2 * t)


class _Bound:
    """Calls a module's methods with substituted parameters (torch.func.functional_call for any method)."""

    def __init__(self, module: nn.Module, params: dict[str, torch.Tensor]) -> None:
        self.module, self.params = module, params

    def __getattr__(self, method: str):
        def call(*args):
            return functional_call(_MethodCaller(self.module, method), {f"module.{k}": v for k, v in
                                                                      self.params.items()}, args)
        return call


class _MethodCaller(nn.Module):
    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


def upper_loss_at(problem: DenoisingBilevel, theta: torch.Tensor, eps: float = 1e-6) -> tuple[float, int]:
    """(upper loss g(x̂(θ)) with the lower level solved to ε, lower-level iterations used)."""
    solved = solve_lower(problem, theta, problem.initial_x(theta), eps)
    return float(problem.upper(solved.x)), solved.evaluations


def grid_search(problem: DenoisingBilevel, axes: list[torch.Tensor], eps: float = 1e-6
                ) -> tuple[torch.Tensor, int]:
    """The upper loss over the grid of θ given by one 1-D tensor of values per parameter (meshgrid 'ij');
    returns (losses of shape (len(axes[0]), len(axes[1]), ...), total lower-level iterations)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    losses = torch.empty(mesh[0].shape, dtype=torch.float64)
    cost = 0
    for index in torch.cartesian_prod(*[torch.arange(len(a)) for a in axes]).reshape(-1, len(axes)):
        position = tuple(int(i) for i in index)
        theta = torch.stack([m[position] for m in mesh]).to(problem.y.dtype)
        losses[position], used = upper_loss_at(problem, theta, eps)
        cost += used
    return losses, cost
