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

    clean = load_image("coffee", size=96, channels=1)[..., 16:80, 16:80]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3),
                                           dtype=clean.dtype)
    for name, filters in (("denoise-sigma25", (24, 5, 5)), ("natural-sigma25", (48, 7, 7))):
        model = FieldOfExperts.pretrained(name)
        assert model.filters.shape == filters and model.settings["sigma"] == pytest.approx(25 / 255)
        assert model.convex
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


def test_zero_mean_filters_ignore_brightness_and_learn_only_their_zero_mean_part():
    """zero_mean applies each filter minus its mean: the same prior as the projected filters, blind to a constant
    added to the image, and the derivative in the filters has zero mean (learning never moves the mean)."""
    gen = torch.Generator().manual_seed(0)
    filters = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    x = torch.rand(2, 1, 12, 12, generator=gen, dtype=torch.float64)
    model = FieldOfExperts(filters, 0.1, 0.05, zero_mean=True)
    projected = FieldOfExperts(filters - filters.mean((1, 2), keepdim=True), 0.1, 0.05)
    assert torch.allclose(model.value(x), projected.value(x)) and torch.allclose(model.grad(x), projected.grad(x))
    assert torch.allclose(model.value(x + 0.3), model.value(x))
    model.value(x).sum().backward()
    assert float(model.filters.grad.mean((1, 2)).abs().max()) < 1e-12
    assert "zero_mean=True" in repr(model) and model.lipschitz_bound() == pytest.approx(projected.lipschitz_bound())


def test_load_reads_a_saved_field_of_experts_and_rejects_other_files(tmp_path):
    from imaging.data import save_weights

    filters = torch.randn(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = FieldOfExperts(filters, 0.1, 0.05, zero_mean=True)
    save_weights(dict(model.named_parameters()), str(tmp_path / "foe.safetensors"),
                 {"potential": "abs", "padding": "reflect", "zero_mean": True, "maid_steps": 10})
    loaded = FieldOfExperts.load(tmp_path / "foe.safetensors")
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    assert loaded.zero_mean and loaded.settings["maid_steps"] == 10
    assert torch.allclose(loaded.value(x), model.value(x), rtol=1e-6)  # stored in float32
    save_weights({"log_weight": torch.zeros(1)}, str(tmp_path / "tv.safetensors"), {})
    with pytest.raises(ValueError, match="not a field of experts"):
        FieldOfExperts.load(tmp_path / "tv.safetensors")
