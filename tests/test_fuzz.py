"""Property-based fuzzing (hypothesis) of the compiled ops against their pure-torch references.

Inputs: 4-D and 5-D tensors of 1–7 pixels per side (1×1, 1×N, odd sizes), float32 / float64, contiguous or
transposed views, values spread over many orders of magnitude, sometimes a NaN or an infinity. Invariants: the
process never crashes; an op either raises a clear error (ValueError / TypeError / RuntimeError naming the op or
the argument) or returns an answer that agrees with the reference where that is finite; a non-finite input is never
hidden behind a finite answer. A small budget runs in `make test`; `-m slow` runs the long profile."""
import importlib
import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

fd = importlib.import_module("imaging.ops.finite_diff")  # the modules (imaging.ops re-exports same-named ops)
tvops = importlib.import_module("imaging.ops.tv")

CLEAR = (ValueError, TypeError, RuntimeError)


@st.composite
def images(draw, min_side: int = 1, ndims=(2, 3)):
    ndim = draw(st.sampled_from(ndims))
    shape = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    shape += [draw(st.integers(min_side, 7 if ndim == 2 else 4)) for _ in range(ndim)]
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    scale = 10.0 ** draw(st.integers(-12 if dtype == torch.float64 else -6, 12 if dtype == torch.float64 else 6))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    x = x.to(dtype)
    poison = draw(st.sampled_from([None, None, None, math.nan, math.inf, -math.inf]))
    if poison is not None:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = poison
    if draw(st.booleans()) and x.shape[-1] > 1 and x.shape[-2] > 1:
        x = x.transpose(-1, -2)  # a non-contiguous view
    return x


def agree(out: torch.Tensor, ref: torch.Tensor, *inputs: torch.Tensor) -> None:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    finite_in = all(bool(torch.isfinite(t).all()) for t in inputs if isinstance(t, torch.Tensor))
    if not finite_in:  # a NaN / inf input that enters the computation shows in the answer
        assert not bool(torch.isfinite(out).all()) or bool(torch.isfinite(ref).all()), \
            "a non-finite input gave an all-finite answer"
        return
    both = torch.isfinite(ref)
    assert bool((torch.isfinite(out) == both).all()), "the op and its reference disagree on what is finite"
    rtol = 1e-4 if out.dtype == torch.float32 else 1e-9
    scale = float(ref[both].abs().max()) if bool(both.any()) else 0.0
    difference = float((out[both] - ref[both]).abs().max()) if bool(both.any()) else 0.0
    assert difference <= rtol * scale + 1e-30


def run(op, reference, *args):
    try:
        out = op(*args)
    except CLEAR as error:
        assert str(error), "an error without a message"
        return
    agree(out, reference(*args), *args)


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
LONG = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(images(), st.sampled_from([0.0, 1e-3, 1.0]), st.booleans())
def test_tv_and_its_gradient(x, eps, isotropic):
    run(lambda v: tvops.tv(v, eps, isotropic), lambda v: tvops._tv_torch(v, eps, isotropic), x)
    run(lambda v: tvops.tv_grad(v, eps, isotropic), lambda v: tvops._keep_non_finite(
        tvops._tv_grad_torch(v, eps, isotropic), v), x)


@FUZZ
@given(images())
def test_finite_differences_and_adjoint(x):
    run(fd.finite_diff, fd._finite_diff_torch, x)
    if bool(torch.isfinite(x).all()):
        g = fd._finite_diff_torch(x.contiguous())
        run(fd.finite_diff_adjoint, fd._finite_diff_adjoint_torch, g)


@FUZZ
@given(images(), st.sampled_from([0.0, 0.01, 1.0, 1e3]), st.booleans(), st.sampled_from([None, (0.0, 1.0)]))
def test_tv_prox_converges_or_refuses(y, lam, isotropic, box):
    lower, upper = box or (None, None)
    try:
        x, p, gap, iterations = tvops.tv_prox(y, lam, isotropic, 1e-6, 50, lower, upper)
    except CLEAR as error:
        assert str(error)
        return
    assert bool(torch.isfinite(y).all()), "tv_prox accepted a non-finite y"
    assert x.shape == y.shape and bool(torch.isfinite(x).all()) and bool(torch.isfinite(gap).all())
    ref = tvops._tv_prox_torch(y.contiguous(), tvops.plane_weights(lam, y), isotropic, 1e-6, 50, lower, upper, None)
    if int(iterations) == int(ref[3]):  # the same iterations: the same iterate up to rounding
        agree(x, ref[0], y)


foe = importlib.import_module("imaging.ops.foe")
gain = importlib.import_module("imaging.ops.gain_sensing")


@st.composite
def fields_of_experts(draw, dtype):
    """Filters (K, k, k) with k in 1/3/5, positive weights and ν over many orders of magnitude (some too small for
    ν² to be represented), a potential and a padding."""
    K, k = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 5]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    filters = torch.randn(K, k, k, generator=g, dtype=torch.float64).to(dtype)
    weights = torch.rand(K, generator=g, dtype=torch.float64).add(0.1).to(dtype)
    nu = torch.full((K,), 10.0 ** draw(st.integers(-25, 3)), dtype=dtype)
    return filters, weights, nu, draw(st.sampled_from(["abs", "student"])), draw(st.sampled_from(["reflect", "zero"]))


@FUZZ
@given(st.data())
def test_field_of_experts_energy_gradient_and_hvp(data):
    x = data.draw(images(ndims=(2,)))
    filters, weights, nu, potential, padding = data.draw(fields_of_experts(x.dtype))
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    d = lambda t: t.double()  # noqa: E731  the references in float64 (autograd's second derivative of the smoothed
    # |·| cancels badly in float32; the kernels use the closed form), cast back to the op's dtype
    run(lambda x_: foe.foe_energy(x_, filters, weights, nu, potential, padding),
        lambda x_: foe._foe_energy_torch(d(x_), d(filters), d(weights), d(nu), potential, padding).to(x.dtype), x)
    run(lambda x_: foe.foe_grad(x_, filters, weights, nu, potential, padding),
        lambda x_: foe._foe_grad_torch(d(x_), d(filters), d(weights), d(nu), potential, padding).to(x.dtype), x)
    run(lambda x_: foe.foe_hvp(x_, v, filters, weights, nu, potential, padding),
        lambda x_: foe._foe_hvp_torch(d(x_), d(v), d(filters), d(weights), d(nu), potential, padding).to(x.dtype), x)


@st.composite
def gain_problems(draw):
    """A (p, m, n) shared or (B, p, m, n) per problem, x (B, n), r (B, p, m), gains (B, m); sizes 1–5, many scales,
    sometimes a NaN / inf in one of them or a transposed A."""
    B, p, m, n = (draw(st.integers(1, 5)) for _ in range(4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    scale = 10.0 ** draw(st.integers(-6, 6))
    shared = draw(st.booleans())
    A = (torch.randn((p, m, n) if shared else (B, p, m, n), generator=g, dtype=torch.float64) * scale).to(dtype)
    x = torch.randn(B, n, generator=g, dtype=torch.float64).to(dtype)
    r = torch.randn(B, p, m, generator=g, dtype=torch.float64).to(dtype)
    gains = torch.rand(B, m, generator=g, dtype=torch.float64).add(0.5).to(dtype)
    tensors = [A, x, r, gains]
    poison = draw(st.sampled_from([None, None, None, math.nan, math.inf]))
    if poison is not None:
        t = tensors[draw(st.integers(0, 3))]
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = poison
    if draw(st.booleans()) and m > 1 and n > 1:
        A = A.transpose(-1, -2).contiguous().transpose(-1, -2)  # the same values, a non-contiguous layout
    return A, x, r, gains


@FUZZ
@given(gain_problems())
def test_gain_forward_and_adjoint(problem):
    A, x, r, gains = problem
    run(gain.gain_forward, gain._gain_forward_torch, A, x, gains)
    run(gain.gain_forward, gain._gain_forward_torch, A, x)
    try:
        out = gain.gain_adjoint(A, r, gains)
    except CLEAR as error:
        assert str(error)
        return
    ref = gain._gain_adjoint_torch(A, r, gains)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for o, e in zip(outs, refs):
        if o is not None and e is not None:
            agree(o, e, A, r, gains)


@pytest.mark.slow
@LONG
@given(images(), st.sampled_from([0.0, 1e-3, 1.0]), st.booleans())
def test_tv_long_profile(x, eps, isotropic):
    test_tv_and_its_gradient.hypothesis.inner_test(x, eps, isotropic)
