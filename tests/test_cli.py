"""The `chainrule` command line end to end, each command in a subprocess: train / evaluate /
predict / info / datasets / plot, regression, a CSV with string labels, every bad input
(one line on stderr, exit status 2, outputs untouched), resume after SIGKILL, Ctrl-C."""
import csv
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

import chainrule as cr

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("safetensors")

from chainrule.data import DATASETS, load_dataset  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("model.safetensors", "config.json", "metrics.json", "history.csv")


def chainrule(*args, cwd, timeout=180):
    return subprocess.run([sys.executable, "-m", "chainrule", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def ok(*args, cwd):
    p = chainrule(*args, cwd=cwd)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def one_line_error(p, *fragments, status=2):
    """Exactly one line on stderr, no traceback, the given exit status and message parts."""
    assert p.returncode == status, f"exit {p.returncode}, stderr:\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{p.stderr}"
    assert "Traceback" not in p.stderr and "Warning" not in p.stderr
    assert lines[0].startswith("chainrule:")
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder):
    """name -> (sha256, mtime_ns) of every file in `folder`."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            out[name] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def tensors(path):
    return {k: v.data for k, v in cr.load(path).items()}


def assert_valid_png(path, min_bytes=5000):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 200 and height >= 200, (width, height)
    assert len(raw) > min_bytes, f"{path}: only {len(raw)} bytes"
    import matplotlib.image
    assert matplotlib.image.imread(path).std() > 0.01  # not a blank canvas


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_csv(text):
    rows = list(csv.reader(text.splitlines()))
    return rows[0], rows[1:]


def parse_metrics(line):
    """'... loss 0.0125  accuracy 0.9933  f1 0.9933' -> {'loss': '0.0125', ...}"""
    words = line.replace(":", " ").split()
    return {k: v for k, v in zip(words, words[1:])}


# ---- one trained run on moons, shared ----------------------------------------------------------
@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("moons")
    p = ok("train", "--data", "moons", "--epochs", "30", "--seed", "0", "--out", "run", cwd=cwd)
    return cwd, cwd / "run", p


@pytest.fixture
def good_run(moons_run, tmp_path):
    """A private copy of the trained moons run (same bytes and mtimes)."""
    shutil.copytree(moons_run[1], tmp_path / "run", copy_function=shutil.copy2)
    return tmp_path / "run"


def test_train_writes_model_config_metrics_history_and_plots(moons_run):
    _, run, p = moons_run
    for name in OUTPUTS + ("checkpoint.safetensors",):
        assert (run / name).is_file(), name
    for name in ("loss.png", "accuracy.png", "f1.png", "decision_boundary.png",
                 "confusion_matrix.png"):
        assert_valid_png(run / name)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 30
    assert metrics["test"]["accuracy"] > 0.9
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "classification"
    assert config["model"]["sizes"] == [2, 128, 64, 2]
    assert config["class_names"] == ["0", "1"] and config["feature_names"] == ["x0", "x1"]
    assert len(config["standardizer"]["mean"]) == 2
    with open(run / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == list(range(1, 31))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(history[0])
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    # stdout: a concise line per epoch (not a terminal), then the test metrics and the files
    assert sum(line.startswith("epoch ") for line in p.stdout.splitlines()) == 30
    test_line = next(line for line in p.stdout.splitlines() if line.startswith("test "))
    assert parse_metrics(test_line)["accuracy"] == f"{metrics['test']['accuracy']:.4f}"
    assert "wrote model.safetensors" in p.stdout
    # the saved model is a plain state_dict with PyTorch's names
    assert sorted(tensors(run / "model.safetensors")) == [
        "layers.0.bias", "layers.0.weight", "layers.2.bias", "layers.2.weight",
        "layers.4.bias", "layers.4.weight"]


def test_evaluate_prints_the_same_test_accuracy(moons_run):
    cwd, run, _ = moons_run
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    p = ok("evaluate", "run", cwd=cwd)
    got = parse_metrics(p.stdout.strip().splitlines()[-1])
    assert "150 samples" in p.stdout
    for key in ("loss", "accuracy", "f1"):
        assert got[key] == f"{metrics[key]:.4f}", key


def test_predict_class_and_probabilities(moons_run, tmp_path):
    cwd, run, _ = moons_run
    splits = load_dataset("moons", seed=0)
    X, y = splits.X_test[:40], splits.y_test[:40]
    write_csv(tmp_path / "in.csv", ["x0", "x1"], X.tolist())
    p = ok("predict", run, tmp_path / "in.csv", cwd=cwd)
    header, rows = read_csv(p.stdout)
    assert header == ["class", "prob_0", "prob_1"]
    assert len(rows) == len(X)
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    classes = np.array([int(r[0]) for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=2e-6)
    assert np.array_equal(classes, probs.argmax(1))
    assert np.mean(classes == y) > 0.9
    # the same numbers as the model run in this process (standardised with the saved statistics)
    from chainrule.cli import RunFolder
    scores = RunFolder(str(run)).scores(X)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=2e-6)
    # -o writes the same table to a file
    p = ok("predict", run, tmp_path / "in.csv", "-o", tmp_path / "out.csv", cwd=cwd)
    assert f"wrote {len(X)} predictions" in p.stdout
    assert (tmp_path / "out.csv").read_text() == ok("predict", run, tmp_path / "in.csv",
                                                     cwd=cwd).stdout


def test_info_prints_the_parameter_count(moons_run):
    cwd, run, _ = moons_run
    count = sum(a.size for a in tensors(run / "model.safetensors").values())
    assert count == 2 * 128 + 128 + 128 * 64 + 64 + 64 * 2 + 2
    p = ok("info", "run", cwd=cwd)
    assert f"{count:,}" in p.stdout
    assert "classification on moons" in p.stdout and "Linear" in p.stdout


def test_plot_regenerates_the_figures(good_run):
    names = ("loss.png", "accuracy.png", "decision_boundary.png", "confusion_matrix.png")
    for name in names:
        (good_run / name).unlink()
    p = ok("plot", good_run, cwd=good_run.parent)
    for name in names:
        assert_valid_png(good_run / name)
        assert name in p.stdout


def test_datasets_lists_every_builtin_with_its_size(tmp_path):
    p = ok("datasets", cwd=tmp_path)
    lines = {line.split()[0]: line for line in p.stdout.splitlines() if line.strip()}
    assert set(lines) == set(DATASETS)
    sizes = {"digits": "1797 x 64", "iris": "150 x 4", "wine": "178 x 13",
             "breast_cancer": "569 x 30", "diabetes": "442 x 10", "moons": "1000 x 2",
             "sine": "1000 x 1"}
    for name, size in sizes.items():
        assert size in lines[name], lines[name]
    assert "regression" in lines["diabetes"] and "classification" in lines["digits"]


def test_console_script_and_python_m_agree(moons_run):
    cwd, _, _ = moons_run
    script = os.path.join(sysconfig.get_path("scripts"), "chainrule")
    if not os.path.exists(script):
        pytest.skip("the chainrule console script is not installed (pip install -e .)")
    a = subprocess.run([script, "info", "run"], cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert a.returncode == 0, a.stderr
    assert a.stdout == ok("info", "run", cwd=cwd).stdout
    bad = subprocess.run([script, "train", "--data", "nope"], cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    one_line_error(bad, "nope")


# ---- regression and CSV data ----------------------------------------------------------------------
def test_regression_on_sine(tmp_path):
    p = ok("train", "--data", "sine", "--epochs", "40", "--hidden", "32,32", "--lr", "0.01",
           "--no-plots", "--out", "run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "mse", "mae", "r2"}
    assert metrics["test"]["r2"] > 0.95
    assert metrics["test"]["mse"] < 0.05
    assert "r2" in p.stdout
    assert not list((tmp_path / "run").glob("*.png"))  # --no-plots
    x = np.linspace(-3, 3, 13)
    write_csv(tmp_path / "x.csv", ["x0"], [[v] for v in x])
    header, rows = read_csv(ok("predict", "run", "x.csv", cwd=tmp_path).stdout)
    assert header == ["prediction"] and len(rows) == len(x)
    assert np.abs(np.array([float(r[0]) for r in rows]) - np.sin(x)).max() < 0.3


def test_csv_with_string_labels_trains_and_predicts_class_names(tmp_path):
    from sklearn.datasets import load_iris
    iris = load_iris()
    names = [str(n) for n in iris.target_names]
    header = ["sepal_length", "sepal_width", "species", "petal_length", "petal_width"]
    rows = [[*x[:2], names[t], *x[2:]] for x, t in zip(iris.data.tolist(), iris.target)]
    write_csv(tmp_path / "flowers.csv", header, rows)
    ok("train", "--data", "flowers.csv", "--target", "species", "--epochs", "60", "--lr", "0.01",
       "--hidden", "16", "--no-plots", "--out", "run", cwd=tmp_path)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == sorted(names)
    assert config["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] > 0.8
    # predict input: the features only, or with the target column still in it
    write_csv(tmp_path / "features.csv", header[:2] + header[3:], iris.data.tolist())
    for source in ("features.csv", "flowers.csv"):
        head, out = read_csv(ok("predict", "run", source, cwd=tmp_path).stdout)
        assert head == ["class"] + [f"prob_{n}" for n in sorted(names)]
        predicted = [r[0] for r in out]
        assert set(predicted) <= set(names)
        assert np.mean(np.array(predicted) == np.array(names)[iris.target]) > 0.85


def test_forced_regression_on_a_classification_dataset(tmp_path):
    from chainrule.cli import load_data
    a, b = load_data("iris"), load_data("iris", task="regression")
    assert b.task == "regression" and b.y_train.dtype == np.float32
    for part in ("train", "val", "test"):  # the same split, only the target type changes
        assert np.array_equal(getattr(a, f"X_{part}"), getattr(b, f"X_{part}"))
        assert np.array_equal(getattr(a, f"y_{part}"), getattr(b, f"y_{part}").ravel())
    ok("train", "--data", "iris", "--task", "regression", "--epochs", "30", "--hidden", "16",
       "--lr", "0.01", "--no-plots", "--quiet", "--out", "run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert set(metrics) == {"loss", "mse", "mae", "r2"} and metrics["r2"] > 0.7


# ---- bad input: one line, exit 2, nothing in --out touched --------------------------------------
def _bad_inputs(tmp):
    write_csv(tmp / "bad.csv", ["a", "b", "label"], [[1, 2, "x"], [3, 4, "y"], [5, "oops", "x"]])
    write_csv(tmp / "three.csv", ["x0", "x1", "x2"], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    return {
        "unknown dataset": (["train", "--data", "nope", "--out", "run"], ["nope", "moons"]),
        "unknown option": (["train", "--data", "moons", "--frobnicate", "--out", "run"],
                           ["--frobnicate"]),
        "unknown activation": (["train", "--activation", "swishy", "--out", "run"], ["swishy"]),
        "malformed --hidden": (["train", "--data", "moons", "--hidden", "64,x", "--out", "run"],
                               ["--hidden", "64,x"]),
        "negative --hidden": (["train", "--data", "moons", "--hidden", "-3", "--out", "run"],
                              ["--hidden"]),
        "missing data file": (["train", "--data", "missing.csv", "--out", "run"], ["missing.csv"]),
        "non-numeric cell": (["train", "--data", "bad.csv", "--target", "label", "--out", "run"],
                             ["row 4", "column 'b'", "'oops'"]),
        "unknown command": (["fly"], ["fly"]),
        "missing run folder": (["evaluate", "nowhere"], ["nowhere"]),
        "missing predict input": (["predict", "run", "absent.csv"], ["absent.csv"]),
        "wrong feature count": (["predict", "run", "three.csv"],
                                ["three.csv", "3 feature columns", "trained on 2"]),
        "resume without a checkpoint": (["train", "--data", "moons", "--out", "fresh", "--resume"],
                                        ["--resume", "no checkpoint", "fresh"]),
    }


BAD = ["unknown dataset", "unknown option", "unknown activation", "malformed --hidden",
       "negative --hidden", "missing data file", "non-numeric cell", "unknown command",
       "missing run folder", "missing predict input", "wrong feature count",
       "resume without a checkpoint"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_outputs_untouched(good_run, case):
    cwd = good_run.parent
    args, fragments = _bad_inputs(cwd)[case]
    before = snapshot(good_run)
    one_line_error(chainrule(*args, cwd=cwd), *fragments)
    assert snapshot(good_run) == before


@pytest.mark.parametrize("command", [["evaluate", "run"], ["info", "run"], ["plot", "run"],
                                     ["predict", "run", "in.csv"]])
def test_corrupted_model_file(good_run, command):
    cwd = good_run.parent
    write_csv(cwd / "in.csv", ["x0", "x1"], [[0.0, 0.5]])
    path = good_run / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the tensor data
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    before = snapshot(good_run)
    one_line_error(chainrule(*command, cwd=cwd), "model.safetensors", "corrupted")
    assert snapshot(good_run) == before


@pytest.mark.parametrize("damage", ["not json", "no standardizer"])
def test_damaged_config(good_run, damage):
    path = good_run / "config.json"
    if damage == "not json":
        path.write_text("{ half a file")
    else:
        config = json.loads(path.read_text())
        del config["standardizer"]
        path.write_text(json.dumps(config))
    before = snapshot(good_run)
    one_line_error(chainrule("info", "run", cwd=good_run.parent), "config.json")
    assert snapshot(good_run) == before


def test_a_failed_training_never_overwrites_a_good_model(good_run):
    cwd = good_run.parent
    before = snapshot(good_run)
    p = chainrule("train", "--data", "moons", "--lr", "1e30", "--epochs", "5", "--out", "run",
                  cwd=cwd)
    line = one_line_error(p, "epoch 1, step", "not changed", status=p.returncode)
    assert p.returncode != 0 and "nan" in line.lower()
    after = snapshot(good_run)
    for name in OUTPUTS + ("loss.png", "accuracy.png", "decision_boundary.png"):
        assert after[name] == before[name], name
    assert "test accuracy" not in p.stdout
    # the good run still works
    assert "accuracy" in ok("evaluate", "run", cwd=cwd).stdout


# ---- resume after SIGKILL, Ctrl-C -----------------------------------------------------------------
DIGITS = ["train", "--data", "digits", "--epochs", "40", "--batch-size", "16", "--seed", "0",
          "--no-plots"]


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "chainrule", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    full = _start(DIGITS + ["--out", "full"], tmp_path)  # runs alongside the killed one
    killed = _start(DIGITS + ["--out", "part"], tmp_path)
    _wait_for(tmp_path / "part" / "checkpoint.safetensors", killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(60) == -signal.SIGKILL
    killed.stderr.close()
    assert not (tmp_path / "part" / "model.safetensors").exists()  # it died mid-run
    epoch = int(cr.load(tmp_path / "part" / "checkpoint.safetensors")["epoch"])
    assert 1 <= epoch < 40
    p = ok(*DIGITS, "--out", "part", "--resume", cwd=tmp_path)
    assert f"resumed from part/checkpoint.safetensors after epoch {epoch}" in p.stdout
    assert sum(line.startswith("epoch ") for line in p.stdout.splitlines()) == 40 - epoch
    assert full.wait(180) == 0, full.stderr.read()
    full.stderr.close()
    a, b = tensors(tmp_path / "full" / "model.safetensors"), tensors(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == np.float32
        assert np.array_equal(a[k], b[k]), f"{k}: max difference {np.abs(a[k] - b[k]).max()}"
    ma = json.loads((tmp_path / "full" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert ma["test"] == mb["test"] and ma["epochs_run"] == mb["epochs_run"] == 40
    with open(tmp_path / "full" / "history.csv") as fa, open(tmp_path / "part" / "history.csv") as fb:
        ha, hb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    for ra, rb in zip(ha, hb, strict=True):
        for key in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr"):
            assert ra[key] == rb[key], (ra["epoch"], key)


def test_ctrl_c_keeps_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _start(DIGITS + ["--out", "run"], tmp_path)
    _wait_for(tmp_path / "run" / "checkpoint.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    err = proc.stderr.read()
    proc.stderr.close()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "--resume" in lines[0], err
    state = cr.load(tmp_path / "run" / "checkpoint.safetensors")
    assert 1 <= int(state["epoch"]) < 40
    assert not (tmp_path / "run" / "model.safetensors").exists()
