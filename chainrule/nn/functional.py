"""cr.nn.functional (`from chainrule.nn import functional as F`): activations, dropout,
normalisation, embedding, linear and the losses as functions of Tensors.

Everything here is composed from primitives (no backward code); `linear`, `linear_relu` and
`perceptron` are the engine's fused nodes and `gelu` uses the Erf primitive. Activations are
element-wise: any shape in, the same shape out. `inplace=` is accepted for PyTorch
compatibility; results are always new tensors.
"""
import math

import numpy as np

from chainrule import ops
from chainrule.autograd import no_grad
from chainrule.errors import ArgumentError, shape_error
from chainrule.functional import (linear, linear_relu, one_hot,  # noqa: F401  (re-exported)
                                  perceptron)
from chainrule.ops import log_softmax, softmax  # noqa: F401
from chainrule.random import rng
from chainrule.tensor import Tensor


def relu(x, inplace=False):
    """max(x, 0)."""
    return ops.ReLU.apply(x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x."""
    return ops.where(x > 0, x, x * negative_slope)


def elu(x, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x) - 1) (exp taken of min(x, 0): no overflow)."""
    return ops.where(x > 0, x, ops.Expm1.apply(ops.clamp(x, max=0.0)) * alpha)


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF: 0.5 x (1 + erf(x / sqrt 2)); with
    approximate='tanh', 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "none":
        return x * 0.5 * (ops.Erf.apply(x * (1 / math.sqrt(2))) + 1)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * 0.5 * (ops.Tanh.apply(inner) + 1)
    raise ArgumentError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    return x * ops.Sigmoid.apply(x)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch).

    exp is taken of min(beta x, threshold), so the branch not chosen never overflows (an inf
    there would turn the gradient into 0 * inf = NaN)."""
    z = x * beta if beta != 1 else x
    soft = ops.Log1p.apply(ops.Exp.apply(ops.clamp(z, max=float(threshold))))
    return ops.where(z > threshold, x, soft / beta if beta != 1 else soft)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    return ops.Sigmoid.apply(x)


def tanh(x):
    return ops.Tanh.apply(x)


def dropout(x, p=0.5, training=True, inplace=False, generator=None):
    """Inverted dropout: each element zeroed with probability p, survivors scaled by 1/(1-p), so
    the expected value is unchanged; the identity when not `training` or p == 0. The mask is
    drawn from `generator` (cr's default generator when None, so cr.manual_seed repeats it)."""
    if not 0 <= p <= 1:
        raise ArgumentError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * np.zeros(x.shape, dtype=x.dtype)
    mask = (rng(generator).random(x.shape) >= p).astype(x.dtype)
    mask *= 1 / (1 - p)
    return x * mask


def _normalized(x, axes, eps):
    """((x - mean) / sqrt(var + eps), mean, var) over `axes`, biased variance, dims kept."""
    mean = x.mean(axes, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(axes, keepdim=True)
    return centred / ops.Sqrt.apply(var + eps), mean, var


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) dims of x (..., *normalized_shape), then
    scale by weight and shift by bias (both of shape normalized_shape) if given."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape or x.ndim < len(shape):
        raise shape_error("layer_norm", x.shape, shape,
                          detail="the input's last dims must equal normalized_shape")
    y = _normalized(x, tuple(range(x.ndim - len(shape), x.ndim)), eps)[0]
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise each channel of x (N, C) or (N, C, L) over all dims but the channel dim.

    Training: batch statistics (biased variance), and running_mean/running_var (C,), if given,
    move toward them by `momentum` (the running variance is the unbiased one, as PyTorch).
    Otherwise: the running statistics. weight and bias (C,) scale and shift."""
    if x.ndim < 2:
        raise shape_error("batch_norm", x.shape, detail="expected an input (N, C) or (N, C, L)")
    channels = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, channels) + (1,) * (x.ndim - 2)
    if training:
        n = x.data.size // max(channels, 1)
        if n <= 1:
            raise ArgumentError(f"batch_norm: expected more than 1 value per channel when "
                                f"training, got an input of shape {x.shape}")
        y, mean, var = _normalized(x, axes, eps)
        with no_grad():
            if running_mean is not None:
                running_mean.copy_(running_mean.data * (1 - momentum)
                                   + mean.data.reshape(channels) * momentum)
            if running_var is not None:
                running_var.copy_(running_var.data * (1 - momentum)
                                  + var.data.reshape(channels) * (momentum * n / (n - 1)))
    else:
        if running_mean is None or running_var is None:
            raise ArgumentError("batch_norm: running_mean and running_var are needed when not "
                                "training")
        y = (x - running_mean.reshape(shape)) / ops.Sqrt.apply(running_var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def embedding(input, weight, padding_idx=None):
    """Rows of weight (num_embeddings, dim) picked by the integer indices `input` (...,):
    output (..., dim). The row at padding_idx is returned as is but gets no gradient."""
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.kind not in "iu":
        raise ArgumentError(f"embedding: indices must be integers, got {idx.dtype}")
    num = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        raise ArgumentError(f"embedding: indices must lie in [0, {num}), got values from "
                            f"{idx.min()} to {idx.max()}")
    out = weight[idx]
    if padding_idx is None:
        return out
    padding_idx = padding_idx % num
    return ops.where((idx != padding_idx)[..., None], out, out.detach())


from chainrule.nn.losses import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: E402,F401
                                 cross_entropy, huber_loss, l1_loss, mse_loss, nll_loss)
