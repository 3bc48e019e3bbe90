"""Step 1, the linear model: O = X W + b, fitted two ways, then its limit on curved data.

Part 1 (regression, scikit-learn's bundled diabetes data: 442 patients, 10 features):
least squares in closed form (numpy.linalg.lstsq on [X, 1]) and by full-batch gradient descent
with chainrule's autograd. Both reach the same W and b to a stated tolerance.

Part 2 (classification): a linear softmax classifier, nn.Linear(2, 2) + cross-entropy, on the
moons and circles data. Its decision boundary is a straight line, so it cannot separate them:
that is why step 4 adds hidden layers and activations.

Run: python examples/01_linear_model.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule import nn
from chainrule.data import circles, moons
from chainrule.train import fit, predict
from chainrule.viz import plot_decision_boundary, pyplot
from chainrule.viz.plots import save

TOLERANCE = 1e-3  # max |W_gd - W_closed| allowed, in units of the target (disease progression, ~150)


def least_squares_two_ways(steps=6000):
    """Closed form and gradient descent on the standardised diabetes features."""
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)              # X (442, 10), y (442,)
    X = (X - X.mean(0)) / X.std(0)                     # standardised: mean 0, std 1 per feature
    y = y.reshape(-1, 1)                               # p = 1 output: y (n, p)

    # 1) closed form: append a column of ones so the bias is one more weight, then solve
    #    min ||[X, 1] [W; b] - y||^2 exactly
    A = np.hstack([X, np.ones((len(X), 1))])
    Wb, *_ = np.linalg.lstsq(A, y, rcond=None)
    W_closed, b_closed = Wb[:-1], Wb[-1]
    loss_closed = float(np.mean((A @ Wb - y) ** 2))

    # 2) gradient descent: the same model O = X W + b, the gradient from autograd
    Xt, yt = cr.tensor(X, dtype=cr.float64), cr.tensor(y, dtype=cr.float64)
    W = cr.zeros(10, 1, dtype=cr.float64, requires_grad=True)   # d x p weights
    b = cr.zeros(1, dtype=cr.float64, requires_grad=True)       # one bias per output, broadcast to every row
    # step size 1/L, L = the largest curvature of the loss (the top eigenvalue of 2 A^T A / n)
    lr = 1 / np.linalg.eigvalsh(2 * A.T @ A / len(A)).max()
    losses = []
    for _ in range(steps):
        O = Xt @ W + b                                 # forward: the linear model
        loss = ((O - yt) ** 2).mean()                  # mean squared error
        W.grad = b.grad = None
        loss.backward()                                # dloss/dW, dloss/db by the chain rule
        with cr.no_grad():                             # the update itself is not recorded
            W -= lr * W.grad
            b -= lr * b.grad
        losses.append(loss.item())
    W_gd, b_gd = W.numpy(), b.numpy()
    max_diff = float(np.abs(np.vstack([W_gd, b_gd]) - Wb).max())
    return dict(W_closed=W_closed.ravel(), b_closed=float(b_closed[0]), W_gd=W_gd.ravel(),
                b_gd=float(b_gd[0]), max_diff=max_diff, losses=losses, loss_closed=loss_closed,
                lr=lr)


def linear_classifier(X, y, epochs):
    """nn.Linear(2, 2): two scores per point, softmax cross-entropy; returns (model, accuracy)."""
    model = nn.Linear(2, 2)
    fit(model, (X, y), loss="cross_entropy", optimizer=cr.optim.Adam(model.parameters(), lr=0.05),
        epochs=epochs, batch_size=64, progress=False)
    accuracy = float((predict(model, X).argmax(1) == y).mean())
    return model, accuracy


def plot_loss(result, path):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = np.arange(1, len(result["losses"]) + 1)
    a1.semilogx(steps, result["losses"], label="gradient descent")
    a1.axhline(result["loss_closed"], color="k", ls="--", lw=1, label="closed form (lstsq)")
    a1.set(xlabel="step", ylabel="mean squared error", ylim=(0, 4 * result["loss_closed"]),
           title="loss (log step axis)")
    a1.legend()
    excess = np.maximum(np.array(result["losses"]) - result["loss_closed"], 1e-16)
    a2.semilogy(steps, excess)
    a2.set(xlabel="step", ylabel="loss - least-squares minimum", title="distance to the optimum")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    save(plt, fig, path, dpi=100)


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    cr.manual_seed(0)

    ls = least_squares_two_ways(steps=6000)  # 442 x 10: fast enough even with --quick
    print("least squares on diabetes (standardised features)")
    with np.printoptions(precision=3, suppress=True, linewidth=120):
        print(f"  closed form      W = {ls['W_closed']}  b = {ls['b_closed']:.3f}")
        print(f"  gradient descent W = {ls['W_gd']}  b = {ls['b_gd']:.3f}")
    print(f"  max |difference| = {ls['max_diff']:.2e}  (tolerance {TOLERANCE:g})")
    assert ls["max_diff"] < TOLERANCE, "gradient descent did not reach the least-squares solution"
    plot_loss(ls, os.path.join(out, "01_linear_loss.png"))

    accuracy = {}
    for name, make in [("moons", moons), ("circles", circles)]:
        X, y = make(n=400 if quick else 1000, seed=0)
        X = X.astype(np.float32)
        model, accuracy[name] = linear_classifier(X, y, epochs=10 if quick else 40)
        plot_decision_boundary(lambda g: predict(model, g), X, y,
                               os.path.join(out, f"01_linear_{name}.png"))
        print(f"linear softmax classifier on {name}: training accuracy {accuracy[name]:.3f}")
    return dict(max_diff=ls["max_diff"], tolerance=TOLERANCE, accuracy=accuracy,
                W_closed=ls["W_closed"], W_gd=ls["W_gd"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
