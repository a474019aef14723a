"""imaging.metrics: PSNR / SSIM wrappers and the oracle choice of a parameter against the truth."""
import pytest
import torch

from imaging.metrics import oracle, psnr, ssim


def test_psnr_and_ssim_per_sample():
    truth = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noisy = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert psnr(noisy, truth).shape == (2,) and psnr(noisy, truth).mean() == pytest.approx(20.0, abs=0.3)
    assert float(ssim(truth, truth).min()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'x' and 'reference'"):
        psnr(truth[0], truth)


def test_oracle_picks_the_value_closest_to_the_truth():
    truth = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    x, value, score = oracle(lambda v: truth + v, [0.3, -0.1, 0.05, 0.2], truth)
    assert value == 0.05 and torch.equal(x, truth + 0.05) and score == pytest.approx(26.02, abs=0.01)
    with pytest.raises(ValueError, match="'values'"):
        oracle(lambda v: truth, [], truth)
