"""cr.optim: every rule follows PyTorch's parameter trajectory (float64, 20 steps), param groups,
state_dict round trips (ours and PyTorch's), zero_grad, version counters, argument errors."""
import tracemalloc

import numpy as np
import pytest

import chainrule as cr
from chainrule import optim
from chainrule.ops import blas

RTOL, ATOL = 1e-6, 1e-12
STEPS = 20


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((8, 4)), rng.standard_normal((8, 3)),
            rng.standard_normal((3, 4)), rng.standard_normal(3))


def _loss(X, Y, W, b):
    """Least squares plus a quartic penalty, so the curvature changes along the trajectory."""
    r = X @ W.T + b - Y
    return (r * r).mean() + 0.05 * (W * W * W * W).sum()


class _Lib:
    """The same few calls on chainrule and on torch."""

    def __init__(self, name):
        self.torch = pytest.importorskip("torch") if name == "torch" else None
        self.optim = self.torch.optim if self.torch else optim

    def tensor(self, a, requires_grad=False):
        if self.torch:
            return self.torch.tensor(np.array(a), dtype=self.torch.float64,
                                     requires_grad=requires_grad)
        return cr.tensor(np.array(a), dtype=cr.float64, requires_grad=requires_grad)

    def numpy(self, t):
        return t.detach().numpy().copy()


def _run(lib, make_opt, sign=1.0, steps=STEPS, start=None, setup=None):
    """Train W, b for `steps` steps; the flattened parameters after each step, and the optimizer."""
    X, Y, W0, b0 = _problem()
    W0, b0 = start if start is not None else (W0, b0)
    X, Y = lib.tensor(X), lib.tensor(Y)
    W, b = lib.tensor(W0, True), lib.tensor(b0, True)
    opt = make_opt(lib.optim, [W, b])
    if setup is not None:
        setup(opt)
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        (sign * _loss(X, Y, W, b)).backward()
        opt.step()
        traj.append(np.concatenate([lib.numpy(W).ravel(), lib.numpy(b)]))
    return np.array(traj), opt, (lib.numpy(W), lib.numpy(b))


# one row per rule and interesting option: (id, factory(optim module, params), loss sign)
CASES = [
    ("sgd", lambda o, p: o.SGD(p, lr=0.05), 1),
    ("sgd-momentum-dampening", lambda o, p: o.SGD(p, lr=0.05, momentum=0.9, dampening=0.3), 1),
    ("sgd-nesterov-wd", lambda o, p: o.SGD(p, lr=0.05, momentum=0.8, nesterov=True,
                                          weight_decay=0.1), 1),
    ("sgd-maximize", lambda o, p: o.SGD(p, lr=0.05, momentum=0.5, maximize=True), -1),
    ("adam", lambda o, p: o.Adam(p, lr=0.05), 1),
    ("adam-amsgrad-wd", lambda o, p: o.Adam(p, lr=0.05, betas=(0.8, 0.9), weight_decay=0.1,
                                           amsgrad=True), 1),
    ("adam-maximize-eps", lambda o, p: o.Adam(p, lr=0.02, eps=1e-3, maximize=True), -1),
    ("adam-decoupled", lambda o, p: o.Adam(p, lr=0.05, weight_decay=0.2,
                                          decoupled_weight_decay=True), 1),
    ("adamw", lambda o, p: o.AdamW(p, lr=0.05), 1),
    ("adamw-amsgrad-maximize", lambda o, p: o.AdamW(p, lr=0.05, betas=(0.7, 0.8),
                                                   weight_decay=0.3, amsgrad=True,
                                                   maximize=True), -1),
    ("rmsprop", lambda o, p: o.RMSprop(p, lr=0.01), 1),
    ("rmsprop-centered-momentum-wd", lambda o, p: o.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.7,
                                                            centered=True, weight_decay=0.1), 1),
    ("rmsprop-momentum-maximize", lambda o, p: o.RMSprop(p, lr=0.005, momentum=0.5, eps=1e-4,
                                                         maximize=True), -1),
    ("adagrad", lambda o, p: o.Adagrad(p, lr=0.1), 1),
    ("adagrad-decay-wd-init", lambda o, p: o.Adagrad(p, lr=0.2, lr_decay=0.05, weight_decay=0.1,
                                                     initial_accumulator_value=0.3, eps=1e-6), 1),
    ("adagrad-maximize", lambda o, p: o.Adagrad(p, lr=0.1, maximize=True), -1),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,make,sign", CASES, ids=IDS)
def test_trajectory_matches_torch(name, make, sign):
    ours, opt, _ = _run(_Lib("cr"), make, sign)
    theirs, topt, _ = _run(_Lib("torch"), make, sign)
    start = np.concatenate([_problem()[2].ravel(), _problem()[3]])
    assert np.abs(ours[-1] - start).max() > 1e-2  # the parameters really moved
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    # the state has PyTorch's names and values
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for i, st in sd["state"].items():
        assert st.keys() == tsd["state"][i].keys()
        for k, v in st.items():
            np.testing.assert_allclose(np.asarray(v), tsd["state"][i][k].numpy(), rtol=RTOL,
                                       atol=ATOL, err_msg=f"state {i} {k}")
    assert set(sd["param_groups"][0]) <= set(tsd["param_groups"][0])
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"] == [0, 1]


def _two_groups(o, p, rule):
    W, b = p
    if rule == "sgd":
        return o.SGD([{"params": [W]}, {"params": b, "lr": 0.2, "momentum": 0.5}], lr=0.05,
                     momentum=0.9)
    return o.Adam([{"params": [W], "betas": (0.5, 0.7)}, {"params": [b], "lr": 0.01}], lr=0.1)


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_param_groups_match_torch(rule):
    make = lambda o, p: _two_groups(o, p, rule)  # noqa: E731
    ours, opt, _ = _run(_Lib("cr"), make)
    theirs, _, _ = _run(_Lib("torch"), make)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert [g["lr"] for g in opt.param_groups] == ([0.05, 0.2] if rule == "sgd" else [0.1, 0.01])
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]


def test_param_groups_each_use_their_own_lr():
    W, b = cr.ones(3, dtype=cr.float64, requires_grad=True), cr.ones(2, dtype=cr.float64,
                                                                      requires_grad=True)
    opt = optim.SGD([{"params": [W]}, {"params": [b], "lr": 0.5}], lr=0.1)
    (W.sum() + b.sum()).backward()
    opt.step()
    np.testing.assert_array_equal(W.data, 0.9)
    np.testing.assert_array_equal(b.data, 0.5)


@pytest.mark.parametrize("name,make,sign", CASES, ids=IDS)
def test_state_dict_round_trip_continues_identically(name, make, sign):
    lib = _Lib("cr")
    full, _, _ = _run(lib, make, sign)
    first, opt, (W5, b5) = _run(lib, make, sign, steps=5)
    sd = opt.state_dict()
    saved = {i: {k: np.array(v, copy=True) for k, v in s.items()} for i, s in sd["state"].items()}
    opt.step()  # moving on afterwards must not change the snapshot
    for i, s in sd["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(np.asarray(v), saved[i][k])
    rest, _, _ = _run(lib, make, sign, steps=STEPS - 5, start=(W5, b5),
                      setup=lambda o: o.load_state_dict(sd))
    np.testing.assert_array_equal(np.concatenate([first, rest]), full)


TORCH_LOAD = ("sgd-nesterov-wd", "adam-amsgrad-wd", "rmsprop-centered-momentum-wd",
              "adagrad-decay-wd-init")


@pytest.mark.parametrize("name,make,sign", [c for c in CASES if c[0] in TORCH_LOAD],
                         ids=TORCH_LOAD)
def test_loads_torch_state_dict(name, make, sign):
    """A PyTorch optimizer's state_dict (torch tensors, float steps) continues in chainrule."""
    torch = pytest.importorskip("torch")
    full, _, _ = _run(_Lib("torch"), make, sign)
    _, topt, (W5, b5) = _run(_Lib("torch"), make, sign, steps=5)
    tsd = topt.state_dict()
    assert isinstance(tsd["state"][0].get("step", torch.zeros(())), torch.Tensor)
    rest, _, _ = _run(_Lib("cr"), make, sign, steps=STEPS - 5, start=(W5, b5),
                      setup=lambda o: o.load_state_dict(tsd))
    np.testing.assert_allclose(rest, full[5:], rtol=RTOL, atol=ATOL)


def test_state_dict_layout():
    W, b = cr.ones(2, 3, requires_grad=True), cr.ones(3, requires_grad=True)
    c = cr.ones(1, requires_grad=True)
    opt = optim.Adam([{"params": [W, b]}, {"params": [c], "lr": 0.5}])
    (W.sum() + b.sum()).backward()  # c gets no gradient, so no state
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == [0, 1]
    assert list(sd["state"][0]) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][0]["step"] == 1
    assert isinstance(sd["state"][0]["exp_avg"], cr.Tensor)
    assert sd["state"][0]["exp_avg"].shape == (2, 3) and sd["state"][0]["exp_avg"].dtype == W.dtype
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["lr"] == 1e-3
    # SGD without momentum keeps no state at all, like PyTorch
    sgd = optim.SGD([W, b], lr=0.1)
    sgd.step()
    assert sgd.state_dict()["state"] == {}


def test_load_state_dict_restores_group_options_and_string_keys():
    W = cr.ones(3, dtype=cr.float64, requires_grad=True)
    opt = optim.SGD([W], lr=0.1, momentum=0.9)
    W.sum().backward()
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.01
    sd["state"] = {str(k): v for k, v in sd["state"].items()}  # as after a JSON round trip
    V = cr.ones(3, dtype=cr.float64, requires_grad=True)
    opt2 = optim.SGD([V], lr=0.5, momentum=0.9)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["params"][0] is V
    np.testing.assert_array_equal(opt2.state[V]["momentum_buffer"], 1.0)
    opt2.state[V]["momentum_buffer"][0] = 7  # loaded arrays are copies
    assert sd["state"]["0"]["momentum_buffer"].data[0] == 1.0


def test_load_state_dict_errors():
    W, b = cr.ones(2, 3, requires_grad=True), cr.ones(3, requires_grad=True)
    opt = optim.Adam([W, b])
    (W.sum() + b.sum()).backward()
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(cr.ArgumentError, match="parameter group 0 has 2 parameters"):
        optim.Adam([W]).load_state_dict(sd)
    with pytest.raises(cr.ArgumentError, match="1 parameter groups, the optimizer 2"):
        optim.Adam([{"params": [W]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(cr.ShapeError, match=r"exp_avg.*parameter 0.*\(2, 3\).*\(3, 2\)"):
        optim.Adam([cr.ones(3, 2, requires_grad=True), b]).load_state_dict(sd)


def test_zero_grad():
    W = cr.ones(3, dtype=cr.float64, requires_grad=True)
    opt = optim.SGD([W], lr=0.1)
    (W * 2).sum().backward()
    opt.zero_grad()
    assert W.grad is None
    (W * 2).sum().backward()
    g = W.grad
    opt.zero_grad(set_to_none=False)
    assert W.grad is g and not g.requires_grad
    np.testing.assert_array_equal(g.data, 0.0)
    (W * 3).sum().backward()
    assert W.grad is g
    np.testing.assert_array_equal(g.data, 3.0)
    # a gradient built with create_graph is cut from its graph
    (W * W).sum().backward(create_graph=True)
    opt.zero_grad(set_to_none=False)
    assert W.grad.grad_fn is None and not W.grad.requires_grad
    np.testing.assert_array_equal(W.grad.data, 0.0)


def test_step_is_outside_the_graph_and_bumps_versions():
    W = cr.tensor([1.0, -2.0, 3.0], dtype=cr.float64, requires_grad=True)
    opt = optim.Adam([W], lr=0.1)
    (W * W).sum().backward()
    grad_before = W.grad.data.copy()
    version = W._version[0]
    pending = (W * W).sum()  # saved the current W
    opt.step()
    assert W.grad_fn is None and W.requires_grad and W._version[0] == version + 1
    np.testing.assert_array_equal(W.grad.data, grad_before)  # the gradient is not written to
    with pytest.raises(cr.GraphError):
        pending.backward()


def test_params_without_grad_are_skipped():
    W, b = cr.ones(3, requires_grad=True), cr.ones(2, requires_grad=True)
    opt = optim.SGD([W, b], lr=0.1, momentum=0.9)
    W.sum().backward()
    opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    assert b not in opt.state and b._version[0] == 0


def test_float32_params_stay_float32():
    W = cr.ones(3, requires_grad=True)
    for make in (lambda: optim.SGD([W], lr=0.1, momentum=0.9), lambda: optim.Adam([W]),
                 lambda: optim.RMSprop([W], centered=True), lambda: optim.Adagrad([W])):
        opt = make()
        (W * W).sum().backward()
        opt.step()
        assert W.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[W].values()
                   if isinstance(v, np.ndarray))
        W.grad = None


def test_closure():
    W = cr.tensor([3.0], dtype=cr.float64, requires_grad=True)
    opt = optim.SGD([W], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (W * W).sum()
        loss.backward()
        return loss

    with cr.no_grad():  # the closure runs with grad enabled anyway
        loss = opt.step(closure)
    assert float(loss) == 9.0
    np.testing.assert_array_equal(W.data, [1.5])


def test_add_param_group():
    W, b = cr.ones(3, requires_grad=True), cr.ones(2, requires_grad=True)
    opt = optim.SGD([W], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.01})
    assert opt.param_groups[1]["params"] == [b]
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["momentum"] == 0.9
    with pytest.raises(cr.ArgumentError, match="more than once"):
        opt.add_param_group({"params": [W]})


@pytest.mark.parametrize("call,error,match", [
    (lambda W: optim.SGD(W, lr=0.1), TypeError, "iterable"),
    (lambda W: optim.SGD([], lr=0.1), cr.ArgumentError, "empty parameter list"),
    (lambda W: optim.SGD([W * 2], lr=0.1), cr.ArgumentError, "non-leaf"),
    (lambda W: optim.SGD([W, W], lr=0.1), cr.ArgumentError, "more than once"),
    (lambda W: optim.SGD({W}, lr=0.1), TypeError, "set"),
    (lambda W: optim.SGD([W.data], lr=0.1), TypeError, "only optimize Tensors"),
    (lambda W: optim.SGD([W], lr=-1), cr.ArgumentError, "learning rate"),
    (lambda W: optim.SGD([W], lr=0.1, nesterov=True), cr.ArgumentError, "Nesterov"),
    (lambda W: optim.Adam([W], betas=(0.9, 1.0)), cr.ArgumentError, "betas"),
    (lambda W: optim.AdamW([W], eps=-1), cr.ArgumentError, "AdamW: invalid eps"),
    (lambda W: optim.RMSprop([W], momentum=-0.1), cr.ArgumentError, "momentum"),
    (lambda W: optim.Adagrad([W], lr_decay=-0.1), cr.ArgumentError, "lr_decay"),
])
def test_argument_errors(call, error, match):
    W = cr.ones(3, requires_grad=True)
    with pytest.raises(error, match=match):
        call(W)


def test_repr():
    opt = optim.SGD([cr.ones(2, requires_grad=True)], lr=0.1)
    assert repr(opt).splitlines()[:3] == ["SGD (", "Parameter Group 0", "    dampening: 0"]


def test_state_dict_survives_cr_save(tmp_path):
    W = cr.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=cr.float64, requires_grad=True)
    opt = optim.Adam([W], lr=0.1, amsgrad=True)
    (W * W * W).sum().backward()
    opt.step()
    cr.save(opt.state_dict(), tmp_path / "opt.safetensors")
    opt2 = optim.Adam([W], lr=0.5)
    opt2.load_state_dict(cr.load(tmp_path / "opt.safetensors"))
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["amsgrad"] is True
    for k, v in opt.state[W].items():
        np.testing.assert_array_equal(opt2.state[W][k], v)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "mixed"])
def test_sgd_update_of_large_arrays_equals_the_plain_expression(layout):
    """Large parameters are updated in cache-sized pieces; the result must not change."""
    from chainrule.optim.optimizers import axpy
    rng = np.random.default_rng(0)
    shape = (1100, 1000)  # over the piecewise threshold
    p = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    if layout == "F":
        p, g = np.asfortranarray(p), np.asfortranarray(g)
    elif layout == "strided":
        p = np.concatenate([p, p], axis=1)[:, ::2]
    elif layout == "mixed":
        g = np.asfortranarray(g)
    expected = p - np.float32(0.01) * g
    axpy(p, g, -0.01)
    np.testing.assert_array_equal(p, expected)


def test_sgd_step_holds_no_temporary_as_large_as_the_weight():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((300, 784), dtype=np.float32)  # 235,200 elements: a few chunks
    g = rng.standard_normal((300, 784), dtype=np.float32)
    p = cr.nn.Parameter(w0.copy())
    p.grad = cr.tensor(g)
    opt = cr.optim.SGD([p], lr=0.01)
    tracemalloc.start()
    opt.step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < p.data.nbytes / 2
    np.testing.assert_array_equal(p.data, w0 + np.float32(-0.01) * g)  # bit for bit


# ---- backward_and_step: SGD weights updated by BLAS inside backward --------------------------------
needs_blas = pytest.mark.skipif(not blas.AVAILABLE, reason="NumPy's BLAS functions not found")


def _mlp_steps(in_backward, *, dtype=np.float32, row_major=False, fused=True, steps=3, tied=False,
               keep_grads=False, **sgd):
    """Three SGD steps of a 700-256-64-3 MLP (W1 and W2 have over SINK_MIN elements, W3 not);
    returns the parameters' arrays and, for each, whether its .grad was None after the last step."""
    cr.manual_seed(0)
    model = cr.nn.MLP([700, 256, 64, 3])
    params = list(model.parameters())
    for p in params:
        p.data = p.data.astype(dtype, order="C" if row_major else "K")
    opt = optim.SGD(params, lr=0.1, **sgd)
    if keep_grads:  # zero_grad(set_to_none=False) keeps these: each backward adds into them
        for p in params:
            p.grad = cr.tensor(np.zeros_like(p.data))
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = cr.tensor(rng.standard_normal((32, 700)).astype(dtype))
        with cr.nn.fusing(fused):
            out = model(x)
            if tied:  # W1 used a second time: two edges into it
                out = out + (x @ params[0].T).sum() * 1e-3
            loss = cr.cross_entropy(out, rng.integers(0, 3, 32))
        opt.zero_grad(set_to_none=not keep_grads)
        _backward_and_step(opt, loss, in_backward)
    return [p.data for p in params], [p.grad is None for p in params]


def _backward_and_step(opt, loss, in_backward):
    """opt.backward_and_step(loss), or the two calls it stands for."""
    if in_backward:
        opt.backward_and_step(loss)
    else:
        loss.backward()
        opt.step()


def _assert_same_step(expected, got, sunk=True):
    """Bit for bit when no weight went through BLAS's update; else equal to rounding (BLAS adds
    α·(a @ b) as it makes the product, step() rounds the product first). A missed or doubled
    step is off by lr·g, orders of magnitude more."""
    for a, b in zip(expected, got):
        if not sunk:
            np.testing.assert_array_equal(b, a)
        else:  # relative to the array's scale: elements near cancellation differ more
            tol = 1e-12 if a.dtype == np.float64 else 1e-5
            np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max())


@needs_blas
@pytest.mark.parametrize("options, sunk", [
    ({}, True), ({"fused": False}, True), ({"row_major": True}, True),
    ({"maximize": True}, True), ({"dtype": np.float64}, True),
    ({"weight_decay": 0.01}, False),   # β = 1 - lr·λ would round away small decays in float32
    ({"momentum": 0.9}, False),        # a rule with state: through .grad
    ({"tied": True}, None),            # W1 has two edges: its gradient is a sum (W2 is sunk)
    ({"keep_grads": True}, False),     # zeroed, not None: the gradient adds into .grad
])
def test_backward_and_step_gives_backward_then_step(options, sunk):
    expected, grads_none = _mlp_steps(False, **options)
    got, sunk_none = _mlp_steps(True, **options)
    _assert_same_step(expected, got, sunk is not False)
    assert not any(grads_none)
    # W1 and W2 have over SINK_MIN elements: their gradients went to BLAS, never to .grad
    assert sunk_none == [bool(sunk), False, sunk is not False, False, False, False]


def test_backward_and_step_without_blas_is_backward_then_step(monkeypatch):
    monkeypatch.setattr(blas, "_GEMMS", {})  # as with a BLAS whose functions are not found
    expected, _ = _mlp_steps(False)
    got, sunk_none = _mlp_steps(True)
    _assert_same_step(expected, got, sunk=False)
    assert not any(sunk_none)


def _twin(build, run, opt_class=optim.SGD, **sgd):
    """`run(model, step)` on two copies of `build()`; `step(loss)` is backward(); step() for the
    first and backward_and_step for the second. Checks that both end with the same parameters;
    returns, for each of the second's parameters, whether it went through a sink (no .grad)."""
    copies = []
    for in_backward in (False, True):
        cr.manual_seed(0)
        model = build()
        opt = opt_class(list(model.parameters()), lr=0.1, **sgd)

        def step(loss):
            opt.zero_grad()
            _backward_and_step(opt, loss, in_backward)
        run(model, step)
        copies.append([p.data.copy() for p in model.parameters()])
    _assert_same_step(*copies)
    return [p.grad is None for p in model.parameters()]


_X = np.random.default_rng(0).standard_normal((8, 600)).astype(np.float32)


def test_backward_and_step_leaves_weights_others_read_to_step():
    """A weight another node reads (through detach(), or a second Parameter on the same array)
    is updated by step(), after the whole backward, as without backward_and_step."""
    def detached(model, step):
        for _ in range(2):
            h = model(cr.tensor(_X))
            step((h * h).sum() + (h @ model.weight.detach()).sum() * 1e-3)

    def shared(model, step):
        model[2].weight.data = model[0].weight.data  # tied by hand: two leaves, one array
        for _ in range(2):
            step(cr.cross_entropy(model(cr.tensor(_X)), np.arange(8) % 600))

    def tied(model, step):  # one weight in two layers of one fused op: two edges into it
        w, b1, b2 = model[0].weight, model[0].bias, model[2].bias
        for _ in range(2):
            step(cr.cross_entropy(cr.functional.perceptron(cr.tensor(_X), [(w, b1), (w, b2)]),
                                  np.arange(8) % 600))

    def mlp():
        return cr.nn.Sequential(cr.nn.Linear(600, 600), cr.nn.ReLU(), cr.nn.Linear(600, 600))
    assert not any(_twin(lambda: cr.nn.Linear(600, 600), detached))
    assert not any(_twin(mlp, shared))
    assert not _twin(mlp, tied)[0]


class _KeepsAttribute(cr.Function):  # keeps an array as a ctx attribute, not saved
    @staticmethod
    def forward(ctx, x, w):
        ctx.w = w
        return x * w.sum()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.w.sum(), None


class _ClippingSGD(optim.SGD):  # a subclass that changes how a step is made
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    np.clip(p.grad.data, -1e-3, 1e-3, out=p.grad.data)
        return super().step(closure)


def test_backward_and_step_leaves_to_step_weights_a_backward_may_read_elsewhere():
    """Readers that are not saved arrays of another node: the weight's own op keeping its memory
    a second time (as the input), a ctx attribute, a checkpoint's function, a hook; and a
    subclass whose step the sink would bypass. backward(); step()'s numbers, through .grad."""
    x = cr.tensor(_X[:, :64])

    def mlp():
        return cr.nn.Sequential(cr.nn.Linear(64, 64), cr.nn.ReLU(), cr.nn.Linear(64, 64))

    def input_is_w2(m, step):
        with cr.nn.fusing():
            step((m(m[2].weight.detach()) ** 2).sum())

    def attribute(m, step):
        step((m[2](_KeepsAttribute.apply(m[0](x), m[2].weight.detach())) ** 2).sum())

    def checkpointed(m, step):
        h = cr.checkpoint(lambda h, w: h * float(w.sum()), m[0](x), m[2].weight.data)
        step((m[2](h) ** 2).sum())

    def hooked(m, step):
        h = m[0](x)
        h.register_hook(lambda g: g * float(m[2].weight.data.std()) * 10)
        step((m[2](h) ** 2).sum())

    def plain(m, step):
        step(cr.cross_entropy(m(x), np.arange(8)))
    sunk = _twin(mlp, input_is_w2)
    assert sunk[0] and not sunk[2]  # W1 alone in its op; W2 is the op's input too
    for run in (attribute, checkpointed, hooked):
        assert not any(_twin(mlp, run))
    assert not any(_twin(mlp, plain, opt_class=_ClippingSGD))
    assert _twin(mlp, plain)[0] == blas.AVAILABLE  # the same without those: W1 is sunk


def test_backward_and_step_inside_checkpoint_and_after_compile():
    """A checkpointed segment's inner backward (where a weight used twice has two edges) and a
    compiled forward (whose replayed ops have no edges) step as backward(); step() does."""
    def checkpointed(model, step):
        for _ in range(2):
            out = cr.checkpoint(lambda h: model(cr.relu(model(h))), cr.tensor(_X))
            step((out * out).sum() * 1e-3)

    def compiled(model, step):  # 3-D input: the replay calls Linear's own backward
        loss = cr.compile(lambda x: (model(x) ** 2).sum())
        for _ in range(3):
            step(loss(cr.tensor(_X.reshape(2, 4, 600))))

    _twin(lambda: cr.nn.Linear(600, 600), checkpointed, weight_decay=0.1)
    _twin(lambda: cr.nn.Linear(600, 256), compiled)


@needs_blas
def test_backward_and_step_never_holds_the_weight_gradient():
    layer = cr.nn.Linear(1024, 1024)  # a 4 MiB weight gradient
    opt = optim.SGD(layer.parameters(), lr=0.1)
    x = cr.tensor(np.random.default_rng(0).standard_normal((64, 1024), dtype=np.float32))
    peaks = []
    for in_backward in (False, True):
        loss = layer(x).sum()
        opt.zero_grad()
        tracemalloc.start()
        _backward_and_step(opt, loss, in_backward)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    del loss
    assert peaks[0] >= layer.weight.data.nbytes
    assert peaks[1] < 4 * 64 * 1024 + 16 * 1024  # the output's gradient, the bias's


def test_a_compiled_backward_and_step_updates_in_backward_too():
    """Replays of a traced backward_and_step give its weights the same BLAS updates (no .grad:
    the first call, the trace, goes through .grad); a traced backward(); step() keeps .grad."""
    def run(compiled, in_backward=True):
        cr.manual_seed(0)
        model = cr.nn.MLP([700, 256, 3])
        opt = optim.SGD(model.parameters(), lr=0.1)

        def step(x, y):
            loss = cr.cross_entropy(model(x), y)
            opt.zero_grad()
            _backward_and_step(opt, loss, in_backward)
            return loss

        step = cr.compile(step) if compiled else step
        rng = np.random.default_rng(2)
        for _ in range(3):
            step(cr.tensor(rng.standard_normal((16, 700), dtype=np.float32)),
                 rng.integers(0, 3, 16))
        return [p.data for p in model.parameters()], [p.grad is None for p in model.parameters()]
    eager, sunk = run(False)
    compiled, compiled_sunk = run(True)
    _assert_same_step(eager, compiled)
    assert compiled_sunk == [blas.AVAILABLE] + [False] * 3
    assert sunk[0] == blas.AVAILABLE
    plain, plain_sunk = run(True, in_backward=False)
    _assert_same_step(eager, plain)
    assert not any(plain_sunk)


@needs_blas
def test_a_compiled_backward_and_step_never_holds_the_weight_gradient():
    layer = cr.nn.Linear(1024, 1024)  # a 4 MiB weight gradient
    opt = optim.SGD(layer.parameters(), lr=0.1)
    x = cr.tensor(np.random.default_rng(0).standard_normal((64, 1024), dtype=np.float32))

    @cr.compile
    def step(x):
        loss = layer(x).sum()
        opt.zero_grad()
        opt.backward_and_step(loss)
        return loss
    step(x)  # the trace: eager, through .grad
    tracemalloc.start()
    step(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert layer.weight.grad is None
    assert peak < 2 * 4 * 64 * 1024 + 16 * 1024  # the output and its gradient, the bias's


@needs_blas
def test_backward_and_step_follows_changes_to_the_param_groups():
    layer = cr.nn.Linear(600, 600)
    opt = optim.SGD([layer.weight], lr=0.1)
    x = cr.tensor(_X)
    opt.backward_and_step((layer(x) ** 2).sum())  # W over SINK_MIN: updated inside backward
    assert layer.weight.grad is None
    opt.param_groups[0]["params"].remove(layer.weight)
    before = layer.weight.data.copy()
    opt.backward_and_step((layer(x) ** 2).sum())  # no longer optimized: left alone, as by step()
    np.testing.assert_array_equal(layer.weight.data, before)
    assert layer.weight.grad is not None
    opt.add_param_group({"params": [layer.weight]})
    layer.weight.grad = None
    opt.backward_and_step((layer(x) ** 2).sum())
    assert layer.weight.grad is None and not np.array_equal(layer.weight.data, before)
