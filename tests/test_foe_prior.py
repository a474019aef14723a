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
