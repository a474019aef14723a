"""Lower-level solver of bilevel learning: certified stopping, non-zero momentum, warm starts."""
import torch

from imaging.learning import RegularisedLeastSquares, accelerated_gradient
from imaging.priors import FieldOfExperts, TotalVariation


def denoising_problem(regulariser, size=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.zeros(2, 1, size, size, dtype=torch.float64)
    clean[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    y = clean + 0.1 * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    return RegularisedLeastSquares(y, regulariser)


def test_certified_bound_holds_for_foe_and_tv():
    for regulariser in (FieldOfExperts.random(8, 5, weights=0.05, nu=0.05), TotalVariation(eps=0.05)):
        if isinstance(regulariser, TotalVariation):  # λ·TV_ε as a module with value/grad/hvp
            regulariser = _Scaled(regulariser, 0.1)
        problem = denoising_problem(regulariser)
        result = accelerated_gradient(problem, 1e-5, lipschitz=10.0)
        assert result.converged and bool((result.error_bound <= 1e-5).all())
        tight = accelerated_gradient(problem, 1e-11, result.x, lipschitz=result.lipschitz)
        error = torch.linalg.vector_norm((result.x - tight.x).flatten(1), dim=1)
        assert bool((error <= result.error_bound * (1 + 1e-6) + 1e-11).all())


class _Scaled:
    def __init__(self, module, scale):
        self.module, self.scale = module, scale

    def value(self, x):
        return self.scale * self.module.value(x)

    def grad(self, x):
        return self.scale * self.module.grad(x)

    def hvp(self, x, v):
        return self.scale * self.module.hvp(x, v)


def test_momentum_beats_plain_gradient_descent_and_warm_start_helps():
    problem = denoising_problem(FieldOfExperts.random(8, 5, weights=0.05, nu=0.02))
    fast = accelerated_gradient(problem, 1e-6, lipschitz=10.0)

    # plain gradient descent with step 1/L (the official MAID code's momentum is silently zero)
    slow_problem = RegularisedLeastSquares(problem.y, problem.regulariser)
    x = problem.y.clone()
    L = fast.lipschitz.max().item() * 1.2
    steps = 0
    with torch.no_grad():
        while steps < 5000:
            g = slow_problem.grad(x)
            if float(torch.linalg.vector_norm(g.flatten(1), dim=1).max()) <= 1e-6:
                break
            x = x - g / L
            steps += 1
    assert fast.iterations < steps / 2
    warm = accelerated_gradient(problem, 1e-6, fast.x + 1e-4 * torch.randn_like(fast.x), lipschitz=fast.lipschitz)
    assert warm.iterations < fast.iterations
