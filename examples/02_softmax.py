"""Step 2, softmax and one-hot inference.

softmax(o)_j = exp(o_j) / sum_k exp(o_k) turns a row of scores (logits) into probabilities.
Written naively, exp overflows for scores above ~709 (float64) or ~88 (float32). Subtracting the
row maximum first gives the same result (the factor exp(-max) cancels) and never overflows.
Inference then picks the most probable class: argmax, shown as a one-hot row.

Run: python examples/02_softmax.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule.viz import pyplot
from chainrule.viz.plots import save

CLASSIC = [[1.0, 2.0, 0.0], [-1.0, 0.0, 1.0], [-10.0, 0.0, 10.0]]


def softmax_naive(o):
    e = np.exp(o)                                  # overflows to inf for large scores
    return e / e.sum(axis=1, keepdims=True)        # inf / inf = nan


def softmax_stable(o):
    e = np.exp(o - o.max(axis=1, keepdims=True))   # the largest exponent is now exp(0) = 1
    return e / e.sum(axis=1, keepdims=True)


def plot(logits, probs, one_hot, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(logits), figsize=(3.2 * len(logits), 2.8), sharey=True)
    for ax, o, p, h in zip(axes, logits, probs, one_hot):
        bars = ax.bar(range(len(p)), p, color=["tab:red" if k else "tab:blue" for k in h])
        ax.bar_label(bars, [f"{v:.4g}" for v in p], fontsize=8)
        ax.set(title=f"logits {o.astype(int).tolist()}", xticks=range(len(p)),
               xlabel="class (red: argmax)", ylim=(0, 1.15))
    axes[0].set_ylabel("softmax probability")
    save(plt, fig, path, dpi=100)


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)

    # 1) large scores: the naive formula overflows, the stable one does not
    big = np.array([[1000.0, 1001.0, 1002.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        naive = softmax_naive(big)
    stable = softmax_stable(big)
    print(f"scores {big[0]}:\n  naive  {naive[0]}   (exp(1000) = inf, inf / inf = nan)"
          f"\n  stable {stable[0]}")

    # 2) the classic 3x3 example; cr.softmax is the engine's stable primitive (ops/reduce.py)
    logits = np.array(CLASSIC)
    probs = cr.softmax(cr.tensor(logits, dtype=cr.float64), dim=1).numpy()
    assert np.allclose(probs, softmax_stable(logits)) and np.allclose(probs.sum(1), 1)
    with np.printoptions(precision=4):
        print(f"softmax of\n{logits}\n=\n{probs}")  # each row sums to 1

    # 3) inference: the predicted class is the argmax; as a one-hot row (원-핫)
    predicted = cr.tensor(probs).argmax(dim=1)
    one_hot = cr.one_hot(predicted, num_classes=3).numpy()
    print(f"argmax {predicted.numpy()} -> one-hot\n{one_hot}")
    plot(logits, probs, one_hot, os.path.join(out, "02_softmax.png"))
    return dict(naive=naive, stable=stable, probs=probs, predicted=predicted.numpy(),
                one_hot=one_hot)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="(no effect: this example is instant)")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
