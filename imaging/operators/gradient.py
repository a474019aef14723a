r"""The finite-difference gradient as a LinearOperator, over the compiled `imaging::finite_diff` op.

D: (N, C, *S) -> (N, C, len(S), *S), forward differences with Neumann boundary; D^H = -div (exact adjoint).
‖D‖² ≤ 4·len(S). Real and complex images (complex falls back to the pure-torch reference).
"""
from __future__ import annotations

import torch

from imaging.operators.base import LinearOperator
from imaging.ops import finite_diff, finite_diff_adjoint


class FiniteDifference(LinearOperator):
    """Forward-difference gradient of 2-D images (N, C, H, W) or 3-D volumes (N, C, D, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return finite_diff(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return finite_diff_adjoint(y)
