"""Losses, functional and as modules: compositions of primitives, no backward code of their own.

Every loss takes `reduction` in "mean" / "sum" / "none" with PyTorch's semantics. Element-wise
losses need a target of the input's shape: a different one would broadcast and give a wrong loss
without a word, so it is an error instead.
"""
import numpy as np

from chainrule import functional as F
from chainrule import ops
from chainrule.errors import ArgumentError, shape_error
from chainrule.nn.module import Module
from chainrule.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _operand(x, like):
    """A Tensor that requires grad stays itself; anything else becomes a constant array of
    `like`'s dtype (so a float64 target does not turn a float32 loss into float64)."""
    if isinstance(x, Tensor) and x.requires_grad:
        return x
    return np.asarray(_array(x), dtype=like.dtype)


def _same_shape(name, input, target):
    if np.shape(_array(target)) != input.shape:
        raise shape_error(name, input.shape, np.shape(_array(target)),
                          detail="input and target must have the same shape (broadcasting them "
                                 "would silently give a wrong loss)")
    return _operand(target, input)


# ---- regression ------------------------------------------------------------------------------
def mse_loss(input, target, reduction="mean"):
    """(input - target)**2, reduced; input and target of the same shape."""
    _check_reduction("mse_loss", reduction)
    d = input - _same_shape("mse_loss", input, target)
    return _reduce(d * d, reduction)


def l1_loss(input, target, reduction="mean"):
    """|input - target|, reduced; input and target of the same shape."""
    _check_reduction("l1_loss", reduction)
    return _reduce((input - _same_shape("l1_loss", input, target)).abs(), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d**2 where d = |input - target| < delta, else delta (d - 0.5 delta); reduced."""
    _check_reduction("huber_loss", reduction)
    if not delta > 0:
        raise ArgumentError(f"huber_loss: delta must be positive, got {delta}")
    d = (input - _same_shape("huber_loss", input, target)).abs()
    return _reduce(ops.where(d < delta, d * d * 0.5, (d - 0.5 * delta) * delta), reduction)


# ---- binary classification ---------------------------------------------------------------------
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """-[pos_weight y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] * weight from logits x.

    Computed as max(x, 0) - x y + log1p(exp(-|x|)), which never overflows. `weight` broadcasts
    to the input; `pos_weight` (C,) weighs the positive term per class (last dim)."""
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    y = _same_shape("binary_cross_entropy_with_logits", input, target)
    # maximum() splits the gradient at the tie x = 0, so the kinks of max(x, 0) and |x| add up
    # to the true derivative sigmoid(0) - y there (relu's 0 would give -y). Second derivatives
    # at exactly x = 0 still miss sigmoid'(0): the kinks cancel to first order only.
    soft = (-input.abs()).exp().log1p()
    loss = ops.maximum(input, 0.0) - input * y + soft
    if pos_weight is not None:  # softplus(-x) is weighted by 1 + (pos_weight - 1) y
        loss = loss + (_operand(pos_weight, input) - 1) * y * (ops.maximum(-input, 0.0) + soft)
    if weight is not None:
        loss = loss * _operand(weight, input)
    return _reduce(loss, reduction)


def _clamped_log(p):
    """max(log p, -100) as in PyTorch's BCE. p is first floored at the smallest subnormal number,
    so log(0) is never -inf (whose gradient 0 * inf would be NaN); the floor is below exp(-100),
    so the forward value is unchanged and the clamped gradient stays 0."""
    return p.clamp(min=float(np.finfo(p.dtype).smallest_subnormal)).log().clamp(min=-100.0)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-[y log p + (1 - y) log(1 - p)] * weight for probabilities p in [0, 1], each log clamped
    at -100 as PyTorch does. The gradient is the exact one, (p - y) / (p (1 - p)), zero where a
    log is clamped (PyTorch instead floors p (1 - p) at 1e-12); prefer the `_with_logits` form."""
    _check_reduction("binary_cross_entropy", reduction)
    y = _same_shape("binary_cross_entropy", input, target)
    p = input.data
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ArgumentError(f"binary_cross_entropy: input must be probabilities in [0, 1], got "
                            f"values from {p.min()} to {p.max()}")
    loss = -(y * _clamped_log(input) + (1 - y) * _clamped_log(1 - input))
    if weight is not None:
        loss = loss * _operand(weight, input)
    return _reduce(loss, reduction)


# ---- multi-class classification ----------------------------------------------------------------
def _num_classes(name, input):
    if input.ndim == 0:
        raise shape_error(name, input.shape, detail="input needs a class dimension")
    return input.shape[1] if input.ndim >= 2 else input.shape[0]


def _class_indices(name, input, target, ignore_index, classes):
    """Integer targets (N, d1, ...) for input (N, C, d1, ...), or () for input (C,)."""
    t = _array(target)
    if t.shape != (input.shape[:1] + input.shape[2:] if input.ndim >= 2 else ()):
        probs = ", or class probabilities of the input's shape" if name == "cross_entropy" else ""
        raise shape_error(name, input.shape, t.shape,
                          detail="expected input (N, C, d1, ...) with class indices "
                                 f"(N, d1, ...){probs}")
    if t.dtype.kind not in "iu":
        raise ArgumentError(f"{name}: class indices must be integers, got {t.dtype}")
    bad = ((t < 0) | (t >= classes)) & (t != ignore_index)
    if bad.any():
        got = ", ".join(map(str, np.unique(t[bad])[:5]))
        raise ArgumentError(f"{name}: class indices must lie in [0, {classes}) or equal "
                            f"ignore_index={ignore_index}, got {got}")
    return t


def _class_weight(name, weight, classes, dtype):
    if weight is None:
        return None
    w = np.asarray(_array(weight), dtype=dtype)
    if w.shape != (classes,):
        raise shape_error(name, w.shape,
                          detail=f"weight must have one entry per class, ({classes},)")
    return w


def _nll(logp, t, w, ignore_index, reduction, smoothing=0.0):
    """-w[t] logp[t] (and the label-smoothing term) per target from log-probabilities logp
    (N, C, d1, ...) or (C,). "mean" divides by the summed weights of the non-ignored targets."""
    if logp.ndim == 1:
        out = _nll(F.unsqueeze(logp, 0), t[None], w, ignore_index, reduction, smoothing)
        return out.reshape(()) if reduction == "none" else out
    keep = (t != ignore_index).astype(logp.dtype)
    safe = np.where(t != ignore_index, t, 0)
    t_weight = keep if w is None else w[safe] * keep
    picked = F.squeeze(F.gather(logp, 1, safe[:, None]), 1)
    loss = picked * (t_weight * -(1.0 - smoothing))
    if smoothing:  # PyTorch: (1 - s) nll + s / C * (-sum_c w_c logp_c)
        classes = logp.shape[1]
        every = logp if w is None else logp * w.reshape((1, classes) + (1,) * (logp.ndim - 2))
        loss = loss + every.sum(1) * (keep * (-smoothing / classes))
    if reduction == "none":
        return loss
    total, denom = loss.sum(), float(t_weight.sum())
    if reduction == "sum":
        return total
    return total * (1.0 / denom if denom else float("nan"))  # all ignored: NaN, as PyTorch


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-weight[t] input[n, t] for log-probabilities input (N, C, d1, ...) and class indices
    target (N, d1, ...), or input (C,) and target (). Targets equal to ignore_index count for
    nothing; "mean" divides by the summed weights of the others."""
    _check_reduction("nll_loss", reduction)
    classes = _num_classes("nll_loss", input)
    t = _class_indices("nll_loss", input, target, ignore_index, classes)
    w = _class_weight("nll_loss", weight, classes, input.dtype)
    return _nll(input, t, w, ignore_index, reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy of logits input (N, C, d1, ...) or (C,) against class indices
    (N, d1, ...) / () or class probabilities of the input's shape, via log_softmax.

    `weight` (C,) weighs each class; `label_smoothing` s mixes the target with the uniform
    distribution: (1 - s) target + s / C. With class indices, "mean" divides by the summed
    weights of the non-ignored targets; with probabilities, by the number of targets."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError("cross_entropy: label_smoothing must lie in [0, 1], got "
                            f"{label_smoothing}")
    classes = _num_classes("cross_entropy", input)
    w = _class_weight("cross_entropy", weight, classes, input.dtype)
    dim = 1 if input.ndim >= 2 else 0
    t = _array(target)
    if t.dtype.kind == "f" and t.shape == input.shape:  # class probabilities
        y = _operand(target, input)
        if label_smoothing:
            y = y * (1.0 - label_smoothing) + label_smoothing / classes
        if w is not None:
            y = y * w.reshape((classes,) + (1,) * (input.ndim - dim - 1))
        return _reduce(-(ops.log_softmax(input, dim) * y).sum(dim), reduction)
    if (input.ndim == 2 and w is None and not label_smoothing and t.dtype.kind in "iu"
            and t.shape == input.shape[:1] and not 0 <= ignore_index < classes):
        try:  # the fused node: the same value, faster; it checks the targets' range itself
            return F.cross_entropy(input, t, reduction)
        except ArgumentError:
            pass  # some targets are out of range or equal ignore_index: the general path decides
    t = _class_indices("cross_entropy", input, t, ignore_index, classes)
    return _nll(ops.log_softmax(input, dim), t, w, ignore_index, reduction, label_smoothing)


# ---- modules -----------------------------------------------------------------------------------
def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated size_average / reduce pair decides the reduction if either is set."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


class _Loss(Module):
    _defaults = {"reduction": "mean"}  # repr shows the options that differ from these

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = _legacy_reduction(size_average, reduce, reduction)
        _check_reduction(type(self).__name__, self.reduction)

    def extra_repr(self):
        return ", ".join(f"{k}={getattr(self, k)!r}" for k, default in self._defaults.items()
                         if getattr(self, k) != default)


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)  # in state_dict, as in PyTorch


class MSELoss(_Loss):
    """Mean squared error: forward(input, target) with target of the input's shape."""

    def forward(self, input, target):
        return mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: forward(input, target) with target of the input's shape."""

    def forward(self, input, target):
        return l1_loss(input, target, self.reduction)


class HuberLoss(_Loss):
    """Quadratic below `delta`, linear above: forward(input, target), same shapes."""
    _defaults = {"reduction": "mean", "delta": 1.0}

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return huber_loss(input, target, self.reduction, self.delta)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood: forward(log_probs (N, C, ...), class indices (N, ...))."""
    _defaults = {"reduction": "mean", "ignore_index": -100}

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy from logits: forward(logits (N, C, ...), class indices (N, ...) or class
    probabilities (N, C, ...))."""
    _defaults = {"reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0}

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                             self.label_smoothing)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities: forward(input, target), same shapes."""

    def forward(self, input, target):
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy from logits, stable: forward(input, target), same shapes."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                self.pos_weight)
