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
