"""Parameter and Buffer: Tensors that mark what a Module owns.

A Module finds its state by walking its attributes: a `Parameter` is learned (requires grad,
listed by `parameters()`), a `Buffer` is state that is not learned (BatchNorm's running
statistics, listed by `buffers()`). Both are in `state_dict()` (a buffer unless
`persistent=False`). Results of operations on them are plain Tensors.
"""
from chainrule.tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor that a Module learns; shares `data`'s array (as torch.nn.Parameter)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = ()
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):  # copy/deepcopy/pickle keep the class and requires_grad
        return (type(self), (self.data.copy(order="K"), self.requires_grad))

    def __deepcopy__(self, memo):
        p = type(self)(self.data.copy(order="K"), self.requires_grad)
        memo[id(self)] = p
        if self.grad is not None:
            p.grad = Tensor._make(self.grad.data.copy(order="K"))
        return p


class Buffer(Tensor):
    """A Tensor a Module keeps but does not learn (as torch.nn.Buffer); in `state_dict()`
    unless `persistent=False`."""

    __slots__ = ("persistent",)

    def __init__(self, data, persistent=True):
        super().__init__(data.data if isinstance(data, Tensor) else data)
        self.persistent = persistent

    def __deepcopy__(self, memo):
        b = type(self)(self.data.copy(order="K"), self.persistent)
        memo[id(self)] = b
        return b
