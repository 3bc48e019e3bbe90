"""W5: peak memory of one W1 training step and of the W4 inference run, per system, each in fresh
subprocesses (`python bench/memory.py --child SYSTEM PHASE [--exact]`).

In each child the system is prepared (model, data) and run once to warm up; then the measured
runs, each starting, as NumPy's step does, with no gradients held (`p.grad = None`):

- exact array peak (the figure W5 compares): the most bytes of array data allocated during the
  run and live at one moment. NumPy: a counting NumPy data-memory handler
  (PyDataMem_SetHandler, installed through ctypes) that sees every array-data allocation and free,
  the same allocations NumPy reports to tracemalloc in its own domain (np.lib.tracemalloc_domain);
  Python objects are not counted. PyTorch: torch.profiler's memory events (profile_memory=True),
  every CPU-allocator allocation and free in time order, the peak of their running sum; plus the
  peak of NumPy array data in the same run (the batch order the loop draws, 1 KiB), added as it
  is live over the whole step. BLAS workspaces are in neither count.
- tracemalloc peak: arrays and Python objects (the run's lists, dicts, Tensor wrappers, graph
  nodes). It does not see PyTorch's allocator.
- resident set: the rise of the high-water mark VmHWM over the resident set before the run (VmHWM
  reset by writing 5 to /proc/self/clear_refs; without it, the rise of ru_maxrss). Measured first,
  with no instrument active, in every child; the parent runs several children per system and
  phase and reports the median and min-max. On this kernel VmHWM is updated from the approximate
  per-CPU resident counters and reads low by a varying amount (up to ~0.2 MB here), so each child
  also measures the rise for a freshly touched 1 MiB array: the column's resolution.

Each child runs with MALLOC_MMAP_THRESHOLD_=65536, the same for every system, so glibc returns
freed large blocks to the system and the high-water mark tracks the peak instead of the heap left
over from the warm-up. The exact figures are deterministic, so only the first child of each
system and phase measures them (and the bytes saved for backward).

The training step goes through each system's training code (bench/systems.py) on a one-batch
dataset of the W1 batch size, so chainrule's step is a whole `cr.fit` epoch of one batch.
Saved for backward: `cr.saved_bytes(loss)` of the step's loss (chainrule), the unique storages
PyTorch's saved_tensors_hooks see, and the arrays the hand-written backward reads (NumPy); each
includes the weights the graph references. Inference: the same after a no_grad forward.
"""
import argparse
import ctypes
import dataclasses
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SYSTEMS = ("numpy", "chainrule", "chainrule compiled", "torch")
PHASES = ("train", "infer")
RUNS = {"full": 3, "quick": 2}   # children per system and phase (W5 full: ~1 minute)
PARITY = 0.01                    # |chainrule - torch| within 1 % of torch's peak: parity, not below
MB = 2 ** 20


# ---- in the child: resident set -----------------------------------------------------------------
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


def _touch_mib():
    import numpy as np
    a = np.ones(MB, np.uint8)  # above the mmap threshold: a fresh mapping, every page touched
    del a


# ---- in the child: exact allocation peaks -------------------------------------------------------
def _traced_peak(fn):
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


_SIGNATURES = {  # PyDataMemAllocator's functions: (result, ctx, arguments...)
    "malloc": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t),
    "calloc": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t),
    "realloc": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t),
    "free": (None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)}
_C = {k: ctypes.CFUNCTYPE(*v) for k, v in _SIGNATURES.items()}     # called by NumPy
_HELD = {k: ctypes.PYFUNCTYPE(*v) for k, v in _SIGNATURES.items()}  # called with the GIL held


class _Allocator(ctypes.Structure):  # PyDataMemAllocator (numpy/ndarraytypes.h)
    _fields_ = [("ctx", ctypes.c_void_p)] + [(k, _C[k]) for k in _SIGNATURES]


class _Handler(ctypes.Structure):  # PyDataMem_Handler, version 1
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8),
                ("allocator", _Allocator)]


class ArrayPeak:
    """`with ArrayPeak() as a: ...` counts NumPy array data allocated inside the block:
    `a.peak` is the most bytes of it live at once (exact: every allocation and free goes through
    this handler), `a.live` what is still live. Data allocated before the block is not counted,
    nor its release (as tracemalloc). The handler forwards to NumPy's default one, called with
    the GIL held (it releases the GIL itself for large calloc). Arrays made inside the block keep
    the handler for their release, so one instance lives as long as the process; the child
    leaves through os._exit so no array is freed while the interpreter shuts down."""
    _NAME = b"mem_handler"  # the capsule keeps a pointer to this name

    def __init__(self):
        import numpy as np
        api = ctypes.pythonapi
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        api.PyCapsule_New.restype = ctypes.py_object
        api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        core = getattr(np, "_core", None) or np.core  # NumPy 2 / 1
        table = ctypes.cast(api.PyCapsule_GetPointer(core._multiarray_umath._ARRAY_API, None),
                            ctypes.POINTER(ctypes.c_void_p))
        # PyArray_API[304] PyDataMem_SetHandler, [306] &PyDataMem_DefaultHandler (numpy >= 1.22)
        self._set = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(table[304])
        default = ctypes.cast(table[306], ctypes.POINTER(ctypes.py_object)).contents.value
        d = _Handler.from_address(api.PyCapsule_GetPointer(default, self._NAME)).allocator

        malloc, calloc, realloc, free = (
            _HELD[k](ctypes.cast(getattr(d, k), ctypes.c_void_p).value) for k in _SIGNATURES)
        ctx = d.ctx
        sizes, self.live, self.peak = {}, 0, 0

        def add(p, n):
            sizes[p] = n
            self.live += n
            self.peak = max(self.peak, self.live)

        def c_malloc(_, n):
            p = malloc(ctx, n)
            if p:
                add(p, n)
            return p

        def c_calloc(_, k, n):
            p = calloc(ctx, k, n)
            if p:
                add(p, k * n)
            return p

        def c_realloc(_, p, n):
            q = realloc(ctx, p, n)
            if q:
                self.live -= sizes.pop(p, 0) if p else 0
                add(q, n)
            return q

        def c_free(_, p, n):
            if p:
                self.live -= sizes.pop(p, 0)
            free(ctx, p, n)
        self._sizes = sizes
        self._handler = _Handler(b"bench_w5_counting", 1, _Allocator(
            None, _C["malloc"](c_malloc), _C["calloc"](c_calloc), _C["realloc"](c_realloc),
            _C["free"](c_free)))
        self._capsule = api.PyCapsule_New(ctypes.addressof(self._handler), self._NAME, None)

    def __enter__(self):
        self._sizes.clear()
        self.live = self.peak = 0
        self._previous = self._set(self._capsule)
        return self

    def __exit__(self, *exc):
        self._set(self._previous)


def _torch_peak(fn):
    """Peak of the running sum of torch.profiler's memory events (bytes) over fn()."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
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


def child(system, phase, quick, exact):
    import workloads
    from systems import SYSTEMS as ALL
    sys_obj = next(s for s in ALL if s.name == system)
    spec = workloads.make("W1" if phase == "train" else "W4", quick)
    if phase == "train":  # one step: an epoch of one batch
        spec = dataclasses.replace(spec, X=spec.X[:spec.batch], y=spec.y[:spec.batch])
    run = sys_obj.prepare(spec)

    def fresh():  # each measured step starts, as NumPy's does, with no gradients held
        for p in getattr(run, "params", ()):
            p.grad = None
        gc.collect()

    run()  # warm-up: lazy allocations, BLAS buffers, the compiled trace, optimizer state
    fresh()
    rss, method = _rss_rise(run)
    fresh()
    probe = _rss_rise(_touch_mib)[0]
    out = {"rss_peak": rss, "rss_method": method, "rss_probe_1mib": probe}
    if not exact:
        return out
    fresh()
    out["tracemalloc_peak"] = _traced_peak(run)
    fresh()
    with ArrayPeak() as arrays:
        if system == "torch":
            out["torch_peak"] = _torch_peak(run)
        else:
            run()
    out["numpy_array_peak"] = arrays.peak
    out["array_peak"] = arrays.peak + out.get("torch_peak", 0)
    out["saved_bytes"] = saved_for_backward(system, spec, phase)
    return out


# ---- in the parent ----------------------------------------------------------------------------
def measure(systems, threads, quick, log=print, runs=None):
    """{system: {phase: {...}}}: `runs` fresh children per system and phase (interleaved), the
    first of which also measures the exact figures; the resident set as median, min and max."""
    runs = runs or RUNS["quick" if quick else "full"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    results = {s: {p: {"rss_peaks": [], "rss_probes": []} for p in PHASES} for s in systems}
    for k in range(runs):
        for phase in PHASES:
            for system in systems:
                r = results[system][phase]
                if "error" in r:
                    continue
                cmd = [sys.executable, os.path.abspath(__file__), "--child", system, phase,
                       "--threads", str(threads)] + (["--quick"] if quick else []) \
                    + (["--exact"] if k == 0 else [])
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    log(f"W5 {system} {phase}: the child failed:\n{proc.stderr[-2000:]}")
                    results[system][phase] = {"error": proc.stderr[-500:]}
                    continue
                one = json.loads(proc.stdout.strip().splitlines()[-1])
                r["rss_peaks"].append(one.pop("rss_peak"))
                r["rss_probes"].append(one.pop("rss_probe_1mib"))
                r.update(one)
    for phases in results.values():
        for r in phases.values():
            if "error" not in r:
                peaks = r["rss_peaks"]
                r.update(rss_peak=statistics.median(peaks), rss_min=min(peaks),
                         rss_max=max(peaks))
    return results


def floor_bytes(sizes, batch):
    """What any system that keeps every gradient until the optimizer step must hold while layer 1's
    backward computes dL/dW1 = g1.T @ x: the batch x, g1 = dL/dz1 and every parameter gradient
    (float32)."""
    grads = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return 4 * (batch * sizes[0] + batch * sizes[1] + grads)


def targets(results):
    """W5's verdicts: chainrule's exact training peak against torch's (below by more than
    PARITY: pass; within PARITY either way: parity, not below; else above), and nothing saved
    for backward at inference."""
    out = []
    cr, th = results.get("chainrule", {}), results.get("torch", {})
    if "array_peak" in cr.get("train", {}) and "array_peak" in th.get("train", {}):
        a, b = cr["train"]["array_peak"], th["train"]["array_peak"]
        verdict = ("pass" if a < b * (1 - PARITY) else
                   "parity (not below)" if a <= b * (1 + PARITY) else "fail (above)")
        out.append({"phase": "train", "system": "chainrule",
                    "what": "exact array peak below torch's", "value": a, "reference": b,
                    "ratio": a / b, "verdict": verdict, "pass": verdict == "pass"})
    if "saved_bytes" in cr.get("infer", {}):
        ok = cr["infer"]["saved_bytes"] == 0
        out.append({"phase": "infer", "system": "chainrule", "what": "saves nothing",
                    "value": cr["infer"]["saved_bytes"], "verdict": "pass" if ok else "fail",
                    "pass": ok})
    return out


def notes(results, quick):
    import workloads
    sizes, batch, _ = workloads.SHAPES["W1"]["quick" if quick else "full"]
    ok = [r for phases in results.values() for r in phases.values() if "error" not in r]
    probes = [p for r in ok for p in r["rss_probes"]]
    runs = max((len(r["rss_peaks"]) for r in ok), default=0)
    spread = max((r["rss_max"] - r["rss_min"] for r in ok), default=0)
    probe = (f"a freshly touched and freed 1 MiB array raised VmHWM by "
             f"{min(probes) / MB:.2f}-{max(probes) / MB:.2f} MiB in these {len(probes)} children"
             if probes else "no probe ran")
    return [
        "exact array peak (compared): the most bytes of array data allocated during the run and "
        "live at one moment; Python objects and BLAS workspaces not counted. numpy, chainrule, "
        "chainrule compiled: a counting NumPy data-memory handler (PyDataMem_SetHandler; the "
        "allocations NumPy reports to tracemalloc's domain np.lib.tracemalloc_domain); torch: "
        "the peak of the running sum of torch.profiler.profile(profile_memory=True) memory events, "
        "plus the peak of NumPy array data in the same run (training: the 1 KiB batch order, "
        "live throughout)",
        f"the floor for a training step that keeps every gradient until the optimizer step is "
        f"x + dL/dz1 + all parameter gradients, live while layer 1's backward computes dL/dW1: "
        f"{floor_bytes(sizes, batch) / MB:.3f} MB for {'-'.join(map(str, sizes))}, batch {batch}; "
        f"the hand-written NumPy updates each weight as soon as its gradient is done, and cr.fit "
        f"and the compiled step add -lr * dL/dW to W1 and W2 inside backward in one BLAS call "
        f"each, without making dL/dW (optim.Optimizer.backward_and_step), so this floor binds "
        f"none of them",
        f"verdict: chainrule's exact training peak against torch's; within {PARITY:.0%} of it "
        f"either way is parity (not below), not a pass",
        "tracemalloc peak: NumPy arrays and Python objects (lists, dicts, Tensor wrappers, graph "
        "nodes); torch: n/a, its allocator is invisible to tracemalloc",
        f"resident set: the rise of VmHWM (reset through /proc/self/clear_refs) over the resident "
        f"set before the run, in {runs} fresh children per system and phase, each after a warm-up "
        f"run and before any instrument is active: median and min-max; it also counts Python "
        f"objects, allocator overhead and BLAS buffers. Measured resolution: this kernel updates "
        f"VmHWM from approximate per-CPU resident counters, so it reads low by a varying amount "
        f"({probe}), and one system's children spread by up to {spread / MB:.2f} MB here; "
        f"differences within that do not rank systems. MALLOC_MMAP_THRESHOLD_=65536 for every "
        f"child",
        "train: one W1 step (batch 128) through each system's training code, for chainrule a "
        "cr.fit epoch of one batch, starting with no gradients held; infer: the whole W4 run "
        "(batches of 1,000) after a warm-up W4 run",
        "saved for backward: cr.saved_bytes(loss) (chainrule), the unique storages "
        "torch.autograd.graph.saved_tensors_hooks packs (torch), the arrays the hand-written "
        "backward reads (numpy), each counting weights the graph references; inference: the "
        "same after a no_grad forward (chainrule compiled: a replayed call, whose one node "
        "reports the arrays its recorded ops keep)",
    ]


def workload(systems, threads, quick, log=print):
    """bench/run.py's W5 entry: description, per-system results, verdicts, notes."""
    import workloads
    began = time.perf_counter()
    results = measure(systems, threads, quick, log)
    sizes, batch, _ = workloads.SHAPES["W1"]["quick" if quick else "full"]
    return {"description": f"peak memory of one W1 training step (batch {batch}) and of the W4 "
                           "inference run", "systems": results, "targets": targets(results),
            "notes": notes(results, quick), "seconds": time.perf_counter() - began}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("SYSTEM", "PHASE"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--exact", action="store_true",
                    help="also the exact array peak, tracemalloc's peak and bytes saved")
    args = ap.parse_args()
    import numpy  # noqa: F401  (load the BLAS before limiting it)
    if args.child[0] == "torch":
        import torch
        torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    print(json.dumps(child(*args.child, args.quick, args.exact)), flush=True)
    sys.stderr.flush()
    os._exit(0)  # arrays made under ArrayPeak must not be freed while the interpreter shuts down


if __name__ == "__main__":
    main()
