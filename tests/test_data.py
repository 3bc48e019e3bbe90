"""cr.data: DataLoader batching and shuffling, random_split, the built-in datasets (offline, split by
seed), the CSV / NPZ / IDX loaders on files written here, and the Standardizer."""
import gzip
import json
import socket
import struct

import numpy as np
import pytest

import chainrule as cr
from chainrule.data import (DATASETS, DataLoader, Dataset, Standardizer, Subset, TensorDataset,
                            load_csv, load_dataset, load_idx, load_npz, one_hot, random_split,
                            read_idx)
from chainrule.data import datasets as generated
from chainrule.errors import ArgumentError, DataError, ShapeError


def _rows(batches):
    """The first-column values of every batch, concatenated (sample ids when X[i] == i)."""
    return np.concatenate([b[0].data.reshape(len(b[0].data), -1)[:, 0] for b in batches]).tolist()


def _ids(n=10):
    """A dataset whose sample i is (X[i] = [i, -i] as float32, y[i] = i % 3 as int64)."""
    X = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    return TensorDataset(X, (np.arange(n) % 3).astype(np.int64))


# ---- DataLoader -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (10, 3, False, [3, 3, 3, 1]),
    (10, 3, True, [3, 3, 3]),
    (10, 5, False, [5, 5]),
    (10, 5, True, [5, 5]),
    (10, 16, False, [10]),
    (10, 16, True, []),
    (1, 1, False, [1]),
])
@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_batch_count_and_sizes(n, batch_size, drop_last, sizes, shuffle):
    loader = DataLoader(_ids(n), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                        generator=cr.Generator(0))
    batches = list(loader)
    assert len(loader) == len(sizes)
    assert [len(x) for x, _ in batches] == sizes
    assert [len(y) for _, y in batches] == sizes


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
def test_loader_every_sample_once_per_epoch(batch_size):
    loader = DataLoader(_ids(10), batch_size=batch_size, shuffle=True, generator=cr.Generator(1))
    for _ in range(3):
        batches = list(loader)
        ids = _rows(batches)
        assert sorted(ids) == list(range(10))
        for x, y in batches:  # features and targets of a sample stay together
            np.testing.assert_array_equal(y.data, x.data[:, 0].astype(np.int64) % 3)
            np.testing.assert_array_equal(x.data[:, 1], -x.data[:, 0])


def test_loader_drop_last_drops_only_the_tail():
    ids = _rows(DataLoader(_ids(10), batch_size=4, shuffle=True, drop_last=True,
                           generator=cr.Generator(2)))
    assert len(ids) == 8 and len(set(ids)) == 8


def test_loader_without_shuffle_preserves_order():
    assert _rows(DataLoader(_ids(10), batch_size=3)) == list(range(10))
    assert _rows(DataLoader(_ids(10), batch_size=3, shuffle=False, generator=cr.Generator(5))) \
        == list(range(10))


def test_loader_shuffle_same_seed_same_order_and_epochs_differ():
    data = _ids(50)
    a = DataLoader(data, batch_size=7, shuffle=True, generator=cr.Generator(123))
    b = DataLoader(data, batch_size=7, shuffle=True, generator=cr.Generator(123))
    a1, a2, a3 = _rows(a), _rows(a), _rows(a)
    assert a1 == _rows(b) and a2 == _rows(b) and a3 == _rows(b)
    assert a1 != list(range(50))  # it does shuffle
    assert a1 != a2 and a2 != a3 and a1 != a3  # a new order each epoch
    c = DataLoader(data, batch_size=7, shuffle=True, generator=cr.Generator(124))
    assert _rows(c) != a1


def test_loader_default_generator_follows_manual_seed():
    loader = DataLoader(_ids(50), batch_size=8, shuffle=True)
    cr.manual_seed(7)
    first, second = _rows(loader), _rows(loader)
    cr.manual_seed(7)
    assert _rows(loader) == first and _rows(loader) == second
    cr.manual_seed(8)
    assert _rows(loader) != first


def test_loader_batches_are_tensors_with_dataset_dtypes():
    X64 = np.arange(12, dtype=np.float64).reshape(6, 2)
    for x, y in DataLoader(_ids(6), batch_size=4):
        assert isinstance(x, cr.Tensor) and isinstance(y, cr.Tensor)
        assert x.data.dtype == np.float32 and x.shape == (len(y), 2)
        assert y.data.dtype == np.int64 and y.shape == (len(x),)
    (x,) = next(iter(DataLoader(TensorDataset(cr.tensor(X64)), batch_size=6)))
    assert x.data.dtype == np.float64
    np.testing.assert_array_equal(x.data, X64)


def test_tensor_dataset_items_and_errors():
    data = _ids(4)
    x, y = data[2]
    assert isinstance(x, cr.Tensor) and isinstance(x.data, np.ndarray)
    assert isinstance(y.data, np.ndarray) and y.data.shape == () and int(y.data) == 2
    np.testing.assert_array_equal(x.data, [2, -2])
    assert len(data) == 4
    with pytest.raises(ShapeError, match=r"\(3,\).*\(4,\)"):
        TensorDataset(np.zeros(3), np.zeros(4))
    with pytest.raises(ArgumentError):
        TensorDataset()


class _Squares(Dataset):
    """A map-style dataset with only __getitem__: the loader must collate samples by stacking."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.array([i, i * i], dtype=np.float32), i % 2


def test_loader_collates_custom_dataset_by_stacking():
    data = _Squares(7)
    assert not hasattr(data, "__getitems__")
    batches = list(DataLoader(data, batch_size=3))
    assert [len(x) for x, _ in batches] == [3, 3, 1]
    x, y = batches[1]
    assert isinstance(x, cr.Tensor) and isinstance(y, cr.Tensor)
    assert x.data.dtype == np.float32 and x.shape == (3, 2)
    np.testing.assert_array_equal(x.data, [[3, 9], [4, 16], [5, 25]])
    assert y.data.dtype == np.int64
    np.testing.assert_array_equal(y.data, [1, 0, 1])
    shuffled = DataLoader(data, batch_size=2, shuffle=True, generator=cr.Generator(0))
    assert sorted(_rows(list(shuffled))) == list(range(7))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "4", None, True])
def test_loader_rejects_bad_batch_size(batch_size):
    with pytest.raises(ArgumentError, match="batch_size"):
        DataLoader(_ids(4), batch_size=batch_size)


def test_loader_accepts_numpy_int_batch_size():
    assert len(DataLoader(_ids(10), batch_size=np.int64(4))) == 3


# ---- random_split -----------------------------------------------------------------------------
@pytest.mark.parametrize("lengths, sizes", [
    ([7, 3], [7, 3]),
    ([0, 10], [0, 10]),
    ([5, 3, 2], [5, 3, 2]),
    ([0.7, 0.3], [7, 3]),
    ([0.5, 0.25, 0.25], [6, 2, 2]),  # floors 5, 2, 2; the remainder goes round-robin (PyTorch)
    ([1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),
])
def test_random_split_sizes_and_disjointness(lengths, sizes):
    parts = random_split(_ids(10), lengths, generator=cr.Generator(0))
    assert [len(p) for p in parts] == sizes
    assert all(isinstance(p, Subset) for p in parts)
    ids = [int(p[i][0].data[0]) for p in parts for i in range(len(p))]
    assert sorted(ids) == list(range(10))  # disjoint and covering


@pytest.mark.filterwarnings("ignore:Length of split")
@pytest.mark.parametrize("fractions", [[0.5, 0.25, 0.25], [0.1] * 10, [0.15, 0.85], [0.45, 0.55]])
def test_random_split_fraction_sizes_match_pytorch(fractions):
    torch = pytest.importorskip("torch")
    for n in (7, 10, 33):
        ours = [len(p) for p in random_split(_ids(n), fractions)]
        assert ours == [len(p) for p in torch.utils.data.random_split(range(n), fractions)]


def test_random_split_determinism_by_generator():
    def split(seed):
        return [p.indices.tolist() for p in random_split(_ids(30), [20, 10],
                                                         generator=cr.Generator(seed))]
    assert split(0) == split(0)
    assert split(0) != split(1)
    cr.manual_seed(3)
    a = [p.indices.tolist() for p in random_split(_ids(30), [20, 10])]
    cr.manual_seed(3)
    assert a == [p.indices.tolist() for p in random_split(_ids(30), [20, 10])]


def test_random_split_subsets_load_through_the_loader():
    train, val = random_split(_ids(10), [6, 4], generator=cr.Generator(0))
    for part in (train, val):
        ids = _rows(DataLoader(part, batch_size=4, shuffle=True, generator=cr.Generator(1)))
        assert sorted(ids) == sorted(int(i) for i in part.indices)
    nested = Subset(train, [0, 2])
    (x, y), = list(DataLoader(nested, batch_size=2))
    assert x.data[:, 0].tolist() == [float(train.indices[0]), float(train.indices[2])]


@pytest.mark.parametrize("lengths", [[5, 4], [6, 6], [-1, 11], [0.5, 0.4]])
def test_random_split_rejects_bad_lengths(lengths):
    with pytest.raises(ArgumentError, match="random_split"):
        random_split(_ids(10), lengths)


# ---- built-in datasets ------------------------------------------------------------------------
SIZES = {"digits": 1797, "iris": 150, "wine": 178, "breast_cancer": 569, "diabetes": 442,
         "moons": 1000, "circles": 1000, "spirals": 1000, "xor": 1000, "blobs": 1000, "sine": 1000}
SKLEARN = {"digits", "iris", "wine", "breast_cancer", "diabetes"}


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a built-in dataset tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(name, seed=0, **kwargs):
    if name in SKLEARN:
        pytest.importorskip("sklearn")
    return load_dataset(name, seed=seed, **kwargs)


def test_registry_lists_every_dataset():
    assert set(DATASETS) == set(SIZES)
    for name, info in DATASETS.items():
        assert info.name == name and info.task in ("classification", "regression")
        assert info.description


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_dataset_loads_offline_with_dtypes_and_split_sizes(name, offline):
    s = _load(name)
    n = SIZES[name]
    assert s.name == name and s.task == DATASETS[name].task
    n_test, n_val = round(0.15 * n), round(0.15 * n)
    assert (len(s.X_test), len(s.X_val), len(s.X_train)) == (n_test, n_val, n - n_test - n_val)
    d = s.num_features
    for X, y in [(s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)]:
        assert X.dtype == np.float32 and X.ndim == 2 and X.shape[1] == d
        assert np.all(np.isfinite(X))
        assert len(y) == len(X)
        if s.task == "classification":
            assert y.dtype == np.int64 and y.shape == (len(X),)
            assert y.min() >= 0 and y.max() < s.num_classes
        else:
            assert y.dtype == np.float32 and y.shape == (len(X), 1)
    assert len(s.feature_names) == d
    if s.task == "classification":
        all_y = np.concatenate([s.y_train, s.y_val, s.y_test])
        assert set(np.unique(all_y)) == set(range(s.num_classes))  # every class occurs
    else:
        assert s.num_classes == 0
    x, y = s.train[0]
    assert isinstance(x, cr.Tensor) and x.shape == (d,)


def test_builtin_sizes_and_class_names():
    pytest.importorskip("sklearn")
    digits = _load("digits")
    assert digits.num_features == 64 and digits.class_names == [str(i) for i in range(10)]
    iris = _load("iris")
    assert iris.num_features == 4
    assert iris.class_names == ["setosa", "versicolor", "virginica"]
    assert iris.feature_names[0] == "sepal length (cm)"
    assert _load("wine").num_classes == 3 and _load("breast_cancer").num_classes == 2
    assert _load("diabetes").num_features == 10
    assert _load("moons").class_names == ["0", "1"] and _load("blobs").num_classes == 3


@pytest.mark.parametrize("name", ["iris", "moons", "sine"])
def test_builtin_splits_by_seed(name):
    a, b, c = _load(name, seed=0), _load(name, seed=0), _load(name, seed=1)
    for part in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.X_test, c.X_test)
    # a different seed reshuffles the same data: the union of the parts does not change
    union = lambda s: np.sort(np.concatenate([s.X_train, s.X_val, s.X_test]), axis=0)  # noqa: E731
    np.testing.assert_array_equal(union(a), union(c))


def test_builtin_splits_are_disjoint_and_fractions_apply():
    s = _load("moons", val_fraction=0.2, test_fraction=0.1)
    assert (len(s.X_train), len(s.X_val), len(s.X_test)) == (700, 200, 100)
    rows = {tuple(r) for X in (s.X_train, s.X_val, s.X_test) for r in X}
    assert len(rows) == 1000
    with pytest.raises(ArgumentError):
        _load("moons", val_fraction=0.6, test_fraction=0.5)


def test_unknown_dataset_is_a_data_error_listing_the_builtins():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits.*sine") as e:
        load_dataset("mnist")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fn, classes", [(generated.moons, 2), (generated.circles, 2),
                                         (generated.spirals, 2), (generated.xor, 2),
                                         (generated.blobs, 3)])
def test_generated_classification_shapes_balance_determinism(fn, classes):
    X, y = fn(n=600, seed=0)
    assert X.shape == (600, 2) and y.shape == (600,)
    counts = np.bincount(y, minlength=classes)
    assert len(counts) == classes
    assert counts.min() > 0.8 * 600 / classes and counts.max() < 1.2 * 600 / classes
    X2, y2 = fn(n=600, seed=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = fn(n=600, seed=1)
    assert not np.array_equal(X, X3)
    # the classes occupy different regions: class means differ or radii differ
    means = np.array([X[y == k].mean(0) for k in range(classes)])
    radii = np.array([np.linalg.norm(X[y == k], axis=1).mean() for k in range(classes)])
    assert np.ptp(means, axis=0).max() > 0.2 or np.ptp(radii) > 0.2 or fn is generated.xor


def test_generated_geometry():
    X, y = generated.circles(n=2000, noise=0.0, factor=0.5, seed=0)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), np.where(y == 0, 1.0, 0.5), atol=1e-12)
    X, y = generated.xor(n=2000, noise=0.0, seed=0)
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] > 0).astype(np.int64))
    x, t = generated.sine(n=500, noise=0.0, seed=0)
    assert x.shape == (500, 1) and t.shape == (500, 1)
    np.testing.assert_allclose(t, np.sin(x))
    assert x.min() >= -np.pi and x.max() <= np.pi


# ---- CSV ----------------------------------------------------------------------------------------
def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def test_csv_named_target_with_string_labels(tmp_path):
    path = _write(tmp_path, "flowers.csv", "width,species,height\n"
                  "1.5,setosa,2\n2.5,virginica,3.25\n-1e-3,setosa,4\n0,versicolor,5\n")
    X, y, names, classes, task = load_csv(path, target="species")
    assert task == "classification"
    assert names == ["width", "height"]
    assert X.dtype == np.float32 and X.shape == (4, 2)
    np.testing.assert_array_equal(X, np.array([[1.5, 2], [2.5, 3.25], [-1e-3, 4], [0, 5]],
                                              dtype=np.float32))
    assert classes == ["setosa", "versicolor", "virginica"]
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 0, 1]


def test_csv_target_defaults_to_last_column(tmp_path):
    path = _write(tmp_path, "d.csv", "a,b,label\n1,2,0\n3,4,1\n5,6,2\n7,8,1\n")
    X, y, names, classes, task = load_csv(path)
    assert names == ["a", "b"] and X.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert task == "classification" and classes == ["0", "1", "2"] and y.tolist() == [0, 1, 2, 1]


def test_csv_numeric_targets_classification_or_regression(tmp_path):
    ints = _write(tmp_path, "ints.csv", "x,y\n" + "".join(f"{i},{i % 3 + 1}\n" for i in range(30)))
    X, y, _, classes, task = load_csv(ints, target="y")
    assert task == "classification" and classes == ["1", "2", "3"]
    assert y.dtype == np.int64 and y.tolist() == [i % 3 for i in range(30)]

    floats = _write(tmp_path, "floats.csv", "x,y\n" + "".join(f"{i},{i * 0.37:.3f}\n"
                                                             for i in range(30)))
    X, y, _, classes, task = load_csv(floats, target="y")
    assert task == "regression" and classes is None
    assert y.dtype == np.float32 and y.shape == (30, 1)
    np.testing.assert_allclose(y[:, 0], [round(i * 0.37, 3) for i in range(30)], rtol=1e-6)

    many = _write(tmp_path, "many.csv", "x,y\n" + "".join(f"{i},{i * 7}\n" for i in range(100)))
    assert load_csv(many)[4] == "regression"  # 100 distinct integers: a quantity, not classes


def test_csv_task_forces(tmp_path):
    path = _write(tmp_path, "t.csv", "x,y\n1,0\n2,1\n3,1\n4,0\n")
    X, y, _, classes, task = load_csv(path, task="regression")
    assert task == "regression" and classes is None
    assert y.dtype == np.float32 and y.tolist() == [[0], [1], [1], [0]]
    path = _write(tmp_path, "f.csv", "x,y\n1,0.5\n2,1.5\n3,0.5\n4,2.25\n")
    X, y, _, classes, task = load_csv(path, task="classification")
    assert task == "classification" and classes == ["0.5", "1.5", "2.25"]
    assert y.tolist() == [0, 1, 0, 2]
    strings = _write(tmp_path, "s.csv", "x,y\n1,a\n2,b\n")
    with pytest.raises(DataError, match="regression needs numeric targets"):
        load_csv(strings, task="regression")


def test_csv_features_only_and_bom(tmp_path):
    path = _write(tmp_path, "p.csv", "a,b,c\n1,2,3\n4,5,6\n")
    X, y, names, classes, task = load_csv(path, features_only=True)
    assert names == ["a", "b", "c"] and X.tolist() == [[1, 2, 3], [4, 5, 6]] and y is None
    bom = _write(tmp_path, "excel.csv", "size,kind\n1,a\n2,b\n", encoding="utf-8-sig")
    X, y, names, classes, task = load_csv(bom, target="kind")
    assert names == ["size"] and classes == ["a", "b"]
    with pytest.raises(DataError, match="row 2, column 'kind'"):
        load_csv(bom, target="size")  # the first column is found; 'a' is now a feature


@pytest.mark.parametrize("text, target, message", [
    ("a,b,y\n1,2,0\n3,oops,1\n", None, r"row 3, column 'b': 'oops' is not a number"),
    ("a,b,y\n1,2,0\n3,4,1\n,5,0\n", None, r"row 4, column 'a': '' is not a number"),
    ("a,b,y\n1,2,0\n\n3,x,1\n", None, r"row 4, column 'b'"),  # rows are file lines
    ("a,b,y\n1,nan,0\n", None, r"row 2, column 'b': 'nan'"),
    ("a,b,y\n1,2,0\n3,inf,1\n", None, r"row 3, column 'b'"),
    ("a,b,y\n1,2,0\n3,4\n", None, r"row 3 has 2 cells, the header has 3"),
    ("a,b,y\n1,2,0,9\n", None, r"row 2 has 4 cells, the header has 3"),
    ("a,b,y\n1,2,0\n", "label", r"no column named 'label'; columns: a, b, y"),
    ("a,b,y\n", None, r"needs a header row and at least one data row"),
])
def test_csv_errors_are_one_line_data_errors(tmp_path, text, target, message):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match=message) as e:
        load_csv(path, target=target)
    assert "\n" not in str(e.value) and "bad.csv" in str(e.value)


def test_missing_files_are_data_errors(tmp_path):
    for load in (load_csv, load_npz, read_idx, load_idx):
        with pytest.raises(DataError, match="no such file") as e:
            load(str(tmp_path / "missing-images-idx3-ubyte"))
        assert "\n" not in str(e.value)


# ---- NPZ ----------------------------------------------------------------------------------------
def test_npz_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2, 3))
    path = tmp_path / "c.npz"
    np.savez(path, X=X, y=np.array([3, 5] * 6))
    Xl, y, names, classes, task = load_npz(str(path))
    assert Xl.dtype == np.float32 and Xl.shape == (12, 6)
    np.testing.assert_allclose(Xl, X.reshape(12, 6), rtol=1e-6)
    assert task == "classification" and classes == ["3", "5"] and y.tolist() == [0, 1] * 6
    assert names == [f"x{i}" for i in range(6)]

    t = rng.normal(size=12)
    np.savez(path, X=X, y=t)
    _, y, _, classes, task = load_npz(path)  # a pathlib.Path works too
    assert task == "regression" and classes is None
    assert y.dtype == np.float32 and y.shape == (12, 1)
    np.testing.assert_allclose(y[:, 0], t, rtol=1e-6)
    assert load_npz(str(path), task="classification")[4] == "classification"


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.ones((3, 2))}, r"needs arrays named X and y, found X$"),
    ({"features": np.ones((3, 2)), "labels": np.ones(3)}, r"found features, labels$"),
    ({"X": np.ones((3, 2)), "y": np.ones(4)}, r"X has 3 rows but y has 4"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_npz(str(path))
    assert "not a readable" not in str(e.value) and "\n" not in str(e.value)


def test_npz_not_an_npz_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DataError, match="not a readable NPZ file"):
        load_npz(str(path))


# ---- IDX (MNIST's format) ---------------------------------------------------------------------
def _idx_images(pixels):
    n, rows, cols = pixels.shape
    return struct.pack(">IIII", 0x00000803, n, rows, cols) + pixels.astype(np.uint8).tobytes()


def _idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def _write_bytes(path, data, gz):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_mnist_pair(tmp_path, gz):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
    labels = [7, 2, 1, 0, 4]
    ext = ".gz" if gz else ""
    images = _write_bytes(tmp_path / f"train-images-idx3-ubyte{ext}", _idx_images(pixels), gz)
    _write_bytes(tmp_path / f"train-labels-idx1-ubyte{ext}", _idx_labels(labels), gz)

    for raw in (read_idx(str(images)), read_idx(images)):
        assert raw.dtype == np.uint8 and raw.shape == (5, 4, 3)
        np.testing.assert_array_equal(raw, pixels)

    X, y, names, classes, task = load_idx(images)  # pathlib works, labels found by MNIST naming
    assert X.dtype == np.float32 and X.shape == (5, 12)
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_allclose(X, pixels.reshape(5, 12) / 255.0, rtol=1e-6)
    assert task == "classification" and classes == ["0", "1", "2", "4", "7"]
    assert [classes[i] for i in y] == [str(v) for v in labels]
    assert y.dtype == np.int64 and len(names) == 12


def test_idx_kaggle_naming_and_explicit_labels(tmp_path):
    pixels = np.arange(2 * 2 * 2, dtype=np.uint8).reshape(2, 2, 2)
    images = _write_bytes(tmp_path / "t10k-images.idx3-ubyte", _idx_images(pixels), False)
    _write_bytes(tmp_path / "t10k-labels.idx1-ubyte", _idx_labels([1, 0]), False)
    X, y, *_ = load_idx(str(images))
    assert X.shape == (2, 4) and y.tolist() == [1, 0]
    other = _write_bytes(tmp_path / "mine.bin", _idx_labels([0, 1]), False)
    assert load_idx(str(images), str(other))[1].tolist() == [0, 1]
    plain = _write_bytes(tmp_path / "pixels.bin", _idx_images(pixels), False)
    with pytest.raises(DataError, match="cannot find the labels file"):
        load_idx(str(plain))


def test_idx_float_and_big_endian_types(tmp_path):
    values = np.array([[1.5, -2.0], [3.25, 0.0]], dtype=">f4")
    path = _write_bytes(tmp_path / "f.idx", struct.pack(">I", 0x00000D02)
                        + struct.pack(">II", 2, 2) + values.tobytes(), False)
    out = read_idx(str(path))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values.astype(np.float32))
    ints = np.array([1, -70000, 3], dtype=">i4")
    path = _write_bytes(tmp_path / "i.idx", struct.pack(">II", 0x00000C01, 3) + ints.tobytes(),
                        False)
    assert read_idx(str(path)).tolist() == [1, -70000, 3]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-1], r"IDX data has 59 bytes, dims \(5, 4, 3\) need 60"),
    (lambda b: b + b"\x00", r"IDX data has 61 bytes"),
    (lambda b: b[:10], r"truncated IDX header"),
    (lambda b: b"\x12\x34" + b[2:], r"not an IDX file \(bad magic number\)"),
    (lambda b: b[:2] + b"\x07" + b[3:], r"bad magic number"),  # unknown type code
    (lambda b: b[:2], r"bad magic number"),
])
def test_idx_corrupt_files(tmp_path, gz, corrupt, message):
    pixels = np.zeros((5, 4, 3), dtype=np.uint8)
    ext = ".gz" if gz else ""
    path = _write_bytes(tmp_path / f"train-images-idx3-ubyte{ext}", corrupt(_idx_images(pixels)),
                        gz)
    with pytest.raises(DataError, match=message) as e:
        read_idx(str(path))
    assert "\n" not in str(e.value)


def test_idx_truncated_gzip_stream_and_count_mismatch(tmp_path):
    pixels = np.zeros((5, 4, 3), dtype=np.uint8)
    data = gzip.compress(_idx_images(pixels))
    cut = tmp_path / "train-images-idx3-ubyte.gz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(str(cut))
    images = _write_bytes(tmp_path / "train-images-idx3-ubyte", _idx_images(pixels), False)
    _write_bytes(tmp_path / "train-labels-idx1-ubyte", _idx_labels([1, 2, 3]), False)
    with pytest.raises(DataError, match="5 images but .*train-labels-idx1-ubyte has 3 labels"):
        load_idx(str(images))


# ---- preprocessing ------------------------------------------------------------------------------
def test_standardizer_fit_transform():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(200, 3)) * [1.0, 50.0, 0.01] + [5.0, -100.0, 3.0]).astype(np.float32)
    s = Standardizer().fit(X)
    Z = s.transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(0), 1, rtol=1e-4)
    np.testing.assert_allclose(s.mean, X.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.std, X.astype(np.float64).std(0), rtol=1e-6)
    new = rng.normal(size=(4, 3)).astype(np.float32)  # new data uses the training statistics
    np.testing.assert_allclose(s.transform(new), (new - s.mean) / s.std, rtol=1e-6)
    np.testing.assert_allclose(Standardizer().fit_transform(X), Z)


def test_standardizer_constant_feature():
    X = np.array([[1.0, 7.0], [2.0, 7.0], [3.0, 7.0]], dtype=np.float32)
    s = Standardizer().fit(X)
    Z = s.transform(X)
    assert np.all(np.isfinite(Z))
    np.testing.assert_array_equal(Z[:, 1], 0.0)
    assert s.std[1] == 1.0
    np.testing.assert_allclose(s.transform([[0.0, 9.0]])[0, 1], 2.0)


def test_standardizer_state_dict_round_trip_and_shape_error():
    rng = np.random.default_rng(1)
    X = rng.normal(3, 2, size=(50, 4))
    s = Standardizer().fit(X)
    state = json.loads(json.dumps(s.state_dict()))  # plain lists: what config.json holds
    t = Standardizer.from_state_dict(state)
    np.testing.assert_array_equal(t.mean, s.mean)
    np.testing.assert_array_equal(t.std, s.std)
    np.testing.assert_array_equal(t.transform(X), s.transform(X))
    with pytest.raises(ShapeError, match=r"\(3,\).*\(4,\)"):
        t.transform(np.zeros((2, 3)))


def test_one_hot():
    out = one_hot(np.array([2, 0, 1, 2]), 4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[[2, 0, 1, 2]])


@pytest.mark.parametrize("batch, drop_last, features", [(32, False, 3), (32, True, 3), (7, False, 3),
                                                        (1000, False, 3), (999, True, 3),
                                                        (64, False, 300)])
def test_loader_batches_equal_the_orders_rows_however_they_are_fetched(batch, drop_last, features):
    """Small batches of a TensorDataset come from one gather per ~1 MiB, sliced; big ones alone.
    Either way batch k holds rows order[k*b:(k+1)*b] of the epoch's order."""
    X = np.random.default_rng(0).standard_normal((1000, features)).astype(np.float32)
    y = np.arange(1000)
    loader = cr.data.DataLoader(cr.data.TensorDataset(X, y), batch, shuffle=True,
                                drop_last=drop_last, generator=cr.Generator(3))
    got = [(xb.numpy(), yb.numpy()) for xb, yb in loader]
    order = cr.Generator(3).rng.permutation(1000)
    stop = 1000 - 1000 % batch if drop_last else 1000
    want = [(X[order[s:s + batch]], y[order[s:s + batch]]) for s in range(0, stop, batch)]
    assert len(got) == len(want) == len(loader)
    for (a, b), (c, d) in zip(got, want):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    big = batch * (features * 4 + 8) > 1 << 16
    assert all((xb.base is None) == big for xb, _ in got)  # a big batch is its own array


@pytest.mark.parametrize("indices", [
    np.array([3, 0, -1]), np.array([1, 2], dtype=np.uint8), [4, 1], [True, False, True, False, True],
    np.array([False, True, True, False, False]), slice(1, 4), np.array([], dtype=np.int64)])
def test_tensor_dataset_gathers_batches_as_numpy_indexing_does(indices):
    """Integer arrays (what DataLoader passes) are gathered with `take`; everything else as NumPy
    indexes: the same rows either way."""
    X = np.arange(20, dtype=np.float32).reshape(5, 4)
    y = np.arange(5) * 10
    bx, by = TensorDataset(X, y).__getitems__(indices)
    np.testing.assert_array_equal(bx.data, X[indices])
    np.testing.assert_array_equal(by.data, y[indices])
