r"""The forward-operator abstraction: `Operator` (possibly nonlinear) and `LinearOperator`.

Conventions: tensors carry the batch in dim 0; images are (N, C, H, W). Operators are `nn.Module`s, so masks,
kernels and matrices are buffers and `.to(device)` moves them.

A `LinearOperator` subclass needs only `forward`. Its adjoint is then derived by autograd: for a linear map A,
the vector-Jacobian product at any point with cotangent y is exactly A^H y (for real-to-complex maps, the adjoint
for the real inner product Re<., .>). The input shape it needs comes from the call: the operator remembers the
input shape of each output shape it produced, and otherwise tries a shape-preserving map.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import nn


def _describe(op: nn.Module) -> str:
    return type(op).__name__


def check_input(op: nn.Module, x: object, arg: str = "x") -> torch.Tensor:
    """Raise a clear error unless `x` is a non-empty floating/complex tensor on the operator's device."""
    name = _describe(op)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: argument '{arg}' must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name}: argument '{arg}' must be a floating or complex tensor, got {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"{name}: argument '{arg}' must be a non-empty tensor with a batch dim, got {tuple(x.shape)}")
    device = next((t.device for t in _tensors(op)), None)
    if device is not None and device != x.device:
        raise ValueError(f"{name}: argument '{arg}' is on {x.device} but the operator's buffers are on {device}; "
                         f"move one of them (op.to({str(x.device)!r}))")
    return x


MAX_SIDE = 2 ** 31  # the largest size, side, count or factor that operators and kernel builders accept


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_size(value: object, who: str, arg: str) -> int:
    """`value` as an int when it is an integer from 1 to 2**31 (a size, a side, a count), else a ValueError naming
    the argument (an absurd int would otherwise fail deep in torch with an overflow)."""
    if not (_is_int(value) and 1 <= value <= MAX_SIDE):
        raise ValueError(f"{who}: argument '{arg}' must be a positive integer up to 2**31, got {value!r}")
    return int(value)


def check_shape(shape: object, who: str, arg: str, length: int | None = None, what: str = "",
                allow_empty: bool = False) -> tuple[int, ...]:
    """`shape` as a tuple of ints from 1 to 2**31 (`length` of them when given) with at most 2**62 entries in all,
    else a ValueError naming the argument; `what` describes it in the message, e.g. " (H, W)"."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or (length is not None and len(dims) != length) or (not dims and not allow_empty) or \
            not all(_is_int(n) and 1 <= n <= MAX_SIDE for n in dims) or math.prod(dims) > 2 ** 62:
        count = f"{length} " if length is not None else ""
        raise ValueError(f"{who}: argument '{arg}' must be a tuple of {count}positive integers up to 2**31{what}, got "
                         f"{shape!r}")
    return tuple(int(n) for n in dims)


def check_linearity(A: nn.Module, like: torch.Tensor, who: str,
                    hint: str = "subclass Operator for a nonlinear model") -> None:
    """Once per operator, input shape and state of its tensors: A(a x + b x') = a A x + b A x' at two random points
    (3 applications of A), else a ValueError naming the operator: a `LinearOperator` whose forward is not linear
    would otherwise give a silently wrong answer (its derived adjoint is a gradient at 0). The same probe (points,
    tolerance, cache key) as the solvers' check, without importing a layer above the operators."""
    key = (tuple(like.shape), like.dtype, tensor_state(A))
    checked = A.__dict__.setdefault("_linearity_checked", set())
    if key in checked:
        return
    tolerance = 1e-6 if like.real.dtype == torch.float64 else 1e-3
    x = torch.randn(like.shape, dtype=like.dtype, generator=torch.Generator().manual_seed(0)).to(like.device)
    other = torch.randn(like.shape, dtype=like.dtype, generator=torch.Generator().manual_seed(2)).to(like.device)
    a, b = 0.7, -1.3
    with torch.no_grad():
        ax, ao = A(x), A(other)
        mixed = A(a * x + b * other)
    if not all(bool(torch.isfinite(t).all()) for t in (ax, ao, mixed)):
        return  # no verdict: the values overflow (or A returns NaN), which the callers' own checks report
    scale = abs(a) * _norm64(ax) + abs(b) * _norm64(ao)  # norms in float64: a float32 sum of squares overflows
    error = _norm64(mixed - a * ax - b * ao) / scale if scale > 0 else 0.0
    if not error <= tolerance:
        raise ValueError(f"{who}: the operator {type(A).__name__} is a LinearOperator but its forward is not linear "
                         f"(relative error {error:.2g} of A(a x + b x') = a A x + b A x' at random points); {hint}")
    checked.add(key)


def _tensors(op: nn.Module):
    yield from op.parameters()
    yield from op.buffers()


def tensor_state(op: nn.Module) -> tuple:
    """(data pointer, version) of each of the module's parameters and buffers: it changes when one is replaced or
    modified in place, so values cached per operator (its norm, its linearity check) know when to recompute."""
    return tuple((t.data_ptr(), t._version) for t in _tensors(op))


def _norm64(t: torch.Tensor) -> float:
    """‖t‖ computed in double precision (a float32 sum of squares overflows from entries of about 1e19)."""
    return torch.linalg.vector_norm(t.to(torch.complex128 if t.is_complex() else torch.float64)).item()


def _brief(value: object) -> str:
    """A short description of a parameter for an operator's repr (tensors by shape and dtype)."""
    if isinstance(value, torch.Tensor):
        dtype = "" if value.dtype == torch.float32 else f", {str(value.dtype).replace('torch.', '')}"
        return f"tensor({', '.join(map(str, value.shape))}{dtype})" if value.dim() else f"{value.item():.4g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


class Operator(nn.Module):
    """A forward model x -> A(x), possibly nonlinear. Subclasses implement `forward`.

    `vjp(x, v)` = J_A(x)^H v and `jvp(x, u)` = J_A(x) u come from autograd.
    Operators compose with `@` (A @ B = A∘B), add with `+`/`-` and scale by numbers. The repr shows the
    constructor's arguments that the operator keeps as attributes of the same name (tensors by shape).
    """

    def extra_repr(self) -> str:
        import inspect

        try:
            parameters = inspect.signature(type(self).__init__).parameters
        except (TypeError, ValueError):
            return ""
        parts = []
        for name, parameter in parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if name in self._modules or not hasattr(self, name):
                continue
            value = getattr(self, name)
            if name == "in_shape" and value is None:
                continue
            if isinstance(value, nn.Module) or (callable(value) and not isinstance(value, torch.Tensor)):
                continue
            parts.append(f"{name}={_brief(value)}")
        return ", ".join(parts)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        check_input(self, x)
        return super().__call__(x, *args, **kwargs)

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector-Jacobian product J_A(x)^H v (by autograd)."""
        create_graph = torch.is_grad_enabled() and (v.requires_grad or x.requires_grad)
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True) if not create_graph else x.clone().requires_grad_(True)
            out = self(xd)
            if out.shape != v.shape:
                raise ValueError(f"{_describe(self)}.vjp: argument 'v' must have the output shape "
                                 f"{tuple(out.shape)}, got {tuple(v.shape)}")
            (grad,) = torch.autograd.grad(out, xd, grad_outputs=v, create_graph=create_graph)
        return grad

    def jvp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Jacobian-vector product J_A(x) u (by the double-vjp trick, so custom ops need only backward)."""
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            out = self(xd)
            w = torch.zeros_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, xd, grad_outputs=w, create_graph=True)
            (ju,) = torch.autograd.grad(g, w, grad_outputs=u)
        return ju

    # --- algebra ---------------------------------------------------------------------------------------------
    def __matmul__(self, other):
        if isinstance(other, torch.Tensor):
            return self(other)
        if not isinstance(other, Operator):
            return NotImplemented
        linear = isinstance(self, LinearOperator) and isinstance(other, LinearOperator)
        return LinearComposition(self, other) if linear else Composition(self, other)

    def __add__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        linear = isinstance(self, LinearOperator) and isinstance(other, LinearOperator)
        return LinearSum(self, other) if linear else Sum(self, other)

    def __sub__(self, other):
        if not isinstance(other, Operator):
            return NotImplemented
        return self + (-other)

    def __mul__(self, scale):
        if not isinstance(scale, numbers.Number):
            return NotImplemented
        linear = isinstance(self, LinearOperator)
        return LinearScaledOperator(self, scale) if linear else ScaledOperator(self, scale)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0


class LinearOperator(Operator):
    """A linear forward model A with adjoint A^H.

    Subclasses implement `forward`; `adjoint` defaults to the autograd-derived one (exact for linear maps) and may
    be overridden with a closed form. Also: `.H` (the adjoint as an operator), `normal` (A^H A),
    `norm` (‖A‖₂ by power iteration) and `pinv` (least squares / pseudo-inverse by conjugate gradient).
    """

    in_shape: tuple[int, ...] | None = None  # the per-sample input shape, when declared

    def __init__(self, in_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if in_shape is not None:
            self.in_shape = check_shape(in_shape, type(self).__name__, "in_shape",
                                        what=" (the input shape without the batch dimension)", allow_empty=True)
        self._input_shapes: dict[tuple[int, ...], dict[tuple[int, ...], bool]] = {}
        self._norms: dict[tuple, float] = {}

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = super().__call__(x, *args, **kwargs)
        self._shape_memory().setdefault(tuple(out.shape[1:]), {})[tuple(x.shape[1:])] = x.is_complex()
        return out

    def _remembered_input(self, y: torch.Tensor) -> tuple[tuple[int, ...], bool] | None:
        """(input shape, complex) for outputs shaped like `y`: the declared `in_shape`, else the one input shape
        this operator was applied to that gave such outputs; None when none was seen. Two different input shapes
        with outputs of y's shape (e.g. a 2× down-sampling of 64² and of 63² images) are ambiguous: an error, not a
        guess."""
        key = tuple(y.shape[1:])
        seen = self._shape_memory().get(key, {})
        if self.in_shape is not None:
            return tuple(self.in_shape), seen.get(tuple(self.in_shape), y.is_complex())
        if len(seen) > 1:
            shapes = " and ".join(str(shape) for shape in seen)
            raise ValueError(f"{_describe(self)}: inputs of shapes {shapes} both give outputs of shape {key}, so "
                             f"the input shape of y is ambiguous; declare it: op.in_shape = (C, H, W) (custom "
                             f"operators: super().__init__(in_shape=...))")
        return next(iter(seen.items()), None)

    def _shape_memory(self) -> dict:
        # Subclasses that define __init__ without calling LinearOperator.__init__ still work.
        if "_input_shapes" not in self.__dict__:
            self.__dict__["_input_shapes"] = {}
        return self.__dict__["_input_shapes"]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^H y, derived by autograd from `forward` (override with a closed form where one exists)."""
        check_input(self, y, "y")
        in_shape, in_complex = self._input_for(y)
        dtype = _with_complexity(y.dtype, in_complex)
        create_graph = torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in self.parameters()))
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *in_shape), dtype=dtype, device=y.device, requires_grad=True)
            out = self(x)
            if out.shape != y.shape:
                declared = f" (the output of its in_shape {tuple(self.in_shape)})" if self.in_shape is not None else ""
                raise ValueError(f"{_describe(self)}.adjoint: argument 'y' must have the operator's output shape "
                                 f"{tuple(out.shape)}{declared}, got {tuple(y.shape)}")
            if not out.requires_grad:
                raise RuntimeError(f"{_describe(self)}.adjoint: forward is not differentiable by autograd, so its "
                                   f"adjoint cannot be derived; implement adjoint(y)")
            if y.is_complex() and not out.is_complex():  # real map applied to complex data: act on Re and Im
                re, im = torch.autograd.grad(out, x, grad_outputs=y.real, create_graph=create_graph, retain_graph=True), \
                    torch.autograd.grad(out, x, grad_outputs=y.imag, create_graph=create_graph)
                return torch.complex(re[0], im[0])
            (grad,) = torch.autograd.grad(out, x, grad_outputs=y.to(out.dtype), create_graph=create_graph)
        return grad

    def _input_for(self, y: torch.Tensor) -> tuple[tuple[int, ...], bool]:
        """The input shape (without batch) and complexity that produce outputs shaped like `y`."""
        key = tuple(y.shape[1:])
        remembered = self._remembered_input(y)
        if remembered is not None:
            return remembered
        # Not seen yet: try a shape-preserving map (denoising, blur, masks, Fourier...).
        try:
            with torch.no_grad():
                out = self(torch.zeros_like(y))
        except Exception:  # noqa: BLE001 - any failure means "not shape preserving"
            out = None
        if out is not None and out.shape == y.shape:
            return key, y.is_complex()
        raise ValueError(f"{_describe(self)}.adjoint: cannot tell the input shape for outputs of shape {key}; "
                         f"apply the operator once to an input (op(x)) or implement adjoint(y)")

    @property
    def H(self) -> "LinearOperator":
        """The adjoint A^H as a LinearOperator."""
        return Adjoint(self)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        return self.adjoint(self(x))

    def norm(self, x: torch.Tensor, max_iter: int = 100, tol: float = 1e-6, seed: int = 0) -> float:
        """Spectral norm ‖A‖₂ = sqrt(λ_max(A^H A)) on inputs shaped like `x`, by power iteration, cached until the
        operator's tensors change.

        Each step normalises A v before applying A^H, so λ = ‖A v‖·‖A^H(A v/‖A v‖)‖ is formed in float64 and does
        not overflow the data type (‖A‖ up to ~1e38 in float32); a non-finite ‖A v‖ is an error naming the
        operator. With a batch, the operator acts block-diagonally, so this is the largest norm over the batch.
        """
        key = (tuple(x.shape), x.dtype, x.device, tensor_state(self))
        if key in self._norm_cache():
            return self._norm_cache()[key]
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        v = v / torch.linalg.vector_norm(v)
        value = 0.0
        with torch.no_grad():
            for _ in range(max_iter):
                u = self(v)
                a = _norm64(u)
                if a == 0.0:
                    value = 0.0
                    break
                w = self.adjoint(u / a)
                b = _norm64(w)
                if not (math.isfinite(a) and math.isfinite(b)):
                    raise FloatingPointError(f"{_describe(self)}.norm: ‖A v‖ or ‖Aᴴ A v‖ is not finite on inputs "
                                             f"{tuple(x.shape)} in {x.dtype}: the operator returns non-finite values "
                                             f"or overflows this precision")
                new_value = a * b
                if new_value == 0.0:
                    value = 0.0
                    break
                v = w / b
                converged = abs(new_value - value) <= tol * new_value
                value = new_value
                if converged:
                    break
        self._norm_cache().clear()  # one entry per input shape of the current tensors
        self._norm_cache()[key] = value ** 0.5
        return value ** 0.5

    def _norm_cache(self) -> dict:
        if "_norms" not in self.__dict__:
            self.__dict__["_norms"] = {}
        return self.__dict__["_norms"]

    def svd(self, like: torch.Tensor):
        """A = U diag(s) Vᴴ in closed form for images shaped like `like` (`imaging.operators.svd.SVD`), for
        solvers that work in A's spectral coordinates (DDRM). Operators with a known decomposition override it:
        Identity, Inpainting, Blur(mode="circular"), Downsampling(filter="box"), StructuredCompressedSensing."""
        raise NotImplementedError(
            f"{type(self).__name__} has no singular value decomposition in closed form (svd); the operators that "
            f"have one: Identity, Inpainting, Blur(mode='circular'), Downsampling(filter='box'), "
            f"StructuredCompressedSensing, or implement svd(like) returning an imaging.operators.svd.SVD")

    def pinv(self, y: torch.Tensor, *, x0: torch.Tensor | None = None, tol: float = 1e-6, max_iter: int = 100,
             warn: bool = True) -> torch.Tensor:
        """Least-squares solution of A x = y (of minimum norm from x0 = None) by the conjugate gradient
        (`imaging.linalg`) on AᴴA x = Aᴴy, to ‖AᴴA x − Aᴴy‖ ≤ tol ‖Aᴴy‖ per sample; a `ConvergenceWarning` when
        max_iter ends it first (unless `warn` is False). The operator's linearity is checked once (`check_linearity`),
        and a ‖Aᴴy‖² that overflows the precision is an error (it would stop the CG at x = 0)."""
        import warnings

        from imaging.linalg import ConvergenceWarning, batch_dot, check_finite, conjugate_gradient

        who = f"{type(self).__name__}.pinv"
        check_finite(y, who, "y")
        if x0 is not None:
            check_finite(x0, who, "x0")
            try:
                self(x0)  # lets operators with autograd-derived adjoints learn their input shape
            except (ValueError, RuntimeError) as error:
                raise ValueError(f"{who}: argument 'x0' of shape {tuple(x0.shape)} is not an input of the operator: "
                                 f"{error}") from error
        rhs = self.adjoint(y)
        if x0 is not None and x0.shape != rhs.shape:
            raise ValueError(f"{who}: argument 'x0' must have the shape of Aᴴy {tuple(rhs.shape)}, got "
                             f"{tuple(x0.shape)}")
        like = x0 if x0 is not None else rhs
        check_linearity(self, like.real if like.is_complex() else like, who)
        if not bool(torch.isfinite(rhs).all()):
            raise FloatingPointError(f"{who}: Aᴴy has non-finite values in {rhs.dtype}: the operator returns "
                                     f"non-finite values or overflows this precision; rescale A (and y) or use float64")
        if not bool(torch.isfinite(batch_dot(rhs, rhs)).all()):
            raise FloatingPointError(f"{who}: ‖Aᴴy‖² overflows {rhs.dtype}: the scale of A and y is too large for this "
                                     f"precision (the CG would stop at x = 0); rescale A (and y) or use float64")
        result = conjugate_gradient(self.normal, rhs, x0, tol=tol, max_iter=max_iter)
        if warn and not bool(result.converged.all()):
            warnings.warn(f"{type(self).__name__}.pinv: stopped by max_iter={max_iter} before its stopping rule was "
                          f"met: residual {float(result.residual.max()):.3g} > tol {tol:g}", ConvergenceWarning,
                          stacklevel=2)
        return result.x


def _with_complexity(dtype: torch.dtype, complex_: bool) -> torch.dtype:
    """`dtype`'s precision, complex or real as asked."""
    real = torch.empty((), dtype=dtype).real.dtype
    return torch.complex(torch.empty((), dtype=real), torch.empty((), dtype=real)).dtype if complex_ else real


class Identity(LinearOperator):
    """A x = x (denoising)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_input(self, y, "y")
        return y

    def svd(self, like: torch.Tensor):
        from imaging.operators.svd import identity_basis

        return identity_basis(like.new_ones(()).real, lambda y: y)


class Adjoint(LinearOperator):
    """The adjoint A^H of a LinearOperator A, as an operator; `.H` gives A back."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__()
        self.op = op

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(y)

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    @property
    def H(self) -> LinearOperator:
        return self.op


class Composition(Operator):
    """(A @ B)(x) = A(B(x)) for operators A, B (`LinearComposition` when both are linear)."""

    def __init__(self, outer: Operator, inner: Operator) -> None:
        super().__init__()
        self.outer, self.inner = outer, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))


class LinearComposition(Composition, LinearOperator):
    """(A @ B)^H = B^H A^H."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        LinearOperator.__init__(self)
        self.outer, self.inner = outer, inner

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class Sum(Operator):
    """(A + B)(x) = A(x) + B(x) (`LinearSum` when both are linear)."""

    def __init__(self, first: Operator, second: Operator) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(x) + self.second(x)


class LinearSum(Sum, LinearOperator):
    """(A + B)^H = A^H + B^H."""

    def __init__(self, first: LinearOperator, second: LinearOperator) -> None:
        LinearOperator.__init__(self)
        self.first, self.second = first, second

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.first.adjoint(y) + self.second.adjoint(y)


class ScaledOperator(Operator):
    """(c A)(x) = c A(x) for a real or complex number c (`LinearScaledOperator` when A is linear)."""

    def __init__(self, op: Operator, scale: complex) -> None:
        super().__init__()
        self.op, self.scale = op, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op(x)


class LinearScaledOperator(ScaledOperator, LinearOperator):
    """(c A)^H = conj(c) A^H."""

    def __init__(self, op: LinearOperator, scale: complex) -> None:
        LinearOperator.__init__(self)
        self.op, self.scale = op, scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale.conjugate() * self.op.adjoint(y)


class FunctionOperator(LinearOperator):
    """Wrap plain functions as a LinearOperator: `FunctionOperator(forward_fn, adjoint_fn=None)`."""

    def __init__(self, forward_fn: Callable[[torch.Tensor], torch.Tensor],
                 adjoint_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.forward_fn, self.adjoint_fn = forward_fn, adjoint_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.adjoint_fn(y) if self.adjoint_fn is not None else super().adjoint(y)
