r"""Gain-sensing operators: p snapshots y_l = diag(d) A_l x of one scene x through known sensing matrices A_l.

Batched over B independent problems. Shapes: images x (B, n), gains d (B, m), measurements y (B, p, m).
A `GainSensing` provides the passes the calibration solvers need:

- `sense(x)`: u = [A_l x]_l, (B, n) -> (B, p, m);
- `sense_adjoint(c)`: Σ_l A_lᴴ c_l, (B, p, m) -> (B, n);
- `gradients(r, gains, u)`: (Σ_l A_lᴴ(ḡ ⊙ r_l), Σ_l ū_l ⊙ r_l), the image and gain gradients of ½Σ_l‖g⊙u_l − y_l‖²
  for the residual r;
- `normal_pass(s, w, c)`: (v = A s, Aᴴ(w ⊙ v), Aᴴ c, Σ_l |v_l|²) in one pass over the matrices where possible;
- `column_norms_sq()`: diag(Σ_l A_lᴴ A_l), for preconditioning.

A `GainSensing` is a `LinearOperator` (the gain-free A: x -> [A_l x]_l, adjoint Σ_l A_lᴴ c_l), so
`imaging.testing.dot_test` checks it and the solvers of `imaging.solvers` accept it. A custom sensing model
subclasses `GainSensing` and implements `sense(x)` only, as a `LinearOperator` implements `forward`: the adjoint
is then derived by autograd (override `sense_adjoint` with a closed form where one exists), and the dtype and
device come from the operator's tensors (override `probe_like` only when it holds none).
"""
from __future__ import annotations

import math

import torch
from imaging.operators.base import LinearOperator
from imaging.operators.sampling import _generator, dct_matrix, signed_dct2, signed_dct2_adjoint
from imaging.ops._common import require_values
from imaging.ops.gain_sensing import gain_adjoint, gain_forward, gain_normal_pass


class GainSensing(LinearOperator):
    """Base class: p snapshots of m sensors each, n pixels; `batch` = number of problems with their own matrices
    (None when the matrices are shared by any number of problems). As a `LinearOperator` it is the gain-free A,
    (B, n) -> (B, p, m); `forward(x, gains)` applies the gains too."""

    def __init__(self, snapshots: int, sensors: int, pixels: int, batch: int | None = None) -> None:
        for name, value in (("snapshots", snapshots), ("sensors", sensors), ("pixels", pixels)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{type(self).__name__}: argument '{name}' must be a positive integer, got {value!r}")
        super().__init__(in_shape=(pixels,))
        self.snapshots, self.sensors, self.pixels, self.batch = snapshots, sensors, pixels, batch

    # -- to implement --------------------------------------------------------------------------------------------
    def sense(self, x: torch.Tensor) -> torch.Tensor:
        """The gain-free measurements u = [A_l x]_l, (B, n) -> (B, p, m): what a custom model implements."""
        raise NotImplementedError(f"{type(self).__name__}: a GainSensing subclass must implement sense(x), the "
                                  f"gain-free measurements (B, n) -> (B, p, m)")

    def sense_adjoint(self, c: torch.Tensor) -> torch.Tensor:
        """Σ_l A_lᴴ c_l, (B, p, m) -> (B, n); by default derived by autograd from `sense` (exact for a linear
        `sense`; override with a closed form for speed)."""
        return LinearOperator.adjoint(self, c)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.sense_adjoint(y)

    # -- derived -------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        """y = diag(gains) A_l x for every snapshot: (B, n), (B, m) -> (B, p, m)."""
        u = self.sense(x)
        return u if gains is None else u * gains[:, None, :]

    def gradients(self, r: torch.Tensor, gains: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_l A_lᴴ (ḡ ⊙ r_l), Σ_l ū_l ⊙ r_l): (B, n), (B, m)."""
        return self.sense_adjoint(r * gains.conj()[:, None, :]), (u.conj() * r).sum(1)

    def normal_pass(self, s: torch.Tensor, weights: torch.Tensor, c: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(v = A s, Σ_l A_lᴴ (w ⊙ v_l), Σ_l A_lᴴ c_l (zeros without c), Σ_l |v_l|²)."""
        v = self.sense(s)
        weighted = v * weights[:, None, :]
        if c is None:
            Q = self.sense_adjoint(weighted)
            P = torch.zeros_like(Q)
        else:  # one adjoint call for both
            Q, P = self.sense_adjoint(torch.cat([weighted, c])).split(s.shape[0])
        return v, Q, P, (v.abs() ** 2).sum(1)

    def column_norms_sq(self) -> torch.Tensor:
        """diag(Σ_l A_lᴴ A_l), shape (B or 1, n); the default estimates it with 16 random-sign probes."""
        probes = 16
        gen = _generator(0)
        z = (torch.randint(0, 2, (probes, self.pixels), generator=gen) * 2 - 1).to(self.probe_like())
        batch = self.batch or 1
        z = z.repeat(batch, 1)
        Az = self.sense_adjoint(self.sense(z))
        return (z.conj() * Az).real.reshape(batch, probes, -1).mean(1).clamp_min(0)

    def probe_like(self) -> torch.Tensor:
        """An empty tensor with the dtype and device of the operator's measurements (for building probes and
        initial values): the device and precision of its first registered tensor (else of its first tensor
        attribute), real or complex as `sense` of a real image comes out; override when it holds no tensor."""
        tensors = [*self.parameters(), *self.buffers()]
        tensors = tensors or [v for v in vars(self).values() if isinstance(v, torch.Tensor)]
        if not tensors:
            raise TypeError(f"{type(self).__name__}: cannot tell the operator's dtype and device (it holds no tensor); "
                            f"override probe_like() to return an empty tensor of them")
        t = tensors[0]
        real = t.real.dtype if t.is_floating_point() or t.is_complex() else torch.float64
        with torch.no_grad():
            out = self.sense(torch.zeros(1, self.pixels, dtype=real, device=t.device))
        return torch.empty(0, dtype=out.dtype, device=t.device)

    def check(self, y: torch.Tensor, owner: str) -> None:
        """Raise a clear error unless y fits the operator: (B, p, m), B matching its own batch."""
        expected = (self.snapshots, self.sensors)
        if y.dim() != 3 or tuple(y.shape[1:]) != expected or (self.batch is not None and y.shape[0] != self.batch):
            raise ValueError(f"{owner}: measurements must have shape (B, p, m) = ({self.batch or 'B'}, "
                             f"{self.snapshots}, {self.sensors}) for this sensing operator, got {tuple(y.shape)}")

    def extra_repr(self) -> str:
        return f"snapshots={self.snapshots}, sensors={self.sensors}, pixels={self.pixels}, batch={self.batch}"


class DenseGainSensing(GainSensing):
    """Dense sensing matrices A of shape (p, m, n) (shared by the problems) or (B, p, m, n), on the compiled ops
    `imaging::gain_*` (real float32/float64; complex matrices use the torch references)."""

    def __init__(self, A: torch.Tensor) -> None:
        if not isinstance(A, torch.Tensor) or A.dim() not in (3, 4) or A.numel() == 0:
            got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
            raise ValueError(f"DenseGainSensing: argument 'A' must have shape (p, m, n) or (B, p, m, n), got {got}")
        if not (A.is_floating_point() or A.is_complex()):
            raise TypeError(f"DenseGainSensing: argument 'A' must be a floating or complex tensor, got {A.dtype}")
        require_values(A, "DenseGainSensing", "A")
        if not bool(torch.isfinite(A).all()):
            raise ValueError("DenseGainSensing: argument 'A' has non-finite values (NaN or inf)")
        p, m, n = A.shape[-3:]
        super().__init__(p, m, n, A.shape[0] if A.dim() == 4 else None)
        self.register_buffer("A", A.contiguous(), persistent=False)

    @classmethod
    def gaussian(cls, snapshots: int, sensors: int, pixels: int, *, batch: int | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                 seed: int | None = 0) -> "DenseGainSensing":
        """I.i.d. N(0, 1) matrices (complex: N(0, 1) with independent real and imaginary parts of variance ½)."""
        shape = (snapshots, sensors, pixels) if batch is None else (batch, snapshots, sensors, pixels)
        A = torch.randn(shape, generator=_generator(seed), dtype=dtype)
        return cls(A.to(device))

    def sense(self, x: torch.Tensor) -> torch.Tensor:
        return gain_forward(self.A, x)

    def sense_adjoint(self, c: torch.Tensor) -> torch.Tensor:
        return gain_adjoint(self.A, c)[0]

    def forward(self, x: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        return gain_forward(self.A, x, gains)

    def gradients(self, r, gains, u):
        return gain_adjoint(self.A, r, gains, u)

    def normal_pass(self, s, weights, c=None):
        return gain_normal_pass(self.A, s, weights.to(self.A.dtype), c)

    def column_norms_sq(self) -> torch.Tensor:
        norms = torch.linalg.vector_norm(self.A, dim=(-3, -2)) ** 2
        return norms if norms.dim() == 2 else norms[None]

    def probe_like(self) -> torch.Tensor:
        return self.A.new_empty(0)


class RandomMaskDCTSensing(GainSensing):
    r"""Structured, matrix-free sensing for images of shape (H, W), m = n = H·W: A_l = √n · DCT2 · diag(s_l) with
    random signs s_l ∈ {±1}ⁿ and the orthonormal separable 2-D DCT (`imaging.operators.sampling.signed_dct2`, the
    transform of `StructuredCompressedSensing` with every coefficient kept). O(n (H + W)) per snapshot instead of O(n²).
    Not covered by the calibration theorems (which assume i.i.d. sub-Gaussian rows), but works in practice."""

    def __init__(self, signs: torch.Tensor) -> None:
        if not isinstance(signs, torch.Tensor) or signs.dim() not in (3, 4):
            raise ValueError("RandomMaskDCTSensing: argument 'signs' must have shape (p, H, W) or (B, p, H, W)")
        p, H, W = signs.shape[-3:]
        super().__init__(p, H * W, H * W, signs.shape[0] if signs.dim() == 4 else None)
        self.shape = (H, W)
        self.register_buffer("signs", signs, persistent=False)
        self.register_buffer("dct_h", dct_matrix(H, signs.dtype).to(signs.device), persistent=False)
        self.register_buffer("dct_w", dct_matrix(W, signs.dtype).to(signs.device), persistent=False)

    @classmethod
    def random(cls, snapshots: int, shape: tuple[int, int], *, batch: int | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
               seed: int | None = 0) -> "RandomMaskDCTSensing":
        size = (snapshots, *shape) if batch is None else (batch, snapshots, *shape)
        signs = torch.randint(0, 2, size, generator=_generator(seed)).to(dtype) * 2 - 1
        return cls(signs.to(device))

    def _signs(self, batch: int) -> torch.Tensor:
        return self.signs if self.signs.dim() == 4 else self.signs.expand(batch, *self.signs.shape)

    def sense(self, x: torch.Tensor) -> torch.Tensor:
        B, (H, W) = x.shape[0], self.shape
        coefficients = signed_dct2(x.reshape(B, 1, H, W), self._signs(B), self.dct_h, self.dct_w)
        return (math.sqrt(H * W) * coefficients).reshape(B, self.snapshots, H * W)

    def sense_adjoint(self, c: torch.Tensor) -> torch.Tensor:
        B, (H, W) = c.shape[0], self.shape
        back = signed_dct2_adjoint(c.reshape(B, self.snapshots, H, W), self._signs(B), self.dct_h, self.dct_w)
        return (math.sqrt(H * W) * back).sum(1).reshape(B, H * W)

    def column_norms_sq(self) -> torch.Tensor:
        return torch.full((1, self.pixels), float(self.snapshots * self.pixels), dtype=self.signs.dtype,
                          device=self.signs.device)

    def probe_like(self) -> torch.Tensor:
        return self.signs.new_empty(0)
