"""Benchmark: chainrule against hand-written NumPy (the floor) and PyTorch eager, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py [--reps 5] [--threads 1]

Same data, same initial weights, same hyper-parameters, float32, one process; the systems are
interleaved within each repetition so machine noise hits them alike. Reports median (min-max)
seconds per workload and each median as a ratio to hand-written NumPy's median in the same run.

W1: MLP 784-256-128-10, ReLU, softmax cross-entropy, SGD, batch 128, one epoch of 60,000 samples.
W2: MLP 2-16-16-2, ReLU, softmax cross-entropy, SGD, batch 32, 2,000 steps on two-moons data.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import chainrule as cr  # noqa: E402


# ---- data and weights shared by every system --------------------------------------------------
def two_moons(n, seed):
    rng = np.random.default_rng(seed)
    t, label = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    pts = np.stack([np.where(label == 0, np.cos(t), 1 - np.cos(t)),
                    np.where(label == 0, np.sin(t), 0.5 - np.sin(t))], 1)
    return (pts + rng.normal(0, 0.1, (n, 2))).astype(np.float32), label.astype(np.int64)


def workload(name, quick):
    rng = np.random.default_rng(0)
    if name == "W1":
        sizes, batch, n = (784, 256, 128, 10), 128, 12_800 if quick else 60_000
        x = rng.standard_normal((n, 784), dtype=np.float32)
        y = rng.integers(0, 10, n)
        steps = n // batch
    else:
        sizes, batch, steps = (2, 16, 16, 2), 32, 400 if quick else 2_000
        x, y = two_moons(2_000, 0)
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(n_in)
        weights += [rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),  # (out, in)
                    rng.uniform(-bound, bound, n_out).astype(np.float32)]
    order = rng.integers(0, len(x) - batch, steps)  # batch start offsets, the same for everyone
    return dict(x=x, y=y, weights=weights, starts=order, batch=batch, lr=0.01)


# ---- the systems ------------------------------------------------------------------------------
def run_numpy(w):
    """Hand-written forward and backward: the floor a NumPy framework can reach.
    Weights kept as (in, out), the layout fastest for `x @ W` (returned as (out, in))."""
    params = [p.T.copy() for p in w["weights"]]
    x_all, y_all, batch, lr = w["x"], w["y"], w["batch"], w["lr"]
    n_layers = len(params) // 2
    for s in w["starts"]:
        x, y = x_all[s:s + batch], y_all[s:s + batch]
        acts, h = [x], x
        for i in range(n_layers):
            h = h @ params[2 * i] + params[2 * i + 1]
            if i < n_layers - 1:
                h = np.maximum(h, 0)
                acts.append(h)
        z = h - h.max(1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(batch), y]).mean()
        p[np.arange(batch), y] -= 1
        g = p / batch
        for i in reversed(range(n_layers)):
            gw, gb = acts[i].T @ g, g.sum(0)
            if i > 0:
                g = (g @ params[2 * i].T) * (acts[i] > 0)
            params[2 * i] -= lr * gw
            params[2 * i + 1] -= lr * gb
    return float(loss), [p.T for p in params]


def run_chainrule(w):
    params = [cr.tensor(p, requires_grad=True) for p in w["weights"]]
    x_all, y_all, batch, lr = w["x"], w["y"], w["batch"], w["lr"]
    n_layers = len(params) // 2
    for s in w["starts"]:
        h = cr.from_numpy(x_all[s:s + batch])
        for i in range(n_layers):
            h = cr.linear(h, params[2 * i], params[2 * i + 1])
            if i < n_layers - 1:
                h = h.relu()
        loss = cr.cross_entropy(h, y_all[s:s + batch])
        for p in params:
            p.grad = None
        loss.backward()
        with cr.no_grad():
            for p in params:
                p.data -= lr * p.grad.data
    return loss.item(), [p.numpy() for p in params]


def run_torch(w):
    import torch
    params = [torch.tensor(p, requires_grad=True) for p in w["weights"]]
    x_all, y_all = torch.from_numpy(w["x"]), torch.from_numpy(w["y"])
    batch, lr, n_layers = w["batch"], w["lr"], len(params) // 2
    for s in w["starts"]:
        h = x_all[s:s + batch]
        for i in range(n_layers):
            h = torch.nn.functional.linear(h, params[2 * i], params[2 * i + 1])
            if i < n_layers - 1:
                h = h.relu()
        loss = torch.nn.functional.cross_entropy(h, y_all[s:s + batch])
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.data -= lr * p.grad.data
    return loss.item(), [p.detach().numpy() for p in params]


SYSTEMS = {"numpy": run_numpy, "chainrule": run_chainrule, "torch": run_torch}
TARGETS = {"W1": 1.10, "W2": 2.0}


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl)"
    return "; ".join(f"{i['internal_api']} {i.get('version')} kernel={i.get('architecture')} "
                     f"threads={i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas")


def main():
    ap = argparse.ArgumentParser(description="chainrule vs NumPy vs PyTorch, ratios in one run")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per system")
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke test)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    systems = dict(SYSTEMS)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        del systems["torch"]
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"# chainrule benchmark  python {platform.python_version()}  numpy {np.__version__}"
          + (f"  torch {sys.modules['torch'].__version__}" if "torch" in sys.modules else ""))
    print(f"# BLAS: {blas_info()}")
    print("# OPENBLAS_CORETYPE/L2_SIZE: " + ("unset for this run" if not any(env.values())
                                              else f"set {env} (slower kernel)"))
    results = {}
    for name in args.workloads.split(","):
        w = workload(name, args.quick)
        times = {s: [] for s in systems}
        final = {}
        for rep in range(args.reps + 1):  # rep 0 warms up and is not counted
            for s, fn in systems.items():
                t0 = time.perf_counter()
                final[s] = fn(w)
                if rep:
                    times[s].append(time.perf_counter() - t0)
        ref = final["numpy"][1]
        for s in systems:  # everyone must have computed the same thing
            err = max(float(np.max(np.abs(a - b))) for a, b in zip(final[s][1], ref))
            assert err < 1e-3, f"{s} diverged from numpy on {name}: max weight difference {err}"
        base = statistics.median(times["numpy"])
        results[name] = {s: {"median": statistics.median(t), "min": min(t), "max": max(t),
                             "ratio": statistics.median(t) / base} for s, t in times.items()}
    print(f"\n| workload | system | median s | min-max s | ratio to NumPy | target |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for s, r in rows.items():
            target = f"<= {TARGETS[name]:.2f}" if s == "chainrule" else ""
            print(f"| {name} | {s} | {r['median']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
                  f"{r['ratio']:.2f} | {target} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": blas_info(), "threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
