"""Metrics on NumPy arrays: predictions against targets, for `fit`, `evaluate` and the CLI.

Classification metrics take logits or probabilities (n, C) and integer targets (n,);
regression metrics take predictions and targets of the same shape.
"""
import numpy as np

from chainrule.errors import ArgumentError, ShapeError


def _classes(scores):
    return scores.argmax(axis=1) if scores.ndim == 2 else (scores > 0).astype(np.int64)


def accuracy(scores, targets):
    return float((_classes(scores) == targets).mean())


def top_k_accuracy(scores, targets, k=5):
    """Fraction of rows whose target is among the k highest scores."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == targets[:, None]).any(axis=1).mean())


def confusion_matrix(scores, targets, num_classes=None):
    """counts[i, j] = number of samples of class i predicted as class j."""
    pred = _classes(scores)
    n = num_classes or int(max(pred.max(initial=0), targets.max(initial=0))) + 1
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (targets, pred), 1)
    return counts


def precision_recall_f1(scores, targets, num_classes=None):
    """Macro averages over classes (a class never predicted has precision 0, as scikit-learn)."""
    cm = confusion_matrix(scores, targets, num_classes or (scores.shape[1] if scores.ndim == 2 else 2))
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (cm.sum(1) > 0) | (cm.sum(0) > 0)  # classes in targets or predictions, as scikit-learn
    return (float(precision[present].mean()), float(recall[present].mean()),
            float(f1[present].mean()))


def mse(pred, targets):
    return float(np.mean((pred - targets) ** 2))


def mae(pred, targets):
    return float(np.mean(np.abs(pred - targets)))


def r2(pred, targets):
    """1 - SS_res / SS_tot (1 is perfect, 0 is predicting the mean), averaged over output columns
    as scikit-learn; a constant target column scores 1 if predicted exactly, else 0."""
    pred, targets = np.asarray(pred, np.float64), np.asarray(targets, np.float64)
    if targets.ndim == 1:
        pred, targets = pred.reshape(-1, 1), targets.reshape(-1, 1)
    ss_res = np.sum((pred - targets) ** 2, axis=0)
    ss_tot = np.sum((targets - targets.mean(0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(score.mean())


METRICS = {
    "accuracy": accuracy,
    "top5_accuracy": lambda s, t: top_k_accuracy(s, t, 5),
    "top3_accuracy": lambda s, t: top_k_accuracy(s, t, 3),
    "precision": lambda s, t: precision_recall_f1(s, t)[0],
    "recall": lambda s, t: precision_recall_f1(s, t)[1],
    "f1": lambda s, t: precision_recall_f1(s, t)[2],
    "mse": mse,
    "mae": mae,
    "r2": r2,
}
HIGHER_IS_BETTER = {"accuracy", "top5_accuracy", "top3_accuracy", "precision", "recall", "f1", "r2"}


def compute(names, scores, targets):
    """{name: value} for the named metrics."""
    out = {}
    for name in names:
        if name not in METRICS:
            raise ArgumentError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if name in ("mse", "mae", "r2") and scores.shape != targets.shape:
            raise ShapeError(f"{name}: predictions {scores.shape} and targets {targets.shape} differ")
        out[name] = METRICS[name](scores, targets)
    return out
