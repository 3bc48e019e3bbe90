"""Arithmetic primitives: +, *, /, ** and @. Broadcasting is undone by the engine."""
import numpy as np

from chainrule.autograd import Function
from chainrule.errors import ShapeError, matmul_error, shape_error
from chainrule.ops import dual
from chainrule.tensor import Tensor


class _Binary(Function):
    @classmethod
    def shape_error(cls, arrays, err):
        shapes = [np.shape(a) for a in arrays[:2]]
        return shape_error(cls.__name__.lower(), *shapes, detail="shapes cannot be broadcast together")


class Add(_Binary):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Mul(_Binary):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_input_grad:  # keep only what the wanted gradients need
            ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                                  b if ctx.needs_input_grad[0] else None)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (grad * b if need_a else None), (grad * a if need_b else None)


class Div(_Binary):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = grad / b if need_a else None
        return ga, (-(ga if need_a else grad / b) * a / b if need_b else None)


class Pow(_Binary):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = grad * b * a ** (b - 1) if need_a else None
        gb = None
        if need_b:  # d(a**b)/db = a**b log(a), taken as 0 where a == 0 (as PyTorch does)
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = dual.where(a == 0, 0.0, grad * out * dual.log(a))
        return ga, gb


class Matmul(Function):
    """PyTorch's matmul: 1-D operands are promoted and the added dim removed; batch dims broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        if ctx.needs_input_grad:  # keep only what the wanted gradients need
            ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                                  b if ctx.needs_input_grad[0] else None)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors  # a is kept only if b needs a gradient, and the other way round
        need_a, need_b = ctx.needs_input_grad
        (sa, sb), ga, gb = ctx.shapes, None, None
        if len(sa) == 1 and len(sb) == 1:
            return (grad * b if need_a else None), (grad * a if need_b else None)
        if len(sa) == 1:  # (k,) @ (..., k, m)
            g = grad.reshape(grad.shape[:-1] + (1, grad.shape[-1]))
            if need_a:
                ga = (g @ b.swapaxes(-1, -2)).reshape(grad.shape[:-1] + sa)
            if need_b:
                gb = a.reshape(sa + (1,)) * g
            return ga, gb
        if len(sb) == 1:  # (..., n, k) @ (k,)
            g = grad.reshape(grad.shape + (1,))
            if need_a:
                ga = g * b
            if need_b:
                gb = (a.swapaxes(-1, -2) @ g).reshape(sa[:-2] + sb)
            return ga, gb
        if need_a:
            ga = grad @ b.swapaxes(-1, -2)
        if need_b:
            if len(sb) == 2 and len(sa) > 2:  # sum over the batch inside one matmul
                gb = a.reshape(-1, sa[-1]).swapaxes(0, 1) @ grad.reshape(-1, grad.shape[-1])
            else:
                gb = a.swapaxes(-1, -2) @ grad
        return ga, gb

    @classmethod
    def shape_error(cls, arrays, err):
        return matmul_error(np.shape(arrays[0]), np.shape(arrays[1]))


def sub(a, b):
    """a - b, composed as a + (-b)."""
    try:
        if not isinstance(b, Tensor):
            return Add.apply(a, -np.asarray(b) if isinstance(b, (list, tuple)) else -b)
        return Add.apply(a, Mul.apply(b, -1.0))
    except ShapeError:  # name the op the user called, not the add it is composed from
        raise shape_error("sub", np.shape(a), np.shape(b),
                          detail="shapes cannot be broadcast together") from None


def matmul(a, b):
    return Matmul.apply(a, b)
