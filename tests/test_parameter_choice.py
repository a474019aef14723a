"""Parameters without ground truth: noise estimation, lam="auto" (discrepancy principle, SURE), ConvergenceWarning."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from skimage import data as skdata

import imaging
from imaging.metrics import psnr
from imaging.operators import (MRI, Blur, CompressedSensing, Downsampling, Identity, Inpainting, Radon,
                               cartesian_mask, gaussian_kernel)
from imaging.solvers import CG, FISTA, PDHG, SURE, ConvergenceWarning, Discrepancy, PnPADMM, RedDiff, relax


def picture(name: str = "camera", size: int = 96) -> torch.Tensor:
    """A grey crop in [0, 1] of an offline scikit-image picture, (1, 1, size, size), float64."""
    image = torch.as_tensor(getattr(skdata, name)(), dtype=torch.float64)
    if image.dim() == 3:
        image = image[..., :3] @ torch.tensor([0.2125, 0.7154, 0.0721], dtype=torch.float64)
    image = image / 255.0
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size][None, None].contiguous()


def noisy(A, x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    clean = A(x)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.real.dtype)
    if clean.is_complex():
        noise = torch.complex(noise, torch.randn(clean.shape, generator=generator, dtype=noise.dtype)) / math.sqrt(2)
    return clean + sigma * noise


# ---------------------------------------------------------------------------------------------- noise estimation

@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.03, 0.1])
@pytest.mark.parametrize("name", ["coffee", "rocket", "astronaut"])  # own noise < 0.5 grey levels
def test_estimate_noise_on_natural_pictures(name, sigma):
    x = picture(name, 128)
    estimate = imaging.estimate_noise(noisy(Identity(), x, sigma))
    assert abs(estimate / sigma - 1) < 0.1, estimate


@pytest.mark.parametrize("A", [Blur(gaussian_kernel(2.0)), Radon((96, 96), 60)], ids=["blur", "radon"])
def test_estimate_noise_on_image_shaped_measurements(A):
    y = noisy(A, picture(), 0.02)
    assert abs(imaging.estimate_noise(y, A) / 0.02 - 1) < 0.1


@pytest.mark.parametrize("A", [Inpainting.random((1, 1, 96, 96), 0.5, seed=3), MRI(cartesian_mask((96, 96), 4, seed=3))],
                         ids=["inpainting", "mri"])
def test_estimate_noise_from_unobserved_entries(A):
    for sigma in (0.005, 0.05):
        assert abs(imaging.estimate_noise(noisy(A, picture(), sigma), A) / sigma - 1) < 0.1


def test_estimate_noise_warns_when_too_few_flat_patches_make_it_unreliable():
    """A detailed 16×16 picture at low noise has no flat patches: the estimate (from all patches, texture included)
    is many times too high, and a warning says so; a 96² picture does not warn."""
    import torch.nn.functional as F

    small = F.interpolate(picture("astronaut", 256), size=(16, 16), mode="area")
    y = small + 0.005 * torch.randn(small.shape, dtype=small.dtype, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="too few flat patches"):
        assert imaging.estimate_noise(y) > 3 * 0.005
    x = picture("camera", 96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert imaging.estimate_noise(noisy(Identity(), x, 0.01)) == pytest.approx(0.01, rel=0.1)


def test_estimate_noise_says_when_it_cannot():
    A = CompressedSensing(1000, (1, 32, 32))
    y = noisy(A, picture(size=32), 0.01)
    with pytest.raises(ValueError, match="noise_level"):
        imaging.estimate_noise(y, A)
    with pytest.raises(ValueError, match="finite"):
        imaging.estimate_noise(torch.full((1, 1, 32, 32), math.nan))
    with pytest.raises(TypeError, match="'A'"):
        imaging.estimate_noise(y, A="blur")


# ------------------------------------------------------------------------------------------ convergence warnings

def test_max_iter_emits_exactly_one_convergence_warning():
    A, x = Blur(gaussian_kernel(2.0)), picture(size=48)
    y = noisy(A, x, 0.01)
    with pytest.warns(ConvergenceWarning, match="max_iter=3") as caught:
        result = imaging.least_squares(A, y, lam=1e-2, max_iter=3)
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 1
    assert not result.converged and result.iterations == 3
    with pytest.warns(ConvergenceWarning) as caught:
        result = imaging.tv_reconstruct(A, y, 0.01, box=(0, 1), max_iter=5)
    assert len(caught) == 1 and "residual" in str(caught[0].message)
    assert not result.converged


def test_converged_runs_and_inner_solves_do_not_warn():
    A, x = Blur(gaussian_kernel(1.0)), picture(size=32)
    y = noisy(A, x, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert imaging.least_squares(A, y, lam=0.1, max_iter=500).converged
        # PnP-ADMM's x-updates are inexact on purpose (cg_iter=2): no warning from them, only from the outer loop
        result = PnPADMM(A, y, lambda v: imaging.tv_denoise(v, 0.01), rho=0.05, cg_iter=2, max_iter=200,
                         tol=1e-3).run()
        assert result.converged
        assert CG(lambda v: 2 * v, torch.ones(2, 3)).run(warn=False).converged


def test_callback_stop_is_not_a_convergence_failure():
    A, y = Identity(), noisy(Identity(), picture(size=32), 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = PDHG(A, y, 0.05, max_iter=50, callback=lambda k, state, metrics: k >= 2).run()
    assert result.iterations == 2 and not result.converged


def test_red_diff_defines_its_stopping_rule():
    from imaging.priors.generative import DiffusionPrior

    prior = DiffusionPrior.pretrained("natural")
    A = Downsampling(2)
    x = picture(size=32).float()
    y = noisy(A, x, 0.01)
    with pytest.warns(ConvergenceWarning, match="data RMS"):  # 2 steps cannot explain the data
        result = RedDiff(A, y, prior, steps=2, lam=100.0, noise_level=0.01).run(x0=torch.full_like(x, 0.5))
    assert not result.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert RedDiff(A, y, prior, steps=2).run().converged  # no noise level: the schedule is the rule


# ------------------------------------------------------------------------------------------------ lam = "auto"

def best_of_grid(solve, x: torch.Tensor, grid) -> float:
    return max(psnr(solve(lam).x.clamp(0, 1), x).item() for lam in grid)


def test_discrepancy_principle_reaches_its_target_in_a_handful_of_solves():
    A, x, sigma = Blur(gaussian_kernel(1.5)), picture(size=64), 0.02
    y = noisy(A, x, sigma)
    result = imaging.tv_reconstruct(A, y, "auto", noise_level=sigma, box=(0, 1), max_iter=400)
    search = result.parameter_search
    misfit = float(((A(result.x) - y) ** 2).sum())
    assert search.criterion == "discrepancy" and search.solves <= 8
    tau = imaging.solvers.pdhg.DISCREPANCY_TAU  # TV's "auto" with σ given (chosen on train400 crops)
    assert abs(misfit / (tau * y.numel() * sigma ** 2) - 1) <= 0.02 + 1e-9
    assert result.lam == pytest.approx(search.lams[search.values.index(min(search.values,
                                       key=lambda v: abs(v - search.target)))])
    best = best_of_grid(lambda lam: imaging.tv_reconstruct(A, y, lam, box=(0, 1), max_iter=400), x,
                        [sigma * f for f in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)])
    assert psnr(result.x, x).item() > best - 1.0


def test_a_batch_gets_one_lambda_per_sample_as_if_each_were_solved_alone():
    """Independent measurements in one batch do not share λ: each sample's search and answer are those of the
    sample alone (a smooth and a detailed picture want different λ)."""
    A, sigma = Blur(gaussian_kernel(1.5)), 0.02
    x = torch.cat([picture("camera", 48), picture("moon", 48)])
    y = torch.cat([noisy(A, x[i:i + 1], sigma, seed=i) for i in range(2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = imaging.least_squares(A, y, lam="auto", noise_level=sigma, max_iter=300,
                                      regulariser=imaging.operators.FiniteDifference())
    alone = [imaging.least_squares(A, y[i:i + 1], lam="auto", noise_level=sigma, max_iter=300,
                                   regulariser=imaging.operators.FiniteDifference()) for i in range(2)]
    assert batch.lam.shape == (2,) and len(batch.parameter_search) == 2
    for i, single in enumerate(alone):
        assert batch.lam[i].item() == pytest.approx(single.lam, rel=1e-12)
        assert torch.allclose(batch.x[i:i + 1], single.x, atol=1e-12)
        misfit = float(((A(batch.x[i:i + 1]) - y[i:i + 1]) ** 2).sum())
        assert misfit == pytest.approx(y[0].numel() * sigma ** 2, rel=0.03)
    assert batch.lam[0].item() / batch.lam[1].item() > 1.5 or batch.lam[1].item() / batch.lam[0].item() > 1.5
    assert batch.iterations == max(r.iterations for r in alone) and batch.converged == all(r.converged for r in alone)
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) <= 1
    tv = imaging.tv_reconstruct(A, y, "auto", noise_level=sigma, box=(0, 1), max_iter=200)
    tv_alone = imaging.tv_reconstruct(A, y[1:], "auto", noise_level=sigma, box=(0, 1), max_iter=200)
    assert tv.lam[1].item() == pytest.approx(tv_alone.lam) and torch.allclose(tv.x[1:], tv_alone.x, atol=1e-10)


def test_an_unreachable_discrepancy_keeps_a_lambda_on_the_misfit_floor_not_the_smallest():
    """σ given 40 % too low: no λ reaches ‖A x − y‖² = m σ²; the search warns and keeps the largest λ whose misfit
    is within 25 % of the smallest one, not the weakest prior it tried (which fits the noise)."""
    A, x = Blur(gaussian_kernel(1.5)), picture(size=64)
    y = noisy(A, x, 0.02)
    with pytest.warns(UserWarning, match="found no λ"):
        result = imaging.tv_reconstruct(A, y, Discrepancy(), noise_level=0.012, box=(0, 1), max_iter=300)
    search = result.parameter_search
    floor = min(search.values)
    assert result.lam == max(lam for lam, value in zip(search.lams, search.values) if value <= 1.25 * floor)
    assert result.lam > 100 * min(search.lams)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weakest = imaging.tv_reconstruct(A, y, min(search.lams), box=(0, 1), max_iter=300)
    assert psnr(result.x, x).item() > psnr(weakest.x, x).item() + 3


def test_auto_with_estimated_noise_level_and_tikhonov():
    A, x, sigma = Identity(), picture("coffee", 96), 0.05
    y = noisy(A, x, sigma)
    result = imaging.least_squares(A, y, lam="auto", regulariser=imaging.operators.FiniteDifference(), max_iter=300)
    assert result.parameter_search.noise_level == pytest.approx(sigma, rel=0.1)
    assert psnr(result.x.clamp(0, 1), x).item() > psnr(y.clamp(0, 1), x).item() + 3


def test_sure_for_denoising_is_close_to_the_oracle():
    A, x, sigma = Identity(), picture("camera", 64), 0.05
    y = noisy(A, x, sigma)
    result = FISTA(A, y, SURE(), noise_level=sigma, box=(0, 1), max_iter=100, tol=1e-6).run()
    assert result.parameter_search.criterion == "sure"
    best = best_of_grid(lambda lam: FISTA(A, y, lam, box=(0, 1), max_iter=100, tol=1e-6).run(warn=False), x,
                        [sigma * f for f in (0.25, 0.5, 0.7, 1.0, 1.4, 2.0)])
    assert psnr(result.x, x).item() > best - 0.3


@pytest.mark.filterwarnings("ignore::imaging.ConvergenceWarning")  # a fixed budget for the small λ
@pytest.mark.parametrize("A", [Inpainting.random((1, 1, 40, 40), 0.5, seed=3), Downsampling(2, "box"),
                               MRI(cartesian_mask((40, 40), 4, seed=7))], ids=["inpainting", "sr2", "mri"])
def test_gsure_tracks_the_projected_error(A):
    """GSURE + ‖P x‖² follows the true projected error ‖P(x̂_λ − x)‖² over the λ it tries (up to the Monte-Carlo
    error of its one probe, the same for every λ), and its choice is close to the best of those λ."""
    x, sigma = picture("camera", 40), 0.03
    y = noisy(A, x, sigma)
    options = dict(box=(0, 1), max_iter=1000, tol=1e-5)
    result = imaging.tv_reconstruct(A, y, imaging.GSURE(max_solves=14), noise_level=sigma, **options)
    search = result.parameter_search
    assert search.criterion == "gsure" and search.solves <= 14 + 1

    def normal(v):
        w = A.adjoint(A(v))
        return w.real if w.is_complex() else w

    def project(v):
        return CG(normal, normal(v), max_iter=500, tol=1e-10).run(warn=False).x

    offset = float(project(x).pow(2).sum())
    lams = sorted(set(search.lams))[::2]
    errors = [float(project(imaging.tv_reconstruct(A, y, lam, **options).x - x).pow(2).sum()) for lam in lams]
    estimates = [search.values[search.lams.index(lam)] + offset for lam in lams]
    gaps = [e - t for e, t in zip(estimates, errors)]
    assert max(gaps) - min(gaps) < 0.25 * (max(errors) - min(errors)) + 0.1 * min(errors)
    best = min(errors)
    chosen = float(project(result.x - x).pow(2).sum())
    assert chosen <= 1.15 * best


def test_pnp_strength_auto():
    A, x, sigma = Inpainting.random((1, 1, 48, 48), 0.6, seed=1), picture(size=48), 0.02
    y = noisy(A, x, sigma)
    result = PnPADMM(A, y, relax(lambda v: imaging.tv_denoise(v, 0.03), 1.0), "auto", noise_level=sigma,
                     box=(0, 1), max_iter=60).run()
    assert result.lam > 0 and result.parameter_search.solves <= 10
    assert psnr(result.x, x).item() > psnr(A.pinv(y, warn=False).clamp(0, 1), x).item() + 3


def test_bad_parameters_are_named():
    A, y = Identity(), torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="'lam'"):
        imaging.least_squares(A, y, lam="best")
    with pytest.raises(ValueError, match="'lam'"):
        imaging.least_squares(A, y, lam=math.nan)
    with pytest.raises(ValueError, match="'noise_level'"):
        imaging.tv_reconstruct(A, y, "auto", noise_level=-1.0)
    with pytest.raises(ValueError, match="'rho'"):
        PnPADMM(A, y, lambda v: v, rho="large")
    with pytest.raises(ValueError, match="'tau'"):
        Discrepancy(tau=0)


def test_red_diff_lam_auto_searches_full_runs_from_one_start():
    from imaging.priors.generative import DiffusionPrior

    prior = DiffusionPrior.pretrained("natural")
    A, x = Downsampling(2), picture(size=32).float()
    y = noisy(A, x, 0.02)
    result = RedDiff(A, y, prior, steps=10, lr=0.5, lam="auto", noise_level=0.02).run(warn=False)
    search = result.parameter_search
    assert search.criterion == "discrepancy" and 1 <= search.solves <= 15 and result.lam > 0
    # the kept λ is the one whose misfit came closest to the target among those tried
    closest = min(zip(search.lams, search.values), key=lambda p: abs(math.log(p[1] / search.target)))
    assert result.lam == pytest.approx(closest[0])
