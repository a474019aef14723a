r"""The field-of-experts prior (Roth & Black): a learned sum of potentials of filter responses.

    R(x) = Σ_i a_i Σ_p φ((k_i ⋆ P x)_p; ν_i),   a_i = exp(log_weights_i) > 0,   ν_i = exp(log_nu_i) > 0

per image plane, with K filters k_i (K, kh, kw), the smoothed absolute value φ(z; ν) = sqrt(z² + ν²) (convex, so R
is convex) or the Student-t φ(z; ν) = log(1 + z²/ν²), and reflect or zero padding. Weights and shapes are kept in
log form so that gradient-based learning keeps them positive. Value, gradient and Hessian-vector product run on
the compiled `imaging::foe_*` ops; all are differentiable in the parameters (for bilevel learning).
"""
from __future__ import annotations

import torch
from torch import nn

from imaging.ops.foe import POTENTIALS, foe_energy, foe_grad, foe_hvp


class FieldOfExperts(nn.Module):
    """Field-of-experts regulariser with learnable `filters` (K, kh, kw), `log_weights` (K,) and `log_nu` (K,).

    Args:
        filters: initial filters (K, kh, kw), odd sizes.
        weights, nu: initial a_i and ν_i (scalars or (K,)), positive.
        potential: "abs" (smoothed |z|, convex) or "student" (Student-t, non-convex).
        padding: "reflect" or "zero".
        zero_mean: use the filters minus their mean (each filter blind to the image's brightness, as in the
            published natural-image FoEs). Learning then moves only the zero-mean part: the mean of a filter is the
            stiffest direction of the bilevel problem (it answers to the image's mean intensity, times every pixel),
            and removing it lets gradient steps ten times larger descend.
    """

    def __init__(self, filters: torch.Tensor, weights: float | torch.Tensor = 1e-2,
                 nu: float | torch.Tensor = 1e-2, potential: str = "abs", padding: str = "reflect",
                 zero_mean: bool = False) -> None:
        super().__init__()
        if not isinstance(filters, torch.Tensor) or filters.dim() != 3:
            raise ValueError("FieldOfExperts: argument 'filters' must be a tensor of shape (K, kh, kw)")
        if potential not in POTENTIALS:
            raise ValueError(f"FieldOfExperts: argument 'potential' must be one of {POTENTIALS}, got {potential!r}")
        K = filters.shape[0]
        weights, nu = (torch.as_tensor(t, dtype=filters.dtype).expand(K).clone() for t in (weights, nu))
        for name, t in (("weights", weights), ("nu", nu)):
            if not bool((t > 0).all()):
                raise ValueError(f"FieldOfExperts: argument '{name}' must be positive")
        self.filters = nn.Parameter(filters.clone())
        self.log_weights = nn.Parameter(weights.log())
        self.log_nu = nn.Parameter(nu.log())
        self.potential, self.padding, self.zero_mean = potential, padding, bool(zero_mean)

    @classmethod
    def random(cls, count: int = 24, size: int = 5, *, weights: float = 1e-2, nu: float = 1e-2,
               potential: str = "abs", padding: str = "reflect", dtype: torch.dtype = torch.float64,
               seed: int = 0) -> "FieldOfExperts":
        """Zero-mean random filters (unit ℓ2 norm): a starting point for learning."""
        gen = torch.Generator().manual_seed(seed)
        filters = torch.randn(count, size, size, generator=gen, dtype=dtype)
        filters = filters - filters.mean((1, 2), keepdim=True)
        filters = filters / torch.linalg.vector_norm(filters, dim=(1, 2), keepdim=True)
        return cls(filters, weights, nu, potential, padding)

    @classmethod
    def from_tv(cls, weight: float, nu: float, count: int = 24, size: int = 5, *, atom_scale: float = 0.1,
                potential: str = "abs", padding: str = "reflect", zero_mean: bool = False,
                dtype: torch.dtype = torch.float64) -> "FieldOfExperts":
        """A field of experts close to the anisotropic smoothed TV λ Σ_k sqrt((D_k x)² + ν²) (its two forward-
        difference filters) plus count − 2 low-frequency DCT atoms at `atom_scale` of the TV filters' size: a start
        for learning.

        For the smoothed |·|, a·φ(z; ν) = φ(a z; a ν): the weight λ is folded into the filters (λ D_k, shape λν)
        and the weights are 1 and frozen (requires_grad False). Learning them too is redundant and badly scaled:
        every derivative of an expert in (a, k, ν) scales with a, so experts started at a small weight never move.
        The Student-t potential has no such invariance and keeps learnable weights (all λ)."""
        if count < 2 or size < 3 or size % 2 == 0:
            raise ValueError(f"FieldOfExperts.from_tv: need count >= 2 and an odd size >= 3, got {count}, {size}")
        filters = torch.zeros(count, size, size, dtype=dtype)
        c = size // 2
        filters[0, c, c], filters[0, c, c + 1] = -1.0, 1.0
        filters[1, c, c], filters[1, c + 1, c] = -1.0, 1.0
        if count > 2:
            filters[2:] = atom_scale * dct_atoms(count - 2, size, dtype)
        if potential == "abs":
            model = cls(weight * filters, 1.0, torch.full((count,), weight * nu, dtype=dtype), potential, padding,
                        zero_mean)
            model.log_weights.requires_grad_(False)
            return model
        return cls(filters, weight, torch.full((count,), nu, dtype=dtype), potential, padding, zero_mean)

    SHIPPED = {"denoise-sigma25": "foe_denoise_sigma25.safetensors"}

    @classmethod
    def pretrained(cls, name: str = "denoise-sigma25", dtype: torch.dtype = torch.float64) -> "FieldOfExperts":
        """A field of experts shipped in imaging/weights/ (learned by MAID, examples/learn_foe.py; settings in the
        file's metadata), for denoising at σ = 25/255 with the convex smoothed-|·| potential:
        "denoise-sigma25" (24 filters 5×5, six offline pictures)."""
        from imaging.data import shipped_file

        path = shipped_file("FieldOfExperts.pretrained", cls.SHIPPED, name,
                            "python examples/learn_foe.py (settings in the file's metadata)")
        return cls.load(path, dtype)

    @classmethod
    def load(cls, path, dtype: torch.dtype = torch.float64) -> "FieldOfExperts":
        """A field of experts from a safetensors file written by `imaging.data.save_weights` (tensors `filters`,
        `log_weights`, `log_nu`; the potential, padding and zero_mean in the metadata's settings), e.g. a
        snapshot of examples/learn_foe.py; its settings are kept as `.settings`."""
        from imaging.data import load_weights

        tensors, settings = load_weights(path, "FieldOfExperts.load")
        if not {"filters", "log_weights", "log_nu"} <= set(tensors):
            raise ValueError(f"FieldOfExperts.load: {path} is not a field of experts (tensors 'filters', "
                             f"'log_weights', 'log_nu' expected, found {sorted(tensors)})")
        if not isinstance(settings, dict):
            raise ValueError(f"FieldOfExperts.load: {path} has settings metadata {settings!r}; expected a JSON object "
                             f"(potential, padding, zero_mean)")
        shapes = {key: tuple(tensors[key].shape) for key in ("filters", "log_weights", "log_nu")}
        K = shapes["filters"][0] if len(shapes["filters"]) == 3 else None
        if K is None or shapes["log_weights"] != (K,) or shapes["log_nu"] != (K,):
            raise ValueError(f"FieldOfExperts.load: {path}: tensors 'filters', 'log_weights', 'log_nu' must have "
                             f"shapes (K, kh, kw), (K,), (K,), got {list(shapes.values())}")
        tensors = {key: tensor.to(dtype) for key, tensor in tensors.items()}
        model = cls(tensors["filters"], tensors["log_weights"].exp(), tensors["log_nu"].exp(),
                    settings.get("potential", "abs"), settings.get("padding", "reflect"),
                    settings.get("zero_mean", False))
        model.settings = settings
        return model

    def effective_filters(self) -> torch.Tensor:
        """The filters the prior applies: `filters`, minus each filter's mean with `zero_mean`."""
        return self.filters - self.filters.mean((1, 2), keepdim=True) if self.zero_mean else self.filters

    def _args(self, x: torch.Tensor) -> tuple:
        cast = lambda t: t.to(dtype=x.dtype, device=x.device)  # noqa: E731
        return (cast(self.effective_filters()), cast(self.log_weights.exp()), cast(self.log_nu.exp()), self.potential,
                self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """R per sample, (N, C, H, W) -> (N,) (summed over channels)."""
        filters, weights, nu, potential, padding = self._args(x)
        return foe_energy(x, filters, weights, nu, potential, padding).sum(1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """∇_x Σ R(x), (N, C, H, W)."""
        return foe_grad(x, *self._args(x))

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∇²_x Σ R(x) · v, (N, C, H, W)."""
        filters, weights, nu, potential, padding = self._args(x)
        return foe_hvp(x, v, filters, weights, nu, potential, padding)

    def lipschitz_bound(self) -> float:
        """An upper bound of the Lipschitz constant of ∇R: Σ_i a_i ‖k_i‖₁² sup φ'' · ‖P‖², with sup φ'' = 1/ν
        ("abs") or 2/ν² ("student") and ‖P‖² ≤ 4 for reflect padding (1 for zero padding)."""
        with torch.no_grad():
            a, nu = self.log_weights.exp(), self.log_nu.exp()
            curvature = 1 / nu if self.potential == "abs" else 2 / nu ** 2
            l1 = self.effective_filters().abs().sum((1, 2))
            pad = 4.0 if self.padding == "reflect" else 1.0
            return float((a * l1 ** 2 * curvature).sum()) * pad

    @property
    def convex(self) -> bool:
        return self.potential == "abs"

    def extra_repr(self) -> str:
        K, kh, kw = self.filters.shape
        zero_mean = ", zero_mean=True" if self.zero_mean else ""
        return f"filters={K}x{kh}x{kw}, potential={self.potential!r}, padding={self.padding!r}{zero_mean}"


def dct_atoms(count: int, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The `count` lowest-frequency non-constant 2-D DCT atoms of size×size (unit norm), (count, size, size)."""
    from imaging.operators.sampling import dct_matrix

    d = dct_matrix(size, dtype)
    atoms = [(u + v, torch.outer(d[u], d[v])) for u in range(size) for v in range(size) if u + v > 0]
    atoms.sort(key=lambda item: item[0])
    return torch.stack([a for _, a in atoms[:count]])
