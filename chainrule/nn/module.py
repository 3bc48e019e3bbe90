"""Module, the base class of layers and models, and the containers Sequential, ModuleList,
ModuleDict.

A Module's state is found by walking its attributes in assignment order: Parameters, Buffers,
sub-Modules, and lists, tuples and dicts of them (named `attr.0`, `attr.key`). Attributes are
ordinary Python attributes: no __getattr__/__setattr__ magic, so a typo is an AttributeError.
Dotted names and their order are PyTorch's for the same structure (`0.weight`, `layers.2.bias`),
so state_dicts move between the two.
"""
import collections
import functools
import itertools

import numpy as np

from chainrule import dtypes
from chainrule.autograd import RemovableHandle, _state, enable_grad, no_grad, step_call
from chainrule.errors import ArgumentError, ShapeError, fmt_shape
from chainrule.memory import trace_saved
from chainrule.nn.parameter import Buffer, Parameter
from chainrule.nn.utils import zero_grads
from chainrule.random import default_generator
from chainrule.tensor import Tensor

IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _flatten(name, value):
    """(dotted name, member) for a Parameter, Buffer or Module, or for those inside a list,
    tuple or dict; nothing for any other value."""
    if isinstance(value, (Module, Parameter, Buffer)):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten(f"{name}.{i}", v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{name}.{k}", v)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Base class: subclasses set Parameters and sub-Modules as attributes and define
    `forward`; calling the module runs `forward` (then any forward hooks)."""

    training = True       # class defaults: a subclass that skips super().__init__() still works
    _forward_hooks = None

    def __init__(self):
        self.training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs) if kwargs else self.forward(*args)
        if self._forward_hooks:
            for hook in list(self._forward_hooks):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook):
        """Call `hook(module, args, output)` after each forward; a non-None result replaces the
        output. Returns a handle whose `remove()` unregisters it."""
        if self._forward_hooks is None:
            self._forward_hooks = []
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    # ---- registration, PyTorch's spellings of plain attribute assignment ----------------------
    def add_module(self, name, module):
        setattr(self, name, module)

    register_module = add_module

    def register_parameter(self, name, param):
        setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        setattr(self, name, None if tensor is None else Buffer(tensor, persistent))

    # ---- walking the attributes ---------------------------------------------------------------
    def _attributes(self):
        """(name, value) pairs to walk; containers override this to list their items."""
        return vars(self).items()

    def _members(self):
        for name, value in self._attributes():
            yield from _flatten(name, value)

    def _children(self):
        """Direct sub-modules, a shared one under each of its names (as state_dict needs)."""
        return [(n, m) for n, m in self._members() if isinstance(m, Module)]

    def named_children(self):
        seen = set()
        for name, m in self._children():
            if id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module ('' by default) and every descendant, pre-order."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._children():
            yield from m.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self):
        return (m for _, m in self.named_modules())

    def _named(self, kind, prefix, recurse):
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        seen = set()
        for mprefix, m in modules:
            for name, t in m._members():
                if isinstance(t, kind) and id(t) not in seen:
                    seen.add(id(t))
                    yield _join(mprefix, name), t

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter), each Parameter once: a module's own, then its children's."""
        return self._named(Parameter, prefix, recurse)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True):
        return self._named(Buffer, prefix, recurse)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    # ---- modes and gradients ------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (Dropout drops, BatchNorm uses batch statistics) here and below."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    @step_call
    def zero_grad(self, set_to_none=True):
        zero_grads(self.parameters(), set_to_none)

    def apply(self, fn):
        """Call fn(module) on every sub-module (children first), then on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- dtype ------------------------------------------------------------------------------
    def to(self, dtype):
        """Cast floating-point parameters, buffers and grads to `dtype`, in place (the same
        Parameter objects). 'cpu' is accepted and does nothing."""
        if isinstance(dtype, str) and dtype == "cpu":
            return self
        dtype = dtypes.resolve(dtype)
        if not dtypes.is_float(dtype):
            raise ArgumentError(f"Module.to: expected a floating-point dtype, got {dtype}")
        for t in itertools.chain(self.parameters(), self.buffers()):
            if dtypes.is_float(t.data.dtype) and t.data.dtype != dtype:
                t.data = t.data.astype(dtype)
                t._version[0] += 1
                if t.grad is not None:
                    t.grad = Tensor._make(t.grad.data.astype(dtype))
        return self

    def double(self):
        return self.to(dtypes.float64)

    def float(self):
        return self.to(dtypes.float32)

    # ---- state_dict -------------------------------------------------------------------------
    def state_dict(self, prefix="", keep_vars=False):
        """OrderedDict name -> Tensor (detached, sharing memory): each module's parameters, then
        its persistent buffers, then its children's, as PyTorch orders them."""
        out = collections.OrderedDict()
        self._save(out, prefix, keep_vars)
        return out

    def _save(self, out, prefix, keep_vars):
        members = list(self._members())
        for want in (Parameter, Buffer):
            for name, t in members:
                if isinstance(t, want) and (want is Parameter or t.persistent):
                    out[prefix + name] = t if keep_vars else t.detach()
        for name, m in self._children():
            m._save(out, prefix + name + ".", keep_vars)

    def load_state_dict(self, state_dict, strict=True):
        """Copy each entry of `state_dict` into the tensor of the same name, in place (cast to
        its dtype). Checks everything before copying anything: a shape mismatch always raises
        ShapeError; missing or unexpected keys raise ArgumentError when `strict`. Returns
        (missing_keys, unexpected_keys)."""
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        arrays, mismatched = {}, []
        for k, t in own.items():
            if k in state_dict:
                a = _as_array(state_dict[k])
                if a.shape != t.shape:
                    mismatched.append(f"shape mismatch for {k!r}: {fmt_shape(a.shape)} in the "
                                      f"state_dict, {fmt_shape(t.shape)} in the model")
                arrays[k] = a
        problems = list(mismatched)
        if strict:
            if missing:
                problems.append("missing keys: " + ", ".join(map(repr, missing)))
            if unexpected:
                problems.append("unexpected keys: " + ", ".join(map(repr, unexpected)))
        if problems:
            error = ShapeError if len(problems) == len(mismatched) else ArgumentError
            raise error(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        with no_grad():
            for k, a in arrays.items():
                own[k].copy_(a)
        return IncompatibleKeys(missing, unexpected)

    # ---- repr -------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses in repr()."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._children()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"

    # ---- summary ----------------------------------------------------------------------------
    def summary(self, input, batch_size=2):
        """A table of the layers: name, type, output shape, parameter count, and bytes of
        activations saved for backward per sample.

        `input` is a per-sample shape (a batch of `batch_size` standard-normal samples is made)
        or an example batch (Tensor or array, first dim the batch). One forward runs with grad
        on, in the current mode; each array its graph saves (parameters excluded) is counted
        once, for the innermost module whose call first saved it (a ReLU output that the next
        Linear also keeps is the ReLU's). Modules not called show '-' as output shape. Buffers
        and the random generator are restored afterwards.
        """
        x = _example(input, batch_size, self)
        batch = x.shape[0] if x.ndim else 1
        params = [t.data for t in itertools.chain(self.parameters(), self.buffers())]
        saved_buffers = [(b, b.data.copy()) for b in self.buffers()]
        rng_state = default_generator.get_state()
        try:
            with enable_grad():
                out, ops, shapes, _ = trace_saved(lambda: self(x), self, params)
        finally:
            for b, data in saved_buffers:
                b.data[...] = data
            default_generator.set_state(rng_state)
        saved_by = {}
        for op in ops:
            saved_by[op.layer] = saved_by.get(op.layer, 0) + op.saved_bytes
        table = []
        for name, m in self.named_modules():
            shape, nbytes = shapes.get(name), saved_by.get(name, 0)
            own = sum(p.data.size for p in m.parameters(recurse=False))
            if next(m.children(), None) is not None and own == 0 and nbytes == 0:
                continue  # a pure container: its children have the rows
            shown = "-" if shape is None else fmt_shape(
                ("N",) + shape[1:] if shape and shape[0] == batch else shape)
            table.append((name or "(root)", type(m).__name__, shown, f"{own:,}",
                          f"{nbytes / batch:,.0f}"))
        head = ("Layer", "Type", "Output shape", "Params", "Saved bytes/sample")
        widths = [max(len(r[i]) for r in [head] + table) for i in range(5)]
        line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths)))
        rule = "-" * len(line(head))
        total = sum(p.data.size for p in self.parameters())
        trainable = sum(p.data.size for p in self.parameters() if p.requires_grad)
        saved = sum(op.saved_bytes for op in ops) / batch
        del out
        return "\n".join([line(head), rule] + [line(r) for r in table] + [
            rule, f"Total params: {total:,} ({trainable:,} trainable)",
            f"Activations saved for backward: {saved:,.0f} bytes per sample "
            f"(measured on a batch of {batch})"])


def _as_array(value):
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _example(input, batch_size, model):
    if isinstance(input, (Tensor, np.ndarray)):
        return input if isinstance(input, Tensor) else Tensor(input)
    dtype = next((p.dtype for p in model.parameters() if dtypes.is_float(p.dtype)),
                 dtypes.get_default_dtype())
    shape = (batch_size,) + tuple(int(n) for n in (input if isinstance(input, (tuple, list))
                                                   else (input,)))
    return Tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))


def _check_module(m, where):
    if not isinstance(m, Module):
        raise ArgumentError(f"{where}: expected a Module, got {type(m).__name__}")
    return m


class _Container(Module):
    """A module whose sub-modules live in the dict `_modules`, walked before other attributes."""

    def __init__(self):
        super().__init__()
        self._modules = {}

    def _attributes(self):
        return itertools.chain(self._modules.items(),
                               ((k, v) for k, v in vars(self).items() if k != "_modules"))

    def add_module(self, name, module):
        self._modules[str(name)] = _check_module(module, f"{type(self).__name__}.add_module")

    def __len__(self):
        return len(self._modules)

    def _renumber(self, modules):
        self._modules = {str(i): m for i, m in enumerate(modules)}

    def _index(self, idx):
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for {type(self).__name__} of length {n}")
        return list(self._modules)[idx % n]


class _Numbered(_Container):
    """Sub-modules named '0', '1', ... in order: what Sequential and ModuleList share."""

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, _check_module(module, f"{type(self).__name__}.insert"))
        self._renumber(modules)
        return self


class Sequential(_Numbered):
    """Modules applied in order: Sequential(m0, m1, ...) (named '0', '1', ...) or
    Sequential(OrderedDict(name=module, ...)). forward(x) = ...m1(m0(x)).

    Inside `fusing()` (as in `cr.fit`), a run of modules with a fused op (`fusions`: nn.layers
    adds Linear, ReLU, Linear, ... run as F.perceptron) runs as that one op, unless one of them
    has a forward hook or something watches each op (cr.viz.record, detect_anomaly, a compile
    trace)."""

    # type of a run's first module -> fn(modules, i, x): (output, index after the run) or None
    fusions = {}
    fuse = False  # set by fusing()

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        if not Sequential.fuse or _state.watching:
            for m in self._modules.values():
                x = m(x)
            return x
        modules, i = list(self._modules.values()), 0
        while i < len(modules):
            fused = self.fusions.get(type(modules[i]))
            run = fused(modules, i, x) if fused is not None else None
            if run is None:
                x, i = modules[i](x), i + 1
            else:
                x, i = run
        return x

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(collections.OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._index(idx)]

    def __setitem__(self, idx, module):
        self._modules[self._index(idx)] = _check_module(module, "Sequential")

    def __delitem__(self, idx):
        keys = list(self._modules)[idx] if isinstance(idx, slice) else [self._index(idx)]
        for k in keys:
            del self._modules[k]
        self._renumber(self._modules.values())


def fusable(module, cls):
    """Is `module` a plain `cls` (exactly), with no forward hook and no forward replaced on the
    instance, so that a fused op may run it?"""
    return type(module) is cls and not module._forward_hooks and "forward" not in module.__dict__


class fusing:
    """Context manager: inside it nn.Sequential runs each run of modules that has a fused op
    (Linear, ReLU, Linear, ...) as that one op. The numbers are the same to the bit; the graph
    has one node per run (graph pictures show Perceptron), so a step is faster where
    per-op overhead counts (bench W2). `cr.fit`, `evaluate` and `predict` run inside it. Also a
    decorator: `@fusing()`."""

    def __init__(self, enabled=True):
        self.enabled, self._prev = enabled, []  # a stack: one instance may be entered nested

    def __enter__(self):
        self._prev.append(Sequential.fuse)
        Sequential.fuse = self.enabled

    def __exit__(self, *exc):
        Sequential.fuse = self._prev.pop()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with fusing(self.enabled):
                return fn(*args, **kwargs)
        return wrapper


class ModuleList(_Numbered):
    """A list of modules, named '0', '1', ...; no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(modules or [])

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[self._index(idx)]

    def __setitem__(self, idx, module):
        self._modules[self._index(idx)] = _check_module(module, "ModuleList")

    def __delitem__(self, idx):
        modules = list(self._modules.values())
        del modules[idx]
        self._renumber(modules)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __repr__(self):
        """As PyTorch's: runs of identical modules are shown once, as `(0-2): 3 x Linear(...)`."""
        if not self._modules:
            return "ModuleList()"
        runs = []  # [first index, last index, repr]
        for i, m in enumerate(self._modules.values()):
            r = repr(m)
            if runs and runs[-1][2] == r:
                runs[-1][1] = i
            else:
                runs.append([i, i, r])
        lines = [(f"({a}): " if a == b else f"({a}-{b}): {b - a + 1} x ") + r.replace("\n", "\n  ")
                 for a, b, r in runs]
        return "ModuleList(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(_Container):
    """A dict of modules, named by their (string) keys in insertion order; no forward."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __contains__(self, key):
        return key in self._modules

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        return self._modules.pop(key)

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        items = modules.items() if isinstance(modules, dict) else modules
        for key, m in items:
            self.add_module(key, m)
