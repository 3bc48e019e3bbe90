"""`cr.explain(loss, wrt)`: the chain rule for one parameter, printed step by step and checked.

Every path from the loss back to `wrt` is a product of local derivatives. `explain` runs each
node's own backward along each path (the engine's formulas, the same numbers autograd uses),
starting from dL/dL = 1, prints what arrives at every step, sums the paths, and asserts that the
sum equals `cr.grad(loss, wrt)`. Hooks are not run, and no `.grad` is touched.
"""
import sys

import numpy as np

from chainrule import autograd
from chainrule.autograd import no_grad
from chainrule.errors import ArgumentError, GradientMismatch, GraphError, fmt_shape
from chainrule.tensor import Tensor
from chainrule.viz.graph import output_shapes, ops_behind, param_names, quiet_grad, summary

MAX_PATHS = 8  # printed in full; beyond that the paths are summed by one merged sweep

# op -> (default argument names, {argument position: (local derivative, the chain-rule step)}).
# In the templates {a0}, {a1}, ... name the inputs, {y} the output, {g} the gradient dL/dy.
_UNARY = {
    "ReLU": ("d relu({a0})/d{a0} = 1[{a0} > 0]", "{g} * 1[{a0} > 0]"),
    "Sigmoid": ("d sigmoid({a0})/d{a0} = {y} (1 - {y})", "{g} * {y} * (1 - {y})"),
    "Tanh": ("d tanh({a0})/d{a0} = 1 - {y}^2", "{g} * (1 - {y}^2)"),
    "Exp": ("d exp({a0})/d{a0} = exp({a0}) = {y}", "{g} * {y}"),
    "Log": ("d log({a0})/d{a0} = 1 / {a0}", "{g} / {a0}"),
    "Log1p": ("d log(1 + {a0})/d{a0} = 1 / (1 + {a0})", "{g} / (1 + {a0})"),
    "Expm1": ("d (exp({a0}) - 1)/d{a0} = exp({a0})", "{g} * ({y} + 1)"),
    "Sqrt": ("d sqrt({a0})/d{a0} = 1 / (2 sqrt({a0}))", "{g} / (2 {y})"),
    "Sin": ("d sin({a0})/d{a0} = cos({a0})", "{g} * cos({a0})"),
    "Cos": ("d cos({a0})/d{a0} = -sin({a0})", "-{g} * sin({a0})"),
    "Abs": ("d |{a0}|/d{a0} = sign({a0})", "{g} * sign({a0})"),
    "Erf": ("d erf({a0})/d{a0} = 2/sqrt(pi) exp(-{a0}^2)", "{g} * 2/sqrt(pi) exp(-{a0}^2)"),
    "Clone": ("d {a0}/d{a0} = 1", "{g}"),
    "Cast": ("d {a0}/d{a0} = 1 (a change of dtype)", "{g}, cast back"),
    "Clamp": ("d clamp({a0})/d{a0} = 1 inside [low, high], 0 outside",
              "{g} * 1[low <= {a0} <= high]"),
    "Sum": ("d sum({a0})/d{a0} = 1 for every summed element", "{g} copied to every summed element"),
    "Amax": ("d max({a0})/d{a0} = 1 at the maximum (ties share), 0 elsewhere",
             "{g} sent to the maximum"),
    "Amin": ("d min({a0})/d{a0} = 1 at the minimum (ties share), 0 elsewhere",
             "{g} sent to the minimum"),
    "Prod": ("d prod({a0})/d{a0} = the product of the other elements", "{g} * prod(others)"),
    "Logsumexp": ("d logsumexp({a0})/d{a0} = softmax({a0})", "{g} * softmax({a0})"),
    "Softmax": ("d softmax({a0})/d{a0} = diag({y}) - {y} {y}^T", "{y} * ({g} - sum({g} * {y}))"),
    "LogSoftmax": ("d log_softmax({a0})/d{a0} = I - softmax({a0})",
                   "{g} - softmax({a0}) * sum({g})"),
    "Reshape": ("reshape moves elements: derivative 1 per element", "{g} reshaped back"),
    "Permute": ("permute moves axes: derivative 1 per element", "{g} permuted back"),
    "Expand": ("broadcasting copies {a0}: derivative 1 per copy", "{g} summed over the copies"),
    "Index": ("indexing picks elements of {a0}: derivative 1 where picked",
              "{g} put back into zeros"),
}
RULES = {name: (("h",), {0: rule}) for name, rule in _UNARY.items()}
RULES.update({
    "Cat": (("dim",), {}), "Stack": (("dim",), {}),  # their rules depend on the position
    "Perceptron": (("x", "relu_last"), {}),  # the fused MLP: its rules depend on the layer
    "Linear": (("x", "W", "b"), {
        0: ("d({a0} {a1}^T + {a2})/d{a0} = {a1}", "{g} @ {a1}"),
        1: ("d({a0} {a1}^T + {a2})/d{a1} = {a0} (one copy per output unit)", "({g})^T @ {a0}"),
        2: ("d({a0} {a1}^T + {a2})/d{a2} = 1", "{g} summed over the rows")}),
    "Matmul": (("A", "B"), {
        0: ("d({a0} @ {a1})/d{a0} = {a1}^T", "{g} @ {a1}^T"),
        1: ("d({a0} @ {a1})/d{a1} = {a0}^T", "{a0}^T @ {g}")}),
    "Add": (("a", "b"), {
        0: ("d({a0} + {a1})/d{a0} = 1", "{g}"),
        1: ("d({a0} + {a1})/d{a1} = 1", "{g}")}),
    "Mul": (("a", "b"), {
        0: ("d({a0} * {a1})/d{a0} = {a1}", "{g} * {a1}"),
        1: ("d({a0} * {a1})/d{a1} = {a0}", "{g} * {a0}")}),
    "Div": (("a", "b"), {
        0: ("d({a0} / {a1})/d{a0} = 1 / {a1}", "{g} / {a1}"),
        1: ("d({a0} / {a1})/d{a1} = -{a0} / {a1}^2", "-{g} * {a0} / {a1}^2")}),
    "Pow": (("a", "b"), {
        0: ("d({a0}^{a1})/d{a0} = {a1} {a0}^({a1} - 1)", "{g} * {a1} {a0}^({a1} - 1)"),
        1: ("d({a0}^{a1})/d{a1} = {a0}^{a1} log {a0}", "{g} * {y} log {a0}")}),
    "Maximum": (("a", "b"), {
        0: ("d max({a0}, {a1})/d{a0} = 1[{a0} > {a1}] (1/2 on ties)", "{g} * 1[{a0} > {a1}]"),
        1: ("d max({a0}, {a1})/d{a1} = 1[{a1} > {a0}] (1/2 on ties)", "{g} * 1[{a1} > {a0}]")}),
    "Minimum": (("a", "b"), {
        0: ("d min({a0}, {a1})/d{a0} = 1[{a0} < {a1}] (1/2 on ties)", "{g} * 1[{a0} < {a1}]"),
        1: ("d min({a0}, {a1})/d{a1} = 1[{a1} < {a0}] (1/2 on ties)", "{g} * 1[{a1} < {a0}]")}),
    "Where": (("cond", "a", "b"), {
        1: ("d where(cond, {a1}, {a2})/d{a1} = 1[cond]", "{g} where cond, else 0"),
        2: ("d where(cond, {a1}, {a2})/d{a2} = 1[not cond]", "{g} where not cond, else 0")}),
})


def _rule(node, i, names):
    """(local derivative, chain-rule step) of `node` for its argument i, names filled in."""
    op = type(node).__name__
    if op == "SoftmaxCrossEntropy":
        n, red = len(node.target), node.reduction
        scale = f" / {n}" if red == "mean" else ""
        local = f"d CE({names[0]}, y)/d{names[0]} = (softmax({names[0]}) - onehot(y)){scale}"
        return local, "{g} * (softmax({a0}) - onehot(y))".format(g="{g}", a0=names[0]) + scale
    if op == "Perceptron":  # arguments x, relu_last, W(1), b(1), ..., W(L), b(L)
        layers = (len(node.needs_input_grad) - 2) // 2
        if i == 0:
            return (f"the fused {layers}-layer perceptron, back through every layer to its "
                    f"input: dL/dz(1) @ W(1)", "{g} carried down through each layer's ReLU mask "
                    f"and weight, then @ {names[2]}")
        l = (i - 2) // 2 + 1
        wrt = f"dL/dz({l})"
        if i % 2 == 0:
            return (f"layer {l} of the fused perceptron: d(h({l - 1}) W({l})^T + b({l}))/dW({l}) "
                    f"= h({l - 1})", f"({wrt})^T @ h({l - 1}), {wrt} carried down from {{g}}")
        return (f"layer {l} of the fused perceptron: d(h({l - 1}) W({l})^T + b({l}))/db({l}) = 1",
                f"{wrt} summed over the rows, {wrt} carried down from {{g}}")
    if op in ("Cat", "Stack"):
        return (f"{op.lower()} places argument {i} in the result: derivative 1 there",
                f"the slice of {{g}} belonging to {names[i]}")
    rules = RULES.get(op, ((), {}))[1]
    if i not in rules:
        return f"the local derivative of {op} for its argument {i}", f"{op}.backward({{g}})"
    fill = {f"a{k}": v for k, v in enumerate(names)}
    local, chain = (t.format(g="{g}", y="{y}", **fill) for t in rules[i])
    for v in names:  # d/dlayers.0.weight reads badly: d/d(layers.0.weight)
        if not v.isalnum():
            local = local.replace(f"/d{v}", f"/d({v})")
    return local, chain


class _Names:
    """Names for what flows through the graph: leaves from `params` (else leaf1, leaf2, ...),
    op outputs by their role (z: affine maps, h: activations, v: anything else) and L the loss."""

    ROLE = {"Linear": "z", "Matmul": "z", "Add": "z", "ReLU": "h", "Sigmoid": "h", "Tanh": "h"}

    def __init__(self, loss, nodes, params, wrt):
        self.of = {}
        known = param_names(params)
        count = {}
        for n in nodes:
            for _, p, _, _ in n.edges:
                if isinstance(p, Tensor) and p not in self.of:
                    name = known.get(id(p)) or ("w" if p is wrt else None)
                    if name is None:
                        count["leaf"] = count.get("leaf", 0) + 1
                        name = f"leaf{count['leaf']}"
                    self.of[p] = name
            if n is loss.grad_fn:
                self.of[n] = "L"
            else:
                role = self.ROLE.get(type(n).__name__, "v")
                count[role] = count.get(role, 0) + 1
                self.of[n] = f"{role}{count[role]}"

    def args(self, node):
        """The names of node's arguments: its inputs' names where they need a gradient, the
        op's default symbols for the constants."""
        defaults = RULES.get(type(node).__name__, (("x",), {}))[0]
        width = max([len(defaults)] + [i + 1 for i, *_ in node.edges])
        names = [defaults[k] if k < len(defaults) else f"arg{k}" for k in range(width)]
        for i, p, _, _ in node.edges:
            names[i] = self.of[p]
        return names

    def grad(self, obj):
        name = self.of[obj]
        return f"dL/d{name}" if name.isalnum() else f"dL/d({name})"


def _paths(root, target, nodes):
    """Every path from root down to target, as lists of (node, argument position); and the
    number of paths (counted first: it can grow exponentially)."""
    reaches = {target}
    for n in nodes:  # inputs come before their consumers
        if any(p in reaches for _, p, _, _ in n.edges):
            reaches.add(n)
    count = {target: 1}
    for n in nodes:
        if n in reaches and n is not target:
            count[n] = sum(count[p] for _, p, _, _ in n.edges if p in reaches)
    total = count.get(root, 0)
    paths, stack = [], [(root, [])]
    while stack and len(paths) < MAX_PATHS:
        node, path = stack.pop()
        if node is target:
            paths.append(path)
            continue
        for i, p, _, _ in reversed(node.edges):
            if p in reaches:
                stack.append((p, path + [(node, i)]))
    return paths, total, reaches


def _step(node, i, g):
    """Run node's backward on the gradient g of its output; the gradient for argument i,
    unbroadcast and cast to the input as the engine does."""
    out = node.backward(node, g)
    out = out if isinstance(out, tuple) else (out,)
    edge = next(e for e in node.edges if e[0] == i)
    gi = out[i]
    raw_shape = np.shape(gi)
    if gi.shape != edge[2]:
        gi = autograd.unbroadcast(gi, edge[2])
    return gi.astype(edge[3], copy=False), raw_shape


def _merged(root, target, reaches, nodes, seed):
    """Sum over all paths at once: each node on them runs backward once (backpropagation)."""
    grads = {root: seed}
    for n in reversed(nodes):
        if n not in grads or n is target:
            continue
        g = grads.pop(n)
        for i, p, _, _ in n.edges:
            if p in reaches:
                gi, _ = _step(n, i, g)
                grads[p] = grads[p] + gi if p in grads else gi
    return grads[target]


def _numbers(a):
    a = np.asarray(a)
    if 1 < a.size <= 4:
        return "[" + ", ".join(f"{v:.4g}" for v in a.ravel()) + "]"
    return summary(a)


def explain(loss, wrt, params=None, file=None):
    """Print the chain-rule derivation of dL/d(wrt) and return that gradient (a Tensor).

    `loss`: a scalar Tensor with its graph (before backward(), or after
    backward(retain_graph=True)). `wrt`: a leaf (a parameter) or an intermediate Tensor.
    `params`: names for the leaves (a dict name -> Tensor or a Module). For each path from the
    loss back to `wrt` it prints every step: the op, its local derivative, the shapes, and the
    numbers of the gradient arriving there, computed by running that node's backward; then it
    sums the paths and raises GradientMismatch (an AssertionError) unless the result equals
    `cr.grad(loss, wrt)`.
    """
    out = file if file is not None else sys.stdout
    if not isinstance(wrt, Tensor):
        raise ArgumentError(f"explain: wrt must be a Tensor, got {type(wrt).__name__}")
    nodes = ops_behind(loss)
    if loss.data.size != 1:
        raise GraphError(f"explain: the loss must be a scalar, this one has shape {loss.shape}")
    if not wrt.requires_grad:
        raise GraphError("explain: wrt does not require grad, so no gradient flows to it")
    root, target = loss.grad_fn, wrt.grad_fn or wrt
    names = _Names(loss, nodes, params, wrt)
    paths, total, reaches = _paths(root, target, nodes)
    if total == 0:
        raise GraphError(f"explain: {names.of.get(target, 'wrt')} was not used to compute the loss")
    seed = np.ones_like(loss.data)
    expected = quiet_grad(loss, [target])[0]

    def say(text=""):
        print(text, file=out)

    wrt_name = names.of[target]
    say(f"The chain rule for {names.grad(target)}, the gradient of the loss L with respect to "
        f"{wrt_name} {fmt_shape(wrt.shape)}")
    say()
    say("Forward propagation (the recorded ops between them, in order):")
    shapes = output_shapes(loss, nodes)
    for n in nodes:
        if n in reaches:
            args = ", ".join(names.args(n))
            shape = fmt_shape(shapes[n][0])
            value = f"   = {summary(loss.data)}" if n is root else ""
            say(f"  {names.of[n]} = {type(n).__name__}({args})  -> {shape}{value}")
    say("  (arguments written as plain symbols are constants: no gradient flows to them)")
    say()
    many = total > len(paths)
    say(f"Backpropagation: start from dL/dL = 1 and multiply by one local derivative per op "
        f"on the way back to {wrt_name}; "
        + ("there is 1 path." if total == 1 else
           f"there are {total} paths, and their contributions add up."
           + (f" The first {len(paths)} are shown." if many else "")))
    contributions = []
    with no_grad():
        for k, path in enumerate(paths, 1):
            say()
            steps = " <- ".join(["L"] + [names.of[_next(n, i)] for n, i in path])
            say(f"Path {k}" + (f" of {total}" if total > 1 else "") + f": {steps}")
            say(f"  dL/dL = 1")
            g = seed
            for step, (n, i) in enumerate(path, 1):
                arg_names = names.args(n)
                local, chain = _rule(n, i, arg_names)
                upstream, y = names.grad(n), names.of[n]
                g_shape = fmt_shape(np.shape(g))
                g, raw = _step(n, i, g)
                edge_shape = fmt_shape(g.shape)
                twice = sum(_next(n, j) is _next(n, i) for j, *_ in n.edges) > 1
                which = f" (its argument {i + 1})" if twice else ""
                say(f"  step {step}: {y} = {type(n).__name__}({', '.join(arg_names)}), back "
                    f"from {y} {g_shape} to {arg_names[i]}{which} {edge_shape}")
                say(f"      local derivative   {local.format(y=y)}")
                note = (f"   (summed over broadcast dims {fmt_shape(raw)} -> {edge_shape})"
                        if tuple(raw) != tuple(g.shape) else "")
                say(f"      chain rule         {names.grad(_next(n, i))} = "
                    f"{chain.format(g=upstream, y=y)}{note}")
                say(f"      arrives at {arg_names[i]:<7} {edge_shape}  {_numbers(g)}")
            contributions.append(g)
        composed = sum(contributions[1:], contributions[0].copy())
        if many:
            composed = _merged(root, target, reaches, nodes, seed)
    say()
    if total > 1:
        how = "all paths summed by one merged sweep" if many else \
            " + ".join(f"path {k}" for k in range(1, total + 1))
        say(f"Sum over the {total} paths ({how}):")
        say(f"  {names.grad(target)} = {fmt_shape(composed.shape)}  {_numbers(composed)}")
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = 1e-9 if expected.dtype == np.float64 else 1e-5
    diff = float(np.abs(composed - expected).max(initial=0.0))
    say(f"Autograd (cr.grad, one backward sweep) gives {fmt_shape(expected.shape)}  "
        f"{_numbers(expected)}")
    if composed.shape != expected.shape or not np.allclose(composed, expected, rtol=tol * 10,
                                                           atol=tol * scale):
        raise GradientMismatch(f"explain: the composed chain rule and autograd disagree for "
                               f"{wrt_name}: max |difference| {diff:.3g}")
    say(f"They agree: max |difference| = {diff:.3g}.")
    return Tensor._make(composed)


def _next(node, i):
    return next(p for j, p, _, _ in node.edges if j == i)

