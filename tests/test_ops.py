"""One row per differentiable op: float64 gradcheck, and forward + backward against PyTorch.

A row is (name, input specs, chainrule call, PyTorch call). The PyTorch call defaults to the
chainrule one when the same expression works for both (`a * b`, `x.sum(1)`). Inputs are drawn
from a generator seeded by the row's id, inside each spec's domain (positive for log/sqrt, away
from 0 for relu/abs/division). Non-differentiable arguments (masks, indices, targets) are
constants captured by the calls.
"""
import zlib
from typing import Callable, NamedTuple

import numpy as np
import pytest

import chainrule as cr
from chainrule import autograd

try:  # the PyTorch calls look `torch` up when they run; test_matches_torch skips without it
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = F = None


# ---- input specs ------------------------------------------------------------------------------
class Spec(NamedTuple):
    shape: tuple
    draw: Callable  # (rng, shape) -> float64 array


def N(*shape):
    """Standard normal."""
    return Spec(shape, lambda rng, s: rng.standard_normal(s))


def P(*shape):
    """Positive, away from 0: uniform in [0.5, 2]."""
    return Spec(shape, lambda rng, s: rng.uniform(0.5, 2.0, s))


def A(*shape):
    """Away from 0 (for relu, abs, denominators): |x| in [0.2, 2], random sign."""
    return Spec(shape, lambda rng, s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.2, 2.0, s))


def G(*shape):
    """Greater than -1 with a margin (log1p): uniform in [-0.5, 2]."""
    return Spec(shape, lambda rng, s: rng.uniform(-0.5, 2.0, s))


def I(*shape):
    """Small integers -1, 0, 1 as floats: many exact ties."""
    return Spec(shape, lambda rng, s: rng.integers(-1, 2, s).astype(np.float64))


def Z(*shape):
    """Normal with zeros at flat positions 1, 8 and 11 (for prod)."""
    def draw(rng, s):
        x = rng.standard_normal(s)
        x.reshape(-1)[[1, 8, 11]] = 0.0
        return x
    return Spec(shape, draw)


# ---- the table ------------------------------------------------------------------------------
class Row(NamedTuple):
    name: str
    inputs: tuple
    fn: Callable   # chainrule call
    ref: Callable  # PyTorch call

    @property
    def id(self):
        shapes = "_".join("x".join(map(str, s.shape)) or "scalar" for s in self.inputs)
        return f"{self.name}-{shapes}"


ROWS = []


def row(name, inputs, fn, ref=None):
    ROWS.append(Row(name, tuple(inputs), fn, ref or fn))


def T(a):
    """A constant (index, mask, target) as a torch tensor."""
    return torch.as_tensor(a)


# arithmetic, with broadcasting and 0-d operands
BINARY_SHAPES = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)),
                 ((3, 4), ()), ((), (2, 3)), ((2, 1, 4), (3, 1))]
for shapes in BINARY_SHAPES:
    row("add", [N(*s) for s in shapes], lambda a, b: a + b)
    row("sub", [N(*s) for s in shapes], lambda a, b: a - b)
    row("mul", [N(*s) for s in shapes], lambda a, b: a * b)
    row("div", [N(*shapes[0]), A(*shapes[1])], lambda a, b: a / b)
    row("maximum", [N(*s) for s in shapes], cr.maximum, lambda a, b: torch.maximum(a, b))
    row("minimum", [N(*s) for s in shapes], cr.minimum, lambda a, b: torch.minimum(a, b))
row("add_fn", [N(3, 4), N(4)], cr.add, lambda a, b: torch.add(a, b))
row("sub_fn", [N(3, 4), N(4)], cr.sub, lambda a, b: torch.sub(a, b))
row("mul_fn", [N(3, 4), N(4)], cr.mul, lambda a, b: torch.mul(a, b))
row("div_fn", [N(3, 4), A(4)], cr.div, lambda a, b: torch.div(a, b))
row("radd", [N(3, 4)], lambda x: 1.5 + x)
row("rsub", [N(3, 4)], lambda x: 2.0 - x)
row("sub_scalar", [N(3, 4)], lambda x: x - 0.75)
row("rmul", [N(3, 4)], lambda x: -0.5 * x)
row("mul_int", [N(3, 4)], lambda x: x * 3)
row("rdiv", [A(3, 4)], lambda x: 3.0 / x)
row("div_scalar", [N(3, 4)], lambda x: x / 4.0)
_C = np.random.default_rng(7).standard_normal(4)
row("mul_ndarray", [N(3, 4)], lambda x: _C * x, lambda x: T(_C) * x)
row("add_ndarray", [N(3, 4)], lambda x: x + _C, lambda x: x + T(_C))
row("neg", [N(3, 4)], lambda x: -x)
row("neg_fn", [N(2, 3)], cr.neg, lambda x: torch.neg(x))
row("pos", [N(2, 3)], lambda x: +x)
row("pow_2", [N(3, 4)], lambda x: x ** 2)
row("pow_3", [N(3, 4)], lambda x: x ** 3)
row("pow_2.5", [P(3, 4)], lambda x: x ** 2.5)
row("pow_-1.5", [P(3, 4)], lambda x: x ** -1.5)
row("rpow_2", [N(3, 4)], lambda x: 2.0 ** x)
row("rpow_0.5", [N(5)], lambda x: 0.5 ** x)
row("pow_tt", [P(3, 4), N(3, 4)], lambda a, b: a ** b)
row("pow_tt", [P(3, 1), N(1, 4)], lambda a, b: a ** b)
row("pow_tt", [P(2, 3), N()], lambda a, b: a ** b)
row("pow_fn", [P(2, 3), N(3)], cr.pow, lambda a, b: torch.pow(a, b))

# matmul with PyTorch's 1-D and batch rules
MATMUL_SHAPES = [((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((3, 4), (4, 2)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
                 ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((2, 3, 4), (2, 4, 2)), ((1, 3, 4), (2, 4, 2))]
for shapes in MATMUL_SHAPES:
    row("matmul", [N(*s) for s in shapes], lambda a, b: a @ b)
row("matmul_fn", [N(3, 4), N(4, 2)], cr.matmul, lambda a, b: torch.matmul(a, b))
row("matmul_method", [N(2, 3, 4), N(4, 2)], lambda a, b: a.matmul(b))
row("rmatmul_ndarray", [N(4, 2)], lambda b: np.ones((3, 4)) @ b,
    lambda b: T(np.ones((3, 4))) @ b)
row("linear", [N(5, 3), N(4, 3), N(4)], cr.linear, lambda x, w, b: F.linear(x, w, b))
row("linear_nobias", [N(2, 5, 3), N(4, 3)], cr.linear, lambda x, w: F.linear(x, w))
row("linear_relu", [N(5, 3), N(4, 3), N(4)], cr.nn.functional.linear_relu,
    lambda x, w, b: torch.relu(F.linear(x, w, b)))
row("linear_relu_nobias", [N(2, 5, 3), N(4, 3)], cr.nn.functional.linear_relu,
    lambda x, w: torch.relu(F.linear(x, w)))
row("perceptron", [N(5, 3), N(4, 3), N(4), N(6, 4), N(6), N(2, 6), N(2)],
    lambda x, w1, b1, w2, b2, w3, b3: cr.nn.functional.perceptron(x, [(w1, b1), (w2, b2), (w3, b3)]),
    lambda x, w1, b1, w2, b2, w3, b3: F.linear(torch.relu(F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)), w3, b3))
row("perceptron_relu_last_batched_nobias", [N(2, 5, 3), N(4, 3), N(6, 4), N(6)],
    lambda x, w1, w2, b2: cr.nn.functional.perceptron(x, [(w1, None), (w2, b2)], relu_last=True),
    lambda x, w1, w2, b2: torch.relu(F.linear(torch.relu(F.linear(x, w1)), w2, b2)))

# element-wise functions, as methods on three shapes and as functions
UNARY = [("exp", N), ("log", P), ("log1p", G), ("expm1", N), ("sqrt", P), ("sin", N), ("cos", N),
         ("tanh", N), ("sigmoid", N), ("relu", A), ("abs", A), ("neg", N)]
for name, spec in UNARY:
    for shape in [(), (7,), (2, 3, 4)]:
        row(name, [spec(*shape)], lambda x, n=name: getattr(x, n)())
    row(name + "_fn", [spec(3, 2)], lambda x, n=name: getattr(cr, n)(x),
        lambda x, n=name: getattr(torch, n)(x))
row("abs_builtin", [A(3, 4)], lambda x: abs(x))
row("clone", [N(3, 4)], lambda x: x.clone())
row("silu_diamond", [N(3, 4)], lambda x: x * x.sigmoid())
row("maximum_ties", [I(3, 4), I(3, 4)], cr.maximum, lambda a, b: torch.maximum(a, b))
row("minimum_ties", [I(3, 1), I(1, 4)], cr.minimum, lambda a, b: torch.minimum(a, b))
row("clamp", [N(3, 4)], lambda x: cr.clamp(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5))
row("clamp_min", [N(3, 4)], lambda x: x.clamp(min=-0.3))
row("clamp_max", [N(3, 4)], lambda x: x.clamp(max=0.2))
row("clip", [N(3, 4)], lambda x: cr.clip(x, -1.0, 0.4), lambda x: torch.clip(x, -1.0, 0.4))
row("clip_method", [N(3, 4)], lambda x: x.clip(-0.1, 0.7))
_COND = np.random.default_rng(3).random((3, 4)) < 0.5
_COND_COL = np.array([[True], [False], [True]])
row("where", [N(3, 4), N(3, 4)], lambda a, b: cr.where(_COND, a, b),
    lambda a, b: torch.where(T(_COND), a, b))
row("where", [N(1, 4), N()], lambda a, b: cr.where(_COND_COL, a, b),
    lambda a, b: torch.where(T(_COND_COL), a, b))
row("where_scalar", [N(3, 4)], lambda a: cr.where(cr.tensor(_COND), a, 0.0),
    lambda a: torch.where(T(_COND), a, 0.0))

# reductions: all, one dim, negative dim, dim tuple, keepdim
REDUCE_ARGS = [("all", {}), ("dim1", {"dim": 1}), ("dim-1_keep", {"dim": -1, "keepdim": True}),
               ("dim02", {"dim": (0, 2)}), ("dim02_keep", {"dim": (0, 2), "keepdim": True})]
for red in ["sum", "mean", "var", "std", "amax", "amin", "logsumexp"]:
    for label, kw in REDUCE_ARGS:
        ref_kw = {"dim": (0, 1, 2)} if red == "logsumexp" and not kw else kw
        row(f"{red}_{label}", [N(2, 3, 4)], lambda x, r=red, k=kw: getattr(x, r)(**k),
            lambda x, r=red, k=ref_kw: getattr(x, r)(**k))
for label, kw in REDUCE_ARGS[1:3]:
    row(f"sum_fn_{label}", [N(2, 3, 4)], lambda x, k=kw: cr.sum(x, **k),
        lambda x, k=kw: torch.sum(x, **k))
    row(f"mean_fn_{label}", [N(2, 3, 4)], lambda x, k=kw: cr.mean(x, **k),
        lambda x, k=kw: torch.mean(x, **k))
    row(f"amax_fn_{label}", [N(2, 3, 4)], lambda x, k=kw: cr.amax(x, **k),
        lambda x, k=kw: torch.amax(x, **k))
    row(f"logsumexp_fn_{label}", [N(2, 3, 4)], lambda x, k=kw: cr.logsumexp(x, **k),
        lambda x, k=kw: torch.logsumexp(x, **k))
row("sum_scalar", [N()], lambda x: x.sum())
row("sum_axis_alias", [N(2, 3, 4)], lambda x: x.sum(axis=1, keepdims=True),
    lambda x: x.sum(dim=1, keepdim=True))
row("mean_1d", [N(5)], lambda x: x.mean(0))
row("var_correction0", [N(3, 4)], lambda x: x.var(1, correction=0))
row("var_unbiased_false", [N(3, 4)], lambda x: x.var(unbiased=False), lambda x: x.var(correction=0))
row("std_correction0", [N(3, 4)], lambda x: x.std(0, keepdim=True, correction=0))
row("var_fn", [N(3, 4)], lambda x: cr.var(x, 0), lambda x: torch.var(x, 0))
row("std_fn", [N(3, 4)], lambda x: cr.std(x, 1), lambda x: torch.std(x, 1))
row("prod_all", [N(2, 3, 2)], lambda x: x.prod())
row("prod_dim1", [N(2, 3, 2)], lambda x: x.prod(1))
row("prod_dim-1_keep", [N(2, 3, 2)], lambda x: x.prod(-1, keepdim=True))
row("prod_dim02", [N(2, 3, 2)], lambda x: x.prod((0, 2)), lambda x: x.prod(2).prod(0))
row("prod_dim02_keep", [N(2, 3, 2)], lambda x: x.prod((0, 2), keepdim=True),
    lambda x: x.prod(2, keepdim=True).prod(0, keepdim=True))
row("prod_zeros_dim1", [Z(3, 4)], lambda x: x.prod(1))      # rows with 0, 1 and 2 zeros
row("prod_zeros_dim0", [Z(3, 4)], lambda x: x.prod(0))
row("prod_fn", [N(3, 4)], lambda x: cr.prod(x, 0), lambda x: torch.prod(x, 0))
for red in ["max", "min"]:
    row(f"{red}_all", [N(2, 3, 4)], lambda x, r=red: getattr(x, r)())
    row(f"{red}_dim1", [N(2, 3, 4)], lambda x, r=red: getattr(x, r)(1))        # (values, indices)
    row(f"{red}_dim-1_keep", [N(2, 3, 4)], lambda x, r=red: getattr(x, r)(dim=-1, keepdim=True))
    row(f"{red}_fn_dim0", [N(3, 4)], lambda x, r=red: getattr(cr, r)(x, 0),
        lambda x, r=red: getattr(torch, r)(x, 0))
    row(f"{red}_fn_all", [N(3, 4)], lambda x, r=red: getattr(cr, r)(x),
        lambda x, r=red: getattr(torch, r)(x))
    row(f"{red}_binary", [N(3, 1), N(4)], lambda a, b, r=red: getattr(cr, r)(a, b),
        lambda a, b, r=red: getattr(torch, r)(a, b))

# shape and movement
row("reshape", [N(2, 3, 4)], lambda x: x.reshape(4, 6))
row("reshape_-1", [N(2, 3, 4)], lambda x: x.reshape(-1, 2))
row("reshape_tuple", [N(2, 3, 4)], lambda x: x.reshape((3, 8)))
row("reshape_fn", [N(2, 3, 4)], lambda x: cr.reshape(x, (6, 4)), lambda x: torch.reshape(x, (6, 4)))
row("reshape_to_scalar", [N(1, 1)], lambda x: x.reshape(()))
row("view", [N(2, 3, 4)], lambda x: x.view(3, 2, 4))
row("flatten", [N(2, 3, 4)], lambda x: x.flatten())
row("flatten_1", [N(2, 3, 4)], lambda x: x.flatten(1))
row("flatten_01", [N(2, 3, 4)], lambda x: x.flatten(0, 1))
row("flatten_fn", [N(2, 3, 4)], lambda x: cr.flatten(x, 1), lambda x: torch.flatten(x, 1))
row("transpose", [N(2, 3, 4)], lambda x: x.transpose(0, 2))
row("transpose_fn", [N(2, 3, 4)], lambda x: cr.transpose(x, 1, -1), lambda x: torch.transpose(x, 1, -1))
row("T", [N(3, 4)], lambda x: x.T)
row("permute", [N(2, 3, 4)], lambda x: x.permute(2, 0, 1))
row("permute_tuple", [N(2, 3, 4)], lambda x: x.permute((1, 2, 0)))
row("permute_fn", [N(2, 3, 4)], lambda x: cr.permute(x, (2, 1, 0)), lambda x: torch.permute(x, (2, 1, 0)))
row("squeeze", [N(3, 1, 4, 1)], lambda x: x.squeeze())
row("squeeze_1", [N(3, 1, 4, 1)], lambda x: x.squeeze(1))
row("squeeze_-1", [N(3, 1, 4, 1)], lambda x: x.squeeze(-1))
row("squeeze_noop", [N(3, 1, 4, 1)], lambda x: x.squeeze(0))
row("squeeze_tuple", [N(3, 1, 4, 1)], lambda x: x.squeeze((1, 3)))
row("squeeze_fn", [N(3, 1, 4)], lambda x: cr.squeeze(x, 1), lambda x: torch.squeeze(x, 1))
row("unsqueeze_0", [N(3, 4)], lambda x: x.unsqueeze(0))
row("unsqueeze_1", [N(3, 4)], lambda x: x.unsqueeze(1))
row("unsqueeze_-1", [N(3, 4)], lambda x: x.unsqueeze(-1))
row("unsqueeze_fn", [N(3, 4)], lambda x: cr.unsqueeze(x, -2), lambda x: torch.unsqueeze(x, -2))
row("expand", [N(3, 1)], lambda x: x.expand(3, 4))
row("expand_new_dims", [N(3, 1)], lambda x: x.expand(2, 3, 4))
row("expand_-1", [N(3, 1)], lambda x: x.expand(2, -1, 5))
row("expand_tuple", [N(1, 4)], lambda x: x.expand((3, 4)))
row("expand_scalar", [N()], lambda x: x.expand(2, 3))
row("broadcast_to", [N(3, 1)], lambda x: cr.broadcast_to(x, (2, 3, 4)),
    lambda x: torch.broadcast_to(x, (2, 3, 4)))
row("broadcast_to_method", [N(4)], lambda x: x.broadcast_to((3, 4)))
row("cat_0", [N(2, 3), N(4, 3)], lambda a, b: cr.cat([a, b]), lambda a, b: torch.cat([a, b]))
row("cat_1", [N(2, 3), N(2, 1), N(2, 2)], lambda a, b, c: cr.cat([a, b, c], dim=1),
    lambda a, b, c: torch.cat([a, b, c], dim=1))
row("cat_-1", [N(2, 2, 3), N(2, 2, 1)], lambda a, b: cr.cat((a, b), -1),
    lambda a, b: torch.cat((a, b), -1))
row("cat_same_twice", [N(2, 3)], lambda a: cr.cat([a, a * 2, a]), lambda a: torch.cat([a, a * 2, a]))
row("stack_0", [N(2, 3), N(2, 3), N(2, 3)], lambda a, b, c: cr.stack([a, b, c]),
    lambda a, b, c: torch.stack([a, b, c]))
row("stack_1", [N(2, 3), N(2, 3)], lambda a, b: cr.stack([a, b], dim=1),
    lambda a, b: torch.stack([a, b], dim=1))
row("stack_-1", [N(2, 3), N(2, 3)], lambda a, b: cr.stack((a, b), -1),
    lambda a, b: torch.stack((a, b), -1))
row("stack_scalars", [N(), N()], lambda a, b: cr.stack([a, b]), lambda a, b: torch.stack([a, b]))
row("split_2", [N(5, 4)], lambda x: x.split(2))
row("split_sections_dim1", [N(5, 4)], lambda x: x.split([1, 3], dim=1))
row("split_fn", [N(5, 4)], lambda x: cr.split(x, 3, 1), lambda x: torch.split(x, 3, 1))
row("chunk_3", [N(5, 4)], lambda x: x.chunk(3))
row("chunk_dim1", [N(5, 4)], lambda x: x.chunk(2, dim=1))
row("chunk_fn", [N(6, 2)], lambda x: cr.chunk(x, 4), lambda x: torch.chunk(x, 4))

# indexing: basic, advanced with repeated indices, boolean masks
_MASK = np.random.default_rng(5).random((3, 4)) < 0.5
_ROWMASK = np.array([True, False, True])
_REP = np.array([0, 2, 0, 0, 1])
row("index_int", [N(3, 4)], lambda x: x[1])
row("index_ints", [N(3, 4)], lambda x: x[1, -1])
row("index_slice", [N(3, 4)], lambda x: x[1:, ::2])
row("index_neg_step", [N(3, 4)], lambda x: x[:, ::-1], lambda x: x.flip(1))
row("index_none", [N(3, 4)], lambda x: x[None, :, None])
row("index_ellipsis", [N(2, 3, 4)], lambda x: x[..., 1])
row("index_ellipsis_none", [N(2, 3, 4)], lambda x: x[None, ..., 1:3])
row("index_array_repeats", [N(3, 4)], lambda x: x[_REP], lambda x: x[T(_REP)])
row("index_list_repeats", [N(3, 4)], lambda x: x[[1, 1, 2]])
row("index_cols_repeats", [N(3, 4)], lambda x: x[:, [3, 0, 3, 3]])
row("index_pairs_repeats", [N(3, 4)], lambda x: x[_REP, [0, 1, 0, 0, 3]],
    lambda x: x[T(_REP), T(np.array([0, 1, 0, 0, 3]))])
row("index_tensor_repeats", [N(3, 4)], lambda x: x[cr.tensor(_REP)], lambda x: x[T(_REP)])
row("index_2d_array", [N(5, 2)], lambda x: x[np.array([[0, 4], [4, 4]])],
    lambda x: x[T(np.array([[0, 4], [4, 4]]))])
row("index_mask", [N(3, 4)], lambda x: x[_MASK], lambda x: x[T(_MASK)])
row("index_mask_tensor", [N(3, 4)], lambda x: x[cr.tensor(_MASK)], lambda x: x[T(_MASK)])
row("index_rowmask", [N(3, 4)], lambda x: x[_ROWMASK], lambda x: x[T(_ROWMASK)])
row("index_rowmask_slice", [N(3, 4)], lambda x: x[_ROWMASK, 1:], lambda x: x[T(_ROWMASK), 1:])
_GIDX = np.array([[0, 0, 3], [2, 1, 2], [3, 3, 3]])
row("gather_1", [N(3, 4)], lambda x: x.gather(1, _GIDX), lambda x: x.gather(1, T(_GIDX)))
row("gather_0", [N(3, 4)], lambda x: cr.gather(x, 0, np.array([[2, 0, 0, 1], [2, 2, 1, 0]])),
    lambda x: torch.gather(x, 0, T(np.array([[2, 0, 0, 1], [2, 2, 1, 0]]))))

# softmax family and the loss
for fn in ["softmax", "log_softmax"]:
    for dim in [-1, 0, 1]:
        row(f"{fn}_{dim}", [N(2, 3, 4)], lambda x, f=fn, d=dim: getattr(x, f)(d))
    row(f"{fn}_fn", [N(3, 5)], lambda x, f=fn: getattr(cr, f)(x, dim=1),
        lambda x, f=fn: getattr(torch, f)(x, dim=1))
    row(f"{fn}_scaled", [N(4, 3)], lambda x, f=fn: getattr(x * 30, f)(-1))
_TARGETS = np.array([0, 2, 1, 2, 2])
for reduction in ["mean", "sum", "none"]:
    row(f"cross_entropy_{reduction}", [N(5, 3)],
        lambda x, r=reduction: cr.cross_entropy(x, _TARGETS, reduction=r),
        lambda x, r=reduction: F.cross_entropy(x, T(_TARGETS), reduction=r))
row("cross_entropy_tensor_targets", [N(5, 3)], lambda x: cr.cross_entropy(x, cr.tensor(_TARGETS)),
    lambda x: F.cross_entropy(x, T(_TARGETS)))

ROW_IDS = [r.id for r in ROWS]
assert len(set(ROW_IDS)) == len(ROW_IDS), "row ids must be unique"


# ---- helpers ----------------------------------------------------------------------------------
def make_inputs(r):
    rng = np.random.default_rng(zlib.crc32(r.id.encode()))
    return [s.draw(rng, s.shape).astype(np.float64) for s in r.inputs]


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def float_outputs(fn):
    """fn with its integer outputs (max(dim)'s indices) dropped."""
    def wrapped(*xs):
        return tuple(o for o in as_list(fn(*xs)) if o.dtype.kind == "f")
    return wrapped


def upstream(outputs, seed=11):
    """A non-trivial upstream gradient for each output: random normal, not ones."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(o.shape)) for o in outputs]


# ---- (a) finite differences -----------------------------------------------------------------
@pytest.mark.parametrize("r", ROWS, ids=ROW_IDS)
def test_gradcheck(r):
    xs = [cr.tensor(a, requires_grad=True) for a in make_inputs(r)]
    assert cr.gradcheck(float_outputs(r.fn), xs)


# ---- (b) PyTorch ----------------------------------------------------------------------------
@pytest.mark.parametrize("r", ROWS, ids=ROW_IDS)
def test_matches_torch(r):
    pytest.importorskip("torch")
    arrays = make_inputs(r)
    xs = [cr.tensor(a.copy(), requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    outs, touts = as_list(r.fn(*xs)), as_list(r.ref(*ts))
    assert len(outs) == len(touts)
    for o, t in zip(outs, touts):
        want = t.detach().numpy()
        assert o.shape == want.shape
        if want.dtype.kind == "f":
            assert o.dtype == np.float64
            np.testing.assert_allclose(o.data, want, rtol=1e-6, atol=1e-12)
        else:  # indices of max(dim)/min(dim)
            assert o.dtype == np.int64 and not o.requires_grad
            np.testing.assert_array_equal(o.data, want)

    fouts = [o for o in outs if o.dtype.kind == "f"]
    ftouts = [t for t in touts if t.dtype.is_floating_point]
    grads = upstream(fouts)
    autograd.backward(fouts, grads)
    torch.autograd.backward(ftouts, [torch.tensor(g) for g in grads])
    for i, (x, t) in enumerate(zip(xs, ts)):
        if t.grad is None:
            assert x.grad is None, f"input {i}: chainrule gives a gradient, PyTorch none"
            continue
        assert x.grad is not None, f"input {i}: no gradient"
        assert x.grad.shape == x.shape and x.grad.dtype == np.float64
        np.testing.assert_allclose(x.grad.data, t.grad.numpy(), rtol=1e-6, atol=1e-12,
                                   err_msg=f"gradient of input {i}")


# ---- no-grad ops: argmax/argmin, comparisons, one_hot -----------------------------------------
def _x():
    return cr.tensor(np.random.default_rng(0).standard_normal((3, 4, 5)), requires_grad=True)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": 1}, {"dim": -1, "keepdim": True}],
                         ids=["flat", "dim0", "dim1", "dim-1_keep"])
def test_argmax_argmin(name, kw):
    x = _x()
    want = getattr(np, name)(x.data, axis=kw.get("dim"), keepdims=kw.get("keepdim", False))
    for got in (getattr(x, name)(**kw), getattr(cr, name)(x, **kw)):
        assert got.dtype == np.int64 and got.shape == np.shape(want)
        np.testing.assert_array_equal(got.data, want)
        assert not got.requires_grad and got.grad_fn is None


def test_argmax_known_values():
    x = cr.tensor([[1.0, 5.0, 2.0], [7.0, -1.0, 0.0]])
    assert x.argmax().item() == 3
    assert x.argmax(1).tolist() == [1, 0]
    assert x.argmin(0).tolist() == [0, 1, 1]
    assert x.argmin(dim=1, keepdim=True).tolist() == [[0], [1]]


COMPARISONS = [("lt", lambda a, b: a < b, np.less), ("le", lambda a, b: a <= b, np.less_equal),
               ("gt", lambda a, b: a > b, np.greater),
               ("ge", lambda a, b: a >= b, np.greater_equal),
               ("eq", lambda a, b: a == b, np.equal), ("ne", lambda a, b: a != b, np.not_equal)]


@pytest.mark.parametrize("name,op,ref", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons(name, op, ref):
    a = cr.tensor(np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]]), requires_grad=True)
    b = cr.tensor(np.array([[1.0], [2.0]]), requires_grad=True)
    for got, want in [(op(a, b), ref(a.data, b.data)), (op(a, 2.0), ref(a.data, 2.0)),
                      (op(2.0, a), ref(2.0, a.data)), (getattr(a, name)(b), ref(a.data, b.data))]:
        assert got.dtype == np.bool_ and got.shape == want.shape
        np.testing.assert_array_equal(got.data, want)
        assert not got.requires_grad and got.grad_fn is None
    assert op(a, b).data.any() and not op(a, b).data.all()  # the data above exercise both results


def test_logical_ops():
    a, b = cr.tensor([True, True, False, False]), cr.tensor([True, False, True, False])
    assert (a & b).tolist() == [True, False, False, False]
    assert (a | b).tolist() == [True, True, True, False]
    assert (a ^ b).tolist() == [False, True, True, False]
    assert (~a).tolist() == [False, False, True, True]


def test_comparison_result_masks_a_gradient():
    x = cr.tensor([-1.0, 2.0, -3.0, 4.0], requires_grad=True)
    (x * (x > 0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_one_hot():
    got = cr.one_hot(cr.tensor([0, 2, 1, 2]), 4)
    assert got.dtype == np.int64 and not got.requires_grad
    assert got.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert cr.one_hot(cr.tensor([1, 0])).tolist() == [[0, 1], [1, 0]]  # classes inferred
    assert cr.one_hot(cr.tensor([[0, 1], [2, 0]]), 3).shape == (2, 2, 3)
    if torch is not None:
        np.testing.assert_array_equal(cr.one_hot(cr.tensor([3, 0, 1]), 5).data,
                                      F.one_hot(torch.tensor([3, 0, 1]), 5).numpy())
    with pytest.raises(cr.ArgumentError, match="one_hot"):
        cr.one_hot(cr.tensor([0, 3]), 3)
    with pytest.raises(cr.ArgumentError, match="one_hot"):
        cr.one_hot(cr.tensor([0.0, 1.0]), 3)


# ---- numbers the issue names --------------------------------------------------------------------
def test_softmax_classic_values():
    y = cr.softmax(cr.tensor([[1, 2, 0], [-1, 0, 1], [-10, 0, 10]], dtype=cr.float32), dim=-1)
    want = [[0.2447, 0.6652, 0.0900], [0.0900, 0.2447, 0.6652], [2.06e-09, 4.54e-05, 0.99995]]
    np.testing.assert_allclose(y.data, want, rtol=1e-3, atol=0)
    np.testing.assert_allclose(y.data.sum(-1), 1.0, rtol=1e-6)
    y64 = cr.softmax(cr.tensor([[-10.0, 0.0, 10.0]], dtype=cr.float64), dim=1)
    e = np.exp([-10.0, 0.0, 10.0])
    np.testing.assert_allclose(y64.data[0], e / e.sum(), rtol=1e-12)


# ---- stability: float32 inputs up to 1e4 in magnitude -------------------------------------------
BIG = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 9999.0], [-50.0, 3.0, 1e4]],
               dtype=np.float32)
STABLE = [
    ("softmax", lambda x: cr.softmax(x, dim=1),
     lambda a: np.exp(a - a.max(1, keepdims=True)) / np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True)),
    ("log_softmax", lambda x: cr.log_softmax(x, dim=1),
     lambda a: a - a.max(1, keepdims=True) - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True))),
    ("logsumexp", lambda x: cr.logsumexp(x, dim=1),
     lambda a: a.max(1) + np.log(np.exp(a - a.max(1, keepdims=True)).sum(1))),
    ("logsumexp_all", lambda x: x.logsumexp(),
     lambda a: a.max() + np.log(np.exp(a - a.max()).sum())),
    ("cross_entropy", lambda x: cr.cross_entropy(x, np.array([1, 0, 2, 0]), reduction="none"),
     lambda a: (a.max(1) + np.log(np.exp(a - a.max(1, keepdims=True)).sum(1)))
     - a[np.arange(4), [1, 0, 2, 0]]),
    ("cross_entropy_mean", lambda x: cr.cross_entropy(x, np.array([1, 0, 2, 0])), None),
    ("sigmoid", lambda x: x.sigmoid(), lambda a: 0.5 * (1 + np.tanh(a / 2))),
    ("tanh", lambda x: x.tanh(), np.tanh),
]


@pytest.mark.parametrize("name,fn,ref", STABLE, ids=[s[0] for s in STABLE])
@pytest.mark.parametrize("scale", [1.0, -1.0, 1e-4], ids=["big", "big_neg", "small"])
def test_stable_in_float32(name, fn, ref, scale):
    x = cr.tensor(BIG * np.float32(scale), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        # no overflow, 0/0 or log(0) anywhere, even transiently; exp underflowing to 0 is fine
        y = fn(x)
        assert y.dtype == np.float32 and np.isfinite(y.data).all()
        y.backward(np.random.default_rng(0).standard_normal(y.shape).astype(np.float32))
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad.data).all()
    if ref is not None:
        want = ref(BIG.astype(np.float64) * scale)
        np.testing.assert_allclose(y.data, want, rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_gradients_at_1e4():
    x = cr.tensor(np.array([[1e4, -1e4, 0.0]], dtype=np.float32), requires_grad=True)
    cr.cross_entropy(x, np.array([1])).backward()
    np.testing.assert_allclose(x.grad.data, [[1.0, -1.0, 0.0]], atol=1e-6)
    x.grad = None
    cr.softmax(x, 1)[0, 0].backward()
    np.testing.assert_allclose(x.grad.data, [[0.0, 0.0, 0.0]], atol=1e-6)


# ---- dtype: float32 stays float32 next to Python scalars ----------------------------------------
FLOAT32_EXPRS = [
    ("add", lambda x: x + 1.5), ("radd", lambda x: 1.5 + x), ("sub", lambda x: x - 0.25),
    ("rsub", lambda x: 0.25 - x), ("mul", lambda x: x * 3.0), ("rmul", lambda x: 3 * x),
    ("div", lambda x: x / 7.0), ("rdiv", lambda x: 1.0 / x), ("pow", lambda x: x ** 2.0),
    ("pow_int", lambda x: x ** 3), ("rpow", lambda x: 2.0 ** x), ("neg", lambda x: -x),
    ("clamp", lambda x: x.clamp(0.6, 1.2)), ("clamp_min", lambda x: x.clamp(min=1)),
    ("maximum", lambda x: cr.maximum(x, cr.tensor(1.0))),
    ("where", lambda x: cr.where(x > 1.0, x, 0.0)), ("mean", lambda x: x.mean()),
    ("var", lambda x: x.var(0)), ("std", lambda x: x.std()), ("logsumexp", lambda x: x.logsumexp(1)),
    ("softmax", lambda x: x.softmax(-1)), ("log_softmax", lambda x: x.log_softmax(-1)),
    ("cross_entropy", lambda x: cr.cross_entropy(x, np.array([0, 2, 1]))),
    ("sqrt_exp_log", lambda x: (x.sqrt() * 0.5 + x.exp() - x.log()) / 3),
    ("matmul", lambda x: x @ x.T * 0.5), ("prod", lambda x: x.prod(1) * 2.0),
    ("numpy_scalar", lambda x: x * np.float64(2.0) + np.float64(1.0)),  # as PyTorch
    ("rnumpy_scalar", lambda x: np.float64(2.0) * x - np.sqrt(2.0) / x),
]


@pytest.mark.parametrize("name,fn", FLOAT32_EXPRS, ids=[e[0] for e in FLOAT32_EXPRS])
def test_float32_stays_float32(name, fn):
    x = cr.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (3, 3)).astype(np.float32),
                  requires_grad=True)
    y = fn(x)
    assert y.dtype == np.float32, f"{name} gives {y.dtype}"
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32


def test_python_float_lists_are_float32():
    assert cr.tensor([1.0, 2.0]).dtype == np.float32
    assert (cr.tensor([1.0, 2.0]) * 2.5).dtype == np.float32
    assert cr.tensor(np.array([1.0, 2.0])).dtype == np.float64


# ---- shape errors: a ShapeError (a ValueError) naming the op and both shapes ------------------
def test_matmul_error_message_exact():
    a, b = cr.zeros((32, 784)), cr.zeros((256, 128))
    with pytest.raises(cr.ShapeError) as e:
        a @ b
    assert str(e.value) == "matmul: (32, 784) @ (256, 128): inner dimensions 784 and 256 differ"
    assert isinstance(e.value, ValueError)


def _t(*shape):
    return cr.ones(shape)


SHAPE_ERRORS = [
    ("add", lambda: _t(3, 4) + _t(5), [(3, 4), (5,)]),
    ("sub", lambda: _t(3, 4) - _t(2, 4), [(3, 4), (2, 4)]),
    ("mul", lambda: _t(2, 3) * _t(3, 2), [(2, 3), (3, 2)]),
    ("div", lambda: _t(4) / _t(3), [(4,), (3,)]),
    ("pow", lambda: _t(4) ** _t(3), [(4,), (3,)]),
    ("maximum", lambda: cr.maximum(_t(2, 3), _t(4)), [(2, 3), (4,)]),
    ("minimum", lambda: cr.minimum(_t(2, 3), _t(4)), [(2, 3), (4,)]),
    ("where", lambda: cr.where(np.ones((2, 3), bool), _t(2, 3), _t(4)), [(2, 3), (4,)]),
    ("matmul", lambda: _t(3) @ _t(4), [(3,), (4,)]),
    ("matmul", lambda: _t(2, 3, 4) @ _t(5, 4, 2), [(2, 3, 4), (5, 4, 2)]),
    ("matmul", lambda: cr.matmul(_t(2, 5), _t(3)), [(2, 5), (3,)]),
    ("cat", lambda: cr.cat([_t(2, 3), _t(2, 4)]), [(2, 3), (2, 4)]),
    ("stack", lambda: cr.stack([_t(2, 3), _t(3, 2)]), [(2, 3), (3, 2)]),
    ("reshape", lambda: _t(2, 3).reshape(4, 2), [(2, 3), (4, 2)]),
    ("expand", lambda: _t(3, 2).expand(3, 4), [(3, 2), (3, 4)]),
    ("gather", lambda: _t(3, 4).gather(1, np.zeros((3,), np.int64)), [(3, 4), (3,)]),
    ("cross_entropy", lambda: cr.cross_entropy(_t(4, 3), np.zeros(5, np.int64)), [(4, 3), (5,)]),
    ("linear", lambda: cr.linear(_t(2, 3), _t(4, 5)), [(2, 3), (4, 5)]),
    ("linear", lambda: cr.nn.functional.linear_relu(_t(2, 3), _t(4, 5)), [(2, 3), (4, 5)]),
    ("linear", lambda: cr.nn.functional.perceptron(_t(2, 3), [(_t(4, 3), _t(4)), (_t(5, 6), None)]),
     [(2, 4), (5, 6)]),
    ("linear", lambda: cr.nn.functional.perceptron(_t(2, 3), [(_t(4, 3), _t(4)), (_t(5, 4), _t(4))]),
     [(5, 4), (4,)]),
    ("less", lambda: _t(3) < _t(4), [(3,), (4,)]),
    ("backward", lambda: (_t(2, 3).requires_grad_() * 2).backward(np.ones((3, 2), np.float32)),
     [(3, 2), (2, 3)]),
]


@pytest.mark.parametrize("op,call,shapes", SHAPE_ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(SHAPE_ERRORS)])
def test_shape_error_names_op_and_shapes(op, call, shapes):
    with pytest.raises(cr.ShapeError) as e:
        call()
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert msg.startswith(op), msg
    for s in shapes:
        assert cr.errors.fmt_shape(s) in msg, msg
