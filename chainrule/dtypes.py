"""dtype rules, in one place.

Python floats (and lists of them) become the default float dtype (float32 unless changed with
`set_default_dtype`); Python ints become int64 and bools bool; NumPy arrays keep their dtype.
Only floating-point tensors can require gradients.
"""
import numpy as np

from chainrule.errors import ArgumentError

float16, float32, float64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
int8, int16, int32, int64 = (np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
uint8, bool_ = np.dtype(np.uint8), np.dtype(np.bool_)

_default = {"float": float32}


def set_default_dtype(dtype):
    """Set the dtype that Python floats and float factories (`randn`, `zeros`, ...) produce."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ArgumentError(f"set_default_dtype: expected a floating-point dtype, got {dtype}")
    _default["float"] = dtype


def get_default_dtype():
    return _default["float"]


def resolve(dtype):
    """A user's dtype argument (None, a NumPy dtype, a type or a string) as np.dtype or None."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise ArgumentError(f"unknown dtype {dtype!r}") from None


def is_float(dtype):
    return dtype.kind == "f"


def as_array(data, dtype=None):
    """Convert user data to an ndarray following the rules in this module's docstring."""
    dtype = resolve(dtype)
    if isinstance(data, np.ndarray):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, np.generic):
        return np.asarray(data, dtype=dtype)
    try:
        arr = np.asarray(data)
    except ValueError as e:  # ragged nested lists
        raise ArgumentError(f"tensor: cannot build an array from {type(data).__name__}: {e}") from None
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        return arr.astype(_default["float"], copy=False)
    if arr.dtype.kind in "iu":
        return arr.astype(int64, copy=False)
    if arr.dtype.kind not in "b":
        raise ArgumentError(f"tensor: unsupported data of dtype {arr.dtype} ({type(data).__name__})")
    return arr


def check_float(dtype, what="requires_grad"):
    if dtype.kind != "f":
        raise ArgumentError(f"{what}: only floating-point tensors can require gradients, got {dtype}")
