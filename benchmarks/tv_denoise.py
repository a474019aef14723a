"""Benchmark: isotropic TV (ROF) denoising, imaging vs a pure-torch FGP, scikit-image and deepinv, to a fixed accuracy.

Problem (all contenders are scored on this one objective, in float64):

    x* = argmin_x P(x),   P(x) = 1/2 ||x - y||^2 + lam * TV(x),
    TV(x) = sum over pixels of sqrt(sum over spatial axes a of (D_a x)^2),

with forward differences D_a x[i] = x[i+1] - x[i] and a Neumann boundary (D_a x = 0 on the last slice along a);
no normalisation. Batched inputs (B, C, *spatial) are denoised per image and per channel and P sums over all of them.
Default case: the 512x512 scikit-image `camera` scaled to [0, 1] plus Gaussian noise sigma=0.1 (seed 0), lam=0.1.

Reference. x_ref is the float64 minimiser from `imaging.tv_denoise(..., tol=1e-9)` when that function exists, else
from this file's pure-torch FISTA on the dual (Beck-Teboulle FGP, step 1/(4 * ndim), i.e. 1/8 in 2-D) run until
its relative duality gap is <= 1e-9 or --ref-iters iterations (imaging 20000, FGP 5000; 5000 and 2000 for the batch
and volume cases). P* = P(x_ref); the reference's duality gap is printed.

Fair time-to-accuracy. Every contender exposes a knob: its iteration count with its own stopping test disabled,
and for imaging also its duality-gap tolerance (both are searched, the faster is reported). We look for the cheapest
setting whose output x has relative objective gap (P(x) - P*) / P* <= --gap (default 1e-4): the knob is doubled
(capped so that a run lasts about --budget seconds: 4 s for the 2-D case, 12 s for the larger ones), then bisected
to 2%. Gap vs. iterations need not be monotone; the reported setting is always one verified to reach the target.
That setting is timed, best of --repeat runs (the search's run of it counts as one). A contender that needs more
than --budget seconds (or --max-iter iterations) is reported as "not reached" with the gap and time (best of
--repeat) of the largest setting tried.
Each contender runs in its own worker process with the same thread count; only the solver call is timed (no I/O,
no import, input already in the solver's dtype and layout). Timings are meaningless while other processes load
the CPUs: torch's threads then wait for each other at every parallel region (the script warns).

Peak memory = growth of the worker's resident set during its first solver call (50 iterations, knob's stopping test
off; VmHWM after resetting it via /proc/self/clear_refs, minus the RSS just before the call). Being the first call,
no memory kept by the allocator from earlier calls hides its allocations. It counts the solver's working arrays,
its output and any lazy initialisation, not the input (none of the solvers' workspace grows with iterations).

Peers and how their parameters map to ours (read from their sources; check with --verify-mapping):

* scikit-image `denoise_tv_chambolle(image, weight, eps, max_num_iter)` (skimage/restoration/_denoise.py,
  `_denoise_tv_chambolle_nd`), Chambolle's 2004 projection algorithm. Its docstring states
  min_u sum |grad u| + (lambda_sk / 2) (f - u)^2 with weight = 1 / lambda_sk, i.e. min 1/2 ||u - f||^2 + weight * TV:
  **weight = lam**. The code agrees: out = image + D^T p; g = np.diff(out) is written into a zero array (the last
  slice along each axis stays 0: forward differences, Neumann boundary as ours); norm = sqrt(sum over all ndim axes
  of g^2) (isotropic); p <- (p - tau g) / (1 + (tau / weight) |g|) with tau = 1 / (2 ndim) keeps |p| <= weight,
  whose fixed point is the minimiser of 1/2 ||u - f||^2 + weight * TV(u). `eps` stops when |E_{n-1} - E_n| <
  eps * E_0 (E a per-pixel energy); we set eps=0 and use max_num_iter as the knob. float32 input stays float32;
  channel_axis denoises channel by channel (used for the batch case, B*C moved to the last axis). Measured: with
  weight = lam, 20000 iterations reach ||x - x_ref|| / ||x_ref|| = 2.5e-5 (3000: 2.1e-4, vs 4.6e-2 for
  weight = lam * sqrt(8) and 7.0e-4 for weight = 1.01 lam).
* deepinv `deepinv.models.TVDenoiser(tau=0.01, rho=1.99, n_it_max, crit)`, called as `model(y, ths)`
  (deepinv/models/tv.py): over-relaxed primal-dual (Condat 2013) on min 1/2 ||x - y||^2 + ths * ||D x||_{1,2}.
  `nabla` writes x[1:] - x[:-1] into a zero tensor (forward differences, Neumann boundary, last slice 0: not
  periodic) and the dual prox projects u onto the l2 ball of radius ths over the gradient components (isotropic):
  **ths = lam**. (The class docstring says the TV term is "implicitly normalized by its Lipschitz constant sqrt(8)";
  the code does not do that.) Its objective is therefore ours and its own gap is the gap shown. `crit` stops when
  ||x_k - x_{k-1}|| / ||x_k|| < crit; we set crit=0 and use n_it_max as the knob. Its default primal step tau=0.01
  (dual step 1 / (8 tau) in 2-D) is kept; --deepinv-tau changes it (0.05 to 1 converged slower here). A TVDenoiser
  keeps its primal/dual variables and warm-starts the next call from them, so every call here builds a fresh one.
  Measured: ths = lam, 3000 iterations: ||x - x_ref|| / ||x_ref|| = 4.7e-5 (gap -3e-8, i.e. at the reference's
  certified accuracy), vs 4.6e-2 for ths = lam * sqrt(8), 8.3e-2 for lam / sqrt(8), 6.8e-4 for 1.01 lam.
  deepinv cannot be imported in the project venv, so it runs in .venv-deepinv at the repository root (its own torch
  version; `make bench-peers` creates it).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEEPINV_PYTHON = ROOT / ".venv-deepinv" / "bin" / "python"
MEMORY_ITERATIONS = 50  # length of the first (warm-up) call of each worker, which measures the peak memory
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
        self.stderr = open(y_path.with_name(f"stderr-{kind}-{dtype}.txt"), "w+")  # a file: a pipe could fill up
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        self.process = subprocess.Popen([python, __file__, "--worker", kind, dtype, str(y_path), str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
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
        self.stderr.seek(0)
        error = self.stderr.read().strip().splitlines()
        raise RuntimeError(f"worker died: {error[-1] if error else 'no message'}")

    def run(self, setting: dict, repeat: int = 1) -> tuple[torch.Tensor, dict]:
        """Solve `repeat` times with `setting`; return the last output (float64) and {seconds (best), iterations,
        peak_mb (largest resident-set growth during a call)}."""
        self.process.stdin.write(json.dumps({"setting": setting, "repeat": repeat, "out": str(self.out)}) + "\n")
        self.process.stdin.flush()
        result = self._receive()
        return torch.from_numpy(np.load(self.out)), result

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.stderr.close()


@dataclass
class Result:
    name: str
    dtype: str
    knob: str = ""
    setting: int = 0
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
    setting: Callable[[int], dict]
    start: int
    limit: int
    label: Callable[[int], str] = str
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
    seconds_at: dict[int, float] = {}  # search runs double as timing samples of their setting

    def attempt(n: int):
        x, info = worker.run(knob.setting(n))
        seconds_at[n] = min(seconds_at.get(n, float("inf")), info["seconds"])
        return problem.gap(x), info["seconds"]

    def final(n: int, reached: bool) -> Result:
        x, info = worker.run(knob.setting(n), repeat=max(1, repeat - 1))
        info["seconds"] = min(info["seconds"], seconds_at.get(n, float("inf")))
        return _result(problem, knob, n, x, info, reached=reached and problem.gap(x) <= problem.target,
                       runs=len(seconds_at))

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
        return final(n, reached=False)
    while reaching - failing > max(1, int(precision * reaching)):
        middle = (failing + reaching) // 2
        if attempt(middle)[0] <= problem.target:
            reaching = middle
        else:
            failing = middle
    return final(reaching, reached=True)


def _result(problem: Problem, knob: Knob, n: int, x: torch.Tensor, info: dict, reached: bool, runs: int) -> Result:
    iterations = info["iterations"] if info["iterations"] is not None else n if knob.name == "iterations" else None
    return Result("", "", knob=f"{knob.name}={knob.label(n)}", setting=n, iterations=iterations,
                  seconds=info["seconds"], gap=problem.gap(x), reached=reached,
                  distance=problem.distance(x), runs=runs)


def compute_reference(y: torch.Tensor, lam: float, ref_iters: int | None) -> tuple[torch.Tensor, float, str]:
    """x_ref in float64: imaging.tv_denoise(tol=1e-9) when available, else the FGP above (rel. duality gap 1e-9)."""
    start = time.perf_counter()
    try:
        import imaging

        tv_denoise = getattr(imaging, "tv_denoise", None)
    except ImportError:
        tv_denoise = None
    if tv_denoise is not None:
        cap = ref_iters or (20_000 if y.numel() <= 512 * 512 else 5000)
        x, info = tv_denoise(y, lam, isotropic=True, tol=1e-9, max_iter=cap, return_info=True)
        how = "imaging.tv_denoise(tol=1e-9)"
    else:
        with torch.inference_mode():
            x, info = fgp(y, lam, ref_iters or (5000 if y.numel() <= 512 * 512 else 2000), tol=1e-9, check_every=100)
        how = "pure-torch FGP (imaging.tv_denoise not available)"
    gap = info.get("gap", float("nan"))
    return x.double(), gap, (f"{how}: {info.get('iterations')} iterations, relative duality gap {gap:.1e}, "
                             f"{time.perf_counter() - start:.1f} s")


def contenders(args) -> list[tuple[str, str, list[Knob]]]:
    lam, cap = args.lam, args.max_iter
    table = {
        "imaging": [iteration_knob(lam, cap), tolerance_knob(lam, cap)],
        "torch-fgp": [iteration_knob(lam, cap)],
        "skimage": [iteration_knob(lam, cap)],
        "deepinv": [iteration_knob(lam, cap, tau=args.deepinv_tau)],
    }
    return [(kind, dtype, table[kind]) for kind in args.contenders for dtype in args.dtypes]


def busy_cpus(seconds: float = 1.0) -> float | None:
    """CPUs kept busy by other processes over `seconds` (from /proc/stat), None where unavailable."""
    def sample():
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)  # busy (all but idle, iowait), total

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except OSError:
        return None
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def benchmark(args) -> None:
    torch.set_num_threads(args.threads)
    busy = busy_cpus()
    if busy is not None and busy > 0.25:
        print(f"WARNING: other processes keep {busy:.1f} of {os.cpu_count()} CPUs busy; multi-threaded timings will "
              "be unreliable (threads wait for each other at every parallel region)")
    y, text = make_problem(args.case, args.sigma, args.seed)
    print(f"TV denoising benchmark: {text}, noise sigma={args.sigma} (seed {args.seed}), lam={args.lam}, "
          f"target relative objective gap {args.gap:.0e}")
    print(f"torch {torch.__version__}, {args.threads} threads for every contender, budget {args.budget:g} s per run")
    x_ref, ref_gap, how = compute_reference(y, args.lam, args.ref_iters)
    problem = Problem(y, args.lam, x_ref, args.gap)
    print(f"reference: {how}; P* = {problem.p_star:.10g}")
    if not ref_gap <= args.gap / 100:
        print(f"WARNING: the reference is certified only to {ref_gap:.1e}; raise --ref-iters")

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
                # first call: warm-up (first touch of memory, lazy initialisation) and peak-memory measurement
                peak_mb = worker.run(knobs[0].setting(MEMORY_ITERATIONS))[1]["peak_mb"]
                tries = [time_to_target(worker, knob, problem, args.budget, args.repeat) for knob in knobs]
            finally:
                worker.close()
            best = min(tries, key=lambda r: (not r.reached, r.seconds if r.reached else r.gap))
            best.name, best.dtype = name, dtype
            best.peak_mb = peak_mb
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
          f"dist = ||x - x_ref|| / ||x_ref||; peak MiB = resident-set growth during the worker's first call "
          f"({MEMORY_ITERATIONS} iterations; see the docstring)")
    peers = [text for name, text in (("skimage", "skimage weight = lam"), ("deepinv", "deepinv ths = lam"))
             if any(r.name == name for r in results)]
    if peers:
        print(f"conventions: {', '.join(peers)}; forward differences, Neumann boundary and isotropic TV as in P, so "
              "the peers' own objective gap is the gap shown")
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
            relation = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
            print(f"{base.name} {base.dtype} is {relation} than {r.name} {r.dtype}")
        else:
            print(f"{base.name} {base.dtype} is > {ratio:.2f}x faster than {r.name} {r.dtype} (which reached only "
                  f"gap {r.gap:.1e} in {r.seconds:.2f} s)")


def verify_mapping(args) -> None:
    """Long runs of the peers with the mapped parameter and with wrong candidates: distance to x_ref."""
    torch.set_num_threads(args.threads)
    y, text = make_problem(args.case, args.sigma, args.seed)
    x_ref, _, how = compute_reference(y, args.lam, args.ref_iters)
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
            if args.contenders and kind not in args.contenders:
                continue
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
    """imaging on CUDA: time per iteration and effective bandwidth on a 4096^2 image and a 64x3x256x256 batch.

    Time per iteration = (t(n2) - t(n1)) / (n2 - n1) at tol=0 (fixed iteration counts; best of --repeat each), which
    removes the fixed setup cost. Bytes per iteration follow imaging's algorithm (accelerated Chambolle-Pock, see
    csrc/cpu/tv.cpp): a dual sweep reads xbar and p (1 + ndim values per pixel) and writes p (ndim), a primal
    sweep reads x, y and p (2 + ndim) and writes x and xbar (2): (3 * ndim + 5) values per pixel, each read or
    written once (neighbours assumed served from cache). GB/s = that byte count / time per iteration. The pure-torch
    FGP runs on the same inputs for comparison (time only; its unfused ops move far more data).
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
    print(f"{'case':20s} {'solver':10s} {'dtype':8s} {'ms/iter':>8s} {'GB/s':>8s} {'peak MiB':>9s}")
    for row in per_iteration_rows(solvers, cases, "cuda", args.repeat, args.seed):
        gbps = f"{row['gbps']:8.1f}" if row["solver"] == "imaging" else f"{'-':>8s}"
        share = f" ({100 * row['gbps'] / peak_bw:.0f}% of peak)" if peak_bw and row["solver"] == "imaging" else ""
        print(f"{row['case']:20s} {row['solver']:10s} {row['dtype']:8s} {row['ms']:8.3f} {gbps} "
              f"{row['peak_mb']:9.1f}{share}")
    print("GB/s counts (3*ndim + 5) values read or written per pixel and iteration (see run_cuda's docstring)")


def per_iteration_rows(solvers: dict, cases: dict, device: str, repeat: int, seed: int, n1: int = 10,
                       n2: int = 110) -> list[dict]:
    """Time per iteration (difference of two fixed iteration counts), model bandwidth and peak memory."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for case, shape in cases.items():
        for dtype in (torch.float32, torch.float64):
            generator = torch.Generator(device=device).manual_seed(seed)
            y = torch.rand(shape, dtype=dtype, device=device, generator=generator)
            moved = y.numel() * y.element_size() * (3 * (len(shape) - 2) + 5)
            for name, solve in solvers.items():
                with torch.inference_mode():
                    solve(y, 3)  # warm-up
                    sync()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated() if cuda else 0
                    timings = {}
                    for n in (n1, n2):
                        best = float("inf")
                        for _ in range(repeat):
                            start = time.perf_counter()
                            solve(y, n)
                            sync()
                            best = min(best, time.perf_counter() - start)
                        timings[n] = best
                per_iter = max(timings[n2] - timings[n1], 1e-12) / (n2 - n1)
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
                rows.append({"case": case, "solver": name, "dtype": str(dtype).removeprefix("torch."),
                             "ms": 1e3 * per_iter, "gbps": moved / per_iter / 1e9, "peak_mb": peak})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="2d", choices=("2d", "batch", "volume"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--gap", type=float, default=1e-4, help="target relative objective gap")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, help="seconds a single run may take (default 4; 12 if not 2d)")
    parser.add_argument("--max-iter", type=int, default=100_000, help="iteration cap of the search")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the selected setting (best kept)")
    parser.add_argument("--ref-iters", type=int,
                        help="reference iteration cap (default imaging 20000 / FGP 5000; 5000 / 2000 if larger)")
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
        if args.budget is None:
            args.budget = 4.0 if args.case == "2d" else 12.0
        if args.contenders is None:
            args.contenders = ["imaging", "torch-fgp", "skimage"] + (["deepinv"] if args.case == "2d" else [])
        benchmark(args)


if __name__ == "__main__":
    main()
