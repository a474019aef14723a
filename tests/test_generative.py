"""RED-Diff and FLAIR: closed-form Gaussian priors (spec A.6.1, B.6.1), real diffusers classes with tiny random
configs end to end with custom operators, local loading, seeds, dtypes and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from imaging.operators.base import LinearOperator, Operator
from imaging.operators.sampling import Inpainting
from imaging.priors.generative import DiffusionPrior, FlowPrior, PromptEmbeddings
from imaging.solvers.flair import Flair, calibrated_weights, flow_velocity_error
from imaging.solvers.red_diff import RedDiff, constant_weighting

diffusers = pytest.importorskip("diffusers")

MEAN, STD = 0.3, 0.5  # the Gaussian prior x0 ~ N(m, s² I), in the model range
SAMPLES = 4000


def gaussian_eps(alphas_cumprod: torch.Tensor):
    """The exact ε-predictor of x0 ~ N(m, s²I): ε*(x_t) = σ_t (x_t − α_t m) / (α_t² s² + σ_t²)."""
    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = alphas_cumprod[t.long()].to(x_t.dtype).reshape(-1, 1, 1, 1)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        return sigma * (x_t - alpha * MEAN) / (alpha ** 2 * STD ** 2 + sigma ** 2)
    return eps


def gaussian_velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact rectified-flow velocity of x0 ~ N(m, s²I): (t − (1−t)s²)(z − (1−t)m)/D − m, D = (1−t)²s² + t²."""
    t = t.reshape(-1, 1, 1, 1)
    d = (1 - t) ** 2 * STD ** 2 + t ** 2
    return (t - (1 - t) * STD ** 2) * (z - (1 - t) * MEAN) / d - MEAN


class Crop(LinearOperator):
    """A user's operator written with only `forward`: keep the left half of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] // 2]


class Saturate(Operator):
    """A user's nonlinear operator: a saturating sensor y = tanh(2x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(2 * x)


@pytest.fixture(scope="module")
def scheduler():
    return diffusers.DDPMScheduler()


def test_red_diff_prior_step_matches_gaussian_pull(scheduler):
    """E_ε[w(σ/α)(ε*(αμ + σε) − ε)] = σ²(μ − m)/(α²s² + σ²) for the linear weighting w(r) = r: a Tikhonov pull
    towards the prior mean. Monte-Carlo over SAMPLES draws; tolerance 5 standard errors."""
    prior = DiffusionPrior(gaussian_eps(scheduler.alphas_cumprod), scheduler, model_range=(-1, 1))
    solver = RedDiff(Inpainting(torch.ones(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), prior, steps=10)
    gen = torch.Generator().manual_seed(0)
    mu = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4).expand(SAMPLES, 1, 4, 4)
    for t in (50, 300, 700, 990):
        eps = torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        direction, _ = solver.prior_direction(mu, t, eps)
        alpha, sigma = prior.alpha_sigma(t)
        d = alpha ** 2 * STD ** 2 + sigma ** 2
        expected = sigma ** 2 * (mu[0] - MEAN) / d
        standard_error = (sigma / alpha) * abs(sigma ** 2 / d - 1) / math.sqrt(SAMPLES)
        assert torch.allclose(direction.mean(0), expected, atol=5 * standard_error + 1e-12), t
        assert bool((torch.sign(direction.mean(0)) == torch.sign(mu[0] - MEAN)).all())


def test_flair_prior_step_matches_gaussian_pull():
    """E_ε[v*(t ε + (1 − t) μ, t) − (ε − μ)] = t (μ − m) / ((1 − t)² s² + t²) without trajectory adjustment."""
    prior = FlowPrior(gaussian_velocity, None, model_range=(-1, 1))
    solver = Flair(Inpainting(torch.ones(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), prior, steps=5, noise_level=0.005)
    gen = torch.Generator().manual_seed(1)
    mu = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4).expand(SAMPLES, 1, 4, 4)
    for t in (0.2, 0.5, 0.8, 0.98):
        eps = torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        direction, _ = solver.prior_direction(mu, t, eps)
        d = (1 - t) ** 2 * STD ** 2 + t ** 2
        expected = t * (mu[0] - MEAN) / d
        standard_error = abs(t * (t - (1 - t) * STD ** 2) / d - 1) / math.sqrt(SAMPLES)
        assert torch.allclose(direction.mean(0), expected, atol=5 * standard_error + 1e-12), t


def test_diffusion_velocity_of_the_exact_gaussian_eps_is_the_exact_velocity(scheduler):
    """FLAIR over a DDPM: the velocity derived from the exact ε-predictor equals the exact rectified-flow velocity,
    to float precision where the schedule holds ᾱ(t) = (1 − t)²/((1 − t)² + t²) itself, and within 3 % (relative
    to the velocity's scale) at the nearest timestep of the default DDPM schedule."""
    times = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.98], dtype=torch.float64)
    abar = ((1 - times) ** 2 / ((1 - times) ** 2 + times ** 2))
    z = torch.randn(len(times), 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = gaussian_velocity(z, times)
    flow = FlowPrior.from_diffusion(DiffusionPrior(gaussian_eps(abar), abar, image_shape=(1, 4, 4)))
    assert flow.latent_shape == (1, 4, 4) and flow.autoencoder is None
    assert torch.allclose(flow.velocity(z, times), exact, atol=1e-9)
    ddpm = DiffusionPrior(gaussian_eps(scheduler.alphas_cumprod), scheduler)
    approx = FlowPrior.from_diffusion(ddpm).velocity(z, times)
    assert float((approx - exact).abs().max()) < 0.03 * float(exact.abs().max())


def test_flow_velocity_error_matches_gaussian_posterior_variance():
    """For the exact velocity, L(t) = Var(ε − x0 | z_t) = 1 + s² − (t − (1 − t)s²)²/D per pixel."""
    prior = FlowPrior(gaussian_velocity, None, model_range=(0, 1))  # identity range map
    gen = torch.Generator().manual_seed(2)
    images = MEAN + STD * torch.randn(500, 1, 4, 4, generator=gen, dtype=torch.float64)
    t, errors = flow_velocity_error(prior, images, points=6, samples=2)
    d = (1 - t) ** 2 * STD ** 2 + t ** 2
    expected = 1 + STD ** 2 - (t - (1 - t) * STD ** 2) ** 2 / d
    assert torch.allclose(errors, expected.double(), rtol=0.05)
    w = calibrated_weights(errors)
    assert abs(float(w.mean()) - 1) < 1e-12 and int(w.argmax()) == int(errors.argmin())


@pytest.mark.parametrize("solver", ["red_diff", "flair"])
def test_gaussian_prior_alone_pulls_to_the_mean(scheduler, solver):
    """With no data weight, both solvers move μ from the start towards the prior mean m (the sign and the scale of
    the whole prior loop, not just one step)."""
    op = Inpainting(torch.zeros(1, 1, 8, 8))
    y = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    start = torch.full((1, 1, 8, 8), 0.95, dtype=torch.float64)  # model value 0.9, m = 0.3
    if solver == "red_diff":
        prior = DiffusionPrior(gaussian_eps(scheduler.alphas_cumprod), scheduler)
        result = RedDiff(op, y, prior, steps=100, obs_weight=0.0, lam=1.0, lr=0.05).run(start)
    else:
        prior = FlowPrior(gaussian_velocity, None)
        result = Flair(op, y, prior, steps=50, data_steps=0, noise_level=0.005).run(start)
    # single-sample steps leave a per-pixel spread (Adam's of about lr); their image average is pulled to m
    assert abs(float(prior.to_model(result.x).mean()) - MEAN) < 0.3 * (0.9 - MEAN)


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def tiny_sd3():
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=4, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
        pos_embed_max_size=8).eval()
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  latent_channels=4, norm_num_groups=4, sample_size=8,
                                  scaling_factor=1.5, shift_factor=0.1).eval()
    return transformer, vae


def faces(n=2):
    gen = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 8, 8, generator=gen)


def test_red_diff_with_diffusers_unet_from_a_local_folder(tmp_path, scheduler):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    prior = DiffusionPrior.from_pretrained(tmp_path)
    # no attention blocks: fully convolutional, only the channels and the down-sampling are fixed
    assert prior.image_shape is None and (prior.channels, prior.size_multiple) == (1, 2)
    assert prior.num_timesteps == 1000
    x = faces()
    op = Crop()
    y = op(x)
    result = RedDiff(op, y, prior, steps=20, seed=5).run()
    assert result.x.shape == x.shape and result.iterations == 20
    assert set(result.history) == {"t", "data_rms", "prior_loss"} and result.history["t"][0] == 950.0
    assert result.history["t"][-1] == 0.0 and all(math.isfinite(v) for v in result.history["data_rms"])
    again = RedDiff(op, y, prior, steps=20, seed=5).run()
    other = RedDiff(op, y, prior, steps=20, seed=6).run()
    assert torch.equal(result.x, again.x) and not torch.equal(result.x, other.x)
    # the data term does its work: with λ = 0 the measured half is fitted
    fitted = RedDiff(op, y, prior, steps=50, lam=0.0, lr=0.05).run()
    assert fitted.history["data_rms"][-1] < 0.1 * fitted.history["data_rms"][0] + 1e-4


def test_red_diff_nonlinear_operator_and_half_precision_model(scheduler):
    prior = DiffusionPrior(tiny_unet().to(torch.bfloat16), scheduler)
    x = faces()
    op = Saturate()
    result = RedDiff(op, op(x), prior, steps=10).run(torch.full_like(x, 0.5))
    assert result.x.dtype == torch.float32 and bool(torch.isfinite(result.x).all())
    with pytest.raises(ValueError, match="nonlinear operator has no pseudo-inverse"):
        RedDiff(op, op(x), prior, steps=10).run()


def test_flair_with_sd3_transformer_and_autoencoder_from_a_local_folder(tmp_path):
    transformer, vae = tiny_sd3()
    transformer.save_pretrained(tmp_path / "transformer")
    vae.save_pretrained(tmp_path / "vae")
    diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=500, shift=3.0).save_pretrained(
        tmp_path / "scheduler")
    gen = torch.Generator().manual_seed(0)
    prompt = PromptEmbeddings(torch.randn(1, 3, 16, generator=gen), torch.randn(1, 8, generator=gen))
    prior = FlowPrior.from_pretrained(tmp_path, prompt=prompt, negative_prompt=None, guidance_scale=2.0)
    assert prior.latent_shape == (4, 4, 4) and prior.scaling_factor == 1.5 and prior.shift_factor == 0.1
    assert isinstance(prior.scheduler, diffusers.FlowMatchEulerDiscreteScheduler) and prior.timestep_scale == 500
    samples = prior.sample(2, steps=4)  # on the scheduler's shifted grid
    assert samples.shape == (2, *faces().shape[1:]) and bool(torch.isfinite(samples).all())
    x = faces()
    mask = (torch.rand(1, 1, 8, 8, generator=gen) > 0.4).float()
    op = Inpainting(mask)
    y = op(x)
    result = Flair(op, y, prior, steps=6, data_steps=5, lr_data=1.0, seed=1, noise_level=0.005).run()
    assert result.x.shape == x.shape and result.iterations == 6
    assert set(result.history) == {"t", "data_rms", "prior_loss", "data_steps"}
    assert result.history["t"][0] < 1 and result.history["t"][-1] > 0.18
    # the decoupled data steps lower the residual below the one after the prior step alone
    no_data = Flair(op, y, prior, steps=6, data_steps=0, seed=1, noise_level=0.005).run()
    assert result.history["data_rms"][-1] < no_data.history["data_rms"][-1]
    again = Flair(op, y, prior, steps=6, data_steps=5, lr_data=1.0, seed=1, noise_level=0.005).run()
    assert torch.equal(result.x, again.x)
    # the pixel-space refinement with the decoder's error restores the measured pixels the decoder cannot represent
    plain = Flair(op, y, prior, steps=3, noise_level=0.01, seed=2).run()
    refined = Flair(op, y, prior, steps=3, noise_level=0.01, decoder_error=0.05, seed=2).run()
    assert float((op(refined.x) - y).norm()) < 0.5 * float((op(plain.x) - y).norm())
    with pytest.raises(ValueError, match="'decoder_error'"):
        Flair(Saturate(), y, prior, decoder_error=0.05)
    # Polyak data steps with an unreachable noise level: all J steps without the stall stop, fewer with it, and
    # each accepted step lowers the misfit (Armijo)
    every = Flair(op, y, prior, steps=3, data_steps=6, noise_level=0.0, min_decrease=0.0, seed=1).run()
    stalled = Flair(op, y, prior, steps=3, data_steps=6, noise_level=0.0, min_decrease=0.5, seed=1).run()
    assert every.history["data_steps"] == [6.0, 6.0, 6.0] and sum(stalled.history["data_steps"]) < 18
    assert every.history["data_rms"][-1] < no_data.history["data_rms"][-1]
    with pytest.raises(ValueError, match="'min_decrease'"):
        Flair(op, y, prior, min_decrease=1.0, noise_level=0.005)
    for options in ({"trajectory_adjustment": False}, {"decoupled": False}, {"weights": torch.rand(100) + 0.5}):
        ablation = Flair(op, y, prior, steps=4, **options, noise_level=0.005).run()
        assert bool(torch.isfinite(ablation.x).all())


def test_flair_custom_operator_pixel_space_flow_and_unet_velocity():
    """A pixel-space flow (no autoencoder) whose velocity net is a diffusers UNet2DModel, with a user operator."""
    prior = FlowPrior(tiny_unet(), None)
    x = faces()
    op = Crop()
    result = Flair(op, op(x), prior, steps=5, data_steps=3, noise_level=0.005).run()
    assert result.x.shape == x.shape and bool(torch.isfinite(result.x).all())


def test_flair_noise_level_is_estimated_or_asked_for():
    """Without noise_level FLAIR estimates σ from y (here from the missing pixels); where it cannot (a small image
    seen through a forward-only operator), it says that σ must be given."""
    prior = FlowPrior(tiny_unet(), None)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    op = Inpainting((torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(6)) > 0.5).float())
    y = op(x) + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    assert Flair(op, y, prior, steps=2).noise_level == pytest.approx(0.05, rel=0.2)
    with pytest.raises(ValueError, match="Flair: argument 'noise_level' was not given"):
        Flair(Crop(), Crop()(faces()), prior, steps=2)


def test_bad_input_gives_clear_errors(scheduler, tmp_path):
    prior = DiffusionPrior(tiny_unet(), scheduler, image_shape=(1, 8, 8))  # a fixed size, declared
    op = Inpainting(torch.ones(1, 1, 16, 16))
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"expects \(1, 8, 8\)"):
        RedDiff(op, op(x), prior, steps=5).run()
    op8 = Inpainting(torch.ones(1, 1, 8, 8))
    y = op8(torch.rand(1, 1, 8, 8))
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'y' contains NaN"):
        RedDiff(op8, y, prior)
    with pytest.raises(ValueError, match="'steps'"):
        RedDiff(op8, op8(x[..., :8, :8]), prior, steps=0)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        DiffusionPrior.from_pretrained("google/ddpm-celebahq-256")
    with pytest.raises(FileNotFoundError, match="local folder"):
        FlowPrior.from_pretrained(tmp_path / "missing")
    transformer, vae = tiny_sd3()
    flow = FlowPrior(transformer, vae)
    with pytest.raises(ValueError, match=r"expects \(4, 4, 4\)"):
        Flair(op, op(x), flow, steps=2).run()
    with pytest.raises(TypeError, match="RedDiff: argument 'prior' must be a DiffusionPrior, got FlowPrior"):
        RedDiff(op, op(x), flow)
    with pytest.raises(TypeError, match="Flair: argument 'A' must be an imaging Operator"):
        Flair(object(), op(x), flow)
    with pytest.raises(TypeError, match="'prior' must be a FlowPrior"):
        Flair(op8, op8(x[..., :8, :8]), prior)
    with pytest.raises(ValueError, match="'guidance_scale'"):
        FlowPrior(transformer, vae, guidance_scale=0.5)


def test_the_problem_comes_first_and_the_old_order_is_deprecated(scheduler):
    """Every solver is called as Solver(A, y, prior); Solver(prior, A, y) and Flair's `regularisation=` still
    work for one release, with a DeprecationWarning, and give the same result."""
    prior = DiffusionPrior(tiny_unet(), scheduler)
    op, x = Crop(), faces()
    new = RedDiff(op, op(x), prior, steps=4).run(warn=False)
    with pytest.warns(DeprecationWarning, match=r"RedDiff\(A, y, prior\)"):
        old = RedDiff(prior, op, op(x), steps=4).run(warn=False)
    assert torch.equal(new.x, old.x)
    flow = FlowPrior.from_diffusion(prior)
    new = Flair(op, op(x), flow, steps=3, lam=0.2, noise_level=0.01).run(warn=False)
    with pytest.warns(DeprecationWarning):
        old = Flair(flow, op, op(x), steps=3, regularisation=0.2, noise_level=0.01)
    assert old.lam == 0.2 and torch.equal(new.x, old.run(warn=False).x)


def test_one_step_denoiser_is_the_posterior_mean_for_a_gaussian_prior():
    """Data x0 ~ N(0, s²) in the model range: the exact ε(x_t, t) = √(1−ᾱ) x_t / (ᾱ s² + 1 − ᾱ) makes the one-step
    denoiser the Wiener filter s² / (s² + σ²) y at a noise level that falls on a timestep."""
    s2 = 0.3
    abar = DiffusionPrior(lambda x, t: x).alphas_cumprod

    def eps(x, t):
        a = abar[t].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * s2 + 1 - a)

    prior = DiffusionPrior(eps, image_range=(-1.0, 1.0))  # image range = model range
    sigma = float(((1 - abar[120]) / abar[120]).sqrt())
    assert prior.timestep_for_noise(sigma) == 120
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(y, sigma), s2 / (s2 + sigma ** 2) * y)
    with pytest.raises(ValueError, match="sigma"):
        prior.denoise(y, -1.0)
