"""Timing helpers shared by the benchmarks: best-of timing with device synchronisation, peak memory, the
device's DRAM bandwidth. The benchmarks run as scripts (`python benchmarks/<name>.py`), so this directory is on
sys.path."""
from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch


def _rss_bytes(field: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Extra memory at the peak of a block: CUDA allocator peak, or the growth of the CPU resident set's high-water
    mark (reset through /proc/self/clear_refs; without it, ru_maxrss growth, a lower bound)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as refs:
                    refs.write("5")                                # resets VmHWM to the current RSS
                self.base, self.field = _rss_bytes("VmRSS"), "VmHWM"
            except OSError:
                self.base, self.field = None, None
            if self.base is None:
                self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            peak = _rss_bytes(self.field) if self.field else None
            peak = peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.bytes = max(peak - self.base, 0)


def best_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def device_bandwidth(device: str) -> tuple[float | None, str]:
    """(peak DRAM bandwidth in GB/s, how it was obtained) for a CUDA device; (None, '') on CPU."""
    if not device.startswith("cuda"):
        return None, ""
    props = torch.cuda.get_device_properties(torch.device(device))
    clock, width = getattr(props, "memory_clock_rate", None), getattr(props, "memory_bus_width", None)
    if clock and width:  # kHz, bits; double data rate
        return 2 * clock * 1e3 * width / 8 / 1e9, f"{props.name}: 2 x {clock / 1e3:.0f} MHz x {width} bit"
    table = [("H100 PCIe", 2000.0), ("H100", 3350.0), ("H200", 4800.0), ("A100", 1555.0)]
    for key, gbps in table:
        if all(part in props.name for part in key.split()):
            return gbps, f"{props.name}: assumed from the table in benchmarks/calibration.py"
    return None, f"{props.name}: unknown peak bandwidth"
