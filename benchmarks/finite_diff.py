"""Benchmark: compiled finite differences (gradient + adjoint) vs the pure-torch reference, side by side.

Prints, per case, the time of one gradient + one adjoint pass, the effective bandwidth (bytes read + written),
the peak extra memory, the ratio compiled / reference and the max difference reached. Each method runs in its own
worker process so the peak memory (RSS on CPU, torch's allocator on CUDA) belongs to that method alone.
Run: `python benchmarks/finite_diff.py [--device cuda] [--repeat 20]`.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

CASES = {
    "2-D 2048x2048": (1, 1, 2048, 2048),
    "batch 16x3x256x256": (16, 3, 256, 256),
    "3-D 128^3": (1, 1, 128, 128, 128),
}
METHODS = ("compiled", "torch")


def _functions(method: str):
    from imaging.ops.finite_diff import _finite_diff_adjoint_torch, _finite_diff_torch

    if method == "compiled":
        return torch.ops.imaging.finite_diff, torch.ops.imaging.finite_diff_adjoint
    return _finite_diff_torch, _finite_diff_adjoint_torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def worker(method: str, case: str, dtype_name: str, device: str, repeat: int) -> dict:
    import imaging  # noqa: F401

    dtype = getattr(torch, dtype_name)
    shape = CASES[case]
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(device)
    forward, adjoint = _functions(method)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    adjoint(forward(x))  # warm-up
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = adjoint(forward(x))
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
    reference = _functions("torch")
    error = (out - reference[1](reference[0](x))).abs().max().item()
    ndim = len(shape) - 2
    moved = x.numel() * x.element_size() * 2 * (1 + ndim)  # grad: read x, write ndim fields; adjoint: the reverse
    best = min(times)
    return {"seconds": best, "gbps": moved / best / 1e9, "peak_mb": max(peak, 0) / 2**20, "error": error}


def device_bandwidth_gbps(device: str) -> float | None:
    """Theoretical DRAM bandwidth of the current CUDA device, when torch exposes what is needed."""
    if device != "cuda":
        return None
    props = torch.cuda.get_device_properties(0)
    clock = getattr(props, "memory_clock_rate", None)
    width = getattr(props, "memory_bus_width", None)
    if clock and width:
        return 2 * clock * 1e3 * width / 8 / 1e9
    return {"H100": 3350.0, "H200": 4800.0}.get(next((k for k in ("H100", "H200") if k in props.name), ""), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.dtype, args.device, args.repeat)))
        return

    import imaging._ext as ext

    print(f"finite differences (gradient + adjoint), {args.dtype}, device {args.device}; {ext.describe()}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bandwidth = device_bandwidth_gbps(args.device)
    if bandwidth:
        print(f"device bandwidth ≈ {bandwidth:.0f} GB/s ({torch.cuda.get_device_name(0)})")
    print(f"{'case':22s} {'method':9s} {'time ms':>9s} {'GB/s':>8s} {'peak MB':>8s} {'max err':>9s} {'speed-up':>9s}")
    for case in CASES:
        results = {}
        for method in METHODS:
            done = subprocess.run([sys.executable, __file__, "--worker", method, case, "--device", args.device,
                                   "--repeat", str(args.repeat), "--dtype", args.dtype],
                                  capture_output=True, text=True, check=True)
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        for method, r in results.items():
            ratio = results["torch"]["seconds"] / r["seconds"]
            extra = f" ({100 * r['gbps'] / bandwidth:.0f}% of peak)" if bandwidth else ""
            print(f"{case:22s} {method:9s} {1e3 * r['seconds']:9.2f} {r['gbps']:8.1f} {r['peak_mb']:8.1f} "
                  f"{r['error']:9.1e} {ratio:8.2f}x{extra}")


if __name__ == "__main__":
    main()
