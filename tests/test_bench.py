"""bench/: the suite runs end to end on tiny sizes and reports what it should (not speed)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
SYSTEMS = "numpy,chainrule,chainrule compiled,chainrule CLI,torch,sklearn"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--reps", "1",
                           "--systems", SYSTEMS, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(out) as f:
        runs = json.load(f)["runs"]
    assert list(runs) == ["threads=1 quick"]
    return runs["threads=1 quick"], proc.stdout


def test_header(quick):
    run, _ = quick
    h = run["header"]
    assert h["command"].startswith("python bench/run.py --quick")
    assert h["threads"] == 1 and h["cores"] >= 1 and h["cpu"]
    assert set(h["openblas_env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert h["versions"]["numpy"] == np.__version__
    assert len(h["load_start"].split()) == 3


def test_timed_workloads(quick):
    run, stdout = quick
    assert set(run["workloads"]) == {"W1", "W2", "W3", "W4", "W5", "W6"}
    assert not run["problems"]
    have_torch = "torch" not in run["skipped"]
    for name in ("W1", "W2", "W3", "W4"):
        w = run["workloads"][name]
        rows = w["systems"]
        assert {"numpy", "chainrule", "chainrule compiled"} <= set(rows)
        assert ("torch" in rows) == have_torch
        assert rows["numpy"]["ratio"] == 1.0 and rows["numpy"]["check"] == "reference"
        for system, r in rows.items():
            assert len(r["times"]) == 1 and r["median"] > 0
            assert r["ratio"] == pytest.approx(r["median"] / rows["numpy"]["median"])
            if system != "numpy":  # every system computed what NumPy computed
                assert r["check_ok"] and r["max_abs_diff"] < 1e-4
            assert f"| {name} | {system} | " in stdout
        targets = {t["system"]: t for t in w["targets"]}
        assert "chainrule" in targets and isinstance(targets["chainrule"]["pass"], bool)
    assert set(t["system"] for t in run["workloads"]["W2"]["targets"]) == {
        "chainrule", "chainrule compiled"}
    assert "| workload | system | median s | min-max s | x NumPy |" in stdout


def test_memory_workload(quick):
    run, stdout = quick
    w5 = run["workloads"]["W5"]["systems"]
    for system in ("numpy", "chainrule", "chainrule compiled"):
        for phase in ("train", "infer"):
            r = w5[system][phase]
            assert r["rss_peak"] >= 0 and r["tracemalloc_peak"] > 0
    assert w5["chainrule"]["train"]["saved_bytes"] > 0  # backprop keeps activations
    assert w5["chainrule"]["infer"]["saved_bytes"] == 0  # no_grad keeps none
    assert "| phase | system | resident set peak MB |" in stdout


def test_end_to_end_workload(quick):
    run, stdout = quick
    w6 = run["workloads"]["W6"]
    target = 0.85
    for system in ("numpy", "chainrule", "chainrule CLI"):
        r = w6["systems"][system]
        assert r["epochs"] >= 1 and r["median"] > 0
    for system in ("numpy", "chainrule"):
        assert w6["systems"][system]["accuracy"] >= target
    assert w6["systems"]["chainrule"]["epochs"] == w6["systems"]["numpy"]["epochs"]
    assert w6["systems"]["chainrule CLI"]["epochs"] == w6["systems"]["chainrule"]["epochs"]
    if "sklearn" in w6["systems"]:
        assert w6["systems"]["sklearn"]["ratio_sklearn"] == 1.0
        assert [t["system"] for t in w6["targets"]] == ["chainrule"]
    assert "| system | median s | min-max s | x NumPy | x sklearn |" in stdout


def test_divergence_is_reported():
    """The check must be able to fail: a system that trains differently is flagged."""
    saved = list(sys.path)
    sys.path.insert(0, BENCH)
    try:
        import run as bench_run
        import systems
        import workloads
    finally:
        sys.path[:] = saved

    class Wrong(systems.NumPy):
        name = "wrong"

        def prepare_train(self, spec):
            run = super().prepare_train(spec)

            def wrong():
                result = run()
                result["weights"][0][0][0, 0] += 1e-3
                return result
            return wrong

    spec = workloads.make("W2", quick=True)
    rows, problems = bench_run.time_workload(spec, [systems.NumPy(), Wrong()], 1, lambda m: None)
    assert not rows["wrong"]["check_ok"]
    assert rows["wrong"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    assert problems and "wrong diverged" in problems[0]
