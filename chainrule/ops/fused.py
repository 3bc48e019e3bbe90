"""Fused primitives: each replaces a chain of ops with one node, for a measured speed-up.

`bench/run.py` W2 (a 2-16-16-2 MLP, where per-op overhead dominates) measures the gain.
"""
import numpy as np

from chainrule.autograd import Function
from chainrule.errors import ArgumentError, shape_error


class Linear(Function):
    """x @ weight.T + bias with weight (out, in), bias (out,) or None; x (..., in) -> (..., out).

    One node instead of matmul + add; the bias gradient is a row sum, not an unbroadcast."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        if ctx.needs_input_grad:  # keep only what the wanted gradients need
            need_x, need_w = ctx.needs_input_grad[:2]
            ctx.save_for_backward(x if need_w else None, weight if need_x else None)
            ctx.weight_order = "F" if weight.flags.f_contiguous else "C"
        out = x @ weight.T
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        gx = grad @ weight if need_x else None
        if grad.ndim != 2:  # fold batch dims: (..., out) -> (n, out)
            grad, x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        gw = None
        if need_w:  # in the weight's own memory order, so updates stay one contiguous pass
            if isinstance(grad, np.ndarray):
                gw = np.empty((grad.shape[1], x.shape[1]), np.result_type(grad, x),
                              order=ctx.weight_order)
                np.matmul(grad.T, x, out=gw)
            else:
                gw = grad.T @ x
        gb = grad.sum(axis=0) if ctx.needs_input_grad[2:3] == (True,) else None
        return gx, gw, gb

    @classmethod
    def shape_error(cls, arrays, err):
        x, w = arrays[0], arrays[1]
        if np.ndim(w) != 2 or np.shape(x)[-1:] != np.shape(w)[1:]:
            return shape_error("linear", np.shape(x), np.shape(w),
                               detail=f"input features {np.shape(x)[-1:]} do not match weight (out, in)")
        return shape_error("linear", np.shape(w), np.shape(arrays[2]),
                           detail="bias must have shape (out,)")


class SoftmaxCrossEntropy(Function):
    """-log softmax(logits)[target] for logits (N, C) and integer targets (N,), reduced by
    `reduction` (mean/sum/none). Stable (log-sum-exp after max subtraction); its gradient is
    (softmax - one_hot) in one step instead of five nodes."""

    @staticmethod
    def forward(ctx, logits, target, reduction):
        check_class_targets("cross_entropy", logits.shape, target)  # here, so a replay checks too
        rows = _rows(len(target))
        z = logits - np.maximum.reduce(logits, axis=1, keepdims=True)
        e = np.exp(z)
        s = np.add.reduce(e, axis=1, keepdims=True)
        losses = np.log(s[:, 0]) - z[rows, target]
        ctx.save_for_backward(e / s, logits)  # the softmax; logits only for create_graph
        ctx.target, ctx.reduction = target, reduction
        if reduction == "none":
            return losses
        return losses.sum() / len(target) if reduction == "mean" else losses.sum()

    @staticmethod
    def backward(ctx, grad):
        p, logits = ctx.saved_tensors
        n = len(ctx.target)
        if isinstance(p, np.ndarray):
            d = p.copy()
            d[_rows(n), ctx.target] -= 1
        else:  # create_graph: recompute the softmax so it stays connected to the logits
            d = logits.softmax(1) - _one_hot(ctx.target, p.shape[1], p.dtype)
        if ctx.reduction == "none":
            return d * grad.reshape(-1, 1), None, None
        return d * (grad / n if ctx.reduction == "mean" else grad), None, None


def _rows(n, cache={}):
    """np.arange(n), made once per batch size (read-only: shared by every call)."""
    rows = cache.get(n)
    if rows is None:
        rows = cache[n] = np.arange(n)
        rows.flags.writeable = False
    return rows


def _one_hot(target, classes, dtype):
    return (target[:, None] == np.arange(classes)).astype(dtype)


def check_class_targets(op, logits_shape, target):
    """Integer targets (N,) within [0, C) for logits (N, C); raises a clear error otherwise."""
    if len(logits_shape) != 2 or target.shape != logits_shape[:1]:
        raise shape_error(op, logits_shape, target.shape,
                          detail="expected logits (N, C) and class indices (N,)")
    if target.dtype.kind not in "iu":
        raise ArgumentError(f"{op}: targets must be integer class indices, got {target.dtype}")
    if target.size:
        lo, hi = np.minimum.reduce(target, axis=None), np.maximum.reduce(target, axis=None)
        if lo < 0 or hi >= logits_shape[1]:
            raise ArgumentError(f"{op}: targets must lie in [0, {logits_shape[1]}), got values "
                                f"from {lo} to {hi}")
