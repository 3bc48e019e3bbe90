"""Preprocessing that a trained model must repeat on new data: standardisation, one-hot targets."""
import numpy as np

from chainrule.errors import ShapeError


class Standardizer:
    """x -> (x - mean) / std per feature, fitted on training data; constant features keep std 1."""

    def __init__(self, mean=None, std=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)

    def fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.mean = X.mean(0).astype(np.float32)
        std = X.std(0)
        self.std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        if X.shape[1:] != self.mean.shape:
            raise ShapeError(f"standardize: data has {X.shape[1:]} features per row, the "
                             f"standardizer was fitted on {self.mean.shape}")
        return (X - self.mean) / self.std

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def state_dict(self):
        """Plain lists, for config.json."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state_dict(cls, state):
        return cls(state["mean"], state["std"])


def one_hot(y, num_classes):
    """int labels (n,) -> float32 (n, num_classes)."""
    y = np.asarray(y).reshape(-1)
    return (y[:, None] == np.arange(num_classes)).astype(np.float32)
