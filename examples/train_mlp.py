"""Train a 2-16-16-2 multi-layer perceptron on two-moons data with chainrule's autograd alone.

    H1 = relu(X W1 + b1), H2 = relu(H1 W2 + b2), O = H2 W3 + b3, loss = cross_entropy(O, y)

Run: python examples/train_mlp.py [--steps 2000] [--seed 0]
"""
import argparse

import numpy as np

import chainrule as cr


def two_moons(n, noise=0.1, seed=0):
    """n points on two interleaved half circles, labels 0/1 (the classic non-linear case)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(label == 0, np.cos(t), 1 - np.cos(t))
    y = np.where(label == 0, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], 1) + rng.normal(0, noise, (n, 2))
    return pts.astype(np.float32), label.astype(np.int64)


def init_layer(n_in, n_out):
    """PyTorch's default: U(-1/sqrt(n_in), 1/sqrt(n_in)) for weights (n_in, n_out) and bias."""
    bound = 1 / np.sqrt(n_in)
    w = (cr.rand(n_in, n_out) * 2 - 1) * bound
    b = (cr.rand(n_out) * 2 - 1) * bound
    return w.requires_grad_(), b.requires_grad_()


def main(steps=2000, seed=0, lr=0.1, batch=32):
    cr.manual_seed(seed)
    x, y = two_moons(2000, seed=seed)
    params = [p for sizes in [(2, 16), (16, 16), (16, 2)] for p in init_layer(*sizes)]

    def forward(xb):
        h = xb
        for i in range(0, len(params) - 2, 2):
            h = (h @ params[i] + params[i + 1]).relu()
        return h @ params[-2] + params[-1]

    rng = np.random.default_rng(seed)
    for step in range(steps + 1):
        idx = rng.integers(0, len(x), batch)
        loss = cr.cross_entropy(forward(cr.tensor(x[idx])), y[idx])
        for p in params:
            p.grad = None
        loss.backward()
        with cr.no_grad():
            for p in params:
                p -= lr * p.grad
        if step % (steps // 5 or 1) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")
    with cr.no_grad():
        accuracy = (forward(cr.tensor(x)).argmax(1).numpy() == y).mean()
    print(f"train accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    main(**vars(ap.parse_args()))
