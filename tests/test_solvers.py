"""CG and least squares against closed forms; the shared loop's stopping, history, NaN detection."""
import pytest
import torch

from imaging.operators import Blur, CompressedSensing, FiniteDifference, FunctionOperator, Identity, MRI, \
    cartesian_mask, gaussian_kernel
from imaging.solvers import CG, least_squares


def _dense(matrix: torch.Tensor) -> FunctionOperator:
    return FunctionOperator(lambda x: x @ matrix.T, lambda y: y @ matrix.conj())


def test_least_squares_matches_lstsq():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 15, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 40, generator=gen, dtype=torch.float64)
    result = least_squares(_dense(a), y, tol=1e-12, max_iter=200)
    expected = torch.linalg.lstsq(a, y.T).solution.T
    assert result.converged and result.iterations <= 30
    torch.testing.assert_close(result.x, expected, rtol=1e-9, atol=1e-9)
    residuals = result.history["residual"]
    assert len(residuals) == result.iterations and residuals[-1] <= 1e-12


def test_minimum_norm_solution_for_underdetermined():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(10, 30, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    x = least_squares(_dense(a), y, tol=1e-13, max_iter=100).x
    torch.testing.assert_close(x, (torch.linalg.pinv(a) @ y.T).T, rtol=1e-8, atol=1e-8)


def test_tikhonov_with_gradient_regulariser_closed_form():
    gen = torch.Generator().manual_seed(2)
    x_true = torch.randn(1, 1, 6, 5, generator=gen, dtype=torch.float64)
    blur = Blur(gaussian_kernel(1.0, size=3), mode="zeros")
    y = blur(x_true)
    lam = 0.1
    n = x_true.numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 6, 5)
    a = blur(basis).reshape(n, -1).T
    d = FiniteDifference()(basis).reshape(n, -1).T
    expected = torch.linalg.solve(a.T @ a + lam * d.T @ d, a.T @ y.flatten())
    result = least_squares(blur, y, lam=lam, regulariser=FiniteDifference(), tol=1e-12, max_iter=500)
    torch.testing.assert_close(result.x.flatten(), expected, rtol=1e-9, atol=1e-9)


def test_batch_samples_are_independent():
    op = CompressedSensing(50, (1, 8, 8), seed=3)
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    y[1] *= 1e3  # very different scales converge together since step sizes are per sample
    batched = least_squares(op, y, lam=0.01, tol=1e-11, max_iter=300).x
    single = least_squares(op, y[1:2], lam=0.01, tol=1e-11, max_iter=300).x
    torch.testing.assert_close(batched[1:2], single, rtol=1e-8, atol=1e-8)


def test_complex_mri_least_squares():
    op = MRI(cartesian_mask((16, 16), acceleration=2, seed=0))
    x_true = torch.randn(1, 1, 16, 16, dtype=torch.complex128, generator=torch.Generator().manual_seed(4))
    y = op(x_true)
    x = least_squares(op, y, tol=1e-12, max_iter=50).x
    torch.testing.assert_close(op(x), y, rtol=1e-9, atol=1e-9)  # consistent with the data
    torch.testing.assert_close(x, op.adjoint(y), rtol=1e-9, atol=1e-9)  # min-norm solution of a masked unitary


def test_warm_start_and_zero_iterations():
    y = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    x0 = torch.full_like(y, 0.25)
    result = least_squares(Identity(), y, x0=x0, max_iter=0)
    assert result.iterations == 0 and not result.converged
    torch.testing.assert_close(result.x, x0)
    exact = least_squares(Identity(), y, x0=y.clone(), tol=1e-12, max_iter=5)
    assert exact.iterations == 1 and exact.converged
    with pytest.warns(DeprecationWarning, match="Result.iterations"):
        assert exact.n_iter == 1  # the old name, for one release


def test_callback_stops_and_sees_metrics():
    seen = []
    op = Blur(gaussian_kernel(1.0))
    y = torch.rand(1, 1, 16, 16, dtype=torch.float64)

    def callback(iteration, state, metrics):
        seen.append((iteration, metrics["residual"]))
        return iteration == 3

    result = least_squares(op, y, lam=1e-3, tol=0.0, max_iter=50, callback=callback)
    assert result.iterations == 3 and [i for i, _ in seen] == [1, 2, 3]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_measurements_are_rejected(bad):
    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="least_squares: argument 'y' has non-finite values"):
        least_squares(Identity(), y)


def test_divergence_is_detected():
    rhs = torch.ones(1, 4, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="residual became nan"):
        CG(lambda x: x * float("nan"), rhs, max_iter=5).run()


def test_bad_arguments():
    with pytest.raises(ValueError, match="'lam' must be finite and >= 0"):
        least_squares(Identity(), torch.zeros(1, 2), lam=-1.0)
    with pytest.raises(ValueError, match="'x0' must have shape"):
        CG(lambda x: x, torch.ones(1, 3), max_iter=3).run(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="'max_iter' must be >= 0"):
        CG(lambda x: x, torch.ones(1, 3), max_iter=-1)


def test_progress_bar_is_off_by_default(capsys):
    least_squares(Identity(), torch.ones(1, 3), max_iter=3)
    assert "CG" not in capsys.readouterr().err
    least_squares(Identity(), torch.ones(1, 3), max_iter=3, progress=True)
    assert "CG" in capsys.readouterr().err


def test_pinv_method():
    op = CompressedSensing(30, (1, 4, 4), seed=5)
    y = torch.randn(2, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = (torch.linalg.pinv(op.matrix) @ y.T).T.reshape(2, 1, 4, 4)
    torch.testing.assert_close(op.pinv(y, tol=1e-13, max_iter=100), expected, rtol=1e-8, atol=1e-8)


def test_linear_solvers_name_the_nonlinear_ones():
    """A nonlinear forward model given to a solver that needs the adjoint: a TypeError that says which solvers
    take one (not a raw AttributeError from deep inside)."""
    import imaging
    from imaging.operators import Operator
    from imaging.priors import FieldOfExperts
    from imaging.solvers import FISTA, PDHG, AcceleratedGradient, PnPADMM, PnPPGD

    class Saturate(Operator):
        def forward(self, x):
            return torch.tanh(2 * x)

    A, y = Saturate(), torch.rand(1, 1, 16, 16)
    for solve in (lambda: least_squares(A, y), lambda: imaging.tv_reconstruct(A, y, 0.1), lambda: PDHG(A, y, 0.1),
                  lambda: FISTA(A, y, 0.1), lambda: PnPADMM(A, y, lambda v: v, 0.1), lambda: PnPPGD(A, y, lambda v: v),
                  lambda: AcceleratedGradient(A, y, FieldOfExperts.pretrained())):
        with pytest.raises(TypeError, match="LinearOperator.*RedDiff, Flair"):
            solve()


def test_a_blow_up_is_detected_and_the_last_good_iterate_returned():
    """A step above the stability limit (PDHG τ 10× too large, PnP-PGD step 3/‖A‖²) grows the objective / iterate
    geometrically long before it overflows: a DivergenceError, carrying the iterate from before the blow-up."""
    from imaging import DivergenceError
    from imaging.operators import Blur, gaussian_kernel
    from imaging.solvers import PDHG, PnPPGD

    A = Blur(gaussian_kernel(1.0), mode="circular")
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = A(x)
    with pytest.raises(DivergenceError, match="PDHG: diverged") as caught:
        PDHG(A, y, 0.01, tau=20.0, sigma=20.0, max_iter=2000).run()
    assert bool(torch.isfinite(caught.value.x).all()) and float(caught.value.x.abs().max()) < 1e6
    with pytest.raises(DivergenceError, match="PnPPGD: diverged: its iterate"):
        PnPPGD(A, y, lambda v: v, step=3.0 / A.norm(x) ** 2, max_iter=2000).run()
    # a convergent run is not flagged, even when its objective first rises (PDHG is not monotone)
    result = PDHG(A, y, 0.01, max_iter=300).run(warn=False)
    assert bool(torch.isfinite(result.x).all())


def test_the_norm_does_not_overflow_and_follows_the_operator_tensors():
    from imaging.operators import Blur, gaussian_kernel

    x = torch.zeros(1, 1, 16, 16)
    big = 1e25 * Blur(gaussian_kernel(1.0))  # ‖A‖² = 1e50 would overflow float32
    assert big.norm(x) == pytest.approx(1e25, rel=1e-3)
    A = Blur(gaussian_kernel(1.0))
    first = A.norm(x)
    A.kernel.mul_(3.0)  # in place: the cached value must not survive
    assert A.norm(x) == pytest.approx(3 * first, rel=1e-4)


def test_a_linear_operator_whose_forward_is_not_linear_is_refused():
    """forward = x² in a LinearOperator: its derived adjoint is a gradient at 0, so every solver would return 0
    "converged"; the probe (A(a x + b x') against a A x + b A x') names the operator instead."""
    from imaging.operators import LinearOperator
    from imaging.solvers import FISTA, PDHG, PnPADMM

    class Square(LinearOperator):
        def forward(self, x):
            return x * x

    A, y = Square(), torch.rand(1, 1, 8, 8, dtype=torch.float64)
    A(y)
    for solve in (lambda: least_squares(A, y, lam=0.1), lambda: PDHG(A, y, 0.1), lambda: FISTA(A, y, 0.1),
                  lambda: PnPADMM(A, y, lambda v: v)):
        with pytest.raises(ValueError, match="Square is a LinearOperator but its forward is not linear"):
            solve()


def test_progress_bars_do_not_flood_a_log(monkeypatch):
    """Off by default; on, in a non-terminal stream, a bar redraws at most every 30 s."""
    import io
    import sys

    from imaging._progress import progress_bar

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = progress_bar(range(3), enabled=True)
    assert bar.mininterval == 30.0 and not bar.disable
    assert progress_bar(range(3), enabled=False).disable
