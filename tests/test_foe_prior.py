"""The FieldOfExperts module: parameters stay positive, derivatives in every parameter, pretrained loading."""
import pytest
import torch

from imaging.priors import FieldOfExperts


def test_module_gradients_and_learning_derivatives():
    model = FieldOfExperts.random(4, 3, weights=0.1, nu=0.1)
    x = torch.rand(2, 1, 10, 9, dtype=torch.float64)
    model.value(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    v = torch.randn_like(x)
    eps = 1e-6
    slope = ((model.value(x + eps * v) - model.value(x - eps * v)).sum() / (2 * eps)).item()
    assert abs(slope - (model.grad(x) * v).sum().item()) < 1e-6 * max(1.0, abs(slope))
    assert model.lipschitz_bound() > 0 and model.convex


def test_bad_parameters_are_reported():
    with pytest.raises(ValueError, match="'weights' must be positive"):
        FieldOfExperts(torch.randn(2, 3, 3), weights=-1.0)
    with pytest.raises(ValueError, match="'potential'"):
        FieldOfExperts(torch.randn(2, 3, 3), potential="huber")
    with pytest.raises(ValueError, match="unknown name"):
        FieldOfExperts.pretrained("deblur")


def test_shipped_denoiser_loads_offline_and_denoises_held_out_crops():
    from imaging.data import load_image
    from imaging.learning import RegularisedLeastSquares, accelerated_gradient
    from imaging.metrics import psnr

    model = FieldOfExperts.pretrained("denoise-sigma25")
    assert model.filters.shape[0] >= 24 and model.settings["sigma"] == pytest.approx(25 / 255)
    clean = load_image("coffee", size=96, channels=1)[..., 16:80, 16:80]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3),
                                           dtype=clean.dtype)
    denoised = accelerated_gradient(RegularisedLeastSquares(noisy, model), 1e-4, lipschitz=10.0).x
    assert float(psnr(denoised.clamp(0, 1), clean)) > float(psnr(noisy.clamp(0, 1), clean)) + 5


def test_from_tv_starts_as_the_smoothed_anisotropic_tv():
    from imaging.data import load_image
    from imaging.priors import SmoothedTV

    x = load_image("camera", size=48)
    model = FieldOfExperts.from_tv(0.05, 0.01, count=2, size=3)
    tv = SmoothedTV(0.05, 0.01).double()
    with torch.no_grad():  # equal up to the boundary (reflect padding against the Neumann differences)
        assert abs(float(model.value(x)) / float(tv.value(x)) - 1) < 0.05
    model = FieldOfExperts.from_tv(0.05, 0.01, count=24, size=5)
    assert model.filters.shape == (24, 5, 5)
    # the weights are folded into the filters and frozen: learning sees filters and shapes only
    from imaging.learning.denoising import DenoisingBilevel

    assert not model.log_weights.requires_grad
    problem = DenoisingBilevel(x, x, model)
    assert problem.theta().numel() == 24 * 25 + 24
