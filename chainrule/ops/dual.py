"""Functions that run on ndarrays and Tensors alike, for writing backward formulas once.

On ndarrays (the normal backward pass) they are plain NumPy; on Tensors (`create_graph=True`)
they are recorded ops, so the backward pass itself can be differentiated.
"""
import numpy as np

import chainrule.ops as _ops  # the Tensor-side ops, looked up at call time
from chainrule.tensor import Tensor


def exp(x):
    return x.exp() if isinstance(x, Tensor) else np.exp(x)


def log(x):
    return x.log() if isinstance(x, Tensor) else np.log(x)


def sin(x):
    return x.sin() if isinstance(x, Tensor) else np.sin(x)


def cos(x):
    return x.cos() if isinstance(x, Tensor) else np.cos(x)


def sign(x):
    return x.sign() if isinstance(x, Tensor) else np.sign(x)


def where(cond, a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return _ops.where(cond, a, b)
    return np.where(cond, a, b)


def expand(x, shape):
    return x.expand(shape) if isinstance(x, Tensor) else np.broadcast_to(x, shape)


def permute(x, axes):
    return x.permute(axes) if isinstance(x, Tensor) else x.transpose(axes)


def astype(x, dtype):
    return x.astype(dtype) if x.dtype != dtype else x


def scatter_add(grad, shape, index):
    """zeros(shape) with `grad` added at `index` (repeated indices add up)."""
    if isinstance(grad, Tensor):
        return _ops.IndexAdd.apply(grad, shape, index)
    out = np.zeros(shape, dtype=grad.dtype)
    if _is_basic(index):
        out[index] = grad
    else:
        np.add.at(out, index, grad)
    return out


def _is_basic(index):
    """True for ints, slices, None and Ellipsis (no element can be picked twice)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)
