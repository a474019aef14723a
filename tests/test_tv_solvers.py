"""The TV prior, tv_denoise, and the TV solvers (PDHG, FISTA, tv_reconstruct)."""
import numpy as np
import pytest
import torch

import imaging
from imaging.data import load_image
from imaging.metrics import psnr
from imaging.operators import MRI, Blur, GaussianNoise, Radon, cartesian_mask, gaussian_kernel
from imaging.priors import TotalVariation
from imaging.solvers import FISTA, PDHG


@pytest.fixture(scope="module")
def camera():
    return load_image("camera", size=48)


def test_tv_denoise_entry_point(camera):
    y = camera + 0.1 * torch.randn(camera.shape, dtype=camera.dtype, generator=torch.Generator().manual_seed(0))
    x = imaging.tv_denoise(y, 0.1)
    x2, info = imaging.tv_denoise(y, 0.1, return_info=True)
    torch.testing.assert_close(x, x2)
    assert set(info) >= {"iterations", "gap", "gaps", "converged", "p"}
    assert info["converged"] and info["gap"] <= 1e-4 and info["iterations"] > 0
    volume = y.expand(1, 1, 48, 48)[:, :, None].repeat(1, 1, 4, 1, 1)
    assert imaging.tv_denoise(volume, 0.1).shape == volume.shape


def test_agrees_with_scikit_image():
    """scikit-image's denoise_tv_chambolle(image, weight=w) minimises ½‖u − f‖² + w·TV(u) with the same forward
    differences and Neumann boundary: weight = lam."""
    from skimage.restoration import denoise_tv_chambolle

    y = torch.rand(1, 1, 24, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = imaging.tv_denoise(y, 0.1, tol=1e-12, max_iter=100000)[0, 0].numpy()
    theirs = denoise_tv_chambolle(y[0, 0].numpy(), weight=0.1, eps=1e-15, max_num_iter=20000)
    assert np.abs(ours - theirs).max() < 1e-4


def test_prior_value_grad_prox(camera):
    prior = TotalVariation(eps=0.01)
    x = camera.repeat(2, 3, 1, 1).requires_grad_()
    value = prior.value(x)
    assert value.shape == (2,)
    (grad,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(grad, prior.grad(x.detach()))
    v = torch.randn_like(x)
    torch.testing.assert_close(prior.hvp(x.detach(), v), torch.autograd.functional.hvp(
        lambda t: prior.value(t).sum(), x.detach(), v)[1])
    torch.testing.assert_close(prior.prox(camera, 0.05), imaging.tv_denoise(camera, 0.05))


def test_pdhg_deblurring_certified_gap(camera):
    A = Blur(gaussian_kernel(1.5))
    y = GaussianNoise(0.01)(A(camera), generator=torch.Generator().manual_seed(1))
    result = PDHG(A, y, 5e-3, box=(0.0, 1.0), tol=1e-3, max_iter=3000).run()
    objective = result.history["objective"]
    assert result.converged and result.history["gap"][-1] <= 1e-3
    assert objective[-1] < objective[0] and min(objective[-10:]) <= min(objective[:10])
    fista = FISTA(A, y, 5e-3, box=(0.0, 1.0), max_iter=300, tol=1e-8).run()
    # both minimise the same objective: PDHG is certified within 1e-3 of the optimum
    assert objective[-1] <= fista.history["objective"][-1] * (1 + 1e-3)
    assert fista.history["objective"][-1] <= objective[-1] * (1 + 1e-3)


def test_pdhg_without_box_stops_on_relative_change(camera):
    A = Blur(gaussian_kernel(1.0))
    result = imaging.tv_reconstruct(A, A(camera), 1e-3, tol=1e-5, max_iter=2000)
    assert "gap" not in result.history and result.converged
    assert result.history["relative_change"][-1] <= 1e-5


def test_tv_beats_least_squares_on_ct_and_mri(camera):
    radon = Radon((48, 48), angles=12)
    scaled = (1.0 / radon.norm(camera)) * radon
    mri = MRI(cartesian_mask((48, 48), acceleration=4, seed=0))
    for op, lam in ((scaled, 2e-3), (mri, 5e-3)):
        y = op(camera)
        y = y + 0.01 * torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
        least_squares = imaging.least_squares(op, y, max_iter=200).x.real
        tv = imaging.tv_reconstruct(op, y, lam, box=(0.0, 1.0), max_iter=1500, tol=1e-4).x
        assert psnr(tv, camera) > psnr(least_squares.clamp(0, 1), camera) + 2.0


def test_solver_bad_input(camera):
    A = Blur(gaussian_kernel(1.0))
    y = A(camera)
    with pytest.raises(ValueError, match="'lam' must be finite and >= 0"):
        PDHG(A, y, -1.0)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        imaging.tv_reconstruct(A, bad, 0.1)
    with pytest.raises(ValueError, match="'lam' must be finite and >= 0"):
        FISTA(A, y, -0.1)
    with pytest.raises(ValueError, match="'box' must have lower <= upper"):
        PDHG(A, y, 0.1, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="'box' must be"):
        FISTA(A, y, 0.1, box=0.5)
    with pytest.raises(ValueError, match="not also"):
        imaging.tv_reconstruct(A, y, 0.1, box=(0, 1), lower=0.0)
    with pytest.warns(DeprecationWarning, match="box=\\(lower, upper\\)"):  # the old spelling, one release
        old = imaging.tv_reconstruct(A, y, 0.1, lower=0.0, upper=1.0, max_iter=20)
    torch.testing.assert_close(old.x, imaging.tv_reconstruct(A, y, 0.1, box=(0.0, 1.0), max_iter=20).x)


def test_fista_takes_any_prox():
    """With A = I and the prox of λ‖x‖₁ (soft-thresholding), FISTA's fixed point is the soft-threshold of y; a box
    needs a prox that takes the bounds."""
    from imaging.operators import Identity
    from imaging.solvers import FISTA

    y = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def soft(v, tau):
        return torch.sign(v) * (v.abs() - tau).clamp_min(0)

    result = FISTA(Identity(), y, 0.3, soft, max_iter=50, tol=1e-12).run(warn=False)
    torch.testing.assert_close(result.x, soft(y, 0.3))
    assert "misfit" in result.history and "objective" not in result.history

    class L1:
        def prox(self, v, tau, lower=None, upper=None):
            return soft(v, tau).clamp(lower, upper)

        def value(self, x):
            return x.abs().flatten(1).sum(1)

    boxed = FISTA(Identity(), y, 0.3, L1(), box=(0.0, 0.5), max_iter=50, tol=1e-12).run(warn=False)
    torch.testing.assert_close(boxed.x, soft(y, 0.3).clamp(0.0, 0.5))
    assert "objective" in boxed.history
    with pytest.raises(ValueError, match="'box' needs a prior whose prox takes lower= and upper="):
        FISTA(Identity(), y, 0.3, soft, box=(0.0, 1.0))
    with pytest.raises(TypeError, match="'prior' must be a TotalVariation, a prox"):
        FISTA(Identity(), y, 0.3, 42)
