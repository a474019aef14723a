r"""Field-of-experts regulariser as compiled ops, with conv2d-based torch references.

For images x (N, C, H, W) (each plane separately), K filters k_i (K, kh, kw) with odd sizes, weights a (K,) and
shape parameters ν (K,) > 0:

    R(x) = Σ_i a_i Σ_p φ((k_i ⋆ P x)_p; ν_i)          per plane: (N, C)

with ⋆ the correlation of `torch.nn.functional.conv2d`, P the "reflect" or "zero" padding by (kh//2, kw//2) (output
of the image's size) and the potentials φ(z; ν) = sqrt(z² + ν²) ("abs", the smoothed absolute value) or
log(1 + z²/ν²) ("student", Student-t).

- `foe_energy(x, ...)` -> (N, C);
- `foe_grad(x, ...)` = ∇_x Σ R: Σ_i a_i Pᵀ k_i ⋆ᵀ φ'(k_i ⋆ P x), fused (no K·H·W intermediate), (N, C, H, W);
- `foe_hvp(x, v, ...)` = ∇²_x Σ R · v, (N, C, H, W).

Compiled ops `imaging::foe_*` (csrc/cpu/foe.cpp, csrc/cuda/foe.cu) for float32/float64; all three are
differentiable in every argument: x-derivatives go through the compiled ops (grad -> hvp), derivatives in the
filters, weights and ν (for learning them) through the autograd of the torch reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imaging._ext import HAS_EXT
from imaging.ops._common import require_values, use_kernel

POTENTIALS = ("abs", "student")
PADDINGS = ("reflect", "zero")


def potential_value(z: torch.Tensor, nu: torch.Tensor, potential: str) -> torch.Tensor:
    """φ(z; ν) elementwise (ν broadcast against z)."""
    if potential == "abs":
        return torch.sqrt(z * z + nu * nu)
    return torch.log1p(z * z / (nu * nu))


def responses(x: torch.Tensor, filters: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Filter responses k_i ⋆ P x of every plane: (N, C, H, W) -> (N·C, K, H, W) (conv2d)."""
    N, C, H, W = x.shape
    kh, kw = filters.shape[-2:]
    planes = x.reshape(N * C, 1, H, W)
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    padded = F.pad(planes, pad, mode="reflect") if padding == "reflect" else F.pad(planes, pad)
    return F.conv2d(padded, filters[:, None])


def _foe_energy_torch(x, filters, weights, nu, potential="abs", padding="reflect"):
    z = responses(x, filters, padding)
    values = potential_value(z, nu[None, :, None, None], potential) * weights[None, :, None, None]
    return values.sum((1, 2, 3)).reshape(x.shape[0], x.shape[1])


def _differentiable(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def potential_derivatives(z: torch.Tensor, nu: torch.Tensor, potential: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(φ'(z), φ''(z)) in closed form, as the kernels compute them (autograd's second derivative of sqrt(z² + ν²)
    cancels catastrophically when ν ≪ |z|)."""
    nu2 = nu * nu
    s = z * z + nu2
    if potential == "abs":
        root = torch.sqrt(s)
        return z / root, nu2 / (s * root)
    return 2 * z / s, 2 * (nu2 - z * z) / (s * s)


def _adjoint_responses(t: torch.Tensor, like: torch.Tensor, filters: torch.Tensor, padding: str,
                       graph: bool) -> torch.Tensor:
    """Σ_i P^T k_i^T t_i: the adjoint of `responses` (linear in x: its gradient at 0, exact), (N, C, H, W)."""
    with torch.enable_grad():
        zero = torch.zeros_like(like).requires_grad_()
        return torch.autograd.grad(responses(zero, filters, padding), zero, t, create_graph=graph)[0]


def _foe_grad_torch(x, filters, weights, nu, potential="abs", padding="reflect"):
    """∇_x R = Σ_i a_i P^T k_i^T φ'(k_i ⋆ P x), with φ' in closed form (differentiable when an input requires
    grad)."""
    graph = _differentiable(x, filters, weights, nu)
    with torch.set_grad_enabled(graph):
        z = responses(x, filters, padding)
        t = weights[None, :, None, None] * potential_derivatives(z, nu[None, :, None, None], potential)[0]
        grad = _adjoint_responses(t, x, filters, padding, graph)
    return grad if graph else grad.detach()


def _foe_hvp_torch(x, v, filters, weights, nu, potential="abs", padding="reflect"):
    """∇²_x R · v = Σ_i a_i P^T k_i^T (φ''(k_i ⋆ P x) · k_i ⋆ P v), φ'' in closed form."""
    graph = _differentiable(x, v, filters, weights, nu)
    with torch.set_grad_enabled(graph):
        z = responses(x, filters, padding)
        curvature = potential_derivatives(z, nu[None, :, None, None], potential)[1]
        t = weights[None, :, None, None] * curvature * responses(v, filters, padding)
        hvp = _adjoint_responses(t, x, filters, padding, graph)
    return hvp if graph else hvp.detach()


def check_foe(op: str, x: object, filters: object, weights: object, nu: object, potential: str, padding: str,
              v: object = None) -> None:
    """Raise a clear error for arguments the FoE ops cannot take (shapes, dtypes, devices, ν <= 0, NaN)."""
    named = {"x": x, "filters": filters, "weights": weights, "nu": nu, **({"v": v} if v is not None else {})}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: argument '{name}' must be a floating tensor, got {t.dtype}")
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(f"{op}: argument '{name}' must have x's dtype {x.dtype} and device {x.device}, "
                            f"got {t.dtype} on {t.device}")
        require_values(t, op, name)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: argument '{name}' has non-finite values (NaN or inf)")
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(f"{op}: argument 'x' must be a non-empty tensor of shape (N, C, H, W), got {tuple(x.shape)}")
    if v is not None and v.shape != x.shape:
        raise ValueError(f"{op}: argument 'v' must have x's shape {tuple(x.shape)}, got {tuple(v.shape)}")
    if filters.dim() != 3 or filters.shape[1] % 2 == 0 or filters.shape[2] % 2 == 0:
        raise ValueError(f"{op}: argument 'filters' must have shape (K, kh, kw) with odd kh and kw, "
                         f"got {tuple(filters.shape)}")
    K = filters.shape[0]
    for name, t in (("weights", weights), ("nu", nu)):
        if t.shape != (K,):
            raise ValueError(f"{op}: argument '{name}' must have shape (K,) = ({K},), got {tuple(t.shape)}")
    if not bool((nu > 0).all()):
        raise ValueError(f"{op}: argument 'nu' must be positive, got min {float(nu.min()):.3g}")
    info = torch.finfo(nu.dtype)
    if not bool(((nu * nu >= info.tiny) & (nu * nu <= info.max)).all()):  # the potentials divide by ν²
        raise ValueError(f"{op}: argument 'nu' must have ν² representable in {nu.dtype} (ν between "
                         f"{info.tiny ** 0.5:.3g} and {info.max ** 0.5:.3g}), got min {float(nu.min()):.3g}, max "
                         f"{float(nu.max()):.3g}; rescale the image or use float64")
    if potential not in POTENTIALS:
        raise ValueError(f"{op}: argument 'potential' must be one of {POTENTIALS}, got {potential!r}")
    if padding not in PADDINGS:
        raise ValueError(f"{op}: argument 'padding' must be one of {PADDINGS}, got {padding!r}")
    kh, kw = filters.shape[1:]
    if padding == "reflect" and (kh // 2 >= x.shape[2] or kw // 2 >= x.shape[3]):
        raise ValueError(f"{op}: reflect padding by ({kh // 2}, {kw // 2}) needs images larger than that, got "
                         f"{tuple(x.shape)}")


def _args(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.contiguous() for t in tensors]


def foe_energy(x: torch.Tensor, filters: torch.Tensor, weights: torch.Tensor, nu: torch.Tensor,
               potential: str = "abs", padding: str = "reflect") -> torch.Tensor:
    """R(x) per plane, (N, C, H, W) -> (N, C)."""
    check_foe("foe_energy", x, filters, weights, nu, potential, padding)
    if use_kernel(x):
        return torch.ops.imaging.foe_energy(*_args(x, filters, weights, nu), potential, padding)
    return _foe_energy_torch(x, filters, weights, nu, potential, padding)


def foe_grad(x: torch.Tensor, filters: torch.Tensor, weights: torch.Tensor, nu: torch.Tensor,
             potential: str = "abs", padding: str = "reflect") -> torch.Tensor:
    """∇_x Σ R(x), (N, C, H, W)."""
    check_foe("foe_grad", x, filters, weights, nu, potential, padding)
    if use_kernel(x):
        return torch.ops.imaging.foe_grad(*_args(x, filters, weights, nu), potential, padding)
    return _foe_grad_torch(x, filters, weights, nu, potential, padding)


def foe_hvp(x: torch.Tensor, v: torch.Tensor, filters: torch.Tensor, weights: torch.Tensor, nu: torch.Tensor,
            potential: str = "abs", padding: str = "reflect") -> torch.Tensor:
    """∇²_x Σ R(x) · v, (N, C, H, W)."""
    check_foe("foe_hvp", x, filters, weights, nu, potential, padding, v=v)
    if use_kernel(x):
        return torch.ops.imaging.foe_hvp(*_args(x, v, filters, weights, nu), potential, padding)
    return _foe_hvp_torch(x, v, filters, weights, nu, potential, padding)


if HAS_EXT:

    @torch.library.register_fake("imaging::foe_energy")
    def _(x, filters, weights, nu, potential="abs", padding="reflect"):
        return x.new_empty(x.shape[0], x.shape[1])

    @torch.library.register_fake("imaging::foe_grad")
    def _(x, filters, weights, nu, potential="abs", padding="reflect"):
        return torch.empty_like(x)

    @torch.library.register_fake("imaging::foe_hvp")
    def _(x, v, filters, weights, nu, potential="abs", padding="reflect"):
        return torch.empty_like(x)

    def _options(inputs: tuple, first_option: int) -> tuple[str, str]:
        rest = tuple(inputs[first_option:]) + ("abs", "reflect")[len(inputs) - first_option:]
        return rest[0], rest[1]

    def _save(ctx, inputs, output) -> None:
        ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))
        ctx.first_option = sum(isinstance(t, torch.Tensor) for t in inputs)
        ctx.options = _options(inputs, ctx.first_option)

    def _parameter_grads(ctx, reference, tensors, grad, first_param):
        """Gradients in the filters, weights and ν (and any tensor from index first_param) through the autograd of
        the torch reference; None for those that do not require them."""
        needs = tuple(ctx.needs_input_grad) + (False,) * 8
        wanted = [i for i in range(first_param, len(tensors)) if needs[i]]
        if not wanted:
            return [None] * (len(tensors) - first_param)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(i in wanted) for i, t in enumerate(tensors)]
            out = reference(*leaves, *ctx.options)
            found = torch.autograd.grad(out, [leaves[i] for i in wanted], grad)
        result = dict(zip(wanted, found))
        return [result.get(i) for i in range(first_param, len(tensors))]

    def _energy_backward(ctx, grad):
        x, filters, weights, nu = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad[:, :, None, None] * torch.ops.imaging.foe_grad(x, filters, weights, nu, *ctx.options)
        params = _parameter_grads(ctx, _foe_energy_torch, (x, filters, weights, nu), grad, 1)
        return (grad_x, *params, *([None] * (6 - ctx.first_option)))[:6]

    def _grad_backward(ctx, grad):
        x, filters, weights, nu = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:  # the Hessian is symmetric
            grad_x = torch.ops.imaging.foe_hvp(x, grad.contiguous(), filters, weights, nu, *ctx.options)
        params = _parameter_grads(ctx, _foe_grad_torch, (x, filters, weights, nu), grad, 1)
        return (grad_x, *params, *([None] * (6 - ctx.first_option)))[:6]

    def _hvp_backward(ctx, grad):
        x, v, filters, weights, nu = ctx.saved_tensors
        grad_v = None
        if ctx.needs_input_grad[1]:
            grad_v = torch.ops.imaging.foe_hvp(x, grad.contiguous(), filters, weights, nu, *ctx.options)
        needs_x = ctx.needs_input_grad[0]
        rest = _parameter_grads(ctx, _foe_hvp_torch, (x, v, filters, weights, nu), grad, 2)
        grad_x = None
        if needs_x:  # third derivative: through the reference
            with torch.enable_grad():
                x_ = x.detach().requires_grad_()
                grad_x = torch.autograd.grad(_foe_hvp_torch(x_, v, filters, weights, nu, *ctx.options), x_, grad)[0]
        return (grad_x, grad_v, *rest, *([None] * (7 - ctx.first_option)))[:7]

    torch.library.register_autograd("imaging::foe_energy", _energy_backward, setup_context=_save)
    torch.library.register_autograd("imaging::foe_grad", _grad_backward, setup_context=_save)
    torch.library.register_autograd("imaging::foe_hvp", _hvp_backward, setup_context=_save)
