"""hypothesis properties: broadcasting binary ops and reductions over generated shapes.

References are computed independently of the engine: a broadcast operand's gradient is the sum of
the upstream gradient over every output position that reads each input element, found with
np.broadcast_to on an array of element numbers and np.bincount.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr

SETTINGS = settings(max_examples=50, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def reference_unbroadcast(g, shape):
    """For each element of an input of `shape`: the sum of g over the positions it was copied to."""
    size = int(np.prod(shape, dtype=np.int64))
    owner = np.broadcast_to(np.arange(size).reshape(shape), g.shape)
    return np.bincount(owner.ravel(), weights=g.ravel(), minlength=size).reshape(shape)


# (name, chainrule call, NumPy forward, local derivatives (at the broadcast shape), draw of b)
def _away(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)


BINARY = [
    ("add", lambda a, b: a + b, np.add, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    ("sub", lambda a, b: a - b, np.subtract, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
    ("mul", lambda a, b: a * b, np.multiply, lambda a, b: (b, a)),
    ("div", lambda a, b: a / b, np.divide, lambda a, b: (1 / b, -a / b ** 2)),
    ("maximum", cr.maximum, np.maximum, lambda a, b: ((a > b) * 1.0, (a < b) * 1.0)),
    ("minimum", cr.minimum, np.minimum, lambda a, b: ((a < b) * 1.0, (a > b) * 1.0)),
]


@pytest.mark.parametrize("name,fn,ref,deriv", BINARY, ids=[b[0] for b in BINARY])
@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       seed=seeds)
def test_binary_broadcasting(name, fn, ref, deriv, shapes, seed):
    (sa, sb), out_shape = shapes
    rng = np.random.default_rng(seed)
    a_np = rng.standard_normal(sa)
    b_np = _away(rng, sb) if name == "div" else rng.standard_normal(sb)
    a, b = cr.tensor(a_np, requires_grad=True), cr.tensor(b_np, requires_grad=True)

    y = fn(a, b)
    assert y.shape == out_shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, ref(a_np, b_np), rtol=1e-12, atol=1e-12)

    g = rng.standard_normal(out_shape)
    y.backward(g)
    da, db = deriv(np.broadcast_to(a_np, out_shape), np.broadcast_to(b_np, out_shape))
    for x, d, shape in ((a, da, sa), (b, db, sb)):
        assert x.grad.shape == shape
        np.testing.assert_allclose(x.grad.data, reference_unbroadcast(g * d, shape),
                                   rtol=1e-10, atol=1e-10)


@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=4, max_side=4),
       seed=seeds)
def test_where_broadcasting(shapes, seed):
    (sc, sa, sb), out_shape = shapes
    rng = np.random.default_rng(seed)
    cond = rng.random(sc) < 0.5
    a_np, b_np = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = cr.tensor(a_np, requires_grad=True), cr.tensor(b_np, requires_grad=True)

    y = cr.where(cond, a, b)
    assert y.shape == out_shape
    np.testing.assert_array_equal(y.data, np.where(cond, a_np, b_np))

    g = rng.standard_normal(out_shape)
    y.backward(g)
    c = np.broadcast_to(cond, out_shape)
    assert a.grad.shape == sa and b.grad.shape == sb
    np.testing.assert_allclose(a.grad.data, reference_unbroadcast(g * c, sa), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b.grad.data, reference_unbroadcast(g * ~c, sb), rtol=1e-10, atol=1e-10)


@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=seeds)
def test_broadcasting_matches_torch(shapes, seed):
    """The same graph (mul, add, maximum, div, sum) in PyTorch gives the same gradients."""
    torch = pytest.importorskip("torch")
    (sa, sb), out_shape = shapes
    rng = np.random.default_rng(seed)
    a_np, b_np = rng.standard_normal(sa), _away(rng, sb)
    g = rng.standard_normal(out_shape)

    def graph(lib_max, a, b):
        return lib_max(a * b + a, b) / b - a

    a, b = cr.tensor(a_np, requires_grad=True), cr.tensor(b_np, requires_grad=True)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    y, ty = graph(cr.maximum, a, b), graph(torch.maximum, ta, tb)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad.data, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- reductions ---------------------------------------------------------------------------------
@st.composite
def reduction_case(draw):
    """A shape, the dims to reduce (None, an int or a tuple; sometimes negative) and keepdim."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)) if ndim else []
    axes = [a - ndim if draw(st.booleans()) else a for a in axes]
    if not axes:
        dim = None
    elif len(axes) == 1 and draw(st.booleans()):
        dim = axes[0]
    else:
        dim = tuple(axes)
    return shape, dim, draw(st.booleans())


def _np_logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _local_grad(name, x, axis):
    """d out / d x broadcast back over the reduced axes (keepdims shape)."""
    if name == "sum":
        return np.ones_like(x)
    if name == "mean":
        return np.ones_like(x) * (np.sum(np.ones_like(x), axis=axis, keepdims=True) ** -1)
    if name == "amax":  # continuous random data: the max is unique
        return (x == np.max(x, axis=axis, keepdims=True)) * 1.0
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))  # logsumexp: the softmax
    return e / np.sum(e, axis=axis, keepdims=True)


REDUCTIONS = [("sum", np.sum), ("mean", np.mean), ("amax", np.max), ("logsumexp", _np_logsumexp)]


@pytest.mark.parametrize("name,ref", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@SETTINGS
@given(case=reduction_case(), seed=seeds)
def test_reductions(name, ref, case, seed):
    shape, dim, keepdim = case
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(shape)
    x = cr.tensor(x_np, requires_grad=True)

    y = getattr(x, name)(dim, keepdim)
    want = np.asarray(ref(x_np, axis=dim, keepdims=keepdim))
    assert y.shape == want.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.data, want, rtol=1e-12, atol=1e-12)
    same = getattr(cr, name)(x, axis=dim, keepdims=keepdim)  # NumPy's spelling
    np.testing.assert_array_equal(same.data, y.data)

    g = rng.standard_normal(y.shape)
    y.backward(g)
    assert x.grad.shape == shape
    kept = np.reshape(g, np.sum(x_np, axis=dim, keepdims=True).shape)
    np.testing.assert_allclose(x.grad.data, kept * _local_grad(name, x_np, dim), rtol=1e-10, atol=1e-12)
