"""bench/: the suite runs end to end on tiny sizes and reports what it should (not speed)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chainrule.ops import blas


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
SYSTEMS = "numpy,chainrule,chainrule compiled,chainrule CLI,torch,sklearn"
MB = 2 ** 20


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


def _bench_module(name):
    saved = list(sys.path)
    sys.path.insert(0, BENCH)
    try:
        return __import__(name)
    finally:
        sys.path[:] = saved


def test_memory_workload(quick):
    run, stdout = quick
    memory = _bench_module("memory")
    w5 = run["workloads"]["W5"]["systems"]
    floor = memory.floor_bytes((784, 256, 128, 10), 128)  # W1's shapes, quick or not
    numpy_based = ("numpy", "chainrule", "chainrule compiled")
    for system in numpy_based + (("torch",) if "torch" in w5 else ()):
        for phase in ("train", "infer"):
            r = w5[system][phase]
            assert len(r["rss_peaks"]) == memory.RUNS["quick"]
            assert r["rss_min"] <= r["rss_peak"] <= r["rss_max"] and r["rss_min"] >= 0
            assert r["array_peak"] > 0
            if system in numpy_based:  # arrays are part of what tracemalloc sees, objects small
                assert 0 <= r["tracemalloc_peak"] - r["array_peak"] < 0.1 * MB
    # cr.fit and the compiled step (both through backward_and_step) update W1 and W2 inside
    # backward, by BLAS, without their gradients: the peak is what backward keeps of the
    # forward (the activations), give or take a few KiB (logits, loss, biases; the compiled
    # loss function whose saved bytes are counted keeps its logits, the step frees them)
    for system in ("chainrule", "chainrule compiled") if blas.AVAILABLE else ():
        saved = w5[system]["train"]["saved_bytes"]
        peak = w5[system]["train"]["array_peak"]
        assert abs(peak - saved) <= 16 * 1024 and peak < floor
    if "torch" in w5:  # torch holds exactly the floor (+ a loss scalar, the 1 KiB batch order)
        assert w5["torch"]["train"]["array_peak"] <= floor + 4096
        assert w5["torch"]["train"]["torch_peak"] >= floor
    assert w5["chainrule"]["train"]["saved_bytes"] > 0  # backprop keeps activations
    assert w5["chainrule"]["infer"]["saved_bytes"] == 0  # no_grad keeps none
    assert "| phase | system | exact array peak MB | tracemalloc peak MB" in stdout


def test_array_peak_is_exact():
    """The counting NumPy handler sees each array-data allocation and free: known arrays give
    their exact peak, and what it counts live equals NumPy's tracemalloc domain."""
    code = f"""if True:
        import json, os, sys, tracemalloc
        sys.path.insert(0, {BENCH!r})
        import numpy as np
        import memory
        before = np.ones(10 ** 5)  # allocated before: neither counted nor its release
        tracemalloc.start()
        with memory.ArrayPeak() as a:
            x = np.ones(1000, np.float32)
            y = x * 2
            del x, before
            z = np.zeros(10 ** 5, np.uint8)
            del z
            w = np.concatenate([y, y])
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
        print(json.dumps([a.peak, a.live, sum(t.size for t in snap.traces)]), flush=True)
        os._exit(0)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak, live, traced = json.loads(proc.stdout)
    assert peak == 4000 + 10 ** 5  # y and z
    assert live == traced == 4000 + 8000  # y and w


def test_memory_verdict():
    """W5's verdict compares exact peaks: within 1 % of torch's is parity, not a pass."""
    memory = _bench_module("memory")

    def verdict(cr, torch):
        results = {"chainrule": {"train": {"array_peak": cr}, "infer": {"saved_bytes": 0}},
                   "torch": {"train": {"array_peak": torch}}}
        t = memory.targets(results)
        assert [x["phase"] for x in t] == ["train", "infer"] and t[1]["pass"]
        return t[0]["verdict"], t[0]["pass"]

    assert verdict(1_400_000, 1_473_072) == ("pass", True)
    assert verdict(1_473_072, 1_473_072) == ("parity (not below)", False)
    assert verdict(1_465_000, 1_473_072) == ("parity (not below)", False)  # 0.5 % below
    assert verdict(1_480_252, 1_473_072) == ("parity (not below)", False)
    assert verdict(1_606_216, 1_473_072) == ("fail (above)", False)
    assert memory.floor_bytes((784, 256, 128, 10), 128) == 1_473_064


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


def test_phases_diagnostic_reports_every_phase():
    sys.path.insert(0, BENCH)
    try:
        import phases
        result = phases.measure("W2", steps=3, reps=1, quick=True)
    finally:
        sys.path.remove(BENCH)
    assert {"eager whole step", "compiled whole step", "optimizer step",
            "hand-written NumPy step (an epoch / its steps)"} <= set(result)
    assert all(us > 0 for us in result.values())  # what it shows is measured, not tested


def test_report_marks_a_disturbed_workload_and_shows_best_ratios():
    report = _bench_module("report")

    def row(times):
        return {"times": times, "median": float(np.median(times)), "min": min(times),
                "max": max(times), "ratio": 1.0, "check": "reference"}
    quiet, busy = row([1.0, 1.02, 1.03]), row([1.0, 1.3, 1.5])
    fast = dict(row([1.9, 2.0, 2.2]), ratio=2.0 / 1.02, check=None)
    run = {"workloads": {"W1": {"systems": {"numpy": quiet, "chainrule": fast}},
                         "W2": {"systems": {"numpy": busy}}}}
    lines = report.disturbed(run)
    assert len(lines) == 1 and lines[0].startswith("- **W2 was disturbed**") and "1.30x" in lines[0]
    assert "| W1 | chainrule | 2.000 | 1.900-2.200 | 1.96 | 1.90 |" in report.timing_table(run)
