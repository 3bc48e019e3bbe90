"""Tensor factories, PyTorch's names. Float factories use the default dtype (float32)."""
import numpy as np

from chainrule import dtypes
from chainrule.errors import ArgumentError
from chainrule.random import rng
from chainrule.tensor import Tensor


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding `data` (copied)."""
    if isinstance(data, Tensor):
        data = data.data
    arr = dtypes.as_array(data, dtype)
    return Tensor(arr.copy() if arr is data else arr, requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with `array` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise ArgumentError(f"from_numpy: expected an ndarray, got {type(array).__name__}")
    return Tensor(array)


def _size(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size


def _float(dtype):
    return dtypes.resolve(dtype) or dtypes.get_default_dtype()


def _leaf(array, requires_grad):
    return Tensor(array, requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad=False):
    return _leaf(np.zeros(_size(size), _float(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _leaf(np.ones(_size(size), _float(dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return _leaf(np.empty(_size(size), _float(dtype)), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = dtypes.as_array(fill_value).dtype
    return _leaf(np.full(tuple(size), fill_value, dtypes.resolve(dtype)), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return _leaf(np.zeros(t.shape, dtypes.resolve(dtype) or t.dtype), requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return _leaf(np.ones(t.shape, dtypes.resolve(dtype) or t.dtype), requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return _leaf(np.full(t.shape, fill_value, dtypes.resolve(dtype) or t.dtype), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    floats = any(isinstance(v, float) for v in (start, end, step))
    dtype = dtypes.resolve(dtype) or (dtypes.get_default_dtype() if floats else dtypes.int64)
    return _leaf(np.arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    return _leaf(np.linspace(start, end, steps, dtype=_float(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    return _leaf(np.eye(n, m, dtype=_float(dtype)), requires_grad)


def randn(*size, dtype=None, generator=None, requires_grad=False):
    """Standard normal samples."""
    return _leaf(rng(generator).standard_normal(_size(size), dtype=np.float64).astype(_float(dtype)),
                 requires_grad)


def rand(*size, dtype=None, generator=None, requires_grad=False):
    """Uniform samples in [0, 1)."""
    return _leaf(rng(generator).random(_size(size), dtype=np.float64).astype(_float(dtype)),
                 requires_grad)


def randint(low, high=None, size=(), dtype=None, generator=None):
    """Integers uniform in [low, high) (in [0, low) when high is None), int64."""
    if high is None:
        low, high = 0, low
    return _leaf(rng(generator).integers(low, high, size=tuple(size),
                                         dtype=dtypes.resolve(dtype) or np.int64), False)


def randperm(n, generator=None):
    return _leaf(rng(generator).permutation(n).astype(np.int64), False)
