"""The workloads of issue 6: data, initial weights and hyper-parameters, the same for every system.

Every training workload is "E epochs over n samples in batches of B": epoch e visits the samples
in the order of the e-th permutation drawn from `cr.Generator(seed)` (what `cr.fit`'s DataLoader
draws), the last batch of an epoch being smaller when B does not divide n. Each system draws the
permutations itself, inside its timed run, with `np.random.Generator(PCG64(seed))`, which is the
same stream (`check_orders` asserts it).

Initial weights are drawn once, in PyTorch's layout (weight (out, in), bias (out,)) from
U(-1/sqrt(in), 1/sqrt(in)), as float32; each system copies them into its own layout.
"""
from dataclasses import dataclass, field

import numpy as np

SEED = 0


@dataclass
class Spec:
    name: str
    kind: str                    # "train" or "infer"
    sizes: tuple                 # layer widths, input first
    batch: int
    X: np.ndarray                # (n, sizes[0]) float32
    y: np.ndarray                # (n,) int64 class labels
    weights: list                # [(W (out, in), b (out,)), ...] float32
    lr: float = 0.01
    epochs: int = 1              # the most epochs (W6 stops earlier, at `target_accuracy`)
    optimizer: str = "sgd"       # "sgd" (plain: no momentum, no weight decay) or "adam"
    seed: int = SEED
    X_test: np.ndarray = None    # W6: the test split the accuracy target is measured on
    y_test: np.ndarray = None
    target_accuracy: float = None
    description: str = ""
    notes: list = field(default_factory=list)

    @property
    def n(self):
        return len(self.X)

    @property
    def steps(self):
        return self.epochs * -(-self.n // self.batch)


def permutations(seed, n):
    """Each epoch's order: the stream `cr.Generator(seed).rng.permutation(n)` draws."""
    rng = np.random.Generator(np.random.PCG64(seed))
    while True:
        yield rng.permutation(n)


def check_orders(spec):
    import chainrule as cr
    g, ours = cr.Generator(spec.seed), permutations(spec.seed, spec.n)
    for _ in range(min(spec.epochs, 2)):
        assert np.array_equal(g.rng.permutation(spec.n), next(ours)), "batch orders differ"


def init_weights(sizes, rng):
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(n_in)
        weights.append((rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                        rng.uniform(-bound, bound, n_out).astype(np.float32)))
    return weights


def teacher_data(n, d, k, rng):
    """Gaussian inputs labelled by a random linear teacher (so training has something to learn)."""
    X = rng.standard_normal((n, d), dtype=np.float32)
    teacher = rng.standard_normal((d, k), dtype=np.float32)
    return X, np.argmax(X @ teacher, 1).astype(np.int64)


def two_moons(n, rng, noise=0.1):
    t, label = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    pts = np.stack([np.where(label == 0, np.cos(t), 1 - np.cos(t)),
                    np.where(label == 0, np.sin(t), 0.5 - np.sin(t))], 1)
    return (pts + rng.normal(0, noise, (n, 2))).astype(np.float32), label.astype(np.int64)


# sizes, batch, samples per epoch: full run and --quick
SHAPES = {
    "W1": dict(full=((784, 256, 128, 10), 128, 60_000), quick=((784, 256, 128, 10), 128, 2_560)),
    "W2": dict(full=((2, 16, 16, 2), 32, 64_000), quick=((2, 16, 16, 2), 32, 6_400)),
    "W3": dict(full=((1024, 4096, 4096, 10), 512, 10_240), quick=((256, 512, 512, 10), 64, 320)),
    "W4": dict(full=((784, 256, 128, 10), 1_000, 60_000), quick=((784, 256, 128, 10), 1_000, 5_000)),
}
W6 = dict(full=dict(target=0.95, max_epochs=100), quick=dict(target=0.85, max_epochs=20))
W6_HIDDEN, W6_BATCH, W6_LR = (128, 64), 64, 1e-3   # `chainrule train`'s defaults


def make(name, quick=False):
    """The Spec of workload `name` (W1-W4, W6; W5 is measured by bench/memory.py)."""
    if name == "W6":
        return _digits(quick)
    sizes, batch, n = SHAPES[name]["quick" if quick else "full"]
    rng = np.random.default_rng(SEED + int(name[1:]))
    if name == "W2":
        X, y = two_moons(n, rng)
    else:
        X, y = teacher_data(n, sizes[0], sizes[-1], rng)
    weights = init_weights(sizes, rng)
    arch = "-".join(map(str, sizes))
    if name == "W4":
        return Spec(name, "infer", sizes, batch, X, y, weights,
                    description=f"inference, MLP {arch}, {n:,} samples, batch {batch}, no_grad")
    what = {"W1": "one epoch", "W2": "two-moons, one epoch", "W3": "one epoch"}[name]
    return Spec(name, "train", sizes, batch, X, y, weights, lr=0.01,
                description=f"train MLP {arch}, ReLU, softmax CE, SGD lr 0.01, batch {batch}, "
                            f"{what} of {n:,} samples ({-(-n // batch):,} steps)")


def _digits(quick):
    """W6: digits split and standardised as `chainrule train` does (seed 0, 15 % val, 15 % test)."""
    from chainrule.data import Standardizer, load_dataset
    splits = load_dataset("digits", SEED, 0.15, 0.15)
    std = Standardizer().fit(splits.X_train)
    sizes = (splits.num_features, *W6_HIDDEN, splits.num_classes)
    cfg = W6["quick" if quick else "full"]
    weights = init_weights(sizes, np.random.default_rng(SEED + 6))
    return Spec("W6", "train", sizes, W6_BATCH, std.transform(splits.X_train),
                splits.y_train.astype(np.int64), weights, lr=W6_LR, epochs=cfg["max_epochs"],
                optimizer="adam", X_test=std.transform(splits.X_test),
                y_test=splits.y_test.astype(np.int64), target_accuracy=cfg["target"],
                description=f"digits ({len(splits.X_train)} train / {len(splits.X_test)} test), "
                            f"MLP {'-'.join(map(str, sizes))}, Adam lr {W6_LR}, batch {W6_BATCH}: "
                            f"time to test accuracy >= {cfg['target']} (checked after each epoch)")
