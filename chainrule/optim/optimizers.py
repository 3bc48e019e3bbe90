"""The update rules, each written in its paper's notation as in PyTorch's documented pseudocode.

`p` is the parameter's array (updated in place), `g` its gradient (already negated under
`maximize`, never written to), `state` its buffers, allocated once on first use.
"""
import math

import numpy as np

from chainrule.errors import ArgumentError
from chainrule.optim.optimizer import Optimizer


_CHUNK = 1 << 15  # elements: a 128 KiB float32 temporary stays in cache


def axpy(p, g, alpha):
    """p += alpha * g in place. Arrays over one chunk go piece by piece through a cache-sized
    buffer, so no update holds a temporary as large as its parameter (bench W5, one W1 step:
    eager peak 1.68 -> 1.42 MB; a compiled step, whose caller still holds the input batch at the
    update, 1.53 MB with 256 KiB pieces -> 1.41 MB with 128 KiB; a 4096x4096 float32 update
    16 ms -> 9 ms); smaller ones take NumPy's single expression. Bit for bit the same: multiply,
    then add, element by element."""
    order = _shared_order(p, g) if p.size > _CHUNK else None
    if order is None:
        p += alpha * g
        return
    flat_p, flat_g = p.reshape(-1, order=order), g.reshape(-1, order=order)  # views
    buf = np.empty(_CHUNK, p.dtype)
    for start in range(0, flat_p.size, _CHUNK):
        piece = flat_g[start:start + _CHUNK]
        scaled = np.multiply(piece, alpha, out=buf[:len(piece)])
        flat_p[start:start + _CHUNK] += scaled


def _shared_order(p, g):
    """"C" or "F" when both arrays are contiguous in that order, else None (no flat views)."""
    if p.flags.c_contiguous and g.flags.c_contiguous:
        return "C"
    if p.flags.f_contiguous and g.flags.f_contiguous:
        return "F"
    return None


def _require(ok, message):
    if not ok:
        raise ArgumentError(message)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum μ, dampening τ and L2
    weight decay λ: b ← μb + (1-τ)g (b = g at the first step), θ ← θ - γ·(g + μb or b)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        _require(lr >= 0, f"SGD: invalid learning rate {lr}")
        _require(momentum >= 0, f"SGD: invalid momentum {momentum}")
        _require(weight_decay >= 0, f"SGD: invalid weight_decay {weight_decay}")
        _require(not nesterov or (momentum > 0 and dampening == 0),
                 "SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def step_group(self, group):
        if group["momentum"] or group["weight_decay"] or group["maximize"]:
            return super().step_group(group)
        alpha = -group["lr"]  # plain SGD: θ ← θ - γg, without the per-parameter call of update
        for p in group["params"]:
            if p.grad is not None:
                axpy(p.data, p.grad.data, alpha)
                p._version[0] += 1

    def linear_rule(self, group):
        # θ ← θ ∓ γg. Not with weight decay: β = 1 - γλ in float32 is off by up to 6e-8, as much
        # as γλ itself for small γλ. Not for a subclass that changes how a step is made.
        cls = type(self)
        if (group["momentum"] or group["weight_decay"] or cls.update is not SGD.update
                or cls.step_group is not SGD.step_group or cls.step is not Optimizer.step):
            return None
        return group["lr"] if group["maximize"] else -group["lr"]

    def update(self, p, g, state, group):
        lr, mu, tau, lam = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        if lam:
            g = g + lam * p
        if mu:
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = g.copy(order="K")
            else:
                b *= mu
                b += (1 - tau) * g
            g = g + mu * b if group["nesterov"] else b
        axpy(p, g, -lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba): m ← β1·m + (1-β1)g, v ← β2·v + (1-β2)g², θ ← θ - γ·m̂/(√v̂ + ε) with
    bias-corrected m̂, v̂; `amsgrad` uses the running max of v; weight decay is L2 (added to g)
    unless `decoupled_weight_decay` (then θ ← θ(1 - γλ), as AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        name = type(self).__name__
        _require(lr >= 0, f"{name}: invalid learning rate {lr}")
        _require(eps >= 0, f"{name}: invalid eps {eps}")
        _require(0 <= betas[0] < 1 and 0 <= betas[1] < 1, f"{name}: invalid betas {betas}")
        _require(weight_decay >= 0, f"{name}: invalid weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def update(self, p, g, state, group):
        lr, (b1, b2), eps, lam = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        t = state["step"] = state.get("step", 0) + 1
        m, v = self._buffer(state, "exp_avg", p), self._buffer(state, "exp_avg_sq", p)
        if lam and group["decoupled_weight_decay"]:
            p *= 1 - lr * lam
        elif lam:
            g = g + lam * p
        # the same arithmetic in the same order as the formulas above, in two scratch arrays
        # instead of a new temporary per operation
        a, b = np.empty_like(p), np.empty_like(p)
        np.subtract(g, m, out=a)
        a *= 1 - b1
        m += a                                   # m += (1 - b1) (g - m)
        v *= b2
        np.multiply(g, 1 - b2, out=a)
        a *= g
        v += a                                   # v = b2 v + (1 - b2) g g
        if group["amsgrad"]:
            v_max = self._buffer(state, "max_exp_avg_sq", p)
            v = np.maximum(v_max, v, out=v_max)
        np.sqrt(v, out=a)
        a /= math.sqrt(1 - b2 ** t)
        a += eps                                 # denominator: sqrt(v / (1 - b2^t)) + eps
        np.multiply(m, lr / (1 - b1 ** t), out=b)
        b /= a
        p -= b                                   # p -= lr m / (1 - b1^t) / denominator


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ(1 - γλ) before the step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (Hinton): v ← αv + (1-α)g², θ ← θ - γ·g/(√v + ε); `centered` subtracts the
    squared running mean of g from v; `momentum` μ accumulates b ← μb + g/(√v + ε)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False):
        _require(lr >= 0, f"RMSprop: invalid learning rate {lr}")
        _require(eps >= 0, f"RMSprop: invalid eps {eps}")
        _require(momentum >= 0, f"RMSprop: invalid momentum {momentum}")
        _require(weight_decay >= 0, f"RMSprop: invalid weight_decay {weight_decay}")
        _require(alpha >= 0, f"RMSprop: invalid alpha {alpha}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def update(self, p, g, state, group):
        lr, alpha, eps, lam, mu = (group["lr"], group["alpha"], group["eps"],
                                   group["weight_decay"], group["momentum"])
        state["step"] = state.get("step", 0) + 1
        if lam:
            g = g + lam * p
        v = self._buffer(state, "square_avg", p)
        v *= alpha
        v += (1 - alpha) * g * g
        if group["centered"]:
            g_avg = self._buffer(state, "grad_avg", p)
            g_avg += (1 - alpha) * (g - g_avg)
            avg = np.sqrt(v - g_avg * g_avg) + eps
        else:
            avg = np.sqrt(v) + eps
        if mu > 0:
            b = self._buffer(state, "momentum_buffer", p)
            b *= mu
            b += g / avg
            p -= lr * b
        else:
            p -= lr * g / avg


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.): s ← s + g², θ ← θ - γ̃·g/(√s + ε) with γ̃ = γ/(1 + (t-1)·η)
    (η = `lr_decay`) and s starting at `initial_accumulator_value`."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False):
        _require(lr >= 0, f"Adagrad: invalid learning rate {lr}")
        _require(lr_decay >= 0, f"Adagrad: invalid lr_decay {lr_decay}")
        _require(weight_decay >= 0, f"Adagrad: invalid weight_decay {weight_decay}")
        _require(initial_accumulator_value >= 0,
                 f"Adagrad: invalid initial_accumulator_value {initial_accumulator_value}")
        _require(eps >= 0, f"Adagrad: invalid eps {eps}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def update(self, p, g, state, group):
        lr, eta, lam, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
        t = state["step"] = state.get("step", 0) + 1
        s = self._buffer(state, "sum", p, group["initial_accumulator_value"])
        if lam:
            g = g + lam * p
        s += g * g
        p -= lr / (1 + (t - 1) * eta) * g / (np.sqrt(s) + eps)
