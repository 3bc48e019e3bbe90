"""chainrule.metrics against scikit-learn on random data with fixed seeds, plus `compute`'s errors."""
import numpy as np
import pytest

from chainrule import metrics as M
from chainrule.errors import ArgumentError, ShapeError

skm = pytest.importorskip("sklearn.metrics")


def _scores(seed, n, c, bias=None):
    """Random logits (n, c) and targets (n,); `bias` skews predictions towards some classes."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, c)) + (0 if bias is None else np.asarray(bias))
    return scores, rng.integers(0, c, n)


# (seed, n, classes, logit bias): balanced, small, many classes, a class never predicted,
# a class absent from the targets (set below), binary as two columns
CASES = [(0, 200, 5, None), (1, 30, 3, None), (2, 500, 12, None),
         (3, 100, 4, [0, 0, 0, -20]), (4, 80, 4, "absent"), (5, 60, 2, None)]


def _case(seed, n, c, bias):
    if bias == "absent":  # class 2 predicted sometimes but never a target
        scores, targets = _scores(seed, n, c)
        targets[targets == 2] = 0
        assert (scores.argmax(1) == 2).any()
        return scores, targets
    return _scores(seed, n, c, bias)


@pytest.mark.parametrize("case", CASES)
def test_accuracy(case):
    scores, targets = _case(*case)
    assert M.accuracy(scores, targets) == pytest.approx(
        skm.accuracy_score(targets, scores.argmax(1)), abs=1e-12)


def test_accuracy_of_binary_logits():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=50), rng.integers(0, 2, 50)
    assert M.accuracy(logits, targets) == pytest.approx(
        skm.accuracy_score(targets, (logits > 0).astype(int)), abs=1e-12)
    assert M.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5


@pytest.mark.filterwarnings("ignore:.k. .* greater than or equal to")
@pytest.mark.parametrize("case", [c for c in CASES if c[2] > 2])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy(case, k):
    scores, targets = _case(*case)
    c = scores.shape[1]
    expected = skm.top_k_accuracy_score(targets, scores, k=min(k, c), labels=np.arange(c))
    assert M.top_k_accuracy(scores, targets, k) == pytest.approx(expected, abs=1e-12)
    if k >= c:
        assert M.top_k_accuracy(scores, targets, k) == 1.0


def test_top_k_named_metrics_match_the_function():
    scores, targets = _scores(7, 120, 10)
    out = M.compute(["top3_accuracy", "top5_accuracy"], scores, targets)
    assert out["top3_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(targets, scores, k=3, labels=np.arange(10)), abs=1e-12)
    assert out["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(targets, scores, k=5, labels=np.arange(10)), abs=1e-12)
    assert out["top3_accuracy"] < out["top5_accuracy"]


@pytest.mark.parametrize("case", CASES)
def test_confusion_matrix(case):
    scores, targets = _case(*case)
    c = scores.shape[1]
    expected = skm.confusion_matrix(targets, scores.argmax(1), labels=np.arange(c))
    got = M.confusion_matrix(scores, targets, num_classes=c)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == len(targets)


def test_confusion_matrix_infers_its_size():
    scores = np.eye(4)[[0, 1, 3, 3]]
    got = M.confusion_matrix(scores, np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(got, skm.confusion_matrix([0, 1, 2, 3], [0, 1, 3, 3]))


@pytest.mark.parametrize("case", CASES)
def test_precision_recall_f1_macro(case):
    scores, targets = _case(*case)
    p, r, f, _ = skm.precision_recall_fscore_support(targets, scores.argmax(1), average="macro",
                                                     zero_division=0)
    got = M.precision_recall_f1(scores, targets)
    np.testing.assert_allclose(got, (p, r, f), rtol=1e-12, atol=1e-15)
    named = M.compute(["precision", "recall", "f1"], scores, targets)
    np.testing.assert_allclose([named["precision"], named["recall"], named["f1"]], (p, r, f),
                               rtol=1e-12, atol=1e-15)


def test_precision_recall_f1_hand_checked():
    # class 0: tp 1 of 1 predicted, 1 of 1 true; class 1: tp 1 of 1 predicted, 1 of 3 true;
    # class 2: predicted twice, never true -> precision 0, recall 0/0 = 0 (counted, as sklearn)
    scores, targets = np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 1, 1])
    p, r, f = M.precision_recall_f1(scores, targets)
    assert p == pytest.approx((1 + 1 + 0) / 3)
    assert r == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert f == pytest.approx((1 + 0.5 + 0) / 3)


def test_precision_recall_f1_binary_logits():
    rng = np.random.default_rng(3)
    logits, targets = rng.normal(size=70), rng.integers(0, 2, 70)
    p, r, f, _ = skm.precision_recall_fscore_support(targets, (logits > 0).astype(int),
                                                     average="macro", zero_division=0)
    np.testing.assert_allclose(M.precision_recall_f1(logits, targets), (p, r, f), rtol=1e-12)


REGRESSION = [(0, (40, 1)), (1, (40,)), (2, (25, 3)), (3, (7, 1))]


def _regression(seed, shape):
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=shape) * 3 + 1
    if len(shape) == 2 and shape[1] == 3:
        targets *= [1.0, 10.0, 0.1]  # columns on different scales: averaging choice matters
    return targets + rng.normal(size=shape), targets


@pytest.mark.parametrize("seed, shape", REGRESSION)
def test_regression_metrics(seed, shape):
    pred, targets = _regression(seed, shape)
    assert M.mse(pred, targets) == pytest.approx(skm.mean_squared_error(targets, pred), rel=1e-12)
    assert M.mae(pred, targets) == pytest.approx(skm.mean_absolute_error(targets, pred), rel=1e-12)
    assert M.r2(pred, targets) == pytest.approx(skm.r2_score(targets, pred), rel=1e-10)
    out = M.compute(["mse", "mae", "r2"], pred, targets)
    assert out == pytest.approx({"mse": skm.mean_squared_error(targets, pred),
                                 "mae": skm.mean_absolute_error(targets, pred),
                                 "r2": skm.r2_score(targets, pred)}, rel=1e-10)


def test_regression_metrics_float32_and_edge_cases():
    pred, targets = _regression(4, (30, 1))
    p32, t32 = pred.astype(np.float32), targets.astype(np.float32)
    assert M.r2(p32, t32) == pytest.approx(skm.r2_score(t32, p32), rel=1e-5)
    assert M.mse(p32, t32) == pytest.approx(skm.mean_squared_error(t32, p32), rel=1e-5)
    assert M.r2(targets, targets) == 1.0
    assert M.r2(np.full_like(targets, targets.mean()), targets) == pytest.approx(0.0, abs=1e-12)
    const = np.full((5, 1), 2.0)
    assert M.r2(const, const) == skm.r2_score(const, const) == 1.0
    assert M.r2(const + 1, const) == skm.r2_score(const, const + 1) == 0.0


def test_compute_returns_every_named_metric():
    scores, targets = _scores(9, 50, 4)
    out = M.compute(("accuracy", "f1"), scores, targets)
    assert list(out) == ["accuracy", "f1"]
    assert all(isinstance(v, float) for v in out.values())
    assert M.compute((), scores, targets) == {}


def test_compute_unknown_metric_is_an_argument_error():
    scores, targets = _scores(0, 10, 3)
    with pytest.raises(ArgumentError, match=r"unknown metric 'acc'; choose from accuracy, .*r2"):
        M.compute(["accuracy", "acc"], scores, targets)


def test_compute_regression_shape_mismatch_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"mse: predictions \(4, 1\) and targets \(4,\) differ"):
        M.compute(["mse"], np.zeros((4, 1)), np.zeros(4))


def test_higher_is_better_covers_the_metrics():
    assert M.HIGHER_IS_BETTER <= set(M.METRICS)
    assert not {"mse", "mae"} & M.HIGHER_IS_BETTER
