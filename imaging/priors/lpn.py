r"""Learned proximal networks (LPN): neural networks that are exactly proximal operators, and their priors.

An LPN is the gradient of a learned convex potential ψ_θ (an input-convex neural network, ICNN):

    f_θ(y) = ∇ψ_θ(y),   ψ_θ convex and smooth (softplus activations)

and any such map is exactly the proximal operator of some (possibly nonconvex) prior R_θ (Gribonval–Nikolova):

    f_θ(y) = argmin_x ½‖y − x‖² + R_θ(x).

Convexity of ψ_θ: layer k computes z_{k+1} = softplus_β(W_k z_k + V_k y + b_k) with "core" weights W_k ≥ 0 (kept
non-negative by `clip_weights()` after every optimiser step) and unconstrained "input-skip" layers V_k; a
strong-convexity term (α/2)‖y‖² makes f_θ injective, so R_θ is defined on its range. The prior is recovered by
inverting the prox, a convex problem:

    y(x) = f_θ^{-1}(x) = argmin_y ψ_θ(y) − <x, y>,      R_θ(x) = <x, y(x)> − ½‖x‖² − ψ_θ(y(x))

(up to an additive constant); `prior(x)` reports the inversion error ‖f_θ(y) − x‖ alongside the value.

Networks (all map y -> f_θ(y) of the same shape):
- `LPN1d`: scalars (N, 1), the Laplacian experiment of the paper (an MLP ICNN, no α term).
- `LPNPatch`: fixed-size images or patches (N, C, s, s), s divisible by 4 (the paper's MNIST network, resized);
  larger images go through `prox_in_patches` (overlapping patches, overlaps averaged).
- `LPNConv`: fully convolutional (any image size), ψ_θ = Σ_pixels of a convolutional ICNN (optionally multi-scale:
  2×2 average pooling between levels) + a convex quadratic ½‖L * y‖² (L an unconstrained convolution, identity at
  initialisation) + (α/2)‖y‖²; f_θ is then an exact prox on whole images of any size.

Reference: Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imaging.linalg import check_finite

SHIPPED = {"natural": "lpn_natural.safetensors", "natural-wide": "lpn_natural_wide.safetensors",
           "image": "lpn_image.safetensors", "digits": "lpn_digits.safetensors",
           "laplacian-pm": "lpn_laplacian_pm.safetensors",
           "laplacian-l1": "lpn_laplacian_l1.safetensors", "laplacian-l2": "lpn_laplacian_l2.safetensors"}


def _check_tensor(owner: str, y: object, arg: str = "y") -> torch.Tensor:
    if isinstance(y, torch.Tensor) and not y.is_floating_point():
        raise TypeError(f"{owner}: argument '{arg}' must be a real floating tensor, got {y.dtype}")
    return check_finite(y, owner, arg)


@dataclass
class PriorEstimate:
    """What `prior(x)` returns: R_θ(x) per sample (N,), the inverse y = f_θ^{-1}(x), and the inversion error
    ‖f_θ(y) − x‖ / sqrt(n) per sample (root mean square over the n entries of a sample)."""

    value: torch.Tensor
    y: torch.Tensor
    inversion_error: torch.Tensor


class LearnedProximalNetwork(nn.Module):
    """Base class: subclasses build their layers, list the constrained ones in `core`, and implement
    `potential(y) -> ψ_θ(y)` of shape (N,) and `_check_shape(y)`.

    `prox(y)` (also `forward`) = ∇ψ_θ(y); `prior(x)` = R_θ(x) by inversion; `clip_weights()` keeps ψ_θ convex.
    """

    def __init__(self) -> None:
        super().__init__()
        self.core: nn.ModuleList = nn.ModuleList()

    # --- to implement ----------------------------------------------------------------------------------------
    def potential(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_shape(self, y: torch.Tensor, arg: str = "y") -> None:
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments (stored in checkpoints, so `load_lpn` rebuilds the network)."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------------
    def check_input(self, y: object, arg: str = "y") -> torch.Tensor:
        """Raise a clear error unless `y` is a finite floating tensor of a shape this network takes."""
        _check_tensor(type(self).__name__, y, arg)
        self._check_shape(y, arg)
        return y

    @torch.no_grad()
    def clip_weights(self) -> None:
        """Project the core weights onto W ≥ 0 (call after every optimiser step; keeps ψ_θ convex)."""
        for layer in self.core:
            layer.weight.clamp_(min=0.0)

    def min_core_weight(self) -> float:
        """The smallest core weight (≥ 0 when ψ_θ is guaranteed convex)."""
        return min(float(layer.weight.detach().min()) for layer in self.core)

    def _cast(self, y: torch.Tensor) -> torch.Tensor:
        parameter = next(self.parameters())
        return y.to(dtype=parameter.dtype, device=parameter.device)

    def value(self, y: torch.Tensor) -> torch.Tensor:
        """ψ_θ(y) per sample, shape (N,)."""
        self.check_input(y)
        return self.potential(self._cast(y))

    def prox(self, y: torch.Tensor) -> torch.Tensor:
        """f_θ(y) = ∇ψ_θ(y) = argmin_x ½‖y − x‖² + R_θ(x), same shape and dtype as y.

        One forward and one backward pass, inside `torch.enable_grad()` (so it also works under `no_grad`, e.g. in
        the solvers' loops). With grad mode on, the result keeps a graph to y when y requires grad (Jacobians) and to
        the parameters in training mode (`model.train()`, as `train_lpn` sets); otherwise it is detached (the
        loaded, eval-mode networks: no double-backward graph in solvers).
        """
        self.check_input(y)
        keep_graph = torch.is_grad_enabled() and (
            y.requires_grad or (self.training and any(p.requires_grad for p in self.parameters())))
        with torch.enable_grad():
            inputs = self._cast(y)
            if not (keep_graph and inputs.requires_grad):
                inputs = inputs.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.potential(inputs).sum(), inputs, create_graph=keep_graph)
        gradient = gradient.to(y.dtype)
        return gradient if keep_graph else gradient.detach()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.prox(y)

    @contextmanager
    def _in_float64(self):
        """Temporarily hold the parameters in float64 (inversion needs the precision), then restore."""
        dtype = next(self.parameters()).dtype
        self.double()
        try:
            yield self
        finally:
            self.to(dtype)

    def invert(self, x: torch.Tensor, max_iter: int = 500, tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
        """y = f_θ^{-1}(x) = argmin_y ψ_θ(y) − <x, y> (convex) by L-BFGS (float64, strong-Wolfe line search) from
        y₀ = x; returns (y, inversion error ‖f_θ(y) − x‖/sqrt(n) per sample). The problem is separable over the
        batch, so all samples are solved jointly; it stops when every entry of the gradient f_θ(y) − x is ≤ tol."""
        self.check_input(x, "x")
        target = x.detach().to(torch.float64)
        with self._in_float64(), torch.enable_grad():
            requires = [p.requires_grad for p in self.parameters()]
            for p in self.parameters():
                p.requires_grad_(False)
            try:
                y = target.clone().requires_grad_(True)
                optimiser = torch.optim.LBFGS([y], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                              tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

                def closure():
                    optimiser.zero_grad()
                    objective = self.potential(y).sum() - (target * y).sum()
                    objective.backward()
                    return objective

                optimiser.step(closure)
                y = y.detach()
                error = (self.prox(y) - target).reshape(len(y), -1).norm(dim=1) / math.sqrt(target[0].numel())
            finally:
                for p, flag in zip(self.parameters(), requires):
                    p.requires_grad_(flag)
        return y.to(x.dtype), error.to(x.dtype)

    def prior(self, x: torch.Tensor, max_iter: int = 500, tol: float = 1e-7) -> PriorEstimate:
        """R_θ(x) = <x, y> − ½‖x‖² − ψ_θ(y) with y = f_θ^{-1}(x) (`invert`), per sample (N,), defined up to an
        additive constant, with the inversion error; meaningful for x in (or near) the range of f_θ."""
        y, error = self.invert(x, max_iter=max_iter, tol=tol)
        with self._in_float64(), torch.no_grad():
            x64, y64 = x.detach().double(), y.double()
            flat = lambda t: t.reshape(len(t), -1)  # noqa: E731
            value = (flat(x64 * y64).sum(1) - 0.5 * flat(x64 ** 2).sum(1)) - self.potential(y64)
        return PriorEstimate(value.to(x.dtype), y, error)

    def save(self, path: str, settings: dict | None = None) -> None:
        """Write the weights and `config()` (plus `settings`, e.g. the training set-up) as safetensors, atomically."""
        from imaging.data import save_weights

        save_weights(dict(self.state_dict()), path, {"architecture": type(self).__name__, "config": self.config(),
                                                     **(settings or {})})


# --- 1-D ----------------------------------------------------------------------------------------------------------
class LPN1d(LearnedProximalNetwork):
    """Scalar LPN (the paper's Laplacian network): y (N, 1) or (N,) -> f_θ(y) of the same shape.

        z₁ = act(W₀ y),  z_{k+1} = act(W_k z_k + V_k y + b_k) (k = 1..depth−1),  ψ = W_out z + v y + c (+ α/2 y²)

    with W_k, W_out ≥ 0 (bias-free), V_k unconstrained; act = softplus with sharpness `beta`.
    """

    def __init__(self, hidden: int = 50, depth: int = 5, beta: float = 10.0, alpha: float = 0.0) -> None:
        super().__init__()
        if hidden < 1 or depth < 2:
            raise ValueError(f"LPN1d: arguments 'hidden' >= 1 and 'depth' >= 2 required, got {hidden}, {depth}")
        self.hidden, self.depth, self.beta, self.alpha = hidden, depth, float(beta), float(alpha)
        self.first = nn.Linear(1, hidden, bias=False)
        self.core = nn.ModuleList([nn.Linear(hidden, hidden, bias=False) for _ in range(depth - 2)]
                                  + [nn.Linear(hidden, 1, bias=False)])
        self.skips = nn.ModuleList([nn.Linear(1, hidden) for _ in range(depth - 2)] + [nn.Linear(1, 1)])
        self.clip_weights()

    def config(self) -> dict:
        return {"hidden": self.hidden, "depth": self.depth, "beta": self.beta, "alpha": self.alpha}

    def _check_shape(self, y: torch.Tensor, arg: str = "y") -> None:
        if not (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1)):
            raise ValueError(f"LPN1d: argument '{arg}' must have shape (N, 1) or (N,), got {tuple(y.shape)}")

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        y2 = y.reshape(-1, 1)
        z = F.softplus(self.first(y2), beta=self.beta)
        for core, skip in zip(self.core[:-1], self.skips[:-1]):
            z = F.softplus(core(z) + skip(y2), beta=self.beta)
        psi = (self.core[-1](z) + self.skips[-1](y2))[:, 0]
        return psi + 0.5 * self.alpha * y2[:, 0] ** 2


# --- fixed-size images / patches ----------------------------------------------------------------------------------
class LPNPatch(LearnedProximalNetwork):
    """LPN for images (N, C, s, s) of one fixed size s (a multiple of 4): the paper's MNIST network, resized.

        z₁ = act(W₀ y);  z₂ = act(W₁ z₁ + V₀ y_s);  z₃ = act(W₂ z₂ + V₁ y_{s/2});  z₄ = act(W₃ z₃ + V₂ y_{s/2});
        z₅ = act(W₄ vec z₄ + V₃ vec y_{s/4});   ψ = W₅ z₅ + (α/2)‖y‖²

    W₁, W₃ and V₀, V₂ are stride-2 3×3 convolutions (s -> s/2 -> s/4), W₂, V₁ stride 1, W₄, V₃, W₅ dense; y_r is y
    resized bilinearly to r×r (a linear map, so ψ stays convex). W₁..W₅ ≥ 0 (core), W₀ and the V_k unconstrained.
    Apply to larger images with `prox_in_patches`.
    """

    def __init__(self, size: int = 16, channels: int = 1, hidden: int = 64, beta: float = 10.0,
                 alpha: float = 0.01) -> None:
        super().__init__()
        if size < 4 or size % 4:
            raise ValueError(f"LPNPatch: argument 'size' must be a positive multiple of 4, got {size}")
        self.size, self.channels, self.hidden, self.beta, self.alpha = size, channels, hidden, float(beta), float(alpha)
        h, c, q = hidden, channels, size // 4
        self.first = nn.Conv2d(c, h, 3, 1, 1)
        self.core = nn.ModuleList([nn.Conv2d(h, h, 3, 2, 1, bias=False), nn.Conv2d(h, h, 3, 1, 1, bias=False),
                                   nn.Conv2d(h, h, 3, 2, 1, bias=False), nn.Linear(h * q * q, h, bias=False),
                                   nn.Linear(h, 1, bias=False)])
        self.skips = nn.ModuleList([nn.Conv2d(c, h, 3, 2, 1), nn.Conv2d(c, h, 3, 1, 1), nn.Conv2d(c, h, 3, 2, 1),
                                    nn.Linear(c * q * q, h)])
        init_core_weights(self)

    def config(self) -> dict:
        return {"size": self.size, "channels": self.channels, "hidden": self.hidden, "beta": self.beta,
                "alpha": self.alpha}

    def _check_shape(self, y: torch.Tensor, arg: str = "y") -> None:
        if y.dim() != 4 or tuple(y.shape[1:]) != (self.channels, self.size, self.size):
            raise ValueError(f"LPNPatch: argument '{arg}' must have shape (N, {self.channels}, {self.size}, "
                             f"{self.size}) for this fixed-size network, got {tuple(y.shape)}; apply it to larger "
                             f"images with prox_in_patches(model, image, stride)")

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        s = self.size
        resize = lambda r: y if r == s else F.interpolate(y, size=(r, r), mode="bilinear",  # noqa: E731
                                                          align_corners=False)
        act = lambda t: F.softplus(t, beta=self.beta)  # noqa: E731
        half, quarter = resize(s // 2), resize(s // 4)
        z = act(self.first(y))
        z = act(self.core[0](z) + self.skips[0](y))
        z = act(self.core[1](z) + self.skips[1](half))
        z = act(self.core[2](z) + self.skips[2](half))
        z = act(self.core[3](z.flatten(1)) + self.skips[3](quarter.flatten(1)))
        return self.core[4](z)[:, 0] + 0.5 * self.alpha * (y ** 2).flatten(1).sum(1)


# --- fully convolutional ------------------------------------------------------------------------------------------
class LPNConv(LearnedProximalNetwork):
    """Fully convolutional LPN for images (N, C, H, W) of any size (≥ a few pixels per level):

        z₁ = act(W₀ * y + b₀),   z_{k+1} = act(W_k * P_k z_k + V_k * y_k + b_k)   (k = 1..depth−1),
        ψ(y) = Σ_levels Σ_pixels w_l · z_(last of level l) + Σ_pixels v_out · y + ½ Σ_pixels ‖L * y‖² + (α/2)‖y‖²

    P_k is a 2×2 average pooling where `pools[k-1]` is true (the identity otherwise), y_k is y pooled to the same
    level, so deeper layers see coarser scales at a quarter of the cost per level. W_k (3×3, dilation
    `dilations[k-1]`) and the heads w_l ≥ 0 (core); W₀, V_k, v_out and L (k_L×k_L, C -> `quadratic` channels,
    initialised to the identity, so f_θ starts as y ↦ y) unconstrained: ½‖L * y‖² is convex for any L. Pooling and
    reflection padding are linear maps with non-negative coefficients, so ψ stays convex. Because ψ sums over pixels,
    f_θ = ∇ψ is (up to the pooling grid) translation-equivariant and an exact prox on whole images of every size.
    """

    def __init__(self, channels: int = 1, hidden: int = 32, depth: int = 5, dilations: tuple[int, ...] | None = None,
                 pools: tuple[bool, ...] | None = None, beta: float = 10.0, alpha: float = 0.01, quadratic: int = 4,
                 quadratic_size: int = 5) -> None:
        super().__init__()
        dilations = tuple(dilations) if dilations is not None else (1,) * (depth - 1)
        pools = tuple(bool(p) for p in pools) if pools is not None else (False,) * (depth - 1)
        if depth < 2 or len(dilations) != depth - 1 or len(pools) != depth - 1:
            raise ValueError(f"LPNConv: arguments 'dilations' and 'pools' must have depth - 1 = {depth - 1} entries, "
                             f"got {dilations} and {pools}")
        self.channels, self.hidden, self.depth, self.dilations, self.pools = channels, hidden, depth, dilations, pools
        self.beta, self.alpha, self.quadratic, self.quadratic_size = float(beta), float(alpha), quadratic, quadratic_size
        conv = lambda i, o, d=1, bias=True: nn.Conv2d(i, o, 3, padding=d, dilation=d, bias=bias,  # noqa: E731
                                                      padding_mode="reflect")
        self.first = conv(channels, hidden)
        levels = sum(pools) + 1
        self.core = nn.ModuleList([conv(hidden, hidden, d, bias=False) for d in dilations]
                                  + [nn.Conv2d(hidden, 1, 1, bias=False) for _ in range(levels)])
        self.skips = nn.ModuleList([conv(channels, hidden, d) for d in dilations]
                                   + [nn.Conv2d(channels, 1, 1, bias=False)])
        self.linear = None
        if quadratic:
            self.linear = nn.Conv2d(channels, quadratic * channels, quadratic_size, padding=quadratic_size // 2,
                                    bias=False, padding_mode="reflect")
            with torch.no_grad():  # L = identity on the first output channel of each input channel, 0 elsewhere
                self.linear.weight.zero_()
                for c in range(channels):
                    self.linear.weight[c * quadratic, c, quadratic_size // 2, quadratic_size // 2] = 1.0
        init_core_weights(self)

    def config(self) -> dict:
        return {"channels": self.channels, "hidden": self.hidden, "depth": self.depth,
                "dilations": list(self.dilations), "pools": list(self.pools), "beta": self.beta,
                "alpha": self.alpha, "quadratic": self.quadratic, "quadratic_size": self.quadratic_size}

    def widened(self, hidden: int) -> "LPNConv":
        """A copy with `hidden` ≥ self.hidden channels per layer that computes the same prox (function-preserving
        growth, to continue training a trained LPN with more capacity). The new units get fresh input weights (the
        layers' default initialisation; the paper's tiny positive core weights); their outgoing core weights and
        heads start at 0, so ψ, and hence the prox, is unchanged until training moves them. Draws from torch's
        global generator (seed it for a reproducible start)."""
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < self.hidden:
            raise ValueError(f"LPNConv.widened: argument 'hidden' must be an integer >= {self.hidden}, got {hidden!r}")
        config = {**self.config(), "hidden": hidden}
        grown = LPNConv(**config).to(self.first.weight.dtype)
        h, depth = self.hidden, len(self.dilations)
        with torch.no_grad():
            grown.first.weight[:h], grown.first.bias[:h] = self.first.weight, self.first.bias
            for k in range(depth):
                grown.core[k].weight[:, h:] = 0.0                 # new units do not feed the old ones (yet)
                grown.core[k].weight[:h, :h] = self.core[k].weight
                grown.skips[k].weight[:h], grown.skips[k].bias[:h] = self.skips[k].weight, self.skips[k].bias
            for new_head, old_head in zip(grown.core[depth:], self.core[depth:]):
                new_head.weight.zero_()
                new_head.weight[:, :h] = old_head.weight
            grown.skips[-1].weight.copy_(self.skips[-1].weight)
            if self.linear is not None:
                grown.linear.weight.copy_(self.linear.weight)
        return grown

    def _check_shape(self, y: torch.Tensor, arg: str = "y") -> None:
        smallest = max(2 ** sum(self.pools) * (max(self.dilations) + 1), self.quadratic_size // 2 + 1)
        if y.dim() != 4 or y.shape[1] != self.channels or min(y.shape[-2:]) < smallest:
            raise ValueError(f"LPNConv: argument '{arg}' must have shape (N, {self.channels}, H, W) with H, W >= "
                             f"{smallest}, got {tuple(y.shape)}")

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.softplus(t, beta=self.beta)  # noqa: E731
        pool = lambda t: F.avg_pool2d(t, 2, ceil_mode=True)  # noqa: E731
        depth = len(self.dilations)
        heads = iter(self.core[depth:])
        total = lambda t: t.flatten(1).sum(1)  # noqa: E731
        z, level_y, psi = act(self.first(y)), y, 0.0
        for core, skip, pooled in zip(self.core[:depth], self.skips[:depth], self.pools):
            if pooled:
                psi = psi + total(next(heads)(z))
                z, level_y = pool(z), pool(level_y)
            z = act(core(z) + skip(level_y))
        psi = psi + total(next(heads)(z)) + total(self.skips[-1](y))
        if self.linear is not None:
            psi = psi + 0.5 * total(self.linear(y) ** 2)
        return psi + 0.5 * self.alpha * total(y ** 2)


def init_core_weights(model: LearnedProximalNetwork, mean: float = -10.0, std: float = 0.1) -> None:
    """The paper's initialisation of the core weights: exp(N(mean, std²)) (tiny and positive, ~4.5e-5)."""
    with torch.no_grad():
        for layer in model.core:
            layer.weight.normal_(mean, std).exp_()


# --- patches ------------------------------------------------------------------------------------------------------
def prox_in_patches(model: LearnedProximalNetwork, image: torch.Tensor, stride: int | None = None,
                    batch_size: int = 256) -> torch.Tensor:
    """Apply a fixed-size LPN (`model.size`) to an image (N, C, H, W) of any size ≥ the patch: overlapping patches
    with the given stride (default half the patch), reflect-padded so that the grid covers the image, each denoised
    by `model.prox`, overlaps averaged (the paper's lpn_denoise_patch). The average of proxes of overlapping
    patches is a denoiser, not itself an exact prox."""
    _check_tensor("prox_in_patches", image, "image")
    size = getattr(model, "size", None)
    if size is None:
        raise ValueError("prox_in_patches: argument 'model' must be a fixed-size network with a 'size' (LPNPatch)")
    stride = max(1, size // 2) if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int):
        raise ValueError(f"prox_in_patches: argument 'stride' must be an integer in [1, {size}], got {stride!r}")
    if image.dim() != 4 or min(image.shape[-2:]) < size:
        raise ValueError(f"prox_in_patches: argument 'image' must have shape (N, C, H, W) with H, W >= {size}, got "
                         f"{tuple(image.shape)}")
    if not 1 <= stride <= size:
        raise ValueError(f"prox_in_patches: argument 'stride' must be in [1, {size}], got {stride}")
    n, c, h, w = image.shape
    pad_h, pad_w = (-(h - size)) % stride, (-(w - size)) % stride
    padded = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image
    hp, wp = padded.shape[-2:]
    patches = F.unfold(padded, size, stride=stride)  # (N, C·s², L)
    count = patches.shape[-1]
    patches = patches.transpose(1, 2).reshape(n * count, c, size, size)
    denoised = torch.cat([model.prox(chunk) for chunk in patches.split(batch_size)])
    denoised = denoised.reshape(n, count, c * size * size).transpose(1, 2)
    total = F.fold(denoised, (hp, wp), size, stride=stride)
    cover = F.fold(torch.ones_like(denoised[:1]), (hp, wp), size, stride=stride)
    return (total / cover)[..., :h, :w]


# --- loading ------------------------------------------------------------------------------------------------------
ARCHITECTURES = {"LPN1d": LPN1d, "LPNPatch": LPNPatch, "LPNConv": LPNConv}


def _check_layers(path: Path, architecture: str, config: dict, stored: dict[str, tuple]) -> None:
    """Compare the depth and widths of the config with those the stored tensors imply (the number of input-skip
    layers, the shape of `first.weight`) before anything is built: a corrupt config (depth 10⁶, 10⁹ channels)
    would otherwise build millions of modules, even on the meta device."""
    first = stored.get("first.weight")
    if first is None or len(first) < 2:
        raise ValueError(f"load_lpn: {path}: the stored tensors do not match its {architecture} config {config!r} "
                         f"(no 2-D or 4-D 'first.weight')")
    skips = len({key.split(".")[1] for key in stored if key.startswith("skips.")})
    implied = {"hidden": first[0], "channels": first[1], "depth": skips + (architecture == "LPN1d")}
    parameters = inspect.signature(ARCHITECTURES[architecture]).parameters
    for name, value in implied.items():
        given = config.get(name, parameters[name].default) if name in parameters else value
        if given != value or type(given) is not int:
            raise ValueError(f"load_lpn: {path}: the stored tensors do not match its {architecture} config "
                             f"{config!r} ({name} = {given!r} in the config, {value} in the stored tensors)")


def load_lpn(path: str | Path, dtype: torch.dtype = torch.float32) -> LearnedProximalNetwork:
    """Rebuild an LPN from a safetensors checkpoint written by `LearnedProximalNetwork.save` (or the training
    function); its settings (training set-up) are in `model.settings`."""
    from imaging.data import load_weights

    path = Path(path)
    tensors, settings = load_weights(path, "load_lpn")
    config = settings.get("config", {}) if isinstance(settings, dict) else None
    architecture = settings.get("architecture") if isinstance(settings, dict) else None
    if architecture not in ARCHITECTURES or not isinstance(config, dict):
        raise ValueError(f"load_lpn: {path} names architecture {architecture!r} with config {config!r}; expected "
                         f"one of {sorted(ARCHITECTURES)} and a dict of its arguments")
    # The metadata is checked against the stored tensors, first the layer counts and widths, then every shape on
    # the meta device (nothing allocated), before the network is built: a few-byte file cannot ask for gigabytes.
    stored = {key: tuple(value.shape) for key, value in tensors.items()}
    _check_layers(path, architecture, config, stored)
    try:
        with torch.device("meta"):
            skeleton = ARCHITECTURES[architecture](**config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"load_lpn: {path} has an invalid {architecture} config {config!r}: {error}") from None
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    if expected != stored:
        wrong = sorted(set(expected) ^ set(stored)) or sorted(k for k in expected if expected[k] != stored[k])
        raise ValueError(f"load_lpn: {path}: the stored tensors do not match its {architecture} config "
                         f"{config!r} (first differences: {wrong[:4]})")
    model = ARCHITECTURES[architecture](**config)
    model.load_state_dict(tensors)
    model.settings = settings
    return model.to(dtype).eval()


def pretrained_lpn(name: str = "image", dtype: torch.dtype = torch.float32) -> LearnedProximalNetwork:
    """An LPN shipped in imaging/weights/ (training settings in `model.settings`):
    - "natural": grey natural images, LPNConv with 64 channels, train400 (`scripts/train_priors.py lpn`);
    - "natural-wide": the same grown to 128 channels and trained on (`scripts/train_priors.py lpn-wide`): a better
      denoiser (+0.14 dB on Set12 at σ = 25) at three times the time and twice the memory;
    - "image": grey natural images, LPNConv, a few scikit-image pictures (examples/train_lpn.py);
    - "digits": 8×8 handwritten digits, LPNPatch;
    - "laplacian-pm" / "laplacian-l1" / "laplacian-l2": LPN1d trained on y = x + N(0, 1), x ~ Laplace(0, 1) with
      proximal matching, L1 and L2 losses."""
    from imaging.data import shipped_file

    recipe = {"natural": "lpn", "natural-wide": "lpn-wide"}.get(name)
    path = shipped_file("pretrained_lpn", SHIPPED, name,
                        f"python scripts/train_priors.py {recipe} --data ../shared/datasets/train400, then --export"
                        if recipe else f"python examples/train_lpn.py --model {name.split('-')[0]} --save")
    return load_lpn(path, dtype)
