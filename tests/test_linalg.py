"""The one conjugate gradient (imaging.linalg): batched solves against direct ones, per-sample stopping, block
(tuple) unknowns, preconditioning, tracking B x, non-finite detection; and the library's layering (no module
imports a layer above it)."""
import ast
from pathlib import Path

import pytest
import torch

from imaging.linalg import batch_dot, batch_norm, cg_start, cg_step, conjugate_gradient
from imaging.operators import Blur, gaussian_kernel

ROOT = Path(__file__).resolve().parents[1]


def spd(n: int, condition: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    return q @ torch.diag(torch.logspace(0, torch.log10(torch.tensor(condition)).item(), n, dtype=torch.float64)) @ q.T


def test_batched_solve_matches_direct_solves_and_stops_per_sample():
    H = torch.stack([spd(12, 10.0, 0), spd(12, 1e3, 1), spd(12, 1.0, 2)])
    b = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    result = conjugate_gradient(lambda x: torch.einsum("nij,nj->ni", H, x), b, tol=1e-10, max_iter=200)
    torch.testing.assert_close(result.x, torch.linalg.solve(H, b), rtol=1e-8, atol=1e-8)
    assert bool(result.converged.all()) and float(result.residual.max()) <= 1e-10
    # each sample stops on its own: the identity system is solved in one step and then left alone
    state = cg_start(lambda x: torch.einsum("nij,nj->ni", H, x), b, tol=1e-10)
    state = cg_step(lambda x: torch.einsum("nij,nj->ni", H, x), state)
    assert state.active.tolist() == [True, True, False]
    frozen = state.x[2].clone()
    for _ in range(5):
        state = cg_step(lambda x: torch.einsum("nij,nj->ni", H, x), state)
    assert torch.equal(state.x[2], frozen)


def test_block_unknowns_preconditioner_and_absolute_tolerance():
    d1 = torch.logspace(0, 4, 6, dtype=torch.float64).repeat(2, 1)
    d2 = torch.linspace(1, 3, 4, dtype=torch.float64).repeat(2, 1)
    rhs = (torch.ones(2, 6, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64))
    normal = lambda v: (d1 * v[0], d2 * v[1])  # noqa: E731
    plain = conjugate_gradient(normal, rhs, tol=1e-12, max_iter=100)
    torch.testing.assert_close(plain.x[0], 1 / d1)
    torch.testing.assert_close(plain.x[1], 1 / d2)
    jacobi = conjugate_gradient(normal, rhs, tol=1e-12, max_iter=100, preconditioner=lambda r: (r[0] / d1, r[1] / d2))
    assert jacobi.iterations == 1 < plain.iterations
    loose = conjugate_gradient(normal, rhs, tol=0.0, atol=1e-3, max_iter=100)
    residual = batch_norm(tuple(b - h for b, h in zip(rhs, normal(loose.x))))
    assert bool(loose.converged.all()) and float(residual.max()) <= 1e-3
    assert float(batch_dot(rhs, rhs)[0]) == pytest.approx(10.0)


def test_tracked_image_and_non_finite_detection():
    A = Blur(gaussian_kernel(1.0), mode="circular")
    x_true = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = A(x_true)
    result = conjugate_gradient(lambda v: (A.normal(v) + 0.1 * v, A(v)), A.adjoint(y), tol=1e-10, max_iter=200,
                                track=True, aux0=torch.zeros_like(y))
    torch.testing.assert_close(result.aux, A(result.x), rtol=1e-9, atol=1e-9)  # B x kept without applying B again
    assert result.matvecs == result.iterations  # no initial residual pass from x0 = 0
    with pytest.raises(FloatingPointError, match="residual became nan"):
        conjugate_gradient(lambda v: v * float("nan"), torch.ones(1, 3), max_iter=3)


def test_pinv_runs_on_the_library_cg_and_warns_when_cut_short():
    A = Blur(gaussian_kernel(2.0), mode="circular")
    y = A(torch.rand(1, 1, 16, 16, dtype=torch.float64))
    from imaging import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="Blur.pinv: stopped by max_iter=2"):
        A.pinv(y, max_iter=2)
    with pytest.raises(ValueError, match="Blur.pinv: argument 'y' has non-finite values"):
        A.pinv(y * float("nan"))


LAYERS = [("ops", "_ext", "_C", "linalg"), ("operators", "data", "metrics", "plotting"), ("testing",), ("priors",),
          ("solvers", "calibration", "learning")]


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") >= 1 else None
    for level, names in enumerate(LAYERS):
        if part in names:
            return level
    return None


def test_no_module_imports_a_layer_above_it():
    """csrc + ops, then operators (with data / metrics / plotting helpers), priors, then solvers / calibration /
    learning: an import (at any depth, lazy ones included) only goes down or sideways. `imaging.linalg` (the CG,
    batched inner products, ConvergenceWarning) imports nothing from imaging, so it sits at the bottom and
    `LinearOperator.pinv` uses it without reaching up into the solvers."""
    offenders = []
    for path in sorted((ROOT / "imaging").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = _layer(module)
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                if name.startswith("imaging."):
                    target = _layer(name)
                    if target is not None and target > own:
                        offenders.append(f"{module} imports {name}")
    assert not offenders, offenders
