"""Benchmark: isotropic TV (ROF) denoising, imaging vs a pure-torch FGP, scikit-image and deepinv, to a fixed accuracy.

Problem (all contenders are scored on this one objective, in float64):

    x* = argmin_x P(x),   P(x) = 1/2 ||x - y||^2 + lam * TV(x),
    TV(x) = sum over pixels of sqrt(sum over spatial axes a of (D_a x)^2),

with forward differences D_a x[i] = x[i+1] - x[i] and a Neumann boundary (D_a x = 0 on the last slice along a);
no normalisation. Batched inputs (B, C, *spatial) are denoised per image and per channel and P sums over all of them.
Default case: the 512x512 scikit-image `camera` scaled to [0, 1] plus Gaussian noise sigma=0.1 (seed 0), lam=0.1.

Reference. x_ref is the float64 minimiser from `imaging.tv_denoise(..., tol=1e-9)` when that function exists, else
from this file's pure-torch FISTA on the dual (Beck-Teboulle FGP, step 1/(4 * ndim), i.e. 1/8 in 2-D) run until
its relative duality gap is <= 1e-9 or --ref-iters (5000) iterations. P* = P(x_ref); the reference's duality gap is printed.

Fair time-to-accuracy. Every contender exposes a knob (its iteration count with its own stopping test disabled, or
for imaging also its duality-gap tolerance). We look for the cheapest knob setting whose output x has relative
objective gap (P(x) - P*) / P* <= --gap (default 1e-4): the knob is doubled (capped so that a run lasts about
--budget seconds), then bisected to 2% (gap vs. iterations need not be monotone; the reported setting is always
one that was verified to reach the target). That setting is then timed, best of --repeat runs. A contender whose
run exceeds --budget seconds (or --max-iter iterations) without reaching the target is reported as "not reached"
with the gap and time (best of --repeat) of the largest setting tried. Each contender runs in its own worker process (same thread count
for all); only the solver call is timed (no I/O, no imports, input already in the solver's dtype / layout).
Peak memory = growth of the worker's resident set (VmHWM after resetting it via /proc/self/clear_refs, minus the
RSS just before the call) during the timed call: it counts the solver's working arrays and its output.

Peers and how their parameters map to ours (read from their sources):

* scikit-image `denoise_tv_chambolle(image, weight, eps, max_num_iter)` (skimage/restoration/_denoise.py,
  `_denoise_tv_chambolle_nd`): Chambolle's 2004 projection algorithm. Its docstring writes the problem as
  min sum |grad u| + (lambda_sk / 2)(f - u)^2 with weight = 1 / lambda_sk, i.e. min 1/2||u - f||^2 + weight * TV(u):
  **weight = lam**. The code keeps a dual field p with out = image + D^T p, g = np.diff(out) written into a
  zero array (so the last slice along each axis is 0 = our Neumann convention), norm = sqrt(sum over axes g^2)
  (isotropic over all ndim axes) and p <- (p - tau g) / (1 + tau/weight |g|) with tau = 1 / (2 ndim), which is the
  fixed point of |p| <= weight, i.e. exactly our objective. `eps` stops when |E_{n-1} - E_n| < eps * E_0 with E a
  per-pixel energy; we disable it (eps=0) and use max_num_iter as the knob. float32 input stays float32.
  channel_axis denoises each channel separately (used for the batch case after moving B*C to the last axis).
* deepinv `deepinv.models.TVDenoiser(tau=0.01, rho=1.99, n_it_max, crit)`, called as `model(y, ths)`
  (deepinv/models/tv.py): over-relaxed Chambolle-Pock (Condat 2013) on min 1/2||x - y||^2 + ths * ||Dx||_{1,2}.
  `nabla` writes x[1:] - x[:-1] into a zero tensor (forward differences, Neumann, last slice 0), the dual prox
  projects u onto the l2 ball of radius ths taken over the gradient components (isotropic): **ths = lam**. (The
  class docstring says the TV term is "implicitly normalized by sqrt(8)"; the code does not do that, and the
  numerical check below confirms ths = lam.) Its objective is therefore ours, so its own gap equals ours. `crit`
  stops when ||x_k - x_{k-1}|| / ||x_k|| < crit; we set crit=0 and use n_it_max as the knob. Its default primal
  step tau=0.01 (dual step 1/(8 tau)) is kept (--deepinv-tau changes it). A TVDenoiser keeps its primal/dual
  variables and warm-starts from them on the next call, so every call here builds a fresh instance.
  deepinv cannot be imported in the project venv, so it runs in /work/main/.venv-deepinv (its own torch version).

Other modes: `--case batch` (16x3x256x256 astronaut crops) and `--case volume` (1x1x64x128x128 stack of shifted,
z-blurred camera crops; 3-D isotropic TV); `--verify-mapping` re-runs the peers long with the mapped parameter and
with wrong candidates and prints the distance to x_ref; `--device cuda` reports imaging's time per iteration and
effective bandwidth on a 4096^2 image and a large batch (see `run_cuda` for the byte count).
Run: `python benchmarks/tv_denoise.py [--case 2d|batch|volume] [--gap 1e-4] [--device cuda]`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEEPINV_PYTHON = ROOT / ".venv-deepinv" / "bin" / "python"
MARK = "@@tv-bench "  # prefix of the worker's protocol lines on stdout (anything else there is ignored)


# ----------------------------------------------------------------------------------------------------------------
# Objective, finite differences and the pure-torch FGP solver (used as reference and as a contender)
# ----------------------------------------------------------------------------------------------------------------

def gradient(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Forward differences over the spatial axes of (B, C, *spatial) x -> (ndim, B, C, *spatial); last slice 0."""
    ndim = x.ndim - 2
    if out is None:
        out = x.new_zeros((ndim, *x.shape))
    for k in range(ndim):
        axis, n = 2 + k, x.shape[2 + k]
        torch.sub(x.narrow(axis, 1, n - 1), x.narrow(axis, 0, n - 1), out=out[k].narrow(axis, 0, n - 1))
    return out


def gradient_adjoint(p: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """D^T p (minus the divergence), the adjoint of `gradient` (the last slice of each p[k] is ignored)."""
    out = p.new_zeros(p.shape[1:]) if out is None else out.zero_()
    for k in range(p.shape[0]):
        axis, n = 2 + k, out.shape[2 + k]
        q = p[k].narrow(axis, 0, n - 1)
        out.narrow(axis, 0, n - 1).sub_(q)
        out.narrow(axis, 1, n - 1).add_(q)
    return out


def objective(x: torch.Tensor, y: torch.Tensor, lam: float) -> float:
    """P(x) = 1/2 ||x - y||^2 + lam * TV(x), evaluated in float64."""
    x, y = x.double(), y.double()
    return (0.5 * (x - y).square().sum() + lam * gradient(x).square().sum(0).sqrt().sum()).item()


def fgp(y: torch.Tensor, lam: float, max_iter: int, tol: float = 0.0, check_every: int = 25):
    """Beck-Teboulle FGP: FISTA on the dual  min_{|p_i| <= 1} 1/2 ||y - lam D^T p||^2,  x = y - lam D^T p.

    Step 1/L with L = lam^2 ||D||^2 <= 4 ndim lam^2. Stops after max_iter iterations or when the relative duality gap
    (P(x) - dual(p)) / P(x), dual(p) = 1/2||y||^2 - 1/2||x||^2, checked every `check_every` iterations, is <= tol.
    Returns (x, {"iterations", "gap"}); "gap" is the last duality gap computed (nan if never checked).
    """
    ndim = y.ndim - 2
    step = 1.0 / (4 * ndim * lam)
    p = y.new_zeros((ndim, *y.shape))
    p_next, r, g = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
    x = torch.empty_like(y)
    t, gap, it = 1.0, float("nan"), 0

    def primal(q: torch.Tensor) -> torch.Tensor:
        return gradient_adjoint(q, x).mul_(-lam).add_(y)

    for it in range(1, max_iter + 1):
        gradient(primal(r), g)
        torch.add(r, g, alpha=step, out=p_next)
        p_next.div_(p_next.square().sum(0).sqrt_().clamp_(min=1.0))  # project each pixel's vector on the unit ball
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        torch.sub(p_next, p, out=r).mul_((t - 1.0) / t_next).add_(p_next)
        p, p_next, t = p_next, p, t_next
        if tol > 0 and it % check_every == 0:
            gap = _relative_duality_gap(primal(p), y, lam)
            if gap <= tol:
                break
    x = primal(p).clone()
    if tol > 0:
        gap = _relative_duality_gap(x, y, lam)
    return x, {"iterations": it, "gap": gap}


def _relative_duality_gap(x: torch.Tensor, y: torch.Tensor, lam: float) -> float:
    primal = 0.5 * (x - y).square().sum() + lam * gradient(x).square().sum(0).sqrt().sum()
    dual = 0.5 * (y.square().sum() - x.square().sum())
    return ((primal - dual) / primal).item()


# ----------------------------------------------------------------------------------------------------------------
# Test problems
# ----------------------------------------------------------------------------------------------------------------

def make_problem(case: str, sigma: float, seed: int) -> tuple[torch.Tensor, str]:
    """Noisy float64 input (B, C, *spatial) and a one-line description."""
    from skimage import data

    camera = torch.from_numpy(data.camera().astype(np.float64) / 255.0)
    if case == "2d":
        clean, text = camera[None, None], "camera 512x512"
    elif case == "batch":
        astronaut = torch.from_numpy(data.astronaut().astype(np.float64) / 255.0).permute(2, 0, 1)  # 3x512x512
        offsets = [(r, c) for r in (0, 85, 170, 256) for c in (0, 85, 170, 256)]
        clean = torch.stack([astronaut[:, r:r + 256, c:c + 256] for r, c in offsets])
        text = "16 astronaut crops 16x3x256x256 (per-channel TV)"
    elif case == "volume":
        from scipy.ndimage import gaussian_filter1d

        small = camera[::2, ::2]  # 256x256
        stack = torch.stack([small[k:k + 128, 2 * k:2 * k + 128] for k in range(64)])  # slices drift diagonally
        clean = torch.from_numpy(gaussian_filter1d(stack.numpy(), sigma=1.5, axis=0))[None, None]
        text = "volume 1x1x64x128x128 (shifted camera crops, blurred along z; 3-D TV)"
    else:
        raise ValueError(case)
    noise = torch.randn(clean.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (clean + sigma * noise).contiguous(), text


# ----------------------------------------------------------------------------------------------------------------
# Worker side: one process per contender, driven by JSON lines on stdin
# ----------------------------------------------------------------------------------------------------------------

class Unavailable(RuntimeError):
    """The contender cannot run in this environment (reported and skipped)."""


def build_solver(kind: str, dtype: str):
    """Return (prepare, solve, finish, version): prepare(y64 ndarray) -> native input; solve(native, setting) ->
    (native output, iterations or None); finish(native output) -> float64 ndarray of the (B, C, *spatial) shape."""
    tdtype = getattr(torch, dtype)
    as_tensor = lambda y64: torch.from_numpy(y64).to(tdtype).contiguous()  # noqa: E731
    to_numpy = lambda x: x.detach().double().cpu().numpy()  # noqa: E731

    if kind == "imaging":
        import imaging

        if not hasattr(imaging, "tv_denoise"):
            raise Unavailable("imaging.tv_denoise does not exist yet")

        def solve(y, s):
            x, info = imaging.tv_denoise(y, s["lam"], isotropic=True, tol=s["tol"], max_iter=s["max_iter"],
                                         return_info=True)
            return x, info.get("iterations")

        return as_tensor, solve, to_numpy, f"imaging {getattr(imaging, '__version__', '?')}"

    if kind == "torch-fgp":
        def solve(y, s):
            with torch.inference_mode():
                x, info = fgp(y, s["lam"], s["max_iter"], s["tol"])
            return x, info["iterations"]

        return as_tensor, solve, to_numpy, f"pure torch {torch.__version__}"

    if kind == "skimage":
        import skimage
        from skimage.restoration import denoise_tv_chambolle

        shape: list[tuple[int, ...]] = []

        def prepare(y64):  # (B, C, *S) -> *S (single image) or (*S, B*C) with channel_axis=-1
            shape.append(y64.shape)
            images = y64.reshape(-1, *y64.shape[2:])
            native = images[0] if images.shape[0] == 1 else np.moveaxis(images, 0, -1)
            return np.ascontiguousarray(native, dtype=dtype)

        def solve(y, s):
            channel_axis = None if y.ndim == len(shape[0]) - 2 else -1
            x = denoise_tv_chambolle(y, weight=s["lam"], eps=s["tol"], max_num_iter=s["max_iter"],
                                     channel_axis=channel_axis)
            return x, None

        def finish(x):
            x = x if x.ndim == len(shape[0]) - 2 else np.moveaxis(x, -1, 0)
            return np.asarray(x, dtype=np.float64).reshape(shape[0])

        return prepare, solve, finish, f"scikit-image {skimage.__version__}"

    if kind == "deepinv":
        try:
            import deepinv
            from deepinv.models import TVDenoiser
        except ImportError as error:
            raise Unavailable(f"deepinv not importable: {error}") from error

        def solve(y, s):
            model = TVDenoiser(tau=s.get("tau", 0.01), n_it_max=s["max_iter"], crit=s["tol"])  # fresh: no warm start
            with torch.no_grad():
                return model(y, ths=s["lam"]), None

        return as_tensor, solve, to_numpy, f"deepinv {deepinv.__version__} (torch {torch.__version__})"

    raise ValueError(kind)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(kind: str, dtype: str, y_path: str, threads: int) -> None:
    """Serve solve requests {"setting", "repeat", "out"} from stdin; answer one MARK-prefixed JSON line each."""
    torch.set_num_threads(threads)

    def answer(message: dict) -> None:
        print(MARK + json.dumps(message), flush=True)

    try:
        prepare, solve, finish, version = build_solver(kind, dtype)
    except Unavailable as error:
        answer({"unavailable": str(error)})
        return
    y = prepare(np.load(y_path))
    answer({"ready": True, "version": version, "threads": torch.get_num_threads()})
    for line in sys.stdin:
        request = json.loads(line)
        best, peak, iterations, x = float("inf"), 0, None, None
        for _ in range(request["repeat"]):
            x = None
            exact_peak = _reset_peak_rss()
            before = _rss_bytes()
            start = time.perf_counter()
            x, iterations = solve(y, request["setting"])
            best = min(best, time.perf_counter() - start)
            peak = max(peak, _peak_rss_bytes() - before if exact_peak else 0)
        np.save(request["out"], finish(x))
        answer({"seconds": best, "iterations": iterations, "peak_mb": peak / 2**20})


# ----------------------------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------------------------

class Worker:
    """A contender's worker process (project venv, or the deepinv venv for deepinv)."""

    def __init__(self, kind: str, dtype: str, y_path: Path, threads: int):
        python = str(DEEPINV_PYTHON) if kind == "deepinv" else sys.executable
        if kind == "deepinv" and not DEEPINV_PYTHON.exists():
            raise Unavailable(f"{DEEPINV_PYTHON} is missing")
        self.out = y_path.with_name(f"x-{kind}-{dtype}.npy")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        self.process = subprocess.Popen([python, __file__, "--worker", kind, dtype, str(y_path), str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env, cwd=ROOT)
        hello = self._receive()
        if "unavailable" in hello:
            self.close()
            raise Unavailable(hello["unavailable"])
        self.version = hello["version"]

    def _receive(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        error = self.process.stderr.read().strip().splitlines()
        raise RuntimeError(f"worker died: {error[-1] if error else 'no message'}")

    def run(self, setting: dict, repeat: int = 1) -> tuple[torch.Tensor, dict]:
        self.process.stdin.write(json.dumps({"setting": setting, "repeat": repeat, "out": str(self.out)}) + "\n")
        self.process.stdin.flush()
        result = self._receive()
        return torch.from_numpy(np.load(self.out)), result

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


@dataclass
class Result:
    name: str
    dtype: str
    knob: str = ""
    setting: float = 0
    iterations: int | None = None
    seconds: float = float("nan")
    gap: float = float("nan")
    reached: bool = False
    peak_mb: float = float("nan")
    distance: float = float("nan")
    runs: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Knob:
    """An integer effort knob n -> solver setting; larger n = more accurate."""
    name: str
    setting: callable
    start: int
    limit: int
    label: callable = str
    linear: bool = True  # run time roughly proportional to n


def iteration_knob(lam: float, max_iter: int, **extra) -> Knob:
    return Knob("iterations", lambda n: {"lam": lam, "max_iter": n, "tol": 0.0, **extra}, 8, max_iter)


def tolerance_knob(lam: float, max_iter: int) -> Knob:  # tol = 10^(-n/4): n = 4 -> 1e-1, n = 16 -> 1e-4, ...
    return Knob("tol", lambda n: {"lam": lam, "max_iter": max_iter, "tol": 10 ** (-n / 4)}, 4, 48,
                lambda n: f"{10 ** (-n / 4):.1e}", linear=False)


class Problem:
    def __init__(self, y: torch.Tensor, lam: float, x_ref: torch.Tensor, target: float):
        self.y, self.lam, self.x_ref, self.target = y, lam, x_ref, target
        self.p_star = objective(x_ref, y, lam)

    def gap(self, x: torch.Tensor) -> float:
        return (objective(x, self.y, self.lam) - self.p_star) / self.p_star

    def distance(self, x: torch.Tensor) -> float:
        return ((x.double() - self.x_ref).norm() / self.x_ref.norm()).item()


def time_to_target(worker: Worker, knob: Knob, problem: Problem, budget: float, repeat: int,
                   precision: float = 0.02) -> Result:
    """Doubling then bisection on the knob for the cheapest setting reaching the target gap; then time it."""
    runs = 0

    def attempt(n: int):
        nonlocal runs
        runs += 1
        x, info = worker.run(knob.setting(n))
        return problem.gap(x), info["seconds"]

    n, failing, reaching = knob.start, 0, None
    rate = float("inf")  # fastest seconds per knob unit seen: robust to runs slowed down by other processes
    while True:
        gap, seconds = attempt(n)
        if gap <= problem.target:
            reaching = n
            break
        failing = n
        rate = min(rate, max(seconds, 1e-9) / n)
        expected = rate * n if knob.linear else seconds
        if n >= knob.limit or expected >= budget:
            break
        n = min(2 * n, knob.limit, max(n + 1, int(budget / rate) if knob.linear else 2 * n))  # next run <~ budget
    if reaching is None:  # not reached: report the largest (last) setting
        x, info = worker.run(knob.setting(n), repeat=repeat)
        return _result(problem, knob, n, x, info, reached=False, runs=runs)
    while reaching - failing > max(1, int(precision * reaching)):
        middle = (failing + reaching) // 2
        if attempt(middle)[0] <= problem.target:
            reaching = middle
        else:
            failing = middle
    x, info = worker.run(knob.setting(reaching), repeat=repeat)
    return _result(problem, knob, reaching, x, info, reached=problem.gap(x) <= problem.target, runs=runs)


def _result(problem: Problem, knob: Knob, n: int, x: torch.Tensor, info: dict, reached: bool, runs: int) -> Result:
    return Result("", "", knob=f"{knob.name}={knob.label(n)}", setting=n, iterations=info["iterations"],
                  seconds=info["seconds"], gap=problem.gap(x), reached=reached, peak_mb=info["peak_mb"],
                  distance=problem.distance(x), runs=runs)


def compute_reference(y: torch.Tensor, lam: float, ref_iters: int) -> tuple[torch.Tensor, str]:
    """x_ref in float64: imaging.tv_denoise(tol=1e-9) when available, else the FGP above (rel. duality gap 1e-9)."""
    start = time.perf_counter()
    try:
        import imaging

        tv_denoise = getattr(imaging, "tv_denoise", None)
    except ImportError:
        tv_denoise = None
    if tv_denoise is not None:
        x, info = tv_denoise(y, lam, isotropic=True, tol=1e-9, max_iter=ref_iters or 20_000, return_info=True)
        how = "imaging.tv_denoise(tol=1e-9)"
    else:
        with torch.inference_mode():
            x, info = fgp(y, lam, ref_iters or 5000, tol=1e-9, check_every=100)
        how = "pure-torch FGP (imaging.tv_denoise not available)"
    return x.double(), (f"{how}: {info.get('iterations')} iterations, relative duality gap "
                        f"{info.get('gap', float('nan')):.1e}, {time.perf_counter() - start:.1f} s")


def contenders(args) -> list[tuple[str, str, list[Knob]]]:
    lam, cap = args.lam, args.max_iter
    table = {
        "imaging": [iteration_knob(lam, cap), tolerance_knob(lam, cap)],
        "torch-fgp": [iteration_knob(lam, cap)],
        "skimage": [iteration_knob(lam, cap)],
        "deepinv": [iteration_knob(lam, cap, tau=args.deepinv_tau)],
    }
    return [(kind, dtype, table[kind]) for kind in args.contenders for dtype in args.dtypes]


def benchmark(args) -> None:
    torch.set_num_threads(args.threads)
    y, text = make_problem(args.case, args.sigma, args.seed)
    print(f"TV denoising benchmark: {text}, noise sigma={args.sigma} (seed {args.seed}), lam={args.lam}, "
          f"target relative objective gap {args.gap:.0e}")
    print(f"torch {torch.__version__}, {args.threads} threads for every contender, budget {args.budget:g} s per run")
    x_ref, how = compute_reference(y, args.lam, args.ref_iters)
    problem = Problem(y, args.lam, x_ref, args.gap)
    print(f"reference: {how}; P* = {problem.p_star:.10g}")

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp:
        y_path = Path(tmp) / "y.npy"
        np.save(y_path, y.numpy())
        for kind, dtype, knobs in contenders(args):
            name = {"torch-fgp": "torch FGP"}.get(kind, kind)
            try:
                worker = Worker(kind, dtype, y_path, args.threads)
            except Unavailable as error:
                print(f"skipping {name} {dtype}: {error}")
                continue
            try:
                worker.run(knobs[0].setting(knobs[0].start))  # warm-up (first-touch memory, lazy initialisation)
                tries = [time_to_target(worker, knob, problem, args.budget, args.repeat) for knob in knobs]
            finally:
                worker.close()
            best = min(tries, key=lambda r: (not r.reached, r.seconds if r.reached else r.gap))
            best.name, best.dtype = name, dtype
            best.notes.append(worker.version)
            best.notes += [f"{r.knob}: {r.seconds:.3f} s" for r in tries if r is not best]
            results.append(best)
            print(f"  measured {name} {dtype}: {best.seconds:.3f} s, gap {best.gap:.2e} ({best.runs} search runs)",
                  flush=True)
    print_table(results, args)


def print_table(results: list[Result], args) -> None:
    print()
    print(f"{'contender':11s} {'dtype':8s} {'time (s)':>9s} {'setting':>17s} {'iters':>6s} {'gap':>9s} "
          f"{'reached':>8s} {'dist':>8s} {'peak MiB':>9s}  notes")
    for r in results:
        iterations = "-" if r.iterations is None else str(r.iterations)
        print(f"{r.name:11s} {r.dtype:8s} {r.seconds:9.3f} {r.knob:>17s} {iterations:>6s} {r.gap:9.2e} "
              f"{'yes' if r.reached else 'NOT':>8s} {r.distance:8.1e} {r.peak_mb:9.1f}  {'; '.join(r.notes)}")
    print(f"time: best of {args.repeat} runs of the cheapest setting reaching gap <= {args.gap:.0e} (if not reached:"
          f" of the largest setting tried within the {args.budget:g} s budget); gap = (P(x) - P*) / P*; "
          f"dist = ||x - x_ref|| / ||x_ref||; peak MiB = resident-set growth of the worker process during the call")
    base = next((r for r in results if r.name == "imaging" and r.dtype == "float32" and r.reached), None)
    if base is None:
        base = next((r for r in results if r.reached), None)
        if base is None:
            return
        print(f"(imaging float32 not measured: ratios relative to {base.name} {base.dtype})")
    for r in results:
        if r is base:
            continue
        ratio = r.seconds / base.seconds
        if r.reached:
            print(f"{base.name} {base.dtype} is {ratio:.2f}x faster than {r.name} {r.dtype}")
        else:
            print(f"{base.name} {base.dtype} is > {ratio:.2f}x faster than {r.name} {r.dtype} (which reached only "
                  f"gap {r.gap:.1e} in {r.seconds:.2f} s)")


def verify_mapping(args) -> None:
    """Long runs of the peers with the mapped parameter and with wrong candidates: distance to x_ref."""
    torch.set_num_threads(args.threads)
    y, text = make_problem(args.case, args.sigma, args.seed)
    x_ref, how = compute_reference(y, args.lam, args.ref_iters)
    problem = Problem(y, args.lam, x_ref, args.gap)
    print(f"{text}, lam={args.lam}; reference: {how}")
    candidates = {"mapped (= lam)": args.lam, "lam * sqrt(8)": args.lam * math.sqrt(8),
                  "lam / sqrt(8)": args.lam / math.sqrt(8), "lam * 1.01": args.lam * 1.01}
    peers = {"skimage": {"max_iter": args.verify_iters},
             "deepinv": {"max_iter": args.verify_iters, "tau": args.deepinv_tau}}
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp:
        y_path = Path(tmp) / "y.npy"
        np.save(y_path, y.numpy())
        for kind, setting in peers.items():
            try:
                worker = Worker(kind, "float64", y_path, args.threads)
            except Unavailable as error:
                print(f"skipping {kind}: {error}")
                continue
            try:
                for label, value in candidates.items():
                    x, info = worker.run({**setting, "lam": value, "tol": 0.0})
                    print(f"{kind:8s} float64 {setting['max_iter']} iterations, parameter {label:15s}: "
                          f"||x - x_ref|| / ||x_ref|| = {problem.distance(x):.2e}, gap {problem.gap(x):.2e}, "
                          f"{info['seconds']:.1f} s", flush=True)
            finally:
                worker.close()


def run_cuda(args) -> None:
    """imaging on CUDA: time per iteration and effective bandwidth.

    Time per iteration = (t(n2) - t(n1)) / (n2 - n1) with tol=0 (fixed iteration counts), which removes the fixed
    setup cost. Bytes per iteration are estimated as the minimum traffic of one fused accelerated dual (FGP-type)
    iteration: read y (1 value per pixel), read the dual field and its previous value (2 * ndim), write the new
    dual field (ndim): (3 * ndim + 1) values per pixel. A solver that moves more data than this achieves more DRAM
    bandwidth than printed, so the GB/s figure is an effective (lower-bound) bandwidth. The pure-torch FGP is
    shown on the same inputs for comparison.
    """
    if not torch.cuda.is_available():
        print("--device cuda: no CUDA device available, skipping")
        return
    import imaging

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from finite_diff import device_bandwidth_gbps

    peak_bw = device_bandwidth_gbps("cuda")
    print(f"TV denoising on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, lam={args.lam}"
          + (f"; device bandwidth ≈ {peak_bw:.0f} GB/s" if peak_bw else ""))
    solvers = {"torch FGP": lambda y, n: fgp(y, args.lam, n)[0]}
    if hasattr(imaging, "tv_denoise"):
        solvers = {"imaging": lambda y, n: imaging.tv_denoise(y, args.lam, isotropic=True, tol=0.0, max_iter=n),
                   **solvers}
    else:
        print("imaging.tv_denoise does not exist yet: only the pure-torch FGP is measured")
    cases = {"2-D 4096x4096": (1, 1, 4096, 4096), "batch 64x3x256x256": (64, 3, 256, 256)}
    n1, n2 = 10, 110
    print(f"{'case':20s} {'solver':10s} {'dtype':8s} {'ms/iter':>8s} {'GB/s':>8s} {'peak MiB':>9s}")
    for case, shape in cases.items():
        for dtype in (torch.float32, torch.float64):
            generator = torch.Generator(device="cuda").manual_seed(args.seed)
            y = torch.rand(shape, dtype=dtype, device="cuda", generator=generator)
            ndim = len(shape) - 2
            moved = y.numel() * y.element_size() * (3 * ndim + 1)
            for name, solve in solvers.items():
                with torch.inference_mode():
                    solve(y, 3)  # warm-up
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    timings = {}
                    for n in (n1, n2):
                        best = float("inf")
                        for _ in range(args.repeat):
                            start = time.perf_counter()
                            solve(y, n)
                            torch.cuda.synchronize()
                            best = min(best, time.perf_counter() - start)
                        timings[n] = best
                per_iter = (timings[n2] - timings[n1]) / (n2 - n1)
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                print(f"{case:20s} {name:10s} {str(dtype)[6:]:8s} {1e3 * per_iter:8.3f} "
                      f"{moved / per_iter / 1e9:8.1f} {peak:9.1f}")
    print("GB/s assumes (3*ndim + 1) values read+written per pixel and iteration (see run_cuda's docstring)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="2d", choices=("2d", "batch", "volume"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gap", type=float, default=1e-4, help="target relative objective gap")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds a single run may take")
    parser.add_argument("--max-iter", type=int, default=100_000, help="iteration cap of the search")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the selected setting (best kept)")
    parser.add_argument("--ref-iters", type=int, help="reference iteration cap (default 20000 imaging, 5000 FGP)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=("float32", "float64"))
    parser.add_argument("--contenders", nargs="+", choices=("imaging", "torch-fgp", "skimage", "deepinv"),
                        help="default: all for --case 2d, imaging torch-fgp skimage otherwise")
    parser.add_argument("--deepinv-tau", type=float, default=0.01, help="deepinv TVDenoiser primal step (its default)")
    parser.add_argument("--verify-mapping", action="store_true", help="check the peers' parameter mapping")
    parser.add_argument("--verify-iters", type=int, default=3000)
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "DTYPE", "Y", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, dtype, y_path, threads = args.worker
        worker(kind, dtype, y_path, int(threads))
    elif args.device == "cuda":
        run_cuda(args)
    elif args.verify_mapping:
        verify_mapping(args)
    else:
        if args.contenders is None:
            args.contenders = ["imaging", "torch-fgp", "skimage"] + (["deepinv"] if args.case == "2d" else [])
        benchmark(args)


if __name__ == "__main__":
    main()
