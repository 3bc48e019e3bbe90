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
            if isinstance(grad, np.ndarray):  # a fresh array, not a view: it can become .grad
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
        z = logits - np.maximum.reduce(logits, axis=1, keepdims=True)
        e = np.exp(z)
        s = np.add.reduce(e, axis=1, keepdims=True)
        losses = np.log(s[:, 0]) - gather_classes("cross_entropy", z, target)
        ctx.save_for_backward(np.divide(e, s, out=e), logits)  # the softmax; logits for create_graph
        ctx.target, ctx.reduction = target, reduction
        if reduction == "none":
            return losses
        total = np.add.reduce(losses, axis=None)
        return total / len(target) if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad):
        p, logits = ctx.saved_tensors
        n = len(ctx.target)
        if ctx.reduction == "none":
            scale = grad.reshape(-1, 1)
        else:  # mean: d loss / d losses_i = grad / n
            scale = grad / n if ctx.reduction == "mean" else grad
        if not isinstance(p, np.ndarray):  # create_graph: recompute the softmax from the logits
            return (logits.softmax(1) - _one_hot(ctx.target, p.shape[1], p.dtype)) * scale, None, None
        d = p * scale                       # (softmax - one_hot) * scale, the one-hot part in place
        d[_rows(n), ctx.target] -= grad if ctx.reduction == "none" else scale
        return d, None, None


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
    """Integer targets (N,) for logits (N, C); raises a clear error otherwise (the range is
    checked where the targets are used, by `gather_classes`)."""
    if len(logits_shape) != 2 or target.shape != logits_shape[:1]:
        raise shape_error(op, logits_shape, target.shape,
                          detail="expected logits (N, C) and class indices (N,)")
    if target.dtype.kind not in "iu":
        raise ArgumentError(f"{op}: targets must be integer class indices, got {target.dtype}")


def gather_classes(op, z, target):
    """z[i, target[i]] for each row i, raising a clear error for a target outside [0, C).

    The targets are read as unsigned integers (a view, no copy): a negative target becomes a
    huge index, so one bounds-checked gather catches both ends without a min/max pass."""
    try:
        return z[_rows(len(target)), target.view(f"u{target.itemsize}")]
    except IndexError:
        lo, hi = target.min(), target.max()
        raise ArgumentError(f"{op}: targets must lie in [0, {z.shape[1]}), got values from {lo} "
                            f"to {hi}") from None
