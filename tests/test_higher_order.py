"""Higher-order derivatives: create_graph=True, grad of grad, Hessian-vector products,
gradient penalties, and gradgradcheck on a table of ops (float64)."""
import numpy as np
import pytest

import chainrule as cr

RTOL = 1e-6

X = np.array([-2.5, -1.0, -0.3, 0.0, 0.4, 1.2, 3.0])


def _tanh_derivs(x):
    t = np.tanh(x)
    return 1 - t ** 2, -2 * t * (1 - t ** 2), -2 * (1 - t ** 2) * (1 - 3 * t ** 2)


def _sigmoid_derivs(x):
    s = 1 / (1 + np.exp(-x))
    d1 = s * (1 - s)
    return d1, d1 * (1 - 2 * s), d1 * (1 - 6 * s + 6 * s ** 2)


def _exp_derivs(x):
    e = np.exp(x)
    return e, e, e


ELEMENTWISE = [
    ("tanh", cr.tanh, _tanh_derivs),
    ("sigmoid", cr.sigmoid, _sigmoid_derivs),
    ("exp", cr.exp, _exp_derivs),
]


def _derivatives(fn, x, order=3):
    """[f'(x), f''(x), f'''(x)] element-wise, by differentiating the sum of each one again."""
    out, y = [], fn(x)
    for k in range(order):
        g, = cr.grad(y.sum(), x, create_graph=k < order - 1)
        out.append(g)
        y = g
    return out


@pytest.mark.parametrize("name,fn,closed", ELEMENTWISE, ids=[r[0] for r in ELEMENTWISE])
def test_elementwise_derivatives_closed_form(name, fn, closed):
    x = cr.tensor(X.copy(), requires_grad=True)
    got = _derivatives(fn, x)
    for k, (g, want) in enumerate(zip(got, closed(X)), start=1):
        np.testing.assert_allclose(g.numpy(), want, rtol=RTOL, atol=1e-12,
                                   err_msg=f"{name}: derivative of order {k}")
    assert x.grad is None


@pytest.mark.parametrize("name,fn,closed", ELEMENTWISE, ids=[r[0] for r in ELEMENTWISE])
def test_elementwise_derivatives_match_torch(name, fn, closed):
    torch = pytest.importorskip("torch")
    x = cr.tensor(X.copy(), requires_grad=True)
    got = _derivatives(fn, x)
    xt = torch.tensor(X, requires_grad=True)
    y = getattr(torch, name)(xt)
    for k, g in enumerate(got, start=1):
        gt, = torch.autograd.grad(y.sum(), xt, create_graph=True)
        np.testing.assert_allclose(g.numpy(), gt.detach().numpy(), rtol=RTOL, atol=1e-12,
                                   err_msg=f"{name}: derivative of order {k}")
        y = gt


# PyTorch warns that backward(create_graph=True) makes a param <-> .grad cycle; so does chainrule
TORCH_CYCLE_WARNING = "ignore:Using backward\\(\\) with create_graph=True:UserWarning"


@pytest.mark.filterwarnings(TORCH_CYCLE_WARNING)
def test_third_derivative_with_backward_create_graph_and_upstream_weights():
    """Mixed: backward(create_graph=True) into .grad, then cr.grad twice, non-trivial weights."""
    torch = pytest.importorskip("torch")
    w = np.array([0.5, -1.5, 2.0])
    xv = np.array([0.2, -0.7, 1.1])
    x = cr.tensor(xv.copy(), requires_grad=True)
    (cr.tanh(x) * cr.sigmoid(x) * cr.tensor(w)).sum().backward(create_graph=True)
    g2, = cr.grad((x.grad * x.grad).sum(), x, create_graph=True)
    g3, = cr.grad((g2 * cr.tensor(w)).sum(), x)

    xt = torch.tensor(xv, requires_grad=True)
    (torch.tanh(xt) * torch.sigmoid(xt) * torch.tensor(w)).sum().backward(create_graph=True)
    t2, = torch.autograd.grad((xt.grad * xt.grad).sum(), xt, create_graph=True)
    t3, = torch.autograd.grad((t2 * torch.tensor(w)).sum(), xt)
    np.testing.assert_allclose(g2.numpy(), t2.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(g3.numpy(), t3.numpy(), rtol=RTOL)


# ---- a small MLP: Hessian-vector product -------------------------------------------------------
def _mlp_data(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((5, 4)) * 0.7, rng.standard_normal(5) * 0.1,
              rng.standard_normal((3, 5)) * 0.7, rng.standard_normal(3) * 0.1]
    x = rng.standard_normal((6, 4))
    y = np.array([0, 2, 1, 1, 0, 2])
    v = [rng.standard_normal(p.shape) for p in params]
    return params, x, y, v


def _cr_loss(x, y, w1, b1, w2, b2, fused):
    if fused:  # the fused Linear and SoftmaxCrossEntropy nodes
        h = cr.tanh(cr.linear(x, w1, b1))
        return cr.cross_entropy(cr.linear(h, w2, b2), y)
    h = cr.tanh(x @ w1.T + b1)  # the same, from primitives
    logits = h @ w2.T + b2
    return -(cr.log_softmax(logits, dim=1) * cr.one_hot(y, 3).double()).sum() / len(y.data)


def _cr_hvp(fused):
    params, xv, yv, vv = _mlp_data()
    ps = [cr.tensor(p.copy(), requires_grad=True) for p in params]
    x, y = cr.tensor(xv), cr.tensor(yv)
    loss = _cr_loss(x, y, *ps, fused=fused)
    grads = cr.grad(loss, ps, create_graph=True)
    dot = sum(((g * cr.tensor(v)).sum() for g, v in zip(grads, vv)), cr.tensor(np.array(0.0)))
    return loss, grads, cr.grad(dot, ps)


def _torch_hvp(torch):
    params, xv, yv, vv = _mlp_data()
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    x, y = torch.tensor(xv), torch.tensor(yv)

    def loss_fn(w1, b1, w2, b2):
        h = torch.tanh(torch.nn.functional.linear(x, w1, b1))
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w2, b2), y)

    loss = loss_fn(*ps)
    grads = torch.autograd.grad(loss, ps)
    _, hv = torch.autograd.functional.hvp(loss_fn, tuple(ps), tuple(torch.tensor(v) for v in vv))
    return loss, grads, hv


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "primitives"])
def test_mlp_hessian_vector_product_matches_torch(fused):
    torch = pytest.importorskip("torch")
    loss, grads, hv = _cr_hvp(fused)
    tloss, tgrads, thv = _torch_hvp(torch)
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=RTOL)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=RTOL, atol=1e-12)
    for h, th in zip(hv, thv):
        assert np.abs(th.numpy()).max() > 1e-3  # a non-trivial product
        np.testing.assert_allclose(h.numpy(), th.numpy(), rtol=RTOL, atol=1e-12)


def test_mlp_hessian_vector_product_by_finite_differences():
    """No torch needed: H v = (g(p + eps v) - g(p - eps v)) / 2 eps."""
    params, xv, yv, vv = _mlp_data()
    _, _, hv = _cr_hvp(fused=True)
    eps = 1e-5

    def grads_at(sign):
        ps = [cr.tensor(p + sign * eps * v, requires_grad=True) for p, v in zip(params, vv)]
        return cr.grad(_cr_loss(cr.tensor(xv), cr.tensor(yv), *ps, fused=True), ps)

    for h, gp, gm in zip(hv, grads_at(1), grads_at(-1)):
        np.testing.assert_allclose(h.numpy(), (gp.numpy() - gm.numpy()) / (2 * eps),
                                   rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "primitives"])
def test_mlp_gradgradcheck(fused):
    params, xv, yv, _ = _mlp_data(seed=1)
    ps = [cr.tensor(p.copy(), requires_grad=True) for p in params]
    x, y = cr.tensor(xv), cr.tensor(yv)
    assert cr.gradgradcheck(lambda *p: _cr_loss(x, y, *p, fused=fused), ps)


# ---- gradient penalty through x.grad -------------------------------------------------------------
@pytest.mark.filterwarnings(TORCH_CYCLE_WARNING)
def test_gradient_penalty_via_backward_create_graph_matches_torch():
    torch = pytest.importorskip("torch")
    params, xv, yv, _ = _mlp_data(seed=2)

    x = cr.tensor(xv.copy(), requires_grad=True)
    ps = [cr.tensor(p.copy(), requires_grad=True) for p in params]
    loss = _cr_loss(x, cr.tensor(yv), *ps, fused=True)
    loss.backward(create_graph=True)
    assert x.grad.requires_grad
    first = [p.grad.numpy().copy() for p in ps]
    penalty = (x.grad * x.grad).sum()
    gpen = cr.grad(penalty, [x] + ps, retain_graph=True)
    penalty.backward()

    xt = torch.tensor(xv, requires_grad=True)
    pt = [torch.tensor(p, requires_grad=True) for p in params]
    h = torch.tanh(torch.nn.functional.linear(xt, pt[0], pt[1]))
    tloss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, pt[2], pt[3]),
                                              torch.tensor(yv))
    tloss.backward(create_graph=True)
    tfirst = [p.grad.detach().numpy().copy() for p in pt]
    tpenalty = (xt.grad * xt.grad).sum()
    tgpen = torch.autograd.grad(tpenalty, [xt] + pt, retain_graph=True)
    tpenalty.backward()

    np.testing.assert_allclose(penalty.item(), tpenalty.item(), rtol=RTOL)
    for a, b in zip(first, tfirst):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-12)
    for a, b in zip(gpen, tgpen):
        assert np.abs(b.numpy()).max() > 1e-4
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=RTOL, atol=1e-12)
    # .grad accumulated first-order grads plus the penalty's, exactly as in PyTorch
    for a, b in zip([x] + ps, [xt] + pt):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.detach().numpy(), rtol=RTOL, atol=1e-12)


# ---- gradgradcheck table ---------------------------------------------------------------------------
def _r(*shape, seed=0, low=None):
    a = np.random.default_rng(seed + sum(shape)).standard_normal(shape)
    if low is not None:
        a = np.abs(a) + low
    return cr.tensor(a, requires_grad=True)


GRADGRAD = [
    ("mul", lambda a, b: a * b, lambda: (_r(3, 4), _r(4, seed=1))),
    ("mul_self", lambda a: a * a * a, lambda: (_r(2, 3),)),
    ("div", lambda a, b: a / b, lambda: (_r(3, 4), _r(3, 1, seed=1, low=0.5))),
    ("pow_scalar", lambda a: a ** 3.0, lambda: (_r(2, 3),)),
    ("pow_tensor", lambda a, b: a ** b, lambda: (_r(2, 3, low=0.5), _r(2, 3, seed=1))),
    ("matmul", lambda a, b: a @ b, lambda: (_r(2, 3), _r(3, 4, seed=1))),
    ("matmul_batched", lambda a, b: a @ b, lambda: (_r(2, 2, 3), _r(3, 2, seed=1))),
    ("softmax", lambda a: cr.softmax(a, dim=1), lambda: (_r(2, 4),)),
    ("log_softmax", lambda a: cr.log_softmax(a, dim=-1), lambda: (_r(3, 4),)),
    ("logsumexp", lambda a: cr.logsumexp(a, dim=1), lambda: (_r(3, 4),)),
    ("max_dim", lambda a: cr.max(a, dim=1)[0] ** 2, lambda: (_r(3, 4),)),
    ("amax_all", lambda a: a.max() * a, lambda: (_r(2, 3),)),
    ("index_repeated", lambda a: a[np.array([0, 2, 0])] ** 2, lambda: (_r(4, 2),)),
    ("index_slices", lambda a: (a[1:, None, ::2] * a[:-1, None, 1::2]), lambda: (_r(3, 4),)),
    ("index_mask", lambda a: a[a.data > 0] ** 3, lambda: (_r(3, 3),)),
    ("tanh_sigmoid", lambda a: cr.tanh(a) * cr.sigmoid(a), lambda: (_r(2, 3),)),
    ("exp_log_sqrt", lambda a: cr.exp(a) * cr.log(a) / cr.sqrt(a), lambda: (_r(2, 3, low=0.3),)),
    ("sum_mean_var", lambda a: a.sum(0) * a.mean(1, keepdim=True) + a.var(0), lambda: (_r(3, 4),)),
    ("cross_entropy", lambda a: cr.cross_entropy(a, cr.tensor([1, 0, 3])), lambda: (_r(3, 4),)),
]


@pytest.mark.parametrize("name,fn,make", GRADGRAD, ids=[r[0] for r in GRADGRAD])
def test_gradgradcheck_ops(name, fn, make):
    assert cr.gradgradcheck(fn, make())


def test_gradgradcheck_catches_a_wrong_second_derivative():
    class BadSquare(cr.Function):
        """x ** 2 whose backward is right at first order but has a dead second derivative."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            const = x.detach() if isinstance(x, cr.Tensor) else x
            return grad * 2 * const

    x = _r(3)
    assert cr.gradcheck(BadSquare.apply, (x,))
    with pytest.raises(cr.GradcheckError):
        cr.gradgradcheck(BadSquare.apply, (x,))


def test_relu_second_derivative_is_zero():
    xv = np.array([-1.5, -0.2, 0.3, 2.0])
    x = cr.tensor(xv, requires_grad=True)
    w = cr.tensor(np.array([1.0, -2.0, 3.0, 0.5]), requires_grad=True)  # so g requires grad
    g, = cr.grad((cr.relu(x) * w).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), (xv > 0) * w.numpy())
    assert g.requires_grad
    g2, gw = cr.grad((g * w).sum(), [x, w], allow_unused=True)
    assert g2 is None or np.all(g2.numpy() == 0)  # PyTorch gives zeros, None says the same
    np.testing.assert_allclose(gw.numpy(), 2 * (xv > 0) * w.numpy())
    # through another op the second derivative is that op's alone: d2/dx2 relu(x)**2 = 2 [x > 0]
    g, = cr.grad((cr.relu(x) ** 2).sum(), x, create_graph=True)
    g2, = cr.grad(g.sum(), x)
    np.testing.assert_allclose(g2.numpy(), 2.0 * (xv > 0))
    assert cr.gradgradcheck(lambda a: cr.relu(a) * a, (x,))
