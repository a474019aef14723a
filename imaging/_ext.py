"""What compiled code is available: the `imaging._C` extension (CPU kernels, and CUDA kernels when built so).

`IMAGING_NO_EXT=1` at import time ignores a built extension, so the pure-torch references run instead.
"""
from __future__ import annotations

import os

import torch

HAS_EXT: bool = False
HAS_CUDA: bool = False
LOAD_ERROR: str | None = None

if os.environ.get("IMAGING_NO_EXT", "0").lower() not in ("", "0", "false", "no"):
    LOAD_ERROR = "disabled by IMAGING_NO_EXT=1"
else:
    try:
        from imaging import _C  # noqa: F401  (loading it registers the imaging:: ops)

        HAS_EXT = True
        HAS_CUDA = torch.ops.imaging.cuda_version() >= 0
    except ImportError as error:  # not built: pure-torch fallback
        LOAD_ERROR = str(error)


def has_kernel(device: torch.device | str) -> bool:
    """True when a compiled kernel exists for tensors on `device`."""
    kind = torch.device(device).type
    return HAS_EXT and (kind == "cpu" or (kind == "cuda" and HAS_CUDA))


def describe() -> str:
    """One line saying which backends imaging's compiled ops run on."""
    if not HAS_EXT:
        return f"imaging._C not loaded ({LOAD_ERROR}); ops run on pure-torch references"
    cuda = f"CUDA {torch.ops.imaging.cuda_version()}" if HAS_CUDA else "no CUDA"
    return f"imaging._C loaded: CPU kernels, {cuda}"
