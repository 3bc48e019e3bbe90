"""c ← β·c + α·(a @ b) in place, in one call of the BLAS that NumPy itself uses (its xGEMM).

NumPy's matmul always writes its product into an array of its own (GEMM with β = 0). An update
that is linear in a gradient which is a product, θ ← β·θ + α·(a @ b) (SGD without momentum on a
linear layer's weight), is one GEMM with θ as the output: no gradient array, and no second pass
over the weight to add it in. NumPy's wheels ship OpenBLAS with its CBLAS functions under the
names below; they are found through ctypes in the library NumPy loaded. With another BLAS
(none of those names), `AVAILABLE` is False, `gemm_update` returns False, and callers do what
they would do without it.
"""
import ctypes
import glob
import os

import numpy as np

# (symbol prefix, symbol suffix, integer type): OpenBLAS's builds for NumPy's wheels. The suffix
# fixes the integer width of the interface (64-bit indices for "64_"), so no guess is needed.
_NAMES = (("scipy_cblas_", "64_", ctypes.c_int64), ("cblas_", "64_", ctypes.c_int64),
          ("scipy_cblas_", "", ctypes.c_int32))
_COL_MAJOR, _NO_TRANS, _TRANS = 102, 111, 112
_SCALARS = {np.dtype(np.float32): ("s", ctypes.c_float), np.dtype(np.float64): ("d", ctypes.c_double)}


def _load():
    """{dtype: CBLAS xgemm} from the OpenBLAS bundled with NumPy, or {} if there is none."""
    root = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(root + ".libs/*openblas*") +             # Linux, Windows wheels
                       glob.glob(os.path.join(root, ".dylibs", "*openblas*"))):  # macOS wheels
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library, not a copy
        except OSError:
            continue
        for prefix, suffix, index in _NAMES:
            gemms = {dtype: getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
                     for dtype, (letter, _) in _SCALARS.items()}
            if None in gemms.values():
                continue
            for dtype, fn in gemms.items():
                scalar = _SCALARS[dtype][1]
                fn.argtypes = [ctypes.c_int] * 3 + [index] * 3 + [scalar, ctypes.c_void_p, index,
                                                                  ctypes.c_void_p, index, scalar,
                                                                  ctypes.c_void_p, index]
                fn.restype = None
            return gemms
    return {}


def _operand(x):
    """(transpose flag, leading dimension) of a 2-D array read as a column-major BLAS matrix,
    or None when neither of its axes has unit stride."""
    (rows, cols), (s0, s1), item = x.shape, x.strides, x.itemsize  # an axis of size 1: any stride
    if (s0 == item or rows == 1) and (cols == 1 or s1 % item == 0 and s1 // item >= rows):
        return _NO_TRANS, s1 // item if cols > 1 else rows
    if (s1 == item or cols == 1) and (rows == 1 or s0 % item == 0 and s0 // item >= cols):
        return _TRANS, s0 // item if rows > 1 else cols
    return None


def gemm_update(c, a, b, alpha, beta=1.0):
    """c ← beta·c + alpha·(a @ b) in place for a (m, k), b (k, n), c (m, n) of one float dtype,
    c with a unit stride along one axis and not overlapping a or b (an operand without one is
    copied first). True if done; False (c untouched) when BLAS is not found or the arrays do
    not qualify."""
    update = updater(c)
    return update is not None and update(a, b, alpha, beta)


def updater(c):
    """fn(a, b, alpha, beta) -> bool that does gemm_update(c, a, b, alpha, beta), with what
    depends on c alone checked once (for an update of the same array at every step); None when
    c cannot be a BLAS output."""
    gemm, out = _GEMMS.get(c.dtype), c.ndim == 2 and c.flags.writeable and _operand(c)
    if gemm is None or not out or 0 in c.shape:
        return None
    row_major = out[0] == _TRANS  # then c.T ← beta·c.T + alpha·(b.T @ a.T), column-major
    shape, dtype, ldc, address = c.shape, c.dtype, out[1], _address(c)

    def update(a, b, alpha, beta):
        if (a.dtype != dtype or b.dtype != dtype or a.ndim != 2 or b.ndim != 2
                or (a.shape[0], b.shape[1]) != shape or a.shape[1] != b.shape[0]
                or a.shape[1] == 0 or np.may_share_memory(c, a) or np.may_share_memory(c, b)):
            return False
        if row_major:
            a, b = b.T, a.T
        left, right = _operand(a), _operand(b)
        if left is None:  # e.g. a broadcast gradient (strides 0): copied, BLAS needs unit strides
            a = np.ascontiguousarray(a)
            left = _operand(a)
        if right is None:
            b = np.ascontiguousarray(b)
            right = _operand(b)
        if left is None or right is None:  # not reached: a contiguous copy has a unit stride
            return False
        (m, k), n = a.shape, b.shape[1]
        gemm(_COL_MAJOR, left[0], right[0], m, n, k, alpha, _address(a), left[1], _address(b),
             right[1], beta, address, ldc)
        return True
    return update


def _address(x):
    return x.__array_interface__["data"][0]


def _works(gemms):
    """Whether the functions found compute what they should: small exact products, every layout."""
    rng = np.random.default_rng(0)
    for dtype in gemms:
        for orders in ("CCC", "FFF", "CFC", "FCF"):
            a, b, c = (np.asarray(rng.integers(-4, 5, shape), dtype, order=o)
                       for shape, o in zip(((3, 5), (5, 4), (3, 4)), orders))
            expected = 0.5 * c - 2.0 * (a @ b)
            if not gemm_update(c, a, b, -2.0, 0.5) or not np.array_equal(c, expected):
                return False
    return True


_GEMMS = _load()
AVAILABLE = bool(_GEMMS) and _works(_GEMMS)
if not AVAILABLE:
    _GEMMS = {}
