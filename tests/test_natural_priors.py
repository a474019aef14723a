"""The shipped natural-image priors (trained on train400) on pictures they never saw: they load offline by name,
denoise above TV with its best λ, and run the solvers on any size. The Set12 numbers themselves come from
benchmarks/denoise_set12.py (docs/natural_priors.md); the tests that read ../shared/datasets skip without it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imaging.data import image_files, load_image, read_image
from imaging.metrics import psnr
from imaging.ops import tv_prox
from imaging.priors import DiffusionPrior, FlowPrior, pretrained_lpn

SET12 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "set12"
SIGMA = 25 / 255


def tv_best(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR of TV denoising with the best λ of a fine grid (an oracle)."""
    return max(float(psnr(tv_prox(noisy, float(lam), tol=1e-4, max_iter=500)[0].clamp(0, 1), clean))
               for lam in SIGMA * torch.logspace(-0.8, 0.4, 13))


def held_out_crops():
    """Grey 96×96 crops of three scikit-image pictures that are not in train400, with seeded noise σ = 25/255."""
    clean = torch.cat([load_image(name, size=144, channels=1).float()[..., 24:120, 24:120]
                       for name in ("coffee", "chelsea", "astronaut")])
    noisy = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return clean, noisy, [tv_best(noisy[i:i + 1], clean[i:i + 1]) for i in range(len(clean))]


@pytest.fixture(scope="module")
def held_out():
    return held_out_crops()


def mean_psnr(x: torch.Tensor, clean: torch.Tensor) -> float:
    return float(psnr(x.clamp(0, 1), clean).mean())


def test_natural_priors_load_by_name_and_take_any_size():
    ddpm = DiffusionPrior.pretrained("natural")
    assert ddpm.image_shape is None and ddpm.channels == 1 and ddpm.size_multiple == 4
    assert ddpm.denoise(torch.rand(1, 1, 30, 45), 0.1).shape == (1, 1, 30, 45)
    with pytest.raises(ValueError, match="divisible by 4"):
        ddpm.check_image(torch.rand(1, 1, 30, 45), "test", "x")
    flow = FlowPrior.pretrained("natural")
    assert flow.velocity(torch.randn(1, 1, 32, 48), 0.5).shape == (1, 1, 32, 48)
    lpn = pretrained_lpn("natural")
    assert lpn.min_core_weight() >= 0 and lpn.settings["steps"] > 0
    with pytest.raises(ValueError, match="unknown name"):
        DiffusionPrior.pretrained("cats")


def test_ddpm_one_step_denoiser_beats_tv_on_held_out_pictures(held_out):
    clean, noisy, tv = held_out
    denoised = DiffusionPrior.pretrained("natural").denoise(noisy, SIGMA)
    assert mean_psnr(denoised, clean) >= sum(tv) / len(tv) + DDPM_MARGIN


def test_lpn_prox_beats_tv_on_held_out_pictures(held_out):
    clean, noisy, tv = held_out
    denoised = pretrained_lpn("natural").prox(noisy)
    assert mean_psnr(denoised, clean) >= sum(tv) / len(tv) + LPN_MARGIN


def test_the_wider_lpn_denoises_better_than_the_one_it_grew_from(held_out):
    clean, noisy, tv = held_out
    wide = pretrained_lpn("natural-wide")
    assert wide.hidden == 128 and wide.min_core_weight() >= 0 and wide.settings["settings"]["grow"] == "natural"
    denoised = mean_psnr(wide.prox(noisy), clean)
    assert denoised >= mean_psnr(pretrained_lpn("natural").prox(noisy), clean) + 0.05
    assert denoised >= sum(tv) / len(tv) + LPN_MARGIN + 0.1


@pytest.mark.skipif(not SET12.is_dir(), reason="../shared/datasets/set12 is not present (validation data)")
def test_ddpm_one_step_on_set12_cameraman_and_house():
    prior = DiffusionPrior.pretrained("natural")
    for index, path in enumerate(image_files(SET12)[:2]):
        clean = read_image(path)[None]
        noisy = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(index))
        assert mean_psnr(prior.denoise(noisy, SIGMA), clean) >= tv_best(noisy, clean) + DDPM_MARGIN


# Margins over TV with its best λ, below what the shipped weights measured (DDPM one-step +1.59 dB on the three
# crops, +1.47 / +1.63 on Set12's first two images; LPN prox +0.42 dB on the crops: short of the +1 dB the
# natural-prior issue asks, see docs/natural_priors.md).
DDPM_MARGIN = 1.2
LPN_MARGIN = 0.2
