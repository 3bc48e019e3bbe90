"""Every example script runs (main(quick=True, out=tmp_path)) and shows what it claims."""
import importlib.util
import pathlib

import numpy as np
import pytest

import chainrule as cr

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run(name, tmp_path):
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.main(quick=True, out=str(tmp_path))


def pngs(tmp_path):
    return {p.name for p in tmp_path.glob("*.png") if p.stat().st_size > 1000}


def test_every_numbered_example_is_tested():
    tested = {"01", "02", "03", "04", "05", "06", "07", "08"}
    assert {p.name[:2] for p in EXAMPLES.glob("[0-9][0-9]_*.py")} <= tested


def test_01_linear_model_two_ways_agree_and_linear_classifier_fails(tmp_path):
    module, r = run("01_linear_model.py", tmp_path)
    assert r["max_diff"] < r["tolerance"] == module.TOLERANCE == 1e-3
    assert r["max_diff"] > 0  # two different computations, not one copied
    np.testing.assert_allclose(r["W_gd"], r["W_closed"], atol=1e-3)
    assert r["accuracy"]["circles"] < 0.7  # no straight line separates a circle in a circle
    assert 0.75 < r["accuracy"]["moons"] < 0.95
    assert {"01_linear_loss.png", "01_linear_moons.png", "01_linear_circles.png"} <= pngs(tmp_path)


def test_02_softmax_stable_naive_classic_values(tmp_path):
    _, r = run("02_softmax.py", tmp_path)
    assert np.isnan(r["naive"]).all() and np.isfinite(r["stable"]).all()
    np.testing.assert_allclose(r["stable"].sum(), 1.0)
    np.testing.assert_allclose(r["probs"][:2], [[0.2447, 0.6652, 0.0900], [0.0900, 0.2447, 0.6652]],
                               atol=5e-5)  # the values as printed to 4 decimals
    np.testing.assert_allclose(r["probs"][2], [2.0611e-9, 4.5398e-5, 0.99995], rtol=1e-4)
    assert r["predicted"].tolist() == [1, 2, 2]
    assert r["one_hot"].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 1]]
    assert "02_softmax.png" in pngs(tmp_path)


def test_03_autograd_derivatives_equal_finite_differences(tmp_path):
    module, r = run("03_activations.py", tmp_path)
    assert len(r) == 8
    eps = 1e-6
    for name, (x, y, dy) in r.items():
        f = module.ACTIVATIONS[name]
        with cr.no_grad():
            fd = (f(cr.tensor(x + eps)).numpy() - f(cr.tensor(x - eps)).numpy()) / (2 * eps)
        away_from_kinks = np.abs(x) > 1e-3
        np.testing.assert_allclose(dy[away_from_kinks], fd[away_from_kinks], atol=1e-6,
                                   err_msg=name)
    x, y, dy = r["sigmoid"]
    np.testing.assert_allclose(dy, y * (1 - y), atol=1e-12)  # and the textbook formula
    assert "03_activations.png" in pngs(tmp_path)


def test_04_mlp_solves_moons_and_a_linear_stack_is_one_linear_map(tmp_path):
    _, r = run("04_mlp.py", tmp_path)
    assert r["accuracy"]["moons"] > 0.95
    assert r["accuracy"]["circles"] > 0.95
    assert r["linear_stack_max_diff"] < r["tolerance"]
    assert {"04_mlp_moons.png", "04_mlp_circles.png"} <= pngs(tmp_path)


def test_05_backprop_graph_explain_three_ways(tmp_path):
    _, r = run("05_backprop.py", tmp_path)
    assert 'color="blue"' in r["dot"] and 'color="red"' in r["dot"]
    assert "Linear" in r["dot"] and "ReLU" in r["dot"] and "SoftmaxCrossEntropy" in r["dot"]
    np.testing.assert_array_equal(r["explained"], r["autograd"])
    assert np.abs(r["autograd"]).max() > 0
    (n, comparison), = r["comparisons"].items()
    assert n == 2 * 3 + 3 + 3 * 2 + 2
    diffs = comparison.max_difference()
    assert diffs["finite-differences"] < 1e-8 and diffs["forward-mode"] < 1e-12
    assert comparison["reverse-mode"].evaluations == 1
    assert comparison["finite-differences"].evaluations == 2 * n
    assert (tmp_path / "05_graph.dot").exists()


def test_06_memory_ledger_and_checkpointing(tmp_path):
    _, r = run("06_memory.py", tmp_path)
    # the quick net, 64-(64 x 8)-10 on a batch of 32 in float32: backward needs the input of
    # the first Linear, the 8 ReLU outputs (each also the next Linear's input), and the softmax
    # and the logits that the fused cross-entropy saves
    assert r["saved_bytes"] == 32 * 64 * 4 + 8 * 32 * 64 * 4 + 2 * 32 * 10 * 4
    assert r["no_grad_saved_bytes"] == 0
    assert r["checkpointed_saved_bytes"] < r["saved_bytes"] and r["factor"] > 1.5
    assert r["same_gradients"]
    assert "06_memory.png" in pngs(tmp_path)


def test_07_depth_vs_width(tmp_path):
    _, r = run("07_depth_vs_width.py", tmp_path)
    targets = r["targets"]
    assert len(targets) == 3
    for entry in targets.values():
        for family, rows in entry["families"].items():
            assert [row["params"] for row in rows] == sorted(row["params"] for row in rows)
            assert all(np.isfinite(row["loss"]) and row["loss"] >= 0 for row in rows)
            reached = [row["params"] for row in rows if row["loss"] <= r["settings"]["threshold"]]
            assert entry["params_to_reach"][family] == (min(reached) if reached else None)
    wide = targets["|x|"]["families"]["wide: 1 hidden layer"]
    assert wide[0]["hidden"] == [4] and wide[0]["params"] == 3 * 4 + 1
    assert {"07_depth_vs_width.png", "07_depth_vs_width_fits.png"} <= pngs(tmp_path)


def test_08_training_health_verdicts(tmp_path):
    _, r = run("08_training_health.py", tmp_path)
    v = r["verdicts"]
    assert v["healthy"] == "healthy" and r["accuracy"]["healthy"] > 0.9
    assert "vanishing gradients" in v["vanishing"]
    assert "dead units" in v["dead"]
    assert {f"08_health_{k}.png" for k in v} <= pngs(tmp_path)


def test_experiment_command_line(tmp_path, capsys):
    from chainrule.cli import main
    assert main(["experiment", "depth-vs-width", "--quick", "--out", str(tmp_path)]) == 0
    assert "fewest parameters reaching" in capsys.readouterr().out
    assert (tmp_path / "depth_vs_width.json").exists()
    assert {"depth_vs_width.png", "depth_vs_width_fits.png"} <= pngs(tmp_path)
