"""Training health: per-layer diagnostics during `fit`, and a plain-language verdict.

    health = TrainingHealth(model)
    cr.fit(model, data, callbacks=[health])
    print(health.verdict())        # "healthy", or one finding per line
    cr.viz.plot_health(health, "health.png")
"""

import numpy as np

from chainrule.nn.activation import ReLU, Sigmoid, Tanh
from chainrule.train import Callback

METRICS = ("grad_norm", "update_ratio", "dead", "saturated")


class TrainingHealth(Callback):
    """Per-layer diagnostics, one value per epoch, each the mean over the epoch's training steps:

    grad_norm[layer]     ||dL/dW|| of each weight matrix (a parameter `weight` with >= 2 dims:
                         Linear, Embedding), after backward
    update_ratio[layer]  ||W_after - W_before|| / ||W_before|| of the optimizer's step
    dead[layer]          per ReLU module: the fraction of its units that are 0 for every sample
                         of the batch
    saturated[layer]     per Sigmoid / Tanh module: the fraction of its outputs that are
                         saturated (sigmoid < 0.01 or > 0.99, |tanh| > 0.99)

    Activations are read by forward hooks on the activation modules (nn.ReLU, nn.Sigmoid,
    nn.Tanh, as nn.MLP builds them) in training mode only, so validation passes do not count.
    `history` = {"epoch": [...], metric: {layer: [one value per epoch]}}. `verdict()` judges the
    last epoch against the thresholds given here: a layer's gradient norm below `vanishing` or
    above `exploding` times the last layer's, or above `max_norm`; more than `dead` of a ReLU's
    units dead; more than `saturated` of a Sigmoid's or Tanh's outputs saturated; an update
    ratio outside `update_range` (about 1e-3 is the usual rule of thumb).
    """

    def __init__(self, model, vanishing=1e-3, exploding=1e3, max_norm=1e3, dead=0.5,
                 saturated=0.5, update_range=(1e-5, 5e-2)):
        self.model = model
        self.vanishing, self.exploding, self.max_norm = vanishing, exploding, max_norm
        self.dead_limit, self.saturated_limit, self.update_range = dead, saturated, update_range
        self.weights = [(name.rsplit(".", 1)[0] if "." in name else name, p)
                        for name, p in model.named_parameters()
                        if name.rsplit(".", 1)[-1] == "weight" and p.ndim >= 2]
        self.history = {"epoch": [], **{m: {} for m in METRICS}}
        self._handles, self._before = [], None
        self._epoch = {m: {} for m in METRICS}

    # ---- collecting ---------------------------------------------------------------------------
    def on_train_begin(self, run):
        self._remove_hooks()
        for name, m in self.model.named_modules():
            if isinstance(m, (ReLU, Sigmoid, Tanh)):
                self._handles.append(m.register_forward_hook(self._activation_hook(name or "(root)")))

    def _activation_hook(self, name):
        def hook(module, args, out):
            if not module.training:
                return
            y = out.data
            if isinstance(module, ReLU):
                units = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
                self._add("dead", name, float(np.all(units <= 0, axis=0).mean()))
            else:
                bad = np.abs(y) > 0.99 if isinstance(module, Tanh) else (y < 0.01) | (y > 0.99)
                self._add("saturated", name, float(bad.mean()))
        return hook

    def _add(self, metric, layer, value):
        self._epoch[metric].setdefault(layer, []).append(value)

    def on_after_backward(self, run):
        self._record_update()
        for layer, p in self.weights:
            if p.grad is not None:
                self._add("grad_norm", layer, _norm(p.grad.data))
        self._before = [p.data.copy() for _, p in self.weights]

    def _record_update(self):
        """The ratio of the step that ran since the last on_after_backward."""
        if self._before is None:
            return
        for (layer, p), before in zip(self.weights, self._before):
            size = _norm(before)
            if size > 0:
                self._add("update_ratio", layer, _norm(p.data - before) / size)
        self._before = None

    def on_epoch_end(self, run):
        self._record_update()  # the epoch's last step has run by now
        self.history["epoch"].append(run.epoch)
        for metric in METRICS:
            for layer, values in self._epoch[metric].items():
                self.history[metric].setdefault(layer, []).append(float(np.mean(values)))
        self._epoch = {m: {} for m in METRICS}

    def on_train_end(self, run):
        self._remove_hooks()

    def _remove_hooks(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        if isinstance(state, dict) and "history" in state:
            self.history = {k: (list(v) if k == "epoch" else {n: list(x) for n, x in v.items()})
                            for k, v in state["history"].items()}

    # ---- judging ------------------------------------------------------------------------------
    def last(self, metric):
        """{layer: value} of the last epoch."""
        return {layer: v[-1] for layer, v in self.history[metric].items() if v}

    def findings(self):
        """Short plain-language problems found in the last epoch; [] when healthy."""
        out = []
        norms = self.last("grad_norm")
        if norms:
            out += self._gradient_findings(norms)
        for layer, f in self.last("dead").items():
            if f > self.dead_limit:
                out.append(f"dead units: {f:.0%} of {layer}'s ReLUs never fire (zero for every "
                           "sample of a batch); lower the learning rate, or check the bias and "
                           "initialisation")
        for layer, f in self.last("saturated").items():
            if f > self.saturated_limit:
                out.append(f"saturated units: {f:.0%} of {layer}'s outputs sit at the flat ends "
                           "of the curve, where the gradient through them nearly vanishes; use a "
                           "smaller initialisation or standardise the inputs")
        ratios = self.last("update_ratio")
        low, high = self.update_range
        if ratios:
            big = max(ratios, key=ratios.get)
            small = min(ratios, key=ratios.get)
            if ratios[big] > high:
                out.append(f"update ratio {_num(ratios[big])} too large in {big} (about 1e-3 is "
                           "healthy): lower the learning rate")
            if ratios[small] < low:
                out.append(f"update ratio {_num(ratios[small])} too small in {small} (about "
                           "1e-3 is healthy): the weights barely move; raise the learning rate")
        return out

    def _gradient_findings(self, norms):
        out = []
        bad = [layer for layer, n in norms.items() if not np.isfinite(n)]
        if bad:
            return [f"exploding gradients: the gradient of {', '.join(bad)} is not finite"]
        layers = list(norms)
        last = layers[-1]
        ref = norms[last]
        zero = [layer for layer in layers[:-1] if norms[layer] == 0]
        if zero:
            out.append(f"vanishing gradients: {', '.join(zero)} get no gradient at all")
        if ref > 0:
            low = min(layers[:-1] or [last], key=norms.get)
            high = max(layers[:-1] or [last], key=norms.get)
            if 0 < norms[low] < self.vanishing * ref:
                out.append(f"vanishing gradients: layer {low} gradient norm {_num(norms[low])} is "
                           f"{_num(norms[low] / ref)} of the last layer's ({last})")
            if norms[high] > self.exploding * ref:
                out.append(f"exploding gradients: layer {high} gradient norm {_num(norms[high])} "
                           f"is {_num(norms[high] / ref)} times the last layer's ({last})")
                return out
        top = max(layers, key=norms.get)
        if norms[top] > self.max_norm:
            out.append(f"exploding gradients: layer {top} gradient norm {_num(norms[top])} is "
                       f"above {_num(self.max_norm)}; lower the learning rate, use a smaller "
                       "initialisation, or clip gradients (nn.utils.clip_grad_norm_)")
        return out

    def verdict(self):
        """'healthy', or the findings one per line."""
        if not self.history["epoch"]:
            return "no epochs recorded yet"
        return "\n".join(self.findings()) or "healthy"


def _norm(a):
    return float(np.sqrt(np.sum(np.square(a, dtype=np.float64))))


def _num(v):
    """2 significant digits, exponents without padding: 1e-07 -> 1e-7."""
    return f"{v:.2g}".replace("e-0", "e-").replace("e+0", "e+")
