"""Step 4, the multi-layer perceptron and forward propagation.

Forward propagation through L layers: H(0) = X, H(l) = sigma(H(l-1) W(l) + b(l)) for the hidden
layers, and O = H(L-1) W(L) + b(L) (logits, no activation) at the end. nn.MLP([2, 16, 16, 2],
"tanh") builds exactly that. With hidden layers and an activation, the moons and circles that
defeated the linear classifier of step 1 are separated.

Without activations the stack collapses: (X W1 + b1) W2 + b2 = X (W1 W2) + (b1 W2 + b2), so any
number of Linear layers is one linear map. We compose the weights and check it numerically.
(nn.Linear stores weight as (out, in) and computes x @ weight.T + bias, so W(l) = weight.T.)

Run: python examples/04_mlp.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule import nn
from chainrule.data import circles, moons
from chainrule.train import fit, predict
from chainrule.viz import plot_decision_boundary

TOLERANCE = 1e-10  # float64: the stack and the composed map agree up to rounding


def forward_by_hand(mlp, X):
    """H(l) = sigma(H(l-1) W(l) + b(l)), written out: what nn.MLP's Sequential does."""
    H = cr.tensor(X)
    linears = [m for m in mlp.layers if isinstance(m, nn.Linear)]
    for l, layer in enumerate(linears, 1):
        Z = H @ layer.weight.T + layer.bias          # pre-activation of layer l
        H = Z if l == len(linears) else Z.tanh()     # sigma on hidden layers, logits at the end
    return H


def classify(X, y, epochs):
    model = nn.MLP([2, 16, 16, 2], activation="tanh")
    fit(model, (X, y), loss="cross_entropy", optimizer=cr.optim.Adam(model.parameters(), lr=0.02),
        epochs=epochs, batch_size=32, progress=False)
    return model, float((predict(model, X).argmax(1) == y).mean())


def composed_linear_identity(depth=5, width=8):
    """A stack of `depth` Linear layers with no activation equals one Linear map; returns the
    largest output difference."""
    stack = nn.Sequential(*[nn.Linear(2 if i == 0 else width, 2 if i == depth - 1 else width,
                                      dtype=cr.float64) for i in range(depth)])
    W_eff, b_eff = np.eye(2), np.zeros(2)            # start from the identity map x -> x
    for layer in stack:                              # x W_eff + b_eff  ->  (x W_eff + b_eff) W + b
        W = layer.weight.numpy().T                   # W(l): (in, out)
        W_eff, b_eff = W_eff @ W, b_eff @ W + layer.bias.numpy()
    X = np.random.default_rng(0).normal(size=(50, 2))
    with cr.no_grad():
        deep = stack(cr.tensor(X)).numpy()
    single = X @ W_eff + b_eff                       # one linear model O = X W + b
    return float(np.abs(deep - single).max()), W_eff, b_eff


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    cr.manual_seed(0)
    accuracy = {}
    for name, make in [("moons", moons), ("circles", circles)]:
        X, y = make(n=400 if quick else 1000, seed=0)
        X = X.astype(np.float32)
        model, accuracy[name] = classify(X, y, epochs=25 if quick else 60)
        by_hand = forward_by_hand(model, X[:5]).detach().numpy()
        assert np.allclose(by_hand, predict(model, X[:5]), atol=1e-5)  # the equation is the model
        plot_decision_boundary(lambda g: predict(model, g), X, y,
                               os.path.join(out, f"04_mlp_{name}.png"))
        print(f"MLP 2-16-16-2 (tanh) on {name}: training accuracy {accuracy[name]:.3f}")

    max_diff, W_eff, b_eff = composed_linear_identity()
    print(f"5 Linear layers without activations = one linear map: W_eff =\n{W_eff}\n"
          f"b_eff = {b_eff}; max |stack(X) - (X W_eff + b_eff)| = {max_diff:.1e} "
          f"(tolerance {TOLERANCE:g})")
    assert max_diff < TOLERANCE
    return dict(accuracy=accuracy, linear_stack_max_diff=max_diff, tolerance=TOLERANCE)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
