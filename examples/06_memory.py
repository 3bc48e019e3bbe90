"""Step 6, memory: what backpropagation keeps, and how to keep less.

Backward needs, at every layer, numbers from the forward pass: Linear's gradient dL/dW =
(dL/dZ)^T H needs its input H, ReLU's derivative 1[z > 0] needs its output. Each op saves them
with ctx.save_for_backward, so a training step holds one activation per layer and per sample
until backward has used it. cr.memory.ledger measures those saved arrays, layer by layer, next
to the same forward under no_grad (inference: nothing saved) and the process's peak allocation
(tracemalloc). Gradient checkpointing (cr.checkpoint, here through checkpoint_sequential) keeps
only each segment's input and recomputes the inside during backward: less memory, more compute,
and bitwise the same gradients.

Run: python examples/06_memory.py [--quick] [--out DIR]   (figures go to DIR, default ./figures)
"""
import argparse
import os

import numpy as np

import chainrule as cr
from chainrule import nn
from chainrule.memory import checkpoint_sequential
from chainrule.viz import pyplot
from chainrule.viz.plots import save


def gradients(loss_fn, model, x, y):
    model.zero_grad()
    loss_fn(x, y).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def plot(plain, checkpointed, segments, path):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    names = [name for name, _, _, _ in plain.layers]
    a1.bar(range(len(names)), [b / 1024 for _, _, _, b in plain.layers], color="tab:blue")
    a1.set_xticks(range(len(names)), [n.replace("layers.", "") if n.startswith("layers.") else
                                      "loss" for n in names], fontsize=7)
    a1.set(xlabel="module (layers.k; ReLU outputs are what Linear and ReLU both need)",
           ylabel="KiB saved for backward", title="what one training step keeps, per layer")
    bars = {"with grad": plain.saved_bytes, f"checkpointed\n({segments} segments)":
            checkpointed.saved_bytes, "no_grad": plain.no_grad_saved_bytes}
    a2.bar(range(3), [b / 1024 for b in bars.values()], color=["tab:blue", "tab:green", "gray"],
           label="saved for backward (ledger)")
    a2.plot(range(3), [plain.peak_bytes / 1024, checkpointed.peak_bytes / 1024,
                       plain.no_grad_peak_bytes / 1024], "ko", label="peak during forward (tracemalloc)")
    a2.set_xticks(range(3), list(bars), fontsize=8)
    a2.set(ylabel="KiB", title="totals")
    a2.legend(fontsize=7)
    for ax in (a1, a2):
        ax.grid(alpha=0.3, axis="y")
    save(plt, fig, path, dpi=100)


def main(quick=False, out=None):
    out = out or "figures"
    os.makedirs(out, exist_ok=True)
    cr.manual_seed(0)
    width, depth, batch = (64, 8, 32) if quick else (256, 16, 128)
    model = nn.MLP([64] + [width] * depth + [10])
    x = cr.randn(batch, 64)
    y = np.random.default_rng(0).integers(0, 10, batch)
    segments = 4

    def step(x, y):                                 # a training step's forward: the loss
        return cr.cross_entropy(model(x), y)

    def step_checkpointed(x, y):                    # the same, keeping only segment inputs
        return cr.cross_entropy(checkpoint_sequential(model.layers, segments, x), y)

    plain = cr.memory.ledger(step, x, y, model=model)
    print(plain)
    checkpointed = cr.memory.ledger(step_checkpointed, x, y, model=model)
    factor = plain.saved_bytes / checkpointed.saved_bytes
    print(f"\ncheckpointing in {segments} segments: {checkpointed.saved_bytes:,} bytes saved "
          f"instead of {plain.saved_bytes:,} ({factor:.2f}x less)")

    same = all(np.array_equal(a, b) for a, b in zip(gradients(step, model, x, y),
                                                    gradients(step_checkpointed, model, x, y)))
    print(f"gradients with and without checkpointing bitwise equal: {same}")
    assert same and plain.no_grad_saved_bytes == 0
    per_sample = plain.saved_bytes / batch
    print(f"activation memory per sample: {per_sample:,.0f} bytes "
          f"(`chainrule info RUN` prints this per layer for a trained model)")
    plot(plain, checkpointed, segments, os.path.join(out, "06_memory.png"))
    return dict(saved_bytes=plain.saved_bytes, no_grad_saved_bytes=plain.no_grad_saved_bytes,
                checkpointed_saved_bytes=checkpointed.saved_bytes, factor=factor,
                same_gradients=same, peak_bytes=plain.peak_bytes)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a narrower, shallower net")
    ap.add_argument("--out", default="figures", help="folder for the figures (default ./figures)")
    main(**vars(ap.parse_args()))
