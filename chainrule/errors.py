"""The one place chainrule's error types and shape-error messages are built."""


class ChainruleError(Exception):
    """Base class of every error chainrule raises on purpose."""


class ShapeError(ChainruleError, ValueError):
    """Operands whose shapes do not fit the operation."""


class ArgumentError(ChainruleError, ValueError):
    """A bad argument: wrong dtype, out-of-range dim, unknown option."""


class GraphError(ChainruleError, RuntimeError):
    """Misuse of the autograd graph: freed graph, in-place change of a saved array."""


class AnomalyError(ChainruleError, FloatingPointError):
    """A NaN or Inf appeared while `detect_anomaly()` was on."""


class SerializationError(ChainruleError, ValueError):
    """A file `cr.load` cannot trust (corrupted, truncated, foreign) or an object `cr.save` cannot store."""


def fmt_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def shape_error(op, *shapes, detail=None):
    """`op: (2, 3) and (4,): detail` as a ShapeError."""
    msg = f"{op}: " + " and ".join(fmt_shape(s) for s in shapes)
    return ShapeError(msg + (f": {detail}" if detail else ""))


def matmul_error(a_shape, b_shape):
    a, b = fmt_shape(a_shape), fmt_shape(b_shape)
    if len(a_shape) == 0 or len(b_shape) == 0:
        return ShapeError(f"matmul: {a} @ {b}: both operands need at least one dimension")
    k_a = a_shape[-1]
    k_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if k_a != k_b:
        return ShapeError(f"matmul: {a} @ {b}: inner dimensions {k_a} and {k_b} differ")
    return ShapeError(f"matmul: {a} @ {b}: batch dimensions {fmt_shape(a_shape[:-2])} and "
                      f"{fmt_shape(b_shape[:-2])} cannot be broadcast")


def dim_error(op, dim, ndim):
    return ArgumentError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimension"
                         + ("" if ndim == 1 else "s") + f" (expected {-max(ndim, 1)} to {max(ndim, 1) - 1})")


class DataError(ChainruleError, ValueError):
    """A data file or dataset chainrule cannot use (missing, malformed, wrong shape)."""


class MissingDependency(ChainruleError, ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


class GradientMismatch(ChainruleError, AssertionError):
    """Two ways of computing the same gradient disagree (`cr.explain` checks it against autograd)."""
