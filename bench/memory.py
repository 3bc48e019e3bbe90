"""W5: peak memory of one W1 training step and of the W4 inference run, per system, each in a
fresh subprocess (`python bench/memory.py --child SYSTEM PHASE`).

In the child, the system is prepared (model, data) and run once to warm up; then the measured
run. Resident set: the rise of the high-water mark VmHWM over the resident set before the run
(VmHWM reset by writing 5 to /proc/self/clear_refs; without it, the rise of ru_maxrss, which
misses a peak below an earlier one). tracemalloc: its peak over a further run (a separate run,
so that tracemalloc's own bookkeeping does not count in the resident set); it sees NumPy's
allocations but not PyTorch's. Each child runs with MALLOC_MMAP_THRESHOLD_=65536, the same for
every system, so glibc returns freed large blocks to the system and the high-water mark tracks
the true peak instead of the heap left over from the warm-up.

The training step goes through each system's training code (bench/systems.py) on a one-batch
dataset of the W1 batch size, so chainrule's step is a whole `cr.fit` epoch of one batch; it
starts with no gradients held (`p.grad = None`), as the NumPy step, which keeps none.
Saved for backward: `cr.saved_bytes(loss)` of the step's loss (chainrule), the unique storages
PyTorch's saved_tensors_hooks see, and the arrays the hand-written backward reads (NumPy); each
includes the weights the graph references. Inference: the same after a no_grad forward.
"""
import argparse
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SYSTEMS = ("numpy", "chainrule", "chainrule compiled", "torch")
PHASES = ("train", "infer")
MB = 2 ** 20


# ---- in the child -----------------------------------------------------------------------------
def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_rise(fn):
    """(bytes the resident set peaked above its level before fn, the method used)."""
    before = _status("VmRSS")
    if before is not None and _reset_peak():
        fn()
        return _status("VmHWM") - before, "VmHWM reset"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before, "ru_maxrss rise"


def _traced_peak(fn):
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def saved_for_backward(system, spec, phase):
    """Bytes kept for backward by one forward (+ loss) on the first batch."""
    import numpy as np
    x, y = spec.X[:spec.batch], spec.y[:spec.batch]
    if system == "numpy":
        if phase == "infer":
            return 0
        widths = spec.sizes[:-1] + (spec.sizes[-1],)  # x, each ReLU output, the softmax
        params = sum(W.nbytes + b.nbytes for W, b in spec.weights[1:])  # W.T in the backward
        return sum(len(x) * w * 4 for w in widths) + params
    if system == "torch":
        import torch
        from systems import Torch
        model, seen = Torch.model(spec), {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if phase == "infer":
                with torch.no_grad():
                    model(torch.from_numpy(x))
            else:
                torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        return sum(seen.values())
    import chainrule as cr
    from systems import _cr_model
    model = _cr_model(spec)
    fn = (lambda a, b: cr.cross_entropy(model(a), b))
    if system == "chainrule compiled":
        fn = cr.compile(fn)
        fn(x, y)  # the trace; the replay below is what is measured
    if phase == "infer":
        with cr.no_grad():
            return cr.saved_bytes(model(cr.tensor(x)) if system == "chainrule" else fn(x, y))
    return cr.saved_bytes(fn(cr.tensor(x), y))


def child(system, phase, quick):
    import workloads
    from systems import SYSTEMS as ALL
    sys_obj = next(s for s in ALL if s.name == system)
    spec = workloads.make("W1" if phase == "train" else "W4", quick)
    if phase == "train":  # one step: an epoch of one batch
        spec = dataclasses.replace(spec, X=spec.X[:spec.batch], y=spec.y[:spec.batch])
    run = sys_obj.prepare(spec)

    def measured():  # each measured step starts, as NumPy's does, with no gradients held
        for p in getattr(run, "params", ()):
            p.grad = None
        gc.collect()
        return _rss_rise(run)

    run()  # warm-up: lazy allocations, BLAS buffers, the compiled trace, optimizer state
    rss, method = measured()
    for p in getattr(run, "params", ()):
        p.grad = None
    traced = _traced_peak(run)
    saved = saved_for_backward(system, spec, phase)
    return {"rss_peak": rss, "rss_method": method, "tracemalloc_peak": traced,
            "saved_bytes": saved}


# ---- in the parent ----------------------------------------------------------------------------
def measure(systems, threads, quick, log=print):
    """{system: {phase: {...}}} measured in one fresh subprocess each."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    results = {}
    for phase in PHASES:
        for system in systems:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", system, phase,
                   "--threads", str(threads)] + (["--quick"] if quick else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                log(f"W5 {system} {phase}: the child failed:\n{proc.stderr[-2000:]}")
                results.setdefault(system, {})[phase] = {"error": proc.stderr[-500:]}
                continue
            results.setdefault(system, {})[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("SYSTEM", "PHASE"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import numpy  # noqa: F401  (load the BLAS before limiting it)
    if args.child[0] == "torch":
        import torch
        torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    print(json.dumps(child(*args.child, args.quick)))


if __name__ == "__main__":
    main()
