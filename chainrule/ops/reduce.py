"""Reductions and the fused softmax family (fused for numerical stability: max subtraction)."""
import numpy as np

from chainrule.autograd import Function
from chainrule.errors import ArgumentError, dim_error
from chainrule.ops import dual


def reduce_args(op, ndim, dim, keepdim, axis=None, keepdims=None):
    """Normalise PyTorch's dim/keepdim (or NumPy's axis/keepdims) to (sorted axes or None, bool)."""
    if axis is not None:
        if dim is not None:
            raise ArgumentError(f"{op}: give dim or axis, not both")
        dim = axis
    if keepdims is not None:
        keepdim = keepdims
    if dim is None:
        return None, bool(keepdim)
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return tuple(sorted(normalize_dim(op, d, ndim) for d in dims)), bool(keepdim)


def normalize_dim(op, dim, ndim):
    n = max(ndim, 1)
    if not isinstance(dim, (int, np.integer)) or not -n <= dim < n:
        raise dim_error(op, dim, ndim)
    return int(dim) % n


def kept_shape(shape, axes):
    """`shape` with the reduced axes set to 1 (all of them when axes is None)."""
    if axes is None:
        return (1,) * len(shape)
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape, ctx.axes = x.shape, axes
        return np.sum(x, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        return dual.expand(grad.reshape(kept_shape(ctx.shape, ctx.axes)), ctx.shape)


class Amax(Function):
    """max over axes; tied maxima share the gradient equally (as PyTorch's amax)."""
    pick = staticmethod(np.max)

    @classmethod
    def forward(cls, ctx, x, axes, keepdim):
        m = cls.pick(x, axis=axes, keepdims=True)
        ctx.save_for_backward(x, m)
        ctx.axes = axes
        return _dropped(m, axes, keepdim)

    @staticmethod
    def backward(ctx, grad):
        x, m = ctx.saved_tensors
        hit = dual.astype(x == m, grad.dtype)
        g = grad.reshape(m.shape)
        return g * hit / hit.sum(axis=ctx.axes, keepdims=True)


class Amin(Amax):
    pick = staticmethod(np.min)


class Prod(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        out = np.prod(x, axis=axes, keepdims=True)
        ctx.save_for_backward(x, out)
        ctx.axes = axes
        return _dropped(out, axes, keepdim)

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        g = grad.reshape(out.shape)
        if isinstance(x, np.ndarray):
            return g * _prod_of_others(x, ctx.axes)
        # create_graph: a formula in Tensor ops (exact while no element is zero)
        return g * x.prod(ctx.axes, keepdim=True) / x



def _dropped(m, axes, keepdim):
    """The keepdim=True result `m` reshaped to the keepdim=False shape, if asked."""
    if keepdim:
        return m
    return m.reshape(() if axes is None else tuple(n for i, n in enumerate(m.shape) if i not in axes))


def _prod_of_others(x, axes):
    """For each element, the product of the other elements along `axes` (zeros allowed)."""
    axes = tuple(range(x.ndim)) if axes is None else axes
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return np.moveaxis((before * after).reshape(moved.shape),
                       tuple(range(x.ndim - len(axes), x.ndim)), axes)


def _stable_max(x, axes):
    """Row max for shifting, with -inf/inf rows replaced by 0 so all -inf rows stay -inf, not NaN."""
    m = np.max(x, axis=axes, keepdims=True)
    return np.where(np.isfinite(m), m, 0) if not np.isfinite(m).all() else m


class Logsumexp(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        m = _stable_max(x, axes)
        with np.errstate(divide="ignore"):
            out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, out)
        ctx.axes = axes
        return _dropped(out, axes, keepdim)

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        if not isinstance(x, np.ndarray):  # create_graph: `out` must stay connected to x
            out = x.logsumexp(ctx.axes, keepdim=True)
        return grad.reshape(out.shape) * dual.exp(x - out)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        e = np.exp(x - _stable_max(x, axis))
        y = e / np.sum(e, axis=axis, keepdims=True)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        gy = grad * y
        return gy - y * gy.sum(axis=ctx.axis, keepdims=True)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        z = x - _stable_max(x, axis)
        with np.errstate(divide="ignore"):
            y = z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad - dual.exp(y) * grad.sum(axis=ctx.axis, keepdims=True)


def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    axes, keep = reduce_args("sum", x.ndim, dim, keepdim, axis, keepdims)
    return Sum.apply(x, axes, keep)


def _reducer(cls, name):
    def reduce(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
        axes, keep = reduce_args(name, x.ndim, dim, keepdim, axis, keepdims)
        if x.data.size == 0 and cls in (Amax, Amin):
            raise ArgumentError(f"{name}: cannot reduce an empty tensor of shape {x.shape}")
        return cls.apply(x, axes, keep)
    reduce.__name__ = name
    reduce.__doc__ = f"{name} over `dim` (all dims when None), keeping them as size 1 if `keepdim`."
    return reduce


amax = _reducer(Amax, "amax")
amin = _reducer(Amin, "amin")
prod = _reducer(Prod, "prod")
logsumexp = _reducer(Logsumexp, "logsumexp")


def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along `dim`, computed after subtracting the max (never overflows)."""
    return Softmax.apply(x, normalize_dim("softmax", dim, x.ndim))


def log_softmax(x, dim=-1):
    """x - logsumexp(x) along `dim`."""
    return LogSoftmax.apply(x, normalize_dim("log_softmax", dim, x.ndim))
