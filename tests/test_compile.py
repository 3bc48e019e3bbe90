"""cr.compile: a replayed call gives exactly the eager result, and re-traces on new shapes."""
import numpy as np
import pytest

import chainrule as cr
from chainrule import nn


def make(seed=0, dtype=np.float32):
    cr.manual_seed(seed)
    model = nn.MLP([3, 8, 8, 4]).to(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 3)).astype(dtype)
    y = rng.integers(0, 4, 64)
    return model, x, y


def train(step_fn, model, x, y, steps=30, batch=16, optimizer=cr.optim.Adam):
    opt = optimizer(model.parameters(), lr=0.01)
    losses = []
    for s in range(steps):
        i = (s * 7) % (len(x) - batch)
        b = batch if s % 5 else batch // 2  # a second input signature now and then
        loss = step_fn(x[i:i + b], y[i:i + b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("optimizer", [cr.optim.SGD, cr.optim.Adam])
def test_replay_equals_eager_bit_for_bit(optimizer):
    model, x, y = make()
    eager = train(lambda a, b: cr.cross_entropy(model(cr.tensor(a)), b), model, x, y,
                  optimizer=optimizer)
    model, x, y = make()
    compiled = cr.compile(lambda a, b: cr.cross_entropy(model(a), b))
    replayed = train(compiled, model, x, y, optimizer=optimizer)
    assert eager[0] == replayed[0]
    assert all(np.array_equal(a, b) for a, b in zip(eager[1], replayed[1]))
    assert len(compiled.programs) == 2  # batch 16 and batch 8


def test_trace_runs_python_once_per_signature_and_replay_uses_new_data():
    model, x, y = make(dtype=np.float64)
    calls = []

    def loss_fn(a, b):
        calls.append(a.shape)
        return cr.cross_entropy(model(a), b)

    f = cr.compile(loss_fn)
    first = f(x[:16], y[:16])
    second = f(x[16:32], y[16:32])
    assert calls == [(16, 3)]
    with cr.no_grad():
        expected = cr.cross_entropy(model(cr.tensor(x[16:32])), y[16:32])
    assert second.item() == expected.item() != first.item()


def test_tuple_outputs_first_carries_grad():
    model, x, y = make()

    def loss_and_logits(a, b):
        logits = model(a)
        return cr.cross_entropy(logits, b), logits

    f = cr.compile(loss_and_logits)
    f(x[:8], y[:8])
    loss, logits = f(x[8:16], y[8:16])
    assert loss.requires_grad and not logits.requires_grad
    with cr.no_grad():
        assert np.array_equal(logits.numpy(), model(cr.tensor(x[8:16])).numpy())


def test_no_grad_replay_records_nothing():
    model, x, y = make()
    f = cr.compile(lambda a, b: cr.cross_entropy(model(a), b))
    with cr.no_grad():
        f(x[:8], y[:8])
        out = f(x[8:16], y[8:16])
    assert not out.requires_grad and out.grad_fn is None


def test_replay_backward_twice_and_create_graph_raise():
    model, x, y = make(dtype=np.float64)
    f = cr.compile(lambda a, b: cr.cross_entropy(model(a), b))
    f(x[:8], y[:8])
    loss = f(x[8:16], y[8:16])
    loss.backward()
    with pytest.raises(cr.GraphError, match="second time"):
        loss.backward()
    loss = f(x[8:16], y[8:16])
    with pytest.raises(cr.GraphError, match="create_graph"):
        cr.grad(loss, list(model.parameters()), create_graph=True)


def test_replay_checks_targets_like_eager():
    model, x, y = make()
    f = cr.compile(lambda a, b: cr.cross_entropy(model(a), b))
    f(x[:8], y[:8])
    with pytest.raises(cr.ArgumentError, match=r"targets must lie in \[0, 4\)"):
        f(x[:8], np.full(8, 7))


def test_inputs_that_require_grad_stay_eager():
    w = cr.randn(3, dtype=cr.float64, requires_grad=True)
    f = cr.compile(lambda a: (a * w).sum())
    a = cr.randn(3, dtype=cr.float64, requires_grad=True)
    f(a).backward()
    f(a).backward()
    assert not f.programs
    np.testing.assert_allclose(a.grad.numpy(), 2 * w.numpy())


def eager_and_compiled(seed=0):
    model, x, y = make(seed, np.float64)
    return model, x, y, cr.compile(lambda a, b: cr.cross_entropy(model(a), b))


def grads_of(model):
    return [p.grad.numpy().copy() for p in model.parameters()]


def test_two_replayed_calls_alive_before_one_backward():
    """Gradient accumulation: each call keeps its own saved arrays (its own ctx set)."""
    model, x, y, f = eager_and_compiled()
    f(x[:8], y[:8])  # trace
    total = f(x[8:16], y[8:16]) + f(x[16:24], y[16:24])
    total.backward()
    replayed = grads_of(model)
    model.zero_grad()
    (cr.cross_entropy(model(cr.tensor(x[8:16])), y[8:16])
     + cr.cross_entropy(model(cr.tensor(x[16:24])), y[16:24])).backward()
    assert all(np.array_equal(a, b) for a, b in zip(replayed, grads_of(model)))
    program = next(iter(f.programs.values()))[0]
    assert len(program.pool) == 2  # both ctx sets came back after the backward


def test_retain_graph_replay_backward_twice_accumulates():
    model, x, y, f = eager_and_compiled()
    f(x[:8], y[:8])
    loss = f(x[8:16], y[8:16])
    loss.backward(retain_graph=True)
    once = grads_of(model)
    loss.backward()
    assert all(np.array_equal(2 * a, b) for a, b in zip(once, grads_of(model)))
    with pytest.raises(cr.GraphError, match="second time"):
        loss.backward()


def test_replay_saves_what_eager_saves_and_frees_it():
    model, x, y, f = eager_and_compiled()
    eager = f(x[:8], y[:8])
    replayed = f(x[8:16], y[8:16])
    assert cr.saved_bytes(replayed) == cr.saved_bytes(eager) > 0
    replayed.backward()
    assert cr.saved_bytes(replayed) == 0
    with cr.no_grad():
        assert cr.saved_bytes(f(x[8:16], y[8:16])) == 0


def test_detect_anomaly_sees_every_op_of_a_compiled_call():
    w = cr.tensor(np.ones(3), requires_grad=True)
    f = cr.compile(lambda a: (cr.log(a) * w).sum())
    f(np.ones(3))
    with np.errstate(invalid="ignore"):
        assert np.isnan(f(-np.ones(3)).item())  # replayed: no checks
        with cr.detect_anomaly(), pytest.raises(cr.AnomalyError, match="Log produced NaN"):
            f(-np.ones(3))


def test_freezing_a_parameter_after_tracing_retraces():
    model, x, y, f = eager_and_compiled()
    f(x[:8], y[:8]).backward()
    first = model.layers[0].weight
    first.requires_grad_(False)
    model.zero_grad()
    f(x[8:16], y[8:16]).backward()
    assert first.grad is None and model.layers[2].weight.grad is not None
    program = next(iter(f.programs.values()))[0]
    assert program.param_state[0][1] is False
    assert program.source.count("    v") >= len(program.ops)  # one line per op, readable


@pytest.mark.parametrize("body", [
    lambda lin, x: (cr.relu(lin(x)) + lin(x)).sum(),                 # two Linear nodes
    lambda lin, x: (lambda h: (cr.relu(h) + h).sum())(lin(x)),       # h read twice: no in place
    lambda lin, x: (lambda h: (cr.relu(h.reshape(-1)) + h.reshape(-1)).sum())(lin(x)),  # views
])
def test_in_place_kernels_only_where_no_one_else_reads(body):
    """Replay runs ReLU in place on a Linear output no one else reads; elsewhere it must not."""
    lin = nn.Linear(3, 4).to(np.float64)
    x = np.random.default_rng(1).standard_normal((5, 3))
    f = cr.compile(lambda a: body(lin, a))
    f(x).backward()
    lin.zero_grad()
    value = f(x)
    value.backward()
    replayed = [p.grad.numpy().copy() for p in lin.parameters()]
    lin.zero_grad()
    eager = body(lin, cr.tensor(x))
    eager.backward()
    assert value.item() == eager.item()
    assert all(np.array_equal(a, p.grad.numpy()) for a, p in zip(replayed, lin.parameters()))


def test_second_output_read_by_a_kernel_is_not_overwritten():
    lin = nn.Linear(3, 4).to(np.float64)
    x = np.random.default_rng(2).standard_normal((5, 3))
    f = cr.compile(lambda a: (lambda h: (cr.relu(h).sum(), h))(lin(a)))
    f(x)
    loss, h = f(x)
    with cr.no_grad():
        expected = lin(cr.tensor(x)).numpy()
    assert np.array_equal(h.numpy(), expected) and (expected < 0).any()


# ---- what a trace must not get wrong (each case once returned a silently different result) ----
def _lin(dtype=np.float64, n_in=5):
    cr.manual_seed(1)
    return nn.Linear(n_in, 4).to(dtype)


_L64, _L32 = _lin(), _lin(np.float32)
_RNG = np.random.default_rng(0)
_X, _Y = _RNG.standard_normal((16, 5)), _RNG.integers(0, 4, 16)
_X32 = _X.astype(np.float32)
_Y8 = _Y[:8]  # one array object, passed in two slots below
TRACE_CASES = {  # name: (fn, trace-call args, replay-call args)
    "in-place write outside autograd": (
        lambda a, b: (lambda x: (x.__imul__(2), cr.cross_entropy(_L64(x), b))[1])(a * 1.0),
        (_X[:8], _Y[:8]), (_X[8:], _Y[8:])),
    "in-place on an intermediate": (
        lambda a, b: (lambda h: (h.__iadd__(1.0), cr.cross_entropy(cr.relu(h), b))[1])(_L64(a)),
        (_X[:8], _Y[:8]), (_X[8:], _Y[8:])),
    "detach() of an input": (
        lambda a, b: cr.cross_entropy(_L64(a.detach()), b), (_X[:8], _Y[:8]), (_X[8:], _Y[8:])),
    "cr.tensor() of an input": (
        lambda a, b: cr.cross_entropy(_L64(cr.tensor(a)), b), (_X[:8], _Y[:8]), (_X[8:], _Y[8:])),
    "an input inside an index": (
        lambda a, b: _L64(a)[np.arange(8), b].sum(), (_X[:8], _Y[:8]), (_X[8:], _Y[8:])),
    "one array in two input slots": (
        lambda a, y1, y2: cr.cross_entropy(_L64(a), y1) + 2 * cr.cross_entropy(_L64(a), y2),
        (_X[:8], _Y8, _Y8), (_X[:8], _Y8, (_Y8 + 1) % 4)),
    "a Python int argument": (
        lambda a, b, k: cr.cross_entropy(_L64(a)[:k], b[:k]), (_X[:8], _Y[:8], 4),
        (_X[:8], _Y[:8], 6)),
    "a NumPy float64 scalar, float32 model": (
        lambda a, b: cr.cross_entropy(cr.tanh(_L32(a)) / np.sqrt(4.0), b),
        (_X32[:8], _Y[:8]), (_X32[8:], _Y[8:])),
    "a Python float argument, float32 model": (
        lambda a, b, t: cr.cross_entropy(_L32(a) / t, b), (_X32[:8], _Y[:8], 2.0),
        (_X32[8:], _Y[8:], 3.0)),
}


@pytest.mark.filterwarnings("ignore:compile:UserWarning")
@pytest.mark.parametrize("name", list(TRACE_CASES))
def test_replay_equals_eager_where_tracing_is_tricky(name):
    fn, first, second = TRACE_CASES[name]
    f = cr.compile(fn)
    f(*first)
    replayed = f(*second)
    eager = fn(*[cr.tensor(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                 for a in second])
    assert replayed.dtype == eager.dtype and replayed.item() == eager.item()


def test_unreplayable_functions_warn_once_and_stay_eager():
    lin = _lin()

    def with_hook(a, b):
        h = lin(a)
        h.register_hook(lambda g: g * 0)
        return cr.cross_entropy(h, b)

    f = cr.compile(with_hook)
    with pytest.warns(UserWarning, match="hook or retain_grad"):
        f(_X[:8], _Y[:8]).backward()
    lin.zero_grad()
    f(_X[8:], _Y[8:]).backward()  # eager again: the hook zeroes the gradient
    assert not lin.weight.grad.numpy().any() and not f.programs


def test_replay_refuses_saved_arrays_modified_in_place_like_eager():
    first, second = _lin(), nn.Linear(4, 4).to(np.float64)
    f = cr.compile(lambda a, b: (lambda h: (cr.cross_entropy(second(h), b), h))(cr.tanh(first(a))))
    f(_X[:8], _Y[:8])
    loss, h = f(_X[8:], _Y[8:])
    with cr.no_grad():
        h.mul_(0.0)  # h is what `second` saved for its weight's gradient
    with pytest.raises(cr.GraphError, match="modified in place"):
        loss.backward()
    loss = f(_X[8:], _Y[8:])[0]
    loss.backward(retain_graph=True)
    cr.optim.SGD(second.parameters(), lr=1.0).step()  # `second.weight` was saved for h's grad
    with pytest.raises(cr.GraphError, match="modified in place"):
        loss.backward()


def test_a_parameter_changing_dtype_retraces():
    lin = _lin()
    f = cr.compile(lambda a, b: cr.cross_entropy(lin(a), b))
    f(_X[:8], _Y[:8])
    lin.to(np.float32)
    f(_X[8:], _Y[8:]).backward()
    assert lin.weight.grad.dtype == np.float32


def test_one_array_never_becomes_two_parameters_gradients():
    """Add hands its incoming gradient to both inputs: each .grad must be its own array."""
    p1 = cr.tensor(np.ones(3), requires_grad=True)
    p2 = cr.tensor(np.ones(3), requires_grad=True)
    f = cr.compile(lambda a: ((p1 + p2) * a).sum())
    f(np.arange(3.0)).backward()
    p1.grad = p2.grad = None
    f(np.arange(3.0) + 1).backward()
    assert not np.shares_memory(p1.grad.numpy(), p2.grad.numpy())
    np.testing.assert_array_equal(p1.grad.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(p2.grad.numpy(), [1.0, 2.0, 3.0])


def test_outputs_must_be_computed_by_ops():
    w = cr.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(cr.GraphError, match="every output must be computed by chainrule ops"):
        cr.compile(lambda a: ((a * w).sum(), 3))(np.ones(3))
    with pytest.raises(cr.GraphError, match="every output must be computed by chainrule ops"):
        cr.compile(lambda a: w)(np.ones(3))


@pytest.mark.parametrize("name, reason", [
    ("in-place write outside autograd", "an in-place write outside autograd"),
    ("one array in two input slots", "two inputs are the same array"),
    ("cr.tensor() of an input", r"a Tensor equal to an input but not computed from it"),
])
def test_why_a_trace_cannot_be_replayed_is_said(name, reason):
    fn, first, _ = TRACE_CASES[name]
    with pytest.warns(UserWarning, match=f"compile: {reason}.*runs eagerly from now on"):
        cr.compile(fn)(*first)


# ---- a whole training step compiled: forward, zero_grad, backward, clipping, step ---------------
def step_run(compiled, optimizer=cr.optim.Adam, steps=30, clip=None, hook=None, zero_first=True):
    """Train with a step function holding the whole step; returns losses, weights and grads."""
    model, x, y = make()
    opt = optimizer(model.parameters(), lr=0.01)
    sched = cr.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    if hook is not None:
        model.layers[0].weight.register_hook(hook)

    def step(a, b):
        if zero_first:
            opt.zero_grad()
        loss = cr.cross_entropy(model(a), b)
        loss.backward()
        if clip is not None:
            cr.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        return loss

    fn = cr.compile(step) if compiled else step
    losses, grads = [], []
    for s in range(steps):
        i = (s * 7) % (len(x) - 16)
        b = 16 if s % 5 else 8  # a second input signature now and then
        losses.append(fn(x[i:i + b], y[i:i + b]).item())
        grads.append([p.grad.data.copy() for p in model.parameters()])
    return losses, [p.data.copy() for p in model.parameters()], grads, fn, opt


@pytest.mark.parametrize("optimizer, clip", [(cr.optim.SGD, None), (cr.optim.Adam, None),
                                             (cr.optim.Adam, 0.05)])
def test_compiled_training_step_equals_eager_bit_for_bit(optimizer, clip):
    eager = step_run(False, optimizer, clip=clip)
    replayed = step_run(True, optimizer, clip=clip)
    assert eager[0] == replayed[0]
    for a, b in zip(eager[1], replayed[1]):
        np.testing.assert_array_equal(a, b)
    for ga, gb in zip(eager[2], replayed[2]):  # every step's .grad, clipping included
        for a, b in zip(ga, gb):
            np.testing.assert_array_equal(a, b)
    assert eager[4].param_groups[0]["lr"] == replayed[4].param_groups[0]["lr"] < 0.01
    fn = replayed[3]
    assert fn.eager_only is None and len(fn.programs) == 2  # replayed, two signatures
    program = next(iter(fn.programs.values()))[0]
    assert [c and c[0].__qualname__ for c in program.after] == (
        [None, "clip_grad_norm_", "Optimizer.step", "LRScheduler.step"] if clip else
        [None, "Optimizer.step", "LRScheduler.step"])
    assert [c[0].__qualname__ for c in program.before] == ["Optimizer.zero_grad"]


def test_compiled_step_without_zero_grad_accumulates_and_runs_parameter_hooks():
    seen = []
    hook = lambda g: seen.append(g.data.copy()) or g * 2  # noqa: E731
    eager = step_run(False, cr.optim.SGD, steps=6, hook=hook, zero_first=False)
    n = len(seen)
    replayed = step_run(True, cr.optim.SGD, steps=6, hook=hook, zero_first=False)
    assert len(seen) == 2 * n == 12  # the hook ran at every replayed step too
    for ga, gb in zip(eager[2], replayed[2]):
        for a, b in zip(ga, gb):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(eager[2][0][0], eager[2][1][0])  # .grad accumulated over steps


def test_compiled_step_returns_a_detached_loss_and_keeps_nothing():
    model, x, y = make()
    opt = cr.optim.SGD(model.parameters(), lr=0.1)

    def step(a, b):
        loss = cr.cross_entropy(model(a), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    fn = cr.compile(step)
    fn(x[:16], y[:16])
    loss = fn(x[16:32], y[16:32])
    assert loss.grad_fn is None and not loss.requires_grad
    program = next(iter(fn.programs.values()))[0]
    assert len(program.pool) == 1 and all(ctx._saved == () for ctx in program.pool[0])


@pytest.mark.parametrize("body, reason", [
    ("backward_twice", "backward\\(\\) was called twice"),
    ("retain_graph", "backward\\(\\) was called with gradient=, retain_graph"),
    ("op_after_backward", "ops ran after backward\\(\\)"),
    ("call_between_ops", "Optimizer.zero_grad was called between the function's ops"),
    ("closure", "Optimizer.step was called with a function"),
])
def test_steps_a_replay_cannot_repeat_stay_eager_and_say_why(body, reason):
    model, x, y = make()
    opt = cr.optim.SGD(model.parameters(), lr=0.1)

    def step(a, b):
        loss = cr.cross_entropy(model(a), b)
        if body == "call_between_ops":
            opt.zero_grad()
            loss = loss * 1.0
        if body == "closure":
            loss.backward()
            opt.step(lambda: 0.0)
            return loss
        if body == "backward_twice":  # two losses, two graphs: fine eagerly, not one program
            other = cr.cross_entropy(model(a), b)
            other.backward()
        loss.backward(retain_graph=body == "retain_graph")
        opt.step()
        if body == "op_after_backward":
            return loss * 2.0
        return loss
    fn = cr.compile(step)
    with pytest.warns(UserWarning, match=f"compile: {reason}.*runs eagerly from now on"):
        fn(x[:16], y[:16])
    before = [p.data.copy() for p in model.parameters()]
    fn(x[:16], y[:16])  # eager: the step really runs again
    assert fn.eager_only and not all(np.array_equal(a, p.data)
                                     for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("order", ["C", "F"])
def test_weight_gradient_keeps_the_weights_memory_order_eager_and_replayed(order):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    w = cr.from_numpy(np.asarray(rng.standard_normal((3, 5)), order=order)).requires_grad_()
    b = cr.tensor(rng.standard_normal(3), requires_grad=True)
    fn = lambda a, t: cr.cross_entropy(cr.nn.functional.linear(a, w, b), t)  # noqa: E731
    grads = []
    for f in (fn, cr.compile(fn), "replay"):
        f = grads[-1][1] if f == "replay" else f
        w.grad = b.grad = None
        f(x, y).backward()
        grads.append((w.grad.numpy(), f))
        assert w.grad.numpy().flags[f"{order}_CONTIGUOUS"] and w.grad.numpy().base is None
    np.testing.assert_array_equal(grads[0][0], grads[2][0])
    expected = (np.exp(x @ w.numpy().T + b.numpy()) / np.exp(x @ w.numpy().T + b.numpy()).sum(
        1, keepdims=True) - np.eye(3)[y]).T @ x / 8
    np.testing.assert_allclose(grads[0][0], expected, rtol=1e-10)


@pytest.mark.parametrize("case", ["batchnorm_training", "hand_written_update"])
def test_writes_a_replay_would_not_repeat_make_it_eager(case):
    cr.manual_seed(0)
    norm = nn.BatchNorm1d(8)
    model = nn.Sequential(nn.Linear(3, 8), norm, nn.ReLU(), nn.Linear(8, 4))
    _, x, y = make()

    def step(a, b):
        loss = cr.cross_entropy(model(a), b)
        if case == "hand_written_update":
            model.zero_grad()
            loss.backward()
            with cr.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
        return loss
    fn = cr.compile(step)
    with pytest.warns(UserWarning, match="a replay would not repeat.*runs eagerly from now on"):
        fn(x[:16], y[:16])
    before = norm.running_mean.numpy().copy(), model[0].weight.numpy().copy()
    fn(x[16:32], y[16:32])
    assert not np.array_equal(before[0], norm.running_mean.numpy())  # every call updates
    assert (case == "hand_written_update") != np.array_equal(before[1], model[0].weight.numpy())


def _step_pair(body):
    """(eager, compiled) parameters after 3 steps of `body(model, opt, x, y)`."""
    out = []
    for compiled in (False, True):
        model, x, y = make()
        opt = cr.optim.SGD(model.parameters(), lr=0.5)

        def step(a, b):
            return body(model, opt, a, b)
        fn = cr.compile(step) if compiled else step
        for s in range(3):
            fn(x[16 * s:16 * s + 16], y[16 * s:16 * s + 16])
        out.append([p.data.copy() for p in model.parameters()])
    return out


def test_step_calls_with_iterator_keywords_and_plain_zero_grads_replay():
    def body(model, opt, a, b):
        cr.nn.utils.zero_grads(model.parameters())
        loss = cr.cross_entropy(model(a), b)
        loss.backward()
        cr.nn.utils.clip_grad_norm_(parameters=model.parameters(), max_norm=0.01)
        opt.step()
        return loss
    eager, replayed = _step_pair(body)
    for a, b in zip(eager, replayed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case, reason", [
    ("norm_from_data", "clip_grads_with_norm_ was called with an array that is not a parameter"),
    ("plateau", r"ReduceLROnPlateau.step\(metric\) takes a value computed from the data"),
])
def test_step_calls_fed_by_the_data_make_the_step_eager(case, reason):
    model, x, y = make()
    opt = cr.optim.SGD(model.parameters(), lr=0.5)
    plateau = cr.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)

    def step(a, b):
        opt.zero_grad()
        loss = cr.cross_entropy(model(a), b)
        loss.backward()
        if case == "norm_from_data":
            params = list(model.parameters())
            cr.nn.utils.clip_grads_with_norm_(params, 0.01, cr.nn.utils.get_total_norm(
                [p.grad for p in params]))
        else:
            plateau.step(1.0)
        opt.step()
        return loss
    fn = cr.compile(step)
    with pytest.warns(UserWarning, match=f"compile: {reason}.*runs eagerly from now on"):
        fn(x[:16], y[:16])
    fn(x[16:32], y[16:32])
    if case == "plateau":
        assert opt.param_groups[0]["lr"] == 0.25  # the second call's plateau step happened too


def test_replayed_step_runs_parameter_hooks_without_grad_like_eager():
    model, x, y = make()
    opt = cr.optim.SGD(model.parameters(), lr=0.1)
    w = model.layers[0].weight
    seen = []
    w.register_hook(lambda g: seen.append((cr.is_grad_enabled(), (g + 0.1 * w).requires_grad)))

    def step(a, b):
        opt.zero_grad()
        loss = cr.cross_entropy(model(a), b)
        loss.backward()
        opt.step()
        return loss
    fn = cr.compile(step)
    fn(x[:16], y[:16])
    fn(x[16:32], y[16:32])
    assert seen == [(False, False)] * 2 and fn.eager_only is None


def test_a_step_returning_a_number_is_a_clear_error():
    model, x, y = make()
    fn = cr.compile(lambda a, b: cr.cross_entropy(model(a), b).item())
    with pytest.raises(cr.GraphError, match="must return a Tensor.*not a float.*loss.item"):
        fn(x[:16], y[:16])


@pytest.mark.parametrize("case, reason", [
    ("backward_of_outside", r"backward\(\) of a Tensor computed outside the function"),
    ("reaches_outside", r"backward\(\) reaches a Tensor computed outside the function"),
])
def test_a_backward_that_leaves_the_function_stays_eager(case, reason):
    w = cr.tensor(np.ones(3), requires_grad=True)
    outside = w * 2.0  # computed before the compiled function, not by it
    outside_total = outside.sum()

    def step(a):
        loss = (a * (outside if case == "reaches_outside" else w)).sum()
        (outside_total if case == "backward_of_outside" else loss).backward()
        return loss
    with pytest.warns(UserWarning, match=f"compile: {reason}.*runs eagerly from now on"):
        cr.compile(step)(np.arange(3.0))
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0] if case == "backward_of_outside"
                                  else [0.0, 2.0, 4.0])
