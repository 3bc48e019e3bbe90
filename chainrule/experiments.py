"""Experiments that measure what the course states: `depth_vs_width`.

    from chainrule.experiments import depth_vs_width, report
    result = depth_vs_width(quick=True, out="runs/dvw")
    print(report(result))

Command line: `chainrule experiment depth-vs-width [--out DIR] [--quick]`.
"""
import json
import os
import time

import numpy as np

from chainrule import nn
from chainrule.autograd import no_grad
from chainrule.optim import Adam
from chainrule.optim.lr_scheduler import CosineAnnealingLR
from chainrule.random import manual_seed
from chainrule.serialization import atomic_write
from chainrule.tensor import Tensor


def _triangle(teeth):
    def f(x):  # `teeth` V-shaped teeth on [-1, 1], values in [-1, 1]
        u = (x + 1) / 2 * teeth
        return 4 * np.abs(u - np.floor(u) - 0.5) - 1
    return f


TARGETS = {
    "sin(3*pi*x)": lambda x: np.sin(3 * np.pi * x),
    "|x|": np.abs,
    "triangle wave, 4 teeth": _triangle(4),
}


def _fit_one(sizes, x, y, activation, steps, lr, seed):
    """Full-batch Adam with a cosine learning-rate decay; returns (final MSE, predictions)."""
    manual_seed(seed)
    model = nn.MLP(sizes, activation=activation)
    opt = Adam(model.parameters(), lr=lr)
    schedule = CosineAnnealingLR(opt, T_max=steps)
    X, Y = Tensor(x), Tensor(y)
    for _ in range(steps):
        loss = ((model(X) - Y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with no_grad():
        pred = model(X).numpy()
    return float(np.mean((pred - y) ** 2)), pred[:, 0]


def _params(sizes):
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def depth_vs_width(targets=None, widths=(2, 4, 8, 16, 32, 64, 128, 256), depths=(1, 2, 3, 4, 6, 8),
                   deep_widths=(4, 8), activation="relu", steps=3000, lr=5e-3, points=256,
                   seeds=(0, 1, 2), threshold=0.01, budget=180, quick=False, out=None, progress=True):
    """Fit 1-D target functions on x in [-1, 1] with one wide hidden layer (each of `widths`) and
    with deeper narrow nets (each of `deep_widths`, each of `depths` hidden layers).

    The loss is the normalised MSE on the `points` grid points (MSE / Var(target), so 0.01 is
    R^2 = 0.99): approximation, not generalisation. Each net is trained from every seed in
    `seeds` and the best final loss kept. Per target and family: the parameter count and loss of
    every net, and the fewest parameters that reached `threshold` (None if none did).
    quick=True: small sizes and few steps (seconds). With `out`, writes depth_vs_width.json;
    the pictures are chainrule.viz.experiments.plot_depth_vs_width and plot_fits.
    """
    if quick:
        widths, depths, deep_widths = (4, 16, 64), (1, 2, 4), (8,)
        steps, points, seeds = 300, 128, (0,)
    targets = targets or TARGETS
    x = np.linspace(-1, 1, points, dtype=np.float32).reshape(-1, 1)
    families = {"wide: 1 hidden layer": [[1, w, 1] for w in widths]}
    for w in deep_widths:
        families[f"deep: width {w}"] = [[1] + [w] * d + [1] for d in depths]
    result = {"settings": dict(activation=activation, steps=steps, lr=lr, points=points,
                               seeds=list(seeds), threshold=threshold, budget=budget,
                               optimizer="Adam, full batch, cosine decay"),
              "targets": {}}
    began = time.perf_counter()
    for name, f in targets.items():
        y = f(x).astype(np.float32)
        var = float(y.var())
        entry = {"x": x[:, 0].tolist(), "y": y[:, 0].tolist(), "families": {}, "params_to_reach": {}}
        for family, nets in families.items():
            rows = []
            for sizes in nets:
                runs = [_fit_one(sizes, x, y, activation, steps, lr, s) for s in seeds]
                mse, pred = min(runs, key=lambda r: r[0])
                rows.append({"hidden": sizes[1:-1], "params": _params(sizes), "loss": mse / var,
                             "seed_losses": [r[0] / var for r in runs], "pred": pred.tolist()})
                if progress:
                    print(f"  {name:24s} {family:22s} hidden {str(sizes[1:-1]):28s} "
                          f"params {rows[-1]['params']:5d}  loss {rows[-1]['loss']:.2e}  "
                          f"({time.perf_counter() - began:.0f}s)", flush=True)
            entry["families"][family] = rows
            reached = [r["params"] for r in rows if r["loss"] <= threshold]
            entry["params_to_reach"][family] = min(reached) if reached else None
        result["targets"][name] = entry
    if out:
        os.makedirs(out, exist_ok=True)
        atomic_write(os.path.join(out, "depth_vs_width.json"), json.dumps(result))
    return result


def report(result):
    """The tables and the parameters-to-threshold summary as text."""
    s = result["settings"]
    lines = [f"depth vs width: {s['activation']} nets, {s['optimizer']}, {s['steps']} steps, "
             f"best of {len(s['seeds'])} seed(s); loss = MSE / Var(target) on {s['points']} points"]
    for name, entry in result["targets"].items():
        lines.append(f"\n{name}")
        for family, rows in entry["families"].items():
            cells = "  ".join(f"{r['params']}:{r['loss']:.1e}" for r in rows)
            lines.append(f"  {family:22s} params:loss  {cells}")
        for family, p in entry["params_to_reach"].items():
            lines.append(f"  fewest parameters reaching loss <= {s['threshold']:g} ({family}): "
                         + (str(p) if p is not None else "none of the sizes tried"))
    return "\n".join(lines)
