"""Learning the TV weight and smoothing with MAID matches a grid search of the same upper loss (spec D.5.2,
reduced: two 32×32 crops)."""
import torch

from imaging.learning import hypergradient, maid
from imaging.learning.denoising import DenoisingBilevel, grid_search, upper_loss_at
from imaging.priors import SmoothedTV
from imaging.learning.maid import solve_lower


def training_problem():
    from imaging.data import load_image

    clean = torch.cat([load_image(name, size=48, channels=1)[..., 8:40, 8:40] for name in ("camera", "coins")])
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0), dtype=clean.dtype)
    return DenoisingBilevel(noisy, clean, SmoothedTV(1e-2, 1e-2).double())


def test_hypergradient_matches_finite_differences():
    problem = training_problem()
    theta = problem.theta()
    z = hypergradient(problem, theta, problem.y.clone(), 1e-9, 1e-9).z
    step = 1e-5
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = step
        slope = (upper_loss_at(problem, theta + e, 1e-10)[0] - upper_loss_at(problem, theta - e, 1e-10)[0]) / (2 * step)
        assert abs(z[i] - slope) <= 1e-4 * max(1.0, abs(slope))


def test_maid_matches_grid_search_with_less_work_than_tight_accuracy():
    problem = training_problem()
    theta0 = problem.theta()
    log_lambda = torch.linspace(-5.5, -1.5, 17, dtype=torch.float64)
    log_nu = torch.linspace(-7.0, -2.0, 5, dtype=torch.float64)
    losses, _ = grid_search(problem, [log_lambda, log_nu])
    best = divmod(int(losses.argmin()), len(log_nu))
    grid_loss = float(losses.min())
    result = maid(problem, theta0, eps0=1e-1, delta0=1e-1, step0=1.0, max_iter=40, tol=1e-6)
    loss, _ = upper_loss_at(problem, result.theta)
    cell = float(log_lambda[1] - log_lambda[0])
    assert abs(float(result.theta[0] - log_lambda[best[0]])) <= cell
    assert loss <= 1.01 * grid_loss
    tight = maid(problem, theta0, eps0=1e-6, delta0=1e-6, relax=1.0, step0=1.0, max_iter=40, tol=1e-6)

    def work_to(history):
        return next(c for u, c in zip(history["upper"], history["cost"]) if u <= 1.01 * grid_loss)

    assert work_to(result.history) < work_to(tight.history)
    denoised = solve_lower(problem, result.theta, problem.y.clone(), 1e-6).x
    assert float(((denoised - problem.x_true) ** 2).mean()) < float(((problem.y - problem.x_true) ** 2).mean()) / 2
