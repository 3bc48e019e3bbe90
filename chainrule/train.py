"""The training loop: `fit`, one plain function to read top to bottom, extended by callbacks.

Per epoch: shuffle, and for each batch forward -> loss -> zero_grad -> backward -> step; then
validation, the scheduler, the history, callbacks, and an atomic checkpoint of everything needed
to continue (model, optimizer, scheduler, random states, history, callbacks).
"""
import contextlib
import math
import os
import sys
import time

import numpy as np

from chainrule import metrics as M
from chainrule.autograd import no_grad
from chainrule.data.dataset import DataLoader, Dataset, TensorDataset
from chainrule.dtypes import get_default_dtype
from chainrule.errors import ArgumentError, ChainruleError, shape_error
from chainrule.nn.module import fusing
from chainrule.random import Generator, default_generator, rng
from chainrule.serialization import load, save
from chainrule.tensor import Tensor

CHECKPOINT = "checkpoint.safetensors"


class TrainingError(ChainruleError, RuntimeError):
    """Training cannot go on (a NaN/Inf loss, a checkpoint that does not fit)."""


class History(dict):
    """Per-epoch lists: epoch, train_loss, train_<metric>, val_loss, val_<metric>, lr, seconds,
    samples_per_s. `interrupted` is True when Ctrl-C ended the run."""

    interrupted = False

    def append(self, row):
        for key, value in row.items():
            self.setdefault(key, []).append(value)

    def last(self, key, default=None):
        return self[key][-1] if self.get(key) else default


class Callback:
    """Hooks into `fit`; `run` has model, optimizer, history, epoch, step, logs, stop."""

    def on_train_begin(self, run): pass
    def on_after_backward(self, run): pass
    def on_epoch_end(self, run): pass
    def on_train_end(self, run): pass
    def state_dict(self): return {}
    def load_state_dict(self, state): pass


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; at the end,
    put back the weights of the best epoch."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        name = monitor.split("_", 1)[-1]
        self.higher = (mode == "max") or (mode == "auto" and name in M.HIGHER_IS_BETTER)
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.restore_best_weights = restore_best_weights
        self.best, self.best_epoch, self.wait, self.best_state = None, 0, 0, None

    def on_epoch_end(self, run):
        value = run.history.last(self.monitor)
        if value is None:
            raise ArgumentError(f"EarlyStopping: no metric {self.monitor!r} in the history; "
                                f"have {', '.join(run.history)}")
        better = self.best is None or (value > self.best + self.min_delta if self.higher
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, run.epoch, 0
            if self.restore_best_weights:
                self.best_state = {k: v.data.copy() for k, v in run.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                run.stop = True

    def on_train_end(self, run):
        if self.restore_best_weights and self.best_state is not None:
            run.model.load_state_dict({k: Tensor(v) for k, v in self.best_state.items()})
            run.log(f"restored the weights of epoch {self.best_epoch} "
                    f"({self.monitor} {self.best:.4g})")

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_state": {k: Tensor(v) for k, v in (self.best_state or {}).items()}}

    def load_state_dict(self, state):
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_state = {k: v.data for k, v in state["best_state"].items()} or None


class Run:
    """What callbacks see and may change (`stop`)."""

    def __init__(self, model, optimizer, scheduler, history, verbose):
        self.model, self.optimizer, self.scheduler, self.history = model, optimizer, scheduler, history
        self.epoch = self.step = 0
        self.stop = False
        self.verbose = verbose

    def log(self, message):
        if self.verbose:
            print(message, flush=True)


@fusing()  # nn.Sequential's Linear, ReLU, Linear, ... runs as one op: the same numbers, faster
def fit(model, train_data, val_data=None, loss=None, optimizer=None, epochs=10, batch_size=32,
        metrics=("accuracy",), scheduler=None, callbacks=(), checkpoint_dir=None, resume=False,
        progress=True, generator=None):
    """Train `model` and return its History.

    train_data / val_data: a Dataset, a DataLoader, or a tuple (X, y) of arrays or Tensors.
    loss: a callable (output, target) -> scalar Tensor, or a name ("cross_entropy", "mse", "l1",
    "huber", "bce_with_logits"); by default cross-entropy for integer targets, else MSE.
    optimizer: by default Adam(lr=1e-3); each step is `optimizer.backward_and_step(loss)` (the
    weights of plain SGD updated by BLAS inside backward: they have no `.grad` afterwards), or
    backward, every callback's `on_after_backward`, then `step()` when a callback defines that
    hook (it may read `.grad`).
    scheduler: stepped once per epoch (ReduceLROnPlateau with the validation loss, or the
    training loss without validation data).
    checkpoint_dir: an atomic checkpoint after every epoch; `resume=True` continues from it.
    generator: the cr.Generator that shuffles batches (a fresh one seeded from the default
    generator when None), saved in checkpoints so a resumed run sees the same batches.
    """
    if generator is None and isinstance(train_data, DataLoader):
        generator = train_data.generator  # the one that shuffles, so checkpoints carry its state
    generator = generator or Generator(int(rng().integers(2 ** 62)))
    train_loader = as_loader(train_data, batch_size, shuffle=True, generator=generator)
    val_loader = None if val_data is None else as_loader(val_data, batch_size, shuffle=False)
    loss_fn = loss_function(loss, train_loader.dataset)
    if optimizer is None:
        from chainrule.optim import Adam
        optimizer = Adam(model.parameters(), lr=1e-3)
    metrics = tuple(metrics or ())
    history = History()
    run = Run(model, optimizer, scheduler, history, progress)
    start = 0
    if resume:
        start = _restore(checkpoint_dir, model, optimizer, scheduler, generator, history, callbacks)
        run.log(f"resumed from {os.path.join(checkpoint_dir, CHECKPOINT)} after epoch {start}")
    reads_grads = any(getattr(cb.on_after_backward, "__func__", None)
                      is not Callback.on_after_backward for cb in callbacks)
    for cb in callbacks:
        cb.on_train_begin(run)
    try:
        for epoch in range(start + 1, epochs + 1):
            run.epoch = epoch
            model.train()
            rows = len(train_loader.dataset)
            began, seen, loss_sum = time.perf_counter(), 0, 0.0
            outputs, targets = _Rows(rows), _Rows(rows)
            bar = _progress_bar(progress, len(train_loader), f"epoch {epoch}/{epochs}")
            step = 0
            for x, y in train_loader:  # not enumerate: its reused result tuple keeps the batch
                step += 1
                run.step = step
                out = model(x)
                del x  # the graph keeps what backward needs of it and frees that before the step
                batch_loss = loss_fn(out, y)
                value = batch_loss.item()
                if not math.isfinite(value):
                    raise _stopped(f"the loss became {value} at epoch {epoch}, step {step}",
                                   checkpoint_dir, epoch)
                optimizer.zero_grad()
                if reads_grads:
                    batch_loss.backward()
                    for cb in callbacks:
                        cb.on_after_backward(run)
                    optimizer.step()
                else:  # large SGD weights updated inside backward, never holding their gradients
                    optimizer.backward_and_step(batch_loss)
                n = len(y.data)
                seen += n
                loss_sum += value * n
                outputs.add(out.data)
                targets.add(y.data)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                    samples_s=f"{seen / (time.perf_counter() - began):,.0f}")
            seconds = time.perf_counter() - began
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1)}
            row.update({f"train_{k}": v for k, v in
                        M.compute(metrics, outputs.all(), targets.all()).items()})
            if val_loader is not None:
                row.update({f"val_{k}": v for k, v in
                            evaluate(model, val_loader, loss_fn, metrics).items()})
            row.update(lr=optimizer.param_groups[0]["lr"], seconds=seconds,
                       samples_per_s=seen / seconds if seconds > 0 else float("inf"))
            broken = ("the weights became non-finite" if not _finite(model) else
                      f"the validation loss became {row['val_loss']}"
                      if not math.isfinite(row.get("val_loss", 0.0)) else None)
            if broken:  # the epoch's last step broke the model: never checkpoint it
                raise _stopped(f"{broken} at epoch {epoch}, step {step} (the last step of the "
                               "epoch)", checkpoint_dir, epoch)
            if scheduler is not None:
                _step_scheduler(scheduler, row)
            history.append(row)
            if bar is not None:
                bar.close()
            run.log(_epoch_line(row, epochs))
            for cb in callbacks:
                cb.on_epoch_end(run)
            if checkpoint_dir:
                _checkpoint(checkpoint_dir, epoch, model, optimizer, scheduler, generator, history,
                            callbacks)
            if run.stop:
                run.log(f"stopped early after epoch {epoch}")
                break
    except KeyboardInterrupt:
        history.interrupted = True
        run.log("interrupted" + (f"; the checkpoint of the last finished epoch is in "
                                 f"{checkpoint_dir} (continue with resume=True)"
                                 if checkpoint_dir and history.get("epoch") else ""))
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def evaluate(model, data, loss=None, metrics=("accuracy",), batch_size=256):
    """{"loss": ..., metric: ...} of `model` on `data` in eval mode under no_grad."""
    loader = as_loader(data, batch_size, shuffle=False)
    loss_fn = loss_function(loss, loader.dataset)
    total, seen = 0.0, 0
    outputs, targets = _Rows(len(loader.dataset)), _Rows(len(loader.dataset))
    with _inference(model):
        for x, y in loader:
            out = model(x)
            total += loss_fn(out, y).item() * len(y)
            seen += len(y)
            outputs.add(out.data)
            targets.add(y.data)
    result = {"loss": total / max(seen, 1)}
    result.update(M.compute(tuple(metrics or ()), outputs.all(), targets.all()))
    return result


def predict(model, X, batch_size=1024):
    """Model outputs for the rows of X, in eval mode under no_grad, as one ndarray."""
    X = X.data if isinstance(X, Tensor) else np.asarray(X)
    if X.dtype.kind != "f":  # keep float32/float64 inputs as they are (a float64 model stays exact)
        X = X.astype(get_default_dtype())
    with _inference(model):
        return np.concatenate([model(Tensor._make(X[i:i + batch_size])).data
                               for i in range(0, len(X), batch_size)]) if len(X) else np.zeros((0,))


def _stopped(what, checkpoint_dir, epoch):
    """The TrainingError for a NaN/Inf: what happened, and where the last good checkpoint is."""
    where = (f"; the last good checkpoint is in {checkpoint_dir}"
             if checkpoint_dir and epoch > 1 else "")
    return TrainingError(f"{what}; training stopped (try a smaller learning rate){where}")


@contextlib.contextmanager
def _inference(model):
    """Eval mode under no_grad, layers fused; the model's previous mode comes back, even after
    an error."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad(), fusing():
            yield
    finally:
        if was_training:
            model.train()


# ---- helpers ----------------------------------------------------------------------------------
class _Rows:
    """The rows of every batch of a stream (an epoch's model outputs, or its targets), copied
    into one array made for `expected` rows (that many or more: it doubles when full), so no
    batch array stays alive and nothing is concatenated at the end."""

    def __init__(self, expected=0):
        self.array, self.n, self.expected = None, 0, expected

    def add(self, batch):
        n = self.n
        end = n + len(batch)
        array = self.array
        if array is None or end > len(array) or batch.shape[1:] != array.shape[1:]:
            array = self._grown(batch, end)
        array[n:end] = batch
        self.n = end

    def _grown(self, batch, end):
        """Room for at least `end` rows, refusing a batch whose rows differ from the first's."""
        if self.array is not None and batch.shape[1:] != self.array.shape[1:]:
            raise shape_error("collecting batch rows", batch.shape, self.array.shape,
                              detail="every batch must have the first one's trailing shape")
        if self.array is None or end > len(self.array):
            grown = np.empty((max(2 * end, self.expected),) + batch.shape[1:], batch.dtype)
            if self.array is not None:
                grown[:self.n] = self.array[:self.n]
            self.array = grown
        return self.array

    def all(self):
        """The rows so far, as one array (a view)."""
        return self.array[:self.n] if self.array is not None else np.zeros((0,))


def as_loader(data, batch_size, shuffle, generator=None):
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise ArgumentError(f"fit: data must be a Dataset, a DataLoader or a tuple (X, y), "
                            f"got {type(data).__name__}")
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)


def loss_function(loss, dataset):
    """A loss callable from a callable, a name, or None (inferred from the dataset's targets)."""
    from chainrule.functional import cross_entropy  # the fused node, for (N, C) and indices (N,)
    from chainrule.nn import functional as F
    names = {"cross_entropy": cross_entropy, "mse": F.mse_loss, "l1": F.l1_loss,
             "huber": F.huber_loss, "bce_with_logits": F.binary_cross_entropy_with_logits}
    if callable(loss):
        return loss
    if loss is None:
        y = getattr(dataset, "arrays", [None, None])[-1]
        return names["cross_entropy" if y is None or y.dtype.kind in "iu" else "mse"]
    if loss not in names:
        raise ArgumentError(f"unknown loss {loss!r}; choose from {', '.join(names)}")
    return names[loss]


def _finite(model):
    return all(np.isfinite(p.data).all() for p in model.parameters())


def _step_scheduler(scheduler, row):
    from chainrule.optim.lr_scheduler import ReduceLROnPlateau
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(row.get("val_loss", row["train_loss"]))
    else:
        scheduler.step()


def _progress_bar(progress, total, desc):
    """A live tqdm bar when stderr is a terminal; None (one line per epoch) otherwise."""
    if not progress or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)


def _epoch_line(row, epochs):
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "lr", "seconds", "samples_per_s"):
            continue
        parts.append(f"{key} {value:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.2f}s {row['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


def _checkpoint(folder, epoch, model, optimizer, scheduler, generator, history, callbacks):
    os.makedirs(folder, exist_ok=True)
    save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
          "scheduler": scheduler.state_dict() if scheduler is not None else None,
          "rng": {"default": default_generator.get_state(), "loader": generator.get_state()},
          "history": dict(history), "callbacks": [cb.state_dict() for cb in callbacks]},
         os.path.join(folder, CHECKPOINT))


def _restore(folder, model, optimizer, scheduler, generator, history, callbacks):
    path = os.path.join(folder or "", CHECKPOINT)
    if not folder or not os.path.exists(path):
        raise TrainingError(f"resume: no checkpoint at {path}")
    state = load(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    default_generator.set_state(state["rng"]["default"])
    generator.set_state(state["rng"]["loader"])
    for key, values in state["history"].items():
        history[key] = list(values)
    for cb, cb_state in zip(callbacks, state["callbacks"]):
        cb.load_state_dict(cb_state)
    return int(state["epoch"])
