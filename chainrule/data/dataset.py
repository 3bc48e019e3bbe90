"""Datasets and the DataLoader that batches them (PyTorch's names and semantics)."""
import abc
import math

import numpy as np

from chainrule.errors import ArgumentError, ShapeError
from chainrule.random import rng
from chainrule.tensor import Tensor


class Dataset(abc.ABC):
    """Anything with `__len__` and `__getitem__(i)`; define `__getitems__(indices)` to batch fast."""

    @abc.abstractmethod
    def __getitem__(self, index):
        """Sample `index`, e.g. a tuple (features, target)."""

    @abc.abstractmethod
    def __len__(self):
        """The number of samples."""


class TensorDataset(Dataset):
    """Rows of equally long arrays or Tensors: item i is (a[i], b[i], ...)."""

    def __init__(self, *tensors):
        if not tensors:
            raise ArgumentError("TensorDataset: give at least one tensor")
        arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
        if len({len(a) for a in arrays}) != 1:
            raise ShapeError("TensorDataset: tensors differ in their first dimension: "
                             + ", ".join(str(a.shape) for a in arrays))
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(Tensor._make(np.asarray(a[index])) for a in self.arrays)

    def __getitems__(self, indices):
        """A whole batch with one gather per array: `take` for an integer array of indices (what
        DataLoader passes; for rows of a few columns 10x faster than fancy indexing, bench W2's
        2-feature rows, 20 % for W1's 784), else NumPy indexing (masks, slices, lists)."""
        if isinstance(indices, np.ndarray) and indices.dtype.kind in "iu":
            return tuple([Tensor._make(a.take(indices, axis=0)) for a in self.arrays])
        return tuple([Tensor._make(a[indices]) for a in self.arrays])


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices):
        return _fetcher(self.dataset)(self.indices[indices])


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping Subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    lengths = list(lengths)
    if all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1) < 1e-6:
        sizes = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):  # hand out the remainder round-robin, as PyTorch
            sizes[i % len(sizes)] += 1
        lengths = sizes
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ArgumentError(f"random_split: lengths {lengths} must be non-negative and add up to "
                            f"the dataset's {n} (or be fractions summing to 1)")
    order = rng(generator).permutation(n)
    bounds = np.cumsum([0] + lengths)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _fetcher(dataset):
    """indices -> batch: the dataset's `__getitems__`, or its samples collated."""
    getitems = getattr(dataset, "__getitems__", None)
    return getitems or (lambda indices: _collate([dataset[int(i)] for i in indices]))


def _collate(items):
    """Stack a list of samples (Tensors, arrays, numbers, or tuples of them) into a batch."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(_collate([it[k] for it in items]) for k in range(len(first)))
    return Tensor._make(np.stack([it.data if isinstance(it, Tensor) else np.asarray(it) for it in items]))


class DataLoader:
    """Iterate over `dataset` in batches; `shuffle` draws a new order each epoch from `generator`
    (the default generator when None), so `cr.manual_seed` makes the order reproducible."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None):
        if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                or batch_size < 1):
            raise ArgumentError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = rng(self.generator).permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        fetch, size = _fetcher(self.dataset), self.batch_size
        group = size * self._batches_per_fetch()
        for start in range(0, stop, group):
            if group == size:  # not kept in a local: the batch goes when its user drops it
                yield fetch(order[start:start + size])
                continue
            batches = fetch(order[start:min(start + group, stop)])
            for s in range(0, len(batches[0].data), size):  # the group's batches, as views
                yield tuple([Tensor._make(t.data[s:s + size]) for t in batches])

    def _batches_per_fetch(self):
        """Small batches of a TensorDataset are gathered many at a time (about 1 MiB, one fancy
        index per array) and handed out as slices: per batch, two slices instead of two
        scattered gathers (bench W2: its 32-row batches). A batch over 64 KiB is fetched alone,
        so that it stays its own array (what backward keeps of it is just it)."""
        if type(self.dataset) is not TensorDataset:
            return 1
        row = sum(a.itemsize * math.prod(a.shape[1:]) for a in self.dataset.arrays)
        if row * self.batch_size > _SMALL_BATCH:
            return 1
        return max(1, _FETCH_BYTES // max(row * self.batch_size, 1))


_SMALL_BATCH, _FETCH_BYTES = 1 << 16, 1 << 20
