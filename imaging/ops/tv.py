r"""Total variation: (ε-smoothed) value, gradient, Hessian-vector product, and the TV proximal operator (ROF).

Conventions, for x of shape (N, C, *S), S = (H, W) or (D, H, W), per plane (n, c):

    D x      forward differences with Neumann boundary (imaging.ops.finite_diff): no difference across the last
             row/column/slice;
    TV(x)  = Σ_voxels φ(D x),  φ(g) = sqrt(|g|² + ε²) (isotropic) or Σ_k sqrt(g_k² + ε²) (anisotropic);
             ε = 0 gives the plain TV Σ |D x| (resp. Σ_k |D_k x|), summed over pixels, not averaged;
    prox     x = argmin ½‖x − y‖² + λ TV(x)  (ε = 0), optionally with lower ≤ x ≤ upper.

The prox is solved inside the compiled op by the accelerated primal-dual method of Chambolle & Pock (2011, Alg. 2,
1-strongly convex data term): p ← proj_{|p|≤λ}(p + σ D x̄); x' = clamp((x − τ Dᵀp + τ y)/(1 + τ));
θ = 1/sqrt(1 + 2τ); x̄ = x' + θ(x' − x); τ ← θτ; σ ← σ/θ, with τ₀ = 1, σ₀ = 1/(τ₀ ‖D‖²), ‖D‖² ≤ 4·ndim.
Every 5 iterations (tol > 0; with tol = 0 it runs max_iter iterations and measures once) it evaluates the duality
gap per plane, P(x) − 𝒟(p) with
𝒟(p) = min_{lower≤x'≤upper} ½‖x' − y‖² + ⟨Dᵀp, x'⟩ (attained at x' = clamp(y − Dᵀp)), and stops when
gap ≤ tol·P(x) on every plane. The gap bounds the objective error: P(x) − P* ≤ gap.
"""
from __future__ import annotations

import math

import torch

from imaging._ext import HAS_EXT
from imaging.ops._common import check_tensor, register_not_differentiable, require_values, use_kernel
from imaging.ops.finite_diff import _finite_diff_adjoint_torch, _finite_diff_torch

_IMAGE = "(N, C, H, W) or (N, C, D, H, W)"
CHECK_EVERY = 5


# --- pure-torch references ---------------------------------------------------------------------------------------
def _potential(g: torch.Tensor, eps: float, isotropic: bool) -> torch.Tensor:
    """φ per voxel from the difference field g (N, C, ndim, *S) -> (N, C, *S)."""
    if isotropic:
        return torch.sqrt(g.abs().pow(2).sum(2) + eps ** 2)
    return torch.sqrt(g.abs().pow(2) + eps ** 2).sum(2)


def _derivative(g: torch.Tensor, eps: float, isotropic: bool) -> torch.Tensor:
    """φ'(g), with 0 where φ is not differentiable (ε = 0, g = 0)."""
    norm = torch.sqrt(g.abs().pow(2).sum(2, keepdim=True) + eps ** 2) if isotropic else torch.sqrt(g.abs().pow(2) + eps ** 2)
    return torch.where(norm > 0, g / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(g))


def _tv_torch(x: torch.Tensor, eps: float = 0.0, isotropic: bool = True) -> torch.Tensor:
    """Reference TV per plane, (N, C)."""
    return _potential(_finite_diff_torch(x), eps, isotropic).flatten(2).sum(2)


def _tv_grad_torch(x: torch.Tensor, eps: float = 0.0, isotropic: bool = True) -> torch.Tensor:
    """Reference gradient Dᵀ φ'(D x)."""
    return _finite_diff_adjoint_torch(_derivative(_finite_diff_torch(x), eps, isotropic))


def _tv_hvp_torch(x: torch.Tensor, v: torch.Tensor, eps: float, isotropic: bool = True) -> torch.Tensor:
    """Reference Hessian-vector product Dᵀ ∇²φ(D x) D v (ε > 0)."""
    g, d = _finite_diff_torch(x), _finite_diff_torch(v)
    if isotropic:
        n = torch.sqrt(g.pow(2).sum(2, keepdim=True) + eps ** 2)
        w = (d - g * (g * d).sum(2, keepdim=True) / n ** 2) / n
    else:
        w = eps ** 2 * d / torch.sqrt(g.pow(2) + eps ** 2) ** 3
    return _finite_diff_adjoint_torch(w)


def project_dual(q: torch.Tensor, lam: torch.Tensor, isotropic: bool) -> torch.Tensor:
    """Projection onto {|q| ≤ λ} per voxel; lam broadcastable as (N, C, 1, 1, ...)."""
    if isotropic:
        norm = q.abs().pow(2).sum(2, keepdim=True).sqrt()
        return q * torch.where(norm > lam, lam / torch.where(norm > 0, norm, torch.ones_like(norm)),
                               torch.ones_like(norm))
    return torch.maximum(torch.minimum(q, lam), -lam)


def _clamp(x: torch.Tensor, lower: float | None, upper: float | None) -> torch.Tensor:
    return x if lower is None and upper is None else x.clamp(lower, upper)


def _duality_gap(y, x, p, lam, isotropic, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """(gap, primal objective) per plane, (N, C) float64."""
    y64, x64, p64 = y.double(), x.double(), p.double()
    tv = _tv_torch(x64, 0.0, isotropic)
    primal = 0.5 * (x64 - y64).pow(2).flatten(2).sum(2) + lam.double().reshape(tv.shape) * tv
    u = _finite_diff_adjoint_torch(p64)
    xs = _clamp(y64 - u, lower, upper)
    dual = (0.5 * (xs - y64).pow(2) + u * xs).flatten(2).sum(2)
    return (primal - dual).clamp_min(0), primal


def _tv_prox_torch(y: torch.Tensor, lam: torch.Tensor, isotropic: bool = True, tol: float = 1e-4,
                   max_iter: int = 1000, lower: float | None = None, upper: float | None = None,
                   p0: torch.Tensor | None = None):
    """Reference of the `tv_prox` op: the same iteration in torch. Returns (x, p, relative gap (N, C), iterations)."""
    ndim = y.dim() - 2
    lam_b = lam.reshape(*lam.shape, *([1] * (ndim + 1))).to(y.dtype)
    floor = 1e-7 if y.dtype in (torch.float32, torch.complex64) else 1e-14
    p = torch.zeros(y.shape[:2] + (ndim,) + y.shape[2:], dtype=y.dtype, device=y.device)
    if p0 is not None:  # keep p0 only where differences exist, then make it feasible
        p = project_dual(p0 * _inside(y.shape[2:], y.dtype, y.device), lam_b, isotropic)
    x = _clamp(y - _finite_diff_adjoint_torch(p), lower, upper)
    xbar = x.clone()
    tau, sigma = 1.0, 1.0 / (4.0 * ndim)

    def measure():
        gap, primal = _duality_gap(y, x, p, lam, isotropic, lower, upper)
        # relative to each plane's own scale (no absolute floor: a tiny image must not "converge" far from its
        # solution); a NaN gap never counts as converged
        slack = floor * (primal.abs() + (primal - gap).abs())
        scale = torch.maximum(primal, slack)
        relative = torch.where(scale > 0, gap / scale.clamp_min(torch.finfo(torch.float64).tiny), gap)
        return relative, bool((gap <= tol * primal + slack).all())

    converged = False
    if tol > 0:  # tol = 0: a fixed number of iterations, the gap measured once at the end
        relative, converged = measure()
    iterations, measured = 0, tol > 0
    while not converged and iterations < max_iter:
        iterations += 1
        p = project_dual(p + sigma * _finite_diff_torch(xbar), lam_b, isotropic)
        theta = 1.0 / math.sqrt(1.0 + 2.0 * tau)
        x_new = _clamp((x + tau * (y - _finite_diff_adjoint_torch(p))) / (1.0 + tau), lower, upper)
        xbar = x_new + theta * (x_new - x)
        x = x_new
        tau, sigma = tau * theta, sigma / theta
        measured = tol > 0 and iterations % CHECK_EVERY == 0
        if measured:
            relative, converged = measure()
    if not measured:
        relative, _ = measure()
    return x, p, relative, torch.tensor(iterations, dtype=torch.int64)


def _inside(spatial: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Mask (ndim, *S): 1 where the forward difference along direction k exists (not on the last slice)."""
    masks = []
    for axis, size in enumerate(spatial):
        mask = torch.ones(spatial, dtype=dtype, device=device)
        mask.narrow(axis, size - 1, 1).zero_()
        masks.append(mask)
    return torch.stack(masks)


# --- public functions ----------------------------------------------------------------------------------------------
def _check_image(x: torch.Tensor, op: str, arg: str = "x") -> torch.Tensor:
    check_tensor(x, op, arg, (4, 5), _IMAGE)
    if x.is_complex():
        raise TypeError(f"{op}: argument '{arg}' must be real, got {x.dtype}")
    return x


def _check_eps(eps: float, op: str, positive: bool = False) -> float:
    if not (math.isfinite(eps) and (eps > 0 if positive else eps >= 0)):
        raise ValueError(f"{op}: argument 'eps' must be {'> 0' if positive else '>= 0'} and finite, got {eps}")
    return float(eps)


def tv(x: torch.Tensor, eps: float = 0.0, isotropic: bool = True) -> torch.Tensor:
    """(ε-smoothed) total variation of each plane, (N, C, *S) -> (N, C); differentiable (twice when ε > 0)."""
    _check_image(x, "tv")
    eps = _check_eps(eps, "tv")
    if use_kernel(x):
        value = torch.ops.imaging.tv(x.contiguous(), eps, isotropic)
    else:
        value = _tv_torch(x, eps, isotropic)
    return value + (x - x).flatten(2).sum(2)  # NaN for a plane with a NaN / inf pixel, even one no difference sees


def tv_grad(x: torch.Tensor, eps: float = 0.0, isotropic: bool = True) -> torch.Tensor:
    """Gradient of Σ tv(x): Dᵀ φ'(D x), shaped like x (ε = 0: the subgradient with φ'(0) = 0)."""
    _check_image(x, "tv_grad")
    eps = _check_eps(eps, "tv_grad")
    if use_kernel(x):
        return _keep_non_finite(torch.ops.imaging.tv_grad(x.contiguous(), eps, isotropic), x)
    return _keep_non_finite(_tv_grad_torch(x, eps, isotropic), x)


def _keep_non_finite(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """NaN where x is NaN or infinite (φ'(D x) takes 0 where |D x| is not > 0, which would hide a NaN pixel behind a
    finite gradient); elementwise, no host synchronisation."""
    return grad + (x - x)


def tv_hvp(x: torch.Tensor, v: torch.Tensor, eps: float, isotropic: bool = True) -> torch.Tensor:
    """Hessian of Σ tv(x) (ε > 0) applied to v: Dᵀ ∇²φ(D x) D v."""
    _check_image(x, "tv_hvp")
    _check_image(v, "tv_hvp", "v")
    if v.shape != x.shape:
        raise ValueError(f"tv_hvp: argument 'v' must have the shape of 'x' {tuple(x.shape)}, got {tuple(v.shape)}")
    for name, t in (("x", x), ("v", v)):  # the Hessian's weights would hide a NaN pixel behind a finite value
        require_values(t, "tv_hvp", name)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"tv_hvp: argument '{name}' has non-finite values (NaN or inf)")
    eps = _check_eps(eps, "tv_hvp", positive=True)
    if use_kernel(x):
        return torch.ops.imaging.tv_hvp(x.contiguous(), v.to(x.dtype).contiguous(), eps, isotropic)
    return _tv_hvp_torch(x, v, eps, isotropic)


def plane_weights(lam: float | torch.Tensor, y: torch.Tensor, op: str = "tv_prox") -> torch.Tensor:
    """λ as an (N, C) tensor of y's dtype and device from a number, a per-sample (N,) or a per-channel (N, C)/(1, C)."""
    n, c = y.shape[:2]
    lam_t = torch.as_tensor(lam, dtype=y.dtype, device=y.device)
    if lam_t.dim() == 1 and lam_t.numel() == n:
        lam_t = lam_t[:, None]
    try:
        lam_t = lam_t.expand(n, c)
    except RuntimeError:
        raise ValueError(f"{op}: argument 'lam' must be a number, a per-sample (N,) = ({n},) or a per-channel "
                         f"(N, C) = ({n}, {c}) tensor, got shape {tuple(lam_t.shape)}") from None
    if not torch.isfinite(lam_t).all() or (lam_t < 0).any():
        raise ValueError(f"{op}: argument 'lam' must be finite and >= 0")
    return lam_t.contiguous()


PROX_CHUNK = 2000  # compiled tv_prox iterations between two chances to handle Ctrl-C


def tv_prox(y: torch.Tensor, lam: float | torch.Tensor, isotropic: bool = True, tol: float = 1e-4,
            max_iter: int = 1000, lower: float | None = None, upper: float | None = None,
            p0: torch.Tensor | None = None):
    """TV proximal operator argmin_x ½‖x − y‖² + λ TV(x) [+ lower ≤ x ≤ upper] per plane (see module docstring).

    Returns (x, p, gap, iterations): the solution, the final dual field (N, C, ndim, *S) (pass it as `p0` to warm
    start a nearby problem), the relative duality gap per plane (N, C) float64, and the iterations done (0-d).
    Not differentiable: for learning, use the smoothed `tv`/`tv_grad`.
    """
    _check_image(y, "tv_prox", "y")
    if torch.is_grad_enabled() and (y.requires_grad or (isinstance(lam, torch.Tensor) and lam.requires_grad)):
        raise RuntimeError("tv_prox: not differentiable; detach the inputs (or use the smoothed tv / tv_grad)")
    require_values(y, "tv_prox", "y")
    scale = float(y.abs().max())  # one reduction: NaN or inf anywhere makes it non-finite
    if not math.isfinite(scale):
        raise ValueError("tv_prox: argument 'y' has non-finite values (NaN or inf)")
    lam_t = plane_weights(lam, y)
    if float(lam_t.max()) > torch.finfo(y.dtype).max / 1e6:  # the dual steps would overflow the data type
        raise ValueError(f"tv_prox: argument 'lam' ({float(lam_t.max()):.3g}) is too large for {y.dtype}; rescale "
                         f"the problem or use float64")
    if not (tol >= 0 and isinstance(max_iter, int) and max_iter >= 0):  # NaN tol fails too
        raise ValueError(f"tv_prox: arguments 'tol' and 'max_iter' must be >= 0 (max_iter an integer), got {tol} "
                         f"and {max_iter!r}")
    for name, bound in (("lower", lower), ("upper", upper)):
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"tv_prox: argument '{name}' must be a finite number or None (no bound), got {bound}")
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"tv_prox: argument 'lower' ({lower}) must be <= 'upper' ({upper})")
    if p0 is not None:
        expected = y.shape[:2] + (y.dim() - 2,) + y.shape[2:]
        if not isinstance(p0, torch.Tensor) or p0.shape != expected:
            raise ValueError(f"tv_prox: argument 'p0' must have shape {tuple(expected)}, got "
                             f"{tuple(getattr(p0, 'shape', ()))}")
        if not bool(torch.isfinite(p0).all()):
            raise ValueError("tv_prox: argument 'p0' has non-finite values (NaN or inf)")
        p0 = p0.to(y.dtype).contiguous()
    bounds = (None if lower is None else float(lower), None if upper is None else float(upper))
    if scale > 0 and not 1e-8 <= scale <= 1e8:  # far from 1: solve at unit scale (the prox is 1-homogeneous in
        # (y, λ, box), the dual field scale-free), so that the gap's rounding floor and the steps stay meaningful
        x, p, gap, iterations = tv_prox(y / scale, lam_t / scale, isotropic, tol, max_iter,
                                        *(None if b is None else b / scale for b in bounds), p0)
        return x * scale, p, gap, iterations
    if not use_kernel(y):
        return _tv_prox_torch(y, lam_t, isotropic, float(tol), int(max_iter), *bounds, p0)
    # The compiled loop runs in chunks of at most PROX_CHUNK iterations, warm-started from the previous dual field,
    # so that a very long solve stays interruptible (Ctrl-C is handled between chunks).
    y, done = y.contiguous(), 0
    while True:
        chunk = min(PROX_CHUNK, int(max_iter) - done)
        x, p0, gap, iterations = torch.ops.imaging.tv_prox(y, lam_t, isotropic, float(tol), chunk, *bounds, p0)
        done += int(iterations)
        if int(iterations) < chunk or done >= int(max_iter) or chunk == 0:
            return x, p0, gap, torch.full_like(iterations, done)


if HAS_EXT:

    @torch.library.register_fake("imaging::tv")
    def _(x, eps=0.0, isotropic=True):
        return x.new_empty(x.shape[:2])

    @torch.library.register_fake("imaging::tv_grad")
    def _(x, eps=0.0, isotropic=True):
        return torch.empty_like(x)

    @torch.library.register_fake("imaging::tv_hvp")
    def _(x, v, eps, isotropic=True):
        return torch.empty_like(x)

    @torch.library.register_fake("imaging::tv_prox")
    def _(y, lam, isotropic=True, tol=1e-4, max_iter=1000, lower=None, upper=None, p0=None):
        field = y.new_empty(y.shape[:2] + (y.dim() - 2,) + y.shape[2:])
        return (torch.empty_like(y), field, y.new_empty(y.shape[:2], dtype=torch.float64),
                y.new_empty((), dtype=torch.int64))

    def _save_x_eps_iso(ctx, inputs, output):
        x, eps, isotropic = inputs
        ctx.save_for_backward(x)
        ctx.eps, ctx.isotropic = eps, isotropic

    def _tv_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        scale = grad.reshape(grad.shape + (1,) * (x.dim() - 2))
        return scale * _keep_non_finite(torch.ops.imaging.tv_grad(x, ctx.eps, ctx.isotropic), x), None, None

    def _tv_grad_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.eps <= 0:
            raise RuntimeError("imaging::tv_grad: the plain TV (eps = 0) is not twice differentiable; use eps > 0")
        return torch.ops.imaging.tv_hvp(x, grad.contiguous(), ctx.eps, ctx.isotropic), None, None

    def _save_hvp(ctx, inputs, output):
        x, v, eps, isotropic = inputs
        ctx.save_for_backward(x, v)
        ctx.eps, ctx.isotropic = eps, isotropic

    def _tv_hvp_backward(ctx, grad):
        x, v = ctx.saved_tensors
        grad = grad.contiguous()
        grad_v = torch.ops.imaging.tv_hvp(x, grad, ctx.eps, ctx.isotropic) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:  # third derivative: by autograd through the reference
            with torch.enable_grad():
                xd = x.detach().requires_grad_()
                (grad_x,) = torch.autograd.grad(_tv_hvp_torch(xd, v.detach(), ctx.eps, ctx.isotropic), xd, grad)
        return grad_x, grad_v, None, None

    register_not_differentiable("tv_prox", "detach the inputs (or use the smoothed tv / tv_grad)")
    torch.library.register_autograd("imaging::tv", _tv_backward, setup_context=_save_x_eps_iso)
    torch.library.register_autograd("imaging::tv_grad", _tv_grad_backward, setup_context=_save_x_eps_iso)
    torch.library.register_autograd("imaging::tv_hvp", _tv_hvp_backward, setup_context=_save_hvp)
