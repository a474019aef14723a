"""imaging::tv, tv_grad, tv_hvp, tv_prox: kernels vs references, autograd, opcheck, the prox's certificate."""
import numpy as np
import pytest
import torch

from conftest import requires_cuda, requires_ext
from imaging.ops.tv import (_tv_grad_torch, _tv_hvp_torch, _tv_prox_torch, _tv_torch, plane_weights, tv, tv_grad,
                            tv_hvp, tv_prox)

SHAPES = [(2, 3, 7, 9), (1, 2, 4, 5, 6), (1, 1, 1, 5), (2, 1, 6, 1), (1, 1, 3, 1, 4)]


def _sample(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@requires_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_value_grad_hvp_match_reference(shape, isotropic, eps, dtype):
    x, v = _sample(shape, dtype), _sample(shape, dtype, seed=1)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.ops.imaging.tv(x, eps, isotropic), _tv_torch(x, eps, isotropic), **tol)
    torch.testing.assert_close(torch.ops.imaging.tv_grad(x, eps, isotropic), _tv_grad_torch(x, eps, isotropic), **tol)
    hvp_tol = tol if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(torch.ops.imaging.tv_hvp(x, v, 0.05, isotropic), _tv_hvp_torch(x, v, 0.05, isotropic),
                               **hvp_tol)


@pytest.mark.parametrize("isotropic", [True, False])
def test_reference_gradient_and_hvp_are_derivatives(isotropic):
    x = _sample((1, 2, 4, 5)).requires_grad_()
    v = _sample((1, 2, 4, 5), seed=1)
    (g,) = torch.autograd.grad(_tv_torch(x, 0.1, isotropic).sum(), x, create_graph=True)
    torch.testing.assert_close(g, _tv_grad_torch(x, 0.1, isotropic))
    (h,) = torch.autograd.grad(g, x, v)
    torch.testing.assert_close(h, _tv_hvp_torch(x.detach(), v, 0.1, isotropic))


@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (1, 1, 2, 3, 3)])
def test_gradcheck_smoothed_tv(isotropic, shape):
    x = _sample(shape).requires_grad_()
    v = _sample(shape, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: tv(t, 0.1, isotropic), (x,))
    assert torch.autograd.gradgradcheck(lambda t: tv(t, 0.1, isotropic), (x,))
    assert torch.autograd.gradcheck(lambda t: tv_grad(t, 0.1, isotropic), (x,))
    assert torch.autograd.gradcheck(lambda a, b: tv_hvp(a, b, 0.1, isotropic), (x, v))


@requires_ext
def test_plain_tv_is_not_twice_differentiable():
    x = _sample((1, 1, 3, 3)).requires_grad_()
    (g,) = torch.autograd.grad(tv(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        g.sum().backward()


@requires_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("isotropic", [True, False])
def test_opcheck(shape, isotropic):
    for requires_grad in (False, True):
        x = _sample(shape).requires_grad_(requires_grad)
        v = _sample(shape, seed=1).requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.imaging.tv.default, (x, 0.1, isotropic))
        torch.library.opcheck(torch.ops.imaging.tv_grad.default, (x, 0.1, isotropic))
        torch.library.opcheck(torch.ops.imaging.tv_hvp.default, (x, v, 0.1, isotropic))
    y = _sample(shape)
    lam = torch.full(shape[:2], 0.3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.imaging.tv_prox.default, (y, lam, isotropic, 1e-3, 50, None, None, None))
    torch.library.opcheck(torch.ops.imaging.tv_prox.default, (y, lam, isotropic, 1e-3, 50, 0.0, 1.0, None))


# --- the prox ------------------------------------------------------------------------------------------------------
def _objective(x, y, lam, isotropic):
    lam = plane_weights(lam, y)
    return (0.5 * (x - y).pow(2).flatten(2).sum(2) + lam * _tv_torch(x, 0.0, isotropic)).double()


@pytest.fixture(scope="module")
def noisy():
    gen = torch.Generator().manual_seed(0)
    clean = torch.zeros(2, 2, 24, 20, dtype=torch.float64)
    clean[..., 6:18, 5:15] = 1.0
    clean[:, 1] *= 0.5
    return clean + 0.2 * torch.randn(clean.shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_prox_reaches_gap_and_matches_tight_minimiser(noisy, isotropic, tol):
    lam = 0.3
    x, p, gap, iterations = tv_prox(noisy, lam, isotropic=isotropic, tol=tol, max_iter=20000)
    reference = tv_prox(noisy, lam, isotropic=isotropic, tol=1e-11, max_iter=200000)[0]
    assert gap.max() <= tol and 0 < iterations < 20000
    p_x, p_star = _objective(x, noisy, lam, isotropic), _objective(reference, noisy, lam, isotropic)
    assert ((p_x - p_star) / p_star).max() <= tol  # the gap certifies the objective error
    assert (p_x >= p_star - 1e-9 * p_star).all()


@pytest.mark.parametrize("isotropic", [True, False])
def test_prox_3d(isotropic):
    gen = torch.Generator().manual_seed(1)
    vol = torch.zeros(1, 1, 8, 9, 10, dtype=torch.float64)
    vol[..., 2:6, 3:7, 2:8] = 1
    y = vol + 0.2 * torch.randn(vol.shape, generator=gen, dtype=torch.float64)
    x, _, gap, _ = tv_prox(y, 0.2, isotropic=isotropic, tol=1e-6, max_iter=20000)
    reference = tv_prox(y, 0.2, isotropic=isotropic, tol=1e-11, max_iter=200000)[0]
    assert gap.max() <= 1e-6
    p_x, p_star = _objective(x, y, 0.2, isotropic), _objective(reference, y, 0.2, isotropic)
    assert ((p_x - p_star) / p_star).max() <= 1e-6


@pytest.mark.parametrize("isotropic", [True, False])
def test_prox_matches_brute_force_on_tiny_input(isotropic):
    """Solve the dual min_p ½‖y − Dᵀp‖² s.t. |p| ≤ λ with scipy (SLSQP) and compare x = y − Dᵀp."""
    from scipy.optimize import minimize

    from imaging.ops.finite_diff import _finite_diff_adjoint_torch, _finite_diff_torch

    y = _sample((1, 1, 3, 4), seed=3)
    lam = 0.4
    field_shape = (1, 1, 2, 3, 4)
    n = 2 * 12

    def primal_of(p_flat):
        return y - _finite_diff_adjoint_torch(torch.from_numpy(p_flat).reshape(field_shape))

    def dual_objective(p_flat):
        return 0.5 * float(primal_of(p_flat).pow(2).sum())

    if isotropic:
        constraints = [{"type": "ineq", "fun": lambda p: lam ** 2 - (p.reshape(2, 12) ** 2).sum(0)}]
        solution = minimize(dual_objective, np.zeros(n), constraints=constraints, method="SLSQP",
                            options={"ftol": 1e-14, "maxiter": 2000})
    else:
        solution = minimize(dual_objective, np.zeros(n), bounds=[(-lam, lam)] * n, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    brute = primal_of(solution.x)
    x = tv_prox(y, lam, isotropic=isotropic, tol=1e-12, max_iter=100000)[0]
    torch.testing.assert_close(x, brute, rtol=0, atol=2e-5)
    assert _objective(x, y, lam, isotropic) <= _objective(brute, y, lam, isotropic) + 1e-10
    assert _finite_diff_torch(x).abs().sum() > 0


@requires_ext
@pytest.mark.parametrize("lower, upper", [(None, None), (0.0, 1.0), (0.2, None)])
def test_kernel_matches_torch_reference(noisy, lower, upper):
    lam = plane_weights(torch.tensor([0.1, 0.4]), noisy)
    out = torch.ops.imaging.tv_prox(noisy, lam, True, 1e-5, 3000, lower, upper, None)
    ref = _tv_prox_torch(noisy, lam, True, 1e-5, 3000, lower, upper)
    assert int(out[3]) == int(ref[3])
    torch.testing.assert_close(out[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[2], ref[2], rtol=1e-6, atol=1e-12)


@requires_ext
def test_kernel_is_deterministic_across_thread_counts(noisy):
    y = noisy.repeat(1, 1, 8, 8).float()  # 192 x 160: enough rows to split between threads
    lam = plane_weights(0.2, y)
    one = torch.ops.imaging.tv_prox(y, lam, True, 1e-5, 500, None, None, None)
    torch.set_num_threads(2)
    two = torch.ops.imaging.tv_prox(y, lam, True, 1e-5, 500, None, None, None)
    assert int(one[3]) == int(two[3])
    torch.testing.assert_close(one[0], two[0], rtol=0, atol=0)
    torch.testing.assert_close(tv_grad(y, 0.1), _tv_grad_torch(y, 0.1), rtol=1e-5, atol=1e-5)


def test_box_constraint(noisy):
    x, _, gap, _ = tv_prox(noisy, 0.3, tol=1e-6, max_iter=20000, lower=0.0, upper=1.0)
    assert x.min() >= 0 and x.max() <= 1 and gap.max() <= 1e-6
    free = tv_prox(noisy, 0.3, tol=1e-9, max_iter=50000)[0]
    assert free.min() < 0  # the box is active here
    # the boxed solution minimises the objective over the box (to its certified gap): no worse than the clamped
    # free solution, which is feasible
    clamped = _objective(free.clamp(0, 1), noisy, 0.3, True)
    assert (_objective(x, noisy, 0.3, True) <= clamped * (1 + 1e-6)).all()


def test_per_sample_and_per_channel_weights(noisy):
    lam = torch.tensor([[0.1, 0.5], [0.3, 0.0]], dtype=torch.float64)
    # planes are independent problems; each is solved to relative gap 1e-10, so ‖x − x*‖ ≤ sqrt(2·gap) ≈ 5e-5
    x, _, gap, _ = tv_prox(noisy, lam, tol=1e-10, max_iter=100000)
    for n in range(2):
        for c in range(2):
            single = tv_prox(noisy[n:n + 1, c:c + 1], float(lam[n, c]), tol=1e-10, max_iter=100000)[0]
            torch.testing.assert_close(x[n:n + 1, c:c + 1], single, rtol=0, atol=1e-4)
    torch.testing.assert_close(x[1, 1], noisy[1, 1])  # λ = 0 leaves the plane unchanged
    per_sample = tv_prox(noisy, torch.tensor([0.1, 0.3]), tol=1e-10, max_iter=100000)[0]
    single = tv_prox(noisy[1:], 0.3, tol=1e-10, max_iter=100000)[0]
    torch.testing.assert_close(per_sample[1:], single, atol=1e-4, rtol=0)


def test_warm_start(noisy):
    x, p, _, iterations = tv_prox(noisy, 0.3, tol=1e-6, max_iter=20000)
    x2, _, gap, warm_iterations = tv_prox(noisy, 0.3, tol=1e-6, max_iter=20000, p0=p)
    assert int(warm_iterations) < int(iterations) / 4 and gap.max() <= 1e-6
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-3)


def test_zero_tolerance_runs_exactly_max_iter(noisy):
    x, _, gap, iterations = tv_prox(noisy, 0.3, tol=0.0, max_iter=37)
    assert int(iterations) == 37 and gap.max() > 0
    ref = _tv_prox_torch(noisy, plane_weights(0.3, noisy), True, 0.0, 37)
    torch.testing.assert_close(x, ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gap, ref[2], rtol=1e-6, atol=1e-12)
    assert int(tv_prox(noisy, 0.3, tol=0.0, max_iter=0)[3]) == 0


def test_float32_reaches_tolerance(noisy):
    x, _, gap, _ = tv_prox(noisy.float(), 0.3, tol=1e-4, max_iter=5000)
    assert x.dtype == torch.float32 and gap.max() <= 1e-4


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lam=-0.1), ValueError, "'lam' must be finite and >= 0"),
    (dict(lam=float("nan")), ValueError, "'lam' must be finite"),
    (dict(lam=torch.ones(3)), ValueError, "'lam' must be a number, a per-sample"),
    (dict(lam=0.1, tol=-1.0), ValueError, "'tol' and 'max_iter' must be >= 0"),
    (dict(lam=0.1, lower=1.0, upper=0.0), ValueError, "'lower'"),
    (dict(lam=0.1, p0=torch.zeros(1, 1, 2, 4, 4)), ValueError, "'p0' must have shape"),
])
def test_prox_bad_arguments(kwargs, error, match):
    y = torch.zeros(2, 2, 4, 4)
    with pytest.raises(error, match=match):
        tv_prox(y, **kwargs)


def test_prox_bad_inputs():
    with pytest.raises(ValueError, match="non-finite"):
        tv_prox(torch.full((1, 1, 3, 3), float("nan")), 0.1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\)"):
        tv_prox(torch.zeros(3, 3), 0.1)
    with pytest.raises(TypeError, match="must be real"):
        tv_prox(torch.zeros(1, 1, 3, 3, dtype=torch.complex64), 0.1)
    with pytest.raises(RuntimeError, match="not differentiable"):
        tv_prox(torch.zeros(1, 1, 3, 3, requires_grad=True), 0.1)
    with pytest.raises(ValueError, match="'eps' must be > 0"):
        tv_hvp(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), 0.0)


@requires_ext
def test_kernel_rejects_bad_arguments():
    y = torch.zeros(1, 2, 4, 4)
    with pytest.raises(RuntimeError, match=r"imaging::tv_prox: argument 'lam' must have shape \(N, C\)"):
        torch.ops.imaging.tv_prox(y, torch.zeros(2), True, 1e-4, 10, None, None, None)
    with pytest.raises(RuntimeError, match="'lam' must be finite and >= 0"):
        torch.ops.imaging.tv_prox(y, -torch.ones(1, 2), True, 1e-4, 10, None, None, None)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        torch.ops.imaging.tv(torch.zeros(1, 1, 4, 5).transpose(-1, -2), 0.0, True)
    with pytest.raises(RuntimeError, match="'eps' must be > 0"):
        torch.ops.imaging.tv_hvp(y, y, 0.0, True)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("shape", SHAPES + [(2, 3, 64, 96), (1, 1, 16, 32, 24)])
@pytest.mark.parametrize("isotropic", [True, False])
def test_cuda_matches_cpu(shape, isotropic):
    x, v = _sample(shape), _sample(shape, seed=1)
    for eps in (0.0, 0.05):
        torch.testing.assert_close(tv(x.cuda(), eps, isotropic).cpu(), tv(x, eps, isotropic))
        torch.testing.assert_close(tv_grad(x.cuda(), eps, isotropic).cpu(), tv_grad(x, eps, isotropic))
    torch.testing.assert_close(tv_hvp(x.cuda(), v.cuda(), 0.05, isotropic).cpu(), tv_hvp(x, v, 0.05, isotropic))
    lam = plane_weights(0.3, x)
    cpu = torch.ops.imaging.tv_prox(x, lam, isotropic, 1e-6, 2000, 0.0, None, None)
    gpu = torch.ops.imaging.tv_prox(x.cuda(), lam.cuda(), isotropic, 1e-6, 2000, 0.0, None, None)
    assert int(gpu[3]) == int(cpu[3])
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-8, atol=1e-8)
    torch.library.opcheck(torch.ops.imaging.tv_prox.default, (x.cuda(), lam.cuda(), isotropic, 1e-3, 50, None, None,
                                                               None))
    torch.library.opcheck(torch.ops.imaging.tv_grad.default, (x.cuda().requires_grad_(), 0.05, isotropic))


@requires_cuda
@pytest.mark.cuda
def test_cuda_handles_more_planes_than_a_grid_dimension():
    """The per-plane sums (value, prox duality gap) stride over planes: more than 65 535 planes (the limit of
    gridDim.y) give the CPU's answer instead of a launch failure."""
    x = _sample((70_000, 1, 3, 4))
    torch.testing.assert_close(tv(x.cuda(), 0.0, True).cpu(), tv(x, 0.0, True))
    cuda, cpu = tv_prox(x.cuda(), 0.1, tol=1e-6, max_iter=50), tv_prox(x, 0.1, tol=1e-6, max_iter=50)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0])
    assert int(cuda[3]) == int(cpu[3])
