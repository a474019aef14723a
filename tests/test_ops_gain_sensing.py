"""imaging::gain_forward / gain_adjoint / gain_normal_pass: kernels vs references, autograd, opcheck, errors, CUDA."""
import pytest
import torch

from conftest import requires_cuda, requires_ext
from imaging.ops import gain_sensing as G

SHAPES = [(3, 4, 5, 7), (2, 1, 9, 33), (1, 10, 16, 64)]  # (B, p, m, n)


def make_problem(B, p, m, n, shared, dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn((p, m, n) if shared else (B, p, m, n), generator=gen, dtype=dtype)
    x = torch.randn(B, n, generator=gen, dtype=dtype)
    gains = torch.rand(B, m, generator=gen, dtype=dtype) + 0.5
    r = torch.randn(B, p, m, generator=gen, dtype=dtype)
    c = torch.randn(B, p, m, generator=gen, dtype=dtype)
    return [t.to(device) for t in (A, x, gains, r, c)]


def close(a, b, dtype):
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    if b.numel() == 0:
        return a.shape == b.shape
    return torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


@requires_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernels_match_references(shape, shared, dtype):
    A, x, gains, r, c = make_problem(*shape, shared, dtype)
    for g in (gains, None):
        assert close(G.gain_forward(A, x, g), G._gain_forward_torch(A, x, g), dtype)
    u = G._gain_forward_torch(A, x)
    for g, uu in ((gains, u), (None, None)):
        for got, want in zip(G.gain_adjoint(A, r, g, uu), G._gain_adjoint_torch(A, r, g, uu)):
            assert got.shape == want.shape and close(got, want, dtype)
    for cc in (c, None):
        for got, want in zip(G.gain_normal_pass(A, x, gains, cc), G._gain_normal_pass_torch(A, x, gains, cc)):
            assert close(got, want, dtype)


def test_references_are_adjoint_pairs():
    A, x, gains, r, _ = make_problem(2, 3, 4, 5, shared=False)
    lhs = (G._gain_forward_torch(A, x, gains) * r).sum()
    rhs = (x * G._gain_adjoint_torch(A, r, gains)[0]).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-13)


def test_complex_uses_conjugate_reference():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(3, 4, 6, generator=gen, dtype=torch.complex128)
    x = torch.randn(2, 6, generator=gen, dtype=torch.complex128)
    r = torch.randn(2, 3, 4, generator=gen, dtype=torch.complex128)
    g = torch.randn(2, 4, generator=gen, dtype=torch.complex128)
    lhs = torch.vdot(G.gain_forward(A, x, g).flatten(), r.flatten())
    rhs = torch.vdot(x.flatten(), G.gain_adjoint(A, r, g)[0].flatten())
    assert torch.allclose(lhs, rhs, rtol=1e-12)


@requires_ext
def test_threads_give_identical_results(threads):
    A, x, gains, r, c = make_problem(1, 10, 64, 512, shared=True, dtype=torch.float32)
    two = G.gain_normal_pass(A, x, gains, c)
    torch.set_num_threads(1)
    one = G.gain_normal_pass(A, x, gains, c)
    for a, b in zip(one, two):
        assert torch.equal(a, b)  # fixed row chunks, summed in a fixed order


@requires_ext
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_and_gradgradcheck(shared):
    A, x, gains, r, _ = make_problem(2, 2, 3, 4, shared)
    A.requires_grad_(), x.requires_grad_(), gains.requires_grad_()
    assert torch.autograd.gradcheck(G.gain_forward, (A, x, gains))
    assert torch.autograd.gradgradcheck(G.gain_forward, (A, x, gains))
    u = G.gain_forward(A, x).detach().requires_grad_()
    r.requires_grad_()
    assert torch.autograd.gradcheck(G.gain_adjoint, (A, r, gains, u))


@requires_ext
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck(shared, dtype):
    A, x, gains, r, c = make_problem(2, 3, 4, 5, shared, dtype)
    u = G._gain_forward_torch(A, x)
    torch.library.opcheck(torch.ops.imaging.gain_forward.default, (A, x, gains))
    torch.library.opcheck(torch.ops.imaging.gain_forward.default, (A, x.requires_grad_(), gains.requires_grad_()))
    torch.library.opcheck(torch.ops.imaging.gain_adjoint.default, (A, r, gains.detach(), u))
    torch.library.opcheck(torch.ops.imaging.gain_adjoint.default, (A, r, None, None))
    torch.library.opcheck(torch.ops.imaging.gain_normal_pass.default, (A, x.detach(), gains.detach(), c))
    torch.library.opcheck(torch.ops.imaging.gain_normal_pass.default, (A, x.detach(), gains.detach(), None))


@requires_ext
@pytest.mark.parametrize("make, message", [
    (lambda A, x, g: (A.float(), x, g), "must have A's dtype"),
    (lambda A, x, g: (A, x[:, :-1].contiguous(), g), "must have shape"),
    (lambda A, x, g: (A, x, g[:, :-1].contiguous()), "must have shape"),
    (lambda A, x, g: (A[0], x, g), "must have shape"),
    (lambda A, x, g: (A.transpose(-1, -2), x, g), "contiguous"),
    (lambda A, x, g: (A.int(), x, g), "float32 or float64"),
    (lambda A, x, g: (A.unsqueeze(0).expand(5, -1, -1, -1).contiguous(), x, g), "problems"),
])
def test_kernels_reject_bad_input(make, message):
    A, x, gains, _, _ = make_problem(2, 3, 4, 5, shared=True)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.imaging.gain_forward(*make(A, x, gains))


def test_public_functions_name_the_bad_argument():
    A, x, gains, r, c = make_problem(2, 3, 4, 5, shared=True)
    with pytest.raises(ValueError, match="'x' must have shape"):
        G.gain_forward(A, x[:, :3], gains)
    with pytest.raises(ValueError, match="'r' must have shape"):
        G.gain_adjoint(A, r[:, :2], gains)
    with pytest.raises(ValueError, match="'A' must be"):
        G.gain_forward(A[0, 0], x)
    with pytest.raises(TypeError, match="dtype"):
        G.gain_normal_pass(A, x, gains.float(), c)


@requires_cuda
@pytest.mark.parametrize("shape", SHAPES + [(1, 10, 256, 1024), (2, 3, 37, 131)])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(shape, shared, dtype):
    cpu = make_problem(*shape, shared, dtype)
    A, x, gains, r, c = [t.cuda() for t in cpu]
    u = G.gain_forward(A, x)
    pairs = [(G.gain_forward(A, x, gains), G.gain_forward(*cpu[:3])),
             *zip(G.gain_adjoint(A, r, gains, u), G.gain_adjoint(cpu[0], cpu[3], cpu[2], u.cpu())),
             *zip(G.gain_normal_pass(A, x, gains, c), G.gain_normal_pass(cpu[0], cpu[1], cpu[2], cpu[4])),
             *zip(G.gain_normal_pass(A, x, gains), G.gain_normal_pass(*cpu[:3]))]
    for got, want in pairs:
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        assert torch.allclose(got.cpu(), want, rtol=tol, atol=tol * max(1.0, want.abs().max().item()))


@requires_cuda
def test_cuda_opcheck_and_gradcheck():
    A, x, gains, r, c = make_problem(2, 3, 4, 5, True, device="cuda")
    torch.library.opcheck(torch.ops.imaging.gain_forward.default, (A, x.requires_grad_(), gains.requires_grad_()))
    torch.library.opcheck(torch.ops.imaging.gain_normal_pass.default, (A, x.detach(), gains.detach(), c))
    assert torch.autograd.gradcheck(G.gain_forward, (A, x, gains))
