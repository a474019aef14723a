"""imaging::finite_diff / imaging::finite_diff_adjoint: kernel vs reference, autograd, opcheck, errors, CUDA."""
import pytest
import torch

from conftest import requires_cuda, requires_ext
from imaging.ops import divergence, finite_diff, finite_diff_adjoint
from imaging.ops.finite_diff import _finite_diff_adjoint_torch, _finite_diff_torch

SHAPES = [(2, 3, 7, 9), (1, 1, 1, 1), (1, 2, 1, 5), (2, 1, 6, 1), (1, 1, 4, 5, 6), (2, 2, 1, 3, 1), (1, 1, 3, 1, 2)]


def _field_shape(shape):
    return shape[:2] + (len(shape) - 2,) + shape[2:]


def _sample(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_is_adjoint_pair(shape):
    x, g = _sample(shape), _sample(_field_shape(shape), seed=1)
    lhs = (_finite_diff_torch(x) * g).sum()
    rhs = (x * _finite_diff_adjoint_torch(g)).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_reference_values_2d():
    x = torch.tensor([[1.0, 2.0, 4.0], [0.0, 5.0, 5.0]], dtype=torch.float64)[None, None]
    d = _finite_diff_torch(x)[0, 0]
    torch.testing.assert_close(d[0], torch.tensor([[-1.0, 3.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(d[1], torch.tensor([[1.0, 2.0, 0.0], [5.0, 0.0, 0.0]], dtype=torch.float64))


def test_divergence_is_minus_adjoint():
    g = _sample((1, 2, 2, 5, 4))
    torch.testing.assert_close(divergence(g), -finite_diff_adjoint(g))


def test_complex_input_uses_reference():
    x = torch.randn(1, 1, 5, 6, dtype=torch.complex128)
    torch.testing.assert_close(finite_diff(x), _finite_diff_torch(x))


@requires_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_matches_reference(shape, dtype):
    x, g = _sample(shape, dtype), _sample(_field_shape(shape), dtype, seed=1)
    tol = 0 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(torch.ops.imaging.finite_diff(x), _finite_diff_torch(x), rtol=tol, atol=tol)
    torch.testing.assert_close(torch.ops.imaging.finite_diff_adjoint(g), _finite_diff_adjoint_torch(g),
                               rtol=tol, atol=tol if dtype == torch.float32 else 1e-14)


@requires_ext
def test_kernel_large_threaded(threads):
    x = _sample((3, 2, 130, 257))
    torch.testing.assert_close(finite_diff(x), _finite_diff_torch(x), rtol=0, atol=0)
    v = _sample((2, 1, 17, 33, 65))
    g = finite_diff(v)
    torch.testing.assert_close(finite_diff_adjoint(g), _finite_diff_adjoint_torch(g), rtol=0, atol=1e-13)


@requires_ext
@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 1, 2, 3, 3)])
def test_gradcheck(shape):
    x = _sample(shape).requires_grad_()
    g = _sample(_field_shape(shape), seed=1).requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.imaging.finite_diff, (x,))
    assert torch.autograd.gradcheck(torch.ops.imaging.finite_diff_adjoint, (g,))
    assert torch.autograd.gradgradcheck(torch.ops.imaging.finite_diff, (x,))


@requires_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(shape, dtype, requires_grad):
    x = _sample(shape, dtype).requires_grad_(requires_grad)
    g = _sample(_field_shape(shape), dtype, seed=1).requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.imaging.finite_diff.default, (x,))
    torch.library.opcheck(torch.ops.imaging.finite_diff_adjoint.default, (g,))


@requires_ext
def test_public_function_takes_noncontiguous_input():
    x = _sample((1, 1, 6, 8)).transpose(-1, -2)
    torch.testing.assert_close(finite_diff(x), _finite_diff_torch(x.contiguous()), rtol=0, atol=0)


@requires_ext
@pytest.mark.parametrize("make, message", [
    (lambda: _sample((1, 1, 6, 8)).transpose(-1, -2), "must be contiguous"),
    (lambda: torch.zeros(0, 1, 4, 4), "must be non-empty"),
    (lambda: torch.zeros(1, 1, 4, 4, dtype=torch.int32), "must be float32 or float64"),
    (lambda: torch.zeros(1, 1, 4, 4, dtype=torch.float16), "must be float32 or float64"),
    (lambda: torch.zeros(4, 4), r"must have shape \(N, C, H, W\)"),
])
def test_kernel_rejects_bad_input(make, message):
    with pytest.raises(RuntimeError, match=r"imaging::finite_diff: argument 'x' " + message):
        torch.ops.imaging.finite_diff(make())


@requires_ext
def test_adjoint_kernel_rejects_wrong_direction_count():
    with pytest.raises(RuntimeError, match="must have 2 difference directions"):
        torch.ops.imaging.finite_diff_adjoint(torch.zeros(1, 1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="imaging::finite_diff_adjoint: argument 'g' must be contiguous"):
        torch.ops.imaging.finite_diff_adjoint(torch.zeros(1, 1, 4, 4, 2).transpose(-1, -3))


@pytest.mark.parametrize("bad, error", [
    (torch.zeros(4, 4), ValueError), (torch.zeros(1, 1, 4, 4, dtype=torch.int64), TypeError),
    (torch.zeros(1, 0, 4, 4), ValueError), ([[1.0]], TypeError),
])
def test_public_function_errors(bad, error):
    with pytest.raises(error, match="finite_diff: argument 'x'"):
        finite_diff(bad)


def test_public_adjoint_errors():
    with pytest.raises(ValueError, match="must hold 2 difference directions"):
        finite_diff_adjoint(torch.zeros(1, 1, 3, 4, 4))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("shape", SHAPES + [(4, 3, 257, 129), (1, 2, 33, 65, 17)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(shape, dtype):
    x, g = _sample(shape, dtype), _sample(_field_shape(shape), dtype, seed=1)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(torch.ops.imaging.finite_diff(x.cuda()).cpu(), finite_diff(x), rtol=tol, atol=tol)
    torch.testing.assert_close(torch.ops.imaging.finite_diff_adjoint(g.cuda()).cpu(), finite_diff_adjoint(g),
                               rtol=tol, atol=tol)
    torch.library.opcheck(torch.ops.imaging.finite_diff.default, (x.cuda().requires_grad_(),))
    torch.library.opcheck(torch.ops.imaging.finite_diff_adjoint.default, (g.cuda().requires_grad_(),))


@requires_cuda
@pytest.mark.cuda
def test_cuda_gradcheck():
    x = _sample((1, 2, 3, 4)).cuda().requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.imaging.finite_diff, (x,))
