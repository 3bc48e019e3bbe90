"""Gradient utilities: clipping in place on `.grad` like `torch.nn.utils`, and zeroing."""
import numpy as np

from chainrule.autograd import step_call
from chainrule.errors import AnomalyError
from chainrule.tensor import Tensor


def _grads(parameters):
    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    return [p.grad for p in parameters if p.grad is not None]


def _set(g, data):
    """Write `data` into the gradient Tensor `g` (in place when its array allows it)."""
    if g.data.flags.writeable:
        np.copyto(g.data, data, casting="same_kind")
    else:
        g.data = np.asarray(data, dtype=g.data.dtype)
    g._version[0] += 1


@step_call
def zero_grads(parameters, set_to_none=True):
    """Forget gradients: `p.grad = None`, or zero `p.grad` in place, cut from any graph (what
    `Module.zero_grad` and `Optimizer.zero_grad` do)."""
    for p in parameters:
        g = p.grad
        if g is None:
            continue
        if set_to_none:
            p.grad = None
            continue
        g.detach_()
        if g.data.flags.writeable:
            g.data.fill(0)
        else:
            g.data = np.zeros_like(g.data)
        g._version[0] += 1


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False):
    """The `norm_type`-norm of all `tensors` (Tensors or gradients) as one concatenated vector,
    as a 0-d Tensor."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return Tensor._make(np.asarray(0.0, dtype=np.float32))
    norms = [np.linalg.norm(t.data.ravel(), norm_type) for t in tensors]
    total = np.linalg.norm(np.stack(norms), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise AnomalyError(f"the total norm of order {norm_type} of the gradients is {total}, so "
                           "it cannot be clipped; pass error_if_nonfinite=False to scale by it "
                           "anyway")
    return Tensor._make(np.asarray(total, dtype=np.result_type(*norms)))


@step_call
def clip_grads_with_norm_(parameters, max_norm, total_norm):
    """Scale every `.grad` by min(max_norm / (total_norm + 1e-6), 1)."""
    coef = min(float(max_norm) / (float(total_norm) + 1e-6), 1.0)
    for g in _grads(parameters):
        _set(g, g.data * coef)


@step_call
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Rescale the gradients of `parameters` so that their joint `norm_type`-norm is at most
    `max_norm`; return that norm (before clipping) as a 0-d Tensor."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


@step_call
def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient of `parameters` to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        _set(g, np.clip(g.data, -clip_value, clip_value))
