"""Noise models, offline test images and metrics."""
import pytest
import torch

from imaging.data import OFFLINE_IMAGES, load_image
from imaging.metrics import psnr, ssim
from imaging.operators import GaussianNoise, PoissonNoise


def test_gaussian_noise_statistics_and_seed():
    z = torch.zeros(1, 1, 256, 256, dtype=torch.float64)
    noise = GaussianNoise(0.1)
    y = noise(z, generator=torch.Generator().manual_seed(0))
    assert abs(y.std().item() - 0.1) < 2e-3 and abs(y.mean().item()) < 2e-3
    torch.testing.assert_close(noise(z, generator=torch.Generator().manual_seed(0)), y)
    yc = noise(z.to(torch.complex128), generator=torch.Generator().manual_seed(0))
    assert abs(yc.abs().pow(2).mean().item() - 0.01) < 5e-4
    assert noise.nll(y, z).shape == (1,)


def test_poisson_noise_mean_and_errors():
    z = torch.full((1, 1, 128, 128), 0.5, dtype=torch.float64)
    y = PoissonNoise(gain=100.0)(z, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item() - 0.5) < 5e-3 and abs(y.var().item() - 0.005) < 5e-4
    with pytest.raises(ValueError, match="non-negative"):
        PoissonNoise(10.0)(-z)
    with pytest.raises(ValueError, match="'gain' must be a finite number > 0"):
        PoissonNoise(0.0)
    with pytest.raises(ValueError, match="'sigma' must be a finite number >= 0"):
        GaussianNoise(-1.0)


def test_load_image_shapes_and_range():
    x = load_image("astronaut", size=32)
    assert x.shape == (1, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert load_image("astronaut", size=(16, 24), channels=1).shape == (1, 1, 16, 24)
    assert load_image("camera", size=8, channels=3, dtype=torch.float32).dtype == torch.float32
    assert "camera" in OFFLINE_IMAGES
    with pytest.raises(ValueError, match="'name' must be one of"):
        load_image("lena")


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_metrics():
    x = load_image("camera", size=32)
    assert psnr(x, x).isinf().all() and torch.allclose(ssim(x, x), torch.ones(1, dtype=torch.float64))
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert 18 < psnr(noisy, x).item() < 22 and ssim(noisy, x).item() < 0.9
    with pytest.raises(ValueError, match="psnr"):
        psnr(x, x[..., :-1])
