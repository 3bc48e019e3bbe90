"""Element-wise primitives. Derivatives that are a function of the output save the output."""
import numpy as np

from chainrule.autograd import Function
from chainrule.errors import ArgumentError, shape_error
from chainrule.ops import dual
from chainrule.tensor import Tensor
from chainrule import dtypes


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad / x


class Log1p(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log1p(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad / (x + 1)


class Expm1(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.expm1(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y + 1)


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad / (y * 2)


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * dual.cos(x)


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.cos(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return -(grad * dual.sin(x))


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (1 - y * y)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        e = np.exp(-np.abs(x))  # never overflows: exp of a non-positive number
        r = 1 / (1 + e)
        y = np.where(x >= 0, r, e * r)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y * (1 - y))


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y > 0)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * dual.sign(x)


class Maximum(Function):
    """Element-wise max; where the inputs tie, each gets half the gradient (as in PyTorch)."""
    pick = staticmethod(np.maximum)

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.save_for_backward(a, b)
        return cls.pick(a, b)

    @classmethod
    def backward(cls, ctx, grad):
        a, b = ctx.saved_tensors
        wins = (a > b) if cls.pick is np.maximum else (a < b)
        share = dual.astype(wins, grad.dtype) + dual.astype(a == b, grad.dtype) * 0.5
        ga = grad * share
        return ga, grad - ga

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error(cls.__name__.lower(), *(np.shape(a) for a in arrays),
                           detail="shapes cannot be broadcast together")


class Minimum(Maximum):
    pick = staticmethod(np.minimum)


class Clamp(Function):
    """Clip to [low, high] (either may be None); the gradient passes where low <= x <= high."""

    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return np.clip(x, low, high)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        inside = True
        if ctx.low is not None:
            inside = x >= ctx.low
        if ctx.high is not None:
            inside = (x <= ctx.high) & inside
        return grad * inside


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = cond
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        return None, dual.where(ctx.cond, grad, 0), dual.where(ctx.cond, 0, grad)

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error("where", *(np.shape(a) for a in arrays),
                           detail="condition, input and other cannot be broadcast together")


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad  # the engine casts it back to the input's dtype


def cast(x, dtype):
    dtype = dtypes.resolve(dtype)
    if x.data.dtype == dtype:
        return x
    if not dtypes.is_float(dtype):
        return Tensor._make(x.data.astype(dtype))
    return Cast.apply(x, dtype)


def maximum(a, b):
    return Maximum.apply(a, b)


def minimum(a, b):
    return Minimum.apply(a, b)


def clamp(x, min=None, max=None):
    if isinstance(min, Tensor) or isinstance(max, Tensor):  # tensor bounds: compose
        x = x if min is None else maximum(x, min)
        return x if max is None else minimum(x, max)
    if min is None and max is None:
        raise ArgumentError("clamp: at least one of min and max must be given")
    return Clamp.apply(x, min, max)


def where(condition, input, other):
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        cond = cond.astype(bool)
    return Where.apply(cond, input, other)


def compare(fn, a, b):
    """A comparison or logical op: no gradient, a bool tensor."""
    a_ = a.data if isinstance(a, Tensor) else a
    b_ = b.data if isinstance(b, Tensor) else b
    try:
        return Tensor._make(np.asarray(fn(a_, b_)))
    except ValueError:
        raise shape_error(fn.__name__, np.shape(a_), np.shape(b_),
                          detail="shapes cannot be broadcast together") from None
