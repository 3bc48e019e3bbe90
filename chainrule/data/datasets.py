"""Built-in datasets, none fetched from the network: scikit-learn's bundled ones and generated ones.

Each loads as `Splits`: fixed train / validation / test parts drawn by a seed, the task
(classification or regression) and names. `DATASETS` is the registry the command line lists.
"""
from dataclasses import dataclass, field

import numpy as np

from chainrule.data.dataset import TensorDataset
from chainrule.errors import ArgumentError, DataError


@dataclass
class Splits:
    """X arrays are float32 (n, d); y is int64 (n,) for classification, float32 (n, 1) for regression."""
    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list = field(default_factory=list)
    class_names: list = None

    @property
    def num_features(self):
        return self.X_train.shape[1]

    @property
    def num_classes(self):
        return len(self.class_names) if self.class_names else 0

    @property
    def train(self):
        return TensorDataset(self.X_train, self.y_train)

    @property
    def val(self):
        return TensorDataset(self.X_val, self.y_val)

    @property
    def test(self):
        return TensorDataset(self.X_test, self.y_test)


def make_splits(name, X, y, task, seed=0, val_fraction=0.15, test_fraction=0.15,
                feature_names=None, class_names=None):
    """Shuffle by `seed` and cut into train / validation / test parts."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[:, None]
    X = X.reshape(len(X), -1)
    if task == "classification":
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if class_names is None:
            class_names = [str(c) for c in range(int(y.max()) + 1)] if y.size else []
    else:
        y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    if len(X) != len(y):
        raise DataError(f"{name}: {len(X)} feature rows but {len(y)} targets")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ArgumentError(f"{name}: validation and test fractions must be in [0, 1) and sum below 1")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test, n_val = int(round(len(X) * test_fraction)), int(round(len(X) * val_fraction))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    names = feature_names or [f"x{i}" for i in range(X.shape[1])]
    return Splits(name, task, X[train], y[train], X[val], y[val], X[test], y[test],
                  list(names), class_names)


# ---- generated: the classic 2-D cases a linear model cannot separate ---------------------------
def moons(n=1000, noise=0.1, seed=0):
    """Two interleaved half circles."""
    rng = np.random.default_rng(seed)
    t, y = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    X = np.stack([np.where(y == 0, np.cos(t), 1 - np.cos(t)),
                  np.where(y == 0, np.sin(t), 0.5 - np.sin(t))], 1)
    return X + rng.normal(0, noise, X.shape), y


def circles(n=1000, noise=0.05, factor=0.5, seed=0):
    """A small circle inside a large one."""
    rng = np.random.default_rng(seed)
    t, y = rng.uniform(0, 2 * np.pi, n), rng.integers(0, 2, n)
    r = np.where(y == 0, 1.0, factor)
    X = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    return X + rng.normal(0, noise, X.shape), y


def spirals(n=1000, noise=0.05, turns=1.5, classes=2, seed=0):
    """`classes` interleaved spiral arms."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    r = rng.uniform(0.05, 1, n)
    t = r * turns * 2 * np.pi + y * 2 * np.pi / classes
    X = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    return X + rng.normal(0, noise, X.shape), y


def xor(n=1000, noise=0.1, seed=0):
    """Points in the four quadrants, labelled by the sign of x1 * x2."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    return X + rng.normal(0, noise, X.shape), y


def blobs(n=1000, centers=3, std=0.4, seed=0):
    """Gaussian clusters around `centers` points on a circle."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, centers, n)
    angle = 2 * np.pi * np.arange(centers) / centers
    mu = np.stack([np.cos(angle), np.sin(angle)], 1) * 2
    return mu[y] + rng.normal(0, std, (n, 2)), y


def sine(n=1000, noise=0.1, seed=0):
    """Regression: y = sin(x) + noise for x in [-pi, pi]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, (n, 1))
    return x, np.sin(x) + rng.normal(0, noise, x.shape)


# ---- scikit-learn's bundled data (inside its wheel, offline) -----------------------------------
def _sklearn(loader_name):
    def load():
        try:
            import sklearn.datasets
        except ImportError:
            raise DataError(f"this dataset ships with scikit-learn: pip install scikit-learn "
                            "(or pip install \"chainrule[data]\")") from None
        bunch = getattr(sklearn.datasets, loader_name)()
        names = [str(c) for c in getattr(bunch, "target_names", [])] or None
        return bunch.data, bunch.target, list(getattr(bunch, "feature_names", [])), names
    return load


@dataclass
class DatasetInfo:
    name: str
    task: str
    description: str
    load: object  # () -> (X, y, feature_names, class_names)


def _generated(fn, **kwargs):
    def load():
        X, y = fn(**kwargs)
        return X, y, None, None
    return load


DATASETS = {d.name: d for d in [
    DatasetInfo("digits", "classification", "8x8 handwritten digits, 1797 samples, 10 classes",
                _sklearn("load_digits")),
    DatasetInfo("iris", "classification", "iris flowers, 150 samples, 4 features, 3 classes",
                _sklearn("load_iris")),
    DatasetInfo("wine", "classification", "wine cultivars, 178 samples, 13 features, 3 classes",
                _sklearn("load_wine")),
    DatasetInfo("breast_cancer", "classification", "tumour diagnosis, 569 samples, 30 features",
                _sklearn("load_breast_cancer")),
    DatasetInfo("diabetes", "regression", "disease progression, 442 samples, 10 features",
                _sklearn("load_diabetes")),
    DatasetInfo("moons", "classification", "two interleaved half circles, 1000 points",
                _generated(moons)),
    DatasetInfo("circles", "classification", "a circle inside a circle, 1000 points",
                _generated(circles)),
    DatasetInfo("spirals", "classification", "two interleaved spirals, 1000 points",
                _generated(spirals)),
    DatasetInfo("xor", "classification", "the four-quadrant XOR, 1000 points", _generated(xor)),
    DatasetInfo("blobs", "classification", "three Gaussian clusters, 1000 points",
                _generated(blobs)),
    DatasetInfo("sine", "regression", "y = sin(x) + noise, 1000 points", _generated(sine)),
]}


def load_dataset(name, seed=0, val_fraction=0.15, test_fraction=0.15):
    """A built-in dataset by name (see DATASETS), split by `seed`."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS)}")
    info = DATASETS[name]
    X, y, features, classes = info.load()
    return make_splits(name, X, y, info.task, seed, val_fraction, test_fraction, features, classes)
