"""Jacobians and their products, as PyTorch's `torch.autograd.functional`, from reverse mode alone.

For f: inputs -> outputs with Jacobian J:
    vjp(f, x, v) = v^T J   one reverse sweep (what backward() does, with the seed v)
    jvp(f, x, v) = J v     the double-vjp trick: g(u) = J^T u is linear in u, so the vjp of g
                           with respect to u, seeded with v, is (J^T)^T v = J v (needs
                           create_graph=True on the first sweep)
    jacobian(f, x)         one vjp per output element (reverse mode) or one jvp per input
                           element (forward mode)
    hvp(f, x, v) = H v     the vjp of the gradient (H is symmetric)
`compare_gradient_methods` computes one gradient three ways and counts what each cost.
Inputs are a Tensor or a tuple of Tensors; results come back in the same form.
"""
import time
from typing import NamedTuple

import numpy as np

from chainrule import autograd
from chainrule.autograd import enable_grad, no_grad, trace_ops
from chainrule.errors import ArgumentError, GraphError, fmt_shape, shape_error
from chainrule.ops import Clone, stack
from chainrule.tensor import Tensor


# ---- arguments and results ------------------------------------------------------------------
def _as_tuple(x, what, fn):
    if isinstance(x, Tensor):
        return False, (x,)
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return True, tuple(x)
    raise ArgumentError(f"{fn}: {what} must be a Tensor or a tuple of Tensors, "
                        f"got {type(x).__name__}")


def _prepare(inputs, create_graph):
    """Leaves to differentiate with respect to. Under create_graph an input that requires grad
    stays connected (through a Clone node), so the result can be differentiated further."""
    return tuple(Clone.apply(t) if create_graph and t.requires_grad
                 else t.detach().requires_grad_(True) for t in inputs)


def _vectors(v, like, fn, what):
    """v as a tuple of arrays/Tensors shaped like `like`; None is allowed for single elements."""
    if v is None:
        if any(t.data.size != 1 for t in like):
            raise ArgumentError(f"{fn}: v can be omitted only when the {what} have a single "
                                f"element; give v of shape "
                                + ", ".join(fmt_shape(t.shape) for t in like))
        return tuple(Tensor._make(np.ones_like(t.data)) for t in like)
    _, v = _as_tuple(v, "v", fn)
    if len(v) != len(like):
        raise ArgumentError(f"{fn}: v has {len(v)} tensors, the {what} have {len(like)}")
    for a, t in zip(v, like):
        if a.shape != t.shape:
            raise shape_error(fn, a.shape, t.shape, detail=f"v must have the shape of the {what}")
    return v


def _call(func, inputs, fn):
    with enable_grad():
        out = func(*inputs)
    return _as_tuple(out, "the outputs of func", fn)


def _grad(outputs, inputs, seeds, create_graph, strict, fn):
    """vjp of outputs with respect to inputs seeded with `seeds`; zeros where nothing flows."""
    pairs = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
    if strict and len(pairs) < len(outputs):
        raise GraphError(f"{fn} (strict): an output does not depend on the inputs")
    grads = [None] * len(inputs)
    if pairs:
        grads = autograd.grad([o for o, _ in pairs], inputs, [s for _, s in pairs],
                              retain_graph=True, create_graph=create_graph, allow_unused=True)
    if strict and any(g is None for g in grads):
        raise GraphError(f"{fn} (strict): an input is not used to compute the outputs")
    return tuple(Tensor._make(np.zeros_like(t.data)) if g is None else g
                 for g, t in zip(grads, inputs))


def _post(tensors, create_graph, as_tuple):
    out = tuple(t if create_graph else Tensor._make(t.data) for t in tensors)
    return out if as_tuple else out[0]


# ---- the products -----------------------------------------------------------------------------
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product, one reverse sweep. `v` has the
    outputs' shapes (omit it for a single-element output)."""
    in_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
    inputs = _prepare(inputs, create_graph)
    out_tuple, outputs = _call(func, inputs, "vjp")
    v = _vectors(v, outputs, "vjp", "outputs")
    grads = _grad(outputs, inputs, v, create_graph, strict, "vjp")
    return _post(outputs, create_graph, out_tuple), _post(grads, create_graph, in_tuple)


def _transposed(outputs, inputs, strict, fn):
    """g(u) = J^T u with u a zero Tensor per output that requires grad: linear in u."""
    u = tuple(Tensor._make(np.zeros_like(o.data), True) for o in outputs)
    return u, _grad(outputs, inputs, u, True, strict, fn)


def _forward(u, g, v, create_graph):
    """J v, as the vjp of g(u) = J^T u with respect to u, seeded with v."""
    return _grad(g, u, v, create_graph, False, "jvp")


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product (forward mode), by the double-vjp trick.
    `v` has the inputs' shapes (omit it for a single-element input)."""
    in_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
    inputs = _prepare(inputs, create_graph)
    v = _vectors(v, inputs, "jvp", "inputs")
    out_tuple, outputs = _call(func, inputs, "jvp")
    u, g = _transposed(outputs, inputs, strict, "jvp")
    return _post(outputs, create_graph, out_tuple), _post(_forward(u, g, v, create_graph),
                                                          create_graph, out_tuple)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v) for a scalar func: the Hessian-vector product, the vjp of the
    gradient. `v` has the inputs' shapes."""
    in_tuple, inputs = _as_tuple(inputs, "inputs", "hvp")
    inputs = _prepare(inputs, create_graph)
    v = _vectors(v, inputs, "hvp", "inputs")
    out_tuple, outputs = _call(func, inputs, "hvp")
    if out_tuple or outputs[0].data.size != 1:
        raise ArgumentError("hvp: func must return a Tensor with a single element")
    grads = _grad(outputs, inputs, (Tensor._make(np.ones_like(outputs[0].data)),), True, strict,
                  "hvp")
    hv = _grad(grads, inputs, v, create_graph, strict, "hvp")
    return _post(outputs, create_graph, False), _post(hv, create_graph, in_tuple)


def _unit(like, k):
    e = np.zeros(like.data.size, dtype=like.data.dtype)
    e[k] = 1
    return Tensor._make(e.reshape(like.shape))


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of func at inputs, of shape output.shape + input.shape; a tuple over inputs
    and/or outputs when those are tuples (outputs first). "reverse-mode" runs one vjp per
    output element, "forward-mode" one jvp per input element. `vectorize` is accepted for
    PyTorch compatibility and ignored (the products are computed one by one)."""
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ArgumentError(f"jacobian: strategy must be 'reverse-mode' or 'forward-mode', "
                            f"got {strategy!r}")
    in_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    inputs = _prepare(inputs, create_graph)
    out_tuple, outputs = _call(func, inputs, "jacobian")
    blocks = [[None] * len(inputs) for _ in outputs]
    if strategy == "reverse-mode":
        for i, o in enumerate(outputs):
            rows = [_grad((o,), inputs, (_unit(o, k),), create_graph, strict, "jacobian")
                    for k in range(o.data.size)]
            for j, x in enumerate(inputs):
                blocks[i][j] = _assemble([r[j] for r in rows], o.shape, x, 0)
    else:
        u, g = _transposed(outputs, inputs, strict, "jacobian")
        for j, x in enumerate(inputs):
            cols = [_forward(u, g, tuple(_unit(x, k) if m == j else
                                         Tensor._make(np.zeros_like(p.data))
                                         for m, p in enumerate(inputs)), create_graph)
                    for k in range(x.data.size)]
            for i, o in enumerate(outputs):
                blocks[i][j] = _assemble([c[i] for c in cols], o.shape, x, -1)
    blocks = [tuple(t if create_graph else Tensor._make(t.data) for t in row) for row in blocks]
    if not in_tuple:
        blocks = [row[0] for row in blocks]
    return tuple(blocks) if out_tuple else blocks[0]


def _assemble(pieces, out_shape, x, axis):
    """Stack per-element vjps (axis 0) or jvps (axis -1) into out_shape + x.shape."""
    if not pieces:
        return Tensor._make(np.zeros(tuple(out_shape) + x.shape, x.data.dtype))
    if axis == 0:
        return stack(pieces, 0).reshape(tuple(out_shape) + x.shape)
    flat = stack([p.reshape(-1) for p in pieces], 1)
    return flat.reshape(tuple(out_shape) + x.shape)


# ---- one gradient, three ways -------------------------------------------------------------------
class MethodResult(NamedTuple):
    method: str
    grad: np.ndarray        # the gradient, shaped like x
    evaluations: int        # calls of the function (forward passes)
    backward_sweeps: int    # reverse sweeps through a recorded graph
    ops: int                # Function.apply calls (forward, and backward under create_graph)
    seconds: float
    note: str


class GradientComparison(dict):
    """method name -> MethodResult; `str()` is a table for printing."""

    def max_difference(self, reference="reverse-mode"):
        ref = self[reference].grad
        return {k: float(np.abs(r.grad - ref).max(initial=0.0)) for k, r in self.items()}

    def __str__(self):
        diff = self.max_difference() if "reverse-mode" in self else {}
        head = (f"{'method':<20}{'f evaluations':>14}{'backward sweeps':>17}{'ops':>9}"
                f"{'seconds':>11}{'max |diff|':>12}")
        lines = [head, "-" * len(head)]
        for k, r in self.items():
            lines.append(f"{k:<20}{r.evaluations:>14}{r.backward_sweeps:>17}{r.ops:>9}"
                         f"{r.seconds:>11.4f}{diff.get(k, float('nan')):>12.2e}")
        lines += [f"{k}: {r.note}" for k, r in self.items()]
        return "\n".join(lines)


class _Counter:
    def __init__(self):
        self.ops = 0

    def __call__(self, cls, ctx, args, out):
        self.ops += 1


def compare_gradient_methods(fn, x, eps=None,
                             methods=("reverse-mode", "finite-differences", "forward-mode")):
    """The gradient of a scalar function `fn(x)` at the Tensor `x` (n = x.numel() parameters)
    computed by reverse mode (1 forward pass + 1 backward sweep), central finite differences
    (2n forward passes, step `eps`, default eps_dtype ** (1/3)) and forward mode (n JVPs, one
    per input direction), each with its cost: a GradientComparison (method -> MethodResult).
    Use float64 for finite differences that agree to many digits."""
    x = x.detach()
    n = x.data.size
    results = GradientComparison()
    unknown = set(methods) - {"reverse-mode", "finite-differences", "forward-mode"}
    if unknown:
        raise ArgumentError(f"compare_gradient_methods: unknown methods {sorted(unknown)}")
    for method in methods:
        count = _Counter()
        began = time.perf_counter()
        with trace_ops(count):
            if method == "reverse-mode":
                leaf = x.detach().requires_grad_(True)
                with enable_grad():
                    y = fn(leaf)
                g = autograd.grad(y, leaf)[0].data
                evals, sweeps = 1, 1
                note = "one forward pass, then one backward sweep gives all n partial derivatives"
            elif method == "finite-differences":
                g, evals, sweeps = _central_differences(fn, x, eps), 2 * n, 0
                note = f"(f(x + h e_j) - f(x - h e_j)) / 2h for each of the n = {n} coordinates"
            else:
                g = np.empty(x.shape, dtype=x.data.dtype)
                for k in range(n):
                    g.flat[k] = jvp(fn, x, _unit(x, k))[1].item()
                evals, sweeps = n, 2 * n
                note = (f"one JVP per input direction, n = {n}; each JVP here is the double-vjp "
                        "trick (1 forward + 2 reverse sweeps); a dual-number engine would do "
                        "each in one forward pass carrying tangents")
        results[method] = MethodResult(method, g, evals, sweeps, count.ops,
                                       time.perf_counter() - began, note)
    return results


def _central_differences(fn, x, eps):
    h = eps if eps is not None else float(np.finfo(x.data.dtype).eps) ** (1 / 3)
    base = x.data
    g = np.empty(base.shape, dtype=np.float64)
    with no_grad():
        for k in range(base.size):
            plus, minus = base.copy(), base.copy()
            plus.flat[k] += h
            minus.flat[k] -= h
            g.flat[k] = (fn(Tensor._make(plus)).item() - fn(Tensor._make(minus)).item()) / (2 * h)
    return g.astype(base.dtype)
