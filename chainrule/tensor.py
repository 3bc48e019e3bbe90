"""Tensor: a NumPy array plus what autograd needs (requires_grad, grad, the node that made it).

Every operation on Tensors goes through `Function.apply` (autograd.py), the one boundary between
Tensors and ndarrays. The methods here only delegate: primitives to `ops`, compositions to
`functional`.
"""
import numpy as np

from chainrule import dtypes
from chainrule.errors import ArgumentError, GraphError

_new = object.__new__


class Tensor:
    """An n-dimensional array that can record operations for reverse-mode differentiation.

    `data` is the NumPy array; `grad` is a Tensor of the same shape after `backward()` (leaves
    only, unless `retain_grad()`); `grad_fn` is the node that produced this tensor, None for leaves.
    """

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_version", "_hooks", "_base",
                 "__weakref__")
    __array_ufunc__ = None  # `ndarray + Tensor` calls Tensor.__radd__; NumPy ufuncs refuse Tensors
    __hash__ = object.__hash__  # `==` is element-wise, identity is the hash

    def __init__(self, data, dtype=None, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        self.data = dtypes.as_array(data, dtype)
        self.grad = self.grad_fn = self._hooks = self._base = None
        self._version = [0]
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _make(data, requires_grad=False, grad_fn=None):
        """Wrap an ndarray with no checks (the engine's fast path)."""
        t = _new(Tensor)
        t.data = data
        t.requires_grad = requires_grad
        t.grad_fn = grad_fn
        t.grad = t._hooks = t._base = None
        t._version = [0]
        return t

    # ---- attributes -------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    T = property(lambda self: self.permute(tuple(range(self.data.ndim - 1, -1, -1))))
    mT = property(lambda self: self.transpose(-2, -1))
    is_leaf = property(lambda self: self.grad_fn is None)

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return self.data.size

    def item(self):
        if self.data.size != 1:
            raise ArgumentError(f"item: only a tensor with one element can be converted to a Python "
                                f"number, this one has shape {self.data.shape}")
        return self.data.item()

    def numpy(self):
        return self.data

    def tolist(self):
        return self.data.tolist()

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self):
        if self.data.size != 1:
            raise ArgumentError(f"the truth value of a tensor with {self.data.size} elements is "
                                "ambiguous; use .any() or .all()")
        return bool(self.data)

    __float__ = lambda self: float(self.item())
    __int__ = lambda self: int(self.item())
    __index__ = lambda self: self.data.__index__()

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", precision=4, prefix="tensor(")
        extras = []
        if self.data.dtype != dtypes.get_default_dtype() and self.data.dtype != np.int64 \
                and self.data.dtype != np.bool_:
            extras.append(f"dtype={self.data.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{type(self.grad_fn).__name__}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # ---- autograd ---------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`; `gradient` is needed unless scalar."""
        _autograd.backward((self,), None if gradient is None else (gradient,),
                           retain_graph=retain_graph, create_graph=create_graph)

    def requires_grad_(self, requires_grad=True):
        if requires_grad:
            dtypes.check_float(self.data.dtype)
        elif self.grad_fn is not None:
            raise GraphError("requires_grad_(False) on a non-leaf tensor; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """The same data (and version counter), cut off from the graph."""
        t = Tensor._make(self.data)
        t._version = self._version
        return t

    def detach_(self):
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self):
        """Keep `.grad` on this non-leaf tensor after backward."""
        if self.grad_fn is not None:
            self.grad_fn._retain(self)
        elif not self.requires_grad:
            raise GraphError("retain_grad() on a tensor that does not require grad")

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a returned Tensor replaces it."""
        if not self.requires_grad:
            raise GraphError("register_hook on a tensor that does not require grad")
        if self.grad_fn is not None:
            self.grad_fn._add_hook(hook)
        else:
            self._hooks = (self._hooks or []) + [hook]
        return _autograd.RemovableHandle(self.grad_fn._hooks if self.grad_fn else self._hooks, hook)

    # ---- arithmetic: one-line delegations -----------------------------------------------------
    def __add__(self, other): return _ops.Add.apply(self, other)
    def __radd__(self, other): return _ops.Add.apply(self, other)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.Mul.apply(self, other)
    def __rmul__(self, other): return _ops.Mul.apply(self, other)
    def __truediv__(self, other): return _ops.Div.apply(self, other)
    def __rtruediv__(self, other): return _ops.Div.apply(other, self)
    def __pow__(self, other): return _ops.Pow.apply(self, other)
    def __rpow__(self, other): return _ops.Pow.apply(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.Mul.apply(self, -1.0)
    def __pos__(self): return self
    def __abs__(self): return _ops.Abs.apply(self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    # comparisons and logic: no gradient, boolean results
    def __lt__(self, other): return _ops.compare(np.less, self, other)
    def __le__(self, other): return _ops.compare(np.less_equal, self, other)
    def __gt__(self, other): return _ops.compare(np.greater, self, other)
    def __ge__(self, other): return _ops.compare(np.greater_equal, self, other)
    def __eq__(self, other): return _ops.compare(np.equal, self, other)
    def __ne__(self, other): return _ops.compare(np.not_equal, self, other)
    def __and__(self, other): return _ops.compare(np.logical_and, self, other)
    def __or__(self, other): return _ops.compare(np.logical_or, self, other)
    def __xor__(self, other): return _ops.compare(np.logical_xor, self, other)
    def __invert__(self): return Tensor._make(np.logical_not(self.data))
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    # in-place: true in-place on arrays when nothing is recorded, see ops.inplace
    def __iadd__(self, other): return _ops.inplace(self, "add", other)
    def __isub__(self, other): return _ops.inplace(self, "sub", other)
    def __imul__(self, other): return _ops.inplace(self, "mul", other)
    def __itruediv__(self, other): return _ops.inplace(self, "div", other)
    def __setitem__(self, index, value): _ops.setitem(self, index, value)

    def add_(self, other, alpha=1): return _ops.inplace(self, "add", other if alpha == 1 else other * alpha)
    def sub_(self, other, alpha=1): return _ops.inplace(self, "sub", other if alpha == 1 else other * alpha)
    def mul_(self, other): return _ops.inplace(self, "mul", other)
    def div_(self, other): return _ops.inplace(self, "div", other)
    def clamp_(self, min=None, max=None): return _ops.inplace(self, "clamp", (min, max))
    def copy_(self, src): return _ops.inplace(self, "copy", src)
    def fill_(self, value): return _ops.inplace(self, "copy", value)
    def zero_(self): return _ops.inplace(self, "copy", 0)

    # ---- methods: delegations ----------------------------------------------------------------
    def exp(self): return _ops.Exp.apply(self)
    def log(self): return _ops.Log.apply(self)
    def log1p(self): return _ops.Log1p.apply(self)
    def expm1(self): return _ops.Expm1.apply(self)
    def sqrt(self): return _ops.Sqrt.apply(self)
    def sin(self): return _ops.Sin.apply(self)
    def cos(self): return _ops.Cos.apply(self)
    def tanh(self): return _ops.Tanh.apply(self)
    def sigmoid(self): return _ops.Sigmoid.apply(self)
    def relu(self): return _ops.ReLU.apply(self)
    def abs(self): return _ops.Abs.apply(self)
    def neg(self): return _ops.Mul.apply(self, -1.0)
    def sign(self): return Tensor._make(np.sign(self.data))
    def square(self): return _ops.Mul.apply(self, self)
    def pow(self, exponent): return _ops.Pow.apply(self, exponent)
    def matmul(self, other): return _ops.matmul(self, other)
    def add(self, other): return _ops.Add.apply(self, other)
    def sub(self, other): return _ops.sub(self, other)
    def mul(self, other): return _ops.Mul.apply(self, other)
    def div(self, other): return _ops.Div.apply(self, other)
    def maximum(self, other): return _ops.maximum(self, other)
    def minimum(self, other): return _ops.minimum(self, other)
    def clamp(self, min=None, max=None): return _ops.clamp(self, min, max)
    clip = clamp
    def where(self, condition, other): return _ops.where(condition, self, other)
    def clone(self): return _ops.Clone.apply(self)

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops.sum(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _F.mean(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def var(self, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, keepdims=None):
        return _F.var(self, dim, keepdim, correction=correction, unbiased=unbiased, axis=axis,
                      keepdims=keepdims)

    def std(self, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, keepdims=None):
        return _F.std(self, dim, keepdim, correction=correction, unbiased=unbiased, axis=axis,
                      keepdims=keepdims)

    def prod(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops.prod(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def amax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops.amax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def amin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops.amin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _F.max(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _F.min(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def logsumexp(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _ops.logsumexp(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _F.argmax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _F.argmin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def all(self): return Tensor._make(np.asarray(self.data.all()))
    def any(self): return Tensor._make(np.asarray(self.data.any()))

    def softmax(self, dim=-1): return _ops.softmax(self, dim)
    def log_softmax(self, dim=-1): return _ops.log_softmax(self, dim)

    def reshape(self, *shape): return _ops.reshape(self, *shape)
    view = reshape
    def flatten(self, start_dim=0, end_dim=-1): return _F.flatten(self, start_dim, end_dim)
    def permute(self, *dims): return _ops.permute(self, *dims)
    def transpose(self, dim0, dim1): return _F.transpose(self, dim0, dim1)
    swapaxes = transpose
    def t(self): return _F.transpose(self, 0, 1) if self.data.ndim == 2 else self
    def squeeze(self, dim=None): return _F.squeeze(self, dim)
    def unsqueeze(self, dim): return _F.unsqueeze(self, dim)
    def expand(self, *shape): return _ops.expand(self, *shape)
    def broadcast_to(self, shape): return _ops.expand(self, shape)
    def expand_as(self, other): return _ops.expand(self, other.shape)
    def split(self, split_size_or_sections, dim=0): return _F.split(self, split_size_or_sections, dim)
    def chunk(self, chunks, dim=0): return _F.chunk(self, chunks, dim)
    def gather(self, dim, index): return _F.gather(self, dim, index)
    def astype(self, dtype): return _ops.cast(self, dtype)

    def to(self, dtype):
        return _ops.cast(self, dtype)

    def float(self): return _ops.cast(self, dtypes.float32)
    def double(self): return _ops.cast(self, dtypes.float64)
    def long(self): return _ops.cast(self, dtypes.int64)
    def int(self): return _ops.cast(self, dtypes.int32)
    def bool(self): return _ops.cast(self, dtypes.bool_)


# Imported last: these modules need the Tensor class defined above.
from chainrule import autograd as _autograd  # noqa: E402
from chainrule import ops as _ops  # noqa: E402
from chainrule import functional as _F  # noqa: E402
