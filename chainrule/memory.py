"""What backprop keeps: a ledger of the arrays saved for backward, and gradient checkpointing.

    report = cr.memory.ledger(step, x, y, model=model)   # step(x, y) -> loss
    print(report)              # per layer and per op: bytes saved for backward; no_grad: 0
    h = cr.checkpoint(block, h)   # keep block's input only; recompute block during backward

Every number comes from what the engine actually did: the arrays each op's ctx saved
(`ctx._saved`), seen through `trace_ops`, and the process's allocations seen by `tracemalloc`
(NumPy reports its array buffers to it).
"""
import gc
import itertools
import tracemalloc

import numpy as np

from chainrule.autograd import (Function, _reachable, _state, enable_grad, grad, no_grad,
                                trace_ops)
from chainrule.errors import ArgumentError, GraphError
from chainrule.random import default_generator
from chainrule.tensor import Tensor


# ---- measuring: every op, the arrays it saved, the module it ran in -----------------------------
class OpRow:
    """One op of a traced forward: its index, name, module (dotted name, '-' when outside any
    module or not recorded), output shape, and the activation bytes and arrays it saved first."""

    __slots__ = ("index", "op", "layer", "shape", "saved_bytes", "arrays")

    def __init__(self, index, op, layer, shape, saved_bytes, arrays):
        self.index, self.op, self.layer, self.shape = index, op, layer, shape
        self.saved_bytes, self.arrays = saved_bytes, arrays

    def __repr__(self):
        return (f"OpRow({self.index}, {self.op}, layer={self.layer!r}, shape={self.shape}, "
                f"saved_bytes={self.saved_bytes})")


def _nodes(tensors):
    roots = [t.grad_fn for t in tensors if isinstance(t, Tensor) and t.grad_fn is not None]
    return {n for n in _reachable(roots) if not isinstance(n, Tensor)} if roots else set()


def _is_view_of(array, ids):
    while array is not None:
        if id(array) in ids:
            return True
        array = array.base
    return False


def trace_saved(run, model=None, exclude=()):
    """Run `run()` once, recording each op it applies and what that op saved for backward.

    Returns (result, rows, outputs, param_bytes): `rows` are OpRows in order. Each saved array
    is counted once, for the first op that saved it; arrays that are (views of) parameters are
    not activations: they are left out of the rows and summed in `param_bytes`. Parameters are
    the arrays in `exclude` and the data of every leaf Tensor that requires grad an op used.
    With `model`, forward hooks give each recorded op to the innermost module whose call
    created it (the nodes behind a module's output and not behind its inputs), and `outputs`
    maps module names to their output shape. This is what Module.summary reports per layer.
    """
    leaves = {id(a): a for a in exclude}
    seen, traced = {}, []  # seen keeps the arrays alive, so an id is never reused meanwhile
    param_bytes = 0

    def tracer(cls, ctx, args, out):
        nonlocal param_bytes
        for a in args:
            if isinstance(a, Tensor) and a.requires_grad and a.grad_fn is None:
                leaves[id(a.data)] = a.data
        new = []
        for a in ctx.saved_arrays():
            if id(a) not in seen:
                seen[id(a)] = a
                if _is_view_of(a, leaves):
                    param_bytes += a.nbytes
                else:
                    new.append(a)
        traced.append((cls.__name__, ctx, out.shape, new))

    owner, outputs, handles = {}, {}, []
    if model is not None:
        def hook_for(name):
            def hook(module, args, out):
                outs = out if isinstance(out, (tuple, list)) else (out,)
                for node in _nodes(outs) - _nodes(args):
                    owner.setdefault(node, name)  # inner modules' hooks run first
                outputs[name] = next((o.shape for o in outs if isinstance(o, Tensor)), None)
            return hook
        handles = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules()]
    try:
        with trace_ops(tracer):
            result = run()
    finally:
        for h in handles:
            h.remove()
    rows = [OpRow(i, op, owner.get(ctx, "-"), shape, sum(a.nbytes for a in new), len(new))
            for i, (op, ctx, shape, new) in enumerate(traced)]
    return result, rows, outputs, param_bytes


class _Peak:
    """Peak bytes allocated (tracemalloc) inside the block, above what was allocated at entry."""

    def __enter__(self):
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        self.bytes = tracemalloc.get_traced_memory()[1] - self._base
        if self._started:
            tracemalloc.stop()


# ---- the ledger ---------------------------------------------------------------------------------
class Ledger:
    """What `ledger` measured. Bytes are activations saved for backward, parameters excluded.

    rows: one OpRow per op of the forward with grad. layers: (name, type, ops, saved bytes) per
    module (when a model was given). saved_bytes / saved_arrays: the totals; param_bytes: the
    parameters the graph also references (not counted: they exist without backprop too).
    no_grad_saved_bytes: the same forward under no_grad (0). peak_bytes / no_grad_peak_bytes:
    tracemalloc's peak during each forward, above the allocation at its start. loss: the value.
    """

    def __init__(self, rows, layers, param_bytes, no_grad_saved_bytes, no_grad_ops, peak_bytes,
                 no_grad_peak_bytes, loss):
        self.rows, self.layers, self.param_bytes = rows, layers, param_bytes
        self.saved_bytes = sum(r.saved_bytes for r in rows)
        self.saved_arrays = sum(r.arrays for r in rows)
        self.no_grad_saved_bytes, self.no_grad_ops = no_grad_saved_bytes, no_grad_ops
        self.peak_bytes, self.no_grad_peak_bytes, self.loss = peak_bytes, no_grad_peak_bytes, loss

    def by_op(self):
        """[(op name, count, saved bytes)] in order of first use."""
        out = {}
        for r in self.rows:
            count, nbytes = out.get(r.op, (0, 0))
            out[r.op] = (count + 1, nbytes + r.saved_bytes)
        return [(op, c, b) for op, (c, b) in out.items()]

    def __str__(self):
        parts = []
        if self.layers:
            parts.append(_table(("Layer", "Type", "Ops", "Saved bytes"),
                                [(n, t, f"{k}", f"{b:,}") for n, t, k, b in self.layers], 2))
        parts.append(_table(("Op", "Count", "Saved bytes"),
                            [(op, f"{c}", f"{b:,}") for op, c, b in self.by_op()], 2))
        loss = "" if self.loss is None else f" (loss {self.loss:.6g})"
        parts.append("\n".join([
            f"forward with grad{loss}: {len(self.rows)} ops saved {self.saved_bytes:,} bytes "
            f"in {self.saved_arrays} arrays for backward (parameters excluded; the graph also "
            f"references {self.param_bytes:,} bytes of parameters)",
            f"forward under no_grad: {self.no_grad_ops} ops saved {self.no_grad_saved_bytes:,} bytes",
            f"peak allocated during the forward (tracemalloc): {self.peak_bytes:,} bytes with "
            f"grad, {self.no_grad_peak_bytes:,} bytes under no_grad"]))
        return "\n\n".join(parts)

    __repr__ = __str__


def _table(head, rows, numbers):
    """Text columns left-aligned, the last `numbers` columns right-aligned."""
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    first = len(head) - numbers

    def line(r):
        return "  ".join(c.rjust(w) if i >= first else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(head), "-" * len(line(head))] + [line(r) for r in rows])


def ledger(fn, *inputs, model=None):
    """Measure what the forward `fn(*inputs)` (a training step's forward, returning the loss)
    keeps for backward, and what it keeps under `no_grad`.

    Runs the forward twice from the same random state: with grad, tracing every op (the bytes
    of the arrays its ctx saved, each array once, parameters excluded), and under `cr.no_grad()`
    (which saves nothing: measured, not assumed). tracemalloc records each run's peak. With
    `model`, ops are grouped by the module that ran them (forward hooks). No backward runs; the
    random generator and the model's buffers (BatchNorm statistics) are restored afterwards, so
    a ledger does not change the training that follows. Returns a Ledger; print it for a table.
    """
    rng_state = default_generator.get_state()
    buffers = [(b, b.data.copy()) for b in model.buffers()] if model is not None else []
    exclude = ([t.data for t in itertools.chain(model.parameters(), model.buffers())]
               if model is not None else [])

    def restore():
        default_generator.set_state(rng_state)
        for b, data in buffers:
            b.data[...] = data

    try:
        gc.collect()
        with enable_grad(), _Peak() as peak:
            loss, rows, _, param_bytes = trace_saved(lambda: fn(*inputs), model, exclude)
        value = _scalar(loss)
        del loss
        layers = _layers(model, rows) if model is not None else []
        restore()
        gc.collect()
        counted = [0, 0]

        def count(cls, ctx, args, out):
            counted[0] += 1
            counted[1] += sum(a.nbytes for a in ctx.saved_arrays())

        with no_grad(), _Peak() as peak0, trace_ops(count):
            fn(*inputs)
    finally:
        restore()
    return Ledger(rows, layers, param_bytes, counted[1], counted[0], peak.bytes, peak0.bytes, value)


def _scalar(t):
    if isinstance(t, Tensor) and t.data.size == 1:
        return float(t.data.reshape(()))
    return None


def _layers(model, rows):
    ops, nbytes = {}, {}
    for r in rows:
        ops[r.layer] = ops.get(r.layer, 0) + 1
        nbytes[r.layer] = nbytes.get(r.layer, 0) + r.saved_bytes
    out = [(name or "(root)", type(m).__name__, ops.get(name, 0), nbytes.get(name, 0))
           for name, m in model.named_modules() if name in ops]
    if "-" in ops:
        out.append(("(outside modules)", "-", ops["-"], nbytes["-"]))
    return out


# ---- gradient checkpointing ---------------------------------------------------------------------
def checkpoint(fn, *inputs):
    """fn(*inputs), keeping only the inputs for backward: the forward runs under no_grad and
    backward runs fn again with grad on, then backpropagates through that recomputation.

    fn returns one Tensor. Gradients are bitwise those of `fn(*inputs)` without checkpointing.
    Tensors fn uses that require grad without being inputs (a module's parameters) are found by
    watching the ops of the first run and get their gradients too; they must be leaves (pass an
    intermediate tensor as an input instead). The default generator's state is saved and put
    back for the recomputation, so dropout draws the same masks; afterwards the generator is
    where it was. Modules that change state in forward (BatchNorm's running statistics) change
    it twice, as in PyTorch. Not differentiable twice (create_graph=True raises).
    """
    if not _state.grad_enabled:
        return fn(*inputs)
    rng_state = default_generator.get_state()
    ids = {id(t) for t in inputs if isinstance(t, Tensor)}
    captured = {}

    def watch(cls, ctx, args, out):
        for a in args:
            if isinstance(a, Tensor) and a.requires_grad and id(a) not in ids:
                if a.grad_fn is not None:
                    raise ArgumentError(
                        "checkpoint: fn uses a tensor that requires grad and is neither an input "
                        f"nor a leaf (made by {type(a.grad_fn).__name__}); pass it as an input")
                captured.setdefault(id(a), a)

    with no_grad(), trace_ops(watch):
        out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise ArgumentError(f"checkpoint: fn must return one Tensor, got {type(out).__name__}")
    kinds = tuple(isinstance(t, Tensor) for t in inputs)
    params = tuple(captured.values())
    return Checkpoint.apply(fn, rng_state, out.data, kinds, params, *inputs, *params)


class Checkpoint(Function):
    """The node of `checkpoint`: saves the inputs' arrays, nothing of fn's insides."""

    reads_only_saved = False  # backward runs fn again, on its constants and parameters too

    @staticmethod
    def forward(ctx, fn, rng_state, out, kinds, params, *arrays):
        ctx.fn, ctx.rng_state, ctx.kinds, ctx.params = fn, rng_state, kinds, params
        given = arrays[:len(kinds)]
        ctx.constants = [None if k else a for k, a in zip(kinds, given)]
        ctx.save_for_backward(*(a for k, a in zip(kinds, given) if k))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if _state.create_graph:
            raise GraphError("checkpoint: backward with create_graph=True is not supported; "
                             "run the function without checkpoint for higher-order gradients")
        n = len(ctx.kinds)
        needs = ctx.needs_input_grad[5:]
        saved = iter(ctx.saved_tensors)
        inputs = [Tensor._make(next(saved), bool(needs[i])) if k else c  # detached leaves
                  for i, (k, c) in enumerate(zip(ctx.kinds, ctx.constants))]
        now = default_generator.get_state()
        default_generator.set_state(ctx.rng_state)
        try:
            with enable_grad():
                out = ctx.fn(*inputs)
        finally:
            default_generator.set_state(now)
        wrt = [t for t, need in zip(inputs, needs) if need] + list(ctx.params)
        grads = iter(grad(out, wrt, grad_out, allow_unused=True))
        result = [None] * 5 + [next(grads) if need else None for need in needs[:n]]
        result += [next(grads) for _ in ctx.params]
        return tuple(None if g is None else g.data for g in result)


def checkpoint_sequential(modules, segments, x):
    """Run the modules in order on x, checkpointing them in `segments` runs of (nearly) equal
    length: only each run's input is kept for backward. The last run is not checkpointed (its
    activations are needed at once by backward, as in PyTorch's checkpoint_sequential)."""
    modules = list(modules)
    if not 1 <= segments <= max(len(modules), 1):
        raise ArgumentError(f"checkpoint_sequential: segments must be in [1, {len(modules)}], "
                            f"got {segments}")
    bounds = np.linspace(0, len(modules), segments + 1).round().astype(int)

    def run(part):
        def f(h):
            for m in part:
                h = m(h)
            return h
        return f

    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = run(modules[a:b])
        x = part(x) if i == segments - 1 else checkpoint(part, x)
    return x
