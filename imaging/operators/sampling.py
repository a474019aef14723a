r"""Sampling operators: inpainting masks and compressed sensing (dense Gaussian, and random signs + subsampled DCT)."""
from __future__ import annotations

import math

import torch

from imaging.operators.base import LinearOperator, _is_int, check_input, check_shape, check_size


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def _check_sample_shape(op, x: torch.Tensor, shape: tuple[int, ...], arg: str) -> torch.Tensor:
    check_input(op, x, arg)
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{type(op).__name__}: argument '{arg}' must have shape (N, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}")
    return x


class Inpainting(LinearOperator):
    """y = m ⊙ x with a fixed real mask m (1 = observed) broadcast against x, e.g. (H, W), (C, H, W), (N, C, H, W).

    The output keeps the image size (missing pixels are zero); A^H = A and A^H A = A.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(mask, torch.Tensor) or mask.is_complex() or mask.dim() == 0:
            raise ValueError(f"Inpainting: argument 'mask' must be a real tensor, got {getattr(mask, 'dtype', mask)}")
        if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
            raise ValueError("Inpainting: argument 'mask' has non-finite values (NaN or inf); expected weights, "
                             "typically 0 (missing) and 1 (observed)")
        self.register_buffer("mask", mask.to(torch.get_default_dtype()) if not mask.is_floating_point() else mask)

    @classmethod
    def random(cls, shape: tuple[int, ...], fraction_observed: float, seed: int | None = 0) -> "Inpainting":
        """Mask of the given shape with each pixel observed independently with probability `fraction_observed`."""
        shape = check_shape((shape,) if _is_int(shape) else shape, "Inpainting.random", "shape")
        if not 0 < fraction_observed <= 1:
            raise ValueError(f"Inpainting.random: fraction_observed must be in (0, 1], got {fraction_observed}")
        return cls((torch.rand(shape, generator=_generator(seed), dtype=torch.float64) < fraction_observed).double())

    def _masked(self, x: torch.Tensor, arg: str) -> torch.Tensor:
        check_input(self, x, arg)
        try:
            return x * self.mask.to(x.real.dtype)
        except RuntimeError as error:
            raise ValueError(f"Inpainting: mask of shape {tuple(self.mask.shape)} does not broadcast against '{arg}' "
                             f"of shape {tuple(x.shape)}") from error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(x, "x")

    def svd(self, like: torch.Tensor):
        """V = I, s = |m|, Uᴴy = sign(m) y."""
        from imaging.operators.svd import identity_basis

        mask = self.mask.to(like.real.dtype).to(like.device)
        return identity_basis(mask.abs(), lambda y: y * torch.sign(mask))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._masked(y, "y")

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(x, "x") * self.mask.to(x.real.dtype)


class CompressedSensing(LinearOperator):
    """Dense Gaussian sensing y = Φ vec(x), Φ ∈ R^{m×n} with i.i.d. N(0, 1/m) entries, n = prod(in_shape).

    (N, *in_shape) -> (N, m). `in_shape` is the per-sample shape, e.g. (C, H, W).
    """

    def __init__(self, m: int, in_shape: tuple[int, ...], seed: int | None = 0, dtype: torch.dtype = torch.float64):
        super().__init__(in_shape=check_shape(in_shape, "CompressedSensing", "in_shape",
                                     what=" (the input shape without the batch dimension)"))
        n = math.prod(self.in_shape)
        m = check_size(m, "CompressedSensing", "m")
        if m * n > 2 ** 62:
            raise ValueError(f"CompressedSensing: argument 'm' gives an m × n matrix of more than 2**62 entries (n = "
                             f"{n}), got {m}")
        self.m, self.seed = m, seed
        self.register_buffer("matrix", torch.randn(m, n, generator=_generator(seed), dtype=dtype) / math.sqrt(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_sample_shape(self, x, self.in_shape, "x")
        phi = self.matrix.to(x.dtype)
        return x.reshape(x.shape[0], -1) @ phi.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_sample_shape(self, y, (self.matrix.shape[0],), "y")
        phi = self.matrix.to(y.dtype)
        return (y @ phi).reshape(y.shape[0], *self.in_shape)


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n): (D x)_k = s_k Σ_j x_j cos(π (2j+1) k / 2n), D Dᵀ = I."""
    j = torch.arange(n, dtype=dtype)
    d = torch.cos(math.pi * (2 * j[None, :] + 1) * j[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def signed_dct2(x: torch.Tensor, signs: torch.Tensor, dct_h: torch.Tensor, dct_w: torch.Tensor) -> torch.Tensor:
    """D (s ⊙ x): random signs, then the orthonormal separable 2-D DCT D_H X D_Wᵀ of each (H, W) plane, O(n (H + W))."""
    return dct_h @ (x * signs) @ dct_w.T


def signed_dct2_adjoint(c: torch.Tensor, signs: torch.Tensor, dct_h: torch.Tensor, dct_w: torch.Tensor
                        ) -> torch.Tensor:
    """The adjoint (and inverse) of `signed_dct2`: s ⊙ (D_Hᵀ C D_W)."""
    return (dct_h.T @ c @ dct_w) * signs


class StructuredCompressedSensing(LinearOperator):
    """Fast structured random sensing y = P D (s ⊙ x) for images (N, C, H, W) -> (N, m).

    s: random ±1 signs; D: the separable orthonormal 2-D DCT per channel (D_H X D_Wᵀ); P: keeps m random coefficients
    out of n = C·H·W. Cost O(n (H + W)) instead of O(n m); rows are orthonormal, so ‖A‖ = 1 and A A^H = I.
    """

    def __init__(self, m: int, in_shape: tuple[int, int, int], seed: int | None = 0) -> None:
        super().__init__()
        c, h, w = in_shape
        n = c * h * w
        if not 1 <= m <= n:
            raise ValueError(f"StructuredCompressedSensing: argument 'm' must be in [1, {n}], got {m}")
        gen = _generator(seed)
        self.in_shape, self.m, self.seed = (c, h, w), m, seed
        self.register_buffer("signs", torch.randint(0, 2, in_shape, generator=gen).double() * 2 - 1)
        self.register_buffer("indices", torch.randperm(n, generator=gen)[:m].sort().values)
        self.register_buffer("dct_h", dct_matrix(h))
        self.register_buffer("dct_w", dct_matrix(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_sample_shape(self, x, self.in_shape, "x")
        dh, dw, s = (t.to(x.real.dtype) for t in (self.dct_h, self.dct_w, self.signs))
        return signed_dct2(x, s, dh, dw).reshape(x.shape[0], -1)[:, self.indices]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_sample_shape(self, y, (self.indices.numel(),), "y")
        dh, dw, s = (t.to(y.real.dtype) for t in (self.dct_h, self.dct_w, self.signs))
        return signed_dct2_adjoint(self._scatter(y), s, dh, dw)

    def _scatter(self, y: torch.Tensor) -> torch.Tensor:
        """The m kept coefficients placed among all n = C·H·W, (N, m) -> (N, C, H, W)."""
        full = y.new_zeros(y.shape[0], math.prod(self.in_shape))
        full[:, self.indices] = y
        return full.reshape(y.shape[0], *self.in_shape)

    def svd(self, like: torch.Tensor):
        """V = (D diag(signs))ᴴ, s = 1 on the kept coefficients, Uᴴy = the kept coefficients in place."""
        from imaging.operators.svd import SVD

        dtype, device = like.real.dtype, like.device
        dh, dw, signs = (t.to(dtype=dtype, device=device) for t in (self.dct_h, self.dct_w, self.signs))
        kept = self._scatter(torch.ones(1, self.m, dtype=dtype, device=device))[0]
        return SVD(kept, lambda x: signed_dct2(x, signs, dh, dw), lambda c: signed_dct2_adjoint(c, signs, dh, dw),
                   self._scatter)
