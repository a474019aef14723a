"""MAID on the quadratic bilevel problem with a closed-form solution (spec D.5.1): the a-posteriori bound never
underestimates the hypergradient error, and MAID reaches the optimum."""
import pytest
import torch

from imaging.learning import BilevelProblem, hoag, hypergradient, maid


class QuadraticBilevel(BilevelProblem):
    """h(x, θ) = ½‖A2 x + A3 θ − b2‖², g(x) = ½‖A1 x − b1‖² (x (1, d), θ (t,)), with exact constants."""

    def __init__(self, seed=0, m=200, d=10, t=10, scale=1.0, gaussian=False):
        gen = torch.Generator().manual_seed(seed)
        if gaussian:  # well conditioned
            draw = lambda *s: scale * torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
        else:  # U(0, 1) as in the MAID paper's quadratic experiment: ill conditioned
            draw = lambda *s: scale * torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
        self.A1, self.A2, self.A3 = draw(m, d), draw(m, d), draw(m, t)
        x1, x2, theta_e = (torch.randn(n, generator=gen, dtype=torch.float64) for n in (d, d, t))
        self.b1 = self.A1 @ x1 + 0.01 * torch.randn(m, generator=gen, dtype=torch.float64)
        self.b2 = self.A2 @ x2 + self.A3 @ theta_e + 0.01 * torch.randn(m, generator=gen, dtype=torch.float64)
        H = self.A2.T @ self.A2
        self.mu = float(torch.linalg.eigvalsh(H)[0])
        self.upper_lipschitz = float(torch.linalg.eigvalsh(self.A1.T @ self.A1)[-1])
        self.J = float(torch.linalg.matrix_norm(self.A2.T @ self.A3, ord=2))
        M = torch.linalg.solve(H, self.A2.T)                                # x̂(θ) = M (b2 − A3 θ)
        self.design, self.target = self.A1 @ M @ self.A3, self.A1 @ M @ self.b2 - self.b1
        self.theta_star = torch.linalg.lstsq(self.design, self.target[:, None]).solution[:, 0]
        self.f_star = self.f(self.theta_star)
        self.lipschitz_f = float(torch.linalg.matrix_norm(self.design, ord=2)) ** 2

    def f(self, theta):
        return float(0.5 * torch.sum((self.target - self.design @ theta) ** 2))

    def true_gradient(self, theta):
        return -self.design.T @ (self.target - self.design @ theta)

    def lower_value(self, x, theta):
        return 0.5 * ((x @ self.A2.T + self.A3 @ theta - self.b2) ** 2).sum(1)

    def lower_grad(self, x, theta):
        return (x @ self.A2.T + self.A3 @ theta - self.b2) @ self.A2

    def lower_hvp(self, x, theta, v):
        return (v @ self.A2.T) @ self.A2

    def upper(self, x):
        return 0.5 * ((x @ self.A1.T - self.b1) ** 2).sum()

    def upper_grad(self, x):
        return (x @ self.A1.T - self.b1) @ self.A1

    def jacobian_norm(self, x, theta):
        return self.J

    def initial_x(self, theta):
        return torch.zeros(1, self.A2.shape[1], dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_bound_never_underestimates_the_hypergradient_error(seed, scale):
    problem = QuadraticBilevel(seed, scale=scale)
    theta = torch.ones(10, dtype=torch.float64)
    truth = problem.true_gradient(theta)
    x0 = problem.initial_x(theta)
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        for delta in (1e-1, 1e-2, 1e-3):
            hyper = hypergradient(problem, theta, x0, eps, delta)
            error = float(torch.linalg.vector_norm(hyper.z - truth))
            assert error <= hyper.bound, (eps, delta, error, hyper.bound)


def test_maid_reaches_the_optimum_and_uses_less_work_than_tight_accuracy():
    problem = QuadraticBilevel(0, t=5, gaussian=True)  # f has condition number 9
    theta0 = torch.ones(5, dtype=torch.float64)
    result = maid(problem, theta0, eps0=1.0, delta0=1.0, step0=1 / problem.lipschitz_f, max_iter=100, tol=1e-4)
    gap = (problem.f(result.theta) - problem.f_star) / max(abs(problem.f_star), 1.0)
    assert gap < 1e-3
    uppers = result.history["upper"]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(uppers, uppers[1:]))  # accepted steps decrease the loss
    tight = maid(problem, theta0, eps0=1e-8, delta0=1e-8, relax=1.0, step0=1 / problem.lipschitz_f, max_iter=100,
                 tol=1e-4)
    reached = [c for u, c in zip(tight.history["upper"], tight.history["cost"])
               if (u - problem.f_star) / max(abs(problem.f_star), 1.0) < 1e-3]
    mine = [c for u, c in zip(uppers, result.history["cost"])
            if (u - problem.f_star) / max(abs(problem.f_star), 1.0) < 1e-3]
    assert mine and reached and mine[0] < reached[0]


def test_hoag_baseline_runs_with_each_schedule():
    problem = QuadraticBilevel(1)
    for schedule in ("geometric", "quadratic", "cubic"):
        result = hoag(problem, torch.ones(10, dtype=torch.float64), eps0=1.0, schedule=schedule,
                      step0=1 / problem.lipschitz_f, max_iter=30)
        assert result.history["upper"][-1] < result.history["upper"][0]
    with pytest.raises(ValueError, match="schedule"):
        hoag(problem, torch.ones(10, dtype=torch.float64), schedule="linear")
