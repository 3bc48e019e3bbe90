"""Layers: Linear, Identity, Flatten, Dropout, BatchNorm1d, LayerNorm, Embedding and MLP.

Parameters are created and initialised as PyTorch does (same shapes, same distributions), so
state_dicts interchange. Each forward is a composition of nn.functional.
"""
import math

import numpy as np

from chainrule import dtypes
from chainrule.autograd import is_grad_enabled, no_grad
from chainrule.errors import ArgumentError, shape_error
from chainrule.nn import functional as F
from chainrule.nn import init
from chainrule.nn.activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from chainrule.nn.module import Module, Sequential, fusable
from chainrule.nn.parameter import Buffer, Parameter
from chainrule.ops.fused import Perceptron


def _float(dtype):
    return dtypes.resolve(dtype) or dtypes.get_default_dtype()


class Identity(Module):
    """Returns its input; constructor arguments are ignored (as PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias: x (..., in_features) -> (..., out_features).

    weight (out_features, in_features) and bias (out_features,), both drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch. One fused node (ops.fused.Linear).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Column-major, so weight.T (what forward multiplies by) is row-major: x @ W with W
        # (in, out) contiguous is the layout BLAS runs fastest (bench/run.py W1: +5% otherwise).
        self.weight = Parameter(np.empty((out_features, in_features), _float(dtype), order="F"))
        self.bias = Parameter(np.empty(out_features, _float(dtype))) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _perceptron(modules, i, x):
    """The run Linear, ReLU, Linear, ReLU, ... from modules[i] as one op (ops.fused.Perceptron,
    F.perceptron's node), when it has two modules or more: (output, index after the run), else
    None.

    The run stops where the bits could differ from the layers one by one: at a parameter of
    another dtype than x, or one that an earlier layer of the run uses too. Memory: the op's
    backward frees each activation once used, as the layers' nodes do, but the gradient it
    receives stays held until it returns, so a recorded run ends on an output of at most 64 KiB
    (shorter runs where needed; one node fewer saves time that counts where activations are
    small, bench W2); an unrecorded run (inference) takes any size."""
    dtype, n, j = x.dtype, len(modules), i
    linears, params, seen, relu_last = [], [], set(), False
    while j < n and fusable(modules[j], Linear):
        lin = modules[j]
        w, b = lin.weight, lin.bias
        if w.dtype != dtype or id(w) in seen or b is not None and (b.dtype != dtype or id(b) in seen):
            break
        seen.update((id(w), id(b)))  # id(None) too: harmless, no parameter has it
        linears.append(lin)
        params += (w, b)
        j += 1
        relu_last = j < n and fusable(modules[j], ReLU)
        if not relu_last:
            break
        j += 1
    if is_grad_enabled():  # drop modules from the end until the output is small enough
        row_bytes = math.prod(x.shape[:-1]) * dtype.itemsize
        while linears and row_bytes * linears[-1].out_features > _FUSED_GRAD_BYTES:
            j -= 1
            if relu_last:
                relu_last = False
            else:
                linears.pop()
                del params[-2:]
                relu_last = bool(linears)
    if j - i < 2:
        return None
    return Perceptron.apply(x, relu_last, *params), j


_FUSED_GRAD_BYTES = 1 << 16
Sequential.fusions[Linear] = _perceptron


class Flatten(Module):
    """Merge dims start_dim..end_dim into one: (N, C, L) -> (N, C*L) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """In training mode, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode, the identity. Masks come from cr's default generator (cr.manual_seed)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ArgumentError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class BatchNorm1d(Module):
    """Batch normalisation of x (N, C) or (N, C, L) per channel C = num_features.

    Training: batch mean and biased variance normalise; the buffers running_mean and
    running_var (unbiased) move toward them by `momentum` (None: a cumulative average), and
    num_batches_tracked counts batches. Eval: the running statistics normalise (batch
    statistics if track_running_stats=False). weight (C,) = 1 and bias (C,) = 0 if `affine`
    (bias only if `bias`).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = _float(dtype)
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine and bias else None
        if track_running_stats:
            self.running_mean = Buffer(np.zeros(num_features, dtype))
            self.running_var = Buffer(np.ones(num_features, dtype))
            self.num_batches_tracked = Buffer(np.array(0, np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def forward(self, x):
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise shape_error("BatchNorm1d", x.shape, detail=f"expected an input (N, "
                              f"{self.num_features}) or (N, {self.num_features}, L)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked += 1
            if self.momentum is None:
                factor = 1.0 / int(self.num_batches_tracked.item())
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class LayerNorm(Module):
    """Normalise over the last dims, x (..., *normalized_shape), with weight = 1 and bias = 0 of
    shape normalized_shape if `elementwise_affine` (bias only if `bias`)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=None):
        super().__init__()
        self.normalized_shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                                 else tuple(normalized_shape))
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = _float(dtype)
        affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer indices (...,) -> rows of weight (num_embeddings, embedding_dim),
    output (..., embedding_dim). weight ~ N(0, 1); the row at padding_idx starts at zero and
    is never updated by gradients."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ArgumentError(f"Embedding: padding_idx {padding_idx} must be within "
                                    f"[-{num_embeddings}, {num_embeddings})")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), _float(dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s if self.padding_idx is None else s + f", padding_idx={self.padding_idx}"


_ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "gelu": GELU, "silu": SiLU,
                "softplus": Softplus, "sigmoid": Sigmoid, "tanh": Tanh, "identity": Identity}


class MLP(Module):
    """The L-layer perceptron H(l) = act(H(l-1) W(l) + b(l)), l = 1..L, with no activation after
    the last layer (it returns logits): sizes [d0, ..., dL], input (..., d0) -> (..., dL).

    Between two Linear layers come, in order: the norm ("batch": BatchNorm1d, "layer":
    LayerNorm), the activation (a name such as "relu", "tanh", "gelu", or a Module class), and
    Dropout(dropout) if dropout > 0. W(l) is Linear's weight transposed (weight is (d_l, d_l-1)).

    Naming: all modules sit in the Sequential `self.layers`, numbered in order, so parameters
    are named `layers.{k}.weight` / `layers.{k}.bias`, k counting every module. MLP([64, 128,
    10]) has layers.0 (Linear), layers.1 (ReLU), layers.2 (Linear): the names of a
    torch.nn.Sequential held in an attribute `layers`.
    """

    def __init__(self, sizes, activation="relu", dropout=0.0, norm=None):
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2:
            raise ArgumentError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ArgumentError(f"MLP: unknown activation {activation!r}; expected one of "
                                    f"{sorted(_ACTIVATIONS)} or a Module class")
            activation = _ACTIVATIONS[activation]
        norms = {None: None, "batch": BatchNorm1d, "layer": LayerNorm}
        if norm not in norms:
            raise ArgumentError(f"MLP: norm must be None, 'batch' or 'layer', got {norm!r}")
        self.sizes = sizes
        modules = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(Linear(n_in, n_out))
            if i < len(sizes) - 2:
                if norm is not None:
                    modules.append(norms[norm](n_out))
                modules.append(activation())
                if dropout > 0:
                    modules.append(Dropout(dropout))
        self.layers = Sequential(*modules)

    def forward(self, x):
        return self.layers(x)
