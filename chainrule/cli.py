"""The `chainrule` command line: train, evaluate, predict, info, datasets, plot, graph, experiment.

A run folder (`--out`) holds model.safetensors, config.json (everything needed to rebuild the
model and its preprocessing), metrics.json, history.csv, the plots, and checkpoint.safetensors.
Bad input is one line on stderr and exit status 2, never a traceback.
"""
import argparse
import csv
import io
import json
import os
import sys

import numpy as np

from chainrule.errors import ChainruleError, DataError, MissingDependency
from chainrule.serialization import atomic_write
from chainrule.train import CHECKPOINT

MODEL, CONFIG, METRICS, HISTORY = "model.safetensors", "config.json", "metrics.json", "history.csv"
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softplus", "identity")


class UsageError(ChainruleError, ValueError):
    """A bad command-line argument."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        raise UsageError(f"{self.prog}: {message} (see --help)")


# ---- data -------------------------------------------------------------------------------------
def load_data(source, target=None, task=None, seed=0, val_fraction=0.15, test_fraction=0.15):
    """A built-in dataset name or a CSV / NPZ / IDX file, as data.Splits."""
    from chainrule import data as D
    if source in D.DATASETS:
        splits = D.load_dataset(source, seed, val_fraction, test_fraction)
        if task and task != splits.task:
            splits = _retask(splits, task)
        return splits
    if not os.path.exists(source):
        raise DataError(f"--data {source}: neither a built-in dataset ({', '.join(D.DATASETS)}) "
                        "nor an existing file")
    lower = source.lower()
    if lower.endswith(".csv"):
        X, y, features, classes, task = D.load_csv(source, target, task)
    elif lower.endswith(".npz"):
        X, y, features, classes, task = D.load_npz(source, task)
    elif "idx" in lower or "ubyte" in lower:
        X, y, features, classes, task = D.load_idx(source)
    else:
        raise DataError(f"--data {source}: unknown file type; use .csv, .npz or an IDX file")
    return D.make_splits(os.path.basename(source), X, y, task, seed, val_fraction, test_fraction,
                         features, classes)


def _retask(splits, task):
    from chainrule import data as D
    X = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test]).reshape(len(X), -1)
    if task == "classification":
        y, classes = D.files.encode_classes(y)
    else:  # float targets: integer class labels would pick cross-entropy
        y, classes = y.astype(np.float32), None
    a, b = len(splits.X_train), len(splits.X_train) + len(splits.X_val)  # keep the same split
    return D.Splits(splits.name, task, X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:],
                    splits.feature_names, classes)


def _parse_hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()] if text.strip() else []
    except ValueError:
        raise UsageError(f"--hidden {text!r}: expected comma-separated layer sizes, e.g. 128,64") from None
    if any(s <= 0 for s in sizes):
        raise UsageError(f"--hidden {text!r}: layer sizes must be positive")
    return sizes


# ---- model ------------------------------------------------------------------------------------
def build_model(config):
    from chainrule import nn
    m = config["model"]
    return nn.MLP(m["sizes"], activation=m["activation"], dropout=m["dropout"], norm=m["norm"])


def build_optimizer(name, params, lr, weight_decay, momentum):
    from chainrule import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
           "adagrad": optim.Adagrad}[name]
    return cls(params, lr=lr, weight_decay=weight_decay)


class RunFolder:
    """A trained run folder: its config, model and preprocessing."""

    def __init__(self, folder):
        from chainrule import load
        from chainrule.data import Standardizer
        self.folder = folder
        config_path = os.path.join(folder, CONFIG)
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: no such run folder")
        if not os.path.isfile(config_path):
            raise DataError(f"{folder}: not a run folder (no {CONFIG}); train one with chainrule train")
        try:
            with open(config_path) as f:
                self.config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{config_path}: not valid JSON ({e})") from None
        try:
            self.model = build_model(self.config)
            self.standardizer = Standardizer.from_state_dict(self.config["standardizer"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{config_path}: a missing or malformed entry ({type(e).__name__}: "
                            f"{e}); train the run again") from None
        self.model.load_state_dict(load(os.path.join(folder, MODEL)))
        self.model.eval()

    @property
    def task(self):
        return self.config["task"]

    def scores(self, X):
        """Raw model outputs (logits, or regression values) for raw feature rows X."""
        from chainrule.train import predict
        return predict(self.model, self.standardizer.transform(X))

    def splits(self, source=None):
        d = self.config["data"]
        return load_data(source or d["source"], d.get("target"), self.task, d["seed"],
                         d["val_fraction"], d["test_fraction"])


# ---- commands ---------------------------------------------------------------------------------
def cmd_train(args):
    from chainrule import manual_seed, save
    from chainrule.data import Standardizer
    from chainrule.train import EarlyStopping, evaluate, fit, TrainingError
    hidden = _parse_hidden(args.hidden)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise UsageError("--epochs, --batch-size and --lr must be positive")
    if not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout {args.dropout}: must be in [0, 1)")
    if args.resume and not os.path.isfile(os.path.join(args.out, CHECKPOINT)):
        raise DataError(f"--resume: no checkpoint in {args.out} to continue from")
    manual_seed(args.seed)
    splits = load_data(args.data, args.target, args.task, args.seed, args.val_fraction,
                       args.test_fraction)
    standardizer = Standardizer().fit(splits.X_train)
    classification = splits.task == "classification"
    if classification and splits.num_classes < 2:
        raise DataError(f"--data {args.data}: classification needs at least 2 classes")
    outputs = splits.num_classes if classification else splits.y_train.shape[1]
    config = {
        "version": 1, "task": splits.task,
        "data": {"source": os.path.abspath(args.data) if os.path.exists(args.data) else args.data,
                 "name": splits.name, "target": args.target, "seed": args.seed,
                 "val_fraction": args.val_fraction, "test_fraction": args.test_fraction},
        "model": {"type": "MLP", "sizes": [splits.num_features, *hidden, outputs],
                  "activation": args.activation, "dropout": args.dropout, "norm": args.norm},
        "standardizer": standardizer.state_dict(),
        "feature_names": splits.feature_names, "class_names": splits.class_names,
        "training": {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "optimizer",
                                                    "weight_decay", "momentum", "seed", "patience")},
    }
    model = build_model(config)
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay,
                                args.momentum)
    loss, metrics = _task_defaults(splits.task)
    train = (standardizer.transform(splits.X_train), splits.y_train)
    val = (standardizer.transform(splits.X_val), splits.y_val) if len(splits.X_val) else None
    callbacks = [EarlyStopping("val_loss" if val else "train_loss", patience=args.patience)] \
        if args.patience else []
    health = None
    if args.health:
        from chainrule.diagnostics import TrainingHealth
        health = TrainingHealth(model)
        callbacks.append(health)
    os.makedirs(args.out, exist_ok=True)
    print(f"training an MLP {'-'.join(map(str, config['model']['sizes']))} ({args.activation}) on "
          f"{splits.name}: {len(splits.X_train)} train / {len(splits.X_val)} validation / "
          f"{len(splits.X_test)} test samples, {splits.task}", flush=True)
    try:  # fit reports a NaN/Inf itself, in one line; no NumPy overflow warnings on the way
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            history = fit(model, train, val, loss=loss,
                          optimizer=optimizer, epochs=args.epochs, batch_size=args.batch_size,
                          metrics=metrics, callbacks=callbacks, checkpoint_dir=args.out,
                          resume=args.resume, progress=not args.quiet)
    except TrainingError as e:
        print(f"chainrule: {e}; {MODEL} in {args.out} was not changed", file=sys.stderr)
        return 1
    if history.interrupted:
        print(f"chainrule: interrupted; continue with: chainrule train ... --out {args.out} --resume",
              file=sys.stderr)
        return 130
    results = {"epochs_run": len(history.get("epoch", [])), "history_last": {
        k: v[-1] for k, v in history.items()}}
    test = (standardizer.transform(splits.X_test), splits.y_test)
    if len(splits.X_test):
        results["test"] = evaluate(model, test, metrics=metrics)
    save(model.state_dict(), os.path.join(args.out, MODEL))
    atomic_write(os.path.join(args.out, CONFIG), json.dumps(config, indent=1))
    atomic_write(os.path.join(args.out, METRICS), json.dumps(results, indent=1))
    atomic_write(os.path.join(args.out, HISTORY), _history_csv(history))
    written = [MODEL, CONFIG, METRICS, HISTORY]
    if not args.no_plots:
        try:
            written += [os.path.basename(p) for p in _plots(RunFolder(args.out), splits)]
        except MissingDependency as e:
            print(f"chainrule: plots skipped: {e}", file=sys.stderr)
    if health is not None:
        verdict = health.verdict()
        print("training health: " + (verdict if "\n" not in verdict
                                     else "\n  " + verdict.replace("\n", "\n  ")))
        try:
            from chainrule import viz
            written.append(os.path.basename(viz.plot_health(health, os.path.join(args.out,
                                                                                 "health.png"))))
        except MissingDependency as e:
            print(f"chainrule: health.png skipped: {e}", file=sys.stderr)
    if "test" in results:
        print("test " + "  ".join(f"{k} {v:.4f}" for k, v in results["test"].items()))
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _plots(run, splits):
    from chainrule import metrics as M
    from chainrule import viz
    history = _read_history(os.path.join(run.folder, HISTORY))
    paths = viz.plot_history(history, run.folder)
    X = np.concatenate([splits.X_train, splits.X_val, splits.X_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    if run.task == "classification":
        if X.shape[1] == 2:
            paths.append(viz.plot_decision_boundary(run.scores, X, y,
                                                    os.path.join(run.folder, "decision_boundary.png"),
                                                    run.config["class_names"]))
        if len(splits.X_test):
            counts = M.confusion_matrix(run.scores(splits.X_test), splits.y_test,
                                        len(run.config["class_names"]))
            paths.append(viz.plot_confusion_matrix(counts, os.path.join(run.folder, "confusion_matrix.png"),
                                                   run.config["class_names"]))
    return paths


def _task_defaults(task):
    """(loss name, metrics) the command line trains and evaluates a task with."""
    if task == "classification":
        return "cross_entropy", ("accuracy", "f1")
    return "mse", ("mse", "mae", "r2")


def cmd_evaluate(args):
    from chainrule.train import evaluate
    run = RunFolder(args.run)
    splits = run.splits(args.data)
    _, metrics = _task_defaults(run.task)
    X, y = (splits.X_test, splits.y_test) if len(splits.X_test) else (splits.X_train, splits.y_train)
    _check_features(run, X.shape[1], args.data or run.config["data"]["source"])
    result = evaluate(run.model, (run.standardizer.transform(X), y), metrics=metrics)
    print(f"{splits.name} test split ({len(X)} samples): "
          + "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return 0


def cmd_predict(args):
    from chainrule.data import load_csv
    from chainrule.ops.reduce import softmax
    from chainrule.tensor import Tensor
    run = RunFolder(args.run)
    target = run.config["data"].get("target")
    if target and target in _csv_header(args.input):  # the target column is still in the file:
        X = load_csv(args.input, target, run.task)[0]  # skip it (it may hold class names)
    else:
        X = load_csv(args.input, features_only=True)[0]
    _check_features(run, X.shape[1], args.input)
    scores = run.scores(X)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if run.task == "classification":
        classes = run.config["class_names"]
        probs = softmax(Tensor(scores), 1).data
        writer.writerow(["class"] + [f"prob_{c}" for c in classes])
        for p in probs:
            writer.writerow([classes[int(p.argmax())]] + [f"{v:.6f}" for v in p])
    else:
        writer.writerow(["prediction"] if scores.shape[1] == 1 else
                        [f"prediction_{i}" for i in range(scores.shape[1])])
        writer.writerows([[f"{v:.6g}" for v in row] for row in scores])
    if args.output:
        atomic_write(args.output, out.getvalue())
        print(f"wrote {len(X)} predictions to {args.output}")
    else:
        sys.stdout.write(out.getvalue())
    return 0


def _csv_header(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # load_csv reports the problem


def _check_features(run, count, source):
    expected = run.config["model"]["sizes"][0]
    if count != expected:
        raise DataError(f"{source} has {count} feature columns, the model was trained on {expected} "
                        f"({', '.join(run.config['feature_names'][:8])}"
                        f"{', ...' if expected > 8 else ''})")


def cmd_info(args):
    run = RunFolder(args.run)
    c = run.config
    print(f"run {args.run}: {c['task']} on {c['data']['name']}, "
          f"{len(c['feature_names'])} features"
          + (f", classes {', '.join(c['class_names'])}" if c["class_names"] else ""))
    print(f"training: " + ", ".join(f"{k}={v}" for k, v in c["training"].items()))
    print(run.model.summary((c["model"]["sizes"][0],)))
    return 0


def cmd_datasets(args):
    from chainrule import data as D
    rows = []
    for name, info in D.DATASETS.items():
        try:
            X, y, _, classes = info.load()
            size = f"{len(X)} x {np.asarray(X).reshape(len(X), -1).shape[1]}"
        except DataError as e:
            size = str(e)
        rows.append((name, info.task, size, info.description))
    width = max(len(r[0]) for r in rows)
    for name, task, size, description in rows:
        print(f"{name:<{width}}  {task:<14}  {size:<10}  {description}")
    return 0


def cmd_plot(args):
    run = RunFolder(args.run)
    for path in _plots(run, run.splits()):
        print(path)
    return 0


def cmd_graph(args):
    """One forward pass and loss on the first rows of the run's training data, drawn."""
    from chainrule import viz
    from chainrule.tensor import Tensor
    from chainrule.train import loss_function
    if args.rows < 1:
        raise UsageError(f"--rows {args.rows}: must be positive")
    run = RunFolder(args.run)
    splits = run.splits()
    X = run.standardizer.transform(splits.X_train[:args.rows])
    loss_fn = loss_function(_task_defaults(run.task)[0], None)
    with viz.record() as tape:
        loss = loss_fn(run.model(Tensor(X)), Tensor(splits.y_train[:args.rows]))
    path = args.output or os.path.join(run.folder, "graph.dot")
    text = viz.graph(loss, dict(run.model.named_parameters()), path=path, values=tape)
    print(f"wrote {path}: the graph of one forward pass and loss ({loss.item():.4g}) on "
          f"{len(X)} training rows, {text.count('[label=')} nodes")
    return 0


def cmd_experiment(args):
    """depth-vs-width: chainrule.experiments.depth_vs_width, its table, JSON and plots."""
    from chainrule.experiments import depth_vs_width, report
    result = depth_vs_width(quick=args.quick, out=args.out)
    print(report(result))
    written = ["depth_vs_width.json"]
    try:
        from chainrule.viz.experiments import plot_depth_vs_width, plot_fits
        plot_depth_vs_width(result, os.path.join(args.out, "depth_vs_width.png"))
        plot_fits(result, os.path.join(args.out, "depth_vs_width_fits.png"))
        written += ["depth_vs_width.png", "depth_vs_width_fits.png"]
    except MissingDependency as e:
        print(f"chainrule: plots skipped: {e}", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


# ---- files ------------------------------------------------------------------------------------
def _history_csv(history):
    keys = list(history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    for i in range(len(history.get("epoch", []))):
        writer.writerow([history[k][i] for k in keys])
    return out.getvalue()


def _read_history(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no training history")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


# ---- entry point ------------------------------------------------------------------------------
def parser():
    p = _Parser(prog="chainrule", description="Train, inspect and use multi-layer perceptrons.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train an MLP on a built-in dataset or a CSV/NPZ/IDX file")
    t.add_argument("--data", default="digits", help="built-in name (see `chainrule datasets`) or a file")
    t.add_argument("--target", help="the target column of a CSV file (default: the last)")
    t.add_argument("--task", choices=("classification", "regression"), help="force the task type")
    t.add_argument("--hidden", default="128,64", help="hidden layer sizes, comma-separated")
    t.add_argument("--activation", default="relu", choices=ACTIVATIONS)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--norm", choices=("batch", "layer"), default=None)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    t.add_argument("--patience", type=int, default=0, help="early stopping patience (0: off)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-fraction", type=float, default=0.15)
    t.add_argument("--test-fraction", type=float, default=0.15)
    t.add_argument("--out", default="runs/latest", help="the run folder")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--no-plots", action="store_true")
    t.add_argument("--health", action="store_true", help="record per-layer training health "
                   "(gradient norms, dead and saturated units, update ratios), print a verdict "
                   "and write health.png")
    t.add_argument("--quiet", action="store_true", help="no per-epoch output")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("evaluate", help="metrics of a trained run on its test split or other data")
    e.add_argument("run")
    e.add_argument("--data", help="a built-in name or file with the same features")
    e.set_defaults(fn=cmd_evaluate)
    pr = sub.add_parser("predict", help="predict for the rows of a CSV file")
    pr.add_argument("run")
    pr.add_argument("input", help="a CSV file with a header and the training features")
    pr.add_argument("-o", "--output", help="write predictions here (default: stdout)")
    pr.set_defaults(fn=cmd_predict)
    i = sub.add_parser("info", help="the model summary of a run")
    i.add_argument("run")
    i.set_defaults(fn=cmd_info)
    d = sub.add_parser("datasets", help="list the built-in datasets")
    d.set_defaults(fn=cmd_datasets)
    pl = sub.add_parser("plot", help="redraw a run's plots")
    pl.add_argument("run")
    pl.set_defaults(fn=cmd_plot)
    gr = sub.add_parser("graph", help="draw the computation graph of one forward pass and loss")
    gr.add_argument("run")
    gr.add_argument("-o", "--output", help="a .dot file (default: RUN/graph.dot), or .svg/.png "
                    "rendered by Graphviz's dot")
    gr.add_argument("--rows", type=int, default=4, help="training rows in the batch (default 4)")
    gr.set_defaults(fn=cmd_graph)
    ex = sub.add_parser("experiment", help="run a measured experiment: depth-vs-width")
    ex.add_argument("name", choices=("depth-vs-width",))
    ex.add_argument("--out", default="runs/depth-vs-width", help="folder for the table and plots")
    ex.add_argument("--quick", action="store_true", help="small sizes, few steps (seconds)")
    ex.set_defaults(fn=cmd_experiment)
    return p


def main(argv=None):
    try:
        args = parser().parse_args(argv)
        return args.fn(args)
    except (ChainruleError, OSError) as e:
        message = str(e) if isinstance(e, ChainruleError) else f"{e.strerror}: {e.filename}"
        print(f"chainrule: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
