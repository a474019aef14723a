"""AcceleratedGradient: reconstruction with a smooth prior (field of experts, smoothed TV) for any linear operator."""
from __future__ import annotations

import warnings

import pytest
import torch

from imaging.learning.lower_level import RegularisedLeastSquares, accelerated_gradient
from imaging.operators import Blur, Downsampling, Identity, Inpainting, gaussian_kernel
from imaging.priors import FieldOfExperts, TotalVariation
from imaging.solvers import AcceleratedGradient, ConvergenceWarning, least_squares
from tests.test_parameter_choice import noisy, picture


class HalfSquaredNorm:
    """R(x) = ½‖x‖² per sample: with it the problem is Tikhonov, solved exactly by CG."""

    def value(self, x):
        return 0.5 * x.pow(2).flatten(1).sum(1)

    def grad(self, x):
        return x


def test_tikhonov_matches_the_normal_equations():
    A, x = Blur(gaussian_kernel(1.5)), picture("camera", 48)
    y = noisy(A, x, 0.02)
    result = AcceleratedGradient(A, y, HalfSquaredNorm(), 0.05, tol=1e-9, max_iter=3000).run()
    exact = least_squares(A, y, lam=0.05, tol=1e-12, max_iter=500).x
    assert result.converged
    assert torch.allclose(result.x, exact, atol=1e-5)


def test_box_is_the_projection_for_lam_zero_denoising():
    y = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    result = AcceleratedGradient(Identity(), y, HalfSquaredNorm(), 0.0, box=(-0.5, 0.5)).run()
    assert torch.allclose(result.x, y.clamp(-0.5, 0.5))


def test_field_of_experts_denoising_matches_the_certified_lower_level_solver():
    foe = FieldOfExperts.pretrained("denoise-sigma25")
    x = picture("coffee", 48)
    y = noisy(Identity(), x, 25 / 255)
    result = AcceleratedGradient(Identity(), y, foe, 1.0, tol=1e-8, max_iter=3000).run()
    certified = accelerated_gradient(RegularisedLeastSquares(y, foe), 1e-6).x
    assert result.converged
    assert float((result.x - certified).abs().max()) < 1e-4


@pytest.mark.parametrize("A", [Inpainting((torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(3))
                                           > 0.5).double()), Downsampling(2)], ids=["inpainting", "downsampling"])
def test_field_of_experts_lam_auto_meets_the_discrepancy(A):
    """Operators with a null space (μ = 0): the backtracking and restarts still converge, and lam="auto" finds
    the λ whose misfit is τ times the noise level's (τ = 0.9 with σ given)."""
    from imaging.solvers.parameter_choice import VARIATIONAL_TAU

    foe, x, sigma = FieldOfExperts.pretrained("denoise-sigma25"), picture("camera", 48), 0.02
    y = noisy(A, x, sigma)
    result = AcceleratedGradient(A, y, foe, "auto", noise_level=sigma, box=(0, 1), tol=1e-6, max_iter=2000).run()
    misfit = float(((A(result.x) - y) ** 2).sum())
    assert result.converged and result.lam > 0 and result.parameter_search.criterion == "discrepancy"
    assert abs(misfit / (VARIATIONAL_TAU * y.numel() * sigma ** 2) - 1) <= 0.02 + 1e-9
    assert bool((result.x >= 0).all() and (result.x <= 1).all())


def test_smoothed_tv_prior_and_batches():
    A, x = Blur(gaussian_kernel(1.0)), torch.cat([picture("camera", 32), picture("coffee", 32)])
    y = noisy(A, x, 0.01)
    batch = AcceleratedGradient(A, y, TotalVariation(eps=1e-2), 0.01, tol=1e-7, max_iter=3000).run()
    single = AcceleratedGradient(A, y[1:], TotalVariation(eps=1e-2), 0.01, tol=1e-7, max_iter=3000).run()
    assert batch.x.shape == x.shape
    assert float((batch.x[1:] - single.x).abs().max()) < 1e-4


def test_max_iter_warns_once_and_bad_arguments_are_named():
    A, y = Blur(gaussian_kernel(1.5)), noisy(Blur(gaussian_kernel(1.5)), picture("camera", 32), 0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = AcceleratedGradient(A, y, HalfSquaredNorm(), 1e-3, max_iter=3, tol=1e-12).run()
    assert not result.converged and result.iterations == 3
    assert sum(issubclass(w.category, ConvergenceWarning) for w in caught) == 1
    with pytest.raises(TypeError, match="'prior'"):
        AcceleratedGradient(A, y, object(), 1.0)
    with pytest.raises(ValueError, match="'box'"):
        AcceleratedGradient(A, y, HalfSquaredNorm(), 1.0, box=(1, 0))
    with pytest.raises(ValueError, match="'lam'"):
        AcceleratedGradient(A, y, HalfSquaredNorm(), -1.0)
