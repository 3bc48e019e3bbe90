"""cr.jacobian / jvp / vjp / hvp against torch.autograd.functional (float64) and central finite
differences, and compare_gradient_methods (three ways, one gradient, their costs)."""
import numpy as np
import pytest

import chainrule as cr
from chainrule.errors import ArgumentError, GraphError, ShapeError

RNG = np.random.default_rng(7)
A = RNG.normal(size=(3, 4))
B = RNG.normal(size=(2, 3))


def t(a, requires_grad=False):
    return cr.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# Each case: chainrule function, the same function written for torch (given the module), inputs.
def f_vec(x):  # R^4 -> R^3
    return (t(A) @ x).tanh() * x[:3].exp()


def g_vec(torch, x):
    return (torch.tensor(A) @ x).tanh() * x[:3].exp()


def f_pair(x, w):  # (R^4, R^{2x3}) -> (R^{2x3}, R)
    h = (t(A) @ x).sigmoid()
    return w * h + w.sin(), (h.log() * h).sum() + (w ** 2).sum()


def g_pair(torch, x, w):
    h = (torch.tensor(A) @ x).sigmoid()
    return w * h + w.sin(), (h.log() * h).sum() + (w ** 2).sum()


def f_scalar(x, w):  # a loss: (R^4, R^{2x3}) -> R
    z = w @ (t(A) @ x).relu()
    return (z.exp() + z * z).sum() + (x.cos() * x).sum()


def g_scalar(torch, x, w):
    z = w @ (torch.tensor(A) @ x).relu()
    return (z.exp() + z * z).sum() + (x.cos() * x).sum()


X = RNG.normal(size=4)
W = RNG.normal(size=(2, 3))
CASES = [("vec", f_vec, g_vec, (X,)), ("pair", f_pair, g_pair, (X, W)),
         ("scalar", f_scalar, g_scalar, (X, W))]


def numeric_jacobian(fn, arrays, h=1e-6):
    """Central differences: blocks[i][j] of shape out_i.shape + in_j.shape."""
    def call(arrs):
        with cr.no_grad():
            out = fn(*[t(a) for a in arrs])
        return [o.data for o in (out if isinstance(out, tuple) else (out,))]
    outs = call(arrays)
    blocks = [[np.zeros(o.shape + a.shape) for a in arrays] for o in outs]
    for j, a in enumerate(arrays):
        for k in range(a.size):
            plus = [b.copy() for b in arrays]
            minus = [b.copy() for b in arrays]
            plus[j].flat[k] += h
            minus[j].flat[k] -= h
            for i, (p, m) in enumerate(zip(call(plus), call(minus))):
                blocks[i][j].reshape(outs[i].shape + (-1,))[..., k] = (p - m) / (2 * h)
    return blocks


def as_blocks(J, out_tuple, in_tuple):
    rows = J if out_tuple else (J,)
    return [list(r) if in_tuple else [r] for r in rows]


def vectors(like):
    return tuple(RNG.normal(size=np.shape(a)) for a in like)


@pytest.mark.parametrize("name,fn,_,arrays", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_matches_finite_differences(name, fn, _, arrays, strategy):
    inputs = tuple(t(a) for a in arrays)
    single = len(inputs) == 1
    J = cr.jacobian(fn, inputs[0] if single else inputs, strategy=strategy)
    want = numeric_jacobian(fn, arrays)
    out_tuple = name == "pair"
    got = as_blocks(J, out_tuple, not single)
    assert len(got) == len(want) and all(len(r) == len(arrays) for r in got)
    for gr, wr in zip(got, want):
        for g, w in zip(gr, wr):
            assert isinstance(g, cr.Tensor) and g.shape == w.shape and not g.requires_grad
            np.testing.assert_allclose(g.data, w, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,fn,_,arrays", CASES, ids=[c[0] for c in CASES])
def test_vjp_and_jvp_are_products_with_the_jacobian(name, fn, _, arrays):
    inputs = tuple(t(a) for a in arrays)
    J = numeric_jacobian(fn, arrays)
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    v = vectors([o.data for o in outs])
    arg = inputs if len(inputs) > 1 else inputs[0]
    vv = tuple(t(a) for a in v) if name == "pair" else t(v[0])
    out, vjp = cr.vjp(fn, arg, vv)
    vjp = vjp if isinstance(vjp, tuple) else (vjp,)
    for j, a in enumerate(arrays):
        want = sum(np.tensordot(v[i], J[i][j], axes=v[i].ndim) for i in range(len(outs)))
        np.testing.assert_allclose(vjp[j].data, want, rtol=1e-6, atol=1e-8)
    u = vectors(arrays)
    out, jvp = cr.jvp(fn, arg, tuple(t(a) for a in u) if len(inputs) > 1 else t(u[0]))
    jvp = jvp if isinstance(jvp, tuple) else (jvp,)
    assert isinstance(out, tuple) == (name == "pair")
    for i, o in enumerate(outs):
        want = sum(np.tensordot(J[i][j], u[j], axes=u[j].ndim) for j in range(len(arrays)))
        np.testing.assert_allclose(jvp[i].data, want, rtol=1e-6, atol=1e-8)
        assert not jvp[i].requires_grad


def test_hvp_matches_finite_differences_of_the_gradient():
    x, w = t(X), t(W)
    v = (t(RNG.normal(size=4)), t(RNG.normal(size=(2, 3))))
    value, hv = cr.hvp(f_scalar, (x, w), v)
    np.testing.assert_allclose(value.data, f_scalar(x, w).data)

    def gradient(a, b):
        return cr.grad(f_scalar(a.requires_grad_(), b.requires_grad_()), (a, b))
    h = 1e-6
    plus = gradient(t(X + h * v[0].data), t(W + h * v[1].data))
    minus = gradient(t(X - h * v[0].data), t(W - h * v[1].data))
    for got, p, m in zip(hv, plus, minus):
        np.testing.assert_allclose(got.data, (p.data - m.data) / (2 * h), rtol=1e-5, atol=1e-7)
    # a linear function has zero Hessian
    _, hv = cr.hvp(lambda a: (a * 3.0).sum(), x, t(np.ones(4)))
    np.testing.assert_array_equal(hv.data, 0.0)


@pytest.mark.parametrize("name,fn,gfn,arrays", CASES, ids=[c[0] for c in CASES])
def test_against_torch_autograd_functional(name, fn, gfn, arrays):
    torch = pytest.importorskip("torch")
    TF = torch.autograd.functional
    single = len(arrays) == 1
    ours = tuple(t(a) for a in arrays)
    theirs = tuple(torch.tensor(a) for a in arrays)
    arg_c, arg_t = (ours[0], theirs[0]) if single else (ours, theirs)

    def tfn(*a):
        return gfn(torch, *a)

    def same(a, b):
        if isinstance(b, (tuple, list)):  # torch's forward-mode jacobian gives lists
            assert isinstance(a, tuple) and len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert isinstance(a, cr.Tensor) and a.shape == tuple(b.shape)
            np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-6, atol=1e-12)

    for strategy in ("reverse-mode", "forward-mode"):
        same(cr.jacobian(fn, arg_c, strategy=strategy),
             TF.jacobian(tfn, arg_t, strategy=strategy, vectorize=strategy == "forward-mode"))
    outs = tfn(*theirs)
    v = tuple(torch.tensor(a) for a in vectors([o.detach().numpy() for o in
                                                 (outs if isinstance(outs, tuple) else (outs,))]))
    v_c = tuple(t(a.numpy()) for a in v)
    if not isinstance(outs, tuple):
        v, v_c = v[0], v_c[0]
    same(cr.vjp(fn, arg_c, v_c), TF.vjp(tfn, arg_t, v))
    u = tuple(torch.tensor(a) for a in vectors(arrays))
    u_c = tuple(t(a.numpy()) for a in u)
    if single:
        u, u_c = u[0], u_c[0]
    same(cr.jvp(fn, arg_c, u_c), TF.jvp(tfn, arg_t, u))
    if name == "scalar":
        same(cr.hvp(fn, arg_c, u_c), TF.hvp(tfn, arg_t, u))
        same(cr.vjp(fn, arg_c), TF.vjp(tfn, arg_t))  # v may be omitted for a scalar


def test_create_graph_gives_differentiable_results():
    torch = pytest.importorskip("torch")
    x = t(X, requires_grad=True)
    v = t(RNG.normal(size=3))
    _, g = cr.vjp(f_vec, x, v, create_graph=True)
    assert g.requires_grad
    second, = cr.grad((g * g).sum(), x)
    tx = torch.tensor(X, requires_grad=True)
    _, tg = torch.autograd.functional.vjp(lambda a: g_vec(torch, a), tx, torch.tensor(v.data),
                                          create_graph=True)
    tsecond, = torch.autograd.grad((tg * tg).sum(), tx)
    np.testing.assert_allclose(second.data, tsecond.numpy(), rtol=1e-10)
    J = cr.jacobian(f_vec, x, create_graph=True)
    assert J.requires_grad
    np.testing.assert_allclose(J.data, torch.autograd.functional.jacobian(
        lambda a: g_vec(torch, a), torch.tensor(X)).numpy(), rtol=1e-10)


def test_argument_errors():
    x = t(X)
    with pytest.raises(ArgumentError, match="v can be omitted only"):
        cr.vjp(f_vec, x)
    with pytest.raises(ShapeError, match="vjp"):
        cr.vjp(f_vec, x, t(np.ones(4)))
    with pytest.raises(ArgumentError, match="strategy"):
        cr.jacobian(f_vec, x, strategy="sideways")
    with pytest.raises(ArgumentError, match="single element"):
        cr.hvp(f_vec, x, t(np.ones(4)))
    with pytest.raises(ArgumentError, match="Tensor or a tuple"):
        cr.jacobian(f_vec, X)
    const = lambda a: t(np.ones(2))  # noqa: E731
    np.testing.assert_array_equal(cr.jacobian(const, x).data, np.zeros((2, 4)))
    with pytest.raises(GraphError, match="strict"):
        cr.jacobian(const, x, strict=True)
    # the caller's tensors are left alone
    y = t(X, requires_grad=True)
    cr.jacobian(f_vec, y)
    cr.hvp(lambda a: (a * a).sum(), y, t(np.ones(4)))
    assert y.grad is None and y.is_leaf


# ---- one gradient, three ways -----------------------------------------------------------------
def test_compare_gradient_methods_agree_and_count_their_cost():
    n = 6
    M = RNG.normal(size=(5, n))

    def loss(p):
        return ((t(M) @ p).tanh() ** 2).sum() + (p * p).sum() * 0.1

    p = t(RNG.normal(size=n))
    result = cr.compare_gradient_methods(loss, p)
    assert list(result) == ["reverse-mode", "finite-differences", "forward-mode"]
    leaf = p.detach().requires_grad_()
    exact = cr.grad(loss(leaf), leaf)[0].data
    rev, fd, fwd = result.values()
    np.testing.assert_allclose(rev.grad, exact, rtol=1e-12)
    np.testing.assert_allclose(fd.grad, exact, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fwd.grad, exact, rtol=1e-10)
    assert (rev.evaluations, rev.backward_sweeps) == (1, 1)
    assert (fd.evaluations, fd.backward_sweeps) == (2 * n, 0)
    assert fwd.evaluations == n
    calls = []
    with cr.autograd.trace_ops(lambda *a: calls.append(a[0].__name__)):
        with cr.no_grad():
            loss(p)
    assert rev.ops == len(calls)            # one forward pass; the backward runs on arrays
    assert fd.ops == 2 * n * len(calls)     # 2n forward passes
    assert fwd.ops > n * len(calls)         # n forward passes plus their recorded backward
    assert all(r.seconds >= 0 for r in result.values())
    diff = result.max_difference()
    assert diff["reverse-mode"] == 0 and diff["finite-differences"] < 1e-6
    table = str(result)
    assert "reverse-mode" in table and "finite-differences" in table and f"n = {n}" in table
    only = cr.compare_gradient_methods(loss, p, methods=("reverse-mode",))
    assert list(only) == ["reverse-mode"]
    with pytest.raises(ArgumentError):
        cr.compare_gradient_methods(loss, p, methods=("magic",))
