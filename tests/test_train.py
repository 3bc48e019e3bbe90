"""The training loop: History contents, metrics, bit-exact resume, NaN stops, early stopping,
Ctrl-C, progress output, and evaluate/predict in eval mode."""
import gc
import io
import math
import sys
import weakref

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.data import DataLoader, TensorDataset, load_dataset
from chainrule.nn import functional as F
from chainrule.ops import blas
from chainrule.optim.lr_scheduler import StepLR
from chainrule.train import (CHECKPOINT, Callback, EarlyStopping, TrainingError, evaluate, fit,
                             predict)

HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "train_f1", "val_loss", "val_accuracy",
                "val_f1", "lr", "seconds", "samples_per_s"}


@pytest.fixture(scope="module")
def moons():
    s = load_dataset("moons", seed=0)  # 700 train / 150 validation / 150 test, float32 X
    return (s.X_train, s.y_train), (s.X_val, s.y_val)


@pytest.fixture
def float64():
    old = cr.get_default_dtype()
    cr.set_default_dtype(np.float64)
    try:
        yield
    finally:
        cr.set_default_dtype(old)


def mlp(seed=0, dropout=0.0, hidden=16):
    cr.manual_seed(seed)
    return nn.MLP([2, hidden, 2], dropout=dropout)


def weights(model):
    return {k: v.data.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), f"{k} differs (max {np.abs(a[k] - b[k]).max()})"


class Record(Callback):
    """Copies of the weights at the end of each epoch, keyed by epoch."""

    def __init__(self):
        self.at = {}

    def on_epoch_end(self, run):
        self.at[run.epoch] = weights(run.model)


# ---- History and metrics -------------------------------------------------------------------
def test_history_columns_and_values(moons):
    train, val = moons
    model = mlp()
    opt = cr.optim.Adam(model.parameters(), lr=0.01)
    h = fit(model, train, val, optimizer=opt, epochs=6, batch_size=32, metrics=("accuracy", "f1"),
            progress=False)
    assert set(h) == HISTORY_KEYS
    assert h["epoch"] == [1, 2, 3, 4, 5, 6]
    assert all(len(v) == 6 for v in h.values())
    assert h["lr"] == [0.01] * 6
    assert h.interrupted is False
    for seconds, rate in zip(h["seconds"], h["samples_per_s"]):
        assert seconds > 0
        assert rate == pytest.approx(len(train[0]) / seconds, rel=1e-9)
    # moons is learnable: the loss falls a lot and accuracy rises
    assert h["train_loss"][-1] < 0.6 * h["train_loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert h["val_accuracy"][-1] > 0.85
    # the validation numbers are those of the final weights, recomputed by hand
    X, y = val
    scores = predict(model, X)
    assert h["val_accuracy"][-1] == pytest.approx(np.mean(scores.argmax(1) == y), abs=1e-12)
    ce = F.cross_entropy(cr.tensor(scores), cr.tensor(y)).item()
    assert h["val_loss"][-1] == pytest.approx(ce, rel=1e-5)
    sk = pytest.importorskip("sklearn.metrics")
    assert h["val_f1"][-1] == pytest.approx(sk.f1_score(y, scores.argmax(1), average="macro"),
                                            abs=1e-12)


def test_train_metrics_weight_every_sample(moons):
    """With lr 0 the weights never move, so the epoch's train loss/accuracy must equal the
    full-data values: a sample-weighted mean over batches (700 = 21 * 32 + 28)."""
    train, _ = moons
    model = mlp(seed=3)
    opt = cr.optim.SGD(model.parameters(), lr=0.0)
    h = fit(model, train, epochs=1, batch_size=32, optimizer=opt, progress=False)
    X, y = train
    scores = predict(model, X)
    assert h["train_loss"][0] == pytest.approx(
        F.cross_entropy(cr.tensor(scores), cr.tensor(y)).item(), rel=1e-5)
    assert h["train_accuracy"][0] == pytest.approx(np.mean(scores.argmax(1) == y), abs=1e-12)
    assert "val_loss" not in h


def test_regression_loss_and_metrics_inferred():
    cr.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (256, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
    model = nn.MLP([3, 1])
    opt = cr.optim.Adam(model.parameters(), lr=0.05)
    h = fit(model, (X, y), (X, y), optimizer=opt, epochs=30, batch_size=32,
            metrics=("mse", "mae", "r2"), progress=False)
    pred = predict(model, X)
    assert h["val_mse"][-1] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)
    assert h["val_loss"][-1] == pytest.approx(h["val_mse"][-1], rel=1e-5)  # MSE was inferred
    assert h["val_mae"][-1] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-5)
    assert h["val_r2"][-1] > 0.99


# ---- resume, bit for bit -----------------------------------------------------------------------
def _float64_data(moons, n=240):
    (X, y), (Xv, yv) = moons
    return (X[:n].astype(np.float64), y[:n]), (Xv.astype(np.float64), yv)


def _setup(seed):
    cr.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    opt = cr.optim.Adam(model.parameters(), lr=0.02)
    sched = StepLR(opt, step_size=3, gamma=0.7)
    # the second one's best epoch is known (1), so losing its state on resume would show
    stops = [EarlyStopping("val_loss", patience=100), EarlyStopping("epoch", mode="min", patience=100)]
    return model, opt, sched, stops


@pytest.mark.parametrize("as_loader", [False, True], ids=["tuple", "dataloader-with-generator"])
def test_resume_is_bit_for_bit(moons, float64, tmp_path, as_loader):
    train, val = _float64_data(moons)

    def data():
        if as_loader:
            return DataLoader(TensorDataset(*train), batch_size=24, shuffle=True,
                              generator=cr.Generator(7))
        return train

    kw = dict(epochs=4, batch_size=24, progress=False)
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"

    model, opt, sched, full_stops = _setup(0)
    assert model[0].weight.dtype == np.float64
    record = Record()
    full = fit(model, data(), val, optimizer=opt, scheduler=sched,
               callbacks=[record, *full_stops], checkpoint_dir=str(full_dir), **kw)
    full_weights = weights(model)
    assert_same_weights(full_weights, record.at[1])  # restored by the "epoch" EarlyStopping

    model, opt, sched, stops = _setup(0)
    first = fit(model, data(), val, optimizer=opt, scheduler=sched, callbacks=stops,
                checkpoint_dir=str(part_dir), **dict(kw, epochs=2))
    assert first["epoch"] == [1, 2]
    # a "new process": other global random state, other initial weights, fresh objects
    cr.manual_seed(12345)
    cr.randn(100)
    model, opt, sched, stops = _setup(99)
    resumed = fit(model, data(), val, optimizer=opt, scheduler=sched, callbacks=stops,
                  checkpoint_dir=str(part_dir), resume=True, **kw)

    assert_same_weights(weights(model), full_weights)
    for key in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr"):
        assert resumed[key] == full[key], key
    assert full["lr"] == pytest.approx([0.02, 0.02, 0.02, 0.02 * 0.7], rel=1e-12)
    for a, b in zip(stops, full_stops):
        assert (a.best, a.best_epoch, a.wait) == (b.best, b.best_epoch, b.wait)
    # the last-epoch states in both checkpoints agree too (EarlyStopping may have restored
    # the best epoch in memory; the checkpoints hold epoch 4 itself)
    a, b = cr.load(full_dir / CHECKPOINT), cr.load(part_dir / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 4
    assert_same_weights({k: v.data for k, v in a["model"].items()},
                        {k: v.data for k, v in b["model"].items()})


def test_resume_without_checkpoint_is_an_error(tmp_path, moons):
    model = mlp()
    with pytest.raises(TrainingError, match="no checkpoint"):
        fit(model, moons[0], epochs=1, checkpoint_dir=str(tmp_path), resume=True, progress=False)


def test_predict_keeps_float64(float64):
    model = nn.MLP([2, 8, 2])
    X = np.random.default_rng(0).normal(size=(5, 2))
    out = predict(model, X)
    assert out.dtype == np.float64
    with cr.no_grad():
        assert np.array_equal(out, model(cr.tensor(X)).data)


# ---- NaN / Inf -----------------------------------------------------------------------------------
def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(moons, tmp_path):
    train, val = moons
    steps_per_epoch = math.ceil(len(train[0]) / 64)
    calls = []

    def loss(out, y):  # NaN on the 2nd training step of epoch 3 (validation runs under no_grad)
        value = F.cross_entropy(out, y)
        if cr.is_grad_enabled():
            calls.append(1)
            if len(calls) == 2 * steps_per_epoch + 2:
                return value * float("nan")
        return value

    model = mlp()
    record = Record()
    with pytest.raises(TrainingError, match=r"epoch 3, step 2") as info:
        fit(model, train, val, loss=loss, epochs=5, batch_size=64, callbacks=[record],
            checkpoint_dir=str(tmp_path), progress=False)
    assert "nan" in str(info.value) and str(tmp_path) in str(info.value)
    state = cr.load(tmp_path / CHECKPOINT)
    assert state["epoch"] == 2
    assert len(state["history"]["epoch"]) == 2
    fresh = mlp(seed=5)
    fresh.load_state_dict(state["model"])
    assert_same_weights(weights(fresh), record.at[2])


def test_huge_learning_rate_stops_in_epoch_one(moons, tmp_path):
    model = mlp()
    opt = cr.optim.Adam(model.parameters(), lr=1e30)
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"epoch 1, step \d+"):
        fit(model, moons[0], optimizer=opt, epochs=3, batch_size=64,
            checkpoint_dir=str(tmp_path), progress=False)
    assert not (tmp_path / CHECKPOINT).exists()  # nothing good to keep yet


def test_weights_broken_by_the_last_step_are_never_checkpointed(moons, tmp_path):
    """The loss is checked before each step, so the epoch's last update is checked at the
    epoch end: a checkpoint with NaN weights would not be a 'last good' one."""
    train, val = moons
    last = math.ceil(len(train[0]) / 64)

    class Poison(Callback):
        def on_after_backward(self, run):
            if run.epoch == 2 and run.step == last:
                for p in run.model.parameters():
                    p.grad.data[...] = np.nan

    model = mlp()
    record = Record()
    opt = cr.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match=f"epoch 2, step {last}"):
        fit(model, train, val, optimizer=opt, epochs=4, batch_size=64, callbacks=[record, Poison()],
            checkpoint_dir=str(tmp_path), progress=False)
    state = cr.load(tmp_path / CHECKPOINT)
    assert state["epoch"] == 1
    assert all(np.isfinite(v.data).all() for v in state["model"].values())
    assert_same_weights({k: v.data for k, v in state["model"].items()}, record.at[1])


# ---- early stopping -----------------------------------------------------------------------------
def test_early_stopping_on_a_plateau_restores_best_weights(moons):
    train, val = moons
    model = mlp(hidden=8)
    opt = cr.optim.Adam(model.parameters(), lr=0.05)
    record = Record()
    stop = EarlyStopping("val_loss", patience=3, min_delta=0.01)
    h = fit(model, train, val, optimizer=opt, epochs=200, batch_size=64,
            callbacks=[record, stop], progress=False)
    n = len(h["epoch"])
    assert n < 200, "never stopped"
    best = stop.best_epoch
    assert n == best + 3  # three epochs without an improvement of min_delta
    assert stop.best == h["val_loss"][best - 1]
    # the best epoch really was the last one to improve by more than min_delta
    running = h["val_loss"][0]
    for epoch, v in enumerate(h["val_loss"][1:], 2):
        if v < running - 0.01:
            running, last_improved = v, epoch
    assert best == last_improved
    assert_same_weights(weights(model), record.at[best])
    assert not all(np.array_equal(record.at[n][k], record.at[best][k]) for k in record.at[n])


def test_early_stopping_monitors_higher_is_better_metrics():
    scores = iter([0.5, 0.7, 0.69, 0.704, 0.70, 0.70])

    class Fake(Callback):  # writes a made-up validation accuracy into the history
        def on_epoch_end(self, run):
            run.history["val_accuracy"][-1] = next(scores)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 2)).astype(np.float32), rng.integers(0, 2, 32)
    record = Record()
    stop = EarlyStopping("val_accuracy", patience=2, min_delta=0.005)
    h = fit(mlp(), (X, y), (X, y), epochs=6, callbacks=[Fake(), record, stop], progress=False)
    assert stop.higher and stop.best == 0.7 and stop.best_epoch == 2
    assert h["epoch"] == [1, 2, 3, 4]


# ---- Ctrl-C --------------------------------------------------------------------------------------
def test_keyboard_interrupt_keeps_the_last_epoch_checkpoint(moons, tmp_path, capsys):
    train, val = moons

    class CtrlC(Callback):
        def on_after_backward(self, run):
            if run.epoch == 2 and run.step == 3:
                raise KeyboardInterrupt

    model = mlp()
    record = Record()
    h = fit(model, train, val, epochs=5, batch_size=64, callbacks=[record, CtrlC()],
            checkpoint_dir=str(tmp_path))
    assert h.interrupted is True
    assert h["epoch"] == [1]
    assert "interrupted" in capsys.readouterr().out
    state = cr.load(tmp_path / CHECKPOINT)
    assert state["epoch"] == 1
    assert_same_weights({k: v.data for k, v in state["model"].items()}, record.at[1])
    # and the run continues from it
    model = mlp(seed=1)
    h = fit(model, train, val, epochs=2, batch_size=64, checkpoint_dir=str(tmp_path), resume=True,
            progress=False)
    assert h["epoch"] == [1, 2] and not h.interrupted


# ---- progress output -----------------------------------------------------------------------------
def test_one_line_per_epoch_when_not_a_terminal(moons, capsys):
    train, val = moons
    fit(mlp(), train, val, epochs=3, batch_size=128)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        for word in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                     "samples/s"):
            assert word in line
    assert err == ""


def test_no_output_without_progress(moons, capsys):
    train, val = moons
    fit(mlp(), train, val, epochs=2, batch_size=128, progress=False)
    assert capsys.readouterr() == ("", "")


def test_live_bar_on_a_terminal(moons, monkeypatch, capsys):
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    fit(mlp(), moons[0], epochs=2, batch_size=128, progress=True)
    text = term.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "loss=" in text and "samples_s=" in text
    assert capsys.readouterr().out.count("epoch ") == 2  # plus the one summary line per epoch


# ---- evaluate / predict ----------------------------------------------------------------------------
def test_evaluate_and_predict_in_eval_mode_under_no_grad(moons):
    _, (X, y) = moons
    model = mlp(dropout=0.5, hidden=64)
    model.train()
    seen = []

    def loss(out, target):
        seen.append((cr.is_grad_enabled(), out.requires_grad))
        return F.cross_entropy(out, target)

    a, b = predict(model, X), predict(model, X)
    assert np.array_equal(a, b)  # Dropout inactive
    r1 = evaluate(model, (X, y), loss=loss, batch_size=64)
    r2 = evaluate(model, (X, y), loss=loss, batch_size=64)
    assert r1 == r2
    assert seen and all(s == (False, False) for s in seen)
    assert model.training  # the mode is put back
    assert r1["accuracy"] == pytest.approx(np.mean(a.argmax(1) == y), abs=1e-12)
    assert r1["loss"] == pytest.approx(F.cross_entropy(cr.tensor(a), cr.tensor(y)).item(), rel=1e-5)
    with cr.no_grad():
        train_mode = model(cr.tensor(X)).data
    assert not np.array_equal(train_mode, a)  # Dropout was live in training mode
    model.eval()
    assert np.array_equal(predict(model, X), a)
    assert not model.training


class Batches(cr.data.Dataset):
    """A TensorDataset that remembers (weakly) every input batch it hands out."""

    def __init__(self, X, y):
        self.inner, self.handed = cr.data.TensorDataset(X, y), []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]

    def __getitems__(self, indices):
        x, y = self.inner.__getitems__(indices)
        self.handed.append(weakref.ref(x.data))
        return x, y


def test_fit_releases_the_input_batch_before_the_optimizer_step():
    rng = np.random.default_rng(0)
    data = Batches(rng.standard_normal((24, 5), dtype=np.float32), rng.integers(0, 3, 24))
    alive_at_step = []

    class Probe(cr.train.Callback):
        def on_after_backward(self, run):  # backward is done; the step comes next
            gc.collect()
            alive_at_step.append(data.handed[-1]() is not None)

    model = cr.nn.MLP([5, 4, 3])
    cr.fit(model, data, loss="cross_entropy", optimizer=cr.optim.SGD(model.parameters(), lr=0.1),
           epochs=2, batch_size=8, progress=False, generator=cr.Generator(0), callbacks=[Probe()])
    assert alive_at_step == [False] * 6


def test_epoch_rows_grow_keep_order_and_refuse_another_shape():
    from chainrule.train import _Rows
    for expected in (0, 7, 1000):  # the row count fit expects: too few, or enough
        rows = _Rows(expected)
        for k in range(1, 6):
            rows.add(np.full((k, 2), k, np.float32))
        assert rows.all().shape == (15, 2) and list(rows.all()[:, 0]) == [
            k for k in range(1, 6) for _ in range(k)]
        assert len(rows.array) == (1000 if expected == 1000 else 20)  # made once when enough
        with pytest.raises(cr.ShapeError, match="collecting batch rows"):
            rows.add(np.zeros((2, 1), np.float32))


def test_fit_updates_large_sgd_weights_inside_backward_unless_a_callback_reads_gradients():
    """cr.fit steps through backward_and_step: the weights of backward(); step() (to rounding),
    without the large weight's .grad; a callback's on_after_backward still sees every gradient."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((48, 600), dtype=np.float32), rng.integers(0, 3, 48)

    def train(*callbacks):
        cr.manual_seed(0)
        model = cr.nn.MLP([600, 256, 3])  # W1: 153,600 elements, over optim's SINK_MIN
        cr.fit(model, (X, y), loss="cross_entropy", epochs=2, batch_size=16, progress=False,
               optimizer=cr.optim.SGD(model.parameters(), lr=0.1), generator=cr.Generator(0),
               callbacks=callbacks)
        return model

    seen = []

    class Reader(cr.train.Callback):
        def on_after_backward(self, run):
            seen.append(all(p.grad is not None for p in run.model.parameters()))

    reader = cr.train.Callback()  # the hook set on an instance counts too
    reader.on_after_backward = Reader().on_after_backward
    a, b = train(), train(reader)
    assert (a.layers[0].weight.grad is None) == blas.AVAILABLE
    assert a.layers[0].bias.grad is not None
    assert seen == [True] * 6 and b.layers[0].weight.grad is not None
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-6)
