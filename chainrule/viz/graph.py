"""The recorded computation graph as a picture: forward edges in blue, backward edges in red.

`graph(loss)` walks the nodes behind `loss` (each op's `ctx`; its `edges` name the inputs that
need a gradient) and labels each with its op, output shape, a value summary and a gradient
summary. The gradients come from one extra reverse sweep, `cr.grad(loss, handles,
retain_graph=True)`, where a node's handle is a Tensor whose `grad_fn` is the node: the engine
hands back the gradient arriving at that node's output, and at each leaf, without touching any
`.grad` (retain_grad() bookkeeping is paused during the sweep; hooks still run).

Values come from a tape (`with cr.viz.record() as tape:` around the forward pass, then
`graph(loss, values=tape)`), or else from what the graph kept anyway: the loss itself, the
leaves, and the arrays ops saved for backward that are their own outputs or their inputs'.
"""
import os
import shutil
import subprocess
import weakref

import numpy as np

from chainrule import autograd
from chainrule.errors import ArgumentError, ChainruleError, GraphError, MissingDependency, fmt_shape
from chainrule.serialization import atomic_write
from chainrule.tensor import Tensor

FORWARD = 'color="blue", fontcolor="blue"'
BACKWARD = 'color="red", fontcolor="red", style="dashed", constraint=false'
RENDERED = ("svg", "png", "pdf")


# ---- the tape: every op's output, seen as the forward pass runs ---------------------------------
class record:
    """`with cr.viz.record() as tape:` keeps the output of every recorded op (and the constant
    array inputs, such as the data batch) so that `graph(loss, values=tape)` can summarise every
    intermediate value. Built on `autograd.trace_ops`; holds references, not copies, and no
    more than the graph itself (entries go when their node goes)."""

    def __init__(self):
        self.outputs = weakref.WeakKeyDictionary()    # node -> output array
        self.constants = weakref.WeakKeyDictionary()  # node -> [(argument position, array)]
        self._trace = autograd.trace_ops(self._seen)

    def _seen(self, cls, ctx, args, out):
        if out.grad_fn is not ctx:  # not recorded: part of no graph
            return
        self.outputs[ctx] = out.data
        consts = [(i, a.data if isinstance(a, Tensor) else a) for i, a in enumerate(args)
                  if (isinstance(a, Tensor) and not a.requires_grad)
                  or (isinstance(a, np.ndarray) and a.ndim > 0)]
        if consts:
            self.constants[ctx] = consts

    def __enter__(self):
        self._trace.__enter__()
        return self

    def __exit__(self, *exc):
        self._trace.__exit__(*exc)

    def __len__(self):
        return len(self.outputs)


# ---- walking the graph --------------------------------------------------------------------------
class Node:
    """One box: an op (kind "op"), a leaf Tensor ("leaf"), or a constant input ("input")."""

    def __init__(self, key, kind, name, shape, dtype, value=None, grad=None):
        self.key, self.kind, self.name = key, kind, name
        self.shape, self.dtype, self.value, self.grad = tuple(shape), dtype, value, grad

    def __repr__(self):
        return f"Node({self.key}, {self.kind}, {self.name}, {fmt_shape(self.shape)})"


class Graph:
    """What `graph()` draws: `nodes` (forward order, leaves and inputs first where they are
    first used), `forward` edges (input key, op key) and `backward` edges (op key, input key,
    gradient shape). `of[obj]` is the Node of an op node or leaf Tensor."""

    def __init__(self):
        self.nodes, self.forward, self.backward, self.of, self.loss = [], [], [], {}, None


def param_names(params):
    """id(tensor) -> name from a dict name -> Tensor, (name, Tensor) pairs, or a Module."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    items = params.items() if isinstance(params, dict) else params
    return {id(t): name for name, t in items}


def ops_behind(loss):
    """The op nodes behind `loss` in creation (forward) order; raises if there is no graph or
    backward() already freed it."""
    if not isinstance(loss, Tensor):
        raise ArgumentError(f"expected a Tensor, got {type(loss).__name__}")
    if loss.grad_fn is None:
        raise GraphError("the tensor has no recorded graph (it does not require grad, or it is a "
                         "leaf); compute it with grad mode on from tensors that require grad")
    nodes = sorted((n for n in autograd._reachable([loss.grad_fn]) if not isinstance(n, Tensor)),
                   key=autograd._seq_of)
    if any(n._saved is None for n in nodes):
        raise GraphError("the graph behind this tensor was freed by backward(); draw or explain "
                         "it before calling backward(), or call backward(retain_graph=True)")
    return nodes


def quiet_grad(loss, targets):
    """Gradients of `loss` at `targets` (op nodes or leaf Tensors), as arrays (None where no
    gradient arrives), without touching `.grad` anywhere, the graph kept for later use. A
    non-scalar loss is seeded with ones."""
    handles = [t if isinstance(t, Tensor) else Tensor._make(np.empty(0), True, t) for t in targets]
    paused = {n: n._retained for n in ops_behind(loss) if n._retained is not None}
    for n in paused:  # retain_grad() would add this sweep's gradient into the user's .grad
        n._retained = None
    try:
        seed = None if loss.data.size == 1 else (np.ones_like(loss.data),)
        grads = autograd.grad(loss, handles, seed, retain_graph=True, allow_unused=True)
    finally:
        for n, ref in paused.items():
            n._retained = ref
    return [None if g is None else g.data for g in grads]


def kept_values(loss, nodes):
    """node -> its output array, from what the graph kept: the loss, and saved arrays that are
    an op's own output or an input Tensor made by another op (if not modified since)."""
    values = {loss.grad_fn: loss.data}
    for n in nodes:
        for (src, counter, version), array in zip(n._saved_meta, n._saved):
            if counter is not None and counter[0] != version:
                continue
            if src is autograd._OUTPUT:
                values.setdefault(n, array)
            elif isinstance(src, Tensor) and src.grad_fn is not None:
                values.setdefault(src.grad_fn, src.data)
    return values


def output_shapes(loss, nodes):
    """node or leaf -> (shape, dtype) of its output, read off the edges that consume it."""
    out = {loss.grad_fn: (loss.shape, loss.dtype)}
    for n in nodes:
        for _, p, shape, dtype in n.edges:
            out.setdefault(p, (shape, dtype))
    return out


def build(loss, params=None, values=None):
    """The Graph behind `loss` with every value (where known) and gradient filled in."""
    nodes = ops_behind(loss)
    names = param_names(params)
    out_shape = output_shapes(loss, nodes)
    leaves = {p: None for p in out_shape if isinstance(p, Tensor)}  # in order of first use
    known = kept_values(loss, nodes)
    if values is not None:
        known.update((n, values.outputs[n]) for n in nodes if n in values.outputs)
    targets = nodes + list(leaves)
    grads = dict(zip(targets, quiet_grad(loss, targets)))

    g = Graph()
    order = {n: i for i, n in enumerate(nodes)}
    constants, leaf_count = {}, 0
    for n in nodes:
        for _, p, shape, dtype in n.edges:  # a leaf appears just before its first consumer
            if isinstance(p, Tensor) and p not in g.of:
                g.of[p] = Node(f"leaf{leaf_count}", "leaf", names.get(id(p), "leaf"), shape, dtype,
                               p.data, grads[p])
                g.nodes.append(g.of[p])
                leaf_count += 1
        op = Node(f"op{order[n]}", "op", type(n).__name__, *out_shape[n], known.get(n), grads[n])
        for _, array in (values.constants.get(n, ()) if values is not None else ()):
            if id(array) not in constants:
                constants[id(array)] = Node(f"input{len(constants)}", "input", "input",
                                            np.shape(array), np.asarray(array).dtype, array)
                g.nodes.append(constants[id(array)])
            g.forward.append((constants[id(array)].key, op.key))
        g.nodes.append(op)
        g.of[n] = op
        for _, p, shape, _ in n.edges:
            g.forward.append((g.of[p].key, op.key))
            g.backward.append((op.key, g.of[p].key, shape))
    g.loss = g.of[loss.grad_fn]
    return g


# ---- text ---------------------------------------------------------------------------------------
def summary(array):
    """The number itself for one element, else mean / min / max (4 significant digits)."""
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if a.size == 0:
        return "empty"
    if a.size == 1:
        return f"{a.item():.4g}"
    return f"mean {a.mean():.4g}  min {a.min():.4g}  max {a.max():.4g}"


def _label(node, is_loss):
    title = node.name + ("  (the loss L)" if is_loss else "")
    lines = [title, f"{fmt_shape(node.shape)} {np.dtype(node.dtype).name}"]
    lines.append("value " + (summary(node.value) if node.value is not None else "not kept"))
    if node.kind != "input":
        lines.append("grad " + (summary(node.grad) if node.grad is not None else "none"))
    return "\\n".join(_escape(line) for line in lines)


def _escape(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


FILL = {"op": "#dbe9f6", "leaf": "#fff2cc", "input": "#eeeeee"}


def to_dot(g):
    """DOT text for a Graph."""
    lines = [
        "digraph chainrule {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, labelloc=t, '
        'label="forward propagation: blue arrows carry values;\\nbackpropagation: red arrows '
        'carry gradients dL/d(input) (chain rule)"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in g.nodes:
        is_loss = n is g.loss
        extra = ", penwidth=2" if is_loss else (", shape=ellipse" if n.kind != "op" else "")
        lines.append(f'  {n.key} [label="{_label(n, is_loss)}", '
                     f'fillcolor="{FILL[n.kind]}"{extra}];')
    for src, dst in g.forward:
        lines.append(f"  {src} -> {dst} [{FORWARD}];")
    for src, dst, shape in g.backward:
        lines.append(f'  {src} -> {dst} [{BACKWARD}, label="grad {fmt_shape(shape)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph(loss, params=None, path=None, format=None, values=None):
    """Draw the computation graph recorded behind `loss` and return it as DOT text.

    One node per op (op name, output shape, value summary, gradient summary dL/d(output)) and
    per leaf (named from `params`: a dict name -> Tensor such as
    `dict(model.named_parameters())`, or a Module; else "leaf"). Forward edges (input -> op)
    are blue; backward edges (op -> input, labelled with the gradient's shape) are red.
    `values`: a `cr.viz.record()` tape of the forward pass, to summarise every intermediate
    value and show the constant inputs (without it: what the graph kept). `path`: also write
    the picture, as DOT (.dot/.gv) or rendered by Graphviz's `dot` (.svg/.png/.pdf), `format`
    overriding the extension. Users' `.grad` are left alone.
    """
    text = to_dot(build(loss, params, values))
    if path is not None:
        write(text, path, format)
    return text


def write(text, path, format=None):
    """Write DOT text to `path`, rendered through Graphviz's `dot` for svg/png/pdf."""
    fmt = (format or os.path.splitext(str(path))[1].lstrip(".") or "dot").lower()
    if fmt in ("dot", "gv"):
        atomic_write(path, text)
        return path
    if fmt not in RENDERED:
        raise ArgumentError(f"graph: unknown format {fmt!r}; use dot, gv, svg, png or pdf")
    exe = shutil.which("dot")
    if exe is None:
        raise MissingDependency(f"rendering a graph as {fmt.upper()} needs Graphviz's `dot` "
                                "program: install Graphviz (e.g. apt-get install graphviz or "
                                "brew install graphviz), or write a .dot file instead")
    done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=text.encode("utf-8"),
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ChainruleError(f"graph: dot failed with status {done.returncode}: "
                             f"{message[0] if message else 'no message'}")
    return path
