"""Losses: one row per (loss, options), each checked under every reduction against PyTorch
(float64, forward and gradients for a non-trivial upstream gradient) and by gradcheck."""
import numpy as np
import pytest

import chainrule as cr
from chainrule.nn import losses as L
from chainrule.nn.module import Module

C = 3  # classes


# ---- input and target makers: rng -> ndarray ----------------------------------------------------
def normal(*shape):
    return lambda r: r.standard_normal(shape) * 2


def with_zero(*shape):  # logits holding an exact 0, where max(x, 0) and |x| have their kinks
    def make(r):
        x = r.standard_normal(shape) * 2
        x.flat[0] = 0.0
        return x
    return make


def probs(*shape):
    return lambda r: r.uniform(0.05, 0.95, shape)


def binary(*shape):
    return lambda r: r.integers(0, 2, shape).astype(np.float64)


def indices(*shape, ignore=None):
    def make(r):
        t = r.integers(0, C, shape)
        if ignore is not None:
            t.flat[::3] = ignore
        return t
    return make


def simplex(*shape):  # class probabilities along dim 1 (dim 0 for 1-D)
    def make(r):
        e = np.exp(r.standard_normal(shape))
        return e / e.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    return make


W = np.array([0.5, 2.0, 1.25])  # class weights

# (id, loss name (the same in torch.nn.functional), input, target, options)
CASES = [
    ("mse", "mse_loss", normal(4, 3), normal(4, 3), {}),
    ("mse-3d", "mse_loss", normal(2, 3, 2), normal(2, 3, 2), {}),
    ("l1", "l1_loss", normal(4, 3), normal(4, 3), {}),
    ("huber", "huber_loss", normal(4, 3), normal(4, 3), {}),
    ("huber-delta", "huber_loss", normal(2, 3, 2), normal(2, 3, 2), {"delta": 0.5}),
    ("bce-logits", "binary_cross_entropy_with_logits", with_zero(4, 3), binary(4, 3), {}),
    ("bce-logits-soft-weight", "binary_cross_entropy_with_logits", normal(4, 3), probs(4, 3),
     {"weight": W}),
    ("bce-logits-pos-weight", "binary_cross_entropy_with_logits", with_zero(4, 3), probs(4, 3),
     {"pos_weight": np.array([3.0, 0.5, 1.0]), "weight": np.array([[1.0], [0.5], [2.0], [0.0]])}),
    ("bce", "binary_cross_entropy", probs(4, 3), binary(4, 3), {}),
    ("bce-soft-weight", "binary_cross_entropy", probs(2, 3, 2), probs(2, 3, 2),
     {"weight": np.array([[1.0], [0.5], [2.0]])}),
    ("nll", "nll_loss", normal(5, C), indices(5), {}),
    ("nll-weight-ignore", "nll_loss", normal(6, C), indices(6, ignore=-100), {"weight": W}),
    ("nll-1d", "nll_loss", normal(C), indices(), {"weight": W}),
    ("nll-kdim", "nll_loss", normal(2, C, 2, 2), indices(2, 2, 2, ignore=1),
     {"weight": W, "ignore_index": 1}),
    ("ce", "cross_entropy", normal(5, C), indices(5), {}),
    ("ce-ignore", "cross_entropy", normal(6, C), indices(6, ignore=-100), {}),
    ("ce-custom-ignore", "cross_entropy", normal(6, C), indices(6, ignore=2), {"ignore_index": 2}),
    ("ce-weight", "cross_entropy", normal(5, C), indices(5), {"weight": W}),
    ("ce-smooth", "cross_entropy", normal(5, C), indices(5), {"label_smoothing": 0.2}),
    ("ce-smooth-weight-ignore", "cross_entropy", normal(6, C), indices(6, ignore=-100),
     {"weight": W, "label_smoothing": 0.3}),
    ("ce-kdim", "cross_entropy", normal(2, C, 2, 2), indices(2, 2, 2, ignore=-100),
     {"weight": W, "label_smoothing": 0.1}),
    ("ce-1d", "cross_entropy", normal(C), indices(), {"label_smoothing": 0.1}),
    ("ce-probs", "cross_entropy", normal(4, C), simplex(4, C), {}),
    ("ce-probs-weight-smooth", "cross_entropy", normal(2, C, 2), simplex(2, C, 2),
     {"weight": W, "label_smoothing": 0.25}),
    ("ce-probs-1d", "cross_entropy", normal(C), simplex(C), {"weight": W}),
]
REDUCTIONS = ["mean", "sum", "none"]


def _setup(row, seed=0):
    _, name, make_input, make_target, options = row
    r = np.random.default_rng(seed)
    x, t = make_input(r), make_target(r)
    return getattr(L, name), name, x, t, options


def _upstream(shape, r):
    return r.standard_normal(shape) if shape else np.asarray(1.7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("row", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(row, reduction):
    torch = pytest.importorskip("torch")
    fn, name, x, t, options = _setup(row)
    float_target = t.dtype.kind == "f"
    xc = cr.tensor(x, dtype=cr.float64, requires_grad=True)
    tc = cr.tensor(t, dtype=cr.float64, requires_grad=True) if float_target else t
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t, requires_grad=float_target)
    ours = fn(xc, tc, reduction=reduction, **options)
    theirs = getattr(torch.nn.functional, name)(
        xt, tt, reduction=reduction,
        **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()})
    assert ours.dtype == np.float64 and ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-6, atol=1e-12)

    g = _upstream(ours.shape, np.random.default_rng(1))
    ours.backward(cr.tensor(g, dtype=cr.float64))
    theirs.backward(torch.tensor(g))
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-6, atol=1e-12)
    if float_target:
        np.testing.assert_allclose(tc.grad.data, tt.grad.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("row", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(row, reduction):
    fn, _, x, t, options = _setup(row, seed=2)
    xc = cr.tensor(x, dtype=cr.float64, requires_grad=True)
    if t.dtype.kind == "f":
        tc = cr.tensor(t, dtype=cr.float64, requires_grad=True)
        assert cr.gradcheck(lambda a, b: fn(a, b, reduction=reduction, **options), (xc, tc))
    else:
        assert cr.gradcheck(lambda a: fn(a, t, reduction=reduction, **options), (xc,))


SECOND_ORDER = ("huber", "bce-logits-pos-weight", "bce", "ce-smooth-weight-ignore", "ce-probs",
                "ce")


@pytest.mark.parametrize("row", [c for c in CASES if c[0] in SECOND_ORDER], ids=lambda c: c[0])
def test_gradgradcheck(row):
    fn, _, x, t, options = _setup(row, seed=3)
    x[x == 0] = 0.3  # at exactly 0 the bce-logits form is exact to first order only (docstring)
    xc = cr.tensor(x, dtype=cr.float64, requires_grad=True)
    assert cr.gradgradcheck(lambda a: fn(a, t, reduction="sum", **options), (xc,))


def test_ce_all_ignored_mean_is_nan_like_torch():
    x = cr.tensor(np.zeros((2, C)), requires_grad=True)
    loss = L.cross_entropy(x, np.array([-100, -100]))
    assert np.isnan(loss.item())
    assert L.cross_entropy(x, np.array([-100, -100]), reduction="sum").item() == 0


# ---- stability: float32 logits of magnitude 1e4 ------------------------------------------------
BIG = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [0.0, -1e4, 1e4], [3e3, 1e4, -1e4]],
               dtype=np.float32)


@pytest.mark.parametrize("call", [
    lambda x: L.cross_entropy(x, np.array([1, 0, 1, 2])),
    lambda x: L.cross_entropy(x, np.array([1, 0, -100, 2]), weight=W, label_smoothing=0.1),
    lambda x: L.cross_entropy(x.reshape(2, 2, 3).permute(0, 2, 1), np.array([[1, 0], [2, 1]])),
    lambda x: L.cross_entropy(x, np.full((4, 3), 1 / 3, np.float32), label_smoothing=0.2),
    lambda x: L.nll_loss(cr.log_softmax(x, 1), np.array([1, 0, 1, 2])),
    lambda x: L.binary_cross_entropy_with_logits(x, (BIG < 0).astype(np.float32)),
    lambda x: L.binary_cross_entropy_with_logits(x, (BIG < 0).astype(np.float32),
                                                 pos_weight=np.array([2.0, 1.0, 0.5])),
    lambda x: L.binary_cross_entropy(cr.sigmoid(x), (BIG < 0).astype(np.float32)),
], ids=["ce", "ce-weight-smooth", "ce-kdim", "ce-probs", "nll", "bce-logits", "bce-logits-pos",
        "bce-of-saturated-sigmoid"])
def test_float32_extreme_logits_stay_finite(call):
    x = cr.tensor(BIG, requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no inf, log(0), 0 * inf
        loss = call(x)
        loss.backward()
    assert loss.dtype == np.float32 and np.isfinite(loss.item()) and loss.item() > 50
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad.data).all()


def test_bce_at_exact_zero_and_one_is_capped_like_torch():
    p = cr.tensor([0.0, 1.0, 0.0, 1.0], requires_grad=True)
    loss = L.binary_cross_entropy(p, np.array([1.0, 0.0, 0.0, 1.0], np.float32), reduction="none")
    loss.sum().backward()
    np.testing.assert_array_equal(loss.data, [100.0, 100.0, 0.0, 0.0])
    assert np.isfinite(p.grad.data).all()


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
def test_silent_broadcast_is_a_shape_error(name):
    x = cr.rand(4, 1)
    with pytest.raises(cr.ShapeError, match=rf"^{name}: \(4, 1\) and \(4,\): input and target must "
                                            r"have the same shape"):
        getattr(L, name)(x, cr.rand(4))


def test_bad_class_indices():
    x = cr.randn(4, C)
    with pytest.raises(cr.ArgumentError, match=r"cross_entropy: class indices must lie in \[0, 3\) "
                                               r"or equal ignore_index=-100, got -1, 3"):
        L.cross_entropy(x, np.array([0, 3, -1, 2]))
    with pytest.raises(cr.ArgumentError, match=r"nll_loss: class indices must lie in \[0, 3\) "
                                               r"or equal ignore_index=-1, got 5"):
        L.nll_loss(x, np.array([0, 5, -1, 2]), ignore_index=-1)
    with pytest.raises(cr.ArgumentError, match="nll_loss: class indices must be integers, got f"):
        L.nll_loss(x, np.array([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(cr.ShapeError, match=r"cross_entropy: \(4, 3\) and \(4, 1\): expected input "
                                            r"\(N, C, d1, ...\) with class indices \(N, d1, ...\)"):
        L.cross_entropy(x, np.zeros((4, 1), np.int64))
    with pytest.raises(cr.ShapeError, match=r"cross_entropy: \(2,\): weight must have one entry"):
        L.cross_entropy(x, np.array([0, 1, 1, 2]), weight=np.ones(2))


def test_bad_arguments():
    x = cr.rand(3)
    with pytest.raises(cr.ArgumentError, match="mse_loss: reduction must be"):
        L.mse_loss(x, x, reduction="avg")
    with pytest.raises(cr.ArgumentError, match="binary_cross_entropy: input must be probabilities"):
        L.binary_cross_entropy(x + 1, x)
    with pytest.raises(cr.ArgumentError, match="label_smoothing must lie in"):
        L.cross_entropy(cr.randn(2, C), np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(cr.ArgumentError, match="huber_loss: delta must be positive"):
        L.huber_loss(x, x, delta=0)


# ---- modules -----------------------------------------------------------------------------------
MODULES = [  # (module name, constructor kwargs, input, target)
    ("MSELoss", {}, normal(4, 3), normal(4, 3)),
    ("L1Loss", {"reduction": "sum"}, normal(4, 3), normal(4, 3)),
    ("HuberLoss", {"delta": 0.5, "reduction": "none"}, normal(4, 3), normal(4, 3)),
    ("NLLLoss", {"weight": W, "ignore_index": 1}, normal(6, C), indices(6, ignore=1)),
    ("CrossEntropyLoss", {"weight": W, "label_smoothing": 0.1}, normal(2, C, 2), indices(2, 2)),
    ("CrossEntropyLoss", {"reduction": "sum"}, normal(4, C), simplex(4, C)),
    ("BCELoss", {"weight": np.array([1.0, 2.0, 0.5])}, probs(4, 3), binary(4, 3)),
    ("BCEWithLogitsLoss", {"weight": np.array([1.0, 2.0, 0.5]),
                           "pos_weight": np.array([2.0, 1.0, 3.0])}, normal(4, 3), probs(4, 3)),
    ("MSELoss", {"size_average": False}, normal(4, 3), normal(4, 3)),  # PyTorch's legacy pair
    ("CrossEntropyLoss", {"reduce": False}, normal(4, C), indices(4)),
]


@pytest.mark.parametrize("row", MODULES, ids=[f"{m[0]}-{'-'.join(m[1])}" for m in MODULES])
def test_module_matches_torch_module(row):
    torch = pytest.importorskip("torch")
    name, kwargs, make_input, make_target = row
    r = np.random.default_rng(4)
    x, t = make_input(r), make_target(r)
    ours = getattr(L, name)(**{k: cr.tensor(v, dtype=cr.float64) if isinstance(v, np.ndarray)
                                          else v for k, v in kwargs.items()})
    with pytest.warns(UserWarning) if {"size_average", "reduce"} & set(kwargs) else _nothing():
        theirs = getattr(torch.nn, name)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                                            for k, v in kwargs.items()})
    assert ours.reduction == theirs.reduction
    assert list(ours.state_dict()) == list(theirs.state_dict())
    xc = cr.tensor(x, dtype=cr.float64, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    a = ours(xc, t if t.dtype.kind != "f" else cr.tensor(t, dtype=cr.float64))
    b = theirs(xt, torch.tensor(t))
    np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-6, atol=1e-12)
    g = _upstream(a.shape, r)
    a.backward(cr.tensor(g, dtype=cr.float64))
    b.backward(torch.tensor(g))
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-6, atol=1e-12)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_module_repr_and_dtype_follow():
    assert repr(L.CrossEntropyLoss()) == "CrossEntropyLoss()"  # as PyTorch's
    assert repr(L.MSELoss()) == "MSELoss()"
    assert repr(L.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)) == \
        "CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)"
    assert repr(L.HuberLoss(reduction="sum", delta=2.0)) == "HuberLoss(reduction='sum', delta=2.0)"
    assert isinstance(L.BCELoss(), Module)
    # a float64 class-weight buffer does not turn a float32 loss into float64
    criterion = L.CrossEntropyLoss(weight=cr.tensor(W, dtype=cr.float64))
    loss = criterion(cr.randn(4, C), np.array([0, 1, 2, 1]))
    assert loss.dtype == np.float32
    with pytest.raises(cr.ArgumentError, match="BCELoss: reduction must be"):
        L.BCELoss(reduction="avg")


@pytest.mark.parametrize("dtype, bad", [(d, b) for d in (np.int64, np.int32, np.uint8)
                                        for b in (-1, -3, 3, 200) if b >= 0 or d is not np.uint8])
def test_fused_cross_entropy_rejects_targets_outside_the_classes(dtype, bad):
    """cr.cross_entropy (the fused node): a negative target must not wrap to the last class."""
    target = np.array([0, bad, 1], dtype=dtype)
    with pytest.raises(cr.ArgumentError, match=r"cross_entropy: targets must lie in \[0, 3\)"):
        cr.cross_entropy(cr.randn(3, 3), target)
