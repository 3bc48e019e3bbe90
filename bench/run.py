"""The benchmark suite of issue 6: chainrule against hand-written NumPy (the floor), PyTorch eager,
scikit-learn, MyGrad and HIPS autograd, on workloads W1-W6 (bench/workloads.py).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py --threads 1 --write

Same data, same initial weights, same batch order and hyper-parameters, float32. Each workload:
one untimed run per system whose result (final weights, or outputs) is checked against NumPy's,
then `--reps` repetitions with the systems interleaved (the order rotated each repetition),
median and min-max, each median also as a ratio to NumPy's median in the same run. W5 (memory)
runs each system in a fresh subprocess (bench/memory.py). Prints a Markdown table; `--json`
writes the run, `--write` merges it into bench/results.json and rebuilds bench/RESULTS.md.
Exit status 1 when a system diverged from NumPy or failed.
"""
import argparse
import cProfile
import gc
import importlib.metadata
import io
import json
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import memory  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402
from systems import SYSTEMS, ChainruleCLI  # noqa: E402

ALL = ("W1", "W2", "W3", "W4", "W5", "W6")
REPS = {"W1": 7, "W2": 11, "W3": 3}  # repetitions where not 5: W1 and W2 are short runs whose
                                     # medians need more of them; W3 is ~15 s per system
TOLERANCE = 1e-4             # max abs difference of final weights / outputs from NumPy's
TARGETS = {"W1": {"chainrule": 1.05}, "W2": {"chainrule": 2.0, "chainrule compiled": 1.25},
           "W3": {"chainrule": 1.05}, "W4": {"chainrule": 1.05}}


def parse(argv=None):
    ap = argparse.ArgumentParser(description="chainrule benchmark suite (issue 6)")
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1,
                    help="BLAS threads (threadpoolctl) and torch.set_num_threads")
    ap.add_argument("--workloads", default=",".join(ALL), help="comma-separated, e.g. W1,W2")
    ap.add_argument("--systems", help="comma-separated subset of: "
                    + ", ".join(s.name for s in SYSTEMS) + " (numpy always runs)")
    ap.add_argument("--reps", type=int, help=f"repetitions (default 5; {REPS})")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", help="write this run's results here")
    ap.add_argument("--write", action="store_true",
                    help="merge into bench/results.json and rebuild bench/RESULTS.md")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, cProfile one run of each chainrule row and print the top")
    args = ap.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in ALL]
    if bad:
        ap.error(f"unknown workloads {bad}; choose from {', '.join(ALL)}")
    if args.systems:
        names = {s.name for s in SYSTEMS}
        wanted = {s.strip() for s in args.systems.split(",")} | {"numpy"}
        if wanted - names:
            ap.error(f"unknown systems {sorted(wanted - names)}")
        args.systems = wanted
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be at least 1")
    return args


def limit_threads(threads):
    """Load every BLAS/OpenMP runtime first, then limit them all; keep children in step."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    for module in ("sklearn.neural_network", "mygrad", "autograd.scipy.special"):
        try:
            __import__(module)
        except ImportError:
            pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads)


def machine(args):
    def cpuinfo(key):
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            return None

    flags = set((cpuinfo("flags") or "").split())
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2 ** 20
    except OSError:
        mem = 0.0
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    for dist in ("torch", "scikit-learn", "mygrad", "autograd", "threadpoolctl", "chainrule"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        from threadpoolctl import threadpool_info
        pools = [{"user_api": p["user_api"], "internal_api": p["internal_api"],
                  "version": p.get("version"), "architecture": p.get("architecture"),
                  "num_threads": p["num_threads"],
                  "library": os.path.join(*p["filepath"].split(os.sep)[-2:])}
                 for p in threadpool_info()]
    except ImportError:
        pools = []
    git = subprocess.run(["git", "-C", os.path.dirname(HERE), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return {
        "command": "python bench/run.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": f"{cpuinfo('model name') or '?'} ({', '.join(simd)})",
        "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
        "memory_gib": mem, "versions": versions, "threadpools": pools, "git": git,
        "threads": args.threads,
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "load_start": _load(),
    }


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- timing -----------------------------------------------------------------------------------
def max_abs_diff(result, ref):
    if "outputs" in result:
        expected = ref["outputs"]
        if result.get("probabilities"):
            e = np.exp(expected - expected.max(1, keepdims=True))
            expected = e / e.sum(1, keepdims=True)
        return float(np.max(np.abs(result["outputs"] - expected)))
    if result.get("weights") is None or result.get("compare_weights") is False:
        return None
    if result.get("epochs") != ref.get("epochs"):
        return None
    return max(float(max(np.max(np.abs(W - W0)), np.max(np.abs(b - b0))))
               for (W, b), (W0, b0) in zip(result["weights"], ref["weights"]))


def time_workload(spec, systems, reps, log):
    """{system: {...}} for one workload: a checked run, then interleaved timed repetitions."""
    workloads.check_orders(spec)
    rows, problems = {}, []
    for s in systems:  # the untimed run, also a warm-up
        result = s.prepare(spec)()
        rows[s.name] = {"epochs": result.get("epochs"), "accuracy": result.get("accuracy"),
                        "_result": result}
        if s.name == "chainrule" and spec.name == "W6":
            ChainruleCLI.epochs = result["epochs"]  # the CLI runs as many epochs as fit needed
    ref = rows["numpy"]["_result"]
    for name, row in rows.items():
        result = row.pop("_result")
        if name == "numpy":
            row["check"] = "reference"
            continue
        diff = max_abs_diff(result, ref)
        row["max_abs_diff"] = diff
        row["check_ok"] = diff is None or diff <= TOLERANCE
        if diff is None:
            row["check"] = ("not compared (other seed)" if name == "chainrule CLI" else
                            "not compared (different Adam)" if name == "sklearn" else
                            f"not compared ({row['epochs']} epochs, NumPy {ref.get('epochs')})")
        if not row["check_ok"]:
            problems.append(f"{spec.name}: {name} diverged from NumPy: max abs difference "
                            f"{diff:.3g} > {TOLERANCE:g} (a bug)")
    del ref, result
    times = {s.name: [] for s in systems}
    cpu = {s.name: [] for s in systems}
    for rep in range(reps):
        k = rep % len(systems)
        for s in systems[k:] + systems[:k]:
            run = s.prepare(spec)
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            out = run()
            times[s.name].append(time.perf_counter() - t0)
            cpu[s.name].append(time.process_time() - c0)
            del out, run
        log(f"  {spec.name} repetition {rep + 1}/{reps}: "
            + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    base = statistics.median(times["numpy"])
    for name, t in times.items():
        m = statistics.median(t)
        rows[name].update(times=t, cpu_times=cpu[name], median=m, min=min(t), max=max(t),
                          ratio=m / base)
    return rows, problems


def profile(spec, system, top=18):
    run = system.prepare(spec)
    prof = cProfile.Profile()
    prof.runcall(run)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    return text[text.find("ncalls") - 3:] if "ncalls" in text else text


# ---- the run ----------------------------------------------------------------------------------
def main(argv=None):
    args = parse(argv)
    threads = limit_threads(args.threads)  # noqa: F841  (kept alive for the whole run)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    head = machine(args)
    if any(head["openblas_env"].values()):
        log(f"note: {head['openblas_env']} is set (it selects a slower OpenBLAS kernel here); "
            "the documented command runs under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`")
    available, skipped = [], {}
    for s in SYSTEMS:
        if args.systems and s.name not in args.systems:
            continue
        why = s.missing()
        if why:
            skipped[s.name] = why
        else:
            available.append(s)
    run = {"header": head, "quick": args.quick, "workloads": {}, "skipped": skipped,
           "notes": {s.name: s.note for s in available}, "problems": []}
    for name in args.workloads:
        log(f"{name} ...")
        began = time.perf_counter()
        if name == "W5":
            run["workloads"]["W5"] = w5(available, args, log)
            run["problems"] += [f"W5 {s} {p}: the child failed" for s, ph in
                                run["workloads"]["W5"]["systems"].items()
                                for p, r in ph.items() if "error" in r]
            continue
        spec = workloads.make(name, args.quick)
        systems = [s for s in available if name in s.workloads]
        reps = args.reps or REPS.get(name, 5)
        try:
            rows, problems = time_workload(spec, systems, reps, log)
        except Exception as e:  # one broken system must not lose the other workloads
            import traceback
            traceback.print_exc()
            run["problems"].append(f"{name}: {type(e).__name__}: {e}")
            continue
        entry = {"description": spec.description, "reps": reps, "systems": rows,
                 "seconds": time.perf_counter() - began}
        entry["targets"] = targets(spec, rows)
        run["workloads"][name] = entry
        run["problems"] += problems
        if args.profile:
            entry["profile"] = {}
            for s in systems:
                if s.name.startswith("chainrule") and s.name != "chainrule CLI":
                    entry["profile"][s.name] = text = profile(spec, s)
                    print(f"\n### cProfile: {name} {s.name} (top by own time)\n```\n{text}```")
        del spec
        gc.collect()
    head["load_end"] = _load()
    print(report.markdown(run, f"threads={args.threads}" + (" quick" if args.quick else "")))
    key = f"threads={args.threads}" + (" quick" if args.quick else "")
    if args.json:
        _write_json(args.json, {"runs": {key: run}})
    if args.write:
        path = os.path.join(HERE, "results.json")
        runs = {}
        if os.path.exists(path):
            with open(path) as f:
                runs = json.load(f).get("runs", {})
        runs[key] = run
        _write_json(path, {"runs": runs})
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write(report.results_md(runs))
        log(f"wrote {path} and {os.path.join(HERE, 'RESULTS.md')}")
    for p in run["problems"]:
        log(f"PROBLEM: {p}")
    return 1 if run["problems"] else 0


def targets(spec, rows):
    out = []
    for system, limit in TARGETS.get(spec.name, {}).items():
        if system in rows:
            out.append({"system": system, "limit": limit, "value": rows[system]["ratio"],
                         "pass": rows[system]["ratio"] <= limit})
    if spec.name == "W6" and "sklearn" in rows:
        sk = rows["sklearn"]
        for r in rows.values():
            r["ratio_sklearn"] = r["median"] / sk["median"]
            r["reached"] = r.get("accuracy") is not None and r["accuracy"] >= spec.target_accuracy
        if "chainrule" in rows:  # sklearn not reaching the accuracy at all counts as slower
            cr = rows["chainrule"]
            out.append({"system": "chainrule", "what": "faster than sklearn at equal accuracy",
                        "value": cr["ratio_sklearn"],
                        "pass": cr["reached"] and (not sk["reached"] or cr["median"] < sk["median"])})
    return out


def w5(systems, args, log):
    """W5 (bench/memory.py): exact array peaks, tracemalloc, resident set, verdicts and notes."""
    names = [s.name for s in systems if s.name in memory.SYSTEMS]
    return memory.workload(names, args.threads, args.quick, log)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
