"""Shape and indexing primitives, and in-place writes into a tensor."""
import numpy as np

from chainrule import autograd
from chainrule.autograd import Function
from chainrule.errors import ArgumentError, GraphError, fmt_shape, shape_error
from chainrule.ops import dual
from chainrule.ops.pointwise import where
from chainrule.ops.reduce import normalize_dim
from chainrule.tensor import Tensor


class Reshape(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)

    @classmethod
    def shape_error(cls, arrays, err):
        x, shape = arrays
        return shape_error("reshape", x.shape, shape,
                           detail=f"{x.size} elements cannot be arranged in that shape")


class Permute(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, grad):
        return dual.permute(grad, tuple(np.argsort(ctx.axes)))


class Expand(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        return np.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad  # the engine sums it back over the expanded dims

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error("expand", np.shape(arrays[0]), arrays[1],
                           detail="only dims of size 1 can be expanded, and new dims go in front")


class Cat(Function):
    @staticmethod
    def forward(ctx, axis, *xs):
        ctx.axis = axis
        ctx.bounds = np.cumsum([x.shape[axis] for x in xs])[:-1].tolist()
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        starts, ends = [0] + ctx.bounds, ctx.bounds + [grad.shape[ctx.axis]]
        lead = (slice(None),) * ctx.axis
        return (None,) + tuple(grad[lead + (slice(s, e),)] for s, e in zip(starts, ends))

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error("cat", *(np.shape(x) for x in arrays[1:]),
                           detail=f"sizes must match except in dim {arrays[0]}")


class Stack(Function):
    @staticmethod
    def forward(ctx, axis, *xs):
        ctx.axis = axis
        return np.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        lead = (slice(None),) * ctx.axis
        return (None,) + tuple(grad[lead + (i,)] for i in range(grad.shape[ctx.axis]))

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error("stack", *(np.shape(x) for x in arrays[1:]),
                           detail="all tensors must have the same shape")


class Index(Function):
    """x[index] with NumPy's rules; repeated indices add their gradients."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        ctx.is_view = dual._is_basic(index)
        return x[index]

    @staticmethod
    def backward(ctx, grad):
        return dual.scatter_add(grad, ctx.shape, ctx.index), None

    @classmethod
    def shape_error(cls, arrays, err):
        return ArgumentError(f"index: {err} (tensor of shape {fmt_shape(arrays[0].shape)})")


class IndexAdd(Function):
    """zeros(shape) with `grad` added at `index`: the gradient of Index, and Index is its own."""

    @staticmethod
    def forward(ctx, grad, shape, index):
        ctx.index = index
        return dual.scatter_add(grad, shape, index)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.index], None, None


class IndexPut(Function):
    """A copy of x with x[index] = value."""

    @staticmethod
    def forward(ctx, x, index, value):
        ctx.index = index
        out = x.copy()
        out[index] = value
        return out

    @staticmethod
    def backward(ctx, grad):
        return index_put(grad, ctx.index, 0), None, grad[ctx.index]

    @classmethod
    def shape_error(cls, arrays, err):
        x, index, value = arrays
        return shape_error("setitem", np.shape(value), np.shape(x[index]),
                           detail="the value cannot be broadcast to the indexed part")


def index_put(x, index, value):
    if isinstance(x, Tensor):
        return IndexPut.apply(x, index, value)
    out = x.copy()
    out[index] = value
    return out


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def reshape(x, *shape):
    return Reshape.apply(x, tuple(int(n) for n in _shape_arg(shape)))


def permute(x, *dims):
    dims = tuple(normalize_dim("permute", d, x.ndim) for d in _shape_arg(dims))
    if sorted(dims) != list(range(x.ndim)):
        raise ArgumentError(f"permute: dims {dims} are not a permutation of 0..{x.ndim - 1}")
    return Permute.apply(x, dims)


def expand(x, *shape):
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(shape))
    return Expand.apply(x, shape)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("cat: expected a non-empty list of tensors")
    return Cat.apply(normalize_dim("cat", dim, tensors[0].ndim), *tensors)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("stack: expected a non-empty list of tensors")
    return Stack.apply(normalize_dim("stack", dim, tensors[0].ndim + 1), *tensors)


def _index_arg(index):
    """Tensors inside an index become their arrays."""
    if isinstance(index, tuple):
        return tuple(_index_arg(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def getitem(x, index):
    return Index.apply(x, _index_arg(index))


def _recording(t, other):
    return autograd.is_grad_enabled() and (
        t.requires_grad or (isinstance(other, Tensor) and other.requires_grad))


def _check_inplace(t, op):
    if t.requires_grad and t.grad_fn is None:
        raise GraphError(f"{op}: a leaf tensor that requires grad cannot be modified in place; "
                         "do it inside `with cr.no_grad():` or use the out-of-place op")
    if t._base is not None:
        raise GraphError(f"{op}: in-place change of a view of a tensor that requires grad is not "
                         "supported; use the out-of-place op")


def _rebind(t, result):
    """t becomes `result` (data, node, version). Views taken from t earlier keep the old values."""
    t.data, t.grad_fn, t.requires_grad, t._version = (result.data, result.grad_fn, True,
                                                      result._version)
    return t


_OUT_OF_PLACE = {
    "add": lambda t, o: t + o, "sub": lambda t, o: t - o, "mul": lambda t, o: t * o,
    "div": lambda t, o: t / o, "copy": lambda t, o: where(np.ones(t.shape, bool), o, t),
    "clamp": lambda t, o: t.clamp(*o),
}
_IN_PLACE = {
    "add": lambda a, o: np.add(a, o, out=a), "sub": lambda a, o: np.subtract(a, o, out=a),
    "mul": lambda a, o: np.multiply(a, o, out=a), "div": lambda a, o: np.divide(a, o, out=a),
    "copy": lambda a, o: np.copyto(a, o), "clamp": lambda a, o: np.clip(a, *o, out=a),
}


def inplace(t, op, other):
    """t op= other. Recorded (as an out-of-place op t is rebound to) when grad mode needs it."""
    if _recording(t, other):
        _check_inplace(t, op + "_")
        return _rebind(t, _OUT_OF_PLACE[op](t, other))
    data = other.data if isinstance(other, Tensor) else other
    try:
        _write(t, lambda: _IN_PLACE[op](t.data, data))
    except ValueError as e:
        raise shape_error(op + "_", t.shape, np.shape(data), detail=str(e)) from None
    return t


def _write(t, write):
    """An in-place write no op records: tell the watchers (compile's trace), write, bump the
    version counter (so graphs that saved the old value refuse to use it)."""
    for seen in autograd._state.writes:
        seen(t)
    write()
    t._version[0] += 1


def setitem(t, index, value):
    index = _index_arg(index)
    if _recording(t, value):
        _check_inplace(t, "setitem")
        _rebind(t, IndexPut.apply(t, index, value))
        return
    data = value.data if isinstance(value, Tensor) else value
    try:
        _write(t, lambda: t.data.__setitem__(index, data))
    except ValueError as e:
        raise shape_error("setitem", np.shape(value), t.shape, detail=str(e)) from None
