"""gradcheck and gradgradcheck: autograd against float64 central differences."""
import numpy as np

from chainrule import autograd
from chainrule.errors import ArgumentError, ChainruleError
from chainrule.tensor import Tensor


class GradcheckError(ChainruleError, AssertionError):
    """Analytical and numerical gradients disagree."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    return (out,) if isinstance(out, Tensor) else tuple(o for o in out if o is not None)


def _projected(fn, inputs, weights):
    """sum_k <output_k, weight_k>: one scalar whose gradient is the vector-Jacobian product."""
    total = 0.0
    for o, w in zip(_outputs(fn, inputs), weights):
        total = total + (o * w).sum()
    return total


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Check d fn / d inputs for every float64 input that requires grad.

    The outputs are projected on random weights (a non-trivial upstream gradient), and the
    gradient autograd gives for that projection is compared element by element with central
    differences (f(x + eps) - f(x - eps)) / 2 eps. Raises GradcheckError naming the worst element.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ArgumentError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ArgumentError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64, finite "
                                "differences are meaningless in lower precision")
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(o.shape) for o in _outputs(fn, inputs)]
    total = _projected(fn, inputs, weights)
    if isinstance(total, Tensor) and total.requires_grad:
        analytic = autograd.grad(total, [inputs[i] for i in checked], allow_unused=True)
    else:  # nothing recorded: autograd says the outputs are constant, every derivative 0
        analytic = [None] * len(checked)
    for i, a in zip(checked, analytic):
        x = inputs[i].data
        numeric = np.zeros_like(x)
        with autograd.no_grad():
            for k in np.ndindex(x.shape):  # in place, whatever the memory order of x
                orig = x[k]
                x[k] = orig + eps
                up = float(_projected(fn, inputs, weights).data)
                x[k] = orig - eps
                down = float(_projected(fn, inputs, weights).data)
                x[k] = orig
                numeric[k] = (up - down) / (2 * eps)
        a = np.zeros_like(x) if a is None else a.data
        bad = ~np.isclose(a, numeric, rtol=rtol, atol=atol)
        if bad.any():
            k = np.unravel_index(np.argmax(np.abs(a - numeric) * bad), x.shape)
            msg = (f"gradcheck: input {i} of shape {x.shape}: {int(bad.sum())} of {x.size} elements "
                   f"differ; worst at {tuple(int(j) for j in k)}: autograd {a[k]!r}, numerical "
                   f"{numeric[k]!r}")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=1, raise_exception=True):
    """gradcheck of the gradient itself (built with create_graph=True): second derivatives."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    rng = np.random.default_rng(seed + 1000)
    weights = [rng.standard_normal(o.shape) for o in _outputs(fn, inputs)]
    wanted = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]

    def first_derivative(*xs):
        ws = [t for t in xs if isinstance(t, Tensor) and t.requires_grad]
        with autograd.enable_grad():  # also while gradcheck evaluates it under no_grad
            grads = autograd.grad(_projected(fn, xs, weights), ws, create_graph=True,
                                  allow_unused=True)
        # constant gradients stay too: their derivative 0 is a claim finite differences check
        return tuple(g for g in grads if g is not None)

    if not wanted:
        raise ArgumentError("gradgradcheck: no input requires grad")
    return gradcheck(first_derivative, inputs, eps, atol, rtol, seed, raise_exception)
