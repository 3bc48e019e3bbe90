"""Step 3, activation functions and their derivatives, the derivatives drawn by autograd.

Each curve f(x) is chainrule's own activation; each derivative f'(x) is what backpropagation
uses: x.requires_grad_(), f(x).sum().backward(), then x.grad. Because every output y_i depends on
x_i only, d(sum_i y_i)/dx_i = f'(x_i): one backward pass gives the whole derivative curve.
No derivative here is written by hand.

Run: python examples/03_activations.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import chainrule as cr
from chainrule import nn
from chainrule.viz import pyplot
from chainrule.viz.plots import save

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid(),
    "tanh": nn.Tanh(),
    "ReLU": nn.ReLU(),
    "LeakyReLU(0.1)": nn.LeakyReLU(0.1),  # slope 0.1 (PyTorch's default is 0.01) to make it visible
    "ELU": nn.ELU(),
    "GELU": nn.GELU(),
    "SiLU": nn.SiLU(),
    "Softplus": nn.Softplus(),
}


def curves(points=401):
    """{name: (x, f(x), f'(x))} as float64 arrays on [-4, 4]."""
    result = {}
    for name, f in ACTIVATIONS.items():
        x = cr.linspace(-4, 4, points, dtype=cr.float64).requires_grad_()
        y = f(x)
        y.sum().backward()           # x.grad[i] = dy_i/dx_i: the local derivative backprop uses
        result[name] = (x.numpy(), y.detach().numpy(), x.grad.numpy())
    return result


def plot(result, path):
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.2), sharex=True)
    for ax, (name, (x, y, dy)) in zip(axes.ravel(), result.items()):
        ax.plot(x, y, label="f(x)")
        ax.plot(x, dy, "--", label="f'(x) (autograd)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(title=name, ylim=(-1.5, 4.2))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    save(plt, fig, path, dpi=100)


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    result = curves(101 if quick else 401)
    for name, (x, y, dy) in result.items():
        i = len(x) // 2  # x = 0
        print(f"{name:15s} f(0) = {y[i]:.4f}   f'(0) = {dy[i]:.4f}   f'(-4) = {dy[0]:.4f}   "
              f"f'(4) = {dy[-1]:.4f}")
    plot(result, os.path.join(out, "03_activations.png"))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points per curve")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
