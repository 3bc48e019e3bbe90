"""Reverse-mode automatic differentiation: grad mode, `Function`, and the backward sweep.

A recorded operation is a `Function` instance (its `ctx`): it knows its parents (the nodes, or
leaf Tensors, its inputs came from), the arrays it saved for backward, and the input shapes.
`backward` walks these nodes once, latest-created first (a heap on creation order, as PyTorch's
engine does): a node's consumers were all created after it, so its gradient is complete when it
runs. The walk is a loop, never recursion, so deep graphs cannot hit the recursion limit. Each node
sums its incoming gradients, calls its `backward`, and hands the results, unbroadcast to the input
shapes, to its inputs. Saved arrays are released as each node finishes; leaves accumulate last.
"""
import functools
import itertools
import traceback
import weakref
from collections.abc import Iterator
from heapq import heappop, heappush

import numpy as np

from chainrule.errors import AnomalyError, ArgumentError, GraphError, ShapeError, shape_error
from chainrule.tensor import Tensor


class _State:
    grad_enabled = True
    create_graph = False  # True while a backward pass records its own graph
    retain_graph = False  # True while a backward pass keeps saved arrays (read by compile's node)
    anomaly = False
    tracers = ()          # callbacks(cls, ctx, args, output) seeing every op: compile, viz
    writes = ()           # callbacks(tensor) seeing in-place writes nothing records: compile
    calls = ()            # callbacks(fn, args, kwargs) seeing backward and step calls: compile
    sweeping = False      # True while a backward sweep runs (ops of hooks are not the forward's)
    watching = False      # anomaly or tracers: the one flag Function.apply checks
    sinks = None          # {leaf: fn(a, b)} weight gradients ops hand over: gradient_sinks


def _update_watching():
    _state.watching = bool(_state.anomaly or _state.tracers)


class trace_ops:
    """Context manager: call `fn(cls, ctx, args, output)` after every op applied inside it."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        _state.tracers = _state.tracers + (self.fn,)
        _update_watching()
        return self

    def __exit__(self, *exc):
        _state.tracers = tuple(f for f in _state.tracers if f is not self.fn)
        _update_watching()


_state = _State()


def step_call(fn=None, *, refuse=None):
    """Mark a function that a training step calls around its forward and backward (an optimizer's
    step, zero_grad, gradient clipping): `cr.compile` records its calls when it traces a whole
    step, and makes them again, with the same arguments, at each replay. Iterator arguments (such
    as `model.parameters()`) are made lists first, so the replayed call sees the same items.
    `@step_call(refuse="why")` marks one that a replay cannot repeat (its argument comes from the
    data): a trace that calls it runs eagerly, with a warning saying why."""
    if fn is None:
        return functools.partial(step_call, refuse=refuse)
    fn.replay_refused = refuse

    @functools.wraps(fn)
    def recorded(*args, **kwargs):
        if not _state.calls:
            return fn(*args, **kwargs)
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        kwargs = {k: list(v) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
        for record in _state.calls:
            record(fn, args, kwargs)
        calls, _state.calls = _state.calls, ()  # the calls it makes itself are its own business
        try:
            return fn(*args, **kwargs)
        finally:
            _state.calls = calls
    return recorded


# ---- grad mode ------------------------------------------------------------------------------
class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit."""

    enabled = None

    def __enter__(self):
        self._prev = _state.grad_enabled
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self._prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Record nothing and save nothing for backward: `with cr.no_grad():` or `@cr.no_grad()`."""
    enabled = False


class enable_grad(_GradMode):
    """Turn recording back on inside a `no_grad` block."""
    enabled = True


class set_grad_enabled(_GradMode):
    def __init__(self, mode):
        self.enabled = bool(mode)
        self._prev = _state.grad_enabled  # restored by __exit__ when used as a context manager
        _state.grad_enabled = self.enabled  # like PyTorch, it also works as a plain function call

    def __enter__(self):
        pass

    def __call__(self, fn):
        raise TypeError("set_grad_enabled(mode) is a context manager, not a decorator")


def is_grad_enabled():
    return _state.grad_enabled


class detect_anomaly:
    """Raise at the first NaN/Inf produced by a forward or backward op, naming the op and the
    line of user code that created it. Slow: checks every result."""

    def __init__(self, check_nan=True):
        self.check = check_nan

    def __enter__(self):
        self._prev = _state.anomaly
        _state.anomaly = self.check
        _update_watching()

    def __exit__(self, *exc):
        _state.anomaly = self._prev
        _update_watching()


def _user_line():
    """The innermost stack frame outside chainrule, as 'file:line in func: code'."""
    pkg = __file__.rsplit("/", 1)[0]
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(pkg):
            return f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line}"
    return "<unknown>"


def _watch(cls, ctx, args, out):
    if _state.anomaly:
        ctx._trace = _user_line()
        _check_finite(cls.__name__, (out.data,), "forward output", ctx._trace)
    for fn in _state.tracers:
        fn(cls, ctx, args, out)


def _check_finite(name, arrays, where, trace=None):
    for a in arrays:
        if a is not None and isinstance(a, np.ndarray) and a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = "NaN" if np.isnan(a).any() else "Inf"
            raise AnomalyError(f"{name} produced {bad} in its {where}; the op was created at "
                               f"{trace or _user_line()}")


# ---- Function: the one boundary between Tensors and ndarrays --------------------------------
class Function:
    """A differentiable operation: static `forward(ctx, *arrays)` and `backward(ctx, grad)`.

    `forward` receives the inputs' ndarrays (non-Tensor arguments pass through unchanged) and
    returns one ndarray; `ctx.save_for_backward(*arrays)` keeps what backward needs. `backward`
    receives the gradient of the output and returns one gradient per forward argument (None for
    arguments that need none), as if no broadcasting happened: the engine sums each gradient back
    to its input's shape. Write backward with operators and methods that ndarrays and Tensors
    share (`ops.dual` has the rest): it runs on arrays normally and on Tensors under
    `create_graph=True`, which makes it differentiable again.
    `Cls.apply(*args)` runs the op on Tensors and records it when grad mode is on and an input
    requires grad. Each call's `ctx` is an instance of the class and is the output's `grad_fn`.
    """

    is_view = False      # output shares memory (and so the version counter) with input 0
    reads_only_saved = True  # backward reads no array but its gradient and the saved ones
    _record = False
    _saved = ()
    _saved_meta = ()
    _hooks = None
    _retained = None
    _trace = None
    needs_input_grad = ()

    def save_for_backward(self, *arrays):
        if self._record:
            self._saved = arrays

    @property
    def saved_tensors(self):
        saved = self._saved
        if saved is None:
            raise GraphError(_FREED)
        for _, counter, version in self._saved_meta:
            if counter is not None and counter[0] != version:
                raise GraphError(
                    f"an array saved for backward by {type(self).__name__} was modified by an "
                    f"in-place operation (version {version} was saved, it is now {counter[0]}); "
                    "use an out-of-place op, or clone() before modifying")
        if not _state.create_graph:
            return saved
        return tuple(self._saved_as_tensor(i) for i in range(len(saved)))

    def take_saved(self):
        """saved_tensors as a list that, in a backward sweep that does not retain the graph, the
        node no longer holds: backward can then free each array as soon as it is done with it."""
        saved = list(self.saved_tensors)
        if _state.sweeping and not _state.retain_graph:
            self._saved, self._saved_meta = None, ()
        return saved

    def sink(self, i):
        """The sink (see `gradient_sinks`) for the leaf that input i came from, or None. A backward
        that makes that input's gradient as a product a @ b may call `sink(a, b)` instead,
        and returns None for it when the sink returns True (it took the gradient)."""
        sinks = _state.sinks
        if sinks:
            for e in self.edges:
                if e[0] == i:
                    return sinks.get(e[1])
        return None

    def saved_arrays(self):
        """The arrays this node keeps for backward (none once freed)."""
        return [a for a in self._saved or () if isinstance(a, np.ndarray)]

    def _saved_as_tensor(self, i):
        src = self._saved_meta[i][0]
        if src is _OUTPUT:  # rebuilt, not stored: the output holding its node would be a cycle
            return Tensor._make(self._saved[i], True, self)
        return src if src is not None else Tensor._make(self._saved[i])

    @classmethod
    def apply(cls, *args):
        ctx = _new(cls)
        arrays, edges, grad_on = [], None, _state.grad_enabled
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                data = a.data
                arrays.append(data)
                if grad_on and a.requires_grad:  # an edge: (position, where the gradient goes,
                    if edges is None:            # shape and dtype to unbroadcast and cast it to)
                        edges = []
                    edges.append((i, a.grad_fn or a, data.shape, data.dtype))
            else:  # NumPy scalars act as Python scalars: `float32 * np.float64(2)` stays float32
                arrays.append(a.item() if isinstance(a, _number) else a)
        record = edges is not None
        if record:  # ctx becomes a node: its edges, which inputs need a gradient, its place
            needs = [False] * len(args)
            for e in edges:
                needs[e[0]] = True
            ctx.edges, ctx.needs_input_grad = edges, tuple(needs)
            ctx._record, ctx._seq = True, next(_sequence)  # in creation order
        try:
            out = cls.forward(ctx, *arrays)
        except ValueError as e:
            if isinstance(e, ShapeError) or not hasattr(cls, "shape_error"):
                raise
            raise cls.shape_error(arrays, e) from None
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        t = Tensor._make(out, record, ctx if record else None)
        if ctx.is_view and isinstance(args[0], Tensor):
            t._version = args[0]._version
            if record:
                t._base = args[0] if args[0]._base is None else args[0]._base
        if ctx._saved:
            ctx._saved_meta = _saved_sources(ctx._saved, args, t)
        if _state.watching:
            _watch(cls, ctx, args, t)
        return t

    # ---- hooks and retained grads of the output tensor (non-leaf) ----------------------------
    def _retain(self, tensor):
        self._retained = weakref.ref(tensor)

    def _add_hook(self, hook):
        self._hooks = (self._hooks or []) + [hook]

    def __repr__(self):
        return f"<{type(self).__name__}Backward>"

    @property
    def next_functions(self):
        """The nodes (or leaf Tensors) this node sends gradients to, one per input needing one."""
        return tuple(e[1] for e in self.edges)


_new = object.__new__
_number = np.number
_sequence = itertools.count()  # creation order: a node's inputs always come before it
_OUTPUT = object()
_FREED = ("trying to backward through the graph a second time (or to read saved arrays after they "
          "were freed); pass retain_graph=True to the first backward() if you need to")


def _saved_sources(saved, args, out):
    """For each saved array: (where it came from, its version counter, the version when saved).
    The source is the input Tensor it is the data of, _OUTPUT, or None (made inside forward).
    The output's counter is tracked too: `y = x.exp(); y.add_(1)` must be caught."""
    meta = []
    for array in saved:
        if array is None:
            meta.append(_INTERNAL_META)
            continue
        if array is out.data:
            meta.append((_OUTPUT, out._version, out._version[0]))
            continue
        for a in args:
            if isinstance(a, Tensor) and a.data is array:
                meta.append((a if a.requires_grad else None, a._version, a._version[0]))
                break
        else:
            meta.append(_INTERNAL_META)
    return meta


_INTERNAL_META = (None, None, 0)


class RemovableHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


# ---- unbroadcasting: the one place a gradient is summed back to its input's shape -----------
def unbroadcast(grad, shape):
    """Sum `grad` (ndarray or Tensor) over the axes along which `shape` was broadcast."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape) if grad.shape != shape else grad


# ---- the backward sweep ---------------------------------------------------------------------
def _reachable(roots):
    """Every node and leaf reachable from `roots` through edges."""
    seen = set(roots)
    stack = [r for r in roots if not isinstance(r, Tensor)]
    while stack:
        for edge in stack.pop().edges:
            p = edge[1]
            if p not in seen:
                seen.add(p)
                if not isinstance(p, Tensor):
                    stack.append(p)
    return seen


def _needed(roots, targets):
    """The nodes from which some target is reachable through an edge (only those run for
    `cr.grad`; a non-leaf target's own node runs only if another target lies below it, so its
    saved arrays stay for a later backward, as in PyTorch)."""
    nodes = sorted((n for n in _reachable(roots) if not isinstance(n, Tensor)), key=_seq_of)
    below, needed = set(targets), set()
    for node in nodes:  # inputs before the nodes that consume them
        if any(e[1] in below for e in node.edges):
            below.add(node)
            needed.add(node)
    return needed


def sole_leaves(root, leaves):
    """The `leaves` whose gradient one op of the graph behind `root` makes alone, and which that
    op could update in place once it has used them: one edge leads to each, no other node keeps
    its array (or a view of it, or the array it is a view of) and that op keeps it at most once
    (as the weight, not as an input too), and no other leaf shares it. None at all when some
    backward may read arrays it did not save: a hook, a checkpoint (it runs its function again),
    an op that says so (`reads_only_saved`), or a Function defined outside chainrule."""
    bases, broken = {}, set()  # {id of the array owning a leaf's memory: leaf}; leaves ruled out
    for p in leaves:
        other = bases.setdefault(id(_base(p.data)), p)
        if other is not p:
            broken.update((p, other))
    user, keepers = {}, {}  # the node with each leaf's edge; the nodes keeping its memory
    for node in _reachable([root.grad_fn] if root.grad_fn is not None else []):
        if isinstance(node, Tensor):
            if node._hooks:
                return []
            continue
        if (node._hooks is not None or not node.reads_only_saved
                or not type(node).__module__.startswith("chainrule.")):
            return []
        for _, q, _, _ in node.edges:
            if isinstance(q, Tensor):
                d = q.data
                p = bases.get(id(d if d.base is None else _base(d)))
                if p is not None:
                    if q is not p or p in user:  # another leaf on p's memory, or a second edge
                        broken.add(p)
                    user[p] = node
        for a in node.saved_arrays():
            p = bases.get(id(a if a.base is None else _base(a)))
            if p is not None:
                keepers.setdefault(p, []).append(node)
    return [p for p in leaves if p in user and p not in broken
            and keepers.get(p, [user[p]])[0] is user[p] and len(keepers.get(p, ())) <= 1]


def _base(array):
    """The array that owns `array`'s memory (itself unless it is a view)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def backward_sinks(optimizer, params):
    """What a compile trace records when the traced step calls `optimizer.backward_and_step`:
    each replay's backward then hands these parameters' gradients to the sinks
    `optimizer.sinks_for(params)` gives at that moment (see `gradient_sinks`). A marker: it is
    recorded, never called."""
    raise AssertionError("backward_sinks is a marker for compile traces, not a function to call")


class gradient_sinks:
    """`with gradient_sinks({leaf: sink}): loss.backward()`: each listed leaf's gradient goes to
    its sink as the op that makes it computes it, instead of into `.grad` (ops that support it:
    Linear's and Perceptron's weights; others return the gradient as usual). A sink is called as
    `sink(a, b)` for the gradient a @ b and returns True if it took it. The caller guarantees
    that the op's gradient is the leaf's whole gradient and that nothing else reads the leaf's
    array (`sole_leaves`; no hooks, no `.grad` yet): `optim.Optimizer.backward_and_step` uses
    this to update weights in place as their gradients are made, without ever holding them.
    Only the outermost plain sweep uses sinks: not a backward run inside another
    (checkpointing, a hook), nor `cr.grad`, nor create_graph."""

    def __init__(self, sinks):
        self.sinks = sinks

    def __enter__(self):
        self.previous, _state.sinks = _state.sinks, self.sinks

    def __exit__(self, *exc):
        _state.sinks = self.previous


def _seq_of(node):
    return node._seq


def _root_grads(outputs, grad_outputs, create_graph):
    if len(outputs) == 1 and grad_outputs is None and not create_graph:  # loss.backward()
        out = outputs[0]
        if isinstance(out, Tensor) and out.requires_grad and out.data.size == 1:
            return [constant_ones(out.data.shape, out.data.dtype)]
    grads = []
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise ArgumentError(f"backward: output {i} is a {type(out).__name__}, not a Tensor")
        if not out.requires_grad:
            raise GraphError(f"element {i} of the outputs does not require grad and has no grad_fn: "
                             "nothing to differentiate")
        g = None if grad_outputs is None else grad_outputs[i]
        if g is None:
            if out.data.size != 1:
                raise GraphError(f"backward: gradient can be implied only for scalar outputs, this "
                                 f"output has shape {out.shape}; pass gradient= of that shape")
            g = constant_ones(out.data.shape, out.data.dtype)
        elif isinstance(g, Tensor):
            g = g if create_graph else g.data
        else:
            g = np.asarray(g, dtype=out.data.dtype)
        if g.shape != out.data.shape:
            raise shape_error("backward", g.shape, out.data.shape,
                              detail="the gradient's shape must equal the output's")
        if create_graph and not isinstance(g, Tensor):
            g = Tensor._make(g)
        grads.append(g)
    return grads


def constant_ones(shape, dtype, cache={}):
    """A read-only array of ones, made once per shape and dtype: the implied gradient of a
    one-element output (backward formulas never write into their incoming gradient), and the
    vector whose product with a matrix sums its rows or columns in one BLAS call."""
    ones = cache.get((shape, dtype))
    if ones is None:
        ones = cache[shape, dtype] = np.ones(shape, dtype)
        ones.flags.writeable = False
    return ones


def backward(outputs, grad_outputs=None, retain_graph=None, create_graph=False, inputs=None):
    """Run the backward sweep from `outputs`.

    Without `inputs`, gradients accumulate into every reachable leaf's `.grad`. With `inputs`
    (the functional `grad`), their gradients are returned instead and `.grad` is left alone.
    """
    if _state.calls:  # a compile trace of a whole training step: it replays this backward
        for record in _state.calls:
            record(backward, (outputs, grad_outputs, retain_graph, create_graph, inputs), {})
    if retain_graph is None:
        retain_graph = create_graph
    roots_g = _root_grads(outputs, grad_outputs, create_graph)
    grads, heap, leaves = {}, [], []
    for out, g in zip(outputs, roots_g):
        r = out.grad_fn or out
        if r in grads:
            grads[r] = grads[r] + g
        else:
            grads[r] = g
            if r is out:
                leaves.append(r)
            else:
                heappush(heap, (-r._seq, r))
    capture = needed = None
    if inputs is not None:
        capture = {t.grad_fn or t: None for t in inputs}
        needed = _needed([o.grad_fn or o for o in outputs], capture)
    aliased = set(map(id, roots_g))  # arrays that must be copied before a leaf owns them
    anomaly = _state.anomaly
    prev = (_state.grad_enabled, _state.create_graph, _state.retain_graph, _state.sweeping,
            _state.sinks)
    if _state.sweeping or inputs is not None or create_graph:  # see gradient_sinks
        _state.sinks = None
    _state.grad_enabled = _state.create_graph = create_graph
    _state.retain_graph, _state.sweeping = retain_graph, True
    try:
        while heap:  # latest node first: all of its consumers were created after it
            node = heappop(heap)[1]
            g = grads.pop(node)
            if node._hooks is not None or node._retained is not None:
                g = _output_hooks(node, g, create_graph, aliased)
            if capture is not None:
                if node in capture:
                    capture[node] = g
                if node not in needed:
                    continue
            if node._saved is None:
                raise GraphError(_FREED)
            out = node.backward(node, g)
            if type(out) is not tuple:
                out = (out,)
            if anomaly:
                _check_finite(f"{type(node).__name__} backward", [_data(o) for o in out],
                              "gradient", node._trace)
            if not retain_graph and node._saved:
                node._saved = None
                node._saved_meta = ()  # it holds saved input Tensors (and so their arrays) too
            for i, p, shape, dtype in node.edges:
                try:
                    gp = out[i]
                except IndexError:  # a backward may return fewer gradients than inputs
                    continue
                if gp is None:
                    continue
                if gp is g:
                    aliased.add(id(gp))
                if gp.shape != shape or gp.dtype != dtype:
                    gp = fit_to_input(node, gp, shape, dtype)
                old = grads.get(p)
                if old is not None:
                    grads[p] = old + gp
                    continue
                grads[p] = gp
                if isinstance(p, Tensor):
                    leaves.append(p)
                else:
                    heappush(heap, (-p._seq, p))
        to_leaves(leaves, grads, aliased, capture, create_graph)
    finally:
        (_state.grad_enabled, _state.create_graph, _state.retain_graph, _state.sweeping,
         _state.sinks) = prev
    if capture is not None:
        return [capture[t.grad_fn or t] for t in inputs]


def to_leaves(leaves, grads, aliased, capture=None, create_graph=False):
    """The sweep's last step: each leaf's whole gradient (`grads[leaf]`) through the leaf's hooks,
    then into its `.grad` (or into `capture`, for `cr.grad`). `aliased` holds the ids of arrays
    that something else may hold: a leaf gets a copy of those."""
    plain = capture is None and not create_graph
    for leaf in leaves:
        g = grads.pop(leaf)
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, create_graph)
        if plain and leaf.grad is None and g.base is None and id(g) not in aliased:
            leaf.grad = Tensor._make(g)  # the common case of _accumulate, inlined
        elif capture is not None:
            if leaf in capture:
                capture[leaf] = g
        else:
            _accumulate(leaf, g, id(g) in aliased, create_graph)


def fit_to_input(node, grad, shape, dtype):
    """A gradient from `node`'s backward, summed over broadcast axes and cast to its input's
    shape and dtype: what every edge needs (the engine and replay call it only on a mismatch)."""
    if grad.shape != shape:
        try:
            grad = unbroadcast(grad, shape)
        except ValueError:
            raise shape_error(f"{type(node).__name__} backward", grad.shape, shape,
                              detail="the gradient does not fit the input") from None
    return grad.astype(dtype) if grad.dtype != dtype else grad


def _output_hooks(node, g, create_graph, aliased):
    """Hooks registered on the node's output tensor, then retain_grad()."""
    if node._hooks:
        g = _run_hooks(node._hooks, g, create_graph)
    t = node._retained() if node._retained is not None else None
    if t is not None:
        aliased.add(id(g))
        t.grad = _as_tensor(g) if t.grad is None else _as_tensor(t.grad.data + _data(g))
    return g


def _data(g):
    return g.data if isinstance(g, Tensor) else g


def _as_tensor(g):
    return g if isinstance(g, Tensor) else Tensor._make(g)


def _run_hooks(hooks, g, create_graph):
    for hook in list(hooks):
        r = hook(_as_tensor(g))
        if r is not None:
            g = r if create_graph else _data(r)
    return g


def _accumulate(leaf, g, aliased, create_graph):
    """Add g into leaf.grad. The first gradient becomes .grad itself unless something else
    may hold it (a view, or an array handed to two places): then it is copied."""
    if create_graph:
        g = _as_tensor(g)
        leaf.grad = (g.clone() if aliased else g) if leaf.grad is None else leaf.grad + g
        return
    if leaf.grad is None:
        if aliased or g.base is not None:  # a view, or an array someone else holds
            g = g.copy(order="K")
        leaf.grad = Tensor._make(g)
    elif leaf.grad.data.flags.writeable and leaf.grad.grad_fn is None:
        np.add(leaf.grad.data, g, out=leaf.grad.data)
    else:
        leaf.grad = Tensor._make(leaf.grad.data + g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """d(outputs)/d(inputs) as a tuple of Tensors, without touching any `.grad`."""
    single = isinstance(outputs, Tensor)
    outputs = (outputs,) if single else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is not None:
        grad_outputs = (grad_outputs,) if isinstance(grad_outputs, Tensor) or not isinstance(
            grad_outputs, (list, tuple)) else tuple(grad_outputs)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise GraphError(f"grad: input {i} does not require grad")
    result = backward(outputs, grad_outputs, retain_graph, create_graph, inputs=inputs)
    out = []
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise GraphError(f"grad: input {i} was not used to compute the outputs; pass "
                             "allow_unused=True to get None for it")
        out.append(None if g is None else _as_tensor(g) if create_graph else Tensor._make(g.copy(order="K")))
    return tuple(out)


def saved_bytes(tensor):
    """Bytes of the arrays the graph behind `tensor` keeps for backward (each array once)."""
    if tensor.grad_fn is None:
        return 0
    seen, total = set(), 0
    for node in _reachable([tensor.grad_fn]):
        if isinstance(node, Tensor):
            continue
        for a in node.saved_arrays():
            if id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
    return total

