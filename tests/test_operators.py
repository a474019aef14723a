"""The generic battery, run on every operator in tests/zoo.py."""
import copy

import pytest
import torch

from imaging.testing import adjoint_vs_autograd, check_linear, dot_test, random_like
from zoo import ZOO, devices

NAMES = sorted(ZOO)


@pytest.fixture(params=NAMES)
def case(request):
    entry = ZOO[request.param]
    return entry.make(), entry.sample(), entry


def test_dot_test_float64(case):
    op, x, _ = case
    assert dot_test(op, x) < 1e-10
    assert dot_test(op, x, seed=7) < 1e-10


def test_adjoint_as_operator(case):
    op, x, _ = case
    y = op(x)
    assert dot_test(op.H, y) < 1e-10
    assert torch.allclose(op.H.H(x), y)


def test_linearity(case):
    op, x, _ = case
    assert check_linear(op, x) < 1e-12
    if x.is_complex():
        assert check_linear(op, x, a=0.3 + 1.1j, b=-0.5j) < 1e-12


def test_explicit_adjoint_equals_autograd(case):
    op, x, _ = case
    assert adjoint_vs_autograd(op, x) < 1e-10


def test_batch_equals_stacking(case):
    op, x, _ = case
    y = op(x)
    stacked = torch.cat([op(x[i:i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(y, stacked, rtol=1e-12, atol=1e-12)
    v = random_like(y, 3)
    stacked_adjoint = torch.cat([op.adjoint(v[i:i + 1]) for i in range(v.shape[0])])
    torch.testing.assert_close(op.adjoint(v), stacked_adjoint, rtol=1e-12, atol=1e-12)


def test_float32_matches_float64(case):
    op, x, _ = case
    low = x.to(torch.complex64 if x.is_complex() else torch.float32)
    y32, y64 = op(low), op(x)
    assert y32.dtype in (torch.float32, torch.complex64)
    scale = y64.abs().max()
    assert (y32.to(y64.dtype) - y64).abs().max() <= 1e-5 * scale


def test_normal_and_norm(case):
    op, x, _ = case
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)), rtol=1e-10, atol=1e-10)
    norm = op.norm(x)
    v = random_like(x, 5)
    assert torch.linalg.vector_norm(op(v)) <= norm * torch.linalg.vector_norm(v) * (1 + 1e-6)
    assert op.norm(x) == norm  # cached


@pytest.mark.parametrize("device", devices())
def test_device_round_trip(case, device):
    op, x, entry = case
    expected = op(x)
    moved = copy.deepcopy(op).to(device)
    torch.testing.assert_close(moved(x.to(device)).cpu(), expected, rtol=1e-10, atol=1e-10)
    back = moved.to("cpu")
    torch.testing.assert_close(back(x), expected, rtol=1e-12, atol=1e-12)
    fresh = entry.make()
    fresh.load_state_dict(op.state_dict())
    torch.testing.assert_close(fresh(x), expected)


def test_input_on_other_device_is_rejected(case):
    op, x, _ = case
    if next(iter(list(op.buffers()) + list(op.parameters())), None) is None:
        pytest.skip("operator holds no tensors: it runs wherever its input is")
    with pytest.raises(ValueError, match="is on meta"):
        op(x.to("meta"))


def test_bad_dtype_and_shape(case):
    op, x, entry = case
    with pytest.raises(TypeError, match="floating or complex"):
        op(torch.ones(x.shape, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        op(x.numpy())
    with pytest.raises(ValueError, match="non-empty"):
        op(x[:0])
    if entry.wrong_shape is not None:
        with pytest.raises((ValueError, RuntimeError)):
            op(torch.zeros(entry.wrong_shape, dtype=x.dtype))


def test_reprs_show_the_operator_parameters():
    from imaging.operators import Blur, CompressedSensing, Downsampling, GaussianNoise, gaussian_kernel

    assert repr(Blur(gaussian_kernel(1.0), mode="reflect")) == "Blur(kernel=tensor(1, 7, 7, float64), mode='reflect')"
    assert "factor=2, filter='box', mode='reflect'" in repr(Downsampling(2, "box"))
    assert repr(CompressedSensing(10, (1, 4, 4), seed=3)) == "CompressedSensing(m=10, in_shape=(1, 4, 4), seed=3)"
    assert repr(GaussianNoise(0.05)) == "GaussianNoise(sigma=0.05)"
    with pytest.raises(ValueError, match="'sigma' must be a finite number >= 0, got nan"):
        GaussianNoise(float("nan"))


def test_a_stale_remembered_input_shape_is_an_error_not_a_wrong_size_answer():
    """2× down-sampling maps 64² and 63² images to 32²: after both, the input shape of a 32² y is ambiguous (it was
    silently the last one seen); a declared in_shape settles it, for built-in and custom operators alike."""
    from imaging.operators import Downsampling, LinearOperator
    from imaging.solvers import least_squares

    A = Downsampling(2)
    y = A(torch.rand(1, 1, 64, 64, dtype=torch.float64))
    A(torch.rand(1, 1, 63, 63, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(1, 64, 64\) and \(1, 63, 63\) both give outputs of shape \(1, 32, 32\)"):
        least_squares(A, y, lam=0.1)
    A.in_shape = (1, 64, 64)
    assert least_squares(A, y, lam=0.1).x.shape == (1, 1, 64, 64)

    class Crop(LinearOperator):  # forward only: the adjoint comes from autograd
        def __init__(self):
            super().__init__(in_shape=(1, 6, 6))

        def forward(self, x):
            return x[..., 1:5, 1:5]

    crop = Crop()  # never applied: the declared shape is enough for the adjoint
    assert crop.adjoint(torch.ones(2, 1, 4, 4)).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="'in_shape' must be a tuple of positive integers"):
        LinearOperator(in_shape=(0, 4))
