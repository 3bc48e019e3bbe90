"""The systems compared. Each is a class with `prepare(spec) -> run`: `prepare` builds the model
from the shared initial weights (not timed); `run()` is the timed workload and returns a dict:
`weights` [(W (out, in), b), ...] after training or `outputs` (n, classes) after inference,
and, for W6, `epochs` run and test `accuracy` reached.

Training runs draw each epoch's order inside the timed run from `workloads.permutations` (the
stream `cr.fit`'s DataLoader draws from `cr.Generator(seed)`) and report the loss each step, as
`fit` does.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import weakref

import numpy as np

from workloads import permutations

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def batches(n, batch, order):
    for s in range(0, n, batch):
        yield order[s:s + batch]


def accuracy(outputs, y):
    return float(np.mean(np.argmax(outputs, 1) == y))


def reached(spec, predict):
    """W6: has the model reached the target test accuracy? (None when there is no target.)"""
    if spec.target_accuracy is None:
        return None
    return accuracy(predict(spec.X_test), spec.y_test)


class System:
    name = ""
    workloads = ("W1", "W2", "W3", "W4")
    note = ""          # how this system runs the workloads (printed under the table)
    needs = ()         # modules that must import

    def missing(self):
        """Why this system cannot run here (None when it can)."""
        for module in self.needs:
            try:
                __import__(module)
            except ImportError as e:
                return f"{module} not installed ({e})"
        return None

    def prepare(self, spec):
        return self.prepare_train(spec) if spec.kind == "train" else self.prepare_infer(spec)


# ---- hand-written NumPy: the floor ------------------------------------------------------------
class NumPy(System):
    name = "numpy"
    workloads = ("W1", "W2", "W3", "W4", "W6")
    note = ("hand-written forward and backward; weights stored (in, out) for `x @ W`; in-place "
            "ReLU, mask and updates; for SGD the learning rate is folded into the output "
            "gradient, so each update is one `W -= a.T @ g`")

    @staticmethod
    def forward(params, x, acts=None):
        h = x
        for W, b in params[:-1]:
            h = h @ W
            h += b
            np.maximum(h, 0, out=h)
            if acts is not None:
                acts.append(h)
        z = h @ params[-1][0]
        z += params[-1][1]
        return z

    def prepare_train(self, spec):
        params = [(W.T.copy(), b.copy()) for W, b in spec.weights]
        sgd = spec.optimizer == "sgd"
        adam = [(np.zeros_like(p), np.zeros_like(p)) for layer in params for p in layer]
        last = len(params) - 1
        lr, B = np.float32(spec.lr), spec.batch

        def predict(X):
            return self.forward(params, X)

        def run():
            X, Y = spec.X, spec.y
            perms, t, epoch, acc = permutations(spec.seed, spec.n), 0, 0, None
            for epoch in range(1, spec.epochs + 1):
                loss_sum = 0.0
                for idx in batches(spec.n, B, next(perms)):
                    x, y = X[idx], Y[idx]
                    acts = [x]
                    z = self.forward(params, x, acts)
                    z -= z.max(1, keepdims=True)          # softmax, in place
                    np.exp(z, out=z)
                    z /= z.sum(1, keepdims=True)
                    rows = np.arange(len(y))
                    loss_sum += float(-np.log(z[rows, y]).mean())
                    z[rows, y] -= 1                        # dL/dz = (softmax - onehot) / batch
                    z *= (lr if sgd else np.float32(1)) / np.float32(len(y))
                    g, grads = z, []
                    for i in range(last, -1, -1):
                        W, b = params[i]
                        a = acts[i]
                        if i:
                            g_below = g @ W.T
                            np.multiply(g_below, a > 0, out=g_below)
                        if sgd:
                            W -= a.T @ g
                            b -= g.sum(0)
                        else:
                            grads[:0] = [a.T @ g, g.sum(0)]
                        if i:
                            g = g_below
                    if not sgd:
                        t += 1
                        self.adam(params, grads, adam, t, spec.lr)
                acc = reached(spec, predict)
                if acc is not None and acc >= spec.target_accuracy:
                    break
            return {"weights": [(W.T, b) for W, b in params], "epochs": epoch, "accuracy": acc}
        return run

    @staticmethod
    def adam(params, grads, state, t, lr, b1=0.9, b2=0.999, eps=1e-8):
        """PyTorch's Adam: p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""
        flat = [p for layer in params for p in layer]
        for p, g, (m, v) in zip(flat, grads, state):
            m += (1 - b1) * (g - m)
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v)
            denom /= np.sqrt(1 - b2 ** t)
            denom += eps
            p -= (lr / (1 - b1 ** t)) * m / denom

    def prepare_infer(self, spec):
        params = [(W.T.copy(), b.copy()) for W, b in spec.weights]

        def run():
            X, B = spec.X, spec.batch
            return {"outputs": np.concatenate([self.forward(params, X[s:s + B])
                                               for s in range(0, spec.n, B)])}
        return run


# ---- chainrule ---------------------------------------------------------------------------------
def _cr_model(spec):
    import chainrule as cr
    model = cr.nn.MLP(list(spec.sizes))
    state = {}
    for k, (W, b) in enumerate(spec.weights):
        state[f"layers.{2 * k}.weight"], state[f"layers.{2 * k}.bias"] = W, b
    model.load_state_dict({k: cr.tensor(v) for k, v in state.items()})
    return model


def _cr_optimizer(spec, model):
    import chainrule as cr
    cls = cr.optim.SGD if spec.optimizer == "sgd" else cr.optim.Adam
    return cls(model.parameters(), lr=spec.lr)


def _cr_train_step(model, opt, in_backward=False):
    """One training step, step(x, y) -> the loss: in PyTorch's idiom (backward(), step()), or
    with `opt.backward_and_step(loss)` as cr.fit steps (SGD's large weights updated by BLAS
    inside backward)."""
    import chainrule as cr

    def train_step(x, y):
        loss = cr.cross_entropy(model(x), y)
        opt.zero_grad()
        if in_backward:
            opt.backward_and_step(loss)
        else:
            loss.backward()
            opt.step()
        return loss
    return train_step


def _cr_weights(model):
    layers = [m for m in model.layers if hasattr(m, "weight")]
    return [(m.weight.numpy(), m.bias.numpy()) for m in layers]


class Chainrule(System):
    name = "chainrule"
    workloads = ("W1", "W2", "W3", "W4", "W6")
    needs = ("chainrule",)
    note = ("nn.MLP + optim.SGD (W6: Adam) + cr.fit(progress=False, generator=cr.Generator(seed), "
            "default metrics); W4: cr.predict(model, X, batch_size=1000); W6: fit evaluates the "
            "test split each epoch (val_data) and a callback stops at the target")

    def prepare_train(self, spec):
        import chainrule as cr
        model = _cr_model(spec)
        opt = _cr_optimizer(spec, model)
        callbacks, val = [], None
        if spec.target_accuracy is not None:
            class StopAtTarget(cr.train.Callback):
                def on_epoch_end(self, run):
                    run.stop = run.history.last("val_accuracy") >= spec.target_accuracy
            callbacks, val = [StopAtTarget()], (spec.X_test, spec.y_test)

        def run():
            history = cr.fit(model, (spec.X, spec.y), val, loss="cross_entropy", optimizer=opt,
                             epochs=spec.epochs, batch_size=spec.batch, progress=False,
                             generator=cr.Generator(spec.seed), callbacks=callbacks)
            return {"weights": _cr_weights(model), "epochs": len(history["epoch"]),
                    "accuracy": history.last("val_accuracy")}
        run.params = list(model.parameters())
        return run

    def prepare_infer(self, spec):
        import chainrule as cr
        model = _cr_model(spec)
        return lambda: {"outputs": cr.predict(model, spec.X, batch_size=spec.batch)}


class ChainruleLoop(System):
    name = "chainrule loop"
    workloads = ("W1", "W2")
    needs = ("chainrule",)
    note = ("diagnostic: the same training without fit's bookkeeping, inside cr.nn.fusing() as "
            "fit is: DataLoader(shuffle, cr.Generator(seed)), model(x), cr.cross_entropy, "
            "zero_grad, backward, step, loss.item()")

    def prepare_train(self, spec, compiled=False):
        import chainrule as cr
        model = _cr_model(spec)
        opt = _cr_optimizer(spec, model)
        data = cr.data.TensorDataset(spec.X, spec.y)

        train_step = _cr_train_step(model, opt, in_backward=compiled)
        step = cr.compile(train_step) if compiled else train_step  # traced at its first call

        @cr.nn.fusing()
        def run():
            loader = cr.data.DataLoader(data, spec.batch, shuffle=True,
                                        generator=cr.Generator(spec.seed))
            for epoch in range(1, spec.epochs + 1):
                loss_sum = 0.0
                for x, y in loader:
                    loss_sum += step(x, y).item()
            return {"weights": _cr_weights(model), "epochs": spec.epochs}
        run.params = list(model.parameters())
        return run


class ChainruleCompiled(ChainruleLoop):
    name = "chainrule compiled"
    workloads = ("W1", "W2", "W3", "W4")
    note = ("the loop above with its whole step compiled: cr.compile(train_step), train_step = "
            "loss, zero_grad, optimizer.backward_and_step(loss) (as cr.fit steps: SGD's large "
            "weights updated by BLAS inside the replayed backward); traced inside the timed run "
            "(at the first batch, and again at a smaller last batch), replayed elsewhere; W4: "
            "cr.compile(model) called under no_grad")

    def prepare_train(self, spec):
        return super().prepare_train(spec, compiled=True)

    def prepare_infer(self, spec):
        import chainrule as cr
        model = _cr_model(spec).eval()
        forward = cr.compile(model)  # traced at its first call, in run

        def run():
            X, B = spec.X, spec.batch
            with cr.no_grad():
                return {"outputs": np.concatenate([forward(X[s:s + B]).numpy()
                                                   for s in range(0, spec.n, B)])}
        return run


class ChainruleCLI(System):
    name = "chainrule CLI"
    workloads = ("W6",)
    needs = ("chainrule",)
    note = ("W6 only: `python -m chainrule train --data digits --hidden 128,64 --optimizer adam "
            "--lr 0.001 --batch-size 64 --epochs E --quiet --no-plots` in a subprocess, E = the "
            "epochs cr.fit needed; wall time includes interpreter start, imports, loading and "
            "standardising digits, per-epoch validation and checkpoint, writing the run folder; "
            "its own seed gives its own initial weights and batch order, so its accuracy is "
            "reported, not compared")
    epochs = None      # set by run.py from the chainrule row's check run

    def prepare_train(self, spec):
        out = tempfile.mkdtemp(prefix="chainrule-bench-")
        epochs = self.epochs or spec.epochs
        cmd = [sys.executable, "-m", "chainrule", "train", "--data", "digits", "--hidden",
               ",".join(map(str, spec.sizes[1:-1])), "--optimizer", "adam", "--lr", str(spec.lr),
               "--batch-size", str(spec.batch), "--epochs", str(epochs), "--quiet",
               "--no-plots", "--out", out]

        def run():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            with open(os.path.join(out, "metrics.json")) as f:
                metrics = json.load(f)
            return {"weights": None, "epochs": metrics["epochs_run"],
                    "accuracy": metrics["test"]["accuracy"]}
        weakref.finalize(run, shutil.rmtree, out, True)  # the run folder goes with the run
        return run


# ---- PyTorch -----------------------------------------------------------------------------------
class Torch(System):
    name = "torch"
    workloads = ("W1", "W2", "W3", "W4", "W6")
    needs = ("torch",)
    note = ("eager: nn.Sequential(Linear, ReLU, ...), F.cross_entropy, torch.optim.SGD/Adam "
            "(defaults), zero_grad, backward, step, loss.item(); batches by indexing the data "
            "tensor (torch's DataLoader collates sample by sample, far slower); W4 under no_grad")

    @staticmethod
    def model(spec):
        import torch
        layers = []
        for k, (W, b) in enumerate(spec.weights):
            lin = torch.nn.Linear(W.shape[1], W.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, torch.nn.ReLU()] if k < len(spec.weights) - 1 else [lin]
        return torch.nn.Sequential(*layers)

    def prepare_train(self, spec):
        import torch
        F = torch.nn.functional
        model = self.model(spec)
        cls = torch.optim.SGD if spec.optimizer == "sgd" else torch.optim.Adam
        opt = cls(model.parameters(), lr=spec.lr)
        X, Y = torch.from_numpy(spec.X), torch.from_numpy(spec.y)

        def predict(X_test):
            with torch.no_grad():
                return model(torch.from_numpy(X_test)).numpy()

        def run():
            perms, epoch, acc = permutations(spec.seed, spec.n), 0, None
            for epoch in range(1, spec.epochs + 1):
                order, loss_sum = torch.from_numpy(next(perms)), 0.0
                for idx in batches(spec.n, spec.batch, order):
                    loss = F.cross_entropy(model(X[idx]), Y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    loss_sum += loss.item()
                acc = reached(spec, predict)
                if acc is not None and acc >= spec.target_accuracy:
                    break
            weights = [(m.weight.detach().numpy(), m.bias.detach().numpy())
                       for m in model if isinstance(m, torch.nn.Linear)]
            return {"weights": weights, "epochs": epoch, "accuracy": acc}
        run.params = list(model.parameters())
        return run

    def prepare_infer(self, spec):
        import torch
        model = self.model(spec)
        X, B = torch.from_numpy(spec.X), spec.batch

        def run():
            with torch.no_grad():
                return {"outputs": torch.cat([model(X[s:s + B])
                                              for s in range(0, spec.n, B)]).numpy()}
        return run


# ---- scikit-learn -----------------------------------------------------------------------------
class SKLearn(System):
    name = "sklearn"
    workloads = ("W1", "W2", "W3", "W4", "W6")
    needs = ("sklearn",)
    note = ("MLPClassifier(solver='sgd' (W6: 'adam'), same hidden sizes, relu, batch_size, "
            "learning_rate_init, momentum=0, nesterovs_momentum=False, alpha=0, shuffle=False): "
            "one partial_fit per epoch on the data permuted in our order (its own shuffling "
            "draws from its own RNG); it validates the whole input on each call and computes "
            "`0*velocity - lr*grad` and `grad += 0*W` although momentum and alpha are 0. "
            "W2: with 2 classes it would build a 2-16-16-1 logistic network; one-hot targets and "
            "out_activation_='softmax' set after initialisation make it the same 2-16-16-2 "
            "softmax network. W4: predict_proba per batch (validation and softmax included; "
            "compared as probabilities). W6: its Adam adds eps to sqrt(v) before the bias "
            "correction (PyTorch after), so its weights are not compared, only its accuracy")

    @staticmethod
    def classifier(spec):
        """An MLPClassifier initialised by a small partial_fit, then given our weights."""
        import warnings
        from sklearn.neural_network import MLPClassifier
        binary = spec.sizes[-1] == 2
        clf = MLPClassifier(hidden_layer_sizes=spec.sizes[1:-1], activation="relu",
                            solver="sgd" if spec.optimizer == "sgd" else "adam", alpha=0.0,
                            batch_size=spec.batch, learning_rate="constant",
                            learning_rate_init=spec.lr, momentum=0.0, nesterovs_momentum=False,
                            shuffle=False, max_iter=1, tol=0.0, n_iter_no_change=10 ** 9)
        k = spec.sizes[-1]
        x0, y0 = spec.X[:k], np.arange(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if binary:
                clf.partial_fit(x0, np.eye(2, dtype=bool)[y0], classes=y0)
                clf.out_activation_ = "softmax"
            else:
                clf.partial_fit(x0, y0, classes=np.arange(k))
        for coef, intercept, (W, b) in zip(clf.coefs_, clf.intercepts_, spec.weights):
            assert coef.dtype == np.float32 and coef.shape == W.T.shape
            coef[...] = W.T                 # in place: the solver holds these arrays
            intercept[...] = b
        clf.t_, clf.n_iter_, clf.loss_curve_ = 0, 0, []
        clf.best_loss_, clf._no_improvement_count = np.inf, 0
        del clf._optimizer                  # a fresh solver state (Adam's moments)
        return clf, binary

    def prepare_train(self, spec):
        clf, binary = self.classifier(spec)
        Y = np.eye(2, dtype=bool)[spec.y] if binary else spec.y

        def predict(X_test):
            return clf.predict_proba(X_test)

        def run():
            perms, epoch, acc = permutations(spec.seed, spec.n), 0, None
            for epoch in range(1, spec.epochs + 1):
                order = next(perms)
                clf.partial_fit(spec.X[order], Y[order])
                acc = reached(spec, predict)
                if acc is not None and acc >= spec.target_accuracy:
                    break
            return {"weights": [(c.T, i) for c, i in zip(clf.coefs_, clf.intercepts_)],
                    "epochs": epoch, "accuracy": acc, "compare_weights": spec.optimizer == "sgd"}
        return run

    def prepare_infer(self, spec):
        clf, _ = self.classifier(spec)
        X, B = spec.X, spec.batch
        return lambda: {"outputs": np.concatenate([clf.predict_proba(X[s:s + B])
                                                   for s in range(0, spec.n, B)]),
                        "probabilities": True}


# ---- MyGrad and HIPS autograd ------------------------------------------------------------------
class MyGrad(System):
    name = "mygrad"
    needs = ("mygrad",)
    note = ("weights (in, out) as mygrad Tensors, x @ W + b, mygrad.nnet relu and "
            "softmax_crossentropy, backward, `p.data -= lr * p.grad`; W4 under mg.no_autodiff")

    @staticmethod
    def forward(params, x):
        from mygrad.nnet.activations import relu
        h = x
        for W, b in params[:-1]:
            h = relu(h @ W + b)
        return h @ params[-1][0] + params[-1][1]

    def prepare_train(self, spec):
        import mygrad as mg
        from mygrad.nnet.losses import softmax_crossentropy
        params = [(mg.tensor(W.T.copy()), mg.tensor(b.copy())) for W, b in spec.weights]
        flat = [p for layer in params for p in layer]
        lr = np.float32(spec.lr)

        def run():
            X, Y, perms = spec.X, spec.y, permutations(spec.seed, spec.n)
            for epoch in range(spec.epochs):
                loss_sum = 0.0
                for idx in batches(spec.n, spec.batch, next(perms)):
                    loss = softmax_crossentropy(self.forward(params, X[idx]), Y[idx])
                    loss.backward()
                    for p in flat:
                        p.data -= lr * p.grad
                    loss_sum += loss.item()
            return {"weights": [(W.data.T, b.data) for W, b in params], "epochs": spec.epochs}
        return run

    def prepare_infer(self, spec):
        import mygrad as mg
        params = [(mg.tensor(W.T.copy()), mg.tensor(b.copy())) for W, b in spec.weights]

        def run():
            X, B = spec.X, spec.batch
            with mg.no_autodiff:
                return {"outputs": np.concatenate([self.forward(params, X[s:s + B]).data
                                                   for s in range(0, spec.n, B)])}
        return run


class Autograd(System):
    name = "autograd"
    needs = ("autograd",)
    note = ("HIPS autograd: value_and_grad of a loss written with autograd.numpy (weights "
            "(in, out)) and autograd.scipy.special.logsumexp; in-place NumPy updates")

    @staticmethod
    def forward(params, x):
        import autograd.numpy as anp
        h = x
        for W, b in params[:-1]:
            h = anp.maximum(anp.dot(h, W) + b, 0)
        return anp.dot(h, params[-1][0]) + params[-1][1]

    def prepare_train(self, spec):
        import autograd.numpy as anp
        from autograd import value_and_grad
        from autograd.scipy.special import logsumexp
        params = [[W.T.copy(), b.copy()] for W, b in spec.weights]
        lr = np.float32(spec.lr)

        def loss(params, x, y):
            z = self.forward(params, x)
            return anp.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y])

        loss_and_grad = value_and_grad(loss)

        def run():
            X, Y, perms = spec.X, spec.y, permutations(spec.seed, spec.n)
            for epoch in range(spec.epochs):
                loss_sum = 0.0
                for idx in batches(spec.n, spec.batch, next(perms)):
                    value, grads = loss_and_grad(params, X[idx], Y[idx])
                    for layer, glayer in zip(params, grads):
                        for p, g in zip(layer, glayer):
                            p -= lr * g
                    loss_sum += float(value)
            return {"weights": [(W.T, b) for W, b in params], "epochs": spec.epochs}
        return run

    def prepare_infer(self, spec):
        params = [[W.T.copy(), b.copy()] for W, b in spec.weights]
        X, B = spec.X, spec.batch
        return lambda: {"outputs": np.concatenate([self.forward(params, X[s:s + B])
                                                   for s in range(0, spec.n, B)])}


SYSTEMS = [NumPy(), Chainrule(), ChainruleLoop(), ChainruleCompiled(), ChainruleCLI(), Torch(),
           SKLearn(), MyGrad(), Autograd()]
