"""cr.nn: parameter discovery, modes, state_dicts, layers and activations against PyTorch and
finite differences, initialisers, repr and summary."""
import collections
import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.nn import functional as F
from chainrule.nn import init

try:
    import torch
except ImportError:  # the PyTorch comparisons skip; everything else runs
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _tnn():
    return pytest.importorskip("torch").nn


# ---- the same structures built in both libraries -------------------------------------------
def _nested(lib):
    return lib.Sequential(lib.Linear(3, 4), lib.ReLU(),
                          lib.Sequential(lib.Linear(4, 4), lib.Tanh(), lib.BatchNorm1d(4)),
                          lib.Linear(4, 2))


def _custom(lib):
    """A module whose own Parameter is assigned after its children, with a ModuleList and a
    ModuleDict: PyTorch lists a module's own parameters before its children's."""
    P = lib.Parameter if lib is nn else torch.nn.Parameter
    zeros = cr.zeros if lib is nn else torch.zeros

    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.encoder = lib.Linear(3, 5)
            self.blocks = lib.ModuleList([lib.Linear(5, 5), lib.LayerNorm(5), lib.Linear(5, 5)])
            self.heads = lib.ModuleDict({"cls": lib.Linear(5, 2), "reg": lib.Linear(5, 1, bias=False)})
            self.scale = P(zeros(5))
            self.norm = lib.BatchNorm1d(5)

        def forward(self, x):
            h = self.encoder(x) * self.scale
            for b in self.blocks:
                h = b(h)
            return self.heads["cls"](self.norm(h))

    return Net()


class _TorchMLP(torch.nn.Module if torch else object):
    def __init__(self, sizes, norm=None):
        super().__init__()
        mods = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                if norm:
                    mods.append(torch.nn.BatchNorm1d(b) if norm == "batch" else torch.nn.LayerNorm(b))
                mods.append(torch.nn.ReLU())
        self.layers = torch.nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x)


NESTED_PARAMS = ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.2.weight", "2.2.bias",
                 "3.weight", "3.bias"]
NESTED_STATE = ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.2.weight", "2.2.bias",
                "2.2.running_mean", "2.2.running_var", "2.2.num_batches_tracked", "3.weight",
                "3.bias"]
CUSTOM_PARAMS = ["scale", "encoder.weight", "encoder.bias", "blocks.0.weight", "blocks.0.bias",
                 "blocks.1.weight", "blocks.1.bias", "blocks.2.weight", "blocks.2.bias",
                 "heads.cls.weight", "heads.cls.bias", "heads.reg.weight", "norm.weight",
                 "norm.bias"]


def _names(pairs):
    return [n for n, _ in pairs]


def test_parameter_names_and_order():
    assert _names(_nested(nn).named_parameters()) == NESTED_PARAMS
    assert list(_nested(nn).state_dict()) == NESTED_STATE
    assert _names(_custom(nn).named_parameters()) == CUSTOM_PARAMS
    assert _names(nn.MLP([4, 8, 8, 3]).named_parameters()) == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
        "layers.4.weight", "layers.4.bias"]
    assert _names(_nested(nn).named_buffers()) == [
        "2.2.running_mean", "2.2.running_var", "2.2.num_batches_tracked"]
    assert _names(_nested(nn).named_children()) == ["0", "1", "2", "3"]


@needs_torch
@pytest.mark.parametrize("build", [
    lambda lib: _nested(lib), lambda lib: _custom(lib),
    lambda lib: nn.MLP([4, 8, 8, 3], norm="batch") if lib is nn else _TorchMLP([4, 8, 8, 3], "batch"),
    lambda lib: nn.MLP([4, 6, 3], norm="layer") if lib is nn else _TorchMLP([4, 6, 3], "layer"),
])
def test_names_match_torch(build):
    ours, theirs = build(nn), build(torch.nn)
    assert _names(ours.named_parameters()) == _names(theirs.named_parameters())
    assert _names(ours.named_buffers()) == _names(theirs.named_buffers())
    assert _names(ours.named_modules()) == _names(theirs.named_modules())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p.shape == tuple(q.shape), name


def test_plain_lists_dicts_and_sharing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            shared = nn.Linear(2, 2)
            self.blocks = [shared, nn.Linear(2, 3)]
            self.extra = {"a": nn.Parameter(cr.ones(2)), "b": (nn.Linear(3, 1),)}
            self.again = shared  # the same module under a second name
            self.note = "not a member"
            self.data = cr.zeros(3)  # a plain Tensor is not a parameter

    net = Net()
    assert _names(net.named_parameters()) == [
        "extra.a", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
        "extra.b.0.weight", "extra.b.0.bias"]
    assert len(list(net.parameters())) == 7  # the shared Linear counted once
    assert "again.weight" in net.state_dict()  # but saved under both names, as PyTorch does
    assert _names(net.named_children()) == ["blocks.0", "blocks.1", "extra.b.0"]


def test_no_getattr_magic_and_module_without_init():
    m = nn.Linear(2, 2)
    with pytest.raises(AttributeError):
        m.wieght  # noqa: B018  (a typo is an error, never None)

    class Bare(nn.Module):
        def __init__(self):  # forgot super().__init__(): still works
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            return self.fc(x)

    b = Bare()
    assert b.training and _names(b.named_parameters()) == ["fc.weight", "fc.bias"]
    assert b.eval().training is False and b.fc.training is False
    with pytest.raises(NotImplementedError):
        nn.Module()(cr.zeros(1))


def test_parameter():
    p = nn.Parameter(cr.tensor([1.0, 2.0]))
    assert p.requires_grad and p.is_leaf and isinstance(p, cr.Tensor)
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.]")
    y = p * 2
    assert type(y) is cr.Tensor and y.requires_grad
    assert not nn.Parameter(cr.ones(2), requires_grad=False).requires_grad
    import copy
    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and q.requires_grad and q.data is not p.data


# ---- modes ----------------------------------------------------------------------------------
def test_dropout_train_eval_and_seed():
    d = nn.Dropout(0.25)
    x = cr.ones(400, 50)
    cr.manual_seed(3)
    y1 = d(x).numpy()
    cr.manual_seed(3)
    y2 = d(x).numpy()
    np.testing.assert_array_equal(y1, y2)
    kept = y1 != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y1[kept], 1 / 0.75, rtol=1e-6)
    assert d.eval()(x) is x
    assert nn.Dropout(0.0)(x) is x and (nn.Dropout(1.0)(x).numpy() == 0).all()
    with pytest.raises(cr.ArgumentError):
        nn.Dropout(1.5)


def test_dropout_gradient_is_the_mask():
    x = cr.randn(20, 10, dtype=cr.float64, requires_grad=True)
    y = F.dropout(x, 0.5, generator=cr.Generator(1))
    g = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(cr.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), g * (y.numpy() / x.numpy()), rtol=1e-12)


def test_batchnorm_train_eval():
    bn = nn.BatchNorm1d(3).double()
    x = cr.tensor(np.random.default_rng(0).normal(2.0, 3.0, (64, 3)))
    y = bn(x).numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(0), 1, rtol=1e-4)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.numpy().var(0, ddof=1),
                               rtol=1e-12)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    before = bn.running_mean.numpy().copy()
    y_eval = bn(x).numpy()
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    assert bn.num_batches_tracked.item() == 1
    expected = (x.numpy() - before) / np.sqrt(bn.running_var.numpy() + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-12)
    with pytest.raises(cr.ArgumentError, match="more than 1 value per channel"):
        bn.train()(cr.ones(1, 3))
    with pytest.raises(cr.ShapeError):
        bn(cr.ones(4, 5))


def test_train_eval_reach_nested_modules():
    model = nn.MLP([4, 8, 2], dropout=0.5, norm="batch")
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    x = cr.randn(5, 4)
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())  # deterministic in eval


# ---- state_dict ------------------------------------------------------------------------------
def test_state_dict_round_trip():
    cr.manual_seed(0)
    a = nn.MLP([4, 8, 3], norm="batch")
    a(cr.randn(6, 4))  # move the running statistics
    sd = a.state_dict()
    assert isinstance(sd, collections.OrderedDict)
    assert all(not t.requires_grad and type(t) is cr.Tensor for t in sd.values())
    assert sd["layers.1.num_batches_tracked"].item() == 1
    b = nn.MLP([4, 8, 3], norm="batch")
    weight = b.layers[0].weight
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.layers[0].weight is weight  # copied in place: an optimizer's references stay valid
    x = cr.randn(5, 4)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    sd["layers.0.bias"].data[0] += 1  # the state_dict shares memory with the model (as PyTorch)
    assert a.layers[0].bias.data[0] == sd["layers.0.bias"].data[0]
    assert b.layers[0].bias.data[0] != sd["layers.0.bias"].data[0]


def test_load_state_dict_errors():
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    good = m.state_dict()
    missing = {k: v for k, v in good.items() if k != "2.bias"}
    with pytest.raises(cr.ArgumentError, match=r"missing keys: '2.bias'"):
        m.load_state_dict(missing)
    extra = dict(good, **{"2.gamma": cr.ones(1)})
    with pytest.raises(cr.ArgumentError, match=r"unexpected keys: '2.gamma'"):
        m.load_state_dict(extra)
    wrong = dict(good, **{"0.weight": cr.zeros(4, 2)})
    with pytest.raises(cr.ShapeError, match=r"'0.weight': \(4, 2\) in the state_dict, \(3, 2\) in the model"):
        m.load_state_dict(wrong)
    with pytest.raises(cr.ShapeError):  # a wrong shape raises even when not strict
        m.load_state_dict(wrong, strict=False)
    before = m[0].weight.numpy().copy()
    broken = {k: cr.zeros(*v.shape) for k, v in good.items()}
    broken["2.bias"] = cr.zeros(5)
    with pytest.raises(cr.ShapeError):
        m.load_state_dict(broken)
    np.testing.assert_array_equal(m[0].weight.numpy(), before)  # nothing copied on error
    keys = m.load_state_dict(extra, strict=False)
    assert keys.unexpected_keys == ["2.gamma"] and keys.missing_keys == []


@needs_torch
def test_state_dicts_interchange_with_torch():
    torch.manual_seed(0)
    theirs = _TorchMLP([5, 7, 7, 3], "batch").double()
    theirs(torch.randn(8, 5, dtype=torch.float64))  # non-trivial running statistics
    ours = nn.MLP([5, 7, 7, 3], norm="batch").double()
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    x = np.random.default_rng(0).standard_normal((4, 5))
    np.testing.assert_allclose(ours(cr.tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    back = _TorchMLP([5, 7, 7, 3], "batch").double()
    back.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    back.eval()
    np.testing.assert_allclose(back(torch.tensor(x)).detach().numpy(),
                               ours(cr.tensor(x)).numpy(), rtol=1e-12)


# ---- every layer and activation against PyTorch and finite differences ------------------------
def _x(shape, scale=1.0, seed=0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# (id, chainrule module, torch module (built lazily), input shape, input scale)
LAYERS = [
    ("linear", lambda: nn.Linear(4, 3), lambda t: t.Linear(4, 3), (5, 4), 1),
    ("linear_nobias_3d", lambda: nn.Linear(4, 3, bias=False),
     lambda t: t.Linear(4, 3, bias=False), (2, 3, 4), 1),
    ("identity", lambda: nn.Identity(7), lambda t: t.Identity(7), (3, 4), 1),
    ("flatten", lambda: nn.Flatten(), lambda t: t.Flatten(), (2, 3, 4), 1),
    ("flatten_0_1", lambda: nn.Flatten(0, 1), lambda t: t.Flatten(0, 1), (2, 3, 4), 1),
    ("batchnorm_2d", lambda: nn.BatchNorm1d(3), lambda t: t.BatchNorm1d(3), (6, 3), 2),
    ("batchnorm_3d", lambda: nn.BatchNorm1d(2), lambda t: t.BatchNorm1d(2), (3, 2, 4), 2),
    ("batchnorm_cma", lambda: nn.BatchNorm1d(3, momentum=None),
     lambda t: t.BatchNorm1d(3, momentum=None), (5, 3), 1),
    ("batchnorm_noaffine", lambda: nn.BatchNorm1d(3, affine=False),
     lambda t: t.BatchNorm1d(3, affine=False), (5, 3), 1),
    ("batchnorm_notrack", lambda: nn.BatchNorm1d(3, track_running_stats=False),
     lambda t: t.BatchNorm1d(3, track_running_stats=False), (5, 3), 1),
    ("layernorm", lambda: nn.LayerNorm(4), lambda t: t.LayerNorm(4), (3, 4), 2),
    ("layernorm_2dims", lambda: nn.LayerNorm((3, 4)), lambda t: t.LayerNorm((3, 4)), (2, 3, 4), 1),
    ("layernorm_nobias", lambda: nn.LayerNorm(4, bias=False),
     lambda t: t.LayerNorm(4, bias=False), (3, 4), 1),
    ("relu", lambda: nn.ReLU(), lambda t: t.ReLU(), (4, 5), 1),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda t: t.LeakyReLU(0.2), (4, 5), 1),
    ("elu", lambda: nn.ELU(0.7), lambda t: t.ELU(0.7), (4, 5), 2),
    ("gelu", lambda: nn.GELU(), lambda t: t.GELU(), (4, 5), 3),
    ("gelu_tanh", lambda: nn.GELU("tanh"), lambda t: t.GELU("tanh"), (4, 5), 3),
    ("silu", lambda: nn.SiLU(), lambda t: t.SiLU(), (4, 5), 3),
    ("softplus", lambda: nn.Softplus(), lambda t: t.Softplus(), (4, 5), 10),
    ("softplus_beta", lambda: nn.Softplus(2.0, 5.0), lambda t: t.Softplus(2.0, 5.0), (4, 5), 4),
    ("sigmoid", lambda: nn.Sigmoid(), lambda t: t.Sigmoid(), (4, 5), 3),
    ("tanh", lambda: nn.Tanh(), lambda t: t.Tanh(), (4, 5), 2),
    ("softmax", lambda: nn.Softmax(dim=1), lambda t: t.Softmax(dim=1), (3, 4, 2), 2),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), lambda t: t.LogSoftmax(dim=-1), (3, 5), 2),
    ("mlp_batchnorm", lambda: nn.MLP([4, 5, 3], norm="batch"),
     lambda t: _TorchMLP([4, 5, 3], "batch"), (6, 4), 1),
    ("mlp_layernorm", lambda: nn.MLP([4, 5, 5, 3], norm="layer"),
     lambda t: _TorchMLP([4, 5, 5, 3], "layer"), (6, 4), 1),
]


def _randomise(module, seed):
    """Non-trivial values for every float parameter (so ones/zeros defaults do not hide bugs)."""
    rng = np.random.default_rng(seed)
    with cr.no_grad():
        for p in module.parameters():
            p.copy_(rng.standard_normal(p.shape) * 0.7)


@needs_torch
@pytest.mark.parametrize("name, ours, theirs, shape, scale", LAYERS, ids=[r[0] for r in LAYERS])
def test_layer_matches_torch(name, ours, theirs, shape, scale):
    m, t = ours().double(), theirs(torch.nn).double()
    _randomise(m, 1)
    t.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in m.state_dict().items()})
    for step, training in enumerate([True, True, False]):  # later passes use moved statistics
        m.train(training), t.train(training)
        x = _x(shape, scale, seed=step)
        xc = cr.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        yc, yt = m(xc), t(xt)
        g = _x(yc.shape, 1.0, seed=10 + step)
        np.testing.assert_allclose(yc.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-12)
        yc.backward(cr.tensor(g))
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(xc.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-12)
        theirs_params = dict(t.named_parameters())
        for pname, p in m.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), theirs_params[pname].grad.numpy(),
                                       rtol=1e-6, atol=1e-12, err_msg=pname)
        for bname, b in t.named_buffers():
            np.testing.assert_allclose(m.state_dict()[bname].numpy(), b.numpy(), rtol=1e-6,
                                       err_msg=bname)
        m.zero_grad(), t.zero_grad()


@pytest.mark.parametrize("name, ours, theirs, shape, scale", LAYERS, ids=[r[0] for r in LAYERS])
def test_layer_gradcheck(name, ours, theirs, shape, scale):
    m = ours().double()
    _randomise(m, 2)
    x = cr.tensor(_x(shape, scale, seed=3), requires_grad=True)
    params = list(m.parameters())
    assert cr.gradcheck(lambda x, *ps: m(x), [x] + params)


@pytest.mark.parametrize("fn", [
    lambda x: F.gelu(x), lambda x: F.gelu(x, approximate="tanh"), lambda x: F.elu(x),
    lambda x: F.softplus(x, 1.5, 4.0), lambda x: F.silu(x), lambda x: F.leaky_relu(x, 0.1),
    lambda x: F.layer_norm(x, (4,)),
], ids=["gelu", "gelu_tanh", "elu", "softplus", "silu", "leaky_relu", "layer_norm"])
def test_second_derivatives(fn):
    x = cr.tensor(_x((3, 4), 2.0, seed=4), requires_grad=True)
    assert cr.gradgradcheck(fn, [x])


def test_embedding():
    cr.manual_seed(0)
    emb = nn.Embedding(10, 3, padding_idx=-1).double()
    assert emb.padding_idx == 9 and (emb.weight.numpy()[9] == 0).all()
    idx = cr.tensor([[1, 9, 1], [0, 2, 9]])
    with cr.no_grad():
        emb.weight[9] = 5.0  # the padding row is returned as is, but never gets a gradient
    y = emb(idx)
    assert y.shape == (2, 3, 3)
    np.testing.assert_array_equal(y.numpy()[0, 1], [5, 5, 5])
    g = _x(y.shape, seed=0)
    y.backward(cr.tensor(g))
    expected = np.zeros((10, 3))
    np.add.at(expected, idx.numpy(), g)
    expected[9] = 0
    np.testing.assert_allclose(emb.weight.grad.numpy(), expected, rtol=1e-12)
    with pytest.raises(cr.ArgumentError, match="indices"):
        emb(cr.tensor([10]))
    with pytest.raises(cr.ArgumentError):
        emb(cr.tensor([0.5]))
    assert cr.gradcheck(lambda w: F.embedding(idx, w), [emb.weight])  # (padding: no gradient by design)


@needs_torch
def test_embedding_matches_torch():
    t = torch.nn.Embedding(7, 4, padding_idx=2).double()
    m = nn.Embedding(7, 4, padding_idx=2).double()
    m.load_state_dict(t.state_dict())
    idx = np.array([[0, 2, 6, 2], [1, 1, 3, 5]])
    yc, yt = m(cr.tensor(idx)), t(torch.tensor(idx))
    np.testing.assert_allclose(yc.numpy(), yt.detach().numpy(), rtol=1e-12)
    g = _x(yc.shape)
    yc.backward(cr.tensor(g)), yt.backward(torch.tensor(g))
    np.testing.assert_allclose(m.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-12)


def test_erf_against_math():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 1e-300, 0.84375, 1.25, 1 / 0.35,
                                                    6.0, 30.0, -np.inf, np.inf]])
    ref = np.array([math.erf(v) for v in x])
    got = cr.ops.Erf.apply(cr.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=1e-300)
    assert np.isnan(cr.ops.Erf.apply(cr.tensor([np.nan])).item())
    assert cr.ops.Erf.apply(cr.tensor([0.5], dtype=cr.float32)).dtype == cr.float32


def test_activation_edge_cases():
    big = cr.tensor([-800.0, -30.0, 0.0, 30.0, 800.0], dtype=cr.float64, requires_grad=True)
    for fn in (F.softplus, F.elu, F.gelu, F.silu, F.sigmoid):
        y = fn(big)
        y.sum().backward()
        assert np.isfinite(y.numpy()).all() and np.isfinite(big.grad.numpy()).all(), fn.__name__
        big.grad = None
    np.testing.assert_allclose(F.softplus(big).numpy(), [0, math.log1p(math.exp(-30)), math.log(2), 30, 800])
    x32 = cr.randn(3, 4)
    for fn in (F.gelu, F.softplus, F.elu, F.silu, lambda x: F.layer_norm(x, 4)):
        assert fn(x32).dtype == cr.float32
    with pytest.raises(cr.ArgumentError):
        F.gelu(x32, approximate="exact")
    with pytest.raises(cr.ShapeError, match="layer_norm"):
        F.layer_norm(x32, (3,))


# ---- init ----------------------------------------------------------------------------------
def test_init_distributions():
    w = cr.empty(200, 300)
    cr.manual_seed(0)
    init.uniform_(w, -2, 3)
    assert w.numpy().min() >= -2 and w.numpy().max() < 3 and abs(w.numpy().mean() - 0.5) < 0.02
    init.normal_(w, 1.0, 2.0)
    assert abs(w.numpy().mean() - 1) < 0.02 and abs(w.numpy().std() - 2) < 0.02
    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / 500)
    assert np.abs(w.numpy()).max() <= bound and abs(w.numpy().std() - bound / math.sqrt(3)) < 0.01 * bound
    init.xavier_normal_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 500)) < 0.01 * math.sqrt(2 / 500)
    init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 300)) < 0.01 * math.sqrt(2 / 300)
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 200)
    init.constant_(w, 0.5)
    assert (w.numpy() == 0.5).all()
    assert (init.zeros_(w).numpy() == 0).all() and (init.ones_(w).numpy() == 1).all()
    assert w.dtype == cr.float32


def test_init_orthogonal_and_seeding():
    for shape in [(4, 6), (6, 4), (3, 2, 2)]:
        w = init.orthogonal_(cr.empty(*shape, dtype=cr.float64), gain=1.5).numpy().reshape(shape[0], -1)
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(small, 2.25 * np.eye(len(small)), atol=1e-12)
    a = init.normal_(cr.empty(5), generator=cr.Generator(7)).numpy()
    b = init.normal_(cr.empty(5), generator=cr.Generator(7)).numpy()
    np.testing.assert_array_equal(a, b)
    cr.manual_seed(1)
    l1 = nn.Linear(3, 2)
    cr.manual_seed(1)
    l2 = nn.Linear(3, 2)
    np.testing.assert_array_equal(l1.weight.numpy(), l2.weight.numpy())
    with pytest.raises(cr.ArgumentError):
        init.xavier_uniform_(cr.empty(3))


def test_default_initialisations():
    cr.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound and abs(w.mean()) < 0.01 * bound
    emb = nn.Embedding(300, 200).weight.numpy()
    assert abs(emb.mean()) < 0.01 and abs(emb.std() - 1) < 0.01
    ln, bn = nn.LayerNorm(5), nn.BatchNorm1d(5)
    assert (ln.weight.numpy() == 1).all() and (ln.bias.numpy() == 0).all()
    assert (bn.weight.numpy() == 1).all() and (bn.running_var.numpy() == 1).all()
    assert lin.weight.dtype == cr.float32 and nn.Linear(2, 2, dtype=cr.float64).weight.dtype == cr.float64


@needs_torch
def test_init_helpers_match_torch():
    tinit = torch.nn.init
    for args in [("linear",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("selu",), ("conv2d",)]:
        assert init.calculate_gain(*args) == pytest.approx(tinit.calculate_gain(*args))
    for shape in [(3, 5), (4, 3, 2, 2)]:
        assert init._calculate_fan_in_and_fan_out(cr.empty(*shape)) == \
            tinit._calculate_fan_in_and_fan_out(torch.empty(*shape))


# ---- module utilities ------------------------------------------------------------------------
def test_zero_grad_requires_grad_to_apply():
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    m(cr.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all((p.grad.numpy() == 0).all() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    m.requires_grad_()
    weight = m[0].weight
    assert m.double() is m and m[0].weight is weight and weight.dtype == cr.float64
    assert m[1].running_mean.dtype == cr.float64 and m[1].num_batches_tracked.dtype == cr.int64
    m.float()
    assert weight.dtype == cr.float32
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Linear", "BatchNorm1d", "Sequential"]


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1:], nn.Sequential)
    assert _names(seq[1:].named_parameters()) == ["2.weight", "2.bias"]
    assert seq(cr.randn(4, 2)).shape == (4, 1)
    del seq[1]
    assert _names(seq.named_children()) == ["0", "1"]
    seq.insert(1, nn.Tanh())
    assert [type(m).__name__ for m in seq] == ["Linear", "Tanh", "Linear"]
    named = nn.Sequential(collections.OrderedDict([("enc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert _names(named.named_parameters()) == ["enc.weight", "enc.bias"]
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml.append(nn.Linear(1, 2))
    ml.extend([nn.ReLU()])
    ml.insert(0, nn.Tanh())
    assert len(ml) == 4 and isinstance(ml[0], nn.Tanh)
    assert _names(ml.named_parameters()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    md = nn.ModuleDict({"training": nn.Linear(1, 1)})  # a key that is also an attribute name
    md["forward"] = nn.Linear(1, 2)
    assert list(md) == ["training", "forward"] and "forward" in md and md.training is True
    assert _names(md.named_parameters())[:2] == ["training.weight", "training.bias"]
    with pytest.raises(cr.ArgumentError):
        nn.ModuleList([cr.ones(2)])
    with pytest.raises(IndexError):
        seq[5]


def test_forward_hook():
    m = nn.Linear(2, 2)
    calls = []
    handle = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    m(cr.randn(3, 2))
    handle.remove()
    m(cr.randn(3, 2))
    assert calls == [(3, 2)]


@needs_torch
@pytest.mark.parametrize("build", [
    lambda lib: _nested(lib), lambda lib: _custom(lib),
    lambda lib: lib.Sequential(lib.Embedding(10, 3, padding_idx=0), lib.Flatten(), lib.Dropout(0.1),
                               lib.LayerNorm(6), lib.GELU(approximate="tanh"), lib.Softplus(),
                               lib.LeakyReLU(), lib.ELU(), lib.SiLU(), lib.Softmax(dim=1),
                               lib.LogSoftmax(dim=1), lib.Sigmoid(), lib.Identity(),
                               lib.BatchNorm1d(6, momentum=None, affine=False)),
    lambda lib: lib.ModuleList([lib.Linear(2, 2), lib.Linear(2, 2), lib.ReLU()]),
])
def test_repr_matches_torch(build):
    assert repr(build(nn)) == repr(build(torch.nn))


def test_summary():
    model = nn.MLP([64, 128, 64, 10])
    text = model.summary((64,))
    assert "8,320" in text and "8,256" in text and "650" in text and "Total params: 17,226" in text
    assert "(N, 128)" in text and "layers.1" in text and "ReLU" in text
    per_sample = int(text.rsplit("Activations saved for backward: ", 1)[1].split(" ")[0].replace(",", ""))
    # float32: the input (64) for layer 0, the ReLU outputs (128, 64) that ReLU and the next
    # Linear share, and nothing else: weights are not activations
    assert per_sample == 4 * (64 + 128 + 64)
    no_ops = nn.Sequential(nn.Identity(), nn.Flatten()).summary((3, 4))
    assert "Activations saved for backward: 0 bytes" in no_ops
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    example = cr.randn(8, 3)
    state = cr.random.default_generator.get_state()
    before = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    text = bn.summary(example)  # an example batch works too
    assert "measured on a batch of 8" in text
    for k, v in bn.state_dict().items():  # summary leaves no trace: buffers, generator
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert cr.random.default_generator.get_state() == state


def test_deepcopy_and_pickle_keep_members():
    import copy
    import pickle
    m = nn.MLP([3, 4, 2], norm="batch")
    m(cr.randn(5, 3)).sum().backward()
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert _names(clone.named_parameters()) == _names(m.named_parameters())
        assert _names(clone.named_buffers()) == _names(m.named_buffers())
        assert clone.layers[0].weight is not m.layers[0].weight
        assert clone.layers[0].weight.requires_grad
        for k, v in clone.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), m.state_dict()[k].numpy())


def test_linear_names_both_shapes_when_the_bias_does_not_fit():
    F = nn.functional
    with pytest.raises(cr.ShapeError, match=r"linear: \(5, 2\) and \(4, 3\): input features"):
        F.linear(cr.randn(5, 2), cr.randn(4, 3))
    with pytest.raises(cr.ShapeError, match=r"linear: \(2, 3\) and \(1, 2\): bias must have shape"):
        F.linear(cr.randn(4, 3), cr.randn(2, 3), cr.randn(1, 2))
    w, b = cr.randn(2, 3, requires_grad=True), cr.randn(requires_grad=True)  # a 0-d bias broadcasts
    F.linear(cr.randn(4, 3), w, b).sum().backward()
    assert b.grad.shape == () and b.grad.item() == pytest.approx(8.0)


@pytest.mark.parametrize("frozen", [("weight",), ("weight", "bias"), ("bias",)])
def test_linear_backward_with_frozen_parameters_and_batched_inputs(frozen):
    """Gradients for whatever still needs one, with (batch, seq, in) inputs (a frozen layer)."""
    torch = pytest.importorskip("torch")
    cr.manual_seed(0)
    lin = nn.Linear(3, 4).to(np.float64)
    for name in frozen:
        getattr(lin, name).requires_grad_(False)
    x = cr.randn(2, 5, 3, dtype=cr.float64, requires_grad=True)
    lin(x).sum().backward()
    t = torch.nn.Linear(3, 4).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(lin.weight.numpy())), t.bias.copy_(torch.from_numpy(lin.bias.numpy()))
    tx = torch.from_numpy(x.numpy()).requires_grad_()
    t(tx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    for name in ("weight", "bias"):
        p, tp = getattr(lin, name), getattr(t, name)
        if name in frozen:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12)


# ---- fusing(): nn.Sequential's Linear, ReLU pairs as one op ----------------------------------
def _ops_of(loss):
    names, stack, seen = [], [loss.grad_fn], set()
    while stack:
        n = stack.pop()
        if n is None or n in seen or isinstance(n, cr.Tensor):
            continue
        seen.add(n)
        names.append(type(n).__name__)
        stack += [e[1] for e in n.edges]
    return sorted(names)


def _step(model, x, y):
    loss = cr.cross_entropy(model(x), y)
    loss.backward()
    return loss.data.copy(), [p.grad.data.copy() for p in model.parameters()]


def test_fusing_runs_linear_relu_runs_as_one_op_with_the_same_bits():
    cr.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Tanh(),
                          nn.Linear(8, 4), nn.ReLU())
    x, y = cr.randn(16, 3), np.arange(16) % 4
    plain = _step(model, x, y)
    assert _ops_of(cr.cross_entropy(model(x), y)).count("ReLU") == 3
    model.zero_grad()
    with nn.fusing():
        fused = _step(model, x, y)
        ops = _ops_of(cr.cross_entropy(model(x), y))
    assert ops == ["Perceptron", "Perceptron", "SoftmaxCrossEntropy", "Tanh"]  # L R L R, T, L R
    np.testing.assert_array_equal(plain[0], fused[0])
    for a, b in zip(plain[1], fused[1]):
        np.testing.assert_array_equal(a, b)
    assert not nn.Sequential.fuse  # restored on exit


def test_fusing_leaves_hooked_or_watched_modules_and_works_as_a_decorator():
    cr.manual_seed(0)
    model = nn.MLP([3, 8, 8, 4])
    x, y = cr.randn(16, 3), np.arange(16) % 4
    seen = []
    handle = model.layers[1].register_forward_hook(lambda m, a, out: seen.append(out.shape))

    @nn.fusing()
    def ops():
        return _ops_of(cr.cross_entropy(model(x), y))
    assert ops() == ["Linear", "Perceptron", "ReLU", "SoftmaxCrossEntropy"]
    assert seen == [(16, 8)]  # the hooked ReLU ran as itself, and so the Linear before it
    handle.remove()
    assert ops() == ["Perceptron", "SoftmaxCrossEntropy"]
    with nn.fusing(), cr.viz.record():  # graph pictures of a recorded run show every module's op
        assert _ops_of(cr.cross_entropy(model(x), y)).count("ReLU") == 2
    with nn.fusing(), cr.detect_anomaly():
        assert _ops_of(cr.cross_entropy(model(x), y)).count("ReLU") == 2


def test_fit_trains_fused_and_gets_the_unfused_result():
    def train(fused):
        cr.manual_seed(1)
        model = nn.MLP([2, 16, 16, 3])
        X = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
        y = np.arange(64) % 3
        opt = cr.optim.SGD(model.parameters(), lr=0.1)
        if fused:
            class Probe(cr.train.Callback):
                def on_after_backward(self, run):
                    flags.append(nn.Sequential.fuse)
            return cr.fit(model, (X, y), loss="cross_entropy", optimizer=opt, epochs=2,
                          batch_size=16, progress=False, generator=cr.Generator(0),
                          callbacks=[Probe()]), model
        loader = cr.data.DataLoader(cr.data.TensorDataset(X, y), 16, shuffle=True,
                                    generator=cr.Generator(0))
        for _ in range(2):
            for xb, yb in loader:
                opt.zero_grad()
                cr.cross_entropy(model(xb), yb).backward()
                opt.step()
        return None, model
    flags = []
    (_, a), (_, b) = train(False), train(True)
    assert flags == [True] * 8 and not nn.Sequential.fuse  # fused inside fit only
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_fusing_ends_a_recorded_run_on_a_relu_only_for_small_activations(monkeypatch):
    """The gradient a fused run receives stays held until its backward returns: a recorded run
    ending on a ReLU takes that ReLU in only up to 64 KiB of activation; inside a run, and in
    unrecorded calls (inference), any size."""
    head = nn.Sequential(nn.Linear(4, 128), nn.ReLU())
    mlp = nn.MLP([4, 128, 2])
    small, large = cr.randn(128, 4), cr.randn(129, 4)  # 128 x 128 float32 is exactly 64 KiB
    runs = []
    apply = cr.ops.fused.Perceptron.apply
    monkeypatch.setattr(cr.ops.fused.Perceptron, "apply",
                        lambda x, relu_last, *params: runs.append((x.shape, len(params) // 2, relu_last))
                        or apply(x, relu_last, *params))
    with nn.fusing():
        assert _ops_of(head(small).sum()) == ["Perceptron", "Sum"]
        assert _ops_of(head(large).sum()) == ["Linear", "ReLU", "Sum"]
        assert _ops_of(mlp(large).sum()) == ["Perceptron", "Sum"]
        with cr.no_grad():
            out = head(large)
    assert runs == [((128, 4), 1, True), ((129, 4), 2, False), ((129, 4), 1, True)]
    np.testing.assert_array_equal(out.numpy(), head(large).numpy())


def test_fused_backward_frees_each_activation_as_the_layers_do():
    """tracemalloc's peak over a training step's forward and backward: a fused MLP with large
    activations holds no more than its layers one by one (its backward lets go of each
    activation once used; keeping them would cost 0.9 MB more here)."""
    import tracemalloc
    cr.manual_seed(0)
    model = nn.MLP([64, 512, 512, 512, 10])
    x, y = cr.randn(256, 64), np.arange(256) % 10

    def peak(fused):
        model.zero_grad()
        tracemalloc.start()
        try:
            with nn.fusing(fused):
                cr.cross_entropy(model(x), y).backward()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    plain, fused = peak(False), peak(True)
    assert fused <= plain, (fused, plain)


def test_fusing_nests_skips_replaced_forwards_and_takes_arrays():
    cr.manual_seed(0)
    lin = nn.Linear(4, 8)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(8, 2))
    x = np.ones((2, 4), np.float32)
    plain = model(x).numpy()
    fz = nn.fusing()
    with fz:
        with fz:
            np.testing.assert_array_equal(model(x).numpy(), plain)  # an ndarray input fuses too
        assert nn.Sequential.fuse
    assert not nn.Sequential.fuse
    original = lin.forward
    lin.forward = lambda t: original(t) * 0.0  # an adapter replacing one layer's forward
    with nn.fusing():
        np.testing.assert_array_equal(model(x).numpy(), model[2](cr.zeros(2, 8)).numpy())


def test_fused_backward_keeps_its_arrays_for_retain_graph_and_frees_them_otherwise():
    cr.manual_seed(0)
    model = nn.MLP([3, 8, 8, 2])
    x, y = cr.randn(4, 3), np.arange(4) % 2
    with nn.fusing():
        loss = cr.cross_entropy(model(x), y)
    loss.backward(retain_graph=True)
    first = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    loss.backward()  # the same gradients from the kept arrays
    for a, p in zip(first, model.parameters()):
        np.testing.assert_array_equal(a, p.grad.data)
    with pytest.raises(cr.GraphError, match="second time"):
        loss.backward()


def test_fusing_runs_stop_where_bits_or_memory_would_differ():
    """A run stops at a parameter of another dtype or one an earlier layer uses (the engine
    would cast or add gradients differently), and a recorded run ends on an output of at most
    64 KiB (the gradient the op receives stays held through its backward)."""
    cr.manual_seed(0)
    tied = nn.Linear(6, 6)
    mixed = nn.Linear(6, 6, dtype="float64")
    cases = [
        (nn.Sequential(nn.Linear(3, 6), nn.ReLU(), tied, nn.ReLU(), tied, nn.ReLU(), tied),
         ["Linear", "Perceptron", "Perceptron", "Sum"]),  # L R t R | t R | t
        (nn.Sequential(nn.Linear(3, 6), nn.ReLU(), mixed, nn.ReLU(), nn.Linear(6, 2, dtype="float64")),
         ["Linear", "Linear", "Perceptron", "ReLU", "Sum"]),  # L R | m | R | L
        (nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2048)),  # 16 x 2048: 128 KiB
         ["Linear", "Perceptron", "Sum"]),
    ]
    x = cr.randn(16, 3)
    for model, fused_ops in cases:
        model.zero_grad()
        plain_out = model(x)
        plain_out.sum().backward()
        plain = [p.grad.data.copy() for p in model.parameters()]
        model.zero_grad()
        with nn.fusing():
            out = model(x)
            assert _ops_of(out.sum()) == fused_ops
            out.sum().backward()
        np.testing.assert_array_equal(out.numpy(), plain_out.numpy())
        for a, p in zip(plain, model.parameters()):
            np.testing.assert_array_equal(a, p.grad.data)
    with nn.fusing(), cr.no_grad():  # unrecorded: any size
        assert cases[2][0](x).grad_fn is None


def test_fused_run_of_several_layers_refuses_create_graph_one_layer_has_it():
    cr.manual_seed(0)
    x = cr.randn(5, 3, dtype="float64")
    w1, b1 = cr.randn(4, 3, dtype="float64", requires_grad=True), cr.randn(4, dtype="float64", requires_grad=True)
    w2 = cr.randn(2, 4, dtype="float64", requires_grad=True)
    loss = cr.nn.functional.perceptron(x, [(w1, b1), (w2, None)]).tanh().sum()
    with pytest.raises(cr.GraphError, match="second derivative"):
        cr.grad(loss, [w2], create_graph=True)
    # one layer (F.linear_relu): its only kept arrays are its input and output, graph nodes both
    assert cr.gradgradcheck(lambda w, b: cr.nn.functional.linear_relu(x, w, b).tanh(), [w1, b1])


def test_fused_run_keeps_the_first_weight_only_for_the_input_gradient():
    """As nn.Linear: with an input needing no gradient, the first weight is not saved, so an
    in-place change to it between forward and backward is no error."""
    cr.manual_seed(0)
    model = nn.MLP([3, 8, 2])
    x = cr.randn(4, 3)
    with nn.fusing():
        loss = model(x).sum()
    with cr.no_grad():
        model.layers[0].weight.add_(1.0)
    loss.backward()
    assert model.layers[0].weight.grad is not None
    assert cr.nn.functional.perceptron(x, (p for p in [(model.layers[0].weight, None)])).shape == (4, 8)


def test_perceptron_refuses_layers_that_are_not_weight_bias_pairs():
    x, w = cr.randn(2, 3), cr.randn(4, 3)
    for layers in ([], [(w,)], [(w, None, None)]):
        with pytest.raises(cr.ArgumentError, match=r"perceptron: layers must be one or more \(weight, bias\) pairs"):
            cr.nn.functional.perceptron(x, layers)
