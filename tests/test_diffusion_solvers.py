"""DPS, DiffPIR and DDRM checked in closed form with a Gaussian prior, whose exact ε_θ is known: for data
x_0 ~ N(m, c² I) (model range), ε(x_t, t) = √(1 − ᾱ_t)(x_t − √ᾱ_t m)/(ᾱ_t c² + 1 − ᾱ_t). With inpainting and
Gaussian noise the posterior is Gaussian per pixel: observed pixels N((c²y + σ²m)/(c² + σ²), c²σ²/(c² + σ²)),
missing ones the prior N(m, c²)."""
import pytest
import torch
from torch import nn

from imaging.operators import (Blur, Downsampling, Identity, Inpainting, StructuredCompressedSensing,
                               gaussian_kernel, motion_kernel)
from imaging.priors import DiffusionPrior
from imaging.solvers import DDRM, DPS, DiffPIR

M, C = 0.2, 0.3  # the prior's mean and standard deviation in the model range [-1, 1]
M_IMG, C_IMG = (M + 1) / 2, C / 2
SIGMA = 0.05


class GaussianEps(nn.Module):
    def __init__(self, alphas: torch.Tensor, no_grad: bool | None = None) -> None:
        super().__init__()
        self.alphas, self.no_grad = alphas, no_grad

    def forward(self, x_t, t):
        if self.no_grad is not None:
            assert torch.is_grad_enabled() != self.no_grad, "the network ran with the wrong autograd mode"
        abar = self.alphas.to(x_t.dtype)[t].reshape(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * M) / (abar * C ** 2 + 1 - abar)


ALPHAS = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def gaussian_prior(no_grad: bool | None = None) -> DiffusionPrior:
    return DiffusionPrior(GaussianEps(ALPHAS, no_grad), ALPHAS)


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    shape = (16, 1, 32, 32)
    x = M_IMG + C_IMG * torch.randn(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape[1:], generator=g) < 0.5).double()
    A = Inpainting(mask)
    y = A(x) + SIGMA * torch.randn(shape, generator=g, dtype=torch.float64) * mask
    seen = (mask > 0).expand(shape)
    mean = torch.where(seen, (C_IMG ** 2 * y + SIGMA ** 2 * M_IMG) / (C_IMG ** 2 + SIGMA ** 2), torch.full_like(y, M_IMG))
    std = torch.where(seen, torch.full_like(y, (C_IMG ** 2 * SIGMA ** 2 / (C_IMG ** 2 + SIGMA ** 2)) ** 0.5),
                      torch.full_like(y, C_IMG))
    return A, y, seen, mean, std


def z_scores(x, problem):
    A, y, seen, mean, std = problem
    z = (x - mean) / std
    return z[seen], z[~seen]


@pytest.mark.parametrize("make", [
    lambda A, y, p: DDRM(A, y, p, noise_level=SIGMA, steps=100),
    lambda A, y, p: DiffPIR(A, y, p, noise_level=SIGMA, steps=100),
    lambda A, y, p: DPS(A, y, p, steps=1000, scale=0.5)], ids=["DDRM", "DiffPIR", "DPS"])
def test_samples_are_centred_on_the_exact_posterior_mean(make, problem):
    """Over 8 192 pixels of each kind, the samples' deviation from the exact posterior mean, in posterior standard
    deviations, averages 0 (a biased method would be off by a sizeable fraction of one)."""
    A, y = problem[:2]
    result = make(A, y, gaussian_prior()).run()
    assert result.converged
    for z in z_scores(result.x, problem):
        assert abs(float(z.mean())) < 0.05


def test_dps_without_guidance_is_ancestral_sampling_of_the_prior(problem):
    """ζ = 0: DPS is the DDPM ancestral sampler; with the exact ε the samples have the prior's mean and variance."""
    A, y = problem[:2]
    x = DPS(A, y, gaussian_prior(), steps=1000, scale=0.0).run(warn=False).x
    z = (x - M_IMG) / C_IMG
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_one_dps_step_is_the_papers_guided_update():
    """One step from t = 0 (ᾱ_{-1} = 1): x = clip(x̂_0) − ζ ∇_{x_t}‖s(A x̂_0 − y)‖, with x̂_0 affine in x_t for the
    Gaussian prior: x̂_0 = m + k (x_t − √ᾱ m), k = √ᾱ c²/(ᾱc² + 1 − ᾱ), so ∇ = k Aᵀ r/‖r‖ (r in the model range)."""
    from imaging.solvers._variational import SeededNoise

    mask = (torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.5).double()
    A = Inpainting(mask)
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * mask
    got = DPS(A, y, gaussian_prior(), steps=1, scale=0.7, seed=5).run(warn=False).x
    x_t = SeededNoise(5).like(y)
    abar = float(ALPHAS[0])
    k = abar ** 0.5 * C ** 2 / (abar * C ** 2 + 1 - abar)
    x0 = M + k * (x_t - abar ** 0.5 * M)
    r = 2 * (A((x0 + 1) / 2) - y)
    grad = k * mask * r / torch.linalg.vector_norm(r.flatten(1), dim=1).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(got, (x0.clamp(-1, 1) - 0.7 * grad + 1) / 2)


def test_ddrm_and_diffpir_keep_noiseless_data_exactly(problem):
    A, y = problem[:2]
    seen = problem[2]
    clean = A(problem[3])  # any data in A's range
    for solver in (DDRM(A, clean, gaussian_prior(), noise_level=0.0, steps=20),
                   DiffPIR(A, clean, gaussian_prior(), noise_level=0.0, steps=20)):
        x = solver.run(warn=False).x
        torch.testing.assert_close(x[seen], clean[seen], atol=1e-9, rtol=0)


def test_diffpir_data_step_is_the_closed_form_proximal_point(problem):
    """For inpainting, argmin ‖y − m x‖² + ρ‖x − x0‖² = (m y + ρ x0)/(m² + ρ) per pixel."""
    A, y = problem[:2]
    solver = DiffPIR(A, y, gaussian_prior(), noise_level=SIGMA)
    x0 = torch.rand(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for rho in (1e-3, 0.3, 10.0):
        torch.testing.assert_close(solver.data_step(x0, rho), (A.mask * y + rho * x0) / (A.mask ** 2 + rho))


def test_only_dps_differentiates_through_the_network(problem):
    A, y = problem[:2]
    DDRM(A, y, gaussian_prior(no_grad=True), noise_level=SIGMA, steps=5).run(warn=False)
    DiffPIR(A, y, gaussian_prior(no_grad=True), noise_level=SIGMA, steps=5).run(warn=False)
    DPS(A, y, gaussian_prior(no_grad=False), steps=5).run(warn=False)


def test_operators_with_a_closed_form_svd():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for A in (Identity(), Inpainting.random(x.shape[1:], 0.5, seed=1), Blur(gaussian_kernel(1.5), mode="circular"),
              Blur(motion_kernel(7, 30.0), mode="circular"), Downsampling(4, filter="box"),
              StructuredCompressedSensing(80, (1, 16, 16))):
        assert A.svd(x).check(A, x) < 1e-12, type(A).__name__


def test_ddrm_refuses_an_operator_without_an_svd(problem):
    y = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="DDRM: needs an operator with a singular value decomposition.*circular"):
        DDRM(Blur(gaussian_kernel(1.0), mode="reflect"), y, gaussian_prior(), noise_level=0.01)
    with pytest.raises(NotImplementedError, match="filter='box'"):
        Downsampling(2).svd(y)


@pytest.mark.parametrize("solver", [DPS, DiffPIR, DDRM])
def test_bad_arguments_name_themselves(solver, problem):
    A, y = problem[:2]
    with pytest.raises(ValueError, match="'steps'"):
        solver(A, y, gaussian_prior(), noise_level=SIGMA, steps=0)
    with pytest.raises(TypeError, match="'prior'"):
        solver(A, y, object(), noise_level=SIGMA)
    with pytest.raises(ValueError, match="'noise_level'"):
        solver(A, y, gaussian_prior(), noise_level=float("nan"))


@pytest.mark.parametrize("solver", ["DPS", "DiffPIR", "DDRM", "RedDiff", "Flair"])
def test_one_seed_per_sample_makes_a_batch_answer_what_each_sample_alone_would(solver, problem):
    """seed=[s_0, s_1, ...]: sample i draws what a batch of one seeded with s_i draws, and no step couples the
    samples, so a batch (the command line's --batch-size) answers what each input alone answers."""
    from imaging.priors import FlowPrior
    from imaging.solvers import Flair, RedDiff

    A, y = problem[0], problem[1][:3]
    prior = gaussian_prior()
    make = {"DPS": lambda y, seed: DPS(A, y, prior, noise_level=SIGMA, steps=20, seed=seed),
            "DiffPIR": lambda y, seed: DiffPIR(A, y, prior, noise_level=SIGMA, steps=10, seed=seed),
            "DDRM": lambda y, seed: DDRM(A, y, prior, noise_level=SIGMA, steps=10, seed=seed),
            "RedDiff": lambda y, seed: RedDiff(A, y, prior, noise_level=SIGMA, steps=20, seed=seed),
            "Flair": lambda y, seed: Flair(A, y, FlowPrior.from_diffusion(prior), noise_level=SIGMA, steps=10,
                                           seed=seed)}[solver]
    seeds = [3, 3, 11]
    batch = make(y, seeds).run(warn=False).x
    alone = torch.cat([make(y[i:i + 1], seeds[i]).run(warn=False).x for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-6), float((batch - alone).abs().max())
    assert not torch.allclose(batch[0], batch[2])
    with pytest.raises(ValueError, match="seed"):
        make(y, [1, 2]).run(warn=False)
