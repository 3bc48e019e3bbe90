"""Compositions of primitives: no backward code of their own."""
import builtins
import collections

import numpy as np

from chainrule import ops
from chainrule.errors import ArgumentError, shape_error
from chainrule.ops import normalize_dim, reduce_args
from chainrule.ops.fused import Linear, Perceptron, SoftmaxCrossEntropy, one_hot_array
from chainrule.tensor import Tensor


def _count(shape, axes):
    return int(np.prod([shape[a] for a in axes])) if axes is not None else int(np.prod(shape))


def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    axes, keep = reduce_args("mean", x.ndim, dim, keepdim, axis, keepdims)
    if x.dtype.kind != "f":
        raise ArgumentError(f"mean: needs a floating-point tensor, got {x.dtype}")
    return ops.Sum.apply(x, axes, keep) * (1.0 / (_count(x.shape, axes) or 1))


def var(x, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, keepdims=None):
    """Variance with Bessel's `correction` (1 by default, as PyTorch; `unbiased=False` means 0)."""
    axes, keep = reduce_args("var", x.ndim, dim, keepdim, axis, keepdims)
    if unbiased is not None:
        correction = 1 if unbiased else 0
    centred = x - mean(x, axes, keepdim=True)
    n = _count(x.shape, axes)
    scale = 1.0 / (n - correction) if n > correction else float("nan")
    return ops.Sum.apply(centred * centred, axes, keep) * scale


def std(x, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, keepdims=None):
    return ops.Sqrt.apply(var(x, dim, keepdim, correction=correction, unbiased=unbiased,
                              axis=axis, keepdims=keepdims))


ValuesIndices = collections.namedtuple("ValuesIndices", "values indices")


def _values_indices(pick, arg, x, dim, keepdim):
    """PyTorch's max/min(dim): (values, indices); the gradient goes to the returned index."""
    d = normalize_dim(pick, dim, x.ndim)
    idx = np.expand_dims(arg(x.data, axis=d), d)
    values = gather(x, d, idx)
    if not keepdim:
        values, idx = squeeze(values, d), np.squeeze(idx, d)
    return ValuesIndices(values, Tensor._make(idx))


def max(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """The largest element, or (values, indices) along `dim`."""
    if dim is None and axis is None:
        return ops.amax(x)
    if isinstance(dim, Tensor):
        return ops.maximum(x, dim)
    return _values_indices("max", np.argmax, x, dim if axis is None else axis,
                           keepdim if keepdims is None else keepdims)


def min(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    if dim is None and axis is None:
        return ops.amin(x)
    if isinstance(dim, Tensor):
        return ops.minimum(x, dim)
    return _values_indices("min", np.argmin, x, dim if axis is None else axis,
                           keepdim if keepdims is None else keepdims)


def _arg(name, fn, x, dim, keepdim, axis, keepdims):
    axes, keep = reduce_args(name, x.ndim, dim, keepdim, axis, keepdims)
    if axes is None:
        out = np.asarray(fn(x.data))
        return Tensor._make(out.reshape((1,) * x.ndim) if keep else out)
    if len(axes) != 1:
        raise ArgumentError(f"{name}: takes one dim, got {axes}")
    return Tensor._make(np.asarray(fn(x.data, axis=axes[0], keepdims=keep)))


def argmax(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Index of the largest element (of the flattened tensor when dim is None). No gradient."""
    return _arg("argmax", np.argmax, x, dim, keepdim, axis, keepdims)


def argmin(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    return _arg("argmin", np.argmin, x, dim, keepdim, axis, keepdims)


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return ops.reshape(x, 1)
    s, e = normalize_dim("flatten", start_dim, x.ndim), normalize_dim("flatten", end_dim, x.ndim)
    return ops.reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


def transpose(x, dim0, dim1):
    axes = list(range(x.ndim))
    d0, d1 = normalize_dim("transpose", dim0, x.ndim), normalize_dim("transpose", dim1, x.ndim)
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return ops.permute(x, tuple(axes))


def squeeze(x, dim=None):
    if dim is None:
        return ops.reshape(x, tuple(n for n in x.shape if n != 1))
    dims = {normalize_dim("squeeze", d, x.ndim) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
    return ops.reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1)))


def unsqueeze(x, dim):
    d = normalize_dim("unsqueeze", dim, x.ndim + 1)
    return ops.reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def split(x, split_size_or_sections, dim=0):
    """Pieces of `split_size` along dim (the last may be smaller), or of the listed sizes."""
    d = normalize_dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ArgumentError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections:
            sizes.append(n % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise shape_error("split", x.shape, detail=f"sections {sizes} do not add up to {n} in dim {d}")
    lead, out, start = (slice(None),) * d, [], 0
    for size in sizes:
        out.append(x[lead + (slice(start, start + size),)])
        start += size
    return tuple(out)


def chunk(x, chunks, dim=0):
    """`chunks` pieces along dim (fewer if the size does not divide), as PyTorch."""
    n = x.shape[normalize_dim("chunk", dim, x.ndim)]
    return split(x, builtins.max(-(-n // chunks), 1), dim)


def gather(x, dim, index):
    """out[i][j] = x[i][index[i][j]] for dim=1 (take_along_dim): an Index op underneath."""
    d = normalize_dim("gather", dim, x.ndim)
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.ndim != x.ndim:
        raise shape_error("gather", x.shape, idx.shape, detail="index must have as many dims as input")
    grid = list(np.ix_(*(np.arange(n) for n in idx.shape)))
    grid[d] = idx
    return ops.Index.apply(x, tuple(grid))


take_along_dim = gather


def one_hot(labels, num_classes=-1):
    """Integer class labels (...,) -> int64 one-hot (..., num_classes)."""
    y = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise ArgumentError(f"one_hot: labels must be integers, got {y.dtype}")
    if num_classes < 0:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ArgumentError(f"one_hot: labels must lie in [0, {num_classes}), got values from "
                            f"{y.min()} to {y.max()}")
    return Tensor._make(one_hot_array(y, num_classes, np.int64))


def cross_entropy(logits, targets, reduction="mean"):
    """-log softmax(logits)[target]: logits (N, C), targets (N,) class indices; mean/sum/none.

    One fused node (ops.fused.SoftmaxCrossEntropy) whose gradient is softmax - one_hot."""
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if reduction not in ("mean", "sum", "none"):
        raise ArgumentError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    return SoftmaxCrossEntropy.apply(logits, t, reduction)


def linear(x, weight, bias=None):
    """x @ weight.T + bias: x (..., in), weight (out, in), bias (out,) -> (..., out). One node."""
    return Linear.apply(x, weight, bias)


def linear_relu(x, weight, bias=None):
    """relu(x @ weight.T + bias), shapes as `linear`: one node (a one-layer `perceptron`)."""
    return Perceptron.apply(x, True, weight, bias)


def perceptron(x, layers, relu_last=False):
    """The multi-layer perceptron h(l) = relu(h(l-1) @ W(l).T + b(l)), l = 1..L, h(0) = x, with no
    ReLU after the last layer unless `relu_last`: `layers` is [(W(1), b(1)), ...], each W (d_l,
    d_l-1) and b (d_l,) or None; x (..., d0) -> (..., dL). One node (ops.fused.Perceptron), the
    same numbers as the layers one by one; first derivatives only when L > 1."""
    layers = [tuple(layer) for layer in layers]
    if not layers or any(len(layer) != 2 for layer in layers):
        raise ArgumentError("perceptron: layers must be one or more (weight, bias) pairs")
    return Perceptron.apply(x, relu_last, *(p for layer in layers for p in layer))


softmax, log_softmax, logsumexp = ops.softmax, ops.log_softmax, ops.logsumexp
