"""The entry points users rely on: a LinearOperator written as `forward` only, and a nonlinear Operator."""
import pytest
import torch
import torch.nn.functional as F

import imaging
from imaging.operators import Blur, Inpainting, LinearOperator, Operator, gaussian_kernel
from imaging.testing import check_linear, dot_test


class MyOp(LinearOperator):
    def forward(self, x):
        return F.avg_pool2d(x, 2) - 0.5 * torch.flip(F.avg_pool2d(x, 2), dims=[-1])


class Shift(LinearOperator):
    def forward(self, x):
        return torch.roll(x, 2, -1) + 1j * x


class Square(Operator):
    def forward(self, x):
        return x ** 2


def test_forward_only_operator_has_exact_adjoint():
    x = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    op = MyOp()
    y = op(x)
    assert op.adjoint(y).shape == x.shape
    assert op.H(y).shape == x.shape
    assert imaging.testing.dot_test(op, x) < 1e-12
    assert check_linear(op, x) < 1e-12


def test_composition_with_library_operators():
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    op = MyOp() @ Blur(gaussian_kernel(1.0)) @ Inpainting.random((16, 16), 0.7)
    assert dot_test(op, x) < 1e-12
    mine = MyOp()
    assert dot_test(Blur(gaussian_kernel(1.0)) @ mine.H, mine(x)) < 1e-12


def test_shape_preserving_operator_needs_no_prior_call():
    y = torch.randn(2, 1, 5, 6, dtype=torch.complex128)
    assert Shift().adjoint(y).shape == y.shape
    assert dot_test(Shift(), y) < 1e-12


def test_unknown_input_shape_gives_clear_error():
    with pytest.raises(ValueError, match=r"MyOp.adjoint: cannot tell the input shape .* apply the operator once"):
        MyOp().adjoint(torch.randn(1, 1, 4, 4))


def test_adjoint_of_wrong_shape_is_rejected():
    op = MyOp()
    op(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="cannot tell the input shape"):
        op.adjoint(torch.zeros(1, 1, 3, 3))


def test_non_differentiable_forward_gives_clear_error():
    class NumpyOp(LinearOperator):
        def forward(self, x):
            return torch.from_numpy(x.detach().numpy() * 2)

    with pytest.raises(RuntimeError, match="NumpyOp.adjoint: forward is not differentiable"):
        NumpyOp().adjoint(torch.ones(1, 3))


def test_derived_adjoint_is_differentiable_in_y():
    op = MyOp()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    y = op(x).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: op.adjoint(v), (y,))


def test_least_squares_through_custom_operator():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    op = MyOp() @ Blur(gaussian_kernel(0.8))
    y = op(x)
    result = imaging.least_squares(op, y, lam=1e-4, regulariser=imaging.operators.FiniteDifference(), max_iter=300)
    assert torch.linalg.vector_norm(op(result.x) - y) < 1e-2 * torch.linalg.vector_norm(y)


def test_nonlinear_operator_vjp_jvp_and_algebra():
    x = torch.randn(2, 3, dtype=torch.float64)
    v = torch.randn(2, 3, dtype=torch.float64)
    op = Square()
    torch.testing.assert_close(op.vjp(x, v), 2 * x * v)
    torch.testing.assert_close(op.jvp(x, v), 2 * x * v)
    composed = Square() @ MyOp()
    assert isinstance(composed, Operator) and not isinstance(composed, LinearOperator)
    assert not isinstance(Square() + Square(), LinearOperator)
    torch.testing.assert_close((3 * Square())(x), 3 * x ** 2)
    assert isinstance(MyOp() - MyOp(), LinearOperator)
