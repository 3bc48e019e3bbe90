"""Step 8, training health: is backpropagation reaching every layer, and are the units alive?

TrainingHealth is a `fit` callback that records, per layer and epoch, the gradient norm
||dL/dW||, the update ratio ||dW|| / ||W|| of each optimizer step, the fraction of ReLU units
that never fire and of sigmoid/tanh outputs stuck at the flat ends, then gives a verdict.
Three runs on the moons data show three outcomes:
  healthy   2-32-32-2 ReLU, Adam(lr=0.01)
  vanishing 8 hidden sigmoid layers, SGD: by the chain rule the gradient reaching layer 1 is a
            product of 8 factors sigmoid' <= 0.25 times weights, so it all but disappears
  dead      2-32-32-2 ReLU, SGD(lr=3): one huge step pushes units to where they never fire,
            and a ReLU that never fires gets no gradient (its derivative is 0) to recover

Run: python examples/08_training_health.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule import nn
from chainrule.data import moons
from chainrule.diagnostics import TrainingHealth
from chainrule.train import fit

RUNS = {  # name: (layer sizes, activation, optimizer class, learning rate)
    "healthy": ([2, 32, 32, 2], "relu", cr.optim.Adam, 1e-2),
    "vanishing": ([2] + [32] * 8 + [2], "sigmoid", cr.optim.SGD, 0.1),
    "dead": ([2, 32, 32, 2], "relu", cr.optim.SGD, 3.0),
}


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    X, y = moons(400 if quick else 1000, seed=0)
    X = X.astype(np.float32)
    verdicts, accuracy = {}, {}
    for name, (sizes, activation, optimizer, lr) in RUNS.items():
        cr.manual_seed(0)
        model = nn.MLP(sizes, activation=activation)
        health = TrainingHealth(model)                 # a callback: fit calls it after backward
        history = fit(model, (X, y), optimizer=optimizer(model.parameters(), lr=lr),
                      epochs=5 if quick else 20, batch_size=32, callbacks=[health],
                      progress=False)
        verdicts[name], accuracy[name] = health.verdict(), history["train_accuracy"][-1]
        cr.viz.plot_health(health, os.path.join(out, f"08_health_{name}.png"))
        print(f"{name}: MLP {'-'.join(map(str, sizes))} ({activation}), {optimizer.__name__}"
              f"(lr={lr}): accuracy {accuracy[name]:.3f}\n  "
              + verdicts[name].replace("\n", "\n  "))
    return dict(verdicts=verdicts, accuracy=accuracy)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="less data, 5 epochs")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
