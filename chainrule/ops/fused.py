"""Fused primitives: each replaces a chain of ops with one node, for a measured speed-up.

`bench/run.py` W2 (a 2-16-16-2 MLP, where per-op overhead dominates) measures the gain.
"""
import numpy as np

from chainrule.autograd import Function, _state, constant_ones
from chainrule.errors import ArgumentError, GraphError, shape_error


class Linear(Function):
    """x @ weight.T + bias with weight (out, in), bias (out,) or None; x (..., in) -> (..., out).

    One node instead of matmul + add; the bias gradient is a row sum, not an unbroadcast."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        out = affine(x, weight, bias)
        if ctx.needs_input_grad:  # x only for dL/dweight, weight only for dL/dx
            need_x, need_w = ctx.needs_input_grad[:2]
            ctx.save_for_backward(x if need_w else None, weight if need_x else None)
            ctx.weight_order = weight_order(weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        return affine_grads(grad, x, weight, (need[0], need[1], len(need) > 2 and need[2]),
                            ctx.weight_order, ctx.sink(1) if _state.sinks else None)

    # replay kernels (chainrule.replay.Site): the lines above, for 2-D inputs of one dtype
    @staticmethod
    def replay_forward(k):
        shapes, dtypes = k.facts.shapes, k.facts.dtypes
        if (len(shapes[0] or ()) != 2 or len({d for d in dtypes if d is not None}) != 1
                or (len(shapes) > 2 and shapes[2] not in (None, shapes[1][:1]))):
            return None  # batched inputs, mixed dtypes, or a bias that is not (out,)
        x, w = k.args[:2]
        lines = [f"{k.out} = {x} @ {w}.T"]
        if len(shapes) > 2 and shapes[2] is not None:
            lines.append(f"{k.out} += {k.args[2]}")
        if k.record:
            lines.append(f"{k.saved} = ({x if k.needs[1] else None}, {w if k.needs[0] else None})")
        return lines

    @staticmethod
    def replay_backward(k):
        x, w, g, need = k.temp("x"), k.temp("w"), k.grad, k.needs
        lines, results = [f"{x}, {w} = {k.saved}"], {}
        if need[0]:
            results[0] = (k.temp("gx"), True)
            lines.append(f"{k.temp('gx')} = {g} @ {w}")
        if need[1]:
            gw, sink = k.temp("gw"), k.sink(1)
            order = getattr(k.ctx, "weight_order", "C")
            product = f"np.matmul({g}.T, {x}, order={order!r})"
            lines.append(f"{gw} = None if {sink} is not None and {sink}({g}.T, {x}) else {product}"
                         if sink else f"{gw} = {product}")
            results[1] = (gw, True)
        if len(need) > 2 and need[2]:
            results[2] = (k.temp("gb"), True)
            ones = k.const(constant_ones(k.facts.shapes[0][:1], k.facts.dtypes[0]), "ones")
            lines.append(f"{k.temp('gb')} = {ones} @ {g}")
        return lines, results

    @classmethod
    def shape_error(cls, arrays, err):
        return affine_shape_error(np.shape(arrays[0]), np.shape(arrays[1]),
                                  np.shape(arrays[2]) if len(arrays) > 2 else ())


class Perceptron(Function):
    """The L-layer perceptron as one node: h(0) = x, h(l) = relu(h(l-1) @ W(l).T + b(l)) for
    l = 1..L, with no ReLU after layer L unless `relu_last`. apply(x, relu_last, W(1), b(1), ...,
    W(L), b(L)): x (..., d0) -> (..., dL), W(l) (d_l, d_l-1), b(l) (d_l,) or None.

    Forward and backward are Linear's and ReLU's lines in a loop (the ReLU in place on the fresh
    product, the mask in place on a gradient backward made itself), so the numbers are those of
    the layers one by one, to the bit when the arrays share one dtype and no parameter serves two
    layers (the engine would add such a parameter's gradients in another order); one node instead
    of 2L - 1. Backward lets go of each kept activation once it is used, so at its peak it holds
    what the layers would, plus the gradient it received (the engine holds that until backward
    returns). Its hidden activations are its own arrays, not graph nodes, so with more than one
    layer it has no second derivative: create_graph raises. nn.Sequential runs a run of Linear,
    ReLU modules as this op inside `nn.fusing()`."""

    @staticmethod
    def forward(ctx, x, relu_last, *params):
        layers = len(params) // 2
        h, kept = x, []  # kept: each layer's input (the last one's output too under relu_last)
        for l in range(layers):
            w, b = params[2 * l], params[2 * l + 1]
            kept.append(h)
            h = affine(h, w, b)
            if l < layers - 1 or relu_last:
                np.maximum(h, 0, out=h)
        need = ctx.needs_input_grad
        if need:  # as Linear: x only for dL/dW(1), W(1) only for dL/dx
            weights = list(params[::2])
            kept[0], weights[0] = x if need[2] else None, weights[0] if need[0] else None
            ctx.save_for_backward(*kept, h if relu_last else None, *weights)
            ctx.relu_last, ctx.orders = relu_last, [weight_order(w) for w in params[::2]]
        return h

    @staticmethod
    def backward(ctx, grad):
        need, layers = ctx.needs_input_grad, (len(ctx.needs_input_grad) - 2) // 2
        if layers > 1 and not isinstance(grad, np.ndarray):
            raise GraphError("create_graph: a fused Perceptron of several layers has no second "
                             "derivative (its hidden activations are not graph nodes); build the "
                             "graph outside nn.fusing(), or with one layer per op")
        kept = ctx.take_saved()  # [x, h(1), ..., h(L-1), relu_last's output or None, W(1), ...]
        weights = kept[layers + 1:]
        del kept[layers + 1:]
        below = [need[0]]  # below[l]: does anything under layer l need a gradient?
        for l in range(1, layers):
            below.append(below[-1] or need[2 * l] or need[2 * l + 1])
        grads, g, owned, sinks = [None] * len(need), grad, False, _state.sinks
        for l in range(layers - 1, -1, -1):
            if l < layers - 1 or ctx.relu_last:  # dL/d(pre-activation) of layer l
                y, kept[l + 1] = kept[l + 1], None
                if owned:
                    np.multiply(g, y > 0, out=g)
                else:
                    g = g * (y > 0)
                del y
            g, grads[2 + 2 * l], grads[3 + 2 * l] = affine_grads(
                g, kept[l], weights[l], (below[l], need[2 + 2 * l], need[3 + 2 * l]),
                ctx.orders[l], ctx.sink(2 + 2 * l) if sinks else None)
            if not below[l]:
                break
            owned = isinstance(g, np.ndarray)
            if l and g.dtype != kept[l].dtype:  # as the engine casts each layer's gradient
                g = g.astype(kept[l].dtype)
        grads[0] = g
        return tuple(grads)

    @classmethod
    def shape_error(cls, arrays, err):
        shape, params = np.shape(arrays[0]), arrays[2:]
        for w, b in zip(params[::2], params[1::2]):  # the first layer that does not fit
            w_shape, b_shape = np.shape(w), np.shape(b) if b is not None else None
            bad_bias = b_shape not in (None, (), w_shape[:1])
            if len(w_shape) != 2 or shape[-1:] != w_shape[1:] or bad_bias:
                return affine_shape_error(shape, w_shape, b_shape)
            shape = shape[:-1] + w_shape[:1]
        return err


def affine(x, weight, bias):
    """x @ weight.T + bias (bias (out,), 0-d or None), in one fresh array."""
    out = x @ weight.T
    if bias is not None:
        if bias.shape != out.shape[-1:] and bias.ndim:
            raise ValueError("bias shape")  # affine_shape_error names the shapes
        out += bias
    return out


def weight_order(weight):
    """"F" for a column-major weight (nn.Linear's), else "C": its gradient is made in that order,
    so the optimizer's update is one contiguous pass."""
    return "F" if weight.flags.f_contiguous and not weight.flags.c_contiguous else "C"


def affine_grads(grad, x, weight, need, order, sink=None):
    """The gradients (x, weight, bias) of x @ weight.T + bias for output gradient `grad`, each
    None unless `need` (three flags) asks for it; the weight's in memory order `order`, or handed
    to `sink` (autograd.gradient_sinks), after the input's gradient has used the weight."""
    need_x, need_w, need_b = need
    gx = grad @ weight if need_x else None
    if not (need_w or need_b):
        return gx, None, None
    if grad.ndim != 2:  # fold batch dims: (..., out) -> (n, out); x is kept only for need_w
        grad = grad.reshape(-1, grad.shape[-1])
        x = x.reshape(-1, x.shape[-1]) if need_w else x
    if not isinstance(grad, np.ndarray):  # create_graph: the same formulas on Tensors
        return gx, grad.T @ x if need_w else None, grad.sum(axis=0) if need_b else None
    gw = gb = None
    if need_w and not (sink and sink(grad.T, x)):  # fresh, not a view: it becomes .grad
        gw = np.matmul(grad.T, x, order=order)
    if need_b:  # the row sum as ones @ grad: one BLAS call, about half NumPy's reduce
        gb = constant_ones(grad.shape[:1], grad.dtype) @ grad
    return gx, gw, gb


def affine_shape_error(x_shape, w_shape, b_shape):
    """The error for a linear layer's input, weight and bias shapes that do not fit together."""
    if len(w_shape) != 2 or x_shape[-1:] != w_shape[1:]:
        return shape_error("linear", x_shape, w_shape,
                           detail=f"input features {x_shape[-1:]} do not match weight (out, in)")
    return shape_error("linear", w_shape, b_shape, detail="bias must have shape (out,)")


class SoftmaxCrossEntropy(Function):
    """-log softmax(logits)[target] for logits (N, C) and integer targets (N,), reduced by
    `reduction` (mean/sum/none). Stable (log-sum-exp after max subtraction); its gradient is
    (softmax - one_hot) in one step instead of five nodes."""

    @staticmethod
    def forward(ctx, logits, target, reduction):
        check_class_targets("cross_entropy", logits.shape, target)  # here, so a replay checks too
        z = logits - np.maximum.reduce(logits, axis=1, keepdims=True)
        e = np.exp(z)
        s = e @ constant_ones(logits.shape[1:] + (1,), e.dtype)  # (N, 1) row sums, one BLAS call
        losses = np.log(s[:, 0]) - gather_classes("cross_entropy", z, target)
        if ctx.needs_input_grad:  # the softmax; the logits only for create_graph
            ctx.save_for_backward(np.divide(e, s, out=e), logits)
        ctx.target, ctx.reduction = target, reduction
        if reduction == "none":
            return losses
        total = np.add.reduce(losses, axis=None)
        return total / len(target) if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad):
        p, logits = ctx.saved_tensors
        n = len(ctx.target)
        if not isinstance(p, np.ndarray):  # create_graph: recompute the softmax from the logits
            scale = grad.reshape(-1, 1) if ctx.reduction == "none" else \
                grad / n if ctx.reduction == "mean" else grad
            return (logits.softmax(1) - one_hot_array(ctx.target, p.shape[1], p.dtype)) * scale, None, None
        if ctx.reduction == "none":
            d = p * grad.reshape(-1, 1)
            d[_rows(n), ctx.target] -= grad
            return d, None, None
        # mean: d loss / d losses_i = grad / n, a Python number (NumPy rounds it to p's dtype, as
        # the division in that dtype would: one correctly rounded result either way)
        scale = float(grad) / n if ctx.reduction == "mean" else float(grad)
        d = p * scale                       # (softmax - one_hot) * scale, the one-hot part in place
        d[_rows(n), ctx.target] -= scale
        return d, None, None


    # replay kernels (chainrule.replay.Site): the lines above for "mean" and "sum"; the shape
    # and dtype checks hold for the whole signature, the range check runs in the gather
    @staticmethod
    def replay_forward(k):
        reduction = k.ctx.reduction
        if reduction == "none" or len(k.facts.shapes[0] or ()) != 2:
            return None
        L, T, n = k.args[0], k.args[1], k.facts.shapes[0][0]
        z, e, s = k.temp("z"), k.temp("e"), k.temp("s")
        gather = k.const(gather_classes, "gather")
        lines = [f"{z} = {L} - np.maximum.reduce({L}, axis=1, keepdims=True)",
                 f"{e} = np.exp({z})",
                 f"{s} = {e} @ {k.const(constant_ones(k.facts.shapes[0][1:] + (1,), k.facts.dtypes[0]), 'ones')}",
                 f"{k.out} = np.add.reduce(np.log({s}[:, 0]) - {gather}('cross_entropy', {z}, {T}),"
                 f" axis=None)"]
        if reduction == "mean":
            lines.append(f"{k.out} = {k.out} / {n}")
        lines.append(f"{k.out} = np.asarray({k.out})")
        if k.record:
            lines += [f"{k.saved} = (np.divide({e}, {s}, out={e}), {L})", f"c{k.j}.target = {T}"]
        return lines

    @staticmethod
    def replay_backward(k):
        n = k.facts.shapes[0][0]
        p, scale, d = k.temp("p"), k.temp("scale"), k.temp("d")
        rows = k.const(_rows(n), "rows")
        return [f"{p} = {k.saved}[0]",
                f"{scale} = float({k.grad}) / {n}" if k.ctx.reduction == "mean" else
                f"{scale} = float({k.grad})",
                f"{d} = {p} * {scale}",
                f"{d}[{rows}, c{k.j}.target] -= {scale}"], {0: (d, True)}


def _rows(n, cache={}):
    """np.arange(n), made once per batch size (read-only: shared by every call)."""
    rows = cache.get(n)
    if rows is None:
        rows = cache[n] = np.arange(n)
        rows.flags.writeable = False
    return rows


def one_hot_array(labels, classes, dtype):
    """Integer labels (...,) -> one-hot (..., classes) of `dtype`, no checks."""
    return (labels[..., None] == np.arange(classes)).astype(dtype)


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

    One pass checks both ends: read as unsigned integers (a view, no copy), a negative target is
    huge, so the largest must be below C (NumPy would read a negative index from the end)."""
    if target.size and np.maximum.reduce(target.view(f"u{target.itemsize}"), axis=None) >= z.shape[1]:
        raise ArgumentError(f"{op}: targets must lie in [0, {z.shape[1]}), got values from "
                            f"{target.min()} to {target.max()}")
    return z[_rows(len(target)), target]
