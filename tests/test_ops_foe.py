"""imaging::foe_energy / foe_grad / foe_hvp: kernels vs conv2d references, autograd, opcheck, errors, CUDA."""
import pytest
import torch

from conftest import requires_cuda, requires_ext
from imaging.ops import foe as F

CASES = [((2, 3, 17, 23), (5, 5, 3)), ((1, 1, 32, 32), (8, 7, 7)), ((3, 1, 9, 6), (4, 3, 5))]


def make(shape, filter_shape, dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    v = torch.randn(shape, generator=gen, dtype=dtype)
    filters = torch.randn(filter_shape, generator=gen, dtype=dtype) / filter_shape[1]
    weights = torch.rand(filter_shape[0], generator=gen, dtype=dtype) + 0.1
    nu = torch.rand(filter_shape[0], generator=gen, dtype=dtype) + 0.1
    return [t.to(device) for t in (x, v, filters, weights, nu)]


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


@requires_ext
@pytest.mark.parametrize("shape, filter_shape", CASES)
@pytest.mark.parametrize("potential", F.POTENTIALS)
@pytest.mark.parametrize("padding", F.PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernels_match_conv2d_references(shape, filter_shape, potential, padding, dtype):
    x, v, k, a, nu = make(shape, filter_shape, dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert relative(F.foe_energy(x, k, a, nu, potential, padding),
                    F._foe_energy_torch(x, k, a, nu, potential, padding)) < tol
    assert relative(F.foe_grad(x, k, a, nu, potential, padding),
                    F._foe_grad_torch(x, k, a, nu, potential, padding)) < tol
    assert relative(F.foe_hvp(x, v, k, a, nu, potential, padding),
                    F._foe_hvp_torch(x, v, k, a, nu, potential, padding)) < tol


def test_reference_gradient_is_the_energy_derivative():
    x, v, k, a, nu = make((1, 1, 12, 10), (3, 3, 3))
    eps = 1e-6
    for potential in F.POTENTIALS:
        slope = (F._foe_energy_torch(x + eps * v, k, a, nu, potential).sum()
                 - F._foe_energy_torch(x - eps * v, k, a, nu, potential).sum()) / (2 * eps)
        assert torch.allclose(slope, (F._foe_grad_torch(x, k, a, nu, potential) * v).sum(), rtol=1e-7)


@requires_ext
def test_threads_give_identical_results(threads):
    x, v, k, a, nu = make((1, 1, 64, 64), (8, 5, 5), torch.float32)
    two = [F.foe_energy(x, k, a, nu), F.foe_grad(x, k, a, nu), F.foe_hvp(x, v, k, a, nu)]
    torch.set_num_threads(1)
    one = [F.foe_energy(x, k, a, nu), F.foe_grad(x, k, a, nu), F.foe_hvp(x, v, k, a, nu)]
    assert all(torch.equal(p, q) for p, q in zip(one, two))


@requires_ext
@pytest.mark.parametrize("potential", F.POTENTIALS)
@pytest.mark.parametrize("padding", F.PADDINGS)
def test_gradcheck_in_image_and_parameters(potential, padding):
    x, v, k, a, nu = make((1, 2, 6, 5), (2, 3, 3))
    for t in (x, v, k, a, nu):
        t.requires_grad_()
    energy = lambda x, k, a, nu: F.foe_energy(x, k, a, nu, potential, padding)  # noqa: E731
    grad = lambda x, k, a, nu: F.foe_grad(x, k, a, nu, potential, padding)  # noqa: E731
    hvp = lambda x, v, k, a, nu: F.foe_hvp(x, v, k, a, nu, potential, padding)  # noqa: E731
    assert torch.autograd.gradcheck(energy, (x, k, a, nu))
    assert torch.autograd.gradcheck(grad, (x, k, a, nu))  # the Jacobian-transpose products bilevel learning needs
    assert torch.autograd.gradcheck(hvp, (x, v, k, a, nu))
    assert torch.autograd.gradgradcheck(energy, (x, k, a, nu))


@requires_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck(dtype):
    x, v, k, a, nu = make((2, 1, 8, 7), (3, 3, 5), dtype)
    for options in (("abs", "reflect"), ("student", "zero")):
        torch.library.opcheck(torch.ops.imaging.foe_energy.default, (x, k, a, nu, *options))
        torch.library.opcheck(torch.ops.imaging.foe_grad.default, (x, k, a, nu, *options))
        torch.library.opcheck(torch.ops.imaging.foe_hvp.default, (x, v, k, a, nu, *options))
    if dtype == torch.float64:
        torch.library.opcheck(torch.ops.imaging.foe_grad.default,
                              (x.requires_grad_(), k.requires_grad_(), a, nu, "abs", "reflect"))


@pytest.mark.parametrize("change, error, message", [
    (lambda t: {**t, "filters": t["filters"][:, :4]}, ValueError, "odd kh and kw"),
    (lambda t: {**t, "filters": t["filters"][0]}, ValueError, "shape \\(K, kh, kw\\)"),
    (lambda t: {**t, "nu": -t["nu"]}, ValueError, "'nu' must be positive"),
    (lambda t: {**t, "nu": t["nu"][:2]}, ValueError, "'nu' must have shape"),
    (lambda t: {**t, "weights": t["weights"].float()}, TypeError, "dtype"),
    (lambda t: {**t, "x": t["x"].masked_fill(t["x"] > 2, float("nan"))}, ValueError, "non-finite"),
    (lambda t: {**t, "x": t["x"][0]}, ValueError, "\\(N, C, H, W\\)"),
    (lambda t: {**t, "potential": "huber"}, ValueError, "'potential'"),
    (lambda t: {**t, "padding": "circular"}, ValueError, "'padding'"),
    (lambda t: {**t, "x": t["x"][..., :2, :2]}, ValueError, "reflect padding"),
])
def test_bad_input_is_reported(change, error, message):
    x, _, k, a, nu = make((1, 1, 8, 8), (3, 5, 5))
    args = change({"x": x, "filters": k, "weights": a, "nu": nu, "potential": "abs", "padding": "reflect"})
    with pytest.raises(error, match=message):
        F.foe_grad(**args)


@requires_ext
def test_kernel_checks_without_the_python_wrapper():
    x, _, k, a, nu = make((1, 1, 8, 8), (3, 5, 5))
    with pytest.raises(RuntimeError, match="odd kh and kw"):
        torch.ops.imaging.foe_grad(x, k[:, :4].contiguous(), a, nu, "abs", "reflect")
    with pytest.raises(RuntimeError, match="'potential'"):
        torch.ops.imaging.foe_energy(x, k, a, nu, "huber", "reflect")
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.imaging.foe_hvp(x, x.float(), k, a, nu, "abs", "reflect")


@requires_cuda
@pytest.mark.parametrize("shape, filter_shape", CASES + [((2, 1, 130, 67), (24, 7, 7))])
@pytest.mark.parametrize("potential", F.POTENTIALS)
@pytest.mark.parametrize("padding", F.PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(shape, filter_shape, potential, padding, dtype):
    cpu = make(shape, filter_shape, dtype)
    x, v, k, a, nu = [t.cuda() for t in cpu]
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    pairs = [(F.foe_energy(x, k, a, nu, potential, padding), F.foe_energy(cpu[0], *cpu[2:], potential, padding)),
             (F.foe_grad(x, k, a, nu, potential, padding), F.foe_grad(cpu[0], *cpu[2:], potential, padding)),
             (F.foe_hvp(x, v, k, a, nu, potential, padding), F.foe_hvp(*cpu, potential, padding))]
    for got, want in pairs:
        assert relative(got.cpu(), want) < tol


@requires_cuda
def test_cuda_large_filter_banks_are_processed_in_plane_groups():
    cpu = make((3, 1, 520, 520), (256, 3, 3), torch.float32)  # K·H·W > 2^26: one plane per workspace group
    x, v, k, a, nu = [t.cuda() for t in cpu]
    assert relative(F.foe_grad(x, k, a, nu).cpu(), F.foe_grad(cpu[0], *cpu[2:])) < 1e-4
    assert relative(F.foe_hvp(x, v, k, a, nu).cpu(), F.foe_hvp(*cpu)) < 1e-4
    assert torch.equal(F.foe_grad(x, k, a, nu), F.foe_grad(x, k, a, nu))  # deterministic


@requires_cuda
def test_cuda_opcheck_and_gradcheck():
    x, v, k, a, nu = make((1, 2, 6, 5), (2, 3, 3), device="cuda")
    torch.library.opcheck(torch.ops.imaging.foe_grad.default, (x, k, a, nu, "abs", "reflect"))
    torch.library.opcheck(torch.ops.imaging.foe_hvp.default, (x, v, k, a, nu, "student", "zero"))
    x.requires_grad_(), k.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k: F.foe_grad(x, k, a, nu), (x, k))
