"""`Optimizer`: param groups, per-parameter state, `zero_grad`, `step`, `state_dict`.

A rule (SGD, Adam, ...) subclasses it and writes `update(p, g, state, group)`: in-place NumPy math
on one parameter's array. `step` runs it outside the graph and bumps each parameter's version
counter, so a graph that saved the old value refuses to backward through the new one.
"""
from collections import defaultdict

import numpy as np

from chainrule.autograd import (_state, backward_sinks, enable_grad, gradient_sinks, sole_leaves,
                                step_call)
from chainrule.errors import ArgumentError, shape_error
from chainrule.ops import blas
from chainrule.nn.utils import zero_grads
from chainrule.tensor import Tensor


# fewest elements of a weight that backward_and_step updates inside backward: under this the
# BLAS call through ctypes costs more than the NumPy product and update it replaces
SINK_MIN = 1 << 12


class Optimizer:
    """Base class. `params`: an iterable of Tensors, or of dicts `{"params": [...], **options}`
    (param groups) whose options override `defaults`."""

    def __init__(self, params, defaults):
        if isinstance(params, (Tensor, set)):
            raise TypeError(f"params should be an ordered iterable (a list) of Tensors or dicts, "
                            f"got a {type(params).__name__}")
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ArgumentError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a dict `{"params": [...], **options}`; missing options come from `defaults`."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters must be an ordered collection (a list), "
                            "not a set, whose order changes between runs")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"an optimizer can only optimize Tensors, got {type(p).__name__}")
            if p.grad_fn is not None:
                raise ArgumentError("can't optimize a non-leaf Tensor")
        seen = {p for group in self.param_groups for p in group["params"]}
        if len(set(params)) != len(params) or any(p in seen for p in params):
            raise ArgumentError("some parameters appear more than once in the parameter groups")
        self.param_groups.append({**self.defaults, **param_group, "params": params})
        self._sinkable = None  # backward_and_step's candidates, found again on next use
        self._sinks = {}       # and their sinks

    @step_call
    def zero_grad(self, set_to_none=True):
        """Forget gradients: `p.grad = None`, or zero `p.grad` in place (cut from any graph)."""
        zero_grads([p for group in self.param_groups for p in group["params"]], set_to_none)

    @step_call
    def step(self, closure=None):
        """Update every parameter that has a `.grad`. `closure` re-evaluates and returns the loss
        (it runs with grad enabled); its value is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self.step_group(group)
        return loss

    def step_group(self, group):
        """Update one param group's parameters that have a `.grad`."""
        state, update, maximize = self.state, self.update, group.get("maximize", False)
        for p in group["params"]:
            if p.grad is not None:
                update(p.data, -p.grad.data if maximize else p.grad.data, state[p], group)
                p._version[0] += 1

    def backward_and_step(self, loss):
        """`loss.backward()` then `step()`, but each weight of a group whose rule is θ ← θ + α·g
        (`linear_rule`: SGD without momentum or weight decay) is updated inside the backward
        sweep, by one BLAS call as the op that makes its gradient a @ b gets there:
        θ ← θ + α·(a @ b) (`ops.blas.gemm_update`). That gradient never exists (`.grad` stays
        None, as after `zero_grad()`), and the update is not a second pass over the weight. The
        numbers are step()'s up to rounding (BLAS adds α·(a @ b) to θ as it makes the product;
        step() rounds the product, then the update). Only for 2-D weights of at least SINK_MIN
        elements of Linear and fused-perceptron ops that nothing else in the graph reads
        (`autograd.sole_leaves`), with no `.grad` and no hooks, when NumPy's BLAS is found;
        everything else goes through `.grad` as usual. Those weights' gradients start from zero
        at each call, so gradients are not accumulated across calls: call `zero_grad()` before
        each (as a training loop does) and use backward() and step() to accumulate. An exception
        raised inside backward (an interrupt) may leave some of those weights stepped. `cr.fit`
        trains this way unless a callback reads the gradients."""
        if _state.calls and not _state.anomaly:  # a compile trace: its replays update these
            for record in _state.calls:         # weights in backward (backward_sinks)
                record(backward_sinks, (self, sole_leaves(loss, list(self._alphas()))), {})
        # compile, viz and the memory ledger see every op and call, anomaly every gradient
        alphas = {} if _state.calls or _state.tracers or _state.anomaly else self._alphas()
        sole = sole_leaves(loss, list(alphas)) if alphas else ()
        if sole:
            with gradient_sinks({p: self._sink(p, alphas[p]) for p in sole}):
                loss.backward()
        else:
            loss.backward()
        self.step()

    def _alphas(self):
        """{parameter: its group's α} for the 2-D parameters of SINK_MIN elements or more that
        backward_and_step may update inside backward now: in a group with a `linear_rule`, no
        `.grad`, no hooks."""
        if self._sinkable is None:  # {group index: its 2-D parameters of SINK_MIN elements}
            self._sinkable = {}
            for i, group in enumerate(self.param_groups):
                params = [p for p in group["params"] if p.data.ndim == 2 and p.data.size >= SINK_MIN]
                if params and blas.AVAILABLE:
                    self._sinkable[i] = params
        alphas = {}
        for i, params in self._sinkable.items():
            group = self.param_groups[i]
            alpha = self.linear_rule(group)
            if alpha is not None:
                present = set(map(id, group["params"]))  # still in the group
                for p in params:
                    if id(p) in present and p.grad is None and not p._hooks:
                        alphas[p] = alpha
        return alphas

    def sinks_for(self, params):
        """{p: sink or None} for the given parameters, as backward_and_step would give them now
        (a replayed step's backward calls these: `cr.compile`)."""
        alphas = self._alphas()
        return {p: self._sink(p, alphas[p]) if p in alphas else None for p in params}

    def _sink(self, p, alpha):
        """p's gradient sink (autograd.gradient_sinks): θ ← θ + α·(a @ b) for the gradient a @ b,
        one BLAS call, or False (declined) when BLAS cannot take those arrays. Made once for p's
        array and α, and again if either changes."""
        made = self._sinks.get(p)
        if made is None or made[0] is not p.data or made[1] != alpha:
            update = blas.updater(p.data)

            def sink(a, b):
                if update is None or not update(a, b, alpha, 1.0):
                    return False
                p._version[0] += 1
                return True
            made = self._sinks[p] = (p.data, alpha, sink)
        return made[2]

    def linear_rule(self, group):
        """None, or α when this group's rule updates every parameter as θ ← θ + α·g from its
        gradient g and nothing else (SGD without momentum or weight decay)."""
        return None

    def update(self, p, g, state, group):
        """Update the array `p` in place from its gradient `g` (never written to); `state` is this
        parameter's dict (empty at first), `group` its param group's options."""
        raise NotImplementedError

    @staticmethod
    def _buffer(state, name, like, fill=0.0):
        """`state[name]`, allocated (filled with `fill`, shaped like `like`) on first use."""
        buf = state.get(name)
        if buf is None:
            buf = state[name] = np.full_like(like, fill)
        return buf

    # ---- saving ---------------------------------------------------------------------------------
    def state_dict(self):
        """A snapshot in PyTorch's layout: `{"state": {index: {name: Tensor or int}},
        "param_groups": [{**options, "params": [index, ...]}]}`, indices counting parameters
        across groups in order."""
        index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[p] for p in g["params"]]} for g in self.param_groups]
        state = {i: {k: Tensor._make(v.copy()) if isinstance(v, np.ndarray) else v
                     for k, v in self.state[p].items()}
                 for p, i in index.items() if self.state.get(p)}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a `state_dict()` (ours or PyTorch's): groups are matched in order, state arrays
        copied and cast to each parameter's dtype."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ArgumentError(f"load_state_dict: the state dict has {len(saved)} parameter "
                                f"groups, the optimizer {len(self.param_groups)}")
        index = {}
        for n, (group, s) in enumerate(zip(self.param_groups, saved)):
            if len(s["params"]) != len(group["params"]):
                raise ArgumentError(f"load_state_dict: parameter group {n} has "
                                    f"{len(s['params'])} parameters in the state dict, "
                                    f"{len(group['params'])} in the optimizer")
            index.update(zip((int(i) for i in s["params"]), group["params"]))
        state = defaultdict(dict)
        for i, pstate in state_dict["state"].items():
            p = index.get(int(i))
            if p is not None:
                state[p] = {k: _load_value(k, v, p, i) for k, v in pstate.items()}
        self.state = state
        self._sinkable, self._sinks = None, {}
        self.param_groups = [{**group, **{k: v for k, v in s.items() if k != "params"},
                              "params": group["params"]}
                             for group, s in zip(self.param_groups, saved)]

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines + [")"])


def _load_value(name, value, p, i):
    if name == "step":
        return int(value)
    value = np.asarray(value)
    if value.shape != p.data.shape:
        raise shape_error(f"load_state_dict: state '{name}' of parameter {i}", value.shape,
                          p.data.shape, detail="does not match the parameter's shape")
    arr = np.empty_like(p.data)  # the parameter's dtype and memory order
    np.copyto(arr, value, casting="unsafe")
    return arr
