"""UnrolledFoE: the Student-t field of experts trained end to end for a few gradient steps."""
import pytest
import torch

from imaging.priors import FieldOfExperts, UnrolledFoE


def small_model(steps: int = 3) -> UnrolledFoE:
    model = UnrolledFoE.natural(count=6, size=3, steps=steps, weight=1e-3, nu=0.05, dtype=torch.float64)
    with torch.no_grad():
        model.log_steps.copy_(torch.linspace(-0.3, 0.4, steps, dtype=torch.float64))
        model.prior.filters.add_(0.1 * torch.randn(model.prior.filters.shape, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(0)))
    return model


def noisy_pair(size: int = 24, sigma: float = 0.1, seed: int = 0):
    from imaging.data import load_image

    clean = load_image("camera", size=size, channels=1).double()
    noise = torch.randn(clean.shape, dtype=clean.dtype, generator=torch.Generator().manual_seed(seed))
    return clean, clean + sigma * noise


def test_each_step_is_a_gradient_step_on_the_energy():
    """x_{t+1} = x_t − α_t ∇E(x_t), ∇E from autograd of E(x) = ½‖x − y‖² + R(x), α_t = exp(s_t)/(1 + L); at
    another noise level σ the model denoises y·σ₀/σ and scales back."""
    model = small_model()
    _, y = noisy_pair()
    x = y.clone()
    for t in range(len(model.log_steps)):
        x_ = x.clone().requires_grad_()
        energy = 0.5 * (x_ - y).pow(2).sum() + model.prior.value(x_).sum()
        gradient, = torch.autograd.grad(energy, x_)
        alpha = model.log_steps[t].exp() / (1 + model.prior.curvature_bound())
        x = (x - alpha * gradient).detach()
    with torch.no_grad():
        assert torch.allclose(model(y), x, atol=1e-10)
        assert torch.allclose(model(y, model.sigma), x, atol=1e-10)
        assert torch.allclose(model(y, 2 * model.sigma), model(y / 2) * 2, atol=1e-12)


def test_curvature_bound_is_the_largest_curvature_on_periodic_images():
    model = small_model()
    prior = model.prior
    with torch.no_grad():
        prior.padding = "zero"
        bound = float(prior.curvature_bound(grid=512))  # the supremum over all frequencies
        # at x = 0 the Student-t curvature is 2/ν² everywhere: ∇²R(0) = Σ a_i (2/ν_i²) K_iᵀK_i (zero padding: a
        # section of the infinite convolution), whose largest eigenvalue approaches the supremum from below
        v = torch.randn(1, 1, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        zero = torch.zeros_like(v)
        for _ in range(300):
            v = prior.hvp(zero, v)
            v = v / v.norm()
        rayleigh = float((v * prior.hvp(zero, v)).sum())
    assert 0.9 * bound < rayleigh <= bound * (1 + 1e-6)


def test_training_path_and_compiled_inference_agree_and_training_reduces_the_error():
    model = small_model()
    clean, y = noisy_pair()
    with torch.no_grad():
        inference = model(y)
    trained = model(y)  # parameters require grad: the differentiable torch reference
    assert trained.requires_grad and torch.allclose(trained, inference, atol=1e-10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = (model(y) - clean).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    assert losses[-1] < 0.9 * losses[0]


def test_save_load_round_trip_and_bad_input(tmp_path):
    model = small_model()
    path = tmp_path / "unrolled.safetensors"
    model.save(path, {"note": "test"})
    loaded = UnrolledFoE.load(path, dtype=torch.float64)
    _, y = noisy_pair()
    with torch.no_grad():
        assert torch.allclose(loaded(y), model(y), atol=1e-5)
    assert loaded.settings["note"] == "test" and loaded.prior.potential == "student"
    FieldOfExperts.pretrained("denoise-sigma25").settings  # a plain field of experts file is no unrolled model
    from imaging.data import save_weights

    plain = FieldOfExperts.random(count=2, size=3)
    save_weights(dict(plain.named_parameters()), str(tmp_path / "plain.safetensors"), {"potential": "abs"})
    with pytest.raises(ValueError, match="log_steps"):
        UnrolledFoE.load(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="'y'"):
        model(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="'sigma'"):
        model(y, sigma=-1.0)
    with pytest.raises(ValueError, match="'steps'"):
        UnrolledFoE(model.prior, steps=0)
    with pytest.raises(TypeError, match="'prior'"):
        UnrolledFoE(torch.zeros(3, 3, 3))


def test_recipe_trains_exports_and_loads(tmp_path):
    """scripts/train_priors.py foe in miniature: two steps on a folder of images, exported, loaded by file."""
    pytest.importorskip("accelerate")
    from imaging.data import load_image, write_image
    from imaging.learning.recipes import export_prior, train_prior

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("camera", "coins"):
        write_image(folder / f"{name}.png", load_image(name, size=80, channels=1)[0])
    result = train_prior("foe", str(folder), tmp_path / "run", steps=2, progress=False)
    assert result.steps == 2 and result.loss > 0
    export_prior("foe", tmp_path / "run", tmp_path / "foe.safetensors", steps=2)
    model = UnrolledFoE.load(tmp_path / "foe.safetensors")
    assert model.settings["steps"] == 2 and model.prior.filters.shape == (48, 7, 7)


def test_shipped_fields_of_experts_load_by_name_and_denoise_held_out_crops():
    from imaging.data import load_image
    from imaging.metrics import psnr

    convex = FieldOfExperts.pretrained("natural-sigma25")
    assert convex.filters.shape == (48, 7, 7) and convex.convex and convex.zero_mean
    model = UnrolledFoE.pretrained("natural-sigma25-student")
    assert model.prior.potential == "student" and model.sigma == pytest.approx(25 / 255)
    assert not any(p.requires_grad for p in model.parameters())  # frozen: the compiled op runs inside PnP too
    clean = load_image("coffee", size=96, channels=1)[..., 16:80, 16:80].float()
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        denoised = model(noisy)
    from imaging.ops import tv_prox

    tv_oracle = max(float(psnr(tv_prox(noisy.double(), f * 25 / 255, tol=1e-4, max_iter=500)[0].clamp(0, 1),
                               clean.double())) for f in (0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.3))
    assert float(psnr(denoised.clamp(0, 1), clean)) > tv_oracle + 1.0  # 28.34 against 26.82 dB when shipped
