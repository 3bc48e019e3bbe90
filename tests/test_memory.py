"""What backprop keeps: the memory ledger (against an independent walk of the graph, zero under
no_grad, tracemalloc peaks) and gradient checkpointing (fewer saved bytes by a stated factor,
bitwise-identical gradients, dropout included)."""
import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.memory import checkpoint, checkpoint_sequential, ledger
from chainrule.nn import functional as F
from chainrule.tensor import Tensor


def graph_saved(loss, exclude):
    """Independently of the ledger: every array the graph behind `loss` saved, once, minus the
    arrays in `exclude` (the parameters), as {id: array}."""
    excluded = {id(a) for a in exclude}
    found, stack, seen = {}, [loss.grad_fn], {id(loss.grad_fn)}
    while stack:
        node = stack.pop()
        for a in node._saved:
            if isinstance(a, np.ndarray) and id(a) not in excluded:
                found[id(a)] = a
        for _, parent, _, _ in node.edges:
            if not isinstance(parent, Tensor) and id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return found


def mlp(width=16, depth=4, dropout=0.0, seed=0):
    cr.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(width, 3))


def data(n=8, width=16, seed=1):
    g = np.random.default_rng(seed)
    return (Tensor(g.standard_normal((n, width)).astype(np.float32)),
            Tensor(g.integers(0, 3, n)))


def test_ledger_bytes_equal_the_graph_and_zero_under_no_grad():
    model = mlp(dropout=0.2)
    x, y = data()
    step = lambda x, y: F.cross_entropy(model(x), y)
    params = [p.data for p in model.parameters()]
    cr.manual_seed(0)
    report = ledger(step, x, y, model=model)

    cr.manual_seed(0)  # the same forward again, kept, to walk its graph
    loss = step(x, y)
    arrays = graph_saved(loss, params)
    assert report.saved_bytes == sum(a.nbytes for a in arrays.values()) > 0
    assert report.saved_arrays == len(arrays)
    assert report.saved_bytes + report.param_bytes == cr.saved_bytes(loss)
    # a Linear saves its weight (not its bias) for its input's gradient: all but the first one,
    # whose input x needs none
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert report.param_bytes == sum(m.weight.data.nbytes for m in linears[1:])
    assert report.no_grad_saved_bytes == 0 and report.no_grad_ops == len(report.rows)
    assert report.loss == pytest.approx(loss.item())

    # per layer: x is the first Linear's; each ReLU's output is the ReLU's (Dropout's Mul keeps
    # it too); each Dropout keeps its mask; its output is the next Linear's
    n, w = x.shape
    activation = n * w * 4
    layers = {name: nbytes for name, _, _, nbytes in report.layers}
    assert [layers[str(i)] for i in range(13)] == [activation] * 13
    assert layers["(outside modules)"] == 2 * n * 3 * 4  # cross_entropy: softmax and logits
    assert sum(layers.values()) == report.saved_bytes
    by_op = {op: (count, nbytes) for op, count, nbytes in report.by_op()}
    assert by_op["ReLU"] == (4, 4 * n * w * 4) and by_op["Linear"][0] == 5
    text = str(report)
    assert "Saved bytes" in text and f"{report.saved_bytes:,}" in text and "no_grad" in text


def test_ledger_without_a_model_counts_leaves_as_parameters():
    w = cr.randn(5, 4, requires_grad=True)
    x = cr.randn(3, 5)
    report = ledger(lambda x: (x @ w).tanh().sum(), x)
    # Matmul saves x (15 floats) for w's gradient, not w (x needs no gradient); Tanh saves its
    # output (12 floats)
    assert report.saved_bytes == (15 + 12) * 4 and report.param_bytes == 0
    assert report.layers == [] and [r.op for r in report.rows] == ["Matmul", "Tanh", "Sum"]


def test_ledger_peak_is_larger_with_grad_and_leaves_no_trace():
    model = mlp(width=128, depth=6, dropout=0.1)
    x, y = data(n=512, width=128)
    step = lambda x, y: F.cross_entropy(model(x), y)
    cr.manual_seed(7)
    expected = cr.randn(3).data
    cr.manual_seed(7)
    report = ledger(step, x, y, model=model)
    assert np.array_equal(cr.randn(3).data, expected)  # the random stream is untouched
    activation = 512 * 128 * 4
    assert report.saved_bytes >= 12 * activation
    # every saved array but the input x is made by the forward and alive at its end, so the peak
    # holds them all; under no_grad each activation is freed once the next one exists
    assert report.peak_bytes >= report.saved_bytes - x.data.nbytes
    assert report.no_grad_peak_bytes < 6 * activation
    assert report.peak_bytes > report.no_grad_peak_bytes + 6 * activation


def test_ledger_restores_batchnorm_statistics():
    cr.manual_seed(0)
    model = nn.MLP([4, 8, 2], norm="batch")
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    ledger(lambda x: model(x).sum(), cr.randn(6, 4), model=model)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.data, before[k]), k


def test_summary_agrees_with_the_ledger():
    model = mlp(width=8, depth=3)
    x, _ = data(n=4, width=8)
    text = model.summary(x)
    report = ledger(lambda x: model(x), x, model=model)
    per_sample = report.saved_bytes / 4
    assert f"Activations saved for backward: {per_sample:,.0f} bytes per sample" in text


# ---- checkpointing ------------------------------------------------------------------------------
def run_step(model, step, x, y, seed=3):
    cr.manual_seed(seed)
    model.zero_grad()
    if x.requires_grad:
        x.grad = None
    loss = step(x, y)
    loss.backward()
    after = cr.randn(4).data  # where the random stream stands after forward and backward
    return loss.item(), [p.grad.data.copy() for p in model.parameters()], after


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_checkpoint_keeps_a_fraction_with_identical_gradients(dropout):
    """16 blocks (Linear, ReLU[, Dropout]), checkpointed every 4: the graph keeps the 4 segment
    inputs instead of every activation. Gradients are bitwise equal."""
    model = mlp(width=32, depth=16, dropout=dropout)
    x, y = data(n=64, width=32)
    blocks = list(model)[:-1]
    per = 3 if dropout else 2
    segments = [nn.Sequential(*blocks[i:i + 4 * per]) for i in range(0, len(blocks), 4 * per)]
    head = list(model)[-1]
    assert len(segments) == 4

    def plain(x, y):
        return F.cross_entropy(model(x), y)

    def checkpointed(x, y):
        h = x
        for seg in segments:
            h = checkpoint(seg, h)
        return F.cross_entropy(head(h), y)

    loss0, grads0, after0 = run_step(model, plain, x, y)
    loss1, grads1, after1 = run_step(model, checkpointed, x, y)
    assert loss0 == loss1
    assert all(np.array_equal(a, b) for a, b in zip(grads0, grads1))
    assert np.array_equal(after0, after1)  # the recomputation put the generator back

    cr.manual_seed(3)
    full = ledger(plain, x, y, model=model).saved_bytes
    cr.manual_seed(3)
    kept = ledger(checkpointed, x, y, model=model).saved_bytes
    activation = 64 * 32 * 4
    # plain: x and 16 ReLU outputs (+ 16 dropout masks and outputs); checkpointed: the 4 segment
    # inputs and the last segment's output (the head's input); both add the loss's softmax and
    # logits
    loss_bytes = 64 * 3 * 4 * 2
    assert full == (17 + (32 if dropout else 0)) * activation + loss_bytes
    assert kept == 5 * activation + loss_bytes
    assert full / kept > (3.3 if not dropout else 9.0)


def test_checkpoint_gradients_reach_inputs_and_match_finite_differences():
    cr.manual_seed(0)
    lin = nn.Linear(3, 4).double()
    x = cr.randn(5, 3, dtype=cr.float64, requires_grad=True)
    fn = lambda x: lin(x).tanh() * x.sum(1, keepdim=True)
    cr.gradcheck(lambda x: checkpoint(fn, x), (x,))
    g = cr.randn(5, 4, dtype=cr.float64)
    expected = cr.grad(fn(x), [x, lin.weight, lin.bias], g)
    got = cr.grad(checkpoint(fn, x), [x, lin.weight, lin.bias], g)
    for a, b in zip(expected, got):
        assert np.array_equal(a.data, b.data)


def test_checkpoint_sequential_and_non_tensor_inputs():
    model = mlp(width=8, depth=6)
    x, y = data(n=5, width=8)
    x.requires_grad_(True)
    loss0, grads0, _ = run_step(model, lambda x, y: F.cross_entropy(model(x), y), x, y)
    gx0 = x.grad.data.copy()
    loss1, grads1, _ = run_step(
        model, lambda x, y: F.cross_entropy(checkpoint_sequential(model, 3, x), y), x, y)
    assert loss0 == loss1 and np.array_equal(gx0, x.grad.data)
    assert all(np.array_equal(a, b) for a, b in zip(grads0, grads1))
    scaled = checkpoint(lambda h, k: h * k, x, 2.5)
    (g,) = cr.grad(scaled.sum(), x)
    assert np.array_equal(g.data, np.full(x.shape, 2.5, np.float32))


def test_checkpoint_errors_and_no_grad():
    lin = nn.Linear(2, 2)
    x = cr.randn(3, 2)
    with cr.no_grad():
        out = checkpoint(lin, x)
    assert out.grad_fn is None and np.array_equal(out.data, lin(x).data)
    hidden = lin(x)  # requires grad, not a leaf, not an input: not allowed
    with pytest.raises(cr.ArgumentError, match="pass it as an input"):
        checkpoint(lambda h: h + hidden, x)
    with pytest.raises(cr.ArgumentError, match="one Tensor"):
        checkpoint(lambda h: (lin(h), h), x)
    out = checkpoint(lin, x).sum()
    with pytest.raises(cr.GraphError, match="create_graph"):
        cr.grad(out, lin.weight, create_graph=True)


def test_grad_wrt_a_non_leaf_keeps_its_node_for_a_later_backward():
    """Engine fix found while writing checkpoint: cr.grad(z, y) for a non-leaf y used to run
    (and free) y's own node, so a later backward through y failed. PyTorch keeps it."""
    x = cr.tensor([0.5, -1.0, 2.0], dtype=cr.float64, requires_grad=True)
    y = (x * 2).exp()
    (g,) = cr.grad((y * 3).sum(), y)
    assert np.array_equal(g.data, np.full(3, 3.0))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * np.exp(2 * x.data), rtol=1e-12)
