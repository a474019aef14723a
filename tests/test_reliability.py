"""Regression tests for the reliability report (issue 16): impossible parameters and unclear errors. Each
reproducer now gives a clear error naming the user's argument and what was expected."""
import pytest
import torch

import imaging
from conftest import requires_ext
from imaging.calibration.sensing import DenseGainSensing
from imaging.data import load_image
from imaging.operators import GaussianNoise, Identity, Inpainting, Radon, gaussian_kernel
from imaging.priors import FlowPrior
from imaging.solvers import FISTA, GSURE, SURE, Discrepancy, Flair, PnPADMM, PnPPGD, least_squares

NAN = float("nan")
Y = torch.rand(2, 1, 8, 8)
MASK = torch.ones(1, 1, 8, 8)
MASK[0, 0, 0, 0] = NAN

CASES = [
    ("least_squares: argument 'lam' must be finite", lambda: least_squares(Identity(), Y, lam=NAN)),
    ("least_squares: argument 'lam' must be one number", lambda: least_squares(Identity(), Y, lam=torch.ones(2))),
    ("FISTA: argument 'lam' must be one number", lambda: FISTA(Identity(), Y, torch.ones(2))),
    ("least_squares: argument 'max_iter' must be >= 0, an integer", lambda: least_squares(Identity(), Y, 0.1,
                                                                                          max_iter=2 ** 70)),
    ("least_squares: argument 'x0' must have shape", lambda: least_squares(Identity(), Y, 0.1,
                                                                           x0=torch.zeros(2, 1, 4, 4))),
    ("tv_reconstruct: argument 'box' must be \\(lower, upper\\)", lambda: imaging.tv_reconstruct(Identity(), Y, 0.1,
                                                                                                  box=(0,))),
    ("PnPADMM: argument 'box' must have lower <= upper", lambda: PnPADMM(Identity(), Y, lambda v: v, box=(1, 0))),
    ("GaussianNoise: argument 'sigma' must be a finite number", lambda: GaussianNoise(NAN)),
    ("Inpainting: argument 'mask' has non-finite values", lambda: Inpainting(MASK)),
    ("Radon: argument 'angles' must hold at least one finite angle", lambda: Radon((8, 8), torch.tensor([0.0, NAN]))),
    ("gaussian_kernel: argument 'sigma' must be a positive finite number", lambda: gaussian_kernel(NAN)),
    ("load_image: argument 'size' must be a positive integer", lambda: load_image("camera", size=0)),
    ("Flair: argument 'data_steps' must be an integer >= 0",
     lambda: Flair(Identity(), Y, FlowPrior.pretrained("natural"), data_steps=-3, noise_level=0.01)),
]


@pytest.mark.parametrize("message, call", CASES, ids=[m.split(":")[0] + "-" + str(k) for k, (m, _) in enumerate(CASES)])
def test_impossible_parameters_get_a_clear_error(message, call):
    with pytest.raises(ValueError, match=message):
        call()


def test_per_sample_weights_still_work_where_they_are_supported():
    result = imaging.tv_reconstruct(Identity(), Y, torch.tensor([0.05, 0.1]), max_iter=5)
    assert result.x.shape == Y.shape


def test_tv_prox_refuses_what_it_cannot_solve():
    from imaging.ops.tv import tv_prox

    y = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="'lower' must be a finite number or None"):
        tv_prox(y, 0.1, lower=float("inf"))
    with pytest.raises(ValueError, match="'p0' has non-finite values"):
        tv_prox(y, 0.1, p0=torch.full((1, 1, 2, 8, 8), float("inf")))
    with pytest.raises(ValueError, match="'tol' and 'max_iter' must be >= 0"):
        tv_prox(y, 0.1, tol=NAN)
    with pytest.raises(ValueError, match="'lam' .* is too large for torch.float32"):
        tv_prox(y, 3e38)


def test_an_overflowing_scale_is_an_error_not_a_zero_answer():
    """float32 with ‖A‖ = 1e20: the CG's inner products overflow; an error naming the entry point, not x = 0."""
    with pytest.raises(FloatingPointError, match="least_squares: .*became nan|overflows"):
        least_squares(1e20 * Identity(), torch.rand(1, 1, 4, 4), lam=0.0)


def test_a_long_tv_prox_runs_in_interruptible_chunks(monkeypatch):
    """The compiled loop returns to Python every PROX_CHUNK iterations (Ctrl-C works between chunks), warm-started
    from its dual field: the iterations add up and the answer meets the same tolerance."""
    import importlib

    tv = importlib.import_module("imaging.ops.tv")
    y = torch.rand(1, 1, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = tv.tv_prox(y, 0.1, True, 1e-7, 3000)
    monkeypatch.setattr(tv, "PROX_CHUNK", 40)
    chunked = tv.tv_prox(y, 0.1, True, 1e-7, 3000)
    assert float(chunked[2].max()) <= 1e-7 and 40 < int(chunked[3]) < 3000
    assert float((chunked[0] - whole[0]).abs().max()) < 1e-3


def test_fused_passes_without_a_backward_refuse_inputs_that_require_grad():
    from imaging.ops.gain_sensing import gain_normal_pass

    A = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    s, w = torch.randn(1, 4, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="gain_normal_pass: not differentiable"):
        gain_normal_pass(A, s, w)
    with torch.no_grad():
        assert not any(t.requires_grad for t in gain_normal_pass(A, s, w) if t is not None)


def test_bilevel_learning_checks_theta0_against_the_problem():
    from imaging.learning import maid
    from imaging.learning.denoising import DenoisingBilevel
    from imaging.priors import SmoothedTV

    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    problem = DenoisingBilevel(x + 0.1 * torch.randn_like(x), x, SmoothedTV().double())
    with pytest.raises(ValueError, match="'theta0' must have 2 entries .* got 3"):
        maid(problem, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="'theta0' must be a finite 1-D tensor"):
        maid(problem, torch.tensor([NAN, 0.0], dtype=torch.float64))


def test_tv_prox_converges_on_tiny_images_as_on_unit_ones():
    """The duality-gap test is relative to each plane's own scale: an image scaled by 1e-20 (and λ with it) stops
    where the unit image stops, at the same distance from the solution (an absolute floor of 1e-30 made it stop
    at once, 34 % away)."""
    from imaging.ops import tv_prox
    from imaging.ops.tv import _tv_prox_torch

    y = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    unit = tv_prox(y, 0.1, tol=1e-4)
    tiny = tv_prox(y * 1e-20, 0.1 * 1e-20, tol=1e-4)
    reference = _tv_prox_torch(y * 1e-20, torch.tensor([0.1e-20], dtype=torch.float64), tol=1e-4)
    assert int(tiny[3]) == int(unit[3]) == int(reference[3]) > 1
    torch.testing.assert_close(tiny[0] * 1e20, unit[0])


@requires_ext
def test_the_compiled_tv_prox_never_counts_a_nan_gap_as_converged():
    y = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    y[0, 0, 3, 3] = float("nan")  # the public tv_prox refuses this; the raw op must not report convergence
    x, p, gap, iterations = torch.ops.imaging.tv_prox(y, torch.full((1, 1), 0.1, dtype=torch.float64), True, 1e-4,
                                                       40, None, None, None)
    assert int(iterations) == 40 and torch.isnan(gap).all()


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@requires_ext
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_compiled_ops_release_their_workspace():
    """The CPU kernels' scratch memory lives for one call: after a field-of-experts gradient on a 2048² image
    (about 290 MB of padded planes and partial gradients) and a batched gain adjoint (about 130 MB of partial
    images), resident memory is back within 64 MB of where it was (it stayed up for the life of the process)."""
    import gc

    from imaging.ops import foe_grad, gain_adjoint

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)
    filters = torch.randn(48, 7, 7, generator=g, dtype=torch.float64)
    A = torch.randn(2, 16, 16384, generator=g, dtype=torch.float64)
    r = torch.randn(32, 2, 16, generator=g, dtype=torch.float64)
    for call in (lambda: foe_grad(x, filters, torch.ones(48, dtype=torch.float64),
                                  torch.full((48,), 0.1, dtype=torch.float64), "abs", "reflect"),
                 lambda: gain_adjoint(A, r)):
        before = _resident_mib()
        out = call()
        del out
        gc.collect()
        assert _resident_mib() - before < 64


def test_a_field_of_experts_nu_whose_square_underflows_is_an_error():
    from imaging.ops import foe_grad

    x, filters = torch.rand(1, 1, 16, 16), torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match="argument 'nu' must have ν² representable in torch.float32"):
        foe_grad(x, filters, torch.ones(2), torch.tensor([1e-30, 0.1]), "abs", "reflect")
    assert foe_grad(x, filters, torch.ones(2), torch.tensor([1e-15, 0.1]), "abs", "reflect").isfinite().all()


# --- second round: what benchmarks/robustness.py still found -------------------------------------------------------
def test_cg_says_when_its_right_hand_side_overflows():
    from imaging.linalg import conjugate_gradient

    rhs = torch.full((1, 64), 1e20, dtype=torch.float32)  # ⟨b, b⟩ = 6.4e41 > float32's max
    with pytest.raises(FloatingPointError, match="overflows torch.float32.*rescale A"):
        conjugate_gradient(lambda v: v, rhs)
    with pytest.raises(FloatingPointError, match="rescale A"):
        least_squares(Identity(), torch.full((1, 1, 8, 8), 1e20, dtype=torch.float32), 0.1)


def test_a_nonlinear_model_is_refused_by_diffpir_and_calibration():
    from imaging.calibration import GainSensing, calibrate, pgd
    from imaging.operators import LinearOperator
    from imaging.priors import DiffusionPrior
    from imaging.solvers import DiffPIR

    class Square(LinearOperator):
        def forward(self, x):
            return x ** 2

    with pytest.raises(ValueError, match="Square is a LinearOperator but its forward is not linear"):
        DiffPIR(Square(), torch.rand(1, 1, 16, 16), DiffusionPrior.pretrained("natural"), noise_level=0.01, steps=3)

    class SquaredSensing(GainSensing):
        def __init__(self, A):
            super().__init__(A.shape[0], A.shape[1], A.shape[2])
            self.A = A

        def sense(self, x):
            return torch.einsum("lmn,bn->blm", self.A, x) ** 2

    A = torch.randn(6, 8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="SquaredSensing is a LinearOperator but its forward is not linear"):
        calibrate(torch.rand(6, 8, dtype=torch.float64), SquaredSensing(A), pgd)


def test_tv_hvp_refuses_a_nan_pixel():
    from imaging.ops import tv_hvp

    x = torch.rand(2, 2, 7, 9, dtype=torch.float64)
    x[1, 0, 3, 4] = NAN
    with pytest.raises(ValueError, match="tv_hvp: argument 'x' has non-finite values"):
        tv_hvp(x, torch.rand_like(x), 0.1)


@pytest.mark.parametrize("scale, dtype", [(1e-300, torch.float64), (1e-30, torch.float32), (1e30, torch.float32),
                                          (1e150, torch.float64)])
def test_tv_prox_at_extreme_scales_solves_the_unit_problem(scale, dtype):
    """The prox is 1-homogeneous in (y, λ, box): far from 1 it is solved at unit scale, not stopped after 0
    iterations with a rounding-floor gap of 0 (or NaN)."""
    from imaging.ops import tv_prox

    y = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    unit = tv_prox(y, 0.1, tol=1e-6, max_iter=5000)[0]
    x, _, gap, iterations = tv_prox((y * scale).to(dtype), 0.1 * scale, tol=1e-6, max_iter=5000)
    assert int(iterations) > 0 and bool(torch.isfinite(gap).all())
    error = float(((x.double() / scale) - unit).norm() / unit.norm())
    assert error < (1e-5 if dtype == torch.float64 else 1e-3)


@requires_ext
def test_raw_compiled_ops_without_a_formula_refuse_backward_and_bad_bounds():
    y = torch.rand(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    x = torch.ops.imaging.tv_prox(y, torch.full((1, 2), 0.1, dtype=torch.float64), True, 1e-4, 50, None, None,
                                  None)[0]
    with pytest.raises(RuntimeError, match="imaging::tv_prox is not differentiable"):
        x.sum().backward()
    plain = y.detach()
    with pytest.raises(RuntimeError, match="'lower' and 'upper' must be finite or None"):
        torch.ops.imaging.tv_prox(plain, torch.full((1, 2), 0.1, dtype=torch.float64), True, 1e-4, 50,
                                  float("inf"), None, None)
    with pytest.raises(RuntimeError, match="'lam' .* is too large for Float"):
        torch.ops.imaging.tv_prox(plain.float(), torch.full((1, 2), 3e38), True, 1e-4, 50, None, None, None)


def test_slow_geometric_blow_ups_are_caught():
    """Steps a little above the stability limit (growth 1.2 per iteration), an expansive prox without an objective,
    a far too small Lipschitz guess, RED-Diff with a huge step: a DivergenceError, never a returned 1e15."""
    from imaging.operators import Blur
    from imaging.priors import DiffusionPrior, TotalVariation
    from imaging.solvers import AcceleratedGradient, DivergenceError, PnPPGD, RedDiff

    B = Blur(gaussian_kernel(1.0))
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = B(x)
    L = B.norm(x) ** 2
    runs = [lambda: PnPPGD(B, y, lambda v: v, step=2.2 / L, max_iter=300).run(torch.zeros_like(y)),
            lambda: FISTA(B, y, 1.0, prior=lambda v, t: 2 * v, max_iter=200).run(),
            lambda: AcceleratedGradient(B, y, TotalVariation(eps=0.01), 0.01, lipschitz=1e-30, max_iter=200).run(),
            lambda: RedDiff(Identity(), x, DiffusionPrior.pretrained("natural"), steps=10, lr=1e4).run()]
    for run in runs:
        with pytest.raises(DivergenceError, match="diverge"):
            run()


@pytest.mark.parametrize("name, value", [("tau", NAN), ("sigma", float("inf"))])
def test_pdhg_step_sizes_must_be_finite(name, value):
    from imaging.solvers import PDHG

    with pytest.raises(ValueError, match=f"PDHG: argument '{name}'"):
        PDHG(Identity(), Y, 0.05, **{name: value})


@pytest.mark.parametrize("message, call", [
    ("Discrepancy: argument 'max_solves'", lambda: Discrepancy(max_solves=0)),
    ("SURE: argument 'epsilon'", lambda: SURE(epsilon=0.0)),
    ("SURE: argument 'epsilon'", lambda: SURE(epsilon=NAN)),
    ("GSURE: argument 'cg_tol'", lambda: GSURE(cg_tol=NAN)),
    ("FISTA: argument 'inner_tol'", lambda: FISTA(Identity(), Y, 0.1, inner_tol=NAN)),
    ("FISTA: argument 'inner_max_iter'", lambda: FISTA(Identity(), Y, 0.1, inner_max_iter=-1)),
    ("PnPADMM: argument 'cg_iter'", lambda: PnPADMM(Identity(), Y, lambda v: v, cg_iter=-1)),
    ("PnPADMM: argument 'cg_tol'", lambda: PnPADMM(Identity(), Y, lambda v: v, cg_tol=NAN)),
    ("PnPPGD: argument 'step'", lambda: PnPPGD(Identity(), Y, lambda v: v, step=torch.full((2,), 0.5))),
    ("FISTA: argument 'x0' must have the unknown's shape",
     lambda: FISTA(Identity(), Y, 0.1).run(torch.zeros(2, 1, 4, 4))),
    ("PnPPGD: argument 'x0' must have the unknown's shape",
     lambda: PnPPGD(Identity(), Y, lambda v: v).run(torch.zeros(2, 1, 4, 4))),
    ("PDHG: argument 'x_like' \\(or 'x0'\\)", lambda: imaging.tv_reconstruct(Identity(), Y, 0.1,
                                                                           x0=torch.zeros(2, 1, 4, 4))),
    ("calibration.pgd: argument 'tol'", lambda: _calibrate(tol=NAN)),
    ("calibration.pgd: argument 'step'", lambda: _calibrate(line_search=False, step=NAN)),
    ("prox_in_patches: argument 'stride'", lambda: _patches(stride=0)),
    ("least_squares: Aᴴy has non-finite values .* rescale A",
     lambda: least_squares(Identity() * 1e20, torch.rand(1, 1, 8, 8) * 1e20, 0.1)),
])
def test_solver_options_and_scales_get_a_clear_error(message, call):
    with pytest.raises((ValueError, FloatingPointError), match=message):
        call()


def _calibrate(**options):
    from imaging.calibration import calibrate, pgd

    A = torch.randn(6, 8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return calibrate(torch.einsum("lmn,n->lm", A, torch.rand(5, dtype=torch.float64) + 0.5), A, pgd, **options)


def _patches(**options):
    from imaging.priors import pretrained_lpn
    from imaging.priors.lpn import prox_in_patches

    return prox_in_patches(pretrained_lpn("digits"), torch.rand(1, 1, 16, 16), **options)


def test_pnp_says_when_its_first_step_overflows():
    from imaging.operators import Blur

    B = Blur(gaussian_kernel(1.0, dtype=torch.float32))
    y = B(torch.rand(1, 1, 16, 16)) + 0.01
    for solver in (PnPPGD(1e10 * B, 1e10 * y, lambda v: v), PnPADMM(1e10 * B, 1e10 * y, lambda v: v, rho=1.0)):
        with pytest.raises(FloatingPointError, match="overflow.*torch.float32.*rescale A"):
            solver.run()


META = torch.zeros(1, 1, 8, 8, dtype=torch.float64, device="meta")


@pytest.mark.parametrize("who, arg, call", [
    ("tv_prox", "y", lambda: imaging.ops.tv_prox(META, 0.1)),
    ("least_squares", "y", lambda: least_squares(Identity(), META, 0.1)),
    ("FISTA", "y", lambda: FISTA(Identity(), META, 0.1)),
    ("foe_grad", "x", lambda: imaging.ops.foe_grad(META, torch.ones(2, 3, 3, dtype=torch.float64, device="meta"),
                                                   torch.ones(2, dtype=torch.float64, device="meta"),
                                                   torch.ones(2, dtype=torch.float64, device="meta"))),
    ("DenseGainSensing", "A", lambda: DenseGainSensing(torch.zeros(3, 4, 5, dtype=torch.float64, device="meta"))),
], ids=["tv_prox", "least_squares", "FISTA", "foe_grad", "DenseGainSensing"])
def test_meta_tensors_are_refused_where_values_are_read(who, arg, call):
    """A meta tensor (shape only) used to fail inside with "Tensor.item() cannot be called on meta tensors"."""
    with pytest.raises(ValueError, match=f"{who}: argument '{arg}' is a meta tensor"):
        call()


def test_field_of_experts_random_sizes_are_checked():
    with pytest.raises(ValueError, match="'count'"):
        imaging.priors.FieldOfExperts.random(count=2 ** 70)
    with pytest.raises(ValueError, match="'size'"):
        imaging.priors.FieldOfExperts.random(size=0)
