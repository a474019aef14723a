"""Singular value decompositions of linear operators, for solvers that work in A's spectral coordinates (DDRM).

A = U diag(s) Vᴴ with V orthonormal on the image space: the coefficients c = Vᴴx have the image's size (complex for
Fourier bases), s holds one singular value per coefficient (zero on A's null space) and Uᴴy is given in the same
coordinates (zero where s is). Operators that have one in closed form implement `svd(like)`; see `SVD.check` for
what it must satisfy.
"""
from __future__ import annotations

from typing import Callable

import torch


class SVD:
    """A = U diag(s) Vᴴ in coordinates shaped like the image.

    Args:
        s: singular values, >= 0, broadcastable to the coefficients (zero on the null space).
        v_adjoint: image (N, C, H, W) -> coefficients c = Vᴴx.
        v: coefficients -> image (the real part for a real image).
        u_adjoint: measurements y -> Uᴴy as coefficients (zero where s is).
    """

    def __init__(self, s: torch.Tensor, v_adjoint: Callable[[torch.Tensor], torch.Tensor],
                 v: Callable[[torch.Tensor], torch.Tensor], u_adjoint: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not isinstance(s, torch.Tensor) or s.is_complex() or not bool((s >= 0).all()):
            raise ValueError("SVD: argument 's' must be a real tensor of non-negative singular values")
        self.s, self.v_adjoint, self.v, self.u_adjoint = s, v_adjoint, v, u_adjoint

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Uᴴ A x = diag(s) Vᴴ x, in coefficients."""
        return self.s * self.v_adjoint(x)

    def check(self, A, x: torch.Tensor) -> float:
        """The largest relative error of V Vᴴ x = x and Uᴴ A x = diag(s) Vᴴ x at x: ~1e-15 in float64 when this is
        an SVD of A (a test for user-written decompositions)."""
        c = self.v_adjoint(x)
        back = self.v(c)
        norm = float(torch.linalg.vector_norm(x)) or 1.0
        spectral = self.u_adjoint(A(x))
        scale = float(torch.linalg.vector_norm(spectral)) or 1.0
        return max(float(torch.linalg.vector_norm(back - x)) / norm,
                   float(torch.linalg.vector_norm(spectral - self.s * c)) / scale)


def identity_basis(s: torch.Tensor, u_adjoint: Callable[[torch.Tensor], torch.Tensor]) -> SVD:
    """V = I: the coefficients are the pixels."""
    return SVD(s, lambda x: x, lambda c: c, u_adjoint)


def fourier_basis(s: torch.Tensor, phase: torch.Tensor | None = None) -> SVD:
    """V = the unitary 2-D DFT; U = V·diag(phase) (|phase| = 1) for a circular convolution with transfer
    function s·phase. The coefficients of a real image are Hermitian-symmetric and so stay its updates whose
    weights depend on s only (s(−k) = s(k) for a real kernel)."""
    phase_conj = None if phase is None else phase.conj()

    def u_adjoint(y: torch.Tensor) -> torch.Tensor:
        c = torch.fft.fft2(y, norm="ortho")
        return c if phase_conj is None else c * phase_conj

    return SVD(s, lambda x: torch.fft.fft2(x, norm="ortho"), lambda c: torch.fft.ifft2(c, norm="ortho").real,
               u_adjoint)
