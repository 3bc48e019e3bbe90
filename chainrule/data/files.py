"""Loaders for standard files: CSV (header + target column), NPZ (X, y) and IDX (MNIST's format).

Each returns (X float32 (n, d), y, feature_names, class_names or None, task).
"""
import csv
import gzip
import os

import numpy as np

from chainrule.errors import DataError

CLASSIFICATION, REGRESSION = "classification", "regression"


def infer_task(y):
    """Classification for strings, bools, or few distinct integer values; regression otherwise."""
    y = np.asarray(y)
    if y.dtype.kind in "USOb":
        return CLASSIFICATION
    if y.ndim > 1 and y.shape[1] > 1:
        return REGRESSION
    values = np.unique(y)
    if np.all(values == np.round(values)) and len(values) <= max(20, int(0.05 * len(y))):
        return CLASSIFICATION
    return REGRESSION


def encode_classes(y):
    """Class labels (any values) -> int64 indices, and the sorted label names."""
    names, index = np.unique(np.asarray(y).reshape(-1), return_inverse=True)
    if names.dtype.kind in "iuf":
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in names]
    return index.astype(np.int64), [str(v) for v in names]


def _exists(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")


def load_csv(path, target=None, task=None, features_only=False):
    """A CSV with a header row; `target` names the target column (default: the last one).

    With `features_only`, every column is a feature (for prediction input)."""
    _exists(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
            rows = [(r, line) for line, r in enumerate(csv.reader(f), start=1)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    rows = [(r, line) for r, line in rows if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    lines = [line for _, line in rows[1:]]  # file line numbers, blank lines counted
    rows = [r for r, _ in rows]
    header = [h.strip() for h in rows[0]]
    for line, row in zip(lines, rows[1:]):
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header has {len(header)}")
    if features_only:
        t_col = None
    elif target is None:
        t_col = len(header) - 1
    elif target in header:
        t_col = header.index(target)
    else:
        raise DataError(f"{path}: no column named {target!r}; columns: {', '.join(header)}")
    feature_cols = [i for i in range(len(header)) if i != t_col]
    X = np.empty((len(rows) - 1, len(feature_cols)), dtype=np.float32)
    for i, (line, row) in enumerate(zip(lines, rows[1:])):
        for j, col in enumerate(feature_cols):
            try:
                X[i, j] = value = float(row[col])
                if not np.isfinite(value):
                    raise ValueError
            except ValueError:
                raise DataError(f"{path}: row {line}, column {header[col]!r}: {row[col]!r} is not "
                                "a number") from None
    names = [header[i] for i in feature_cols]
    if t_col is None:
        return X, None, names, None, None
    raw = [row[t_col].strip() for row in rows[1:]]
    try:
        y = np.array([float(v) for v in raw])
    except ValueError:
        y = np.array(raw)
    return _targets(path, X, y, names, task)


def _targets(path, X, y, names, task):
    task = task or infer_task(y)
    if task == CLASSIFICATION:
        y, classes = encode_classes(y)
        return X, y, names, classes, task
    if y.dtype.kind not in "iuf":
        raise DataError(f"{path}: regression needs numeric targets")
    return X, y.astype(np.float32).reshape(len(y), -1), names, None, task


def load_npz(path, task=None):
    """An .npz file with arrays `X` (n, ...) and `y` (n,) or (n, k)."""
    _exists(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f or "y" not in f:
                raise DataError(f"{path}: an NPZ dataset needs arrays named X and y, found "
                                f"{', '.join(f.files) or 'none'}")
            X, y = f["X"], f["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:  # zipfile errors are OSError/ValueError subclasses
        raise DataError(f"{path}: not a readable NPZ file ({e})") from None
    if len(X) != len(y):
        raise DataError(f"{path}: X has {len(X)} rows but y has {len(y)}")
    X = X.reshape(len(X), -1).astype(np.float32)
    return _targets(path, X, y, [f"x{i}" for i in range(X.shape[1])], task)


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (raw or .gz) as an ndarray: magic 0 0 type ndim, big-endian int32 dims, data."""
    path = os.fspath(path)
    _exists(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX data has {len(raw) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def labels_path_for(images_path):
    """MNIST naming: train-images-idx3-ubyte[.gz] -> train-labels-idx1-ubyte[.gz]."""
    folder, name = os.path.split(os.fspath(images_path))
    return os.path.join(folder, name.replace("images", "labels").replace("idx3", "idx1"))


def load_idx(images_path, labels_path=None):
    """An IDX images file and its labels file (found by MNIST's naming when not given).
    Pixels are scaled to [0, 1] when stored as bytes."""
    images_path = os.fspath(images_path)
    labels_path = os.fspath(labels_path) if labels_path else labels_path_for(images_path)
    if labels_path == images_path:
        raise DataError(f"{images_path}: cannot find the labels file; name it like "
                        "train-labels-idx1-ubyte next to train-images-idx3-ubyte")
    X, y = read_idx(images_path), read_idx(labels_path)
    if len(X) != len(y):
        raise DataError(f"{images_path}: {len(X)} images but {labels_path} has {len(y)} labels")
    scale = 255.0 if X.dtype == np.uint8 else 1.0
    X = (X.reshape(len(X), -1) / scale).astype(np.float32)
    y, classes = encode_classes(y)
    return X, y, [f"pixel{i}" for i in range(X.shape[1])], classes, CLASSIFICATION
