"""Trace and replay: record the ops of one call, then re-run only their forward and backward.

    step_loss = cr.compile(lambda x, y: cr.cross_entropy(model(x), y))
    loss = step_loss(x, y)        # first call per input signature: eager, and traced
    loss.backward()               # later calls: the recorded ops replayed on the new arrays

The first call with a given signature (input shapes and dtypes, grad mode) runs eagerly while
every `Function.apply` is recorded: its class, its ctx, and where each argument came from (an
input, an earlier op's output, a parameter read afresh each call, or a constant). The recording
then becomes two Python functions, generated as straight-line source with one line per op
(`Program.source` shows them): `forward` calls each op's `forward` on arrays, `backward` each
op's `backward` in reverse, summing gradients in local variables. An op whose class has replay
kernels (`replay_forward`/`replay_backward`, see `Site`) contributes its arithmetic as lines
instead, in place where no one else reads the array. No Tensors, nodes or edges are made per op;
a replayed call returns its output wrapped in one node, `Replay`, whose backward is the generated
backward. Results equal eager mode's bit for bit: the same NumPy operations run on the same
arrays in the same order. A new signature is traced anew (eager again), and so is any call
under `cr.detect_anomaly()` or an op tracer, which must see every op. A function whose trace
cannot stand for later calls (see `Program.unreplayable`) runs eagerly, with one warning.

The function may also be a whole training step. A `backward()` it calls on one of its results
(after its last op, with the implied gradient) is recorded, and so are the calls made around
it to functions marked `autograd.step_call` (an optimizer's `zero_grad` and `step`, gradient
clipping, a scheduler's `step`): a replay makes those calls again, with the same arguments, in
the same order, and runs the generated backward in place of the engine's, handing each
parameter its gradient as the engine does (hooks, accumulation). It returns the loss detached.

Each replayed call gets its own set of ctx objects (from a pool; a set returns to it when the
call's backward has run or its output is gone), so two calls may be alive before one backward,
as when gradients are accumulated over several batches.

What is recorded is ops, not Python: the function must compute its result from its inputs and
parameters with chainrule ops only. Python-side effects (printing, random numbers drawn outside
an op, branches on data values, arrays changed through `.data`) happen at trace time only, and
the parameters are the Tensor objects the trace saw: compile again after replacing a layer.
In-place writes to Tensors that no op records (a BatchNorm's running statistics in training, a
hand-written parameter update) make the function run eagerly, with a warning. In a compiled
step, clear gradients with a `zero_grad` (an optimizer's, a module's or `nn.utils.zero_grads`):
a plain `p.grad = None` is Python, done at trace time only.
Higher-order gradients (`create_graph=True`) through a replay are not supported.
"""
import builtins
import warnings

import numpy as np

from chainrule import autograd
from chainrule.autograd import Function, _new, _sequence, _state
from chainrule.errors import GraphError
from chainrule.tensor import Tensor

_INPUT, _OP, _TENSOR, _VALUE, _TUPLE = range(5)


class Program:
    """The ops of one traced call, with each argument's source, as generated replay code.
    `unreplayable` says why the trace cannot stand for later calls (then they run eagerly)."""

    def __init__(self, inputs):
        self.ops = []            # (cls, ctx, sources, facts); after finish, the classes
        self.params = []         # Tensors read afresh each call (parameters, buffers, constants)
        self._where = {}         # id(ndarray) -> (_INPUT | _OP, index): where an array came from
        self._alive = []         # keeps traced arrays alive, so their ids stay unique
        self.unreplayable = None
        self.calls = []          # (ops recorded before it, fn, args, kwargs): backward, step calls
        self.before, self.after, self.root_grad = [], [], None
        self.sinks, self.sink_params = None, []  # see autograd.backward_sinks
        arrays = [x.data for x in inputs if isinstance(x, Tensor)]
        for k, a in enumerate(arrays):
            if id(a) in self._where:
                self.unreplayable = "two inputs are the same array"
            self._where[id(a)] = (_INPUT, k)
            self._alive.append(a)
        self.n_inputs = len(arrays)
        self.pool = []           # free ctx sets, one per replayed call in flight

    def record(self, cls, ctx, args, out):
        if _state.sweeping and not _state.create_graph:
            return  # an op of a hook inside backward(): the hook runs again at each replay
        sources = [self._source(a) for a in args]
        j = len(self.ops)
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        self.ops.append((cls, ctx, sources, _Facts(arrays, out.data)))
        self._where[id(out.data)] = (_OP, j)
        self._alive.append(out.data)

    def _source(self, a):
        """Where argument `a` comes from: an input, an op's output (found by its array, so views
        such as detach() resolve too), a parameter, a tuple of such (an index), or a constant."""
        if isinstance(a, Tensor):
            where = self._where.get(id(a.data))
            return where if where is not None else (_TENSOR, self._param_index(a))
        if isinstance(a, (tuple, list)):
            parts = [self._source(x) for x in a]
            if any(kind != _VALUE for kind, _ in parts):
                return (_TUPLE, (type(a), parts))
            return (_VALUE, a)
        where = self._where.get(id(a))
        if where is not None:
            return where
        return (_VALUE, a.item() if isinstance(a, np.number) else a)  # as Function.apply does

    def wrote(self, t):
        """An in-place write no op records (under no_grad, or to a Tensor needing no grad)."""
        if id(t.data) in self._where:
            self.unreplayable = "an in-place write outside autograd to a value computed inside"
        elif _state.calls:  # not inside a recorded call (that one runs again at each replay)
            self.unreplayable = ("an in-place write outside autograd that a replay would not "
                                 "repeat (a BatchNorm's running statistics in training? a "
                                 "parameter update without an optimizer?)")

    def call(self, fn, args, kwargs):
        """A `backward()` or a step call (`autograd.step_call`: optimizer step, zero_grad, ...)
        made during the trace, at its place among the ops."""
        self.calls.append((len(self.ops), fn, args, kwargs))

    def _plan_calls(self):
        """Which calls a replay makes before the ops (`before`) and after them (`after`, in
        order, None standing for the backward), and the backward's output op (`root`); or why
        the calls cannot be replayed."""
        n, backward_at = len(self.ops), None
        for pos, fn, args, kwargs in self.calls:
            if fn is autograd.backward_sinks:  # (optimizer, its weights updated in backward)
                self.sinks = args
                continue
            if fn is autograd.backward:
                why = self._unreplayable_backward(pos, *args)
                if why:
                    return why
                backward_at = self._where[id(args[0][0].data)][1]
                self.root_grad = autograd.constant_ones(args[0][0].data.shape,
                                                        args[0][0].data.dtype)
                self.after.append(None)
                continue
            if fn.replay_refused:
                return fn.replay_refused
            values = list(args) + list(kwargs.values())
            if any(callable(v) for v in values[1:]):  # not the first: a method's self
                return f"{fn.__qualname__} was called with a function (a closure?)"
            items = [x for v in values for x in (v if isinstance(v, (list, tuple)) else (v,))]
            if any(isinstance(x, np.ndarray) or isinstance(x, Tensor) and (
                    x.grad_fn is not None or not x.requires_grad) for x in items):
                return f"{fn.__qualname__} was called with an array that is not a parameter"
            if pos == n:
                self.after.append((fn, args, kwargs))
            elif pos == 0 and not self.after:
                self.before.append((fn, args, kwargs))
            else:
                return f"{fn.__qualname__} was called between the function's ops"
        if backward_at is not None:
            self.root = backward_at
            if any(p.requires_grad and p.grad_fn is not None for p in self.params):
                return "backward() reaches a Tensor computed outside the function"
        return None

    def _unreplayable_backward(self, pos, outputs, grad_outputs, retain_graph, create_graph,
                               inputs):
        if self.root_grad is not None:
            return "backward() was called twice"
        if pos != len(self.ops):
            return "ops ran after backward()"
        if (grad_outputs is not None or retain_graph or create_graph or inputs is not None
                or len(outputs) != 1):
            return "backward() was called with gradient=, retain_graph, create_graph or inputs"
        where = self._where.get(id(outputs[0].data))
        if where is None or where[0] != _OP:
            return "backward() of a Tensor computed outside the function"
        return None

    def _param_index(self, t):
        for i, p in enumerate(self.params):
            if p is t:
                return i
        self.params.append(t)
        return len(self.params) - 1

    def finish(self, inputs, outputs):
        """Resolve the outputs, then generate the replay code; the trace's own objects can go."""
        self.outputs = [self._where.get(id(o.data), (_TENSOR, None)) if isinstance(o, Tensor)
                        else (_VALUE, None) for o in outputs]
        if any(kind != _OP for kind, _ in self.outputs):
            raise GraphError("compile: every output must be computed by chainrule ops "
                             "inside the function")
        for p in self.params:
            if not p.requires_grad and any(
                    isinstance(x, Tensor) and p.data.shape == x.data.shape and
                    p.data.dtype == x.data.dtype and np.array_equal(p.data, x.data)
                    for x in inputs):
                self.unreplayable = ("a Tensor equal to an input but not computed from it by an "
                                     "op (cr.tensor(x)?) would stay at its first value")
        if any(ctx._hooks or ctx._retained for _, ctx, _, _ in self.ops):
            self.unreplayable = "a hook or retain_grad() on an intermediate result"
        self.root = self.outputs[0][1]  # the backward's output: a step's backward() may change it
        if self.calls:
            why = self._plan_calls()
            self.unreplayable = self.unreplayable or why
            self.calls = None  # they hold the trace's loss and, through it, its graph
        saved = {id(a) for _, ctx, _, _ in self.ops for a in ctx._saved or ()
                 if isinstance(a, np.ndarray)}
        self.watched_outputs = [n for n, o in enumerate(outputs) if id(o.data) in saved]
        self.saved_params = [p for p in self.params if id(p.data) in saved]
        self._alive = self._where = None
        self.param_state = [(p.data, p.requires_grad) for p in self.params]
        self.needs_input_grad = tuple(p.requires_grad for p in self.params)
        self.grad_params = [k for k, need in enumerate(self.needs_input_grad) if need]
        # the Replay node's edges, made once unless a non-leaf's node changes from call to call
        self.edges = self._edges() if all(p.grad_fn is None for p in self.params) else None
        self.templates = [_template(cls, ctx) for cls, ctx, _, _ in self.ops]
        self.source, namespace = _generate(self)
        self.namespace = namespace if self.sink_params else None
        exec(builtins.compile(self.source, "<chainrule replay>", "exec"), namespace)
        self.forward, self.backward = namespace["forward"], namespace["backward"]
        self.has_backward = bool(self.ops[self.root][1]._record)
        self.ops = [cls for cls, *_ in self.ops]  # the op classes; the trace's ctxs can go

    def params_unchanged(self):
        """Are the parameters' arrays and requires_grad flags those of the trace? A new array of
        the same shape and dtype (load_state_dict, to()) is adopted; anything else retraces."""
        for p, (data, flag) in zip(self.params, self.param_state):
            if p.data is not data or p.requires_grad is not flag:
                break
        else:
            return True
        if any(p.requires_grad is not flag or p.data.shape != data.shape or
               p.data.dtype != data.dtype for p, (data, flag) in zip(self.params, self.param_state)):
            return False
        self.param_state = [(p.data, p.requires_grad) for p in self.params]
        return True

    def _edges(self):
        """The Replay node's edges: one per parameter that requires grad."""
        return [(i, p.grad_fn or p, p.data.shape, p.data.dtype)
                for i, p in enumerate(self.params) if p.requires_grad]

    def gradients(self, ctxs, grad, release):
        """The generated backward's gradient per parameter, no array given to two of them."""
        grads = self.backward(ctxs, grad, release)
        return grads if self.grads_distinct else _distinct(grads)

    def step_backward(self, ctxs):
        """The traced step's `loss.backward()`: the generated backward, then each parameter's
        gradient through its hooks into its `.grad`, as the engine's last step does. For a traced
        `backward_and_step`, the weights its optimizer updates in backward now get their sinks."""
        names = [f"Z{k}" for k in self.sink_params]
        if names:
            sinks = self.sinks[0].sinks_for([self.params[k] for k in self.sink_params])
            for name, k in zip(names, self.sink_params):
                self.namespace[name] = sinks[self.params[k]]
        try:
            grads = self.gradients(ctxs, self.root_grad, True)
        finally:
            for name in names:
                self.namespace[name] = None
        self.give_back(ctxs)
        leaves, table = [], {}
        for k in self.grad_params:
            if grads[k] is not None:
                leaves.append(self.params[k])
                table[self.params[k]] = grads[k]
        prev, _state.grad_enabled = _state.grad_enabled, False  # hooks see what eager's do
        try:
            autograd.to_leaves(leaves, table, (id(self.root_grad),))
        finally:
            _state.grad_enabled = prev

    def take_ctxs(self):
        """A ctx set for one call: a free one, or a new one made from the templates."""
        if self.pool:
            return self.pool.pop()
        ctxs = []
        for cls, state in self.templates:
            ctx = _new(cls)
            ctx.__dict__.update(state)
            ctxs.append(ctx)
        return ctxs

    def give_back(self, ctxs):
        for ctx in ctxs:
            ctx._saved = ()
        self.pool.append(ctxs)


def _template(cls, ctx):
    """What a fresh ctx for a replay starts with: the trace's ctx state minus its graph."""
    state = dict(ctx.__dict__)
    for name in ("edges", "_saved", "_saved_meta", "_trace", "_hooks", "_retained", "_seq"):
        state.pop(name, None)
    return cls, state


class _Facts:
    """What the trace saw of one op: its arguments' shapes and dtypes, and whether its output
    owned its memory (was not a view)."""

    def __init__(self, arrays, out):
        self.shapes = [getattr(a, "shape", None) for a in arrays]
        self.dtypes = [getattr(a, "dtype", None) for a in arrays]
        self.out_owned = out.base is None


class Site:
    """One recorded op as its class's replay kernel sees it (`replay_forward(site)` and
    `replay_backward(site)`, optional methods of a Function: source lines that do the op's work
    on local variables, bit for bit as its forward and backward would).

    args: the forward arguments' source expressions; out: the output's variable; saved: where the
    kernel keeps arrays for its backward; grad: the output gradient's variable. overwritable(i):
    the forward may write into argument i (no one else reads it); grad_owned: the backward may
    write into its incoming gradient (a fresh array handed only to this op)."""

    def __init__(self, j, ctx, facts, args, ns, sources, program):
        self.j, self.ctx, self.facts, self.args, self._ns = j, ctx, facts, args, ns
        self._sources, self._program = sources, program
        self.temps = []
        self.out, self.saved, self.grad = f"v{j}", f"c{j}._saved", f"g{j}"
        self.record, self.needs = bool(ctx._record), ctx.needs_input_grad
        self.writable, self.grad_owned = set(), False

    def overwritable(self, i):
        return i in self.writable

    def temp(self, name):
        name = f"t{self.j}_{name}"
        if name not in self.temps:
            self.temps.append(name)
        return name

    def sink(self, i):
        """The variable holding, at a replay, the sink for argument i's gradient (a parameter a
        traced backward_and_step updates inside backward; None at that replay if it may not be),
        or None when there is none to give."""
        program, (kind, k) = self._program, self._sources[i]
        if program.sinks is None or kind != _TENSOR or not any(
                program.params[k] is p for p in program.sinks[1]):
            return None
        if k not in program.sink_params:
            program.sink_params.append(k)
            self._ns[f"Z{k}"] = None
        return f"Z{k}"

    def const(self, value, name):
        key = f"k{self.j}_{name}"
        self._ns[key] = value
        return key


def _generate(program):
    """Python source for the program's forward and backward, and the names it uses.

    forward(ctxs, i0, i1, ...) -> (output arrays); backward(ctxs, grad, release) -> [gradient per
    parameter, None for those that need none]; `release` drops each op's saved arrays once used.
    Op j's ctx is c{j}, its output v{j}, the gradient of that output g{j}; q{k} is parameter k's
    gradient. An op whose class has a replay kernel contributes the kernel's lines; any other op a
    call of its forward and backward."""
    ns = {"ndarray": np.ndarray, "asarray": np.asarray, "fit": autograd.fit_to_input, "np": np}
    ops, outputs = program.ops, {j for _, j in program.outputs}
    uses = {}
    for _, _, sources, _ in ops:
        for kind, i in _flat(sources):
            if kind == _OP:
                uses[i] = uses.get(i, 0) + 1
    for k in range(len(program.params)):
        ns[f"P{k}"] = program.params[k]
    ctx_names = ", ".join(f"c{j}" for j in range(len(ops))) + ","
    fwd = [f"def forward(ctxs, {', '.join(f'i{k}' for k in range(program.n_inputs))}):",
           f"    {ctx_names} = ctxs"]
    sites = []
    for j, (cls, ctx, sources, facts) in enumerate(ops):
        args = [_expression(source, f"k{j}_{n}", ns) for n, source in enumerate(sources)]
        site = Site(j, ctx, facts, args, ns, sources, program)
        for n, (kind, i) in enumerate(sources):  # an earlier kernel's output only this op reads
            if (kind == _OP and uses[i] == 1 and i not in outputs and sites[i].kernel
                    and ops[i][3].out_owned and not _keeps_output(ops[i][1])):
                site.writable.add(n)
        lines = cls.replay_forward(site) if hasattr(cls, "replay_forward") else None
        site.kernel = lines is not None
        sites.append(site)
        if lines is None:
            ns[f"F{j}"], ns[f"B{j}"] = cls.forward, cls.backward
            lines = [f"v{j} = F{j}(c{j}, {', '.join(args)})",
                     f"if type(v{j}) is not ndarray: v{j} = asarray(v{j})"]
        fwd += ["    " + line for line in lines]
    fwd.append(f"    return ({''.join(f'v{j}, ' for _, j in program.outputs)})")

    out = program.root
    runs = [j for j, (_, ctx, _, _) in enumerate(ops) if ctx._record and j <= out]
    bwd = ["def backward(ctxs, grad, release):", f"    {ctx_names} = ctxs"]
    bwd += [f"    g{j} = None" for j in runs if j != out]
    bwd += [f"    q{k} = None" for k in program.grad_params]
    bwd.append(f"    g{out} = grad")
    contributions = {}  # gradient variable -> how many edges add into it
    for j in runs:
        for i, *_ in ops[j][1].edges:
            kind, k = ops[j][2][i]
            name = f"g{k}" if kind == _OP else f"q{k}"
            contributions[name] = contributions.get(name, 0) + 1
    fresh = set()  # gradient variables holding a fresh array that only their op receives
    program.grads_distinct = True  # no array can become two parameters' gradients
    for j in reversed(runs):
        cls, ctx, sources, facts = ops[j]
        site = sites[j]
        site.grad_owned = f"g{j}" in fresh
        bwd.append(f"    if g{j} is not None:")
        if site.kernel:
            site.temps.clear()
            lines, results = cls.replay_backward(site)
            bwd += ["        " + line for line in lines]
        else:
            width = max(e[0] for e in ctx.edges) + 1  # o[i] for every edge i, None if absent
            bwd += [f"        o = B{j}(c{j}, g{j})",
                    "        if type(o) is not tuple: o = (o,)",
                    f"        if len(o) < {width}: o = o + (None,) * ({width} - len(o))"]
        for i, _, shape, dtype in ctx.edges:
            kind, k = sources[i]
            target = f"g{k}" if kind == _OP else f"q{k}"
            single = contributions[target] == 1
            if kind != _OP and not (site.kernel and single and results[i][1]):
                program.grads_distinct = False
            if site.kernel:
                expr, is_fresh = results[i]
                if single and is_fresh and kind == _OP:
                    fresh.add(target)
                bwd.append(f"        {target} = {expr}" if single else
                           f"        {target} = {expr} if {target} is None else {target} + {expr}")
                continue  # a kernel's gradients have their inputs' shapes and dtypes
            ns[f"S{j}_{i}"], ns[f"D{j}_{i}"] = shape, dtype
            bwd += [f"        x = o[{i}]",
                    "        if x is not None:",
                    f"            if x.shape != S{j}_{i} or x.dtype != D{j}_{i}: "
                    f"x = fit(c{j}, x, S{j}_{i}, D{j}_{i})",
                    f"            {target} = x" if single else
                    f"            {target} = x if {target} is None else {target} + x"]
        bwd += [f"        g{j} = None",  # handed on: freed now, not when backward returns
                f"        if release: c{j}._saved = ()"]
        if site.kernel and site.temps:  # the kernel's locals too (saved arrays among them)
            bwd.append(f"        del {', '.join(site.temps)}")
    grads = [f"q{k}" if k in program.grad_params else "None" for k in range(len(program.params))]
    bwd.append(f"    return [{', '.join(grads)}]")
    return "\n".join(fwd + [""] + bwd) + "\n", ns


def _expression(source, name, ns):
    """Source text for one argument; constants are bound in `ns` under `name`."""
    kind, i = source
    if kind == _INPUT:
        return f"i{i}"
    if kind == _OP:
        return f"v{i}"
    if kind == _TENSOR:
        return f"P{i}.data"
    if kind == _TUPLE:
        container, parts = i
        items = "".join(_expression(p, f"{name}_{n}", ns) + ", " for n, p in enumerate(parts))
        return f"({items})" if container is tuple else f"[{items}]"
    ns[name] = i
    return name


def _flat(sources):
    for kind, i in sources:
        if kind == _TUPLE:
            yield from _flat(i[1])
        else:
            yield kind, i


def _keeps_output(ctx):
    """Did the op save its own output for backward (so no one may overwrite it)?"""
    return any(src is autograd._OUTPUT for src, _, _ in ctx._saved_meta)


class Replay(Function):
    """The one node a replayed call records: its backward is the program's generated backward.
    It holds its call's ctx set (as `_saved`, None once released) until its backward has run
    without retain_graph, or until it is garbage."""

    program = ctxs = None
    reads_only_saved = False  # the replayed ops' backwards: other ops' too (ctx attributes)

    def saved_arrays(self):
        return [a for ctx in self.ctxs or () for a in ctx._saved if isinstance(a, np.ndarray)]

    def _release(self):
        if self.ctxs is not None:
            self.program.give_back(self.ctxs)
            self.ctxs = self._saved = None

    def __del__(self):
        self._release()

    @staticmethod
    def backward(ctx, grad):
        if _state.create_graph:
            raise GraphError("compile: create_graph=True is not supported through a replayed "
                             "call; call the function uncompiled for higher-order gradients")
        for counter, version in ctx.versions:
            if counter[0] != version:
                raise GraphError("compile: a parameter or output that the replayed ops saved for "
                                 f"backward was modified in place (version {version} was saved, "
                                 f"it is now {counter[0]})")
        release = not _state.retain_graph
        grads = ctx.program.gradients(ctx.ctxs, grad, release)
        if release:
            ctx._release()
        return tuple(grads)


def _tensors(args):
    """The arguments with each ndarray wrapped in a Tensor, as the traced function sees them."""
    return [Tensor._make(x) if isinstance(x, np.ndarray) else x for x in args]


def _distinct(grads):
    """Copies where one array would become two parameters' gradients."""
    seen, out = set(), []
    for g in grads:
        if g is not None and id(g) in seen:
            g = g.copy()
        seen.add(id(g))
        out.append(g)
    return out


class compile:
    """Trace `fn` once per input signature and replay the recorded ops afterwards.

    `fn(*args)` takes Tensors or arrays (part of the signature by shape, dtype and requires_grad)
    and other values such as numbers (part of it by value), and returns a Tensor or a tuple of
    Tensors; only the first output carries gradients (the others come back detached, e.g. logits
    next to the loss). A function whose trace cannot stand for later calls (see
    `Program.unreplayable`) runs eagerly every time, with one warning saying why."""

    def __init__(self, fn, max_signatures=8):
        self.fn = fn
        self.max_signatures = max_signatures
        self.programs = {}   # signature -> (program, whether fn returned a single Tensor)
        self.eager_only = None

    def __call__(self, *args):
        arrays, key = [], [_state.grad_enabled]  # the signature: each array's shape, dtype and
        for x in args:                            # requires_grad, any other argument's value
            if isinstance(x, Tensor):
                arrays.append(x.data)
                key.append((x.data.shape, x.data.dtype, x.requires_grad))
            elif isinstance(x, np.ndarray):
                arrays.append(x)
                key.append((x.shape, x.dtype, False))
            else:
                key.append((type(x), x))
        key = tuple(key)
        try:
            found = self.programs.get(key)  # never found when an input requires grad (_trace)
        except TypeError:                   # an unhashable argument: no signature, no replay
            return self.fn(*_tensors(args))
        if found is None or _state.watching or not found[0].params_unchanged():
            return self._trace(key, _tensors(args))
        program, single = found
        for fn, call_args, kwargs in program.before:
            fn(*call_args, **kwargs)
        ctxs = program.take_ctxs()
        tensors = [Tensor._make(o) for o in program.forward(ctxs, *arrays)]
        # a whole training step (root_grad set) runs its backward in `after`, which gives the
        # ctx set back; otherwise the output's node runs it, or there is none to run
        if program.root_grad is None and _state.grad_enabled and program.has_backward:
            node = _new(Replay)
            node.program = program
            node.ctxs = node._saved = ctxs
            node.edges = program.edges or program._edges()
            node.needs_input_grad = program.needs_input_grad
            node._record, node._seq = True, next(_sequence)
            node.versions = [(p._version, p._version[0]) for p in program.saved_params]
            node.versions += [(tensors[n]._version, 0) for n in program.watched_outputs]
            tensors[0].requires_grad, tensors[0].grad_fn = True, node
        elif program.root_grad is None:
            program.give_back(ctxs)
        for call in program.after:
            if call is None:
                program.step_backward(ctxs)
            else:
                fn, call_args, kwargs = call
                fn(*call_args, **kwargs)
        return tensors[0] if single else tuple(tensors)

    def _trace(self, key, inputs):
        """Run fn eagerly; record it as the program for `key` unless replay cannot serve it."""
        if _state.watching or self.eager_only or any(
                isinstance(x, Tensor) and x.requires_grad for x in inputs):
            return self.fn(*inputs)  # eager only: tracers must see every op; replay supports
        program = Program(inputs)    # parameters, not inputs, needing grad
        prev = _state.writes, _state.calls
        _state.writes, _state.calls = prev[0] + (program.wrote,), prev[1] + (program.call,)
        try:
            with autograd.trace_ops(program.record):
                result = self.fn(*inputs)
        finally:
            _state.writes, _state.calls = prev
        single = isinstance(result, Tensor)
        if not single and not isinstance(result, (tuple, list)):
            raise GraphError(f"compile: the function must return a Tensor or a tuple of Tensors, "
                             f"not a {type(result).__name__} (return the loss, not loss.item())")
        program.finish(inputs, [result] if single else list(result))
        if program.unreplayable:
            self.eager_only = program.unreplayable
            warnings.warn(f"compile: {program.unreplayable}; the function runs eagerly from now "
                          "on", stacklevel=3)
            return result
        if key not in self.programs and len(self.programs) >= self.max_signatures:
            self.programs.pop(next(iter(self.programs)))
        self.programs[key] = (program, single)
        return result


