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
