"""ops.blas.gemm_update: c ← β·c + α·(a @ b) in place through NumPy's own BLAS."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from chainrule.ops import blas

pytestmark = pytest.mark.skipif(not blas.AVAILABLE, reason="NumPy's BLAS functions not found")


def _reference(c, a, b, alpha, beta):
    return beta * c.astype(np.float64) + alpha * (a.astype(np.float64) @ b.astype(np.float64))


def _layout(x, kind):
    """x as a C or F array, or as a view with a unit stride on one axis only (a slice of a
    wider array), or with a transposed view's strides."""
    if kind == "C":
        return np.ascontiguousarray(x)
    if kind == "F":
        return np.asfortranarray(x)
    if kind == "row-slice":  # rows of a wider C array: leading dimension > columns
        wide = np.zeros((x.shape[0], x.shape[1] + 3), x.dtype)
        wide[:, 1:1 + x.shape[1]] = x
        return wide[:, 1:1 + x.shape[1]]
    wide = np.zeros((x.shape[0] + 3, x.shape[1]), x.dtype, order="F")  # "col-slice"
    wide[2:2 + x.shape[0]] = x
    return wide[2:2 + x.shape[0]]


LAYOUTS = ["C", "F", "row-slice", "col-slice"]


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9),
       layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 3),
       dtype=st.sampled_from([np.float32, np.float64]),
       alpha=st.sampled_from([1.0, -0.01, 2.5]), beta=st.sampled_from([1.0, 0.5, 0.0]))
def test_gemm_update_matches_the_formula_for_every_layout(m, k, n, layouts, dtype, alpha, beta):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b, c = (_layout(rng.standard_normal(shape).astype(dtype), kind)
               for shape, kind in zip(((m, k), (k, n), (m, n)), layouts))
    expected = _reference(c, a, b, alpha, beta)
    before, wide_before = c.copy(), (c.base if c.base is not None else c).copy()
    assert blas.gemm_update(c, a, b, alpha, beta)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)
    c[...] = before  # then nothing outside the view may have changed
    np.testing.assert_array_equal(c.base if c.base is not None else c, wide_before)


def test_gemm_update_copies_an_operand_without_a_unit_stride():
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((6, 8))[:, ::2], rng.standard_normal((6, 5))
    b = np.broadcast_to(rng.standard_normal((1, 5)), (4, 5))  # strides (0, 8)
    expected = _reference(c, a, b, -0.5, 1.0)
    assert blas.gemm_update(c, a, b, -0.5)
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1)])
def test_gemm_update_takes_broadcast_operands_of_any_shape(shape):
    """Size-1 axes may have any stride (NumPy calls such arrays contiguous): a (1, 1) operand
    of strides (0, 0), as the gradient of a sum over a batch of one, must not trip BLAS."""
    rng = np.random.default_rng(1)
    a = np.broadcast_to(np.float32(2.5), shape)                           # strides (0, 0)
    b = rng.standard_normal((shape[1], 3)).astype(np.float32)
    c = rng.standard_normal((shape[0], 3)).astype(np.float32)
    expected = _reference(c, a, b, -0.5, 1.0)
    assert blas.gemm_update(c, a, b, -0.5)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)


def test_gemm_update_declines_what_blas_cannot_take():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    c = np.zeros((4, 5))
    before = c.copy()
    assert not blas.gemm_update(c, a[:, ::1].astype(np.float32), b, 1.0)  # mixed dtypes
    assert not blas.gemm_update(c.astype(np.int64), a, b, 1.0)            # not a float
    assert not blas.gemm_update(np.zeros((8, 10))[::2, ::2], a, b, 1.0)   # c: no unit stride
    assert not blas.gemm_update(c, a, rng.standard_normal((4, 5)), 1.0)   # shapes do not fit
    assert not blas.gemm_update(c[:, :0], a, b[:, :0], 1.0)               # empty
    square = rng.standard_normal((5, 5))
    assert not blas.gemm_update(square, square, np.eye(5), 1.0)           # c is an operand
    frozen = c.copy()
    frozen.flags.writeable = False
    assert not blas.gemm_update(frozen, a, b, 1.0)
    np.testing.assert_array_equal(c, before)
