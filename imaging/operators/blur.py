r"""Convolution operators: blur with a given kernel, kernel builders, and super-resolution downsampling.

Blur: y = h * x (true convolution, kernel centre at index (k//2, k//2)), per channel, for images (N, C, H, W).
Boundary handling (`mode`):
- ``"circular"``: periodic convolution, y = F^{-1}(F h · F x);
- ``"zeros"`` / ``"reflect"`` / ``"replicate"``: the image is padded so that y has the size of x ('same'),
  and the adjoint folds the padded border back (exact adjoint of the padding).
All modes run by FFT (the padded modes as the valid part of a circular convolution of the padded image), so the
cost does not grow with the kernel size.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from imaging.operators.base import MAX_SIDE, LinearOperator, _is_int, check_input, check_size

PADDING_MODES = ("circular", "zeros", "reflect", "replicate")


# --- kernel builders ---------------------------------------------------------------------------------------------
def gaussian_kernel(sigma: float | tuple[float, float], size: int | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel of standard deviation `sigma` (pixels); size defaults to 2·ceil(3σ)+1."""
    sy, sx = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (sy, sx)):
        raise ValueError(f"gaussian_kernel: argument 'sigma' must be a positive finite number (pixels) or a pair of "
                         f"them, got {sigma!r}")
    if size is None:
        if 3 * max(sy, sx) > MAX_SIDE:
            raise ValueError(f"gaussian_kernel: argument 'sigma' is too large for a kernel (its default size "
                             f"2·ceil(3σ)+1 is above 2**31), got {sigma!r}")
        size = 2 * math.ceil(3 * max(sy, sx)) + 1
    size = check_size(size, "gaussian_kernel", "size")
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-r[:, None] ** 2 / (2 * sy ** 2) - r[None, :] ** 2 / (2 * sx ** 2))
    return k / k.sum()


def box_kernel(size: int | tuple[int, int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised box (uniform) kernel of the given size."""
    try:
        h, w = (size, size) if isinstance(size, numbers.Integral) else size
    except (TypeError, ValueError):
        h = w = None
    if not all(_is_int(n) and 1 <= n <= MAX_SIDE for n in (h, w)):
        raise ValueError(f"box_kernel: size must be a positive integer up to 2**31 or a pair (h, w) of them, got "
                         f"{size!r}")
    return torch.full((h, w), 1.0 / (h * w), dtype=dtype)


def motion_kernel(length: float, angle: float = 0.0, size: int | None = None,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised linear motion-blur kernel: a line of `length` pixels at `angle` degrees, anti-aliased."""
    if not (isinstance(length, numbers.Real) and math.isfinite(length) and 0 < length <= MAX_SIDE):
        raise ValueError(f"motion_kernel: argument 'length' must be a positive finite number up to 2**31 (pixels), "
                         f"got {length!r}")
    if not (isinstance(angle, numbers.Real) and math.isfinite(angle)):
        raise ValueError(f"motion_kernel: argument 'angle' must be a finite number (degrees), got {angle!r}")
    size = check_size(size if size is not None else 2 * math.ceil(length / 2) + 1, "motion_kernel", "size")
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    theta = math.radians(angle)
    along = xx * math.cos(theta) - yy * math.sin(theta)
    across = xx * math.sin(theta) + yy * math.cos(theta)
    k = torch.clamp(1 - across.abs(), min=0) * torch.clamp(length / 2 + 0.5 - along.abs(), 0, 1)
    return k / k.sum()


# --- padding and its exact adjoint ------------------------------------------------------------------------------
def _pad_widths(kernel_size: tuple[int, int]) -> list[int]:
    """F.pad widths (left, right, top, bottom) so that a kernel centred at k//2 gives a 'same' output."""
    kh, kw = kernel_size
    return [(kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2]


def pad(x: torch.Tensor, widths: list[int], mode: str) -> torch.Tensor:
    """Pad the last two dims by (left, right, top, bottom) with `mode` in PADDING_MODES."""
    return F.pad(x, widths) if mode == "zeros" else F.pad(x, widths, mode=mode)


def pad_adjoint(y: torch.Tensor, widths: list[int], mode: str) -> torch.Tensor:
    """Exact adjoint of `pad`: crop the centre and fold the padded border back onto the pixels it copied."""
    for axis, (before, after) in ((-1, widths[0:2]), (-2, widths[2:4])):
        y = _pad_adjoint_1d(y, axis, before, after, mode)
    return y


def _pad_adjoint_1d(y: torch.Tensor, axis: int, before: int, after: int, mode: str) -> torch.Tensor:
    n = y.shape[axis] - before - after
    out = y.narrow(axis, before, n).clone()
    if mode == "zeros":
        return out
    head, tail = y.narrow(axis, 0, before), y.narrow(axis, before + n, after)
    if mode == "circular":
        out.narrow(axis, n - before, before).add_(head)
        out.narrow(axis, 0, after).add_(tail)
    elif mode == "reflect":
        out.narrow(axis, 1, before).add_(head.flip(axis))
        out.narrow(axis, n - 1 - after, after).add_(tail.flip(axis))
    elif mode == "replicate":
        out.narrow(axis, 0, 1).add_(head.sum(axis, keepdim=True))
        out.narrow(axis, n - 1, 1).add_(tail.sum(axis, keepdim=True))
    return out


def _check_mode(mode: str, owner: str) -> str:
    if mode not in PADDING_MODES:
        raise ValueError(f"{owner}: argument 'mode' must be one of {PADDING_MODES}, got {mode!r}")
    return mode


def _check_fits(who: str, kernel_size: tuple[int, int], x: torch.Tensor, mode: str) -> None:
    """The kernel must fit the image: within it for mode='circular', within twice it for 'reflect' (padding by half
    the kernel reflects the image, so it needs more pixels than the padding); 'zeros' and 'replicate' pad anything."""
    (kh, kw), (h, w) = kernel_size, x.shape[-2:]
    if mode == "circular" and (kh > h or kw > w):
        raise ValueError(f"{who}: kernel {kh}x{kw} is larger than the image {h}x{w}")
    if mode == "reflect" and (kh // 2 >= h or kw // 2 >= w):
        raise ValueError(f"{who}: kernel {kh}x{kw} is larger than the image {h}x{w} allows with mode='reflect' (it "
                         f"pads by half the kernel, so it needs an image of at least {kh // 2 + 1}x{kw // 2 + 1}); use "
                         f"a larger image, a smaller kernel or mode='zeros' or 'replicate'")


def _check_image(op, x: torch.Tensor, arg: str = "x") -> torch.Tensor:
    check_input(op, x, arg)
    if x.dim() != 4:
        raise ValueError(f"{type(op).__name__}: argument '{arg}' must have shape (N, C, H, W), got {tuple(x.shape)}")
    return x


# --- operators ---------------------------------------------------------------------------------------------------
class Blur(LinearOperator):
    """y = h * x with kernel h of shape (kh, kw) (shared by channels) or (C, kh, kw) (one per channel).

    Args:
        kernel: the blur kernel (real).
        mode: ``"circular"`` (FFT) or the padding of a 'same' convolution: ``"zeros"``, ``"reflect"``, ``"replicate"``.
    """

    def __init__(self, kernel: torch.Tensor, mode: str = "circular") -> None:
        super().__init__()
        if not isinstance(kernel, torch.Tensor) or kernel.dim() not in (2, 3) or kernel.is_complex():
            raise ValueError("Blur: argument 'kernel' must be a real tensor of shape (kh, kw) or (C, kh, kw), got "
                             f"{getattr(kernel, 'shape', type(kernel).__name__)}")
        if not torch.isfinite(kernel).all():
            raise ValueError("Blur: argument 'kernel' must have finite values")
        self.mode = _check_mode(mode, "Blur")
        self.register_buffer("kernel", kernel if kernel.dim() == 3 else kernel[None])

    def _kernel_for(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(x.real.dtype)
        if k.shape[0] not in (1, x.shape[1]):
            raise ValueError(f"Blur: input has {x.shape[1]} channels but the kernel has {k.shape[0]}")
        return k

    def _transfer(self, x: torch.Tensor) -> torch.Tensor:
        """FFT of the kernel zero-padded to the size of `x`: (C or 1, H, W//2+1), centred at the origin for the
        circular mode, at the top-left corner for the padded modes. Cached for the last size (the key includes the
        kernel's version counter, so in-place edits invalidate it)."""
        key = (tuple(x.shape[-2:]), x.dtype, x.device, self.kernel.data_ptr(), self.kernel._version)
        cached = self.__dict__.get("_transfer_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        kh, kw = self.kernel.shape[-2:]
        h, w = x.shape[-2:]
        if kh > h or kw > w:
            raise ValueError(f"Blur: kernel {kh}x{kw} is larger than the image {h}x{w}")
        k = F.pad(self._kernel_for(x), (0, w - kw, 0, h - kh))
        if self.mode == "circular":
            k = torch.roll(k, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
        transfer = torch.fft.fft2(k) if x.is_complex() else torch.fft.rfft2(k)
        self.__dict__["_transfer_cache"] = (key, transfer)
        return transfer

    def _fft_apply(self, x: torch.Tensor, conj: bool) -> torch.Tensor:
        """Circular convolution with the kernel (conj=True: with its adjoint, the correlation)."""
        t = self._transfer(x)
        t = t.conj() if conj else t
        if x.is_complex():
            return torch.fft.ifft2(torch.fft.fft2(x) * t)
        return torch.fft.irfft2(torch.fft.rfft2(x) * t, s=x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(self, x)
        _check_fits("Blur", self.kernel.shape[-2:], x, self.mode)
        if self.mode == "circular":
            return self._fft_apply(x, conj=False)
        # 'same' convolution = pad, then the 'valid' part of a linear convolution, which a circular convolution of
        # the padded image with the corner-anchored kernel gives exactly from offset (kh-1, kw-1) on.
        kh, kw = self.kernel.shape[-2:]
        xp = pad(x, _pad_widths((kh, kw)), self.mode)
        return self._fft_apply(xp, conj=False)[..., kh - 1:, kw - 1:]

    def svd(self, like: torch.Tensor):
        """Circular mode: V = the unitary 2-D DFT, s = |H| (H the transfer function), U = V·diag(H/|H|)."""
        from imaging.operators.svd import fourier_basis

        if self.mode != "circular":
            raise NotImplementedError(f"Blur.svd: only mode='circular' is diagonalised by the DFT, got "
                                      f"mode={self.mode!r}")
        transfer = self._transfer(torch.zeros(like.shape[-2:], dtype=torch.complex128 if like.real.dtype ==
                                              torch.float64 else torch.complex64, device=like.device))
        s = transfer.abs()
        phase = torch.where(s > 0, transfer / s.clamp_min(torch.finfo(s.dtype).tiny), torch.ones_like(transfer))
        return fourier_basis(s, phase)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(self, y, "y")
        _check_fits("Blur", self.kernel.shape[-2:], y, self.mode)
        if self.mode == "circular":
            return self._fft_apply(y, conj=True)
        kh, kw = self.kernel.shape[-2:]
        embedded = F.pad(y, (kw - 1, 0, kh - 1, 0))
        return pad_adjoint(self._fft_apply(embedded, conj=True), _pad_widths((kh, kw)), self.mode)


class Downsampling(LinearOperator):
    """Super-resolution forward model y = S(h * x): anti-aliasing blur h, then keep every `factor`-th pixel.

    (N, C, H, W) -> (N, C, ceil(H/f), ceil(W/f)). The filter is ``"box"`` (area average over f×f blocks, aligned
    with the sampling grid), ``"gaussian"`` (σ = f/2), or a given kernel tensor.
    """

    def __init__(self, factor: int, filter: str | torch.Tensor = "gaussian", mode: str = "reflect") -> None:
        super().__init__()
        self.factor = check_size(factor, "Downsampling", "factor")
        if isinstance(filter, torch.Tensor):
            kernel = filter
        elif filter == "gaussian":
            kernel = gaussian_kernel(factor / 2)
        elif filter == "box":
            # Even box centred at k//2 covers the block [i - f/2, i + f/2); shift by padding so blocks align.
            kernel = F.pad(box_kernel(factor), (0, factor - 1, 0, factor - 1)) if factor > 1 else box_kernel(1)
        else:
            raise ValueError(f"Downsampling: argument 'filter' must be 'gaussian', 'box' or a kernel tensor, "
                             f"got {filter!r}")
        self.blur = Blur(kernel, mode=mode)
        self.filter = filter if isinstance(filter, str) else "given kernel"
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(self, x)
        _check_fits("Downsampling", self.blur.kernel.shape[-2:], x, self.mode)
        return self.blur(x)[..., :: self.factor, :: self.factor]

    def svd(self, like: torch.Tensor):
        """Box filter and sides divisible by the factor (block averages): V = the orthonormal 2-D DCT of each f×f
        block, whose first atom is the constant 1/f; s = 1/f there, 0 elsewhere; Uᴴy puts y at those atoms."""
        from imaging.operators.sampling import dct_matrix
        from imaging.operators.svd import SVD

        f, (H, W) = self.factor, like.shape[-2:]
        if self.filter != "box" or H % f or W % f:
            raise NotImplementedError(f"Downsampling.svd: needs filter='box' and image sides divisible by the factor "
                                      f"{f} (block averages), got filter={self.filter!r} and size {(H, W)}")
        d = dct_matrix(f).to(dtype=like.real.dtype, device=like.device)

        def blocks(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # m applied on both axes of every block
            b = x.reshape(*x.shape[:-2], H // f, f, W // f, f)
            return torch.einsum("ij,...ajbk,lk->...aibl", m, b, m).reshape(x.shape)

        def u_adjoint(y: torch.Tensor) -> torch.Tensor:
            c = y.new_zeros(*y.shape[:-2], H, W)
            c[..., ::f, ::f] = y
            return c

        s = torch.zeros(H, W, dtype=like.real.dtype, device=like.device)
        s[::f, ::f] = 1.0 / f
        return SVD(s, lambda x: blocks(x, d), lambda c: blocks(c, d.T), u_adjoint)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(self, y, "y")
        shape = tuple(self._input_for(y)[0])
        f = self.factor
        if len(shape) != 3 or tuple(y.shape[1:]) != (shape[0], -(-shape[1] // f), -(-shape[2] // f)):
            raise ValueError(f"Downsampling.adjoint: argument 'y' of shape {tuple(y.shape)} is not an output of the "
                             f"declared in_shape {shape}: an input (C, H, W) gives outputs (N, C, ceil(H/{f}), "
                             f"ceil(W/{f}))")
        up = y.new_zeros((y.shape[0], *shape))
        _check_fits("Downsampling", self.blur.kernel.shape[-2:], up, self.mode)
        up[..., :: self.factor, :: self.factor] = y
        return self.blur.adjoint(up)

    def _input_for(self, y: torch.Tensor):
        """Input shape: declared, or remembered from a call, else the largest multiple of the factor (H = f·h,
        W = f·w)."""
        remembered = self._remembered_input(y)
        if remembered is not None:
            return remembered
        return (y.shape[1], y.shape[2] * self.factor, y.shape[3] * self.factor), y.is_complex()
