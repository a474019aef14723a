"""Blind gain calibration (spec ../shared/specs/gain-calibration.md §6): gradients, recovery, noise, phase
transition, subspace priors, gauge, batching, complex gains, custom operators and bad input."""
import math

import pytest
import torch

from imaging.calibration import (DenseGainSensing, GainSensing, RandomMaskDCTSensing, alternating, calibrate, fix_gauge,
                                 least_squares, pgd, project_gains, relative_error, spectral, uncalibrated)
from imaging.calibration.common import back_projection, loss_of


def random_gains(m, batch=1, seed=0, spread=0.5, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    d = 1 + spread * (2 * torch.rand(batch, m, generator=gen, dtype=dtype) - 1)
    return d / d.mean(1, keepdim=True)


def problem(n, m, p, batch=None, seed=0, snr=None, dtype=torch.float64):
    sensing = DenseGainSensing.gaussian(p, m, n, batch=batch, dtype=dtype, seed=seed)
    B = batch or 1
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(B, n, generator=gen, dtype=dtype)
    d = random_gains(m, B, seed + 200, dtype=dtype)
    y = sensing(x, d)
    if snr is not None:
        noise = torch.randn(y.shape, generator=gen, dtype=dtype)
        y = y + noise * (torch.linalg.vector_norm(y) / torch.linalg.vector_norm(noise) * 10 ** (-snr / 20))
    return sensing, y, x, d


def errors(result, x, d):
    return float(relative_error(result.x.reshape(x.shape), x).max()), \
        float(relative_error(result.gains.reshape(d.shape), d).max())


# T1 -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_closed_form_gradients_match_autograd(dtype):
    sensing, y, _, _ = problem(8, 8, 3, seed=3) if dtype == torch.float64 else (None, None, None, None)
    if dtype == torch.complex128:
        gen = torch.Generator().manual_seed(3)
        sensing = DenseGainSensing(torch.randn(3, 8, 8, generator=gen, dtype=dtype))
        y = torch.randn(1, 3, 8, generator=gen, dtype=dtype)
    gen = torch.Generator().manual_seed(4)
    xi = torch.randn(1, 8, generator=gen, dtype=dtype).requires_grad_()
    gam = (1 + 0.3 * torch.randn(1, 8, generator=gen, dtype=dtype)).requires_grad_()
    u = sensing.sense(xi)
    loss = loss_of(gam[:, None, :] * u - y).sum()
    auto_x, auto_g = torch.autograd.grad(loss, (xi, gam))
    with torch.no_grad():
        r = gam[:, None, :] * u - y
        g_x, g_g = sensing.gradients(r, gam, u)
    scale = 1 / 24  # 1/(mp); for complex tensors both are 2 ∂f/∂z̄ (torch's convention for real losses)
    assert torch.allclose(g_x * scale, auto_x, atol=1e-10, rtol=1e-10)
    assert torch.allclose(g_g * scale, auto_g, atol=1e-10, rtol=1e-10)


# T2, T5, T10 --------------------------------------------------------------------------------------------------------
def test_pgd_recovers_noiseless_dense_32x32():
    sensing, y, x, d = problem(1024, 1024, 10, seed=1)
    result = calibrate(y[0], sensing.A, pgd, max_iter=400, x_true=x[0], gains_true=d[0])
    err_x, err_d = errors(result, x, d)
    assert err_x <= 1e-5 and err_d <= 1e-5 and result.iterations <= 400
    assert result.x.shape == (1024,) and result.gains.shape == (1024,)
    assert abs(float(result.gains.mean()) - 1) < 1e-12
    loss = result.history["loss"]
    assert loss[-1] <= 1e-10 * loss[0]
    assert bool((loss[1:] <= loss[:-1] * (1 + 1e-9)).all())  # the accepted steps never increase f
    assert result.history["error_x"][0] >= 0.1  # T5: the uncalibrated back projection ξ₀ is far off
    assert float(relative_error(back_projection(sensing, y), x)) >= 0.1


# T3, T4 -------------------------------------------------------------------------------------------------------------
def test_noise_degrades_gracefully():
    found = {}
    for snr in (30, 40):
        sensing, y, x, d = problem(1024, 1024, 10, seed=2, snr=snr)
        found[snr] = errors(calibrate(y[0], sensing, pgd), x, d)
        if snr == 30:
            naive = errors(calibrate(y[0], sensing, uncalibrated), x, d)[0]
    assert max(found[30]) <= 2.5e-2
    assert found[30][0] <= 0.5 * naive
    assert 0.2 <= found[40][0] / found[30][0] <= 0.5


# T6 -----------------------------------------------------------------------------------------------------------------
def success_rate(method, n, m, p, trials=10, **options):
    sensing, y, x, d = problem(n, m, p, batch=trials, seed=10 * m + p)
    result = calibrate(y, sensing, method, **options)
    err = torch.maximum(relative_error(result.x, x), relative_error(result.gains, d))
    return float((err < 1e-3).double().mean())


def test_phase_transition_sanity():
    n = 32
    for method in (pgd, least_squares, spectral):  # m p < m + n − 1: every method fails
        assert success_rate(method, n, 8, 4, max_iter=500) == 0.0 if method is pgd else \
            success_rate(method, n, 8, 4) == 0.0
    assert success_rate(pgd, n, 32, 4, max_iter=3000) >= 0.9   # p >= 4 and m p >= 2 (m + n)
    assert success_rate(pgd, n, 64, 6, max_iter=3000) >= 0.9
    for method in (least_squares, spectral):  # m p >= m + n: exact
        assert success_rate(method, n, 16, 3) == 1.0
        assert success_rate(method, n, 64, 2) == 1.0


def test_batched_equals_individual_problems():
    sensing, y, x, d = problem(32, 32, 6, batch=3, seed=5)
    batched = calibrate(y, sensing, pgd, max_iter=50)
    for b in range(3):
        single = calibrate(y[b], sensing.A[b], pgd, max_iter=50)
        assert torch.allclose(single.x, batched.x[b], rtol=1e-8, atol=1e-10)


# T7 -----------------------------------------------------------------------------------------------------------------
def smooth_basis(size, k=4):
    from imaging.operators.sampling import dct_matrix
    atoms = dct_matrix(size)[:k]  # (k, size): lowest 1-D DCT atoms
    return torch.einsum("ai,bj->ijab", atoms, atoms).reshape(size * size, k * k)


def test_gain_subspace_prior_with_two_snapshots():
    size = 64
    sensing = RandomMaskDCTSensing.random(2, (size, size), seed=3)
    basis = smooth_basis(size)
    gen = torch.Generator().manual_seed(7)
    smooth = basis[:, 1:] @ torch.randn(basis.shape[1] - 1, generator=gen, dtype=torch.float64)
    d = (1 + 0.25 * smooth / smooth.std())[None]  # smooth gains, 25 % standard deviation, mean 1
    x = torch.randn(1, size * size, generator=gen, dtype=torch.float64)
    y = sensing(x, d)
    with_prior = errors(pgd(sensing, y, gain_basis=basis, max_iter=500), x, d)
    without = errors(pgd(sensing, y, max_iter=2000), x, d)
    assert max(with_prior) <= 1e-5
    assert max(without) > 1e-2


def test_image_subspace_prior():
    n, m, k = 64, 32, 8
    gen = torch.Generator().manual_seed(8)
    Z = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))[0]
    x = (Z @ torch.randn(k, generator=gen, dtype=torch.float64))[None]
    sensing = DenseGainSensing.gaussian(4, m, n, seed=9)  # mp = 128 measurements, k + m − 1 = 39 unknowns
    d = random_gains(m, seed=9, spread=0.3)
    y = sensing(x, d)
    assert max(errors(pgd(sensing, y, image_basis=Z, max_iter=2000), x, d)) <= 1e-5


# T8 -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [least_squares, spectral, alternating], ids=lambda f: f.__name__)
def test_linear_methods_exact_and_gauge_fixed(method):
    sensing, y, x, d = problem(256, 256, 6, seed=4)
    result = calibrate(y[0], sensing, method)
    assert abs(float(result.gains.mean()) - 1) < 1e-12
    assert bool((result.gains > 0).all())
    assert max(errors(result, x, d)) < 1e-6


def test_complex_gains_gain_and_phase():
    n = m = 64
    gen = torch.Generator().manual_seed(11)
    A = torch.randn(8, m, n, generator=gen, dtype=torch.complex128)
    x = torch.randn(1, n, generator=gen, dtype=torch.complex128)
    d = (1 + 0.3 * torch.rand(1, m, generator=gen, dtype=torch.float64)) * torch.exp(
        1j * 0.5 * torch.randn(1, m, generator=gen, dtype=torch.float64))
    d = d / d.mean()
    y = DenseGainSensing(A)(x, d)
    for method in (pgd, least_squares):
        result = calibrate(y[0], A, method, **({"rho": None, "max_iter": 2000} if method is pgd else {}))
        assert max(errors(result, x, d)) < 1e-5, method


# operators, projection, bad input ------------------------------------------------------------------------------------
def test_mask_dct_adjoint_and_default_passes():
    sensing = RandomMaskDCTSensing.random(3, (8, 6), seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 48, generator=gen, dtype=torch.float64)
    c = torch.randn(2, 3, 48, generator=gen, dtype=torch.float64)
    assert torch.allclose((sensing.sense(x) * c).sum(), (x * sensing.sense_adjoint(c)).sum(), rtol=1e-12)
    estimate = GainSensing.column_norms_sq(sensing)  # the probe estimate of the base class vs the exact value
    assert torch.allclose(estimate, sensing.column_norms_sq(), rtol=0.5)


class TwoBlurSensing(GainSensing):
    """A user's own model: each snapshot is a different circular blur of a 1-D scene."""

    def __init__(self, kernels):
        super().__init__(kernels.shape[0], kernels.shape[1], kernels.shape[1])
        self.transfer = torch.fft.fft(kernels)

    def sense(self, x):
        return torch.fft.ifft(torch.fft.fft(x)[:, None, :] * self.transfer).real

    def sense_adjoint(self, c):
        return torch.fft.ifft(torch.fft.fft(c) * self.transfer.conj()).real.sum(1)

    def probe_like(self):
        return torch.empty(0, dtype=torch.float64)


def test_custom_sensing_operator():
    n = 48
    gen = torch.Generator().manual_seed(12)
    sensing = TwoBlurSensing(torch.randn(6, n, generator=gen, dtype=torch.float64))
    x = torch.randn(1, n, generator=gen, dtype=torch.float64)
    d = random_gains(n, seed=12, spread=0.3)
    y = sensing(x, d)
    for method in (least_squares, pgd):
        result = calibrate(y[0], sensing, method, max_iter=3000)
        assert max(errors(result, x, d)) < 1e-4, method


def test_projection_onto_the_gain_set():
    gen = torch.Generator().manual_seed(13)
    v = 1 + 0.8 * torch.randn(4, 50, generator=gen, dtype=torch.float64)
    g = project_gains(v, rho=0.5)
    assert torch.allclose(g.mean(1), torch.ones(4, dtype=torch.float64), atol=1e-13)
    assert bool(((g >= 0.5 - 1e-15) & (g <= 1.5 + 1e-15)).all())
    shift = v - g  # KKT: g = clip(v − λ, lo, hi) with one λ per row
    inside = (g > 0.5 + 1e-9) & (g < 1.5 - 1e-9)
    for b in range(4):
        assert float(shift[b][inside[b]].std()) < 1e-12
    x, gains = fix_gauge(torch.ones(1, 3), torch.full((1, 2), 2.0))
    assert torch.equal(x, torch.full((1, 3), 2.0)) and torch.equal(gains, torch.ones(1, 2))


@pytest.mark.parametrize("rho", [0.0, -0.1, 1.0, 1.5])
def test_gain_bounds_must_keep_gains_positive(rho):
    sensing, y, _, _ = problem(16, 16, 4)
    with pytest.raises(ValueError, match="'rho'"):
        calibrate(y[0], sensing, pgd, rho=rho)


def test_bad_measurements_are_reported():
    sensing, y, _, _ = problem(16, 16, 4)
    with pytest.raises(ValueError, match=r"shape \(B, p, m\)"):
        calibrate(y[0, :3], sensing, pgd)
    bad = y.clone()
    bad[0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        calibrate(bad[0], sensing, least_squares)
    with pytest.raises(TypeError, match="dtype"):
        calibrate(y[0].float(), sensing, pgd)
    with pytest.raises(ValueError, match="method"):
        calibrate(y[0], sensing, "magic")
    with pytest.raises(TypeError, match="'method' must be a calibration solver"):
        calibrate(y[0], sensing, 3)
    with pytest.warns(DeprecationWarning, match="method=imaging.calibration.least_squares"):
        calibrate(y[0], sensing, "ls")
    with pytest.raises(ValueError, match="'A'"):
        calibrate(y[0], torch.randn(16, 16), pgd)


# T9 (GPU only) ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", [pgd, least_squares, alternating], ids=lambda f: f.__name__)
def test_cuda_trajectory_matches_cpu(method):
    sensing, y, x, d = problem(1024, 1024, 10, seed=6, dtype=torch.float32)
    options = {"max_iter": 50, "tol": 0.0} if method is not least_squares else {}
    cpu = calibrate(y[0], sensing.A, method, **options)
    gpu = calibrate(y[0].cuda(), sensing.A.cuda(), method, **options)
    assert float(relative_error(gpu.x.cpu()[None], cpu.x[None])) <= 1e-4
    assert float(relative_error(gpu.gains.cpu()[None], cpu.gains[None])) <= 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_matches_eager_cuda():
    sensing, y, x, d = problem(1024, 1024, 10, seed=7, dtype=torch.float32)
    A, y = sensing.A.cuda(), y.cuda()
    graph = calibrate(y[0], A, pgd, max_iter=45, tol=0.0, x_true=x[0].cuda(), gains_true=d[0].cuda())
    eager = calibrate(y[0], A, pgd, max_iter=45, tol=0.0, cuda_graph=False)
    assert graph.iterations == eager.iterations == 45 and graph.history["loss"].shape == (46,)
    assert float(relative_error(graph.x[None], eager.x[None])) <= 1e-5
    assert bool((graph.history["error_x"][1:] <= graph.history["error_x"][:-1] * 1.01).all())


def test_cuda_graph_needs_cuda_tensors():
    sensing, y, _, _ = problem(16, 16, 4)
    with pytest.raises(ValueError, match="cuda_graph"):
        pgd(sensing, y, cuda_graph=True)


class SenseOnly(GainSensing):
    """A user's model written as the docs say: `sense` only (adjoint by autograd, dtype from its buffer)."""

    def __init__(self, kernels):
        super().__init__(kernels.shape[0], kernels.shape[1], kernels.shape[1])
        self.register_buffer("transfer", torch.fft.fft(kernels))

    def sense(self, x):
        return torch.fft.ifft(torch.fft.fft(x)[:, None, :] * self.transfer).real


def test_every_sensing_operator_is_a_linear_operator_that_passes_the_dot_test():
    from imaging.operators import LinearOperator
    from imaging.testing import dot_test

    gen = torch.Generator().manual_seed(5)
    operators = [DenseGainSensing.gaussian(3, 10, 12, seed=1), DenseGainSensing.gaussian(3, 10, 12, seed=1,
                                                                                         dtype=torch.complex128),
                 RandomMaskDCTSensing.random(2, (4, 6)), TwoBlurSensing(torch.randn(3, 16, generator=gen,
                                                                                     dtype=torch.float64)),
                 SenseOnly(torch.randn(3, 16, generator=gen, dtype=torch.float64))]
    for op in operators:
        assert isinstance(op, LinearOperator)
        x = torch.randn(2, op.pixels, generator=gen, dtype=op.probe_like().dtype)
        assert dot_test(op, x) < 1e-12, type(op).__name__


def test_a_sensing_model_with_only_sense_calibrates():
    n = 32
    gen = torch.Generator().manual_seed(7)
    sensing = SenseOnly(torch.randn(6, n, generator=gen, dtype=torch.float64))
    x = torch.randn(1, n, generator=gen, dtype=torch.float64)
    d = random_gains(n, seed=7, spread=0.3)
    result = calibrate(sensing(x, d)[0], sensing, least_squares)
    assert max(errors(result, x, d)) < 1e-6

    class Empty(GainSensing):
        pass

    with pytest.raises(NotImplementedError, match="Empty: a GainSensing subclass must implement sense"):
        Empty(2, 3, 3).sense(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="Empty: cannot tell the operator's dtype and device"):
        Empty(2, 3, 3).probe_like()
    with pytest.raises(ValueError, match="'pixels' must be a positive integer"):
        Empty(2, 3, 0)


@pytest.mark.parametrize("method", [least_squares, spectral, uncalibrated, pgd, alternating], ids=lambda f: f.__name__)
def test_non_finite_or_overflowing_inputs_never_converge(method):
    """One NaN in A is rejected; scales whose squares over- or underflow (A and y by 1e±200, y alone by 1e-300,
    float32 at 1e20) are refused up front with what to do, never a converged NaN or zero."""
    sensing, y, _, _ = problem(16, 16, 4)
    A = sensing.A.clone()
    A[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="'A' has non-finite values"):
        calibrate(y[0], A, method)
    for y_scale, a_scale, dtype in ((1e200, 1e200, torch.float64), (1e-200, 1e-200, torch.float64),
                                    (1e-300, 1.0, torch.float64), (1e20, 1e20, torch.float32)):
        with pytest.raises(ValueError, match="scale .* rescale A and y"):
            calibrate((y[0] * y_scale).to(dtype), (sensing.A * a_scale).to(dtype), method, max_iter=50)
    result = calibrate(y[0] * 1e-6, sensing.A * 1e3, method)  # far from 1 but representable: solved
    assert bool(torch.isfinite(result.x).all()) and bool(torch.isfinite(result.gains).all())


def test_calibration_returns_the_library_result():
    from imaging.solvers import Result

    sensing, y, _, _ = problem(16, 16, 4)
    result = calibrate(y[0], sensing, least_squares)
    assert isinstance(result, Result) and result.iterations >= 1 and result.converged is True
    assert result.gains.shape == (16,) and result.x.shape == (16,)


def test_blocks_of_iterations_give_the_eager_answer(monkeypatch):
    """The CUDA-graph path (blocks of 10 iterations, convergence checked once per block, the frozen iterations of
    the last block dropped) gives the eager path's estimate, iteration count, losses and pass counts. Here the
    graph is emulated on the CPU: capture runs a block eagerly, replay runs the next one into the same records."""
    import importlib

    pgd_module = importlib.import_module("imaging.calibration.pgd")

    class FakeGraph:
        def __init__(self, iteration, block, stacked):
            self.iteration, self.block, self.stacked = iteration, block, stacked

        def replay(self):
            records = [self.iteration() for _ in range(self.block)]
            for key, value in self.stacked.items():
                value.copy_(torch.stack([r[key] for r in records]))

    def capture(iteration, block):
        records = [iteration() for _ in range(block)]
        stacked = {key: torch.stack([r[key] for r in records]) for key in records[0]}
        return FakeGraph(iteration, block, stacked), stacked, {key: v.clone() for key, v in stacked.items()}

    sensing, y, x, d = problem(64, 64, 6, batch=2, seed=7)
    eager = pgd_module.PGD(sensing, y, max_iter=137, refresh_every=20).run(warn=False)
    monkeypatch.setattr(pgd_module, "_capture", capture)
    blocked = pgd_module.PGD(sensing, y, max_iter=137, refresh_every=20)
    blocked.use_graph, blocked.max_iter = True, 137 // 10 + 137 % 10
    blocked = blocked.run(warn=False)
    assert blocked.iterations == eager.iterations
    torch.testing.assert_close(blocked.x, eager.x)
    torch.testing.assert_close(blocked.history["loss"], eager.history["loss"])
    torch.testing.assert_close(blocked.history["passes"], eager.history["passes"])
    assert bool((blocked.converged == eager.converged).all())


def test_least_squares_and_spectral_run_on_the_library_loop():
    """A least-squares step is one PCG iteration (its history records each iterate), the spectral method's a
    PCG-solved inverse iteration; a solve stopped by max_iter is not converged and says so once."""
    from imaging import ConvergenceWarning
    from imaging.calibration import LeastSquares, Spectral

    sensing, y, x, d = problem(64, 64, 4, seed=3)
    result = calibrate(y[0], sensing, LeastSquares, x_true=x[0], gains_true=d[0])
    assert result.converged is True and max(errors(result, x, d)) < 1e-6
    assert result.history["loss"].shape == (result.iterations + 1,) and result.iterations > 5
    assert float(result.history["error_x"][-1]) < 1e-6 < float(result.history["error_x"][1])
    assert bool((result.history["passes"][1:] > result.history["passes"][:-1]).all())
    with pytest.warns(ConvergenceWarning, match="0 of 1 problems converged") as caught:
        short = calibrate(y[0], sensing, least_squares, max_iter=3)
    assert len(caught) == 1 and short.converged is False and short.iterations == 3
    with pytest.warns(ConvergenceWarning):
        assert calibrate(y[0], sensing, spectral, max_iter=3).converged is False
    spectral_result = calibrate(y[0], sensing, Spectral, inverse_iterations=2)
    assert spectral_result.iterations == 2 and spectral_result.history["loss"].shape == (3,)
    assert spectral_result.converged is True and max(errors(spectral_result, x, d)) < 1e-6
    calls = []
    calibrate(y[0], sensing, least_squares, callback=lambda i, state, metrics: calls.append(i) or i == 2, warn=False)
    assert calls == [1, 2]


def test_the_old_method_table_is_a_deprecated_alias():
    import imaging.calibration as calibration

    with pytest.warns(DeprecationWarning, match="METHODS is deprecated"):
        assert calibration.METHODS["ls"] is least_squares
    with pytest.raises(AttributeError):
        calibration.NO_SUCH_NAME
