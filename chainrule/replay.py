"""Trace and replay: record the ops of one call, then re-run only their forward and backward.

    step_loss = cr.compile(lambda x, y: cr.cross_entropy(model(x), y))
    loss = step_loss(x, y)        # first call per input signature: eager, and traced
    loss.backward()               # later calls: the recorded ops replayed on the new arrays

The first call with a given signature (input shapes and dtypes, grad mode) runs eagerly while
every `Function.apply` is recorded: its class, its ctx, and where each argument came from (an
input, an earlier op's output, a parameter read afresh each call, or a constant). Later calls
re-run each recorded op's `forward` on the new arrays, with no Tensors, nodes or graph built per
op, and return the output wrapped in one node, `Replay`, whose backward runs the recorded ops'
`backward` in reverse order. Results equal eager mode's bit for bit: the same primitives run on
the same arrays in the same order. A new signature is traced anew (eager again).

What is recorded is ops, not Python: the function must compute its result from its inputs and
parameters with chainrule ops only. Python-side effects (printing, a BatchNorm's running-average
update, random numbers drawn outside an op, branches on data values) happen at trace time only.
Higher-order gradients (`create_graph=True`) through a replay are not supported.
"""
import numpy as np

from chainrule import autograd
from chainrule.autograd import Function, _sequence, _state
from chainrule.errors import GraphError
from chainrule.tensor import Tensor

_INPUT, _OP, _TENSOR, _VALUE = range(4)


class _Program:
    """The ops of one traced call, with each argument's source."""

    def __init__(self, inputs):
        self.ops = []            # (cls, ctx, sources, out_shape, out_dtype)
        self.params = []         # Tensors read afresh each call (parameters, buffers, constants)
        self._where = {}         # id(Tensor or ndarray) -> (_INPUT | _OP, index)
        self._alive = list(inputs)  # keeps traced objects alive, so their ids stay unique
        for k, t in enumerate(inputs):
            self._where[id(t)] = self._where[id(t.data)] = (_INPUT, k)
        self.outputs = None

    def record(self, cls, ctx, args, out):
        sources = []
        for a in args:
            where = self._where.get(id(a))
            if where is not None:
                sources.append(where)
            elif isinstance(a, Tensor):
                sources.append((_TENSOR, self._param_index(a)))
            else:
                sources.append((_VALUE, a))
        j = len(self.ops)
        self.ops.append((cls, ctx, sources))
        self._where[id(out)] = self._where[id(out.data)] = (_OP, j)
        self._alive.append(out)

    def _param_index(self, t):
        for i, p in enumerate(self.params):
            if p is t:
                return i
        self.params.append(t)
        return len(self.params) - 1

    def finish(self, outputs):
        """Resolve where each output came from; then the trace's own objects can go."""
        self.outputs = [self._where.get(id(o), (_TENSOR, None)) for o in outputs]
        for (kind, _), o in zip(self.outputs, outputs):
            if kind != _OP:
                raise GraphError("compile: every output must be computed by chainrule ops "
                                 "inside the function")
        needs = self._needs_grad()
        self.backward_ops = [j for j in range(len(self.ops)) if needs[j]]
        self._alive = self._where = None

    def _needs_grad(self):
        """Which ops lead from a parameter that requires grad (so their backward must run)."""
        needs = []
        for cls, ctx, sources in self.ops:
            needs.append(any(
                (kind == _OP and needs[i]) or
                (kind == _TENSOR and self.params[i].requires_grad) for kind, i in sources
                if kind in (_OP, _TENSOR)))
        return needs

    def forward(self, inputs, record):
        values = []
        params = self.params
        for cls, ctx, sources in self.ops:
            args = [values[i] if kind == _OP else inputs[i] if kind == _INPUT else
                    params[i].data if kind == _TENSOR else i for kind, i in sources]
            ctx._record, ctx._saved_meta = record, ()  # replay checks no versions
            out = cls.forward(ctx, *args)
            values.append(out if type(out) is np.ndarray else np.asarray(out))
        return values

    def backward(self, grad, out_index):
        """Gradients for every parameter (None where none arrives), running recorded backwards."""
        grads = {out_index: grad}
        param_grads = [None] * len(self.params)
        handed = set()
        for j in reversed(self.backward_ops):
            g = grads.pop(j, None)
            if g is None:
                continue
            cls, ctx, sources = self.ops[j]
            outs = cls.backward(ctx, g)
            if type(outs) is not tuple:
                outs = (outs,)
            ctx._saved = ()
            for (i, parent, shape, dtype) in ctx.edges:
                gp = outs[i] if i < len(outs) else None
                if gp is None:
                    continue
                if gp.shape != shape or gp.dtype != dtype:
                    gp = autograd.fit_to_input(ctx, gp, shape, dtype)
                kind, k = sources[i]
                if kind == _OP:
                    old = grads.get(k)
                    grads[k] = gp if old is None else old + gp
                elif kind == _TENSOR:
                    if id(gp) in handed or gp is g:  # one array must not become two .grads
                        gp = gp.copy()
                    handed.add(id(gp))
                    old = param_grads[k]
                    param_grads[k] = gp if old is None else old + gp
        return param_grads


class Replay(Function):
    """The one node a replayed call records: its backward is the whole recorded backward pass."""

    @staticmethod
    def backward(ctx, grad):
        if _state.create_graph:
            raise GraphError("compile: create_graph=True is not supported through a replayed "
                             "call; call the function uncompiled for higher-order gradients")
        return tuple(ctx.program.backward(grad, ctx.out_index))


class compile:
    """Trace `fn` once per input signature and replay the recorded ops afterwards.

    `fn(*tensors_or_arrays)` returns a Tensor or a tuple of Tensors; only the first output carries
    gradients (the others come back detached, e.g. logits next to the loss)."""

    def __init__(self, fn, max_signatures=8):
        self.fn = fn
        self.max_signatures = max_signatures
        self.programs = {}   # signature -> (program, whether fn returned a single Tensor)

    def __call__(self, *inputs):
        inputs = [x if isinstance(x, Tensor) else Tensor._make(np.asarray(x)) for x in inputs]
        key = (_state.grad_enabled,) + tuple((x.data.shape, x.data.dtype.str, x.requires_grad)
                                             for x in inputs)
        if key not in self.programs:
            return self._trace(key, inputs)
        program, single = self.programs[key]
        if any(x.requires_grad for x in inputs):
            raise GraphError("compile: inputs that require grad are not supported in replay")
        record = _state.grad_enabled
        values = program.forward([x.data for x in inputs], record)
        outs = [Tensor._make(values[j]) for _, j in program.outputs]
        if record and program.backward_ops:
            node = _new(Replay)
            node.program, node.out_index = program, program.outputs[0][1]
            node.edges = [(i, p.grad_fn or p, p.data.shape, p.data.dtype)
                          for i, p in enumerate(program.params) if p.requires_grad]
            node.needs_input_grad = tuple(p.requires_grad for p in program.params)
            node._record, node._seq, node._saved = True, next(_sequence), (True,)
            outs[0].requires_grad, outs[0].grad_fn = True, node
        return outs[0] if single else tuple(outs)

    def _trace(self, key, inputs):
        program = _Program(inputs)
        with autograd.trace_ops(program.record):
            result = self.fn(*inputs)
        single = isinstance(result, Tensor)
        outputs = [result] if single else list(result)
        program.finish(outputs)
        if any(x.requires_grad for x in inputs):
            return result  # eager only: replay supports parameters, not inputs, needing grad
        if len(self.programs) >= self.max_signatures:
            self.programs.pop(next(iter(self.programs)))
        self.programs[key] = (program, single)
        return result


_new = object.__new__
