"""Robustness harness (issue 16, "no silent wrong answers"): about 590 bad, extreme and adversarial inputs to the
compiled ops and the public entry points, each run in its own process, each outcome classified.

Every case is a short piece of code (run after `PRELUDE`, so `PRELUDE + code` is its exact reproducer) that sets
`result`, and a declaration of what it expects: the substrings that make an error *clear* (`names`, e.g. "'lam'":
the message names the offending argument or object and what was expected), and/or a `check` of the answer.
Outcomes:

    right          a finite answer that passes the case's check: a pure-torch reference, a closed form or the same
                   problem at unit scale; only where no unique answer exists (a step past the stability limit, an
                   indefinite system), "finite, not blown up and converged=False" is enough; NaN in -> NaN out
                   counts where the library documents it (tv, tv_grad)
    clear error    an exception whose message contains one of the case's `names`
    unclear error  any other exception (also: any network access in the offline cases)
    crash          the process died (signal, abort, non-Python failure)
    hang           no answer within the case's timeout (30 s for a small weight file, 180 s for the memory
                   cases, 60 s otherwise)
    silent wrong   no exception, but a wrong or non-finite answer (a ConvergenceWarning does not excuse an answer
                   that a reference shows wrong), converged=True on a bad iterate, or an impossible argument that
                   is silently accepted

Categories follow the issue's items: 1 calibration, 2 huge-norm operators, 3 derived-adjoint shape ambiguity,
4 nonlinear "linear" operators, 5 TV with NaN pixels, 6 tv_prox extremes, 7 float32 CG with a large ‖A‖,
8 divergence, 9 autograd on raw compiled ops, 10 impossible parameters, 11 missing model folders (sockets
blocked), 12 corrupt / malicious weight files, 13 resident memory after compiled ops, 15 inputs that used to give
unclear errors (absurd ints, shapes, dtypes, devices, empty, 1×1 / 1×N, strided).

Run (one thread; about 3.5 minutes on a 2-core CPU):

    OMP_NUM_THREADS=1 python benchmarks/robustness.py [--category N ...] [--json PATH]
    python benchmarks/robustness.py --case NAME      # one case, in this process: its code and outcome
    python benchmarks/robustness.py --list           # the catalogue

Each case runs in a fresh process forked from a server that imported `imaging` once (`--isolation forkserver`,
the default), or in a fresh interpreter (`--isolation subprocess`, about four times slower), with a scratch folder
for the files it writes (removed afterwards) and an 8 GiB address-space limit, so that a malicious file cannot take
the machine's memory. Results go to out/robustness.json by default.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch sizes its thread pool; the cases inherit it

import torch  # noqa: E402

OUTCOMES = ("right", "clear error", "unclear error", "crash", "hang", "silent wrong")
MEMORY_LIMIT = 8 << 30  # bytes of address space per case

CATEGORIES = {
    1: "calibration: NaN/inf in A or y, A scaled 1e±200",
    2: "huge-norm operators (‖A‖ = 1e10, 1e20 in float32)",
    3: "derived-adjoint shape ambiguity",
    4: "LinearOperator whose forward is not linear",
    5: "tv / tv_grad with NaN or inf pixels",
    6: "tv_prox extremes",
    7: "float32 conjugate gradient with ‖A‖ >= 1e7",
    8: "divergence (steps above the stability limit)",
    9: "autograd on raw compiled op outputs",
    10: "impossible parameters",
    11: "missing model folders, sockets blocked",
    12: "corrupt / malicious weight files",
    13: "resident memory after compiled ops (CPU)",
    15: "ints, shapes, dtypes, devices, empty, 1x1/1xN, strided inputs",
}

PRELUDE = """\
import math, os, tempfile, warnings
import torch
import imaging
from imaging import ops
torch.set_num_threads(1)
NAN, INF = float("nan"), float("inf")


def rand(*shape, dtype=torch.float64, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
"""


@dataclass(frozen=True)
class Case:
    """One adversarial input. `code` runs after PRELUDE and sets `result`; `names`: substrings (any, case-
    insensitive) that make an error clear; `check`: an expression, True when the answer is right (else False or a
    reason); without a check any answer is silently wrong. `nonfinite_ok`: the check itself judges NaN/inf in the
    answer (NaN in -> NaN out, a tv_prox gap), instead of the default "any NaN/inf is wrong"."""

    category: int
    name: str
    code: str
    names: tuple[str, ...] = ()
    check: str | None = None
    nonfinite_ok: bool = False
    timeout: float = 60.0

    @property
    def expects(self) -> str:
        if self.check is None:
            return f"error naming {' / '.join(self.names)}"
        return "answer" + (f" or error naming {' / '.join(self.names)}" if self.names else "")

    def source(self) -> str:
        return PRELUDE + self.code


# --- checks available to the cases' `check` expressions -----------------------------------------------------------
def rel(a, b) -> float:
    """‖a − b‖ / ‖b‖ in double precision (‖a − b‖ when b = 0)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    wide = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
    a, b = a.detach().to(wide).cpu(), b.detach().to(wide).cpu()
    if a.shape != b.shape:
        return math.inf
    scale = float(torch.linalg.vector_norm(b))
    difference = float(torch.linalg.vector_norm(a - b))
    return difference / scale if scale > 0 else difference


def close(a, b, rtol: float = 1e-6):
    """True, or why not."""
    error = rel(a, b)
    return True if error <= rtol else f"relative error {error:.3g} > {rtol:g}"


def matches(out, ref, rtol: float = 1e-6):
    """Same shape, non-finite at the same places (NaN/inf in -> NaN/inf out), close where finite."""
    if tuple(out.shape) != tuple(ref.shape):
        return f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    finite_out, finite_ref = torch.isfinite(out), torch.isfinite(ref)
    if not bool((finite_out == finite_ref).all()):
        return (f"non-finite at {int((~finite_out).sum())} entries, the reference at {int((~finite_ref).sum())} "
                f"(the places differ)")
    return close(out[finite_ref], ref[finite_ref], rtol) if bool(finite_ref.any()) else True


def carries(out, x, rtol: float = 1e-6, ref=None):
    """NaN/inf pixels of x are non-finite in out (same shape), and out matches `ref` where both are finite."""
    bad = ~torch.isfinite(x)
    if tuple(out.shape) != tuple(x.shape):
        return f"shape {tuple(out.shape)} != {tuple(x.shape)}"
    if bool(torch.isfinite(out[bad]).any()):
        return "a NaN/inf pixel got a finite value (the non-finite input is hidden)"
    if ref is not None:
        both = torch.isfinite(out) & torch.isfinite(ref)
        return close(out[both], ref[both], rtol)
    return True


def planes_carry(out, x, ref, rtol: float = 1e-6):
    """Per-plane values (N, C): non-finite exactly on the planes of x holding a NaN/inf, equal to ref elsewhere."""
    bad = ~torch.isfinite(x).flatten(2).all(2)
    if tuple(out.shape) != tuple(bad.shape):
        return f"shape {tuple(out.shape)} != {tuple(bad.shape)}"
    if not bool((~torch.isfinite(out) == bad).all()):
        return f"non-finite planes {(~torch.isfinite(out)).nonzero().tolist()}, expected {bad.nonzero().tolist()}"
    return close(out[~bad], ref[~bad], rtol)


def bounded(result, bound: float, ref=None, rtol: float = 1e-3, schedule: bool = False):
    """A run with steps past the stability limit: the iterate did not blow up (it stays below `bound`), and it
    claims convergence only with the answer `ref` of a stable run (or, for a fixed-schedule solver whose converged
    means "ran its schedule", `schedule`)."""
    x = result.x if hasattr(result, "x") else result
    if float(x.abs().max()) > bound:
        return f"the iterate blew up to {float(x.abs().max()):.3g} (converged={getattr(result, 'converged', None)})"
    if not _converged(result) or schedule:
        return True
    return close(x, ref, rtol) if ref is not None else "converged=True on an unstable iteration"


def _converged(result) -> bool:
    converged = getattr(result, "converged", False)
    return bool(converged.all()) if hasattr(converged, "all") else bool(converged)


def near(result, ref, truth, attribute: str = "x", scale: float = 1.0):
    """A calibration estimate (times `scale`) as close to the truth as the unperturbed run's, or within 1e-6 of it."""
    got, want = getattr(result, attribute) * scale, getattr(ref, attribute)
    if rel(got, want) <= 1e-6 or rel(got, truth) <= 10 * rel(want, truth) + 1e-6:
        return True
    return (f"{attribute}: error {rel(got, truth):.3g} against the truth, the unscaled run's {rel(want, truth):.3g}"
            f" (converged={getattr(result, 'converged', None)})")


def both(*verdicts):
    """The first failing verdict, else True."""
    return next((v for v in verdicts if v is not True), True)


def gradient(got, want, rtol: float = 1e-8):
    """A gradient that exists (not None: no silently missing backward) and matches the reference."""
    if got is None:
        return "the input got no gradient (None) although the output required grad"
    return close(got, want, rtol)


def not_differentiable(out, x):
    """For ops without a backward: the output does not require grad, or its backward does not silently give
    nothing (a gradient of None / zeros for an input that changes the output)."""
    outputs = [t for t in (out if isinstance(out, (tuple, list)) else (out,))
               if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outputs:
        return True
    try:
        grads = torch.autograd.grad(sum(t.sum() for t in outputs if t.is_floating_point()), x, allow_unused=True)
    except RuntimeError:
        return True  # refused at backward time
    if grads[0] is None or not bool(grads[0].abs().sum() > 0):
        return f"the output claims requires_grad=True but backward gives {'None' if grads[0] is None else 'zeros'}"
    return True


def prox_solved(result, want, rtol: float = 1e-6, scale: float = 1.0):
    """A tv_prox answer (x, p, gap, iterations) whose x (times `scale`) matches `want`; else what the op reported."""
    verdict = close(result[0].double() * scale, want, rtol)
    if verdict is True:
        return True
    return f"{verdict} after {int(result[3])} iterations, reported relative gap {float(result[2].max()):.3g}"


def cg_residual_honest(result, normal, rhs, tol: float):
    """converged=True only if the returned x really solves H x = b to the tolerance (with a little slack)."""
    residual = float(torch.linalg.vector_norm(normal(result.x) - rhs) / torch.linalg.vector_norm(rhs))
    if _converged(result) and residual > 10 * tol:
        return f"converged=True with a relative residual {residual:.3g}"
    return True


CHECKS = {f.__name__: f for f in (rel, close, matches, carries, planes_carry, bounded, near, both, gradient,
                                  not_differentiable, prox_solved, cg_residual_honest)}


# --- running one case ------------------------------------------------------------------------------------------
def _answer_values(value):
    """The tensors and numbers an answer holds (a tensor, tuple, dict, a Result's x and gains)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _answer_values(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _answer_values(item)
    else:
        for attribute in ("x", "gains"):
            if isinstance(getattr(value, attribute, None), torch.Tensor):
                yield getattr(value, attribute)


def _non_finite(value) -> str | None:
    for item in _answer_values(value):
        if isinstance(item, torch.Tensor):
            if item.device.type == "meta" or not (item.is_floating_point() or item.is_complex()):
                continue
            if item.numel() and not bool(torch.isfinite(item).all()):
                return f"the answer holds non-finite values (shape {tuple(item.shape)})"
        elif not math.isfinite(item):
            return f"the answer is {item}"
    return None


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')} on {value.device.type}"
    if hasattr(value, "x") and isinstance(getattr(value, "x"), torch.Tensor):
        return f"{type(value).__name__}(x={_describe(value.x)}, converged={getattr(value, 'converged', None)})"
    if isinstance(value, (tuple, list)):
        return f"({', '.join(_describe(v) for v in value)})"
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:600]}"


def execute(case: Case, scratch: str | None = None) -> dict:
    """Run one case in this process and classify it; the files it writes through `tempfile` go to `scratch`."""
    namespace: dict = {"__name__": "__case__"}
    tempfile.tempdir = scratch
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            exec(compile(case.source(), f"<case {case.name}>", "exec"), namespace)
            error = None
        except Exception as caught:  # noqa: BLE001 - every exception is an outcome to classify
            error = caught
    seconds = time.perf_counter() - start
    report = {"seconds": round(seconds, 3),
              "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in seen
                                  if not issubclass(w.category, DeprecationWarning)})[:4]}
    network = namespace.get("NETWORK_ATTEMPTS")
    if error is not None:
        message = _message(error)
        if network:
            return {**report, "outcome": "unclear error", "message": f"tried the network {network[:2]}; {message}"}
        clear = any(name.lower() in str(error).lower() for name in case.names)
        return {**report, "outcome": "clear error" if clear else "unclear error", "message": message}
    if "result" not in namespace:
        return {**report, "outcome": "harness error", "message": "the case set no `result`"}
    result = namespace["result"]
    if network:
        return {**report, "outcome": "silent wrong", "message": f"answered after trying the network {network[:2]}"}
    if case.check is None:
        return {**report, "outcome": "silent wrong",
                "message": f"expected an error naming {' / '.join(case.names)}, got {_describe(result)}"}
    problem = None if case.nonfinite_ok else _non_finite(result)
    if problem is None:
        try:
            verdict = eval(case.check, {**namespace, **CHECKS})  # noqa: S307 - the catalogue's own expressions
        except Exception as caught:  # noqa: BLE001
            return {**report, "outcome": "harness error", "message": f"check failed: {_message(caught)}"}
        problem = None if verdict is True else (verdict or "the check failed")
    if problem is None:
        report.update(outcome="right", message=_describe(result))
        if hasattr(result, "converged") and not _converged(result):
            report["not_converged"] = True  # right, and honest about it
        return report
    return {**report, "outcome": "silent wrong", "message": f"{problem}; got {_describe(result)}"}


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _child(name: str, scratch: str, connection) -> None:
    _limit_memory()
    connection.send(execute(catalogue()[name], scratch))
    connection.close()


def _died(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without an answer"


def run_isolated(context, case: Case) -> dict:
    """Run a case in its own process (forked from the server, or a fresh interpreter when context is None), with a
    scratch folder for its files that is removed afterwards, whatever happened."""
    scratch = tempfile.mkdtemp(prefix="robustness-")
    try:
        return _run_forked(context, case, scratch) if context is not None else _run_subprocess(case, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_forked(context, case: Case, scratch: str) -> dict:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(case.name, scratch, sender), daemon=True)
    start = time.perf_counter()
    process.start()
    sender.close()
    report = None
    if receiver.poll(case.timeout):
        try:
            report = receiver.recv()
        except EOFError:
            report = None
    else:
        process.kill()
        process.join()
        return {"outcome": "hang", "message": f"no answer within {case.timeout:g} s", "seconds": case.timeout}
    process.join(30)
    if process.is_alive():
        process.kill()
        process.join()
    if report is None:
        return {"outcome": "crash", "message": _died(process.exitcode),
                "seconds": round(time.perf_counter() - start, 3)}
    return report


def _run_subprocess(case: Case, scratch: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--case", case.name, "--child", "--scratch", scratch]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=case.timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "message": f"no answer within {case.timeout:g} s", "seconds": case.timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"outcome": "crash", "message": f"{_died(done.returncode)}; {done.stderr.strip()[-300:]}",
                "seconds": None}
    return json.loads(lines[-1])


# --- the catalogue ---------------------------------------------------------------------------------------------
def _code(*parts: str) -> str:
    return "\n".join(textwrap.dedent(part).strip("\n") for part in parts if part) + "\n"


class _Catalogue:
    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}

    def add(self, category: int, name: str, *code: str, names: tuple[str, ...] | str = (), check: str | None = None,
            nonfinite_ok: bool = False, timeout: float = 60.0) -> None:
        name = f"{category}/{name}"
        if name in self.cases:
            raise ValueError(f"duplicate case name {name}")
        names = (names,) if isinstance(names, str) else tuple(names)
        self.cases[name] = Case(category, name, _code(*code), names, check, nonfinite_ok, timeout)


_CACHE: dict[str, Case] = {}


def catalogue() -> dict[str, Case]:
    if not _CACHE:
        book = _Catalogue()
        for build in (_calibration, _huge_norm, _ambiguity, _nonlinear, _nan_pixels, _tv_prox, _float32_cg,
                      _divergence, _raw_autograd, _impossible, _offline, _corrupt_files, _memory, _unclear_inputs):
            build(book)
        _CACHE.update(book.cases)
    return _CACHE


# 1 -----------------------------------------------------------------------------------------------------------------
CALIBRATION = """
from imaging.calibration import (PGD, Alternating, LeastSquares, Spectral, alternating, calibrate, least_squares,
                                 pgd, spectral, uncalibrated)
A = randn(6, 8, 5)                                # p = 6 snapshots, m = 8 sensors, n = 5 pixels
x_true = rand(5, seed=1) + 0.5
gains_true = 1 + 0.4 * (rand(8, seed=2) - 0.5)
gains_true = gains_true / gains_true.mean()
y = gains_true * torch.einsum("lmn,n->lm", A, x_true)
"""
CALIBRATED = "both(near(result, ref, x_true, 'x', {scale}), near(result, ref, gains_true, 'gains'))"
# what the library says when a scale is beyond the precision: "... rescale A (and y) or use float64",
# "... an extreme scale (e.g. normalise A and y)"
OVERFLOW = ("rescale", "normalise", "float64", "precision")


def _calibration(book: _Catalogue) -> None:
    measurements = ("measurements", "'y'")
    poisons = {"A-nan": ("A[0, 1, 2] = NAN", ("'A'",)), "A-inf": ("A[2, 0, 4] = INF", ("'A'",)),
               "y-nan": ("y[3, 5] = NAN", measurements), "y-neginf": ("y[0, 0] = -INF", measurements)}
    scalings = {"both-1e200": ("1e200", "1e200", "1.0"), "both-1e-200": ("1e-200", "1e-200", "1.0"),
                "A-only-1e200": ("1e200", "1.0", "1e200")}
    for method in ("pgd", "least_squares", "spectral", "alternating", "uncalibrated"):
        for label, (poison, names) in poisons.items():
            book.add(1, f"{method}-{label}", CALIBRATION, poison, f"result = calibrate(y, A, method={method})",
                     names=names)
        for label, (scale_a, scale_y, back) in scalings.items():
            book.add(1, f"{method}-{label}", CALIBRATION, f"""
                ref = calibrate(y, A, method={method})
                result = calibrate(y * {scale_y}, A * {scale_a}, method={method})""",
                     names=OVERFLOW, check=CALIBRATED.format(scale=back))
    for solver in ("PGD", "LeastSquares", "Spectral", "Alternating"):
        book.add(1, f"{solver}-y-nan", CALIBRATION, "y[1, 1] = NAN", f"result = calibrate(y, A, method={solver})",
                 names=("measurements", "'y'"))
        for label in ("both-1e200", "both-1e-200"):
            scale = scalings[label][0]
            book.add(1, f"{solver}-{label}", CALIBRATION, f"""
                ref = calibrate(y, A, method={solver})
                result = calibrate(y * {scale}, A * {scale}, method={solver})""",
                     names=OVERFLOW, check=CALIBRATED.format(scale="1.0"))
    for method in ("pgd", "least_squares", "alternating"):
        book.add(1, f"{method}-float32-1e20", CALIBRATION, f"""
            ref = calibrate(y.float(), A.float(), method={method})
            result = calibrate((y * 1e20).float(), (A * 1e20).float(), method={method})""",
                 names=OVERFLOW, check=CALIBRATED.format(scale="1.0"))
    book.add(1, "pgd-batch-one-nan-problem", CALIBRATION, """
        Y = torch.stack([y, y]); Y[1, 2, 3] = NAN
        result = calibrate(Y, A, method=pgd)""", names=("measurements",))
    book.add(1, "least_squares-complex-A-inf", CALIBRATION, """
        Ac = torch.complex(A, randn(6, 8, 5, seed=4)); Ac[0, 0, 0] = complex(INF, 0)
        result = calibrate(y.to(torch.complex128), Ac, method=least_squares)""", names=("'A'",))
    book.add(1, "pgd-dct-sensing-nan-signs", CALIBRATION, """
        from imaging.calibration import RandomMaskDCTSensing
        S = RandomMaskDCTSensing.random(4, (3, 3))
        Y = S(rand(1, 9, seed=5), rand(1, 9, seed=6) + 0.5)[0]
        S.signs[0, 0, 0] = NAN
        result = calibrate(Y, S, method=pgd)""", names=("'signs'", "sensing operator"))
    book.add(1, "pgd-y-only-1e-300", CALIBRATION, """
        ref = calibrate(y, A, method=pgd)
        result = calibrate(y * 1e-300, A, method=pgd)""", names=OVERFLOW,
             check="both(near(result, ref, x_true, 'x', 1e300), near(result, ref, gains_true, 'gains'))")


# 2 -----------------------------------------------------------------------------------------------------------------
HUGE = """
from imaging.operators import Blur, Identity, gaussian_kernel
from imaging.priors import TotalVariation
from imaging.solvers import FISTA, PDHG, AcceleratedGradient, PnPADMM, PnPPGD, least_squares, tv_reconstruct
x_true = rand(1, 1, 16, 16, dtype=torch.float32)
B = Blur(gaussian_kernel(1.0, dtype=torch.float32))
y = B(x_true) + 0.01 * randn(1, 1, 16, 16, dtype=torch.float32, seed=3)
prox = lambda v: imaging.tv_denoise(v, 0.02)
"""
# (reference call at unit scale, the same problem with A and y times c and the weights times c²)
HUGE_SOLVES = {
    "least_squares": ("least_squares(B, y, lam=0.05, warn=False)",
                      "least_squares(c * B, c * y, lam=0.05 * c ** 2, warn=False)"),
    "FISTA": ("FISTA(B, y, 0.02, max_iter=60).run(warn=False)",
              "FISTA(c * B, c * y, 0.02 * c ** 2, max_iter=60).run(warn=False)"),
    "PDHG": ("PDHG(B, y, 0.02, max_iter=300).run(warn=False)",
             "PDHG(c * B, c * y, 0.02 * c ** 2, max_iter=300).run(warn=False)"),
    "tv_reconstruct": ("tv_reconstruct(B, y, 0.02, max_iter=300)", "tv_reconstruct(c * B, c * y, 0.02 * c ** 2, "
                                                                   "max_iter=300)"),
    "AcceleratedGradient": ("AcceleratedGradient(B, y, TotalVariation(eps=0.01), 0.02, max_iter=100).run(warn=False)",
                            "AcceleratedGradient(c * B, c * y, TotalVariation(eps=0.01), 0.02 * c ** 2, "
                            "max_iter=100).run(warn=False)"),
    "PnPPGD": ("PnPPGD(B, y, prox, max_iter=30).run(warn=False)",
               "PnPPGD(c * B, c * y, prox, max_iter=30).run(warn=False)"),
    "PnPADMM": ("PnPADMM(B, y, prox, rho=0.5, max_iter=20).run(warn=False)",
                "PnPADMM(c * B, c * y, prox, rho=0.5 * c ** 2, max_iter=20).run(warn=False)"),
    "pinv": ("B.pinv(y, warn=False)", "(c * B).pinv(c * y, warn=False)"),
}


def _huge_norm(book: _Catalogue) -> None:
    for scale in ("1e10", "1e20"):
        for solver, (reference, scaled) in HUGE_SOLVES.items():
            if scale == "1e20" and solver in ("PnPADMM", "pinv"):
                continue
            book.add(2, f"{solver}-{scale}", HUGE, f"c = {scale}", f"ref = {reference}", f"result = {scaled}",
                     names=OVERFLOW, check="close(getattr(result, 'x', result), getattr(ref, 'x', ref), 2e-2)")
        book.add(2, f"norm-{scale}", HUGE, f"c = {scale}", "result = (c * B).norm(x_true) / c",
                 names=OVERFLOW, check="close(result, B.norm(x_true), 1e-4)")
    book.add(2, "least_squares-identity-1e10", HUGE, "result = least_squares(1e10 * Identity(), 1e10 * x_true)",
             names=OVERFLOW, check="close(result.x, x_true, 1e-5)")


# 3 -----------------------------------------------------------------------------------------------------------------
AMBIGUOUS = """
from imaging.operators import Downsampling, Identity, LinearOperator, estimate_noise
from imaging.priors import TotalVariation
from imaging.solvers import FISTA, PDHG, AcceleratedGradient, PnPPGD, least_squares, tv_reconstruct
A = Downsampling(2)
y64 = A(rand(1, 1, 64, 64))
y63 = A(rand(1, 1, 63, 63, seed=1))          # the same output shape: 32 x 32
"""
SUBSAMPLE = """
from imaging.operators import LinearOperator
from imaging.solvers import least_squares


class Subsample(LinearOperator):
    def forward(self, x):
        return x[..., ::2, ::2]
"""
AMBIGUITY = ("ambiguous", "in_shape")


def _ambiguity(book: _Catalogue) -> None:
    calls = {"least_squares": "least_squares(A, y64, lam=0.01)", "FISTA": "FISTA(A, y64, 0.01).run()",
             "PDHG": "PDHG(A, y64, 0.01).run()", "tv_reconstruct": "tv_reconstruct(A, y64, 0.01)",
             "AcceleratedGradient": "AcceleratedGradient(A, y64, TotalVariation(eps=0.1), 0.01).run()",
             "PnPPGD": "PnPPGD(A, y64, lambda v: v).run()", "adjoint": "A.adjoint(y64)", "H": "A.H(y64)",
             "pinv": "A.pinv(y64)", "norm": "A.norm(rand(1, 1, 64, 64))", "estimate_noise": "estimate_noise(y64, A)",
             "composition": "least_squares(Identity() @ A, y64, lam=0.01)",
             "least_squares-x0": "least_squares(A, y64, lam=0.01, x0=torch.zeros(1, 1, 64, 64))"}
    for label, call in calls.items():
        book.add(3, f"downsampling-{label}", AMBIGUOUS, f"result = {call}", names=AMBIGUITY)
    book.add(3, "downsampling-declared-in_shape", AMBIGUOUS, """
        A.in_shape = (1, 64, 64)
        fresh = Downsampling(2); fresh(rand(1, 1, 64, 64))
        ref = least_squares(fresh, y64, lam=0.01)
        result = least_squares(A, y64, lam=0.01)""", check="close(result.x, ref.x, 1e-8)")
    book.add(3, "downsampling-declared-wrong-in_shape", AMBIGUOUS, """
        A.in_shape = (1, 60, 60)
        result = least_squares(A, y64, lam=0.01)""", names=("in_shape", "'y'"))
    book.add(3, "downsampling-one-shape-63", """
        from imaging.operators import Downsampling
        from imaging.solvers import least_squares
        A = Downsampling(2)
        y = A(rand(1, 1, 63, 63))
        result = least_squares(A, y, lam=1e-4)""",
             check="both(result.x.shape == (1, 1, 63, 63) or 'wrong shape', close(A(result.x), y, 0.05))")
    book.add(3, "downsampling-never-applied", """
        from imaging.operators import Downsampling
        from imaging.solvers import least_squares
        y = rand(1, 1, 32, 32)
        result = least_squares(Downsampling(2), y, lam=1e-4)""",
             check="both(result.x.shape == (1, 1, 64, 64) or 'wrong shape', close(Downsampling(2)(result.x), y, 0.05))")
    book.add(3, "downsampling-unseen-output-shape", AMBIGUOUS, "result = A.adjoint(rand(1, 1, 16, 16))",
             check="result.shape == (1, 1, 32, 32) or 'wrong shape'")
    book.add(3, "custom-two-input-shapes", SUBSAMPLE, """
        S = Subsample(); S(rand(1, 1, 8, 8)); y = S(rand(1, 1, 7, 7))
        result = least_squares(S, y, lam=0.1)""", names=AMBIGUITY)
    book.add(3, "custom-never-applied", SUBSAMPLE, "result = least_squares(Subsample(), rand(1, 1, 4, 4), lam=0.1)",
             names=("input shape",))
    book.add(3, "custom-x0-tells-the-shape", SUBSAMPLE, """
        y = rand(1, 1, 4, 4)
        result = least_squares(Subsample(), y, lam=1e-3, x0=torch.zeros(1, 1, 8, 8))""",
             check="both(result.x.shape == (1, 1, 8, 8) or 'wrong shape', close(result.x[..., ::2, ::2], y, 1e-2))")
    book.add(3, "custom-declared-in_shape", SUBSAMPLE, """
        class Declared(Subsample):
            def __init__(self):
                super().__init__(in_shape=(1, 8, 8))
        S = Declared(); S(rand(1, 1, 7, 7))
        y = rand(1, 1, 4, 4)
        result = least_squares(S, y, lam=1e-3)""",
             check="both(result.x.shape == (1, 1, 8, 8) or 'wrong shape', close(result.x[..., ::2, ::2], y, 1e-2))")
    book.add(3, "custom-flatten-two-shapes", """
        from imaging.operators import LinearOperator
        from imaging.solvers import least_squares
        class Flatten(LinearOperator):
            def forward(self, x):
                return x.flatten(1)
        F = Flatten(); F(rand(1, 1, 8, 8)); y = F(rand(1, 1, 4, 16))
        result = least_squares(F, y, lam=0.1)""", names=AMBIGUITY)


# 4 -----------------------------------------------------------------------------------------------------------------
NONLINEAR = """
from imaging.operators import Blur, FunctionOperator, LinearOperator, Operator, gaussian_kernel
from imaging.priors import TotalVariation
from imaging.solvers import FISTA, PDHG, AcceleratedGradient, PnPADMM, PnPPGD, least_squares, tv_reconstruct


class Square(LinearOperator):
    def forward(self, x):
        return x ** 2


A = Square()
y = A(rand(1, 1, 8, 8))
"""
NOT_LINEAR = ("not linear",)


def _nonlinear(book: _Catalogue) -> None:
    calls = {"least_squares": "least_squares(A, y)", "FISTA": "FISTA(A, y, 0.01).run()",
             "PDHG": "PDHG(A, y, 0.01).run()", "tv_reconstruct": "tv_reconstruct(A, y, 0.01)",
             "AcceleratedGradient": "AcceleratedGradient(A, y, TotalVariation(eps=0.1), 0.01).run()",
             "PnPADMM": "PnPADMM(A, y, lambda v: v).run()", "PnPPGD": "PnPPGD(A, y, lambda v: v).run()",
             "pinv": "A.pinv(y)"}
    for label, call in calls.items():
        book.add(4, f"square-{label}", NONLINEAR, f"result = {call}", names=NOT_LINEAR)
    variants = {"affine": "x + 1", "relu": "torch.relu(x - 0.5)", "abs": "(x - 0.5).abs()"}
    for label, expression in variants.items():
        book.add(4, f"{label}-least_squares", NONLINEAR, f"""
            class Map(LinearOperator):
                def forward(self, x):
                    return {expression}
            result = least_squares(Map(), y, lam=0.1)""", names=NOT_LINEAR)
    book.add(4, "function-operator-square", NONLINEAR,
             "result = least_squares(FunctionOperator(lambda x: x ** 2), y, lam=0.1)", names=NOT_LINEAR)
    book.add(4, "composition-blur-square", NONLINEAR,
             "result = least_squares(Blur(gaussian_kernel(1.0)) @ A, y, lam=0.1)", names=NOT_LINEAR)
    book.add(4, "operator-subclass-least_squares", NONLINEAR, """
        class Sq(Operator):
            def forward(self, x):
                return x ** 2
        result = least_squares(Sq(), y)""", names=("LinearOperator",))
    book.add(4, "diffpir-square", NONLINEAR, """
        from imaging.priors import DiffusionPrior
        from imaging.solvers import DiffPIR
        y16 = A(rand(1, 1, 16, 16))
        result = DiffPIR(A, y16, DiffusionPrior.pretrained("natural"), noise_level=0.01, steps=3).run(warn=False)""",
             names=NOT_LINEAR)
    for method in ("pgd", "least_squares"):
        book.add(4, f"calibration-squared-sensing-{method}", """
            from imaging.calibration import GainSensing, calibrate, least_squares, pgd
            class SquaredSensing(GainSensing):
                def __init__(self, A):
                    super().__init__(A.shape[0], A.shape[1], A.shape[2])
                    self.register_buffer("A", A)
                def sense(self, x):
                    return torch.einsum("lmn,bn->blm", self.A, x) ** 2
            S = SquaredSensing(randn(6, 8, 5))
            y = S(rand(1, 5, seed=1) + 0.5)[0]""", f"result = calibrate(y, S, method={method})", names=NOT_LINEAR)


# 5 -----------------------------------------------------------------------------------------------------------------
NAN_PIXELS = """
from imaging.ops.tv import _tv_grad_torch, _tv_torch
"""


def _nan_pixels(book: _Catalogue) -> None:
    layouts = {  # label: (shape, poisoned index, poison, dtype, isotropic, eps)
        "nan-interior-f64-iso": ("(2, 2, 7, 9)", "[1, 0, 3, 4]", "NAN", "torch.float64", True, 0.0),
        "nan-last-pixel-f32-aniso": ("(2, 2, 7, 9)", "[0, 1, 6, 8]", "NAN", "torch.float32", False, 0.0),
        "inf-interior-f64-smooth": ("(2, 2, 7, 9)", "[1, 1, 2, 2]", "INF", "torch.float64", True, 0.1),
        "neginf-first-pixel-f32": ("(2, 2, 7, 9)", "[0, 0, 0, 0]", "-INF", "torch.float32", True, 0.0),
        "nan-1x1-planes": ("(2, 2, 1, 1)", "[1, 0, 0, 0]", "NAN", "torch.float64", True, 0.0),
        "nan-1xN-plane": ("(1, 2, 1, 9)", "[0, 1, 0, 8]", "NAN", "torch.float32", False, 0.1),
        "nan-volume": ("(1, 2, 4, 5, 6)", "[0, 1, 3, 4, 5]", "NAN", "torch.float64", True, 0.0),
    }
    for label, (shape, index, poison, dtype, isotropic, eps) in layouts.items():
        setup = _code(NAN_PIXELS, f"x = rand(*{shape}, dtype={dtype})", f"x{index} = {poison}")
        book.add(5, f"tv-{label}", setup, f"result = ops.tv(x, {eps}, {isotropic})",
                 check=f"planes_carry(result, x, _tv_torch(torch.nan_to_num(x), {eps}, {isotropic}), 1e-5)",
                 nonfinite_ok=True, names=("'x'",))
        book.add(5, f"tv_grad-{label}", setup, f"result = ops.tv_grad(x, {eps}, {isotropic})",
                 check=f"carries(result, x, 1e-5)", nonfinite_ok=True, names=("'x'",))
    setup = _code(NAN_PIXELS, "x = rand(2, 2, 7, 9)", "x[1, 0, 3, 4] = NAN")
    book.add(5, "tv_grad-clean-planes-match-reference", setup, "result = ops.tv_grad(x, 0.0, True)",
             check="matches(result[:1], _tv_grad_torch(x[:1], 0.0, True), 1e-10)", nonfinite_ok=True)
    book.add(5, "tv_hvp-nan", setup, "result = ops.tv_hvp(x, rand(2, 2, 7, 9, seed=1), 0.1)",
             check="carries(result, x)", nonfinite_ok=True, names=("'x'",))
    book.add(5, "tv-backward-nan", setup, """
        x.requires_grad_()
        ops.tv(x, 0.1).sum().backward()
        result = x.grad""", check="carries(result, x.detach())", nonfinite_ok=True)
    book.add(5, "TotalVariation-value-nan", setup, "from imaging.priors import TotalVariation",
             "result = TotalVariation().value(x)", check="bool(result[1].isnan()) and bool(result[0].isfinite())",
             nonfinite_ok=True, names=("'x'",))
    book.add(5, "SmoothedTV-grad-nan", setup, "from imaging.priors import SmoothedTV",
             "result = SmoothedTV().double().grad(x)", check="carries(result, x)", nonfinite_ok=True, names=("'x'",))
    book.add(5, "finite_diff-nan", setup, "from imaging.ops.finite_diff import _finite_diff_torch",
             "result = ops.finite_diff(x)", check="matches(result, _finite_diff_torch(x))", nonfinite_ok=True)
    book.add(5, "finite_diff_adjoint-nan", setup, "from imaging.ops.finite_diff import _finite_diff_adjoint_torch",
             "g = randn(2, 2, 2, 7, 9); g[0, 1, 0, 2, 2] = NAN", "result = ops.finite_diff_adjoint(g)",
             check="matches(result, _finite_diff_adjoint_torch(g))", nonfinite_ok=True)
    book.add(5, "tv-float16-nan", setup, "result = ops.tv(x.half(), 0.0)",
             check="planes_carry(result, x, _tv_torch(torch.nan_to_num(x)).half(), 1e-2)", nonfinite_ok=True,
             names=("'x'",))
    book.add(5, "FieldOfExperts-value-nan", setup, "from imaging.priors import FieldOfExperts",
             "result = FieldOfExperts.pretrained().value(x)", names=("'x'",))
    book.add(5, "tv_denoise-nan", setup, "result = imaging.tv_denoise(x, 0.1)", names=("'y'",))
    book.add(5, "least_squares-nan-y", setup, "from imaging.operators import Identity",
             "result = imaging.least_squares(Identity(), x, lam=0.1)", names=("'y'",))
    book.add(5, "PDHG-nan-y", setup, "from imaging.operators import Identity",
             "result = imaging.tv_reconstruct(Identity(), x, 0.1)", names=("'y'",))


# 6 -----------------------------------------------------------------------------------------------------------------
PROX = """
from imaging.ops import tv_prox
from imaging.ops.tv import _tv_prox_torch, plane_weights
y = rand(1, 1, 16, 16)
"""


def _tv_prox(book: _Catalogue) -> None:
    errors = {
        "p0-inf": ("tv_prox(y, 0.1, p0=torch.full((1, 1, 2, 16, 16), INF))", "'p0'"),
        "p0-nan": ("tv_prox(y, 0.1, p0=torch.full((1, 1, 2, 16, 16), NAN))", "'p0'"),
        "p0-wrong-shape": ("tv_prox(y, 0.1, p0=torch.zeros(1, 1, 2, 8, 8))", "'p0'"),
        "lower-inf": ("tv_prox(y, 0.1, lower=INF)", "'lower'"),
        "upper-neginf": ("tv_prox(y, 0.1, upper=-INF)", "'upper'"),
        "lower-nan": ("tv_prox(y, 0.1, lower=NAN)", "'lower'"),
        "upper-nan": ("tv_prox(y, 0.1, upper=NAN)", "'upper'"),
        "lower-above-upper": ("tv_prox(y, 0.1, lower=1.0, upper=0.0)", "'lower'"),
        "lam-3e38-float32": ("tv_prox(y.float(), 3e38)", "'lam'"),
        "lam-inf": ("tv_prox(y, INF)", "'lam'"),
        "lam-nan": ("tv_prox(y, NAN)", "'lam'"),
        "lam-negative": ("tv_prox(y, -0.1)", "'lam'"),
        "lam-wrong-length": ("tv_prox(y, torch.full((3,), 0.1))", "'lam'"),
        "lam-nan-in-tensor": ("tv_prox(torch.cat([y, y]), torch.tensor([0.1, NAN]))", "'lam'"),
        "y-nan": ("tv_prox(torch.where(y > 0.9, NAN, y), 0.1)", "'y'"),
        "y-inf": ("tv_prox(torch.where(y > 0.9, INF, y), 0.1)", "'y'"),
        "tol-nan": ("tv_prox(y, 0.1, tol=NAN)", "'tol'"),
        "tol-negative": ("tv_prox(y, 0.1, tol=-1.0)", "'tol'"),
        "max_iter-negative": ("tv_prox(y, 0.1, max_iter=-1)", "'max_iter'"),
        "max_iter-float": ("tv_prox(y, 0.1, max_iter=2.5)", "'max_iter'"),
        "y-int": ("tv_prox((y * 10).long(), 0.1)", "'y'"),
        "y-complex": ("tv_prox(y.to(torch.complex128), 0.1)", "'y'"),
    }
    for label, (call, name) in errors.items():
        book.add(6, label, PROX, f"result = {call}", names=(name,))
    answers = {
        "tiny-1e-20": ("unit = tv_prox(y, 0.1)\nresult = tv_prox(y * 1e-20, 0.1e-20)",
                       "both(prox_solved(result, unit[0], 1e-6, 1e20), "
                       "int(result[3]) == int(unit[3]) or 'iterations')"),
        "tiny-1e-300": ("unit = tv_prox(y, 0.1)\nresult = tv_prox(y * 1e-300, 0.1e-300)",
                        "prox_solved(result, unit[0], 1e-5, 1e300)"),
        "tiny-float32-1e-30": ("unit = tv_prox(y.float(), 0.1)\nresult = tv_prox(y.float() * 1e-30, 0.1e-30)",
                               "prox_solved(result, unit[0], 1e-3, 1e30)"),
        "subnormal-float32-1e-41": ("unit = tv_prox(y.float(), 0.1)\nresult = tv_prox(y.float() * 1e-41, 1e-42)",
                                    "prox_solved(result, unit[0], 0.05, 1e41)"),
        "huge-1e150": ("unit = tv_prox(y, 0.1)\nresult = tv_prox(y * 1e150, 0.1e150)",
                       "prox_solved(result, unit[0], 1e-5, 1e-150)"),
        "huge-float32-1e30": ("unit = tv_prox(y.float(), 0.1)\nresult = tv_prox(y.float() * 1e30, 0.1e30)",
                              "prox_solved(result, unit[0], 1e-3, 1e-30)"),
        "zero-image": ("result = tv_prox(torch.zeros(1, 1, 16, 16), 0.1)", "bool((result[0] == 0).all())"),
        "lam-zero": ("result = tv_prox(y, 0.0)", "prox_solved(result, y, 1e-12)"),
        "lam-1e300-float64": ("result = tv_prox(y, 1e300)", "prox_solved(result, y.mean().expand_as(y), 1e-3)"),
        "lam-1e30-float32": ("result = tv_prox(y.float(), 1e30)",
                             "prox_solved(result, y.float().mean().expand_as(y), 1e-3)"),
        "lower-equals-upper": ("result = tv_prox(y, 0.1, lower=0.5, upper=0.5)",
                               "bool((result[0] == 0.5).all())"),
        "max_iter-2**70": ("result = tv_prox(y, 0.1, max_iter=2 ** 70)",
                           "prox_solved(result, tv_prox(y, 0.1)[0], 1e-6)"),
        "max_iter-zero": ("result = tv_prox(y, 0.1, max_iter=0)", "prox_solved(result, y, 0.0)"),
        "1x1": ("result = tv_prox(y[..., :1, :1], 0.3)", "prox_solved(result, y[..., :1, :1], 1e-12)"),
        "1xN": ("result = tv_prox(y[..., :1, :], 0.1, tol=1e-6)\n"
                "ref = _tv_prox_torch(y[..., :1, :], plane_weights(0.1, y), True, 1e-6)",
                "prox_solved(result, ref[0], 1e-4)"),
        "Nx1-anisotropic": ("result = tv_prox(y[..., :, :1], 0.1, False, 1e-6)\n"
                            "ref = _tv_prox_torch(y[..., :, :1], plane_weights(0.1, y), False, 1e-6)",
                            "prox_solved(result, ref[0], 1e-4)"),
        "transposed": ("result = tv_prox(y.transpose(-1, -2), 0.1)\n"
                       "ref = tv_prox(y.transpose(-1, -2).contiguous(), 0.1)", "prox_solved(result, ref[0], 1e-12)"),
        "float16": ("result = tv_prox(y.half(), 0.1)", "prox_solved(result, tv_prox(y, 0.1)[0], 2e-2)"),
        "volume-with-box": ("v = rand(1, 1, 5, 6, 7)\nresult = tv_prox(v, 0.05, lower=0.2, upper=0.8)\n"
                            "ref = _tv_prox_torch(v, plane_weights(0.05, v), True, 1e-4, 1000, 0.2, 0.8)",
                            "prox_solved(result, ref[0], 1e-3)"),
        "per-channel-lam": ("z = rand(2, 3, 8, 8)\nlam = torch.rand(2, 3, dtype=torch.float64)\n"
                            "result = tv_prox(z, lam, tol=1e-6)\n"
                            "ref = torch.cat([tv_prox(z[n:n + 1, c:c + 1], float(lam[n, c]), tol=1e-6)[0] "
                            "for n in range(2) for c in range(3)]).reshape(2, 3, 8, 8)",
                            "prox_solved(result, ref, 1e-4)"),
    }
    for label, (code, check) in answers.items():
        book.add(6, label, PROX, code, check=check, names=("'y'", "'lam'"), nonfinite_ok=True)
    raw = "lam = torch.full((1, 1), 0.1, dtype=torch.float64)"
    book.add(6, "raw-op-nan-never-converges", PROX, raw, """
        y[0, 0, 3, 3] = NAN
        x, p, gap, iterations = torch.ops.imaging.tv_prox(y, lam, True, 1e-4, 40, None, None, None)
        result = (gap, iterations)""", check="int(result[1]) == 40 and bool(result[0].isnan().all())",
             nonfinite_ok=True, names=("'y'",))
    book.add(6, "raw-op-lower-inf", PROX, raw, """
        x, p, gap, iterations = torch.ops.imaging.tv_prox(y, lam, True, 1e-4, 100, INF, None, None)
        result = (x, gap, iterations)""", names=("lower",), check="close(result[0], tv_prox(y, 0.1)[0], 1e-3)")
    book.add(6, "raw-op-lam-3e38-float32", PROX, """
        x, p, gap, iterations = torch.ops.imaging.tv_prox(y.float(), torch.full((1, 1), 3e38), True, 1e-4, 100,
                                                          None, None, None)
        result = (x, gap, iterations)""", names=("lam",),
             check="int(result[2]) == 100 or close(result[0], y.float().mean().expand_as(y), 1e-3)",
             nonfinite_ok=True)
    book.add(6, "raw-op-transposed", PROX, raw,
             "result = torch.ops.imaging.tv_prox(y.transpose(-1, -2), lam, True, 1e-4, 100, None, None, None)",
             names=("contiguous",), check="close(result[0], tv_prox(y.transpose(-1, -2), 0.1)[0], 1e-10)")


# 7 -----------------------------------------------------------------------------------------------------------------
CG32 = """
from imaging.operators import MRI, Blur, Identity, cartesian_mask, gaussian_kernel
from imaging.solvers import CG, least_squares
from imaging.linalg import conjugate_gradient
x_true = rand(1, 1, 16, 16)
B = Blur(gaussian_kernel(1.0))
y = B(x_true)
ref = least_squares(B, y, lam=0.05, tol=1e-10, max_iter=500).x          # float64 at unit scale
B32, y32 = Blur(gaussian_kernel(1.0, dtype=torch.float32)), y.float()
"""


def _float32_cg(book: _Catalogue) -> None:
    for scale in ("1e7", "1e9", "1e12", "1e15", "1e18"):
        book.add(7, f"least_squares-blur-{scale}", CG32, f"c = {scale}",
                 "result = least_squares(c * B32, c * y32, lam=0.05 * c ** 2, tol=1e-5, max_iter=200, warn=False)",
                 names=OVERFLOW, check="close(result.x, ref, 1e-3)")
    book.add(7, "least_squares-identity-1e7-lam0", CG32,
             "result = least_squares(1e7 * Identity(), 1e7 * x_true.float(), tol=1e-6)",
             names=OVERFLOW, check="close(result.x, x_true, 1e-5)")
    book.add(7, "least_squares-identity-1e19-lam0", CG32,
             "result = least_squares(1e19 * Identity(), 1e19 * x_true.float(), tol=1e-6)",
             names=OVERFLOW, check="close(result.x, x_true, 1e-5)")
    book.add(7, "CG-1e14-scaled-identity", CG32, "b = x_true.float()",
             "result = CG(lambda v: 1e14 * v, b).run()", names=OVERFLOW, check="close(result.x * 1e14, b, 1e-5)")
    book.add(7, "conjugate_gradient-1e30-scaled-identity", CG32, "b = x_true.float()",
             "result = conjugate_gradient(lambda v: 1e30 * v, b)", names=OVERFLOW,
             check="close(result.x * 1e30, b, 1e-5)")
    book.add(7, "CG-converged-flag-honest-1e7", CG32, """
        H = lambda v: (1e7 * B32).normal(v) + 1e12 * v
        b = (1e7 * B32).adjoint(1e7 * y32)
        result = CG(H, b, tol=1e-6, max_iter=300).run(warn=False)""", names=OVERFLOW,
             check="cg_residual_honest(result, H, b, 1e-6)")
    book.add(7, "pinv-identity-1e8", CG32, "result = (1e8 * Identity()).pinv(1e8 * x_true.float())",
             names=OVERFLOW, check="close(result, x_true, 1e-5)")
    book.add(7, "least_squares-mri-1e8", CG32, """
        M = MRI(cartesian_mask((16, 16), 2.0))
        ref = least_squares(M, M(x_true), lam=0.01, tol=1e-10).x
        result = least_squares(1e8 * M, 1e8 * M(x_true.float()), lam=0.01 * 1e16, tol=1e-5, warn=False)""",
             names=OVERFLOW, check="close(result.x, ref, 1e-3)")
    book.add(7, "PnPADMM-blur-1e8", CG32, """
        from imaging.solvers import PnPADMM
        prox = lambda v: imaging.tv_denoise(v, 0.02)
        ref = PnPADMM(B, y, prox, rho=0.5, max_iter=10).run(warn=False).x
        result = PnPADMM(1e8 * B32, 1e8 * y32, prox, rho=0.5e16, max_iter=10).run(warn=False)""",
             names=OVERFLOW, check="close(result.x, ref, 2e-2)")
    book.add(7, "calibration-least_squares-float32-1e7", CALIBRATION, """
        ref = calibrate(y.float(), A.float(), method=least_squares)
        result = calibrate((y * 1e7).float(), (A * 1e7).float(), method=least_squares)""",
             names=OVERFLOW, check=CALIBRATED.format(scale="1.0"))
    book.add(7, "calibration-alternating-float32-1e10", CALIBRATION, """
        ref = calibrate(y.float(), A.float(), method=alternating)
        result = calibrate((y * 1e10).float(), (A * 1e10).float(), method=alternating)""",
             names=OVERFLOW, check=CALIBRATED.format(scale="1.0"))


# 8 -----------------------------------------------------------------------------------------------------------------
DIVERGE = """
from imaging.operators import Blur, Identity, gaussian_kernel
from imaging.priors import TotalVariation
from imaging.solvers import CG, FISTA, PDHG, AcceleratedGradient, PnPADMM, PnPPGD
B = Blur(gaussian_kernel(1.0))
x_true = rand(1, 1, 16, 16)
y = B(x_true)
L = B.norm(x_true) ** 2
"""
DIVERGED = ("diverg",)
PDHG_REF = "PDHG(B, y, 0.05, max_iter=5000, tol=1e-6).run(warn=False).x"


def _divergence(book: _Catalogue) -> None:
    runs = {  # label: (call, the answer a converged=True result must match, or None: it must not claim convergence)
        "PDHG-tau-5x": ("PDHG(B, y, 0.05, tau=5 / L, sigma=1 / (8 * 0.05 ** 2), max_iter=500).run()", PDHG_REF),
        "PDHG-tau-50x-sigma-50": ("PDHG(B, y, 0.05, tau=50 / L, sigma=50.0, max_iter=500).run()", PDHG_REF),
        "PnPPGD-step-10x": ("PnPPGD(B, y, lambda v: v, step=10 / L, max_iter=200).run()", None),
        "PnPPGD-step-3x": ("PnPPGD(B, y, lambda v: v, step=3 / L, max_iter=200).run()", None),
        "PnPPGD-step-2.2x": ("PnPPGD(B, y, lambda v: v, step=2.2 / L, max_iter=200).run()", None),
        "PnPPGD-step-2.2x-from-zero": ("PnPPGD(B, y, lambda v: v, step=2.2 / L, max_iter=200)"
                                       ".run(torch.zeros_like(y))", None),
        "PnPPGD-step-2.5x-from-zero": ("PnPPGD(B, y, lambda v: v, step=2.5 / L, max_iter=200)"
                                       ".run(torch.zeros_like(y))", None),
        "PnPPGD-step-2.5x-tv-prox": ("PnPPGD(B, y, lambda v: imaging.tv_denoise(v, 0.01), step=2.5 / L, "
                                     "max_iter=300).run()", None),
        "PnPADMM-expansive-prox": ("PnPADMM(B, y, lambda v: 2 * v, rho=1.0, max_iter=200).run()", None),
        "FISTA-expansive-prox": ("FISTA(B, y, 1.0, prior=lambda v, t: 2 * v, max_iter=200).run()", None),
        "FISTA-expansive-prox-object": ("FISTA(B, y, 1.0, prior=Expand(), max_iter=200).run()", None),
        "AcceleratedGradient-lipschitz-1e-30": (
            "AcceleratedGradient(B, y, TotalVariation(eps=0.01), 0.01, lipschitz=1e-30, max_iter=200).run()",
            "AcceleratedGradient(B, y, TotalVariation(eps=0.01), 0.01, max_iter=2000).run(warn=False).x"),
        "PnPPGD-step-100x-boxed": ("PnPPGD(B, y, lambda v: v, step=100 / L, box=(0, 1), max_iter=100).run()", None),
    }
    expand = """
        class Expand:
            def prox(self, v, tau):
                return 2 * v
            def value(self, x):
                return x.flatten(1).pow(2).sum(1)"""
    for label, (call, reference) in runs.items():
        book.add(8, label, DIVERGE, expand if "Expand" in call else "", f"ref = {reference}" if reference else "",
                 f"result = {call}", names=DIVERGED, check=f"bounded(result, 1e3, {'ref' if reference else None})")
    book.add(8, "PDHG-tau-nan", DIVERGE, "result = PDHG(B, y, 0.05, tau=NAN).run()", names=("'tau'", "tau="))
    book.add(8, "PDHG-sigma-inf", DIVERGE, "result = PDHG(B, y, 0.05, sigma=INF).run()",
             names=("'sigma'", "sigma="))
    book.add(8, "CG-negative-definite", DIVERGE, """
        b = rand(1, 1, 8, 8)
        result = CG(lambda v: -v, b).run()""", names=("definite", "positive"),
             check="cg_residual_honest(result, lambda v: -v, b, 1e-6)")
    book.add(8, "CG-indefinite", DIVERGE, """
        d = torch.ones(1, 1, 8, 8); d[..., ::2, :] = -1
        b = rand(1, 1, 8, 8)
        result = CG(lambda v: d * v, b, max_iter=50).run()""", names=("definite", "positive"),
             check="cg_residual_honest(result, lambda v: d * v, b, 1e-6)")
    book.add(8, "calibration-pgd-fixed-step-1e3", CALIBRATION, """
        ref = calibrate(y, A, method=pgd).x
        result = calibrate(y, A, method=pgd, line_search=False, step=1e3, max_iter=300)""",
             names=DIVERGED + ("step",), check="bounded(result, 1e6, ref)")
    book.add(8, "RedDiff-lr-1e4", """
        from imaging.operators import Identity
        from imaging.priors import DiffusionPrior
        from imaging.solvers import RedDiff
        y = rand(1, 1, 16, 16)
        result = RedDiff(Identity(), y, DiffusionPrior.pretrained("natural"), steps=10, lr=1e4).run()""",
             names=DIVERGED + ("'lr'",), check="bounded(result, 1e3, None, schedule=True)")


# 9 -----------------------------------------------------------------------------------------------------------------
RAW = """
import importlib
tvm = importlib.import_module("imaging.ops.tv")
foem = importlib.import_module("imaging.ops.foe")
gm = importlib.import_module("imaging.ops.gain_sensing")
fdm = importlib.import_module("imaging.ops.finite_diff")
x = rand(1, 2, 6, 7).requires_grad_()
v = randn(1, 2, 6, 7, seed=1)
filters, weights, nu = randn(3, 3, 3, seed=2), rand(3, seed=3) + 0.1, rand(3, seed=4) + 0.05
A, xs, gains = randn(3, 4, 5, seed=5), randn(2, 5, seed=6), rand(2, 4, seed=7) + 0.5
r, u = randn(2, 3, 4, seed=8), randn(2, 3, 4, seed=9)


def vjp(out, inputs, seed=11):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    total = sum((o * randn(*o.shape, seed=seed + k)).sum() for k, o in enumerate(outs) if o.numel())
    return torch.autograd.grad(total, inputs, allow_unused=True)
"""


def _raw_autograd(book: _Catalogue) -> None:
    first = {  # label: (leaves made differentiable, raw call, reference call)
        "tv-x": ("x", "torch.ops.imaging.tv(x, 0.1, True)", "tvm._tv_torch(x, 0.1, True)"),
        "tv-x-anisotropic": ("x", "torch.ops.imaging.tv(x, 0.1, False)", "tvm._tv_torch(x, 0.1, False)"),
        "tv_grad-x": ("x", "torch.ops.imaging.tv_grad(x, 0.1, True)", "tvm._tv_grad_torch(x, 0.1, True)"),
        "tv_hvp-x": ("x", "torch.ops.imaging.tv_hvp(x, v, 0.1, True)", "tvm._tv_hvp_torch(x, v, 0.1, True)"),
        "tv_hvp-v": ("v", "torch.ops.imaging.tv_hvp(x.detach(), v, 0.1, True)",
                     "tvm._tv_hvp_torch(x.detach(), v, 0.1, True)"),
        "finite_diff-x": ("x", "torch.ops.imaging.finite_diff(x)", "fdm._finite_diff_torch(x)"),
        "finite_diff_adjoint-g": ("g", "torch.ops.imaging.finite_diff_adjoint(g)",
                                  "fdm._finite_diff_adjoint_torch(g)"),
        "foe_energy-x": ("x", "torch.ops.imaging.foe_energy(x, filters, weights, nu, 'abs', 'reflect')",
                         "foem._foe_energy_torch(x, filters, weights, nu, 'abs', 'reflect')"),
        "foe_energy-parameters": ("filters, weights, nu",
                                  "torch.ops.imaging.foe_energy(x.detach(), filters, weights, nu, 'student', 'zero')",
                                  "foem._foe_energy_torch(x.detach(), filters, weights, nu, 'student', 'zero')"),
        "foe_grad-x": ("x", "torch.ops.imaging.foe_grad(x, filters, weights, nu, 'abs', 'reflect')",
                       "foem._foe_grad_torch(x, filters, weights, nu, 'abs', 'reflect')"),
        "foe_grad-filters": ("filters", "torch.ops.imaging.foe_grad(x.detach(), filters, weights, nu, 'abs', 'zero')",
                             "foem._foe_grad_torch(x.detach(), filters, weights, nu, 'abs', 'zero')"),
        "foe_hvp-x-v": ("x, v", "torch.ops.imaging.foe_hvp(x, v, filters, weights, nu, 'student', 'reflect')",
                        "foem._foe_hvp_torch(x, v, filters, weights, nu, 'student', 'reflect')"),
        "gain_forward-all": ("A, xs, gains", "torch.ops.imaging.gain_forward(A, xs, gains)",
                             "gm._gain_forward_torch(A, xs, gains)"),
        "gain_adjoint-all": ("A, r, gains, u", "torch.ops.imaging.gain_adjoint(A, r, gains, u)",
                             "gm._gain_adjoint_torch(A, r, gains, u)"),
    }
    for label, (leaves, call, reference) in first.items():
        book.add(9, label, RAW, "g = randn(1, 2, 2, 6, 7, seed=10)", f"leaves = [{leaves}]",
                 "leaves = [t.detach().requires_grad_() for t in leaves]", f"{leaves}, = leaves" if "," in leaves
                 else f"{leaves} = leaves[0]", f"got = vjp({call}, leaves)", f"want = vjp({reference}, leaves)",
                 "result = got",
                 check="both(*[gradient(a, b, 1e-7) for a, b in zip(got, want)])")
    second = {
        "gradgradcheck-tv": "lambda t: torch.ops.imaging.tv(t, 0.1, True)",
        "gradgradcheck-tv_grad": "lambda t: torch.ops.imaging.tv_grad(t, 0.1, False)",
        "gradgradcheck-foe_energy": "lambda t: torch.ops.imaging.foe_energy(t, filters, weights, nu, 'abs', 'zero')",
        "gradgradcheck-finite_diff": "lambda t: torch.ops.imaging.finite_diff(t)",
    }
    for label, function in second.items():
        book.add(9, label, RAW, f"result = torch.autograd.gradgradcheck({function}, (x,), raise_exception=False)",
                 check="result is True")
    book.add(9, "gradgradcheck-gain_forward", RAW, """
        A.requires_grad_(); xs.requires_grad_(); gains.requires_grad_()
        result = torch.autograd.gradgradcheck(torch.ops.imaging.gain_forward, (A, xs, gains), raise_exception=False)""",
             check="result is True")
    book.add(9, "tv_grad-eps0-double-backward", RAW, """
        out = torch.ops.imaging.tv_grad(x, 0.0, True)
        result = vjp(out, [x])""", names=("eps",), check="False")
    book.add(9, "raw-tv_prox-requires-grad", RAW, """
        lam = torch.full((1, 2), 0.1, dtype=torch.float64)
        out = torch.ops.imaging.tv_prox(x, lam, True, 1e-4, 50, None, None, None)
        result = out""", names=("differentiable",), check="not_differentiable(result, x)")
    book.add(9, "raw-gain_normal_pass-requires-grad", RAW, """
        A.requires_grad_()
        out = torch.ops.imaging.gain_normal_pass(A, xs, gains, r)
        result = out""", names=("differentiable",), check="not_differentiable(result, A)")
    book.add(9, "tv_prox-wrapper-requires-grad", RAW, "result = ops.tv_prox(x, 0.1)", names=("not differentiable",))
    book.add(9, "tv_denoise-requires-grad", RAW, "result = imaging.tv_denoise(x, 0.1)", names=("not differentiable",))
    book.add(9, "gain_normal_pass-wrapper-requires-grad", RAW, "A.requires_grad_()",
             "result = ops.gain_normal_pass(A, xs, gains, r)", names=("not differentiable",))
    book.add(9, "tv_prox-no_grad-input-requires-grad", RAW, """
        with torch.no_grad():
            result = ops.tv_prox(x, 0.1)""", check="not result[0].requires_grad or 'output requires grad'")


# 10 ----------------------------------------------------------------------------------------------------------------
PARAMS = """
from imaging.operators import (MRI, Blur, CompressedSensing, Downsampling, GaussianNoise, Identity, Inpainting,
                               PoissonNoise, Radon, StructuredCompressedSensing, box_kernel, cartesian_mask,
                               estimate_noise, gaussian_kernel, motion_kernel)
import imaging.data
import imaging.metrics
from imaging.priors import FieldOfExperts, TotalVariation, tv_denoise
from imaging.solvers import (CG, FISTA, GSURE, PDHG, SURE, AcceleratedGradient, Discrepancy, PnPADMM, PnPPGD,
                             least_squares, relax, tv_reconstruct)
y = rand(2, 1, 8, 8)
I = Identity()
prox = lambda v: v
"""
BILEVEL = """
from imaging.learning import hoag, maid
from imaging.learning.denoising import DenoisingBilevel
from imaging.priors import SmoothedTV
x_true = rand(2, 1, 8, 8)
problem = DenoisingBilevel(x_true + 0.1 * randn(2, 1, 8, 8), x_true, SmoothedTV().double())
"""
DIFFUSION = """
from imaging.operators import Identity, Inpainting
from imaging.priors import DiffusionPrior, FlowPrior
from imaging.solvers import DDRM, DPS, DiffPIR, Flair, RedDiff
prior = DiffusionPrior.pretrained("natural")
y = rand(1, 1, 16, 16)
"""

IMPOSSIBLE = {  # label: (call, names)
    "least_squares-lam-nan": ("least_squares(I, y, lam=NAN)", "'lam'"),
    "least_squares-lam-negative": ("least_squares(I, y, lam=-1.0)", "'lam'"),
    "least_squares-lam-inf": ("least_squares(I, y, lam=INF)", "'lam'"),
    "least_squares-lam-unknown-string": ("least_squares(I, y, lam='automatic')", "'lam'"),
    "least_squares-tol-nan": ("least_squares(I, y, lam=0.1, tol=NAN)", "'tol'"),
    "least_squares-tol-negative": ("least_squares(I, y, lam=0.1, tol=-1e-3)", "'tol'"),
    "least_squares-max_iter-negative": ("least_squares(I, y, lam=0.1, max_iter=-1)", "'max_iter'"),
    "least_squares-max_iter-float": ("least_squares(I, y, lam=0.1, max_iter=2.5)", "'max_iter'"),
    "least_squares-noise_level-nan": ("least_squares(I, y, lam='auto', noise_level=NAN)", "'noise_level'"),
    "least_squares-noise_level-negative": ("least_squares(I, y, lam='auto', noise_level=-0.1)", "'noise_level'"),
    "FISTA-lam-nan": ("FISTA(I, y, NAN)", "'lam'"),
    "FISTA-lam-negative": ("FISTA(I, y, -0.1)", "'lam'"),
    "FISTA-inner_tol-nan": ("FISTA(I, y, 0.1, inner_tol=NAN).run()", "'inner_tol'"),
    "FISTA-inner_max_iter-negative": ("FISTA(I, y, 0.1, inner_max_iter=-1).run()", "'inner_max_iter'"),
    "FISTA-box-reversed": ("FISTA(I, y, 0.1, box=(1, 0))", "'box'"),
    "FISTA-box-nan": ("FISTA(I, y, 0.1, box=(NAN, 1))", "'box'"),
    "FISTA-prior-not-callable": ("FISTA(I, y, 0.1, prior=3)", "'prior'"),
    "PDHG-tau-negative": ("PDHG(I, y, 0.1, tau=-1.0)", "tau"),
    "PDHG-sigma-zero": ("PDHG(I, y, 0.1, sigma=0.0)", "sigma"),
    "PDHG-lam-nan": ("PDHG(I, y, NAN)", "'lam'"),
    "PDHG-lam-wrong-length": ("PDHG(I, y, torch.ones(3))", "'lam'"),
    "PDHG-lam-negative-entry": ("PDHG(I, y, torch.tensor([0.1, -0.1]))", "'lam'"),
    "PDHG-box-reversed": ("PDHG(I, y, 0.1, box=(1, 0))", "'box'"),
    "PDHG-smoothed-prior": ("PDHG(I, y, 0.1, prior=TotalVariation(eps=0.1))", "eps"),
    "tv_reconstruct-lam-nan": ("tv_reconstruct(I, y, NAN)", "'lam'"),
    "tv_reconstruct-box-reversed": ("tv_reconstruct(I, y, 0.1, box=(1, 0))", "'box'"),
    "tv_reconstruct-max_iter-negative": ("tv_reconstruct(I, y, 0.1, max_iter=-5)", "'max_iter'"),
    "tv_reconstruct-tol-nan": ("tv_reconstruct(I, y, 0.1, tol=NAN)", "'tol'"),
    "PnPADMM-rho-nan": ("PnPADMM(I, y, prox, rho=NAN)", "'rho'"),
    "PnPADMM-rho-negative": ("PnPADMM(I, y, prox, rho=-1.0)", "'rho'"),
    "PnPADMM-rho-zero": ("PnPADMM(I, y, prox, rho=0.0)", "'rho'"),
    "PnPADMM-cg_iter-negative": ("PnPADMM(I, y, prox, cg_iter=-1).run()", "'cg_iter'"),
    "PnPADMM-cg_tol-nan": ("PnPADMM(I, y, prox, cg_tol=NAN).run()", "'cg_tol'"),
    "PnPADMM-box-reversed": ("PnPADMM(I, y, prox, box=(1, 0))", "'box'"),
    "PnPADMM-prox-not-callable": ("PnPADMM(I, y, 0.5)", "'prox'"),
    "PnPADMM-prox-wrong-shape": ("PnPADMM(I, y, lambda v: v[..., :4]).run()", "'prox'"),
    "PnPPGD-step-negative": ("PnPPGD(I, y, prox, step=-1.0)", "'step'"),
    "PnPPGD-step-nan": ("PnPPGD(I, y, prox, step=NAN)", "'step'"),
    "PnPPGD-step-zero": ("PnPPGD(I, y, prox, step=0.0)", "'step'"),
    "PnPPGD-box-reversed": ("PnPPGD(I, y, prox, box=(1, 0))", "'box'"),
    "AcceleratedGradient-lam-nan": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), NAN)", "'lam'"),
    "AcceleratedGradient-lipschitz-nan": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), 0.1, lipschitz=NAN)",
                                          "'lipschitz'"),
    "AcceleratedGradient-lipschitz-negative": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), 0.1, "
                                               "lipschitz=-1.0)", "'lipschitz'"),
    "AcceleratedGradient-prior-without-grad": ("AcceleratedGradient(I, y, prox, 0.1)", "'prior'"),
    "TotalVariation-eps-nan": ("TotalVariation(eps=NAN).value(y)", "'eps'"),
    "TotalVariation-eps-negative": ("TotalVariation(eps=-1.0).value(y)", "'eps'"),
    "tv_denoise-lam-nan": ("tv_denoise(y, NAN)", "'lam'"),
    "GaussianNoise-sigma-nan": ("GaussianNoise(NAN)", "'sigma'"),
    "GaussianNoise-sigma-negative": ("GaussianNoise(-1.0)", "'sigma'"),
    "GaussianNoise-sigma-inf": ("GaussianNoise(INF)", "'sigma'"),
    "PoissonNoise-gain-zero": ("PoissonNoise(0.0)", "'gain'"),
    "PoissonNoise-gain-nan": ("PoissonNoise(NAN)", "'gain'"),
    "PoissonNoise-negative-intensity": ("PoissonNoise(10.0)(-y)", "intensit"),
    "PoissonNoise-nan-intensity": ("PoissonNoise(10.0)(torch.full((1, 1, 4, 4), NAN))", "intensit"),
    "Inpainting-mask-nan": ("Inpainting(torch.tensor([[1.0, NAN], [0.0, 1.0]]))", "'mask'"),
    "Inpainting-mask-inf": ("Inpainting(torch.tensor([[1.0, INF], [0.0, 1.0]]))", "'mask'"),
    "Inpainting-mask-complex": ("Inpainting(torch.ones(2, 2, dtype=torch.complex64))", "'mask'"),
    "Inpainting-mask-does-not-broadcast": ("Inpainting(torch.ones(3, 5))(y)", "mask"),
    "Inpainting-random-fraction-nan": ("Inpainting.random((8, 8), NAN)", "fraction_observed"),
    "Inpainting-random-fraction-1.5": ("Inpainting.random((8, 8), 1.5)", "fraction_observed"),
    "Radon-angles-nan": ("Radon((8, 8), torch.tensor([0.0, NAN]))", "'angles'"),
    "Radon-angles-inf": ("Radon((8, 8), [INF])", "'angles'"),
    "Radon-angles-zero": ("Radon((8, 8), 0)", "'angles'"),
    "Radon-angles-negative": ("Radon((8, 8), -3)", "'angles'"),
    "Radon-angles-empty": ("Radon((8, 8), torch.tensor([]))", "'angles'"),
    "Radon-n_detectors-negative": ("Radon((8, 8), 4, n_detectors=-1)(rand(1, 1, 8, 8))", "'n_detectors'"),
    "Radon-n_detectors-zero": ("Radon((8, 8), 4, n_detectors=0)", "'n_detectors'"),
    "Radon-image_shape-zero": ("Radon((0, 8), 4)", "'image_shape'"),
    "gaussian_kernel-sigma-nan": ("gaussian_kernel(NAN)", "'sigma'"),
    "gaussian_kernel-sigma-negative": ("gaussian_kernel(-1.0)", "'sigma'"),
    "gaussian_kernel-sigma-pair-inf": ("gaussian_kernel((1.0, INF))", "'sigma'"),
    "gaussian_kernel-size-negative": ("gaussian_kernel(1.0, size=-3)", "gaussian_kernel: argument 'size'"),
    "box_kernel-size-zero": ("box_kernel(0)", "box_kernel: size"),
    "box_kernel-size-float": ("box_kernel(2.5)", "box_kernel: size"),
    "motion_kernel-length-nan": ("motion_kernel(NAN)", "length"),
    "motion_kernel-angle-nan": ("motion_kernel(5.0, angle=NAN)", "angle"),
    "Blur-kernel-nan": ("Blur(torch.tensor([[1.0, NAN]]))", "'kernel'"),
    "Blur-kernel-1d": ("Blur(torch.ones(3))", "'kernel'"),
    "Blur-mode-unknown": ("Blur(gaussian_kernel(1.0), mode='wrap')", "'mode'"),
    "Downsampling-factor-zero": ("Downsampling(0)", "'factor'"),
    "Downsampling-factor-float": ("Downsampling(2.5)", "'factor'"),
    "Downsampling-factor-negative": ("Downsampling(-2)", "'factor'"),
    "Downsampling-filter-unknown": ("Downsampling(2, filter='lanczos')", "'filter'"),
    "Downsampling-mode-unknown": ("Downsampling(2, mode='wrap')", "'mode'"),
    "CompressedSensing-m-zero": ("CompressedSensing(0, (1, 8, 8))", "'m'"),
    "CompressedSensing-m-negative": ("CompressedSensing(-3, (1, 8, 8))", "'m'"),
    "CompressedSensing-in_shape-zero": ("CompressedSensing(4, (1, 0, 8))", "in_shape"),
    "StructuredCompressedSensing-m-too-large": ("StructuredCompressedSensing(100, (1, 8, 8))", "'m'"),
    "cartesian_mask-acceleration-nan": ("cartesian_mask((8, 8), acceleration=NAN)", "acceleration"),
    "cartesian_mask-acceleration-half": ("cartesian_mask((8, 8), acceleration=0.5)", "acceleration"),
    "cartesian_mask-center_fraction-nan": ("cartesian_mask((8, 8), center_fraction=NAN)", "center_fraction"),
    "cartesian_mask-center_fraction-negative": ("cartesian_mask((8, 8), center_fraction=-1.0)", "center_fraction"),
    "MRI-mask-nan": ("MRI(torch.where(torch.eye(8) > 0, NAN, 1.0))(rand(1, 1, 8, 8))", "'mask'"),
    "MRI-mask-1d": ("MRI(torch.ones(8))", "'mask'"),
    "estimate_noise-y-nan": ("estimate_noise(torch.full((1, 1, 32, 32), NAN))", "'y'"),
    "estimate_noise-too-small": ("estimate_noise(rand(1, 1, 4, 4))", "noise_level"),
    "Discrepancy-tau-nan": ("Discrepancy(tau=NAN)", "'tau'"),
    "Discrepancy-rtol-2": ("Discrepancy(rtol=2.0)", "'rtol'"),
    "Discrepancy-max_solves-zero": ("least_squares(I, y, lam=Discrepancy(max_solves=0), noise_level=0.1)",
                                    "max_solves"),
    "SURE-epsilon-zero": ("least_squares(I, y, lam=SURE(epsilon=0.0), noise_level=0.1)", "epsilon"),
    "SURE-epsilon-nan": ("least_squares(I, y, lam=SURE(epsilon=NAN), noise_level=0.1)", "epsilon"),
    "GSURE-cg_tol-nan": ("least_squares(Inpainting(rand(8, 8).round()), y, lam=GSURE(cg_tol=NAN), noise_level=0.1)",
                         "cg_tol"),
    "relax-strength-2": ("relax(prox, 2.0)", "'strength'"),
    "relax-strength-nan": ("relax(prox, NAN)", "'strength'"),
    "FieldOfExperts-even-filters": ("FieldOfExperts(randn(2, 4, 4)).double().value(y)", "'filters'"),
    "FieldOfExperts-weights-negative": ("FieldOfExperts(randn(2, 3, 3), weights=-1.0)", "'weights'"),
    "FieldOfExperts-nu-nan": ("FieldOfExperts(randn(2, 3, 3), nu=NAN)", "'nu'"),
    "FieldOfExperts-potential-unknown": ("FieldOfExperts(randn(2, 3, 3), potential='huber')", "'potential'"),
    "FieldOfExperts-padding-unknown": ("FieldOfExperts(randn(2, 3, 3), padding='circular').double().value(y)",
                                       "'padding'"),
    "foe_grad-nu-negative": ("ops.foe_grad(y, randn(2, 3, 3), torch.ones(2, dtype=torch.float64), "
                             "torch.tensor([-0.1, 0.1], dtype=torch.float64))", "'nu'"),
    "foe_grad-nu-underflows-float32": ("ops.foe_grad(y.float(), randn(2, 3, 3).float(), torch.ones(2), "
                                       "torch.tensor([1e-30, 0.1]))", "'nu'"),
    "foe_grad-weights-wrong-shape": ("ops.foe_grad(y, randn(2, 3, 3), torch.ones(3, dtype=torch.float64), "
                                     "torch.ones(2, dtype=torch.float64))", "'weights'"),
    "foe_grad-filters-dtype-mismatch": ("ops.foe_grad(y, randn(2, 3, 3).float(), torch.ones(2, dtype=torch.float64),"
                                        " torch.ones(2, dtype=torch.float64))", "'filters'"),
    "foe_grad-potential-unknown": ("ops.foe_grad(y, randn(2, 3, 3), torch.ones(2, dtype=torch.float64), "
                                   "torch.ones(2, dtype=torch.float64), 'huber')", "'potential'"),
    "gain_forward-x-wrong-length": ("ops.gain_forward(randn(3, 4, 5), randn(2, 6))", "'x'"),
    "gain_forward-gains-dtype-mismatch": ("ops.gain_forward(randn(3, 4, 5), randn(2, 5), torch.ones(2, 4))",
                                          "'gains'"),
    "gain_forward-A-2d": ("ops.gain_forward(randn(4, 5), randn(2, 5))", "'A'"),
    "gain_adjoint-r-wrong-shape": ("ops.gain_adjoint(randn(3, 4, 5), randn(2, 4, 3))", "'r'"),
    "load_image-size-zero": ("imaging.data.load_image('camera', size=0)", "load_image: argument 'size'"),
    "load_image-size-pair-zero": ("imaging.data.load_image('camera', size=(0, 5))", "load_image: argument 'size'"),
    "load_image-size-float": ("imaging.data.load_image('camera', size=2.5)", "load_image: argument 'size'"),
    "load_image-name-unknown": ("imaging.data.load_image('lena')", "'name'"),
    "load_image-channels-2": ("imaging.data.load_image('camera', channels=2)", "'channels'"),
    "pretrained_lpn-name-unknown": ("imaging.priors.pretrained_lpn('bogus')", "'bogus'"),
    "prox_in_patches-stride-negative": ("imaging.priors.prox_in_patches(imaging.priors.pretrained_lpn('digits'), "
                                        "rand(1, 1, 16, 16), stride=-1)", "'stride'"),
    "prox_in_patches-stride-zero": ("imaging.priors.prox_in_patches(imaging.priors.pretrained_lpn('digits'), "
                                    "rand(1, 1, 16, 16), stride=0)", "'stride'"),
    "PatchDataset-patch_size-zero": ("imaging.data.PatchDataset([rand(1, 8, 8)], 0)", "'patch_size'"),
    "psnr-data_range-nan": ("imaging.metrics.psnr(y, rand(2, 1, 8, 8, seed=1), data_range=NAN)", "data_range"),
    "psnr-data_range-zero": ("imaging.metrics.psnr(y, rand(2, 1, 8, 8, seed=1), data_range=0.0)", "data_range"),
}
CALIBRATION_PARAMETERS = {
    "rho-1.5": ("calibrate(y, A, method=pgd, rho=1.5)", "'rho'"),
    "rho-nan": ("calibrate(y, A, method=pgd, rho=NAN)", "'rho'"),
    "max_iter-negative": ("calibrate(y, A, method=pgd, max_iter=-1)", "'max_iter'"),
    "pgd-tol-nan": ("calibrate(y, A, method=pgd, tol=NAN)", "'tol'"),
    "least_squares-tol-nan": ("calibrate(y, A, method=least_squares, tol=NAN)", "'tol'"),
    "alternating-tol-nan": ("calibrate(y, A, method=alternating, tol=NAN)", "'tol'"),
    "alternating-cg_steps-zero": ("calibrate(y, A, method=alternating, cg_steps=0)", "'cg_steps'"),
    "spectral-inverse_iterations-zero": ("calibrate(y, A, method=spectral, inverse_iterations=0)",
                                         "'inverse_iterations'"),
    "method-unknown-name": ("calibrate(y, A, method='bogus')", "'method'"),
    "method-not-callable": ("calibrate(y, A, method=42)", "'method'"),
    "image_basis-wrong-shape": ("calibrate(y, A, method=pgd, image_basis=torch.ones(3, 2))", "'image_basis'"),
    "y-1d": ("calibrate(y[0], A, method=pgd)", "'y'"),
    "pgd-step-nan": ("calibrate(y, A, method=pgd, line_search=False, step=NAN)", "'step'"),
    "pgd-refresh_every-zero": ("calibrate(y, A, method=pgd, refresh_every=0)", "'refresh_every'"),
}
BILEVEL_PARAMETERS = {
    "maid-theta0-wrong-length": ("maid(problem, torch.zeros(3, dtype=torch.float64))", "'theta0'"),
    "maid-theta0-nan": ("maid(problem, torch.tensor([NAN, 0.0], dtype=torch.float64))", "'theta0'"),
    "maid-theta0-2d": ("maid(problem, torch.zeros(1, 2, dtype=torch.float64))", "'theta0'"),
    "hoag-theta0-wrong-length": ("hoag(problem, torch.zeros(5, dtype=torch.float64))", "'theta0'"),
    "hoag-schedule-unknown": ("hoag(problem, problem.theta(), schedule='bogus')", "'schedule'"),
    "maid-eps0-nan": ("maid(problem, problem.theta(), eps0=NAN, max_iter=3)", "'eps0'"),
    "maid-max_iter-negative": ("maid(problem, problem.theta(), max_iter=-1)", "'max_iter'"),
    "DenoisingBilevel-shape-mismatch": ("DenoisingBilevel(x_true, x_true[:1], SmoothedTV())", "x_true"),
}
DIFFUSION_PARAMETERS = {
    "DiffPIR-noise_level-nan": ("DiffPIR(Identity(), y, prior, noise_level=NAN)", "'noise_level'"),
    "DiffPIR-lam-zero": ("DiffPIR(Identity(), y, prior, noise_level=0.05, lam=0.0)", "'lam'"),
    "DiffPIR-zeta-2": ("DiffPIR(Identity(), y, prior, noise_level=0.05, zeta=2.0)", "'zeta'"),
    "DDRM-eta-2": ("DDRM(Identity(), y, prior, noise_level=0.05, eta=2.0)", "'eta'"),
    "DDRM-noise_level-negative": ("DDRM(Identity(), y, prior, noise_level=-0.05)", "'noise_level'"),
    "DPS-scale-nan": ("DPS(Identity(), y, prior, scale=NAN)", "'scale'"),
    "DPS-steps-2000": ("DPS(Identity(), y, prior, steps=2000)", "'steps'"),
    "RedDiff-lr-nan": ("RedDiff(Identity(), y, prior, lr=NAN)", "'lr'"),
    "RedDiff-steps-zero": ("RedDiff(Identity(), y, prior, steps=0)", "'steps'"),
    "denoise-sigma-nan": ("prior.denoise(y, NAN)", "'sigma'"),
    "denoise-sigma-negative": ("prior.denoise(y, -0.1)", "'sigma'"),
    "Flair-lam-nan": ("Flair(Identity(), y, FlowPrior.from_diffusion(prior), lam=NAN, noise_level=0.05)", "'lam'"),
    "Flair-t_min-1": ("Flair(Identity(), y, FlowPrior.from_diffusion(prior), t_min=1.0, noise_level=0.05)",
                      "t_min"),
}


def _impossible(book: _Catalogue) -> None:
    for label, (call, name) in IMPOSSIBLE.items():
        book.add(10, label, PARAMS, f"result = {call}", names=(name,))
    book.add(10, "least_squares-noise_level-zero", PARAMS,
             "result = least_squares(I, y, lam='auto', noise_level=0.0)", names=("'noise_level'",),
             check="close(result.x, y, 1e-2)")
    for label, (call, name) in CALIBRATION_PARAMETERS.items():
        book.add(10, f"calibrate-{label}", CALIBRATION, f"result = {call}", names=(name,))
    for label, (call, name) in BILEVEL_PARAMETERS.items():
        book.add(10, label, BILEVEL, f"result = {call}", names=(name,))
    for label, (call, name) in DIFFUSION_PARAMETERS.items():
        book.add(10, label, DIFFUSION, f"result = {call}", names=(name,))


# 11 ----------------------------------------------------------------------------------------------------------------
NO_NETWORK = """
import shutil, socket
NETWORK_ATTEMPTS = []


def refuse(*args, **kwargs):
    NETWORK_ATTEMPTS.append(repr(args)[:80])
    raise ConnectionRefusedError("the robustness harness blocks the network")


socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
import imaging.data
from imaging.priors import DiffusionPrior, FieldOfExperts, FlowPrior, load_lpn
WEIGHTS = os.path.join(os.path.dirname(imaging.__file__), "weights")
folder = tempfile.mkdtemp()
"""
NOT_LOCAL = ("not a local folder",)


def _offline(book: _Catalogue) -> None:
    cases = {  # label: (setup, call, names)
        "DiffusionPrior-missing-folder": ("", "DiffusionPrior.from_pretrained(folder + '/missing')", NOT_LOCAL),
        "DiffusionPrior-hub-id": ("", "DiffusionPrior.from_pretrained('google/ddpm-celebahq-256')", NOT_LOCAL),
        "DiffusionPrior-empty-folder": ("", "DiffusionPrior.from_pretrained(folder)", ("config.json",)),
        "DiffusionPrior-empty-unet": ("os.mkdir(folder + '/unet')", "DiffusionPrior.from_pretrained(folder)",
                                      ("config.json",)),
        "DiffusionPrior-unet-config-only": (
            "os.mkdir(folder + '/unet')\n"
            "shutil.copy(WEIGHTS + '/ddpm_natural/unet/config.json', folder + '/unet/')",
            "DiffusionPrior.from_pretrained(folder)", ("diffusion_pytorch_model",)),
        "DiffusionPrior-empty-scheduler": (
            "shutil.copytree(WEIGHTS + '/ddpm_natural/unet', folder + '/unet')\nos.mkdir(folder + '/scheduler')",
            "DiffusionPrior.from_pretrained(folder)", ("scheduler_config.json", "scheduler")),
        "FlowPrior-missing-folder": ("", "FlowPrior.from_pretrained(folder + '/missing')", NOT_LOCAL),
        "FlowPrior-hub-id": ("", "FlowPrior.from_pretrained('stabilityai/stable-diffusion-3-medium-diffusers')",
                             NOT_LOCAL),
        "FlowPrior-no-transformer": ("os.mkdir(folder + '/vae')", "FlowPrior.from_pretrained(folder)",
                                     ("transformer/",)),
        "FlowPrior-empty-transformer": ("os.mkdir(folder + '/transformer')", "FlowPrior.from_pretrained(folder)",
                                        ("config.json",)),
        "FlowPrior-no-vae": ("shutil.copytree(WEIGHTS + '/flow_faces32/transformer', folder + '/transformer')",
                             "FlowPrior.from_pretrained(folder)", ("autoencoder", "vae")),
        "FlowPrior-autoencoder-missing": ("shutil.copytree(WEIGHTS + '/flow_faces32/transformer', "
                                          "folder + '/transformer')",
                                          "FlowPrior.from_pretrained(folder, autoencoder=folder + '/no-ae')",
                                          NOT_LOCAL),
        "DiffusionPrior-pretrained-unknown": ("", "DiffusionPrior.pretrained('bogus')", ("'bogus'",)),
        "FlowPrior-pretrained-unknown": ("", "FlowPrior.pretrained('bogus')", ("'bogus'",)),
        "FieldOfExperts-pretrained-unknown": ("", "FieldOfExperts.pretrained('bogus')", ("'bogus'",)),
        "load_lpn-missing-file": ("", "load_lpn(folder + '/nolpn.safetensors')", ("nolpn.safetensors",)),
        "load_lpn-folder": ("", "load_lpn(folder)", ("not a file",)),
        "FieldOfExperts-load-missing-file": ("", "FieldOfExperts.load(folder + '/nofoe.safetensors')",
                                             ("nofoe.safetensors",)),
        "load_folder-missing": ("", "imaging.data.load_folder(folder + '/noimages')", ("noimages",)),
        "load_folder-empty": ("", "imaging.data.load_folder(folder)", ("no image files",)),
        "read_image-missing": ("", "imaging.data.read_image(folder + '/nopicture.png')", ("nopicture.png",)),
        "shipped-models-load-offline": ("", "[DiffusionPrior.pretrained('faces'), FlowPrior.pretrained('faces'), "
                                            "imaging.priors.pretrained_lpn('image'), FieldOfExperts.pretrained()]",
                                        ()),
    }
    for label, (setup, call, names) in cases.items():
        check = "len(result) == 4" if label == "shipped-models-load-offline" else None
        book.add(11, label, NO_NETWORK, setup, f"result = {call}", names=names, check=check, timeout=60.0)


# 12 ----------------------------------------------------------------------------------------------------------------
FILES = """
import json, shutil
from safetensors.torch import save_file
from imaging.priors import LPN1d, DiffusionPrior, FieldOfExperts, FlowPrior, load_lpn
WEIGHTS = os.path.join(os.path.dirname(imaging.__file__), "weights")
folder = tempfile.mkdtemp()
path = os.path.join(folder, "model.safetensors")


def write(tensors, settings=None, raw=None):
    metadata = {"settings": raw if raw is not None else json.dumps(settings)}
    save_file(tensors, path, metadata=metadata if (settings is not None or raw is not None) else None)


def lpn1d_tensors(**config):
    return {key: value.contiguous() for key, value in LPN1d(**config).state_dict().items()}


def foe_tensors(K=2, k=3):
    return {"filters": randn(K, k, k).float(), "log_weights": torch.zeros(K), "log_nu": torch.full((K,), -2.0)}
"""
MISMATCH = ("do not match",)


def _corrupt_files(book: _Catalogue) -> None:
    dummy = "{'dummy': torch.zeros(1)}"
    lpn = {  # label: (write call, names)
        "lpn-huge-hidden-no-tensors": (
            f"write({dummy}, {{'architecture': 'LPNConv', 'config': {{'hidden': 10 ** 7}}}})", MISMATCH),
        "lpn-huge-patch-size": (f"write({dummy}, {{'architecture': 'LPNPatch', 'config': {{'size': 2 ** 20}}}})",
                                MISMATCH),
        "lpn-million-layers": (f"write({dummy}, {{'architecture': 'LPN1d', 'config': {{'depth': 10 ** 6}}}})",
                               ("depth",) + MISMATCH),
        "lpn-settings-bad-json": (f"write({dummy}, raw='{{not json')", ("settings",)),
        "lpn-settings-a-list": (f"write({dummy}, raw='[1, 2]')", ("architecture",)),
        "lpn-architecture-unknown": (f"write({dummy}, {{'architecture': 'os.system', 'config': {{}}}})",
                                     ("architecture",)),
        "lpn-config-unknown-argument": (f"write({dummy}, {{'architecture': 'LPN1d', 'config': {{'evil': 1}}}})",
                                        ("config",)),
        "lpn-config-negative-hidden": (f"write({dummy}, {{'architecture': 'LPN1d', 'config': {{'hidden': -1}}}})",
                                       ("config", "hidden")),
        "lpn-config-string-hidden": (f"write({dummy}, {{'architecture': 'LPN1d', 'config': {{'hidden': '64'}}}})",
                                     ("config", "hidden")),
        "lpn-wrong-tensor-shape": ("t = lpn1d_tensors(hidden=8, depth=3); t['first.weight'] = torch.zeros(9, 1)\n"
                                   "write(t, {'architecture': 'LPN1d', 'config': {'hidden': 8, 'depth': 3}})",
                                   MISMATCH),
        "lpn-missing-tensor": ("t = lpn1d_tensors(hidden=8, depth=3); del t['first.weight']\n"
                               "write(t, {'architecture': 'LPN1d', 'config': {'hidden': 8, 'depth': 3}})", MISMATCH),
        "lpn-not-safetensors": ("open(path, 'wb').write(b'this is not a safetensors file at all')",
                                ("model.safetensors", "safetensors")),
        "lpn-empty-file": ("open(path, 'wb').close()", ("model.safetensors", "safetensors")),
        "lpn-header-length-huge": ("open(path, 'wb').write((2 ** 62).to_bytes(8, 'little') + b'{}')",
                                   ("model.safetensors", "header")),
        "lpn-header-tensor-beyond-file": (
            "header = json.dumps({'w': {'dtype': 'F32', 'shape': [10 ** 9], 'data_offsets': [0, 4 * 10 ** 9]}})"
            ".encode()\nopen(path, 'wb').write(len(header).to_bytes(8, 'little') + header + bytes(16))",
            ("model.safetensors", "offset", "size", "header")),
        "lpn-truncated": ("t = lpn1d_tensors(hidden=8, depth=3)\n"
                          "write(t, {'architecture': 'LPN1d', 'config': {'hidden': 8, 'depth': 3}})\n"
                          "data = open(path, 'rb').read(); open(path, 'wb').write(data[:-40])",
                          ("model.safetensors", "truncat", "size", "offset", "incomplete")),
    }
    for label, (write, names) in lpn.items():
        book.add(12, label, FILES, write, "result = load_lpn(path)", names=names, timeout=30.0)
    book.add(12, "lpn-nan-weights", FILES, """
        t = lpn1d_tensors(hidden=8, depth=3); t['core.0.weight'][0, 0] = NAN
        write(t, {'architecture': 'LPN1d', 'config': {'hidden': 8, 'depth': 3}})
        result = load_lpn(path).prox(torch.linspace(-1, 1, 5)[:, None])""", names=("non-finite", "nan"),
             check="True", timeout=30.0)
    foe = {
        "foe-missing-keys": ("t = foe_tensors(); del t['log_nu']; write(t, {})", "result = FieldOfExperts.load(path)",
                             ("not a field of experts",)),
        "foe-filters-2d": ("t = foe_tensors(); t['filters'] = torch.ones(3, 3); write(t, {})",
                           "result = FieldOfExperts.load(path)", ("'filters'",)),
        "foe-settings-bad-json": ("write(foe_tensors(), raw='{oops')", "result = FieldOfExperts.load(path)",
                                  ("settings",)),
        "foe-potential-unknown": ("write(foe_tensors(), {'potential': 'evil'})", "result = FieldOfExperts.load(path)",
                                  ("'potential'",)),
        "foe-padding-unknown": ("write(foe_tensors(), {'padding': 'evil'})",
                                "result = FieldOfExperts.load(path).value(rand(1, 1, 8, 8))", ("'padding'",)),
        "foe-nan-filters": ("t = foe_tensors(); t['filters'][0, 0, 0] = NAN; write(t, {})",
                            "result = FieldOfExperts.load(path).value(rand(1, 1, 8, 8))", ("'filters'",)),
        "foe-nu-underflows-to-zero": ("t = foe_tensors(); t['log_nu'][0] = -1000.0; write(t, {})",
                                      "result = FieldOfExperts.load(path)", ("'nu'",)),
        "foe-weights-wrong-length": ("t = foe_tensors(); t['log_weights'] = torch.zeros(3); write(t, {})",
                                     "result = FieldOfExperts.load(path)", ("'weights'", "log_weights")),
        "foe-settings-a-list": ("write(foe_tensors(), raw='[1]')", "result = FieldOfExperts.load(path)",
                                ("settings",)),
    }
    for label, (write, call, names) in foe.items():
        book.add(12, label, FILES, write, call, names=names, timeout=30.0)
    unet = ("shutil.copytree(WEIGHTS + '/ddpm_natural', folder + '/ddpm')\n"
            "config_path = folder + '/ddpm/unet/config.json'\nweights_path = folder + "
            "'/ddpm/unet/diffusion_pytorch_model.safetensors'")
    diffusion = {
        "unet-config-bad-json": ("open(config_path, 'w').write('{not json')", ("config.json", "json")),
        "unet-config-huge-channels": ("c = json.load(open(config_path)); c['block_out_channels'] = [2 ** 20] * 3\n"
                                      "json.dump(c, open(config_path, 'w'))",
                                      ("block_out_channels", "config.json")),
        "unet-weights-missing-tensors": (
            "from safetensors.torch import load_file\nt = load_file(weights_path)\n"
            "save_file({k: v for k, v in list(t.items())[: len(t) // 2]}, weights_path)",
            ("missing", "diffusion_pytorch_model")),
        "unet-weights-wrong-shape": (
            "from safetensors.torch import load_file\nt = load_file(weights_path)\n"
            "t['conv_in.weight'] = torch.zeros(7, 1, 3, 3)\nsave_file(t, weights_path)",
            ("conv_in.weight", "shape", "size mismatch")),
        "unet-weights-nan": ("from safetensors.torch import load_file\nt = load_file(weights_path)\n"
                             "t['conv_in.weight'][0, 0, 0, 0] = NAN\nsave_file(t, weights_path)",
                             ("non-finite", "nan")),
        "scheduler-bad-json": ("open(folder + '/ddpm/scheduler/scheduler_config.json', 'w').write('{')",
                               ("scheduler_config.json", "json")),
        "scheduler-betas-above-one": ("p = folder + '/ddpm/scheduler/scheduler_config.json'\n"
                                      "c = json.load(open(p)); c['beta_start'] = 1.5; c['beta_end'] = 2.0\n"
                                      "json.dump(c, open(p, 'w'))", ("'scheduler'", "beta")),
    }
    for label, (corrupt, names) in diffusion.items():
        book.add(12, f"diffusion-{label}", FILES, unet, corrupt, """
            prior = DiffusionPrior.from_pretrained(folder + '/ddpm')
            result = prior.denoise(rand(1, 1, 16, 16), 0.1)""", names=names, check=None, timeout=60.0)
    flow = ("shutil.copytree(WEIGHTS + '/flow_faces32', folder + '/flow')\n"
            "calibration = folder + '/flow/calibration.safetensors'")
    book.add(12, "flow-calibration-nan", FILES, flow, "save_file({'weights': torch.tensor([1.0, NAN])}, calibration)",
             "result = FlowPrior.from_pretrained(folder + '/flow')", names=("calibration",), timeout=60.0)
    book.add(12, "flow-calibration-2d", FILES, flow, "save_file({'weights': torch.ones(2, 2)}, calibration)",
             "result = FlowPrior.from_pretrained(folder + '/flow')", names=("calibration",), timeout=60.0)
    book.add(12, "flow-transformer-config-bad-json", FILES, flow,
             "open(folder + '/flow/transformer/config.json', 'w').write('[')",
             "result = FlowPrior.from_pretrained(folder + '/flow')", names=("config.json", "json"), timeout=60.0)


# 13 ----------------------------------------------------------------------------------------------------------------
MEMORY = """
import gc
g = torch.Generator().manual_seed(0)


def resident_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def growth(call):
    before = resident_mib()
    out = call()
    del out
    gc.collect()
    return resident_mib() - before
"""
GROWTH = "result < 64 or f'{result:.0f} MB more resident after the call'"


def _memory(book: _Catalogue) -> None:
    calls = {
        "foe_grad-2048-float64": ("x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)\n"
                                  "f = torch.randn(48, 7, 7, generator=g, dtype=torch.float64)",
                                  "ops.foe_grad(x, f, torch.ones(48, dtype=torch.float64), "
                                  "torch.full((48,), 0.1, dtype=torch.float64), 'abs', 'reflect')"),
        "foe_grad-2048-float32-zero": ("x = torch.rand(1, 1, 2048, 2048, generator=g)\n"
                                       "f = torch.randn(48, 7, 7, generator=g)",
                                       "ops.foe_grad(x, f, torch.ones(48), torch.full((48,), 0.1), 'student', 'zero')"),
        "foe_hvp-1024": ("x = torch.rand(1, 1, 1024, 1024, generator=g, dtype=torch.float64)\n"
                         "v = torch.rand(1, 1, 1024, 1024, generator=g, dtype=torch.float64)\n"
                         "f = torch.randn(24, 7, 7, generator=g, dtype=torch.float64)",
                         "ops.foe_hvp(x, v, f, torch.ones(24, dtype=torch.float64), "
                         "torch.full((24,), 0.1, dtype=torch.float64), 'abs', 'reflect')"),
        "foe_energy-2048": ("x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)\n"
                            "f = torch.randn(24, 7, 7, generator=g, dtype=torch.float64)",
                            "ops.foe_energy(x, f, torch.ones(24, dtype=torch.float64), "
                            "torch.full((24,), 0.1, dtype=torch.float64), 'abs', 'reflect')"),
        "gain_adjoint-batched": ("A = torch.randn(2, 16, 16384, generator=g, dtype=torch.float64)\n"
                                 "r = torch.randn(32, 2, 16, generator=g, dtype=torch.float64)",
                                 "ops.gain_adjoint(A, r)"),
        "gain_adjoint-with-gains-and-u": ("A = torch.randn(2, 16, 16384, generator=g, dtype=torch.float64)\n"
                                          "r = torch.randn(32, 2, 16, generator=g, dtype=torch.float64)",
                                          "ops.gain_adjoint(A, r, torch.ones(32, 16, dtype=torch.float64), r)"),
        "gain_forward-batched": ("A = torch.randn(2, 16, 16384, generator=g, dtype=torch.float64)\n"
                                 "x = torch.randn(32, 16384, generator=g, dtype=torch.float64)",
                                 "ops.gain_forward(A, x)"),
        "gain_normal_pass-batched": ("A = torch.randn(2, 16, 16384, generator=g, dtype=torch.float64)\n"
                                     "s = torch.randn(32, 16384, generator=g, dtype=torch.float64)\n"
                                     "c = torch.randn(32, 2, 16, generator=g, dtype=torch.float64)",
                                     "ops.gain_normal_pass(A, s, torch.ones(32, 16, dtype=torch.float64), c)"),
        "tv_prox-1024": ("y = torch.rand(1, 1, 1024, 1024, generator=g, dtype=torch.float64)",
                         "ops.tv_prox(y, 0.1, max_iter=20)"),
        "tv_grad-2048": ("x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)",
                         "ops.tv_grad(x, 0.01)"),
        "tv_hvp-2048": ("x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)",
                        "ops.tv_hvp(x, x, 0.01)"),
        "finite_diff-2048": ("x = torch.rand(1, 1, 2048, 2048, generator=g, dtype=torch.float64)",
                             "ops.finite_diff_adjoint(ops.finite_diff(x))"),
    }
    for label, (setup, call) in calls.items():
        book.add(13, label, MEMORY, setup, f"result = growth(lambda: {call})", check=GROWTH, timeout=180.0)


# 15 ----------------------------------------------------------------------------------------------------------------
UNCLEAR = {  # label: (call, names, check or None)
    # absurd integers
    "least_squares-max_iter-2**70": ("least_squares(I, y, 0.1, max_iter=2 ** 70)", "'max_iter'", None),
    "FISTA-max_iter-2**70": ("FISTA(I, y, 0.1, max_iter=2 ** 70)", "'max_iter'", None),
    "PDHG-max_iter-2**70": ("PDHG(I, y, 0.1, max_iter=2 ** 70)", "'max_iter'", None),
    "PnPADMM-cg_iter-2**70": ("PnPADMM(I, y, prox, cg_iter=2 ** 70).run()", "'cg_iter'", None),
    "tv_denoise-max_iter-2**70": ("tv_denoise(y, 0.1, max_iter=2 ** 70)", "'max_iter'",
                                  "close(result, tv_denoise(y, 0.1), 1e-6)"),
    "calibrate-max_iter-2**70": ("calibrate(yc, Ac, method=pgd, max_iter=2 ** 70)", "'max_iter'", None),
    "Radon-angles-2**70": ("Radon((8, 8), 2 ** 70)", "'angles'", None),
    "Downsampling-factor-2**70": ("Downsampling(2 ** 70)", "'factor'", None),
    "CompressedSensing-m-2**70": ("CompressedSensing(2 ** 70, (1, 8, 8))", "'m'", None),
    "load_image-size-2**70": ("imaging.data.load_image('camera', size=2 ** 70)", "load_image: argument 'size'", None),
    "gaussian_kernel-size-2**70": ("gaussian_kernel(1.0, size=2 ** 70)", "gaussian_kernel: argument 'size'", None),
    "box_kernel-size-2**70": ("box_kernel(2 ** 70)", "box_kernel: size", None),
    "Inpainting-random-shape-2**70": ("Inpainting.random((2 ** 70,), 0.5)", "Inpainting.random: argument 'shape'",
                                      None),
    "FieldOfExperts-random-count-2**70": ("FieldOfExperts.random(count=2 ** 70)", "'count'", None),
    "cartesian_mask-shape-2**70": ("cartesian_mask((8, 2 ** 70))", "cartesian_mask: argument 'shape'", None),
    # weights of length N where one number is expected
    "least_squares-lam-length-N": ("least_squares(I, y, lam=torch.full((2,), 0.1))", "'lam'", None),
    "FISTA-lam-length-N": ("FISTA(I, y, torch.full((2,), 0.1))", "'lam'", None),
    "AcceleratedGradient-lam-length-N": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), torch.full((2,), 0.1))",
                                         "'lam'", None),
    "PnPADMM-rho-length-N": ("PnPADMM(I, y, prox, rho=torch.full((2,), 0.1))", "'rho'", None),
    "PnPPGD-step-length-N": ("PnPPGD(I, y, prox, step=torch.full((2,), 0.5))", "'step'", None),
    "tv_denoise-lam-wrong-length": ("tv_denoise(y, torch.full((3,), 0.1))", "'lam'", None),
    "tv_reconstruct-lam-per-sample": ("tv_reconstruct(I, y, torch.tensor([0.05, 0.2]), tol=1e-6, max_iter=5000)",
                                      "'lam'", "both(close(result.x[:1], tv_denoise(y[:1], 0.05, tol=1e-8), 1e-3), "
                                               "close(result.x[1:], tv_denoise(y[1:], 0.2, tol=1e-8), 1e-3))"),
    "tv_denoise-lam-per-sample": ("tv_denoise(y, torch.tensor([0.05, 0.2]), tol=1e-8)", "'lam'",
                                  "both(close(result[:1], tv_denoise(y[:1], 0.05, tol=1e-8), 1e-6), "
                                  "close(result[1:], tv_denoise(y[1:], 0.2, tol=1e-8), 1e-6))"),
    "GaussianNoise-sigma-0d-tensor": ("GaussianNoise(torch.tensor(0.1))", "'sigma'", None),
    # x0 of the wrong shape
    "least_squares-x0-wrong-shape": ("least_squares(I, y, 0.1, x0=torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "FISTA-x0-wrong-shape": ("FISTA(I, y, 0.1).run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "FISTA-x0-batch-1": ("FISTA(I, y, 0.1).run(torch.zeros(1, 1, 8, 8))", "'x0'",
                         "close(result.x, FISTA(I, y, 0.1).run().x, 1e-6)"),
    "PDHG-x0-wrong-shape": ("PDHG(I, y, 0.1).run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "AcceleratedGradient-x0-wrong-shape": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), 0.1)"
                                           ".run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "PnPADMM-x0-wrong-shape": ("PnPADMM(I, y, prox).run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "PnPPGD-x0-wrong-shape": ("PnPPGD(I, y, prox).run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "tv_reconstruct-x0-wrong-shape": ("tv_reconstruct(I, y, 0.1, x0=torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "CG-x0-wrong-shape": ("CG(lambda v: v, y).run(torch.zeros(2, 1, 4, 4))", "'x0'", None),
    "pinv-x0-wrong-shape": ("Blur(gaussian_kernel(1.0)).pinv(y, x0=torch.zeros(2, 1, 4, 4))", "'x0'", None),
    # box=(0,) and other malformed boxes
    "tv_reconstruct-box-one-number": ("tv_reconstruct(I, y, 0.1, box=(0,))", "'box'", None),
    "FISTA-box-one-number": ("FISTA(I, y, 0.1, box=(0,))", "'box'", None),
    "PDHG-box-scalar": ("PDHG(I, y, 0.1, box=0.5)", "'box'", None),
    "PnPPGD-box-three-numbers": ("PnPPGD(I, y, prox, box=(0, 1, 2))", "'box'", None),
    "PnPADMM-box-strings": ("PnPADMM(I, y, prox, box=('a', 1))", "'box'", None),
    "AcceleratedGradient-box-one-number": ("AcceleratedGradient(I, y, TotalVariation(eps=0.1), 0.1, box=(0,))",
                                           "'box'", None),
    # dtypes
    "tv-int": ("ops.tv((y * 10).long())", "'x'", None),
    "tv_grad-bool": ("ops.tv_grad(y > 0.5)", "'x'", None),
    "finite_diff-int": ("ops.finite_diff((y * 10).int())", "'x'", None),
    "finite_diff-complex": ("ops.finite_diff(y.to(torch.complex128))", "'x'",
                            "matches(result, fdm._finite_diff_torch(y.to(torch.complex128)))"),
    "foe_grad-int": ("ops.foe_grad((y * 10).long(), randn(2, 3, 3), torch.ones(2, dtype=torch.float64), "
                     "torch.ones(2, dtype=torch.float64))", "'x'", None),
    "gain_forward-complex": ("ops.gain_forward(Ac.to(torch.complex128), xc.to(torch.complex128))", "'A'",
                             "close(result, torch.einsum('lmn,bn->blm', Ac, xc).to(torch.complex128), 1e-12)"),
    "gain_adjoint-dtype-mismatch": ("ops.gain_adjoint(Ac.float(), randn(1, 6, 8))", "'r'", None),
    "least_squares-int-y": ("least_squares(I, (y * 10).long(), lam=0.1)", "'y'", None),
    "least_squares-float16-y": ("least_squares(I, y.half(), lam=0.1)", "'y'",
                                "close(result.x, y / 1.1, 1e-2)"),
    "tv_denoise-float16": ("tv_denoise(y.half(), 0.05)", "'y'", "close(result, tv_denoise(y, 0.05), 2e-2)"),
    "tv_reconstruct-complex-y": ("tv_reconstruct(I, torch.complex(y, rand(2, 1, 8, 8, seed=3)), 0.1, tol=1e-7, "
                                 "max_iter=5000)", "'y'", "close(result.x, tv_denoise(y, 0.1, tol=1e-9), 1e-3)"),
    "Blur-int-image": ("Blur(gaussian_kernel(1.0))((y * 10).long())", "'x'", None),
    "calibrate-y-float32-A-float64": ("calibrate(yc.float(), Ac, method=pgd)", "dtype", None),
    "estimate_noise-int": ("estimate_noise((rand(1, 1, 32, 32) * 255).long())", "'y'",
                           "math.isfinite(result) and result >= 0"),
    "LPN-prox-int": ("imaging.priors.pretrained_lpn('image').prox((rand(1, 1, 16, 16) * 255).long())", "'y'", None),
    "Radon-complex": ("Radon((8, 8), 4)(y.to(torch.complex128))", "'x'",
                      "close(result.real, Radon((8, 8), 4)(y), 1e-12)"),
    # devices: meta tensors
    "tv-meta": ("ops.tv(y.to('meta'))", "'x'", "tuple(result.shape) == (2, 1) and result.device.type == 'meta'"),
    "finite_diff-meta": ("ops.finite_diff(y.to('meta'))", "'x'",
                         "tuple(result.shape) == (2, 1, 2, 8, 8) and result.device.type == 'meta'"),
    "raw-tv_prox-meta": ("torch.ops.imaging.tv_prox(y.to('meta'), torch.full((2, 1), 0.1, device='meta'), True, "
                         "1e-4, 10, None, None, None)", "'y'", "result[0].shape == y.shape"),
    "gain_forward-meta": ("ops.gain_forward(Ac.to('meta'), xc.to('meta'))", "'A'",
                          "tuple(result.shape) == (1, 6, 8) and result.device.type == 'meta'"),
    "gain_forward-x-on-meta-A-on-cpu": ("ops.gain_forward(Ac, xc.to('meta'))", "'x'", None),
    "tv_prox-meta": ("ops.tv_prox(y.to('meta'), 0.1)", "'y'", "result[0].shape == y.shape"),
    "tv_denoise-meta": ("tv_denoise(y.to('meta'), 0.1)", "'y'", "result.shape == y.shape"),
    "least_squares-meta": ("least_squares(I, y.to('meta'), lam=0.1)", "'y'", None),
    "FISTA-meta": ("FISTA(I, y.to('meta'), 0.1).run()", "'y'", None),
    "Blur-meta-input": ("Blur(gaussian_kernel(1.0))(y.to('meta'))", "'x'", None),
    "foe_grad-meta": ("ops.foe_grad(y.to('meta'), randn(2, 3, 3).to('meta'), torch.ones(2, dtype=torch.float64, "
                      "device='meta'), torch.ones(2, dtype=torch.float64, device='meta'))", "'x'",
                      "result.shape == y.shape"),
    "calibrate-meta": ("calibrate(yc.to('meta'), Ac.to('meta'), method=pgd)", "'A'", None),
    # empty tensors
    "tv-empty": ("ops.tv(torch.zeros(0, 1, 8, 8))", "'x'", None),
    "tv_prox-empty": ("ops.tv_prox(torch.zeros(1, 1, 0, 8), 0.1)", "'y'", None),
    "finite_diff-empty": ("ops.finite_diff(torch.zeros(1, 1, 0, 8))", "'x'", None),
    "raw-tv-empty": ("torch.ops.imaging.tv(torch.zeros(0, 1, 8, 8), 0.0, True)", "empty", None),
    "least_squares-empty": ("least_squares(I, torch.zeros(0, 1, 8, 8), lam=0.1)", "'y'", None),
    "tv_reconstruct-empty": ("tv_reconstruct(I, torch.zeros(0, 1, 8, 8), 0.1)", "'y'", None),
    "Blur-empty": ("Blur(gaussian_kernel(1.0))(torch.zeros(0, 1, 8, 8))", "'x'", None),
    "Radon-empty-batch": ("Radon((8, 8), 4)(torch.zeros(0, 1, 8, 8))", "'x'", None),
    "calibrate-empty": ("calibrate(torch.zeros(6, 0, dtype=torch.float64), torch.zeros(6, 0, 5, "
                        "dtype=torch.float64), method=pgd)", "'A'", None),
    "gain_forward-empty-A": ("ops.gain_forward(torch.zeros(3, 4, 0), torch.zeros(2, 0))", "'A'", None),
    "FieldOfExperts-empty": ("FieldOfExperts.pretrained().value(torch.zeros(0, 1, 8, 8))", "'x'", None),
    "estimate_noise-empty": ("estimate_noise(torch.zeros(0))", "'y'", None),
    "psnr-empty": ("imaging.metrics.psnr(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8))", "'x'",
                   "tuple(result.shape) == (0,)"),
    # 1x1 and 1xN images
    "tv-1x1": ("ops.tv(y[..., :1, :1])", "'x'", "bool((result == 0).all())"),
    "tv_grad-1x1": ("ops.tv_grad(y[..., :1, :1])", "'x'", "bool((result == 0).all())"),
    "finite_diff-1x1": ("ops.finite_diff(y[..., :1, :1])", "'x'", "bool((result == 0).all())"),
    "tv_reconstruct-1x1": ("tv_reconstruct(I, y[..., :1, :1], 0.1)", "'y'", "close(result.x, y[..., :1, :1], 1e-3)"),
    "PDHG-1xN": ("PDHG(I, y[..., :1, :], 0.1, tol=1e-7, max_iter=20000).run()", "'y'",
                 "close(result.x, tv_denoise(y[..., :1, :], 0.1, tol=1e-10), 1e-3)"),
    "FISTA-1x1": ("FISTA(I, y[..., :1, :1], 0.1).run()", "'y'", "close(result.x, y[..., :1, :1], 1e-4)"),
    "least_squares-blur-1x1": ("least_squares(Blur(gaussian_kernel(1.0)), y[..., :1, :1], lam=0.1)", "kernel", None),
    "Downsampling-1x1": ("Downsampling(2)(y[..., :1, :1])", "larger than the image", None),
    "FieldOfExperts-1x1-reflect": ("FieldOfExperts.pretrained().value(y[..., :1, :1])", "larger", None),
    "foe_grad-1xN-zero-padding": ("ops.foe_grad(y[..., :1, :], randn(2, 3, 3), torch.ones(2, dtype=torch.float64), "
                                  "torch.full((2,), 0.1, dtype=torch.float64), 'abs', 'zero')", "'x'",
                                  "close(result, foem._foe_grad_torch(y[..., :1, :], randn(2, 3, 3), "
                                  "torch.ones(2, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64), "
                                  "'abs', 'zero'), 1e-10)"),
    "tv_hvp-1xN": ("ops.tv_hvp(y[..., :1, :], y[..., :1, :], 0.1)", "'x'",
                   "close(result, tvm._tv_hvp_torch(y[..., :1, :], y[..., :1, :], 0.1), 1e-10)"),
    "estimate_noise-1xN": ("estimate_noise(rand(1, 1, 1, 64))", "noise_level", None),
    "MRI-1x1": ("MRI(torch.ones(1, 1))(y[..., :1, :1])", "'x'", "close(result.real, y[..., :1, :1], 1e-12)"),
    "LPN-image-1x1": ("imaging.priors.pretrained_lpn('image').prox(rand(1, 1, 1, 1))", "'y'", None),
    "calibrate-1-1-1": ("calibrate(torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[[1.0]]], "
                        "dtype=torch.float64), method=calibrate_least_squares)", "'y'",
                        "both(close(result.gains, torch.ones(1), 1e-8), close(result.x, torch.tensor([2.0]), 1e-8))"),
    "tv-volume-1x1x1": ("ops.tv(rand(1, 1, 1, 1, 1))", "'x'", "bool((result == 0).all())"),
    # non-contiguous and strided inputs
    "tv-transposed": ("ops.tv(y.transpose(-1, -2))", "'x'",
                      "close(result, tvm._tv_torch(y.transpose(-1, -2).contiguous()), 1e-12)"),
    "tv_grad-strided": ("ops.tv_grad(y[..., ::2], 0.1)", "'x'",
                        "close(result, tvm._tv_grad_torch(y[..., ::2].contiguous(), 0.1), 1e-12)"),
    "tv_denoise-expanded-stride-0": ("tv_denoise(rand(1, 1, 1, 8).expand(1, 1, 8, 8), 0.1)", "'y'",
                                     "close(result, tv_denoise(rand(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous(), 0.1), "
                                     "1e-12)"),
    "finite_diff-channels-last": ("ops.finite_diff(rand(2, 3, 8, 8).to(memory_format=torch.channels_last))", "'x'",
                                  "close(result, fdm._finite_diff_torch(rand(2, 3, 8, 8)), 0.0)"),
    "finite_diff_adjoint-transposed": ("ops.finite_diff_adjoint(randn(1, 1, 2, 8, 8).transpose(-1, -2))", "'g'",
                                       "close(result, fdm._finite_diff_adjoint_torch(randn(1, 1, 2, 8, 8)"
                                       ".transpose(-1, -2).contiguous()), 1e-12)"),
    "foe_grad-transposed": ("ops.foe_grad(y.transpose(-1, -2), randn(2, 3, 3), torch.ones(2, dtype=torch.float64), "
                            "torch.full((2,), 0.1, dtype=torch.float64))", "'x'",
                            "close(result, foem._foe_grad_torch(y.transpose(-1, -2).contiguous(), randn(2, 3, 3), "
                            "torch.ones(2, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64)), 1e-10)"),
    "foe_energy-transposed-filters": ("ops.foe_energy(y, randn(2, 3, 5).transpose(1, 2), "
                                      "torch.ones(2, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64))",
                                      "'filters'",
                                      "close(result, foem._foe_energy_torch(y, randn(2, 3, 5).transpose(1, 2)"
                                      ".contiguous(), torch.ones(2, dtype=torch.float64), "
                                      "torch.full((2,), 0.1, dtype=torch.float64)), 1e-12)"),
    "gain_forward-A-column-major": ("ops.gain_forward(Ac.transpose(-1, -2).contiguous().transpose(-1, -2), xc)",
                                    "'A'", "close(result, torch.einsum('lmn,bn->blm', Ac, xc), 1e-12)"),
    "gain_adjoint-r-strided": ("ops.gain_adjoint(Ac, randn(1, 6, 16)[..., ::2])", "'r'",
                               "close(result[0], torch.einsum('lmn,blm->bn', Ac, randn(1, 6, 16)[..., ::2]), 1e-12)"),
    "least_squares-strided-y": ("least_squares(Blur(gaussian_kernel(1.0)), rand(1, 1, 16, 16)[..., ::2, ::2], "
                                "lam=0.1)", "'y'",
                                "close(result.x, least_squares(Blur(gaussian_kernel(1.0)), rand(1, 1, 16, 16)"
                                "[..., ::2, ::2].contiguous(), lam=0.1).x, 1e-8)"),
    "PDHG-transposed-y": ("PDHG(I, y.transpose(-1, -2), 0.1).run()", "'y'",
                          "close(result.x, PDHG(I, y.transpose(-1, -2).contiguous(), 0.1).run().x, 1e-8)"),
    "tv-storage-offset": ("ops.tv(rand(3, 1, 8, 8)[1:])", "'x'",
                          "close(result, tvm._tv_torch(rand(3, 1, 8, 8)[1:].contiguous()), 1e-12)"),
    "raw-finite_diff-transposed": ("torch.ops.imaging.finite_diff(y.transpose(-1, -2))", "contiguous",
                                   "close(result, fdm._finite_diff_torch(y.transpose(-1, -2).contiguous()), 0.0)"),
    "raw-tv-strided": ("torch.ops.imaging.tv(y[..., ::2], 0.0, True)", "contiguous",
                       "close(result, tvm._tv_torch(y[..., ::2].contiguous()), 1e-12)"),
    "raw-gain_forward-A-transposed-view": ("torch.ops.imaging.gain_forward(Ac.transpose(-1, -2).contiguous()"
                                           ".transpose(-1, -2), xc, None)", "contiguous",
                                           "close(result, torch.einsum('lmn,bn->blm', Ac, xc), 1e-12)"),
}
UNCLEAR_SETUP = """
import importlib
from imaging.calibration import calibrate, least_squares as calibrate_least_squares, pgd
tvm = importlib.import_module("imaging.ops.tv")
foem = importlib.import_module("imaging.ops.foe")
fdm = importlib.import_module("imaging.ops.finite_diff")
Ac, xc = randn(6, 8, 5, seed=7), rand(1, 5, seed=8)
yc = torch.einsum("lmn,n->lm", Ac, xc[0])
"""


def _unclear_inputs(book: _Catalogue) -> None:
    for label, (call, name, check) in UNCLEAR.items():
        book.add(15, label, PARAMS, UNCLEAR_SETUP, f"result = {call}", names=(name,), check=check)


# --- report ----------------------------------------------------------------------------------------------------
def _table(rows: list[dict], categories: list[int]) -> list[str]:
    header = f"{'category':<64} {'tried':>5} " + " ".join(f"{o:>13}" for o in OUTCOMES)
    lines = [header, "-" * len(header)]
    totals = {o: 0 for o in OUTCOMES}
    for category in categories:
        mine = [r for r in rows if r["category"] == category]
        counts = {o: sum(r["outcome"] == o for r in mine) for o in OUTCOMES}
        for o in OUTCOMES:
            totals[o] += counts[o]
        label = f"{category:>2} {CATEGORIES[category]}"
        lines.append(f"{label:<64} {len(mine):>5} " + " ".join(f"{counts[o]:>13}" for o in OUTCOMES))
    lines.append("-" * len(header))
    tried = sum(1 for r in rows if r["category"] in categories)
    lines.append(f"{'total':<64} {tried:>5} " + " ".join(f"{totals[o]:>13}" for o in OUTCOMES))
    return lines


def summarise(rows: list[dict]) -> dict:
    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    return {"tried": len(rows), **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", type=int, nargs="*", choices=sorted(CATEGORIES), help="only these categories")
    parser.add_argument("--json", default=os.path.join("out", "robustness.json"), help="where to write the results")
    parser.add_argument("--isolation", choices=("forkserver", "subprocess"), default="forkserver")
    parser.add_argument("--case", help="run one case by name (e.g. 10/least_squares-lam-nan) in this process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    book = catalogue()
    if args.case:
        case = book[args.case]
        if args.child:
            _limit_memory()
            print(json.dumps(execute(case, args.scratch)))
            return 0
        print(f"# {case.name} (expects: {case.expects})\n{case.source()}")
        with tempfile.TemporaryDirectory(prefix="robustness-") as scratch:
            print(json.dumps(execute(case, scratch), indent=2, ensure_ascii=False))
        return 0
    chosen = [c for c in book.values() if not args.category or c.category in args.category]
    if args.list:
        for case in chosen:
            print(f"{case.name:<60} expects {case.expects}")
        return 0
    context = None
    if args.isolation == "forkserver":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "imaging"])
    start = time.perf_counter()
    rows = []
    for k, case in enumerate(chosen, 1):
        report = run_isolated(context, case)
        rows.append({"name": case.name, "category": case.category, "expects": case.expects, **report,
                     "code": case.code})
        print(f"[{k:>3}/{len(chosen)}] {report['outcome']:<13} {report.get('seconds') or 0:6.1f}s  {case.name}",
              flush=True)
    elapsed = time.perf_counter() - start
    categories = sorted({c.category for c in chosen})
    print()
    print("\n".join(_table(rows, categories)))
    print(f"\n{len(rows)} cases in {elapsed:.0f} s ({args.isolation}, {os.environ.get('OMP_NUM_THREADS')} "
          f"OpenMP thread(s))")
    honest = [r["name"] for r in rows if r.get("not_converged")]
    if honest:
        print(f"\n{len(honest)} of the right answers report converged=False (with a ConvergenceWarning): "
              f"{', '.join(honest)}")
    flagged = [r for r in rows if r["outcome"] not in ("right", "clear error")]
    if flagged:
        print("\nCases that are not right / clear errors (reproduce with --case NAME):")
        for row in flagged:
            print(f"\n  [{row['outcome']}] {row['name']}  (expects {row['expects']})\n    {row['message']}")
    harness = [r for r in rows if r["outcome"] == "harness error"]
    if harness:
        print(f"\n{len(harness)} harness error(s): fix the catalogue", file=sys.stderr)
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "date": time.strftime("%Y-%m-%d"), "isolation": args.isolation, "seconds": round(elapsed, 1),
              "prelude": PRELUDE, "totals": summarise(rows),
              "categories": {str(c): {"title": CATEGORIES[c], **summarise([r for r in rows if r["category"] == c])}
                             for c in categories},
              "cases": rows}
    folder = os.path.dirname(args.json)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=1, ensure_ascii=False)
    print(f"\nwrote {args.json}")
    return 1 if harness else 0


if __name__ == "__main__":
    sys.exit(main())
