"""Benchmark: one PGD iteration of blind gain calibration, compiled gain-sensing ops vs a plain-torch reference.

Problem: the sensor-array scenario of `imaging.calibration.simulate` (Shepp–Logan phantom, vignetting × PRNU gains,
noiseless), size×size pixels and sensors (default 64×64: n = m = 4096), p = 10 dense Gaussian matrices A_l stored
in float32 (p·m·n = 167.8 M entries, 671 MB). Both contenders run in this process on the same A and y.

- compiled: `imaging.calibration.pgd`, i.e. per iteration ONE `gain_normal_pass` over A (v = A∇_ξ f and the next
  image gradient together, the line search by linearity) plus O(pm) torch work (gain step, projection, loss).
  Time per iteration = (t(K2) − t(K1)) / (K2 − K1) for pgd(..., max_iter=K, tol=0), best of --repeats each, which
  removes the set-up (back projection, first gradient: 3 passes).
- torch reference: the textbook Algorithm 1 of the spec (§1), here `reference_pgd`: an adjoint matmul for the
  gradient and a forward matmul for v = A∇_ξ f each iteration (TWO passes over A), u updated by linearity, the
  same exact line searches and the same projection `project_gains`. Timed the same way.

GB/s = bytes of A read per iteration (compiled 1×, reference 2×; the O(pm) vectors are ~0.1% of it) / time. On CUDA
the share of the device's DRAM bandwidth is printed next to it (the peak is computed from the memory clock and bus
width when torch exposes them, else taken from a table by name; it is printed with the device name). Peak memory:
extra memory during the first call of each contender (CUDA: torch.cuda.max_memory_allocated; CPU: growth of the
resident set's high-water mark, VmHWM after resetting it via /proc/self/clear_refs), A itself excluded. Accuracy:
the relative errors of x and of the gains after K2 iterations for both, and their distance to each other (they
compute the same iterates up to rounding).

A second table times the single ops (gain_forward, gain_adjoint, gain_normal_pass) against their torch references
(`imaging.ops.gain_sensing._gain_*_torch`), and `project_gains` (no reference: the same function in both PGDs).
Targets of the issue: compiled ≥ 2× the reference per PGD iteration on CPU; ≥ 60% of the DRAM bandwidth on a GPU.
Timings are meaningless while other processes load the CPUs (torch's threads wait for each other).
Run: `python benchmarks/calibration.py [--size 64] [--snapshots 10] [--dtype float32] [--device cuda]`.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import imaging._ext as ext
from _timing import PeakMemory, best_time, device_bandwidth
from imaging.calibration import pgd, project_gains, relative_error
from imaging.calibration.common import fix_gauge
from imaging.calibration.simulate import sensor_array_problem
from imaging.ops import gain_sensing as ops


# ----------------------------------------------------------------------------------------------------------------
# The plain-torch reference: Algorithm 1 (spec §1) with two matmuls over A per iteration
# ----------------------------------------------------------------------------------------------------------------

def reference_pgd(A: torch.Tensor, y: torch.Tensor, iterations: int, rho: float | None = 0.99
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook projected gradient descent with exact line searches for y_l = diag(d) A_l x: A (p, m, n) shared,
    y (B, p, m). Per iteration one adjoint (the image gradient) and one forward (v = A g_ξ) matmul; u = A ξ is
    updated by linearity. Returns (x, gains) with mean gain 1."""
    p, m, n = A.shape
    B, mp = y.shape[0], m * p
    A2 = A.reshape(p * m, n)                                       # A_stack: (pm, n), a view
    forward = lambda s: (s @ A2.T).reshape(B, p, m)                # noqa: E731   Σ-free: [A_l s]_l
    adjoint = lambda c: c.reshape(B, p * m) @ A2                   # noqa: E731   Σ_l A_lᵀ c_l
    with torch.no_grad():
        xi = adjoint(y) / mp
        gam = torch.ones(B, m, dtype=y.dtype, device=y.device)
        u = forward(xi)
        for _ in range(iterations):
            r = gam[:, None, :] * u - y
            g_x = adjoint(gam[:, None, :] * r) / mp                # pass 1 over A
            g_g = (u * r).sum(1) / mp
            h = g_g - g_g.mean(1, keepdim=True)
            v = forward(g_x)                                       # pass 2 over A
            mu_x = mp * (g_x ** 2).sum(1) / ((gam[:, None, :] * v) ** 2).sum((1, 2))
            mu_g = mp * (h ** 2).sum(1) / ((h[:, None, :] * u) ** 2).sum((1, 2))
            xi = xi - mu_x[:, None] * g_x
            u = u - mu_x[:, None, None] * v
            gam = project_gains(gam - mu_g[:, None] * h, rho)
    return fix_gauge(xi, gam)


# ----------------------------------------------------------------------------------------------------------------
# Timing and memory helpers
# ----------------------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size (n = m = size^2)")
    parser.add_argument("--snapshots", type=int, default=10, help="p")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best kept)")
    parser.add_argument("--iterations", type=int, nargs=2, metavar=("K1", "K2"),
                        help="PGD lengths whose time difference gives the time per iteration (default 5 25 on CPU, "
                             "20 120 on CUDA, where both lengths include the CUDA-graph capture of pgd())")
    parser.add_argument("--rho", default="0.99", help="gain box half-width of both PGDs, or 'none'")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, getattr(torch, args.dtype)
    rho = None if args.rho.lower() == "none" else float(args.rho)
    cuda = device.startswith("cuda")
    k1, k2 = args.iterations or ((20, 120) if cuda else (5, 25))
    if not 0 <= k1 < k2:
        raise SystemExit("--iterations: need 0 <= K1 < K2")
    sync = (lambda: torch.cuda.synchronize()) if cuda else (lambda: None)  # noqa: E731

    start = time.perf_counter()
    problem = sensor_array_problem(args.size, args.snapshots, "dense", None, 0, dtype, device)
    sensing, y = problem.sensing, problem.y
    A = sensing.A
    p, m, n = A.shape
    a_bytes = A.numel() * A.element_size()
    peak_bw, peak_note = device_bandwidth(device)
    compiled = ops._compiled(A)
    print(f"PGD for blind gain calibration: {args.size}x{args.size} (n = m = {n}), p = {p}, {args.dtype} dense A "
          f"({a_bytes / 1e6:.0f} MB), rho = {rho}, device {device}; set-up {time.perf_counter() - start:.1f} s")
    threads = f"{torch.get_num_threads()} threads" if not cuda else torch.cuda.get_device_name(torch.device(device))
    print(f"{ext.describe()}; torch {torch.__version__}, {threads}")
    if peak_bw:
        print(f"device bandwidth ≈ {peak_bw:.0f} GB/s ({peak_note})")
    elif peak_note:
        print(peak_note)
    if not compiled:
        print("WARNING: no compiled gain kernel for this device/dtype: the 'compiled' rows run the torch references")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if not cuda and load > 1.0:
        print(f"note: load average {load:.2f} while benchmarking: other processes may distort CPU timings")

    contenders = {
        # refresh_every > K: no exact refresh inside the timed runs (it costs two extra passes every 50 iterations)
        # passes over A per iteration: the CPU normal pass reads A once, the CUDA one twice (row then column kernel)
        "compiled pgd()": (lambda K: pgd(sensing, y, max_iter=K, tol=0.0, rho=rho, refresh_every=10**9),
                           2 if cuda else 1),
        "torch reference": (lambda K: reference_pgd(A, y, K, rho), 2),
    }
    if cuda:  # the same solver without its CUDA graph: every op launched from Python
        contenders["pgd(), no CUDA graph"] = (lambda K: pgd(sensing, y, max_iter=K, tol=0.0, rho=rho,
                                                             refresh_every=10**9, cuda_graph=False), 2)
    rows = {}
    for name, (solve, reads) in contenders.items():
        with PeakMemory(device) as memory:
            out = solve(k2)  # first call: peak memory (and warm-up); its estimates give the accuracy
        x, gains = (out.x, out.gains) if hasattr(out, "x") else out
        times = {k: best_time(lambda k=k: solve(k), args.repeats, sync) for k in (k1, k2)}
        per_iter = max(times[k2] - times[k1], 1e-12) / (k2 - k1)
        rows[name] = {"ms": 1e3 * per_iter, "reads": reads, "gbps": reads * a_bytes / per_iter / 1e9,
                      "peak_mb": memory.bytes / 2**20, "x": x, "gains": gains,
                      "error_x": relative_error(x, problem.x).item(),
                      "error_d": relative_error(gains, problem.gains).item()}
    reference = rows["torch reference"]
    print(f"\nper PGD iteration (time difference of {k2} and {k1} iterations, best of {args.repeats}); errors after "
          f"{k2} iterations")
    print(f"{'method':22s} {'ms/iter':>9s} {'A reads':>7s} {'GB/s':>8s} {'% peak':>7s} {'peak MB':>8s} "
          f"{'rel-err x':>10s} {'rel-err d':>10s} {'speed-up':>9s}")
    for name, row in rows.items():
        share = f"{100 * row['gbps'] / peak_bw:6.0f}%" if peak_bw else f"{'-':>7s}"
        print(f"{name:22s} {row['ms']:9.2f} {row['reads']:7d} {row['gbps']:8.1f} {share} {row['peak_mb']:8.1f} "
              f"{row['error_x']:10.2e} {row['error_d']:10.2e} {reference['ms'] / row['ms']:8.2f}x")
    ours = rows["compiled pgd()"]
    print(f"compiled vs reference after {k2} iterations: ‖Δx‖/‖x‖ = "
          f"{relative_error(ours['x'], reference['x']).item():.1e}, ‖Δd‖/‖d‖ = "
          f"{relative_error(ours['gains'], reference['gains']).item():.1e}")
    ratio = reference["ms"] / ours["ms"]
    if cuda and peak_bw:
        share = ours["gbps"] / peak_bw
        print(f"target (GPU): compiled >= 60% of the DRAM bandwidth: {100 * share:.0f}% -> "
              f"{'met' if share >= 0.6 else 'NOT met'}")
    elif not cuda:
        print(f"target (CPU): compiled >= 2x the torch reference per iteration: {ratio:.2f}x -> "
              f"{'met' if ratio >= 2 else 'NOT met'}")

    # -- the single ops ------------------------------------------------------------------------------------------
    generator = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).to(device)  # noqa
    s, g, w, r, u, c = rand(1, n), problem.gains, rand(1, m).abs(), rand(1, p, m), rand(1, p, m), rand(1, p, m)
    op_cases = {
        "gain_forward": (lambda: ops.gain_forward(A, s, g), lambda: ops._gain_forward_torch(A, s, g), 1, 1),
        "gain_adjoint": (lambda: ops.gain_adjoint(A, r, g, u), lambda: ops._gain_adjoint_torch(A, r, g, u), 1, 1),
        "gain_normal_pass": (lambda: ops.gain_normal_pass(A, s, w, c),
                             lambda: ops._gain_normal_pass_torch(A, s, w, c), 2 if cuda else 1, 3),
    }
    print(f"\nsingle ops (best of {args.repeats}; 'reads' = passes over A; max |diff| relative to max |reference|)")
    print(f"{'op':18s} {'compiled ms':>11s} {'GB/s':>7s} {'reads':>5s} {'torch ms':>9s} {'GB/s':>7s} {'reads':>5s} "
          f"{'speed-up':>9s} {'rel diff':>9s}")
    for name, (fast, slow, fast_reads, slow_reads) in op_cases.items():
        fast(), slow()  # warm-up
        t_fast, t_slow = best_time(fast, args.repeats, sync), best_time(slow, args.repeats, sync)
        diff = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
                   for a, b in zip(_tuple(fast()), _tuple(slow())) if b.numel())
        print(f"{name:18s} {1e3 * t_fast:11.2f} {fast_reads * a_bytes / t_fast / 1e9:7.1f} {fast_reads:5d} "
              f"{1e3 * t_slow:9.2f} {slow_reads * a_bytes / t_slow / 1e9:7.1f} {slow_reads:5d} "
              f"{t_slow / t_fast:8.2f}x {diff:9.1e}")
    v = 1 + 0.3 * rand(1, m)
    t_proj = best_time(lambda: project_gains(v, rho), max(args.repeats, 5), sync)
    print(f"{'project_gains':18s} {1e3 * t_proj:11.2f}   (rho = {rho}, (1, {m}); part of both PGDs' iteration)")


def _tuple(t):
    return t if isinstance(t, tuple) else (t,)


if __name__ == "__main__":
    main()
