"""TrainingHealth: its numbers against independent computations, a verdict for each sickness
(saturation, dead units, vanishing and exploding gradients, update ratios), "healthy" for a
normal network, the plot, and `chainrule train --health`."""
import subprocess
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.diagnostics import TrainingHealth
from chainrule.nn import functional as F

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def moons(n=256):
    sklearn = pytest.importorskip("sklearn.datasets")
    X, y = sklearn.make_moons(n, noise=0.2, random_state=0)
    return X.astype(np.float32), y.astype(np.int64)


def train(model, optimizer, epochs=2, batch_size=64, n=256, val=False):
    X, y = moons(n)
    health = TrainingHealth(model)
    cr.fit(model, (X, y), (X[:64], y[:64]) if val else None, optimizer=optimizer, epochs=epochs,
           batch_size=batch_size, callbacks=[health], progress=False)
    return health


def scale_(model, factor):
    with cr.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


def test_recorded_numbers_match_an_independent_computation():
    """One full batch, one epoch, plain SGD: the gradient norm is ||dL/dW|| at the start, the
    update ratio is lr ||dL/dW|| / ||W||, the dead fraction is that of the training batch
    (validation passes are not counted)."""
    X, y = moons(128)
    cr.manual_seed(0)
    model = nn.MLP([2, 16, 16, 2])
    with cr.no_grad():
        model.layers[2].bias.sub_(0.6)  # some dead units in layers.3
    w0 = {n: p.data.astype(np.float64) for n, p in model.named_parameters()}
    loss = F.cross_entropy(model(cr.tensor(X)), cr.tensor(y))
    loss.backward()
    grads = {n: p.grad.data.astype(np.float64) for n, p in model.named_parameters()}
    h1 = model.layers[1](model.layers[0](cr.tensor(X))).data
    h3 = model.layers[3](model.layers[2](cr.tensor(h1))).data
    model.zero_grad()

    lr = 0.05
    health = train(model, cr.optim.SGD(model.parameters(), lr), epochs=1, batch_size=128, n=128,
                   val=True)
    assert health.history["epoch"] == [1]
    for layer in ("layers.0", "layers.2", "layers.4"):
        g, w = grads[f"{layer}.weight"], w0[f"{layer}.weight"]
        assert health.last("grad_norm")[layer] == pytest.approx(np.linalg.norm(g), rel=1e-5)
        assert health.last("update_ratio")[layer] == pytest.approx(
            lr * np.linalg.norm(g) / np.linalg.norm(w), rel=1e-3)
    dead1, dead3 = (np.all(h <= 0, axis=0).mean() for h in (h1, h3))
    assert health.last("dead") == {"layers.1": dead1, "layers.3": dead3}
    assert dead3 > 0
    assert not any(m._forward_hooks for m in model.modules())  # removed at the end


def test_healthy_network():
    cr.manual_seed(0)
    model = nn.MLP([2, 32, 32, 2])
    health = train(model, cr.optim.Adam(model.parameters(), 1e-3), epochs=3)
    assert health.verdict() == "healthy" and health.findings() == []
    cr.manual_seed(0)
    model = nn.MLP([2, 32, 32, 2], activation="tanh")
    assert train(model, cr.optim.Adam(model.parameters(), 1e-3)).verdict() == "healthy"


def test_saturated_sigmoids():
    cr.manual_seed(0)
    model = scale_(nn.MLP([2, 32, 32, 2], activation="sigmoid"), 30.0)
    health = train(model, cr.optim.SGD(model.parameters(), 1e-3))
    saturated = health.last("saturated")
    assert set(saturated) == {"layers.1", "layers.3"} and min(saturated.values()) > 0.5
    assert "saturated units" in health.verdict()
    assert f"{saturated['layers.1']:.0%} of layers.1's outputs" in health.verdict()


def test_dead_relus():
    cr.manual_seed(0)
    model = nn.MLP([2, 32, 32, 2])
    with cr.no_grad():
        model.layers[2].bias.fill_(-10.0)
    health = train(model, cr.optim.SGD(model.parameters(), 1e-3))
    assert health.last("dead")["layers.3"] == 1.0 and health.last("dead")["layers.1"] < 0.5
    verdict = health.verdict()
    assert "dead units: 100% of layers.3's ReLUs never fire" in verdict
    assert "layers.1's" not in verdict
    assert "vanishing gradients: layers.0, layers.2 get no gradient at all" in verdict


def test_vanishing_gradients_in_a_deep_tanh_net_with_tiny_init():
    cr.manual_seed(0)
    model = scale_(nn.MLP([2] + [32] * 8 + [2], activation="tanh"), 0.1)
    health = train(model, cr.optim.SGD(model.parameters(), 1e-2))
    norms = health.last("grad_norm")
    assert norms["layers.0"] < 1e-6 * norms["layers.16"]
    assert "vanishing gradients: layer layers.0 gradient norm" in health.verdict()
    assert "of the last layer's (layers.16)" in health.verdict()


def test_exploding_gradients_and_update_ratios():
    cr.manual_seed(0)
    model = scale_(nn.MLP([2] + [32] * 8 + [2], activation="identity"), 6.0)
    health = train(model, cr.optim.SGD(model.parameters(), 1e-9), epochs=1)
    assert max(health.last("grad_norm").values()) > 1e3
    verdict = health.verdict()
    assert "exploding gradients" in verdict and "too small" in verdict
    cr.manual_seed(0)
    model = nn.MLP([2, 16, 2])
    health = train(model, cr.optim.Adam(model.parameters(), 0.5), epochs=1)
    assert max(health.last("update_ratio").values()) > 5e-2
    assert "too large" in health.verdict() and "lower the learning rate" in health.verdict()


def test_plot_and_checkpointed_state(tmp_path):
    pytest.importorskip("matplotlib")
    cr.manual_seed(0)
    model = nn.MLP([2, 8, 2], activation="tanh")
    health = train(model, cr.optim.Adam(model.parameters(), 1e-3))
    path = cr.viz.plot_health(health, str(tmp_path / "health.png"))
    assert open(path, "rb").read(8) == PNG_SIGNATURE
    other = TrainingHealth(model)
    other.load_state_dict(health.state_dict())
    assert other.history == health.history and other.verdict() == health.verdict()


def test_cli_health_flag(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("safetensors")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "chainrule", "train", "--data", "moons", "--hidden",
                        "16,16", "--epochs", "2", "--health", "--no-plots", "--quiet", "--out",
                        str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "training health: healthy" in p.stdout
    assert (out / "health.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "health.png" in p.stdout.splitlines()[-1]
    info = subprocess.run([sys.executable, "-m", "chainrule", "info", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "bytes per sample" in info.stdout
