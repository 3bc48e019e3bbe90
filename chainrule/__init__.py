"""chainrule: deep learning from first principles on NumPy.

    import chainrule as cr
    x = cr.tensor([[1.0, 2.0]], requires_grad=True)
    (x ** 2).sum().backward(); x.grad  # tensor([[2., 4.]])
"""
from chainrule.tensor import Tensor
from chainrule import dtypes
from chainrule.dtypes import (bool_, float16, float32, float64, get_default_dtype, int8, int16,
                              int32, int64, set_default_dtype, uint8)
from chainrule.errors import (AnomalyError, ArgumentError, ChainruleError, GraphError, ShapeError)
from chainrule.autograd import (Function, detect_anomaly, enable_grad, grad, is_grad_enabled,
                                no_grad, saved_bytes, set_grad_enabled)
from chainrule.random import Generator, manual_seed
from chainrule.creation import (arange, empty, eye, from_numpy, full, full_like, linspace, ones,
                                ones_like, rand, randint, randn, randperm, tensor, zeros,
                                zeros_like)
from chainrule.ops import (amax, amin, cat, clamp, expand, log_softmax, logsumexp, matmul,
                           maximum, minimum, permute, prod, reshape, softmax, stack, sum, where)
from chainrule.functional import (argmax, argmin, chunk, cross_entropy, flatten, gather, linear,
                                  max, mean, min, one_hot, split, squeeze, std, take_along_dim, transpose,
                                  unsqueeze, var)
from chainrule.testing import GradcheckError, gradcheck, gradgradcheck
from chainrule import functional, ops

# PyTorch's spellings of dtypes and aliases
float = float32
double = float64
half = float16
long = int64
int = int32
bool = bool_
clip = clamp
broadcast_to = expand
concatenate = concat = cat


def _unary(cls, name):
    def fn(x):
        return cls.apply(x)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Element-wise {name}."
    return fn


exp = _unary(ops.Exp, "exp")
log = _unary(ops.Log, "log")
log1p = _unary(ops.Log1p, "log1p")
expm1 = _unary(ops.Expm1, "expm1")
sqrt = _unary(ops.Sqrt, "sqrt")
sin = _unary(ops.Sin, "sin")
cos = _unary(ops.Cos, "cos")
tanh = _unary(ops.Tanh, "tanh")
sigmoid = _unary(ops.Sigmoid, "sigmoid")
relu = _unary(ops.ReLU, "relu")
abs = _unary(ops.Abs, "abs")


def neg(x):
    return -x


def add(a, b):
    return ops.Add.apply(a, b)


def sub(a, b):
    return ops.sub(a, b)


def mul(a, b):
    return ops.Mul.apply(a, b)


def div(a, b):
    return ops.Div.apply(a, b)


def pow(a, b):
    return ops.Pow.apply(a, b)


def is_tensor(obj):
    return isinstance(obj, Tensor)


# the layers above the math: models, training, interfaces
from chainrule.errors import SerializationError  # noqa: E402
from chainrule.replay import compile  # noqa: E402
from chainrule.serialization import load, save  # noqa: E402
from chainrule import data, metrics, nn, optim, viz  # noqa: E402
from chainrule.train import (Callback, EarlyStopping, TrainingError, evaluate, fit,  # noqa: E402
                             predict)
from chainrule.jacobian import compare_gradient_methods, hvp, jacobian, jvp, vjp  # noqa: E402
from chainrule.viz.explain import explain  # noqa: E402
from chainrule import memory  # noqa: E402
from chainrule.memory import checkpoint  # noqa: E402

__version__ = "0.1.0"
