"""Step 5, backpropagation and the chain rule, made visible on a 2-3-2 MLP and 4 points.

1. cr.viz.graph draws the computation graph the forward pass recorded: one box per op with its
   output's shape, value and gradient; blue arrows carry values forward, red arrows carry
   gradients back (DOT text always; a PNG when Graphviz's `dot` is installed).
2. cr.explain prints the chain rule for one weight matrix: dL/dW1 as a product of local
   derivatives along the path loss <- z2 <- h1 <- z1 <- W1, and checks it equals autograd's.
3. The same gradient three ways: reverse mode (1 forward + 1 backward, whatever the number of
   parameters n), central finite differences (2n forward passes) and forward mode (n
   Jacobian-vector products). With many parameters and one loss, reverse mode wins.

Run: python examples/05_backprop.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule import nn
from chainrule.data import moons
from chainrule.errors import MissingDependency


def draw_graph(model, X, y, out):
    """One forward pass recorded, drawn; returns (loss, DOT text, path of the picture)."""
    with cr.viz.record() as tape:                  # keep every intermediate value for the labels
        loss = cr.cross_entropy(model(X), y)
    dot_path = os.path.join(out, "05_graph.dot")
    dot = cr.viz.graph(loss, model, path=dot_path, values=tape)
    try:
        picture = os.path.join(out, "05_graph.png")
        cr.viz.graph(loss, model, path=picture, values=tape)
    except MissingDependency as e:                  # Graphviz not installed: the DOT file is there
        print(f"(no PNG: {e})")
        picture = dot_path
    return loss, dot, picture


def flat_loss(model, X, y):
    """The loss as a function of one flat vector holding every parameter (for the comparison)."""
    shapes = [p.shape for p in model.parameters()]

    def loss(theta):
        params, i = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            params.append(theta[i:i + n].reshape(shape))
            i += n
        h = X
        for k in range(0, len(params), 2):        # H(l) = relu(H(l-1) W(l) + b(l)), logits last
            h = cr.linear(h, params[k], params[k + 1])
            if k + 2 < len(params):
                h = h.relu()
        return cr.cross_entropy(h, y)
    theta = cr.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, theta


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    cr.manual_seed(0)
    previous = cr.get_default_dtype()
    cr.set_default_dtype(cr.float64)  # float64, so finite differences agree to many digits
    try:
        model = nn.MLP([2, 3, 2])
        X, y = moons(4, seed=0)
        X = cr.tensor(X)

        # 1) the graph: forward (blue) and backward (red)
        loss, dot, picture = draw_graph(model, X, y, out)
        print(f"loss {loss.item():.4f}; the graph has {dot.count('[label=')} nodes: {picture}")

        # 2) the chain rule for dL/dW1, step by step, checked against autograd
        W1 = model.layers[0].weight
        explained = cr.explain(loss, wrt=W1, params=model).numpy()
        loss.backward()                            # autograd's answer, into W1.grad
        assert np.array_equal(explained, W1.grad.numpy())

        # 3) one gradient, three ways, and what each cost
        sizes = [[2, 3, 2]] if quick else [[2, 3, 2], [2, 16, 16, 2]]
        comparisons = {}
        for s in sizes:
            net = nn.MLP(s)
            fn, theta = flat_loss(net, X, y)
            result = cr.compare_gradient_methods(fn, theta)
            comparisons[theta.numel()] = result
            print(f"\nMLP {'-'.join(map(str, s))}: n = {theta.numel()} parameters\n{result}")
    finally:
        cr.set_default_dtype(previous)
    return dict(dot=dot, explained=explained, autograd=W1.grad.numpy(), comparisons=comparisons)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the gradient comparison on one small net")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
