"""Graph semantics of the engine: accumulation, diamonds, freeing, grad mode, in-place, hooks,
the functional API, custom Functions, anomaly detection and gradcheck itself."""
import gc
import inspect
import weakref

import numpy as np
import pytest

import chainrule as cr


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """A failing grad-mode test must not leave recording off for the tests after it."""
    yield
    cr.set_grad_enabled(True)


def t64(values, requires_grad=True):
    return cr.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def this_line():
    """The line number of the caller (for checking that errors name the user's line)."""
    return inspect.currentframe().f_back.f_lineno


# ---- accumulation and retained gradients ----------------------------------------------------
def test_grad_accumulates_across_backward_calls():
    x = t64([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0, 6.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, -1.0, 9.0])
    (x.exp()).sum().backward(gradient=None)
    np.testing.assert_allclose(x.grad.numpy(), [5.0, -1.0, 9.0] + np.exp([1.0, -2.0, 3.0]))


def test_non_leaf_grad_is_none_unless_retained():
    x = t64([1.0, 2.0])
    y = x * x
    z = y * 3.0
    w = y.exp()
    w.retain_grad()
    (z.sum() + w.sum()).backward()
    assert y.grad is None and z.grad is None
    assert not y.is_leaf and x.is_leaf
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, 2.0]) * (3 + np.exp([1.0, 4.0])))


def test_retain_grad_value_sums_all_paths():
    x = t64([0.5, -1.5])
    y = x * 2.0
    y.retain_grad()
    loss = (y * y).sum() + (y * t64([3.0, 4.0], requires_grad=False)).sum()
    loss.backward()
    np.testing.assert_allclose(y.grad.numpy(), 2 * np.array([1.0, -3.0]) + [3.0, 4.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * y.grad.numpy())


# ---- diamonds ---------------------------------------------------------------------------------
def test_diamond_reuse_sums_over_paths():
    x = t64([0.3, -0.7, 1.1])
    h = x.tanh()
    loss = (h.exp() * h.sin()).sum() + (h * 2.0).sum()
    loss.backward()
    hv = np.tanh(x.numpy())
    dh = np.exp(hv) * np.sin(hv) + np.exp(hv) * np.cos(hv) + 2.0
    np.testing.assert_allclose(x.grad.numpy(), dh * (1 - hv ** 2), rtol=1e-12)


def test_x_times_x_and_x_plus_x():
    x = t64([1.5, -2.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, -4.0])
    x.grad = None
    (x + x).backward(gradient=np.array([2.0, 5.0]))
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 10.0])


def test_leaves_sharing_one_gradient_array_do_not_alias():
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    (a + b).sum().backward()
    with cr.no_grad():
        a.grad.mul_(2)
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])
    # and a second backward accumulates into each independently
    (a + b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 3.0])
    np.testing.assert_allclose(b.grad.numpy(), [2.0, 2.0])

    # the same with an owned (not broadcast) gradient array reaching Add
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    ((a + b) * cr.tensor(np.array([5.0, 6.0]))).sum().backward()
    with cr.no_grad():
        a.grad.mul_(2)
    np.testing.assert_allclose(a.grad.numpy(), [10.0, 12.0])
    np.testing.assert_allclose(b.grad.numpy(), [5.0, 6.0])


def test_gradient_argument_is_not_aliased_into_grad():
    x = t64([1.0, 2.0])
    g = np.array([0.5, -1.0])
    (x + 0.0).backward(gradient=g)
    with cr.no_grad():
        x.grad.mul_(10)
    np.testing.assert_allclose(g, [0.5, -1.0])


# ---- backward arguments -------------------------------------------------------------------------
def test_non_scalar_backward_needs_gradient():
    x = t64([[1.0, 2.0], [3.0, 4.0]])
    y = x * x
    with pytest.raises(cr.GraphError, match="scalar"):
        y.backward()
    y.backward(gradient=cr.tensor(np.array([[1.0, 0.0], [2.0, -1.0]])))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 0.0], [12.0, -8.0]])


def test_gradient_shape_mismatch_raises_shape_error():
    x = t64([1.0, 2.0, 3.0])
    y = x.exp()
    with pytest.raises(cr.ShapeError, match=r"\(2,\).*\(3,\)"):
        y.backward(gradient=np.ones(2))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(cr.GraphError, match="does not require grad"):
        t64([1.0], requires_grad=False).sum().backward()


# ---- freed graphs -------------------------------------------------------------------------------
def test_second_backward_through_freed_graph_raises():
    x = t64([1.0, 2.0])
    loss = x.exp().sum()
    loss.backward()
    with pytest.raises(cr.GraphError, match="retain_graph"):
        loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, 2.0]))  # unchanged by the failure


def test_retain_graph_allows_second_backward():
    x = t64([1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * (e * [1.0, 2.0] + e))
    with pytest.raises(cr.GraphError, match="retain_graph"):
        loss.backward()


def test_graph_without_saved_arrays_backwards_twice():
    x = t64([1.0, 2.0])
    y = t64([5.0, 6.0])
    loss = (x + y + 1.0).sum()
    loss.backward()
    loss.backward()  # PyTorch allows this too: nothing was freed
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(y.grad.numpy(), [2.0, 2.0])


# ---- grad mode ----------------------------------------------------------------------------------
def test_no_grad_context_records_nothing():
    x = t64([1.0, 2.0])
    w = t64([[1.0], [2.0]])
    with cr.no_grad():
        assert not cr.is_grad_enabled()
        y = ((x @ w).exp() * x).sum()
        assert not y.requires_grad and y.grad_fn is None and y.is_leaf
        assert cr.saved_bytes(y) == 0
        with cr.enable_grad():
            assert cr.is_grad_enabled()
            z = (x * x).sum()
        assert z.requires_grad and z.grad_fn is not None
    assert cr.is_grad_enabled()
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_no_grad_decorator_and_restores_on_exception():
    x = t64([1.0])

    @cr.no_grad()
    def f(t):
        assert not cr.is_grad_enabled()
        return t.exp()

    y = f(x)
    assert not y.requires_grad and y.grad_fn is None
    assert cr.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with cr.no_grad():
            1 / 0
    assert cr.is_grad_enabled()


def test_set_grad_enabled():
    x = t64([1.0])
    with cr.set_grad_enabled(False):
        assert not cr.is_grad_enabled()
        assert (x * 2).grad_fn is None
    assert cr.is_grad_enabled()
    cr.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        cr.set_grad_enabled(True)
    assert (x * 2).requires_grad


# ---- saved memory -------------------------------------------------------------------------------
def test_saved_bytes_counts_what_ops_saved():
    x, w = t64(np.arange(12.0).reshape(3, 4) / 7), t64(np.linspace(-1, 1, 20).reshape(4, 5))
    h = (x @ w).relu()
    y = h.sum()
    # matmul saves x and w; relu saves its output; sum saves nothing
    assert cr.saved_bytes(y) == x.data.nbytes + w.data.nbytes + h.data.nbytes == (12 + 20 + 15) * 8


def test_saved_bytes_small_mlp_counts_shared_arrays_once():
    rng = np.random.default_rng(0)
    x = cr.tensor(rng.standard_normal((6, 4)).astype(np.float32))
    w1 = cr.tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    b1 = cr.tensor(np.zeros(5, np.float32), requires_grad=True)
    w2 = cr.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
    h = (x @ w1 + b1).tanh()
    loss = (h @ w2).sum()
    # matmul 1: x only (w1 would serve only x's gradient, which nobody needs); add: nothing;
    # tanh: its output h; matmul 2: h (the same array) and w2
    expected = (6 * 4 + 6 * 5 + 5 * 3) * 4
    assert cr.saved_bytes(loss) == expected
    loss.backward()
    assert cr.saved_bytes(loss) == 0  # released after backward


# ---- deep graphs --------------------------------------------------------------------------------
def test_100k_op_chain_mul():
    x = t64(1.0)
    z = x
    for _ in range(100_000):
        z = z * 1.0001
    z.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** 100_000, rtol=1e-9)


def test_100k_op_chain_add_and_functional_grad():
    x = t64([2.0, 3.0])
    z = x
    for _ in range(100_000):
        z = z + 1.0
    np.testing.assert_allclose(z.numpy(), [100_002.0, 100_003.0])
    g, = cr.grad(z.sum(), x)
    np.testing.assert_allclose(g.numpy(), [1.0, 1.0])


# ---- freeing: no reference cycles --------------------------------------------------------------
def test_graph_freed_without_cycles():
    gc.collect()
    gc.disable()
    try:
        x = t64(np.linspace(-1, 1, 6).reshape(2, 3))
        w = t64(np.linspace(0.5, 2, 12).reshape(3, 4))
        e = (x @ w).exp()        # Exp saves its output; Mul below saves it again
        h = e * 2.0
        loss = (h.tanh() * e).sum()
        nodes = [weakref.ref(t.grad_fn) for t in (e, h, loss)]
        saved = weakref.ref(e.data)
        tensors = [weakref.ref(e), weakref.ref(h)]
        del e, h
        assert all(r() is not None for r in nodes)
        loss.backward()
        # the saved arrays are released as each node finishes, while `loss` is still alive
        assert saved() is None
        assert all(r() is None for r in tensors)
        del loss
        assert all(r() is None for r in nodes)  # plain refcounting: no cycles to wait for
        assert x.grad is not None and w.grad is not None
    finally:
        gc.enable()


def test_graph_freed_without_cycles_after_create_graph():
    gc.collect()
    gc.disable()
    try:
        x = t64([0.3, -0.4, 0.9])
        y = (x.tanh() * x.exp()).sum()
        g, = cr.grad(y, x, create_graph=True)
        gg = (g * g).sum()
        node_refs = [weakref.ref(y.grad_fn), weakref.ref(g.grad_fn), weakref.ref(gg.grad_fn)]
        gg.backward()
        del y, g, gg
        assert all(r() is None for r in node_refs)
    finally:
        gc.enable()


def test_graph_freed_without_cycles_when_retain_grad_and_hooks():
    gc.collect()
    gc.disable()
    try:
        x = t64([1.0, 2.0])
        y = x.sigmoid()
        y.retain_grad()
        y.register_hook(lambda g: g * 2.0)
        node = weakref.ref(y.grad_fn)
        y_ref = weakref.ref(y)
        y.sum().backward()
        del y
        assert y_ref() is None and node() is None
    finally:
        gc.enable()


# ---- in-place --------------------------------------------------------------------------------
def test_inplace_change_of_saved_output_raises():
    x = t64([1.0, 2.0])
    y = x.exp()
    with cr.no_grad():
        y.add_(1)
    with pytest.raises(cr.GraphError, match="in-place"):
        y.sum().backward()


def test_inplace_change_of_saved_input_raises():
    x = t64([1.0, 2.0])
    a = cr.tensor(np.array([3.0, 4.0]))  # does not require grad, but Mul saved it for x's grad
    y = (x * a).sum()
    a.mul_(2)
    with pytest.raises(cr.GraphError, match="in-place"):
        y.backward()


def test_inplace_change_through_a_view_raises():
    x = t64([1.0, 2.0, 3.0])
    y = x.exp()
    with cr.no_grad():
        y[0:1].add_(1)
    with pytest.raises(cr.GraphError, match="in-place"):
        y.sum().backward()

    x = t64([[1.0, 2.0], [3.0, 4.0]])
    y = x.tanh()
    with cr.no_grad():
        y.reshape(4)[3] = 0.0
    with pytest.raises(cr.GraphError, match="in-place"):
        y.sum().backward()


def test_inplace_change_through_detach_raises():
    x = t64([1.0, 2.0])
    y = x.sigmoid()
    y.detach().zero_()
    with pytest.raises(cr.GraphError, match="in-place"):
        y.sum().backward()


def test_inplace_on_unsaved_array_is_fine():
    x = t64([1.0, 2.0])
    y = x * 2.0          # Mul by a constant saves nothing of y
    z = (y + 1.0).sum()  # Add saves nothing either
    with cr.no_grad():
        y.add_(100.0)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_inplace_on_leaf_requiring_grad():
    p = t64([1.0, 2.0])
    with pytest.raises(cr.GraphError, match="leaf"):
        p.add_(1.0)
    with pytest.raises(cr.GraphError, match="leaf"):
        p -= 1.0
    with pytest.raises(cr.GraphError, match="leaf"):
        p[0] = 5.0
    np.testing.assert_allclose(p.numpy(), [1.0, 2.0])
    with cr.no_grad():
        p.add_(1.0)
        p[1] = 7.0
    np.testing.assert_allclose(p.numpy(), [2.0, 7.0])
    assert p.is_leaf and p.requires_grad


def test_sgd_step_in_place_under_no_grad():
    p = t64([1.0, -2.0])
    data = p.data
    (p * p).sum().backward()
    lr = 0.1
    with cr.no_grad():
        p -= lr * p.grad
    assert p.data is data  # the same array, updated in place
    np.testing.assert_allclose(p.numpy(), [0.8, -1.6])
    assert p.is_leaf and p.requires_grad and p.grad_fn is None


def test_inplace_on_non_leaf_outside_no_grad_is_recorded():
    x = t64([1.0, 2.0])
    y = x * 3.0
    y.mul_(y)  # recorded as y = y * y
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 9 * np.array([1.0, 2.0]))


# ---- hooks -----------------------------------------------------------------------------------
def test_hooks_see_and_replace_gradients():
    x = t64([1.0, 2.0])
    seen = {}

    def leaf_hook(g):
        seen["x"] = g.numpy().copy()
        return g * 10.0

    def y_hook(g):
        seen["y"] = g.numpy().copy()
        return g + 1.0

    x.register_hook(leaf_hook)
    y = x * x
    y.register_hook(y_hook)
    (y * cr.tensor(np.array([2.0, 3.0]))).sum().backward()
    np.testing.assert_allclose(seen["y"], [2.0, 3.0])
    np.testing.assert_allclose(seen["x"], 2 * np.array([1.0, 2.0]) * [3.0, 4.0])
    np.testing.assert_allclose(x.grad.numpy(), 10 * 2 * np.array([1.0, 2.0]) * [3.0, 4.0])


def test_hook_returning_none_keeps_gradient_and_retain_grad_sees_hooked_value():
    x = t64([1.0, 2.0])
    y = x * 3.0
    y.retain_grad()
    y.register_hook(lambda g: g * 2.0)
    y.register_hook(lambda g: None)
    y.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [2.0, 2.0])  # as PyTorch: after the hooks
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_hook_handle_remove():
    x = t64([1.0, 2.0])
    calls = []
    handle = x.register_hook(lambda g: calls.append(1) or g * 0.0)
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0])
    handle.remove()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    assert calls == [1]

    y = x * 1.0
    h = y.register_hook(lambda g: g * 5.0)
    h.remove()
    x.grad = None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


# ---- tensors: creation, detach, dtypes, attributes -------------------------------------------------
def test_detach_shares_data_and_cuts_graph():
    x = t64([1.0, 2.0])
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d.data, y.data)
    d.data[0] = 42.0
    assert y.data[0] == 42.0


def test_requires_grad_on_int_tensor_raises():
    t = cr.tensor([1, 2])
    with pytest.raises(cr.ArgumentError):
        t.requires_grad_()
    with pytest.raises(cr.ArgumentError):
        cr.tensor([1, 2], requires_grad=True)


def test_creation_dtypes_and_default_dtype():
    assert cr.tensor([1.0]).dtype == np.float32
    assert cr.tensor(np.array([1.0])).dtype == np.float64
    assert cr.tensor([1, 2]).dtype == np.int64
    assert cr.tensor(True).dtype == np.bool_
    prev = cr.get_default_dtype()
    cr.set_default_dtype(cr.float64)
    try:
        assert cr.tensor([1.0]).dtype == np.float64
        assert cr.zeros(2).dtype == np.float64
        assert cr.tensor([1, 2]).dtype == np.int64
    finally:
        cr.set_default_dtype(prev)
    assert cr.tensor([1.0]).dtype == np.float32
    assert cr.ones(2).dtype == np.float32


def test_tensor_attributes_and_repr():
    x = cr.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert repr(x) == "tensor([[1., 2., 3.],\n        [4., 5., 6.]], requires_grad=True)"
    assert repr(cr.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(cr.tensor(np.array([0.5]))) == "tensor([0.5], dtype=float64)"
    y = x * 2
    assert "grad_fn=<MulBackward>" in repr(y)
    assert y.sum().item() == 42.0 and isinstance(y.sum().item(), float)
    with pytest.raises(cr.ArgumentError, match="one element"):
        y.item()
    assert isinstance(x.numpy(), np.ndarray) and x.numpy() is x.data
    assert x.size() == (2, 3) and x.size(1) == 3 and x.numel() == 6
    assert x.T.shape == (3, 2)
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    assert x.is_leaf and not y.is_leaf
    assert cr.tensor([1.0]).is_leaf  # a tensor not requiring grad is a leaf


# ---- functional grad ----------------------------------------------------------------------------
def test_grad_returns_tuple_and_leaves_grad_alone():
    x, w = t64([1.0, 2.0]), t64([3.0, -1.0])
    loss = (x * w).sum() + (x * x).sum()
    gx, gw = cr.grad(loss, [x, w])
    np.testing.assert_allclose(gx.numpy(), [5.0, 3.0])
    np.testing.assert_allclose(gw.numpy(), [1.0, 2.0])
    assert x.grad is None and w.grad is None
    r = cr.grad((x * x).sum(), x)
    assert isinstance(r, tuple) and len(r) == 1


def test_grad_allow_unused():
    x, unused = t64([1.0]), t64([2.0])
    with pytest.raises(cr.GraphError, match="allow_unused"):
        cr.grad((x * 2.0).sum(), [x, unused])
    gx, gu = cr.grad((x * 2.0).sum(), [x, unused], allow_unused=True)
    np.testing.assert_allclose(gx.numpy(), [2.0])
    assert gu is None


def test_grad_with_respect_to_intermediate():
    x = t64([0.5, 1.0])
    h = x.exp()
    loss = (h * h).sum() + x.sum()
    gh, gx = cr.grad(loss, [h, x], retain_graph=True)
    np.testing.assert_allclose(gh.numpy(), 2 * np.exp([0.5, 1.0]))
    np.testing.assert_allclose(gx.numpy(), 2 * np.exp([1.0, 2.0]) + 1.0)
    # grad_outputs with a non-scalar output
    g, = cr.grad(h, x, grad_outputs=cr.tensor(np.array([2.0, -1.0])))
    np.testing.assert_allclose(g.numpy(), np.exp([0.5, 1.0]) * [2.0, -1.0])


# ---- custom Functions ----------------------------------------------------------------------------
class Cube(cr.Function):
    """scale * x ** 3, with its own forward and backward on arrays."""
    seen_needs = []

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x, scale)
        Cube.seen_needs.append(ctx.needs_input_grad)
        return scale * x ** 3

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        gx = grad * scale * 3 * x * x if ctx.needs_input_grad[0] else None
        gs = grad * x ** 3 if ctx.needs_input_grad[1] else None
        return gx, gs


class WrongCube(cr.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * 3 * x  # should be 3 x**2


def test_custom_function():
    x = t64([1.0, -2.0, 0.5])
    s = t64([2.0], requires_grad=False)
    Cube.seen_needs.clear()
    y = Cube.apply(x, s)
    assert Cube.seen_needs == [(True, False)]
    assert type(y.grad_fn) is Cube
    np.testing.assert_allclose(y.numpy(), 2 * x.numpy() ** 3)
    y.backward(gradient=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy() ** 2 * [1.0, 2.0, 3.0])
    assert s.grad is None

    s.requires_grad_()
    y = Cube.apply(x, s)
    assert Cube.seen_needs[-1] == (True, True)
    y.sum().backward()
    np.testing.assert_allclose(s.grad.numpy(), [np.sum(x.numpy() ** 3)])


def test_custom_function_passes_gradcheck():
    x, s = t64([0.3, -1.2, 0.8]), t64([[1.5], [-0.5]])
    assert cr.gradcheck(lambda a, b: Cube.apply(a, b), (x, s))


def test_gradcheck_detects_wrong_gradient():
    x = t64([0.3, -1.2, 0.8])
    with pytest.raises(cr.GradcheckError, match="input 0"):
        cr.gradcheck(WrongCube.apply, (x,))
    assert cr.gradcheck(WrongCube.apply, (x,), raise_exception=False) is False


def test_gradcheck_refuses_float32():
    with pytest.raises(cr.ArgumentError, match="float64"):
        cr.gradcheck(lambda a: a * a, (cr.tensor([1.0], requires_grad=True),))


# ---- anomaly detection -----------------------------------------------------------------------------
def test_detect_anomaly_forward_names_op_and_line():
    x = t64([-1.0, 2.0])
    with cr.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(cr.AnomalyError) as info:
            line = this_line(); cr.log(x)  # noqa: E702
    msg = str(info.value)
    assert "Log" in msg and "NaN" in msg
    assert f"test_autograd.py:{line}" in msg
    with np.errstate(invalid="ignore"):
        y = cr.log(x)  # off again: no error
    assert np.isnan(y.numpy()[0])


def test_detect_anomaly_backward_names_backward_op():
    x = t64([0.0, 4.0])
    with cr.detect_anomaly(), np.errstate(divide="ignore"):
        line = this_line(); y = cr.sqrt(x)  # noqa: E702
        loss = (y * 3.0).sum()
        with pytest.raises(cr.AnomalyError) as info:
            loss.backward()
    msg = str(info.value)
    assert "Sqrt backward" in msg and "Inf" in msg
    assert f"test_autograd.py:{line}" in msg
