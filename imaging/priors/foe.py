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

from imaging.ops.foe import POTENTIALS, _foe_grad_torch, foe_energy, foe_grad, foe_hvp


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
        for name, value, top in (("count", count, 10_000), ("size", size, 255)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"FieldOfExperts.random: argument '{name}' must be an integer in [1, {top}], got "
                                 f"{value!r}")
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

    SHIPPED = {"denoise-sigma25": "foe_denoise_sigma25.safetensors",
               "natural-sigma25": "foe_natural_sigma25.safetensors"}

    @classmethod
    def pretrained(cls, name: str = "denoise-sigma25", dtype: torch.dtype = torch.float64) -> "FieldOfExperts":
        """A field of experts shipped in imaging/weights/ (learned by MAID, examples/learn_foe.py; settings in the
        file's metadata), for denoising at σ = 25/255 with the convex smoothed-|·| potential:
        "denoise-sigma25" (24 filters 5×5, six offline pictures), "natural-sigma25" (48 zero-mean filters 7×7, 24
        crops of train400). The Student-t field of experts trained end to end is `UnrolledFoE.pretrained`."""
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

        return cls._from_weights(path, *load_weights(path, "FieldOfExperts.load"), dtype)

    @classmethod
    def _from_weights(cls, path, tensors: dict, settings, dtype: torch.dtype) -> "FieldOfExperts":
        """`load` on tensors and settings already read from `path` (checked, then built)."""
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

    def curvature_bound(self, grid: int = 64) -> torch.Tensor:
        """max over frequencies ω of Σ_i a_i sup φ''_i |k̂_i(ω)|² (sup φ'' = 1/ν for "abs", 2/ν² for "student"): the
        largest curvature of R on periodic images of side `grid` (a 0-d tensor, differentiable in the parameters);
        with reflect padding a step scale rather than a guaranteed bound."""
        filters = self.effective_filters()
        nu = self.log_nu.exp()
        curvature = 1 / nu if self.potential == "abs" else 2 / nu ** 2
        spectra = torch.fft.rfft2(filters, s=(max(grid, 2 * filters.shape[-2]), max(grid, 2 * filters.shape[-1])))
        return ((self.log_weights.exp() * curvature)[:, None, None] * spectra.abs() ** 2).sum(0).max()

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


class UnrolledFoE(nn.Module):
    r"""A field-of-experts denoiser trained end to end: `steps` gradient-descent steps on

        E(x) = ½ ‖x − y‖² + R(x),   from x = y,
        x ← x − α_t ∇E(x),   α_t = exp(s_t) / (1 + L),

    L the largest curvature of R (`FieldOfExperts.curvature_bound`), σ₀ the noise level it was trained at. R's
    filters, weights and shapes and the step sizes s_t are learned so that the last iterate is close to the clean
    image (loss-specific training of a truncated minimisation: Barbu 2009, Domke 2012, Chen, Ranftl and Pock 2014;
    TNRD with one set of filters for every step). It takes the non-convex Student-t potential, which MAID's bilevel
    learning (strongly convex lower level) does not cover. The output is the last of these steps, not a minimiser of
    E: more steps, or E minimised by another solver, leave what it was trained for. At another noise level σ it
    denoises c·y, c = σ₀/σ (noise at its training level, the picture's contrast scaled; natural images are close
    to scale invariant), and returns the result over c: trained at σ₀ only, on Set12 this transfers (σ = 15 and 50:
    above TV's best λ), where reweighting the data term by (σ₀/σ)² failed at σ = 50.
    """

    SHIPPED = {"natural-sigma25-student": "foe_natural_sigma25_student.safetensors"}

    def __init__(self, prior: FieldOfExperts, steps: int = 10, sigma: float = 25 / 255) -> None:
        super().__init__()
        if not isinstance(prior, FieldOfExperts):
            raise TypeError(f"UnrolledFoE: argument 'prior' must be a FieldOfExperts, got {type(prior).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
            raise ValueError(f"UnrolledFoE: argument 'steps' must be an integer in [1, 10000], got {steps!r}")
        self.sigma = _positive_sigma(sigma, "UnrolledFoE", "sigma")
        self.prior = prior
        self.log_steps = nn.Parameter(torch.zeros(steps, dtype=prior.filters.dtype))

    @classmethod
    def natural(cls, count: int = 48, size: int = 7, steps: int = 10, sigma: float = 25 / 255, *,
                weight: float = 3e-4, nu: float = 0.05, dtype: torch.dtype = torch.float32) -> "UnrolledFoE":
        """The start of the shipped model: `count` zero-mean 2-D DCT atoms size×size (all 48 non-constant atoms of
        7×7), Student-t experts of weight `weight` and shape `nu`, reflect padding, unit steps."""
        prior = FieldOfExperts(dct_atoms(count, size, dtype), weight, nu, "student", "reflect", zero_mean=True)
        return cls(prior, steps, sigma)

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """The denoised image of y (N, C, H, W) with noise level `sigma` (default: the training level σ₀; else
        y is scaled by σ₀/σ, denoised and scaled back)."""
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or not y.is_floating_point():
            raise ValueError(f"UnrolledFoE: argument 'y' must be a real (N, C, H, W) tensor, got "
                             f"{type(y).__name__ if not isinstance(y, torch.Tensor) else tuple(y.shape)}")
        if sigma is not None:
            c = self.sigma / _positive_sigma(sigma, "UnrolledFoE", "sigma")
            return self.descend(c * y) / c
        return self.descend(y)

    def descend(self, y: torch.Tensor) -> torch.Tensor:
        """The `steps` gradient steps on ½‖x − y‖² + R(x) from x = y."""
        differentiable = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        scale = (self.log_steps.exp() / (1 + self.prior.curvature_bound())).to(y.dtype)
        x = y
        for alpha in scale:
            # the compiled gradient for inference; its autograd takes the parameters' gradients through the torch
            # reference anyway, so training calls the reference directly (one forward instead of two)
            grad = _foe_grad_torch(x, *self.prior._args(x)) if differentiable else self.prior.grad(x)
            x = x - alpha * ((x - y) + grad)
        return x

    @classmethod
    def pretrained(cls, name: str = "natural-sigma25-student", dtype: torch.dtype = torch.float32) -> "UnrolledFoE":
        """A shipped denoiser (imaging/weights/, settings and training record in the file's metadata):
        "natural-sigma25-student" (48 Student-t filters 7×7, trained on train400 crops at σ = 25/255 by
        `scripts/train_priors.py foe`). Frozen for inference (parameters without gradients, so the compiled
        operator runs even under autograd, e.g. as a plug-and-play denoiser); `.requires_grad_(True)` to fine-tune."""
        from imaging.data import shipped_file

        model = cls.load(shipped_file("UnrolledFoE.pretrained", cls.SHIPPED, name,
                                      "python scripts/train_priors.py foe --export"), dtype)
        return model.requires_grad_(False)

    def save(self, path, record: dict | None = None) -> None:
        """Write the model to a safetensors file atomically (the settings and `record` in its metadata)."""
        from imaging.data import save_weights

        prior = self.prior
        tensors = {"filters": prior.filters, "log_weights": prior.log_weights, "log_nu": prior.log_nu,
                   "log_steps": self.log_steps}
        settings = {"potential": prior.potential, "padding": prior.padding, "zero_mean": prior.zero_mean,
                    "sigma": self.sigma, **(record or {})}
        save_weights({k: v.detach() for k, v in tensors.items()}, str(path), settings)

    @classmethod
    def load(cls, path, dtype: torch.dtype = torch.float32) -> "UnrolledFoE":
        """A model written by `save` (its settings kept as `.settings`)."""
        from imaging.data import load_weights

        tensors, settings = load_weights(path, "UnrolledFoE.load")
        prior = FieldOfExperts._from_weights(path, tensors, settings, dtype)
        steps = tensors.get("log_steps")
        if steps is None or steps.dim() != 1 or not 1 <= len(steps) <= 10_000 or "sigma" not in settings:
            raise ValueError(f"UnrolledFoE.load: {path} is not an unrolled field of experts (a 1-D tensor "
                             f"'log_steps' and a 'sigma' setting expected)")
        model = cls(prior, len(steps), float(settings["sigma"]))
        with torch.no_grad():
            model.log_steps.copy_(steps.to(dtype))
        model.settings = settings
        return model

    def extra_repr(self) -> str:
        return f"steps={len(self.log_steps)}, sigma={self.sigma:.4g}"


def _positive_sigma(value, who: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{who}: argument '{name}' must be a positive noise level, got {value!r}")
    return float(value)
