"""Element-wise primitives. Derivatives that are a function of the output save the output."""
import numpy as np

from chainrule.autograd import Function
from chainrule.errors import ArgumentError, shape_error
from chainrule.ops import dual
from chainrule.tensor import Tensor
from chainrule import dtypes


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad / x


class Log1p(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log1p(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad / (x + 1)


class Expm1(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.expm1(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y + 1)


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad / (y * 2)


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * dual.cos(x)


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.cos(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return -(grad * dual.sin(x))


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (1 - y * y)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        e = np.exp(-np.abs(x))  # never overflows: exp of a non-positive number
        r = 1 / (1 + e)
        y = np.where(x >= 0, r, e * r)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y * (1 - y))


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (y > 0)

    # replay kernels (chainrule.replay.Site): the same, in place where no one else reads the array
    @staticmethod
    def replay_forward(k):
        if k.facts.shapes[0] is None:
            return None
        x = k.args[0]
        lines = [f"{k.out} = np.maximum({x}, 0, out={x})" if k.overwritable(0) else
                 f"{k.out} = np.maximum({x}, 0)"]
        if k.record:
            lines.append(f"{k.saved} = ({k.out},)")
        return lines

    @staticmethod
    def replay_backward(k):
        y, g = k.temp("y"), k.temp("g")
        if k.grad_owned:
            return [f"{y}, = {k.saved}", f"{g} = np.multiply({k.grad}, {y} > 0, out={k.grad})"], \
                {0: (g, True)}
        return [f"{y}, = {k.saved}", f"{g} = {k.grad} * ({y} > 0)"], {0: (g, True)}


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * dual.sign(x)


class Maximum(Function):
    """Element-wise max; where the inputs tie, each gets half the gradient (as in PyTorch)."""
    pick = staticmethod(np.maximum)

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.save_for_backward(a, b)
        return cls.pick(a, b)

    @classmethod
    def backward(cls, ctx, grad):
        a, b = ctx.saved_tensors
        wins = (a > b) if cls.pick is np.maximum else (a < b)
        share = dual.astype(wins, grad.dtype) + dual.astype(a == b, grad.dtype) * 0.5
        ga = grad * share
        return ga, grad - ga

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error(cls.__name__.lower(), *(np.shape(a) for a in arrays),
                           detail="shapes cannot be broadcast together")


class Minimum(Maximum):
    pick = staticmethod(np.minimum)


class Clamp(Function):
    """Clip to [low, high] (either may be None); the gradient passes where low <= x <= high."""

    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        if isinstance(low, np.ndarray) or isinstance(high, np.ndarray):
            ctx.reads_only_saved = False  # backward reads the bounds too
        return np.clip(x, low, high)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        inside = True
        if ctx.low is not None:
            inside = x >= ctx.low
        if ctx.high is not None:
            inside = (x <= ctx.high) & inside
        return grad * inside


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = cond
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        return None, dual.where(ctx.cond, grad, 0), dual.where(ctx.cond, 0, grad)

    @classmethod
    def shape_error(cls, arrays, err):
        return shape_error("where", *(np.shape(a) for a in arrays),
                           detail="condition, input and other cannot be broadcast together")


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad  # the engine casts it back to the input's dtype


def cast(x, dtype):
    dtype = dtypes.resolve(dtype)
    if x.data.dtype == dtype:
        return x
    if not dtypes.is_float(dtype):
        return Tensor._make(x.data.astype(dtype))
    return Cast.apply(x, dtype)


def maximum(a, b):
    return Maximum.apply(a, b)


def minimum(a, b):
    return Minimum.apply(a, b)


def clamp(x, min=None, max=None):
    if isinstance(min, Tensor) or isinstance(max, Tensor):  # tensor bounds: compose
        x = x if min is None else maximum(x, min)
        return x if max is None else minimum(x, max)
    if min is None and max is None:
        raise ArgumentError("clamp: at least one of min and max must be given")
    return Clamp.apply(x, min, max)


def where(condition, input, other):
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        cond = cond.astype(bool)
    return Where.apply(cond, input, other)


def compare(fn, a, b):
    """A comparison or logical op: no gradient, a bool tensor."""
    a_ = a.data if isinstance(a, Tensor) else a
    b_ = b.data if isinstance(b, Tensor) else b
    try:
        return Tensor._make(np.asarray(fn(a_, b_)))
    except ValueError:
        raise shape_error(fn.__name__, np.shape(a_), np.shape(b_),
                          detail="shapes cannot be broadcast together") from None


class Erf(Function):
    """The error function, 2/sqrt(pi) * integral_0^x exp(-t^2) dt (needed by exact GELU).

    Forward is fdlibm's s_erf.c vectorised (rational approximations on four ranges, within 2
    ulp of math.erf in float64). NumPy has no erf; math.erf through np.frompyfunc measured 6x
    slower on 64k elements."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _erf(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * (2 / np.sqrt(np.pi)) * dual.exp(-(x * x))


def _poly(x, coeffs):
    """coeffs[0] + coeffs[1] x + ... by Horner's rule, in place (fresh arrays are slow here)."""
    out = x * coeffs[-1]
    out += coeffs[-2]
    for c in coeffs[-3::-1]:
        out *= x
        out += c
    return out


_ERX = 8.45062911510467529297e-01
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _erf(x):
    """erf on an ndarray, every range computed on the whole array then selected (cheaper than
    boolean-mask gathers); float64 inside, the input's float dtype out."""
    x = np.asarray(x)
    with np.errstate(all="ignore"):  # inf and huge inputs overflow in ranges not selected
        out = _erf_ranges(x, np.abs(x, dtype=np.float64))
    return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out


def _erf_ranges(x, a):
    z = a * a
    small = _poly(z, _PP)                         # |x| < 0.84375: x + x R(x^2)
    small /= _poly(z, _QQ)
    small *= a
    small += a
    s = a - 1                                     # |x| < 1.25: erx + P(|x|-1) / Q(|x|-1)
    mid = _poly(s, _PA)
    mid /= _poly(s, _QA)
    mid += _ERX
    t = np.clip(a, 1.25, 6.0)                     # |x| < 6: 1 - exp(-x^2 - 0.5625 + R/S) / x
    w = 1 / (t * t)
    ratio = np.where(t < 1 / 0.35, _poly(w, _RA) / _poly(w, _SA), _poly(w, _RB) / _poly(w, _SB))
    hi = (t.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)  # low word zeroed
    ratio += (hi - t) * (hi + t)
    tail = np.exp(-hi * hi - 0.5625)
    tail *= np.exp(ratio)
    tail /= -t
    tail += 1
    out = np.where(a < 0.84375, small, np.where(a < 1.25, mid, np.where(a < 6, tail, 1.0)))
    out = np.copysign(out, x, out=out)
    out[np.isnan(a)] = np.nan
    return out
