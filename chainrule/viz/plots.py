"""Training pictures with matplotlib's Agg backend; matplotlib is imported only when drawing."""
import textwrap

import numpy as np

from chainrule.errors import MissingDependency


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error naming what to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("plotting needs matplotlib: pip install matplotlib "
                                "(or pip install \"chainrule[plot]\")") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(plt, fig, path, dpi=110):
    """Lay out, write and close a figure; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _curves(plt, history, key, title, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in ("train", "val"):
        values = history.get(f"{split}_{key}")
        if values:
            ax.plot(history["epoch"], values, marker="o", ms=3, label=split)
    ax.set(xlabel="epoch", ylabel=key, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(plt, fig, path)


def plot_history(history, folder):
    """loss.png, and <metric>.png for each metric in the history (train and validation)."""
    plt = pyplot()
    written = []
    keys = ["loss"] + sorted({k.split("_", 1)[1] for k in history
                              if k.startswith("train_") and k != "train_loss"})
    for key in keys:
        path = f"{folder}/{key}.png"
        _curves(plt, history, key, f"{key} per epoch", path)
        written.append(path)
    return written


def plot_decision_boundary(predict_scores, X, y, path, class_names=None, resolution=200):
    """Colour the plane by the predicted class of 2-D inputs, with the points on top.
    predict_scores: (m, 2) raw inputs -> (m, C) scores."""
    plt = pyplot()
    lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    classes = predict_scores(grid).argmax(1).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(gx, gy, classes, alpha=0.3, cmap="coolwarm", levels=np.arange(classes.max() + 2) - 0.5)
    scatter = ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=8, edgecolors="k", linewidths=0.2)
    if class_names:
        ax.legend(scatter.legend_elements()[0], class_names, loc="best", fontsize=8)
    ax.set(title="decision boundary", xlabel="x0", ylabel="x1")
    return save(plt, fig, path)


def plot_confusion_matrix(counts, path, class_names=None):
    plt = pyplot()
    n = len(counts)
    names = class_names or [str(i) for i in range(n)]
    side = 1.0 + 0.5 * n  # room for the title and labels even with two classes
    fig, ax = plt.subplots(figsize=(max(3.6, side), max(3.4, side - 0.2)))
    ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    return save(plt, fig, path)


def plot_health(health, path):
    """Four panels of a diagnostics.TrainingHealth's per-layer curves over the epochs; returns path."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    titles = {"grad_norm": "gradient norm ||dL/dW||", "update_ratio": "update ratio ||dW||/||W||",
              "dead": "dead ReLU units (fraction)", "saturated": "saturated sigmoid/tanh (fraction)"}
    epochs = health.history["epoch"]
    for ax, metric in zip(axes.ravel(), [k for k in health.history if k != "epoch"]):
        curves = health.history[metric]
        log = metric in ("grad_norm", "update_ratio") and any(
            v > 0 for values in curves.values() for v in values)
        for layer, values in curves.items():
            hidden = log and not any(v > 0 for v in values)  # all zero: off a log scale
            ax.plot(epochs[-len(values):], values, marker="o", ms=3,
                    label=layer + (" (0, not drawn)" if hidden else ""))
        if log:
            ax.set_yscale("log")
        if metric == "update_ratio":
            ax.axhline(1e-3, color="gray", ls="--", lw=1, label="1e-3 (healthy)")
        if metric in ("dead", "saturated"):
            ax.set_ylim(-0.03, 1.03)
        if not curves:
            ax.text(0.5, 0.5, "no such layers", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        elif len(curves) <= 12:
            ax.legend(fontsize=7)
        ax.set(title=titles[metric], xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    lines = health.verdict().split("\n")
    fig.suptitle(textwrap.fill("training health: " + lines[0], 110)
                 + (f"\n(and {len(lines) - 1} more findings)" if len(lines) > 1 else ""),
                 fontsize=9)
    return save(plt, fig, path)
