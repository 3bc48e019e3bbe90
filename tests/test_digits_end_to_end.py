"""End to end: MLP([64, 128, 64, 10]) trained with Adam on scikit-learn's bundled digits
(offline) reaches >= 97% accuracy on a held-out 20% split."""
import time

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.nn import functional as F

datasets = pytest.importorskip("sklearn.datasets")


def _split(seed=0):
    x, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8  # statistics of the training part only
    x = ((x - mean) / std).astype(np.float32)
    return x[train], y[train], x[test], y[test]


def test_mlp_adam_digits_reaches_97_percent():
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = _split()
    cr.manual_seed(0)
    model = nn.MLP([64, 128, 64, 10])
    opt = cr.optim.Adam(model.parameters(), lr=1e-3)
    order_rng = np.random.default_rng(1)
    losses = []
    for epoch in range(30):
        model.train()
        for idx in np.array_split(order_rng.permutation(len(x_train)), len(x_train) // 32):
            loss = F.cross_entropy(model(cr.tensor(x_train[idx])), cr.tensor(y_train[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    model.eval()
    with cr.no_grad():
        predicted = model(cr.tensor(x_test)).argmax(1).numpy()
    accuracy = (predicted == y_test).mean()
    assert accuracy >= 0.97, f"test accuracy {accuracy:.4f}"
    assert losses[-1] < losses[0]
    assert time.perf_counter() - start < 30
