"""cr.viz.graph (DOT of the recorded graph, values and gradients checked against hand-written
NumPy backprop), rendering through Graphviz, `chainrule graph`, and cr.explain (the chain rule
composed step by step equals autograd, with paths, ops and shapes in its text)."""
import io
import re
import shutil

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn
from chainrule.errors import ArgumentError, GradientMismatch, GraphError, MissingDependency
from chainrule.nn import functional as F
from chainrule.viz.graph import build

HAS_DOT = shutil.which("dot") is not None
NODE = re.compile(r'^  (\w+) \[label="(.*?)", fillcolor', re.M)
EDGE = re.compile(r'^  (\w+) -> (\w+) \[color="(blue|red)"(.*)\];$', re.M)


# ---- a 2-5-3 MLP on 4 rows, in float64, and its backprop by hand ----------------------------
@pytest.fixture
def case():
    prev = cr.get_default_dtype()
    cr.set_default_dtype(cr.float64)
    try:
        cr.manual_seed(3)
        model = nn.MLP([2, 5, 3])
        X = cr.randn(4, 2)
    finally:
        cr.set_default_dtype(prev)
    y = np.array([0, 2, 1, 2])
    return model, X, y


def by_hand(model, X, y):
    """Forward and backward propagation in plain NumPy: every value and gradient."""
    W0, b0 = model.layers[0].weight.data, model.layers[0].bias.data
    W2, b2 = model.layers[2].weight.data, model.layers[2].bias.data
    x = X.data
    z1 = x @ W0.T + b0
    h = np.maximum(z1, 0)
    z2 = h @ W2.T + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(4), y]).mean()
    dz2 = (p - np.eye(3)[y]) / 4
    dh = dz2 @ W2
    dz1 = dh * (z1 > 0)
    return dict(z1=z1, h=h, z2=z2, loss=loss, dz2=dz2, dh=dh, dz1=dz1, dW0=dz1.T @ x,
                db0=dz1.sum(0), dW2=dz2.T @ h, db2=dz2.sum(0))


def labels(dot):
    """node key -> the lines of its label."""
    return {k: text.split("\\n") for k, text in NODE.findall(dot)}


def numbers(line):
    """'value mean 1  min 2  max 3' -> [1, 2, 3]; 'grad 0.5' -> [0.5]."""
    return [float(v) for v in re.findall(r"-?\d[\d.e+-]*|nan|inf", line.split(" ", 1)[1])]


def stats(a):
    a = np.asarray(a)
    return [a.item()] if a.size == 1 else [a.mean(), a.min(), a.max()]


def assert_summary(line, array):
    got, want = numbers(line), stats(array)
    assert len(got) == len(want), line
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-3, abs=1e-9), line


def find(lab, first_line):
    keys = [k for k, lines in lab.items() if lines[0].startswith(first_line)]
    assert keys, f"no node {first_line!r} in {list(lab.values())}"
    return keys


# ---- graph ---------------------------------------------------------------------------------
def test_dot_has_op_and_leaf_nodes_and_colored_edges(case):
    model, X, y = case
    with cr.viz.record() as tape:
        loss = F.cross_entropy(model(X), y)
    dot = cr.viz.graph(loss, dict(model.named_parameters()), values=tape)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    lab = labels(dot)
    names = sorted(lines[0] for lines in lab.values())
    assert names == sorted(["Linear", "ReLU", "Linear", "SoftmaxCrossEntropy  (the loss L)",
                            "layers.0.weight", "layers.0.bias", "layers.2.weight",
                            "layers.2.bias", "input", "input"])
    edges = EDGE.findall(dot)
    blue = [(a, b) for a, b, color, _ in edges if color == "blue"]
    red = [(a, b, rest) for a, b, color, rest in edges if color == "red"]
    # forward: X, W0, b0 -> Linear; Linear -> ReLU; ReLU, W2, b2 -> Linear; Linear, y -> CE
    assert len(blue) == 9
    # backward: one per input that needs a gradient (not X, not y), pointing the other way
    assert len(red) == 7
    assert {(b, a) for a, b, _ in red} <= set(blue)
    key = {lines[0]: k for k, lines in lab.items()}
    red_shapes = {(a, b): re.search(r'label="grad (\(.*?\))"', rest).group(1) for a, b, rest in red}
    linear0 = next(b for a, b in blue if a == key["layers.0.weight"])
    assert red_shapes[(linear0, key["layers.0.weight"])] == "(5, 2)"
    assert red_shapes[(linear0, key["layers.0.bias"])] == "(5,)"
    assert red_shapes[(key["ReLU"], linear0)] == "(4, 5)"
    inputs = [k for k, lines in lab.items() if lines[0] == "input"]
    assert not any(b in inputs for _, b, _ in red)  # no gradient flows to the data
    assert {lab[k][1] for k in inputs} == {"(4, 2) float64", "(4,) int64"}


def test_values_and_gradients_equal_backprop_by_hand(case):
    model, X, y = case
    want = by_hand(model, X, y)
    with cr.viz.record() as tape:
        loss = F.cross_entropy(model(X), y)
    dot = cr.viz.graph(loss, model, values=tape)
    lab = labels(dot)
    lin0, lin2 = (lab[k] for k in find(lab, "Linear"))
    relu, = (lab[k] for k in find(lab, "ReLU"))
    ce, = (lab[k] for k in find(lab, "SoftmaxCrossEntropy"))
    for node, value, grad in [(lin0, "z1", "dz1"), (relu, "h", "dh"), (lin2, "z2", "dz2")]:
        assert_summary(node[2], want[value])
        assert_summary(node[3], want[grad])
    assert_summary(ce[2], want["loss"])
    assert ce[3] == "grad 1"
    for name, grad in [("layers.0.weight", "dW0"), ("layers.0.bias", "db0"),
                       ("layers.2.weight", "dW2"), ("layers.2.bias", "db2")]:
        node = lab[find(lab, name)[0]]
        assert_summary(node[2], dict(model.named_parameters())[name].data)
        assert_summary(node[3], want[grad])
    # the structure behind the text holds the exact arrays
    g = build(loss, model, tape)
    ops = [n for n in g.nodes if n.kind == "op"]
    assert [n.name for n in ops] == ["Linear", "ReLU", "Linear", "SoftmaxCrossEntropy"]
    for n, value, grad in zip(ops, ["z1", "h", "z2", "loss"], ["dz1", "dh", "dz2", None]):
        np.testing.assert_allclose(n.value, want[value], rtol=1e-12)
        if grad:
            np.testing.assert_allclose(n.grad, want[grad], rtol=1e-10, atol=1e-15)


def test_without_a_tape_it_shows_what_the_graph_kept(case):
    model, X, y = case
    want = by_hand(model, X, y)
    loss = F.cross_entropy(model(X), y)
    lab = labels(cr.viz.graph(loss, model))
    lin0, lin2 = (lab[k] for k in find(lab, "Linear"))
    assert lin0[2] == "value not kept"   # ReLU saved its output, not its input
    assert_summary(lin0[3], want["dz1"])  # gradients are always there
    assert_summary(lab[find(lab, "ReLU")[0]][2], want["h"])      # saved by ReLU
    assert_summary(lin2[2], want["z2"])                          # saved by the loss
    assert all(lines[0] != "input" for lines in lab.values())  # constants need a tape
    names = {lines[0] for lines in lab.values()}
    assert "leaf" not in names
    # without params the leaves are called "leaf"
    anonymous = labels(cr.viz.graph(loss))
    assert sum(lines[0] == "leaf" for lines in anonymous.values()) == 4


def test_graph_leaves_grad_alone_and_keeps_the_graph(case):
    model, X, y = case
    want = by_hand(model, X, y)
    h = model.layers[1](model.layers[0](X))
    h.retain_grad()
    loss = F.cross_entropy(model.layers[2](h), y)
    cr.viz.graph(loss, model)
    cr.viz.graph(loss, model)
    assert all(p.grad is None for p in model.parameters()) and h.grad is None
    loss.backward()  # the graph is still there, and .grad gets exactly one gradient
    np.testing.assert_allclose(h.grad.data, want["dh"], rtol=1e-10)
    np.testing.assert_allclose(model.layers[0].weight.grad.data, want["dW0"], rtol=1e-10)
    with pytest.raises(GraphError, match="freed"):
        cr.viz.graph(loss)
    with pytest.raises(GraphError, match="no recorded graph"):
        cr.viz.graph(cr.tensor(1.0))


def test_a_tensor_used_twice_gets_two_red_edges():
    x = cr.tensor([1.0, -2.0, 3.0], requires_grad=True)
    loss = (x * x).sum()
    dot = cr.viz.graph(loss, {"x": x})
    lab = labels(dot)
    xkey = find(lab, "x")[0]
    red = [(a, b) for a, b, color, _ in EDGE.findall(dot) if color == "red" and b == xkey]
    assert len(red) == 2
    assert_summary(lab[xkey][3], 2 * x.data)  # the two contributions add up
    # a non-scalar output is seeded with ones
    lab = labels(cr.viz.graph(x * 3.0, {"x": x}))
    assert_summary(lab[find(lab, "x")[0]][3], [3.0, 3.0, 3.0])


def test_dot_file_and_bad_format(case, tmp_path):
    model, X, y = case
    loss = F.cross_entropy(model(X), y)
    text = cr.viz.graph(loss, model, path=tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == text
    assert cr.viz.graph(loss, model, path=tmp_path / "g.txt", format="dot") == text
    assert (tmp_path / "g.txt").read_text() == text
    with pytest.raises(ArgumentError, match="unknown format 'jpeg'"):
        cr.viz.graph(loss, model, path=tmp_path / "g.jpeg")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_svg_and_png_rendering(case, tmp_path):
    model, X, y = case
    loss = F.cross_entropy(model(X), y)
    cr.viz.graph(loss, model, path=tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "layers.0.weight" in svg and "SoftmaxCrossEntropy" in svg
    assert 'stroke="blue"' in svg and 'stroke="red"' in svg
    cr.viz.graph(loss, model, path=tmp_path / "graph", format="png")
    assert (tmp_path / "graph").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_graphviz_is_one_clear_line(case, tmp_path, monkeypatch):
    model, X, y = case
    loss = F.cross_entropy(model(X), y)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    with pytest.raises(MissingDependency) as err:
        cr.viz.graph(loss, model, path=tmp_path / "g.svg")
    message = str(err.value)
    assert "\n" not in message and "Graphviz" in message and "apt-get install graphviz" in message
    assert not (tmp_path / "g.svg").exists()
    assert isinstance(err.value, ImportError)
    cr.viz.graph(loss, model, path=tmp_path / "g.dot")  # DOT needs nothing
    assert (tmp_path / "g.dot").exists()


def test_cli_graph_writes_dot(tmp_path, monkeypatch, capsys):
    pytest.importorskip("safetensors")
    from chainrule import cli
    run = tmp_path / "run"
    assert cli.main(["train", "--data", "moons", "--hidden", "6", "--epochs", "1", "--quiet",
                     "--no-plots", "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["graph", str(run)]) == 0
    assert "graph.dot" in capsys.readouterr().out
    dot = (run / "graph.dot").read_text()
    lab = labels(dot)
    assert {lines[0] for lines in lab.values()} >= {
        "Linear", "ReLU", "SoftmaxCrossEntropy  (the loss L)", "layers.0.weight", "layers.2.bias",
        "input"}
    assert {lab[k][1] for k in find(lab, "input")} == {"(4, 2) float32", "(4,) int64"}
    colors = [c for *_, c, _ in EDGE.findall(dot)]
    assert colors.count("blue") == 9 and colors.count("red") == 7
    assert cli.main(["graph", str(run), "-o", str(tmp_path / "g.dot"), "--rows", "2"]) == 0
    assert "(2, 2) float32" in (tmp_path / "g.dot").read_text()
    monkeypatch.setenv("PATH", str(tmp_path))
    capsys.readouterr()
    assert cli.main(["graph", str(run), "-o", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Graphviz" in err[0] and err[0].startswith("chainrule: error:")


# ---- explain ------------------------------------------------------------------------------------
def run_explain(loss, wrt, params=None):
    out = io.StringIO()
    g = cr.explain(loss, wrt, params, file=out)
    return g, out.getvalue()


def test_explain_mlp_every_parameter(case):
    model, X, y = case
    want = by_hand(model, X, y)
    loss = F.cross_entropy(model(X), y)
    params = dict(model.named_parameters())
    for name, key in [("layers.0.weight", "dW0"), ("layers.0.bias", "db0"),
                      ("layers.2.weight", "dW2"), ("layers.2.bias", "db2")]:
        g, text = run_explain(loss, params[name], model)
        autograd, = cr.grad(loss, params[name], retain_graph=True)
        np.testing.assert_allclose(g.data, autograd.data, rtol=1e-12)
        np.testing.assert_allclose(g.data, want[key], rtol=1e-10, atol=1e-15)
        assert "there is 1 path" in text and "They agree" in text
        assert f"dL/d({name})" in text
    assert all(p.grad is None for p in model.parameters())
    g, text = run_explain(loss, params["layers.0.weight"], model)
    for fragment in ["z1 = Linear(x, layers.0.weight, layers.0.bias)  -> (4, 5)",
                     "h1 = ReLU(z1)  -> (4, 5)", "z2 = Linear(h1, layers.2.weight, layers.2.bias)",
                     "L = SoftmaxCrossEntropy(z2)  -> ()",
                     "Path 1: L <- z2 <- h1 <- z1 <- layers.0.weight",
                     "d CE(z2, y)/dz2 = (softmax(z2) - onehot(y)) / 4",
                     "d relu(z1)/dz1 = 1[z1 > 0]", "dL/dz1 = dL/dh1 * 1[z1 > 0]",
                     "dL/dh1 = dL/dz2 @ layers.2.weight", "dL/d(layers.0.weight) = (dL/dz1)^T @ x",
                     "forward propagation", "Backpropagation", "chain rule"]:
        assert fragment.lower() in text.lower(), fragment
    # the numbers printed at each step are the gradients computed by hand
    for name, key in [("z2", "dz2"), ("h1", "dh"), ("z1", "dz1"), ("layers.0.weight", "dW0")]:
        line = re.search(rf"arrives at {re.escape(name)} +\((.*?)\)  (.*)", text)
        assert line, name
        assert_summary("x " + line.group(2), want[key])
        assert line.group(1) == ", ".join(map(str, want[key].shape))


def test_explain_diamond_two_paths():
    x = cr.tensor([0.5, -1.0, 2.0], dtype=cr.float64, requires_grad=True)
    loss = (x.exp() * x.sin()).sum()
    g, text = run_explain(loss, x, {"x": x})
    expected = np.exp(x.data) * (np.sin(x.data) + np.cos(x.data))
    np.testing.assert_allclose(g.data, expected, rtol=1e-12)
    np.testing.assert_allclose(g.data, cr.grad(loss, x, retain_graph=True)[0].data, rtol=1e-12)
    assert "there are 2 paths" in text
    assert "Path 1 of 2: L <- v3 <- v1 <- x" in text and "Path 2 of 2: L <- v3 <- v2 <- x" in text
    assert "d exp(x)/dx = exp(x) = v1" in text and "d sin(x)/dx = cos(x)" in text
    assert "Sum over the 2 paths (path 1 + path 2)" in text
    # each path's contribution is printed: exp(x) sin(x) and exp(x) cos(x)
    arrivals = re.findall(r"arrives at x +\(3,\)  \[(.*?)\]", text)
    assert len(arrivals) == 2
    np.testing.assert_allclose([float(v) for v in arrivals[0].split(",")],
                               np.exp(x.data) * np.sin(x.data), rtol=1e-3)
    np.testing.assert_allclose([float(v) for v in arrivals[1].split(",")],
                               np.exp(x.data) * np.cos(x.data), rtol=1e-3)


def test_explain_same_tensor_twice_and_broadcasting():
    x = cr.tensor([1.0, -2.0, 3.0], dtype=cr.float64, requires_grad=True)
    b = cr.tensor([[1.0], [2.0]], dtype=cr.float64, requires_grad=True)
    loss = ((x * x + b) * cr.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=cr.float64)).sum()
    g, text = run_explain(loss, x, {"x": x, "b": b})
    np.testing.assert_allclose(g.data, 2 * x.data * np.array([5.0, 7.0, 9.0]))
    assert "there are 2 paths" in text
    assert "(its argument 1)" in text and "(its argument 2)" in text
    assert "summed over broadcast dims (2, 3) -> (3,)" in text
    g, text = run_explain(loss, b, {"x": x, "b": b})
    np.testing.assert_allclose(g.data, [[6.0], [15.0]])
    assert "summed over broadcast dims (2, 3) -> (2, 1)" in text


def test_explain_many_paths_and_intermediate_tensor():
    x = cr.tensor([0.3, -0.7], dtype=cr.float64, requires_grad=True)
    y = x
    for _ in range(5):  # 2**5 = 32 paths
        y = y.tanh() + y * 0.5
    loss = (y * y).sum()
    g, text = run_explain(loss, x)
    np.testing.assert_allclose(g.data, cr.grad(loss, x, retain_graph=True)[0].data, rtol=1e-12)
    assert "there are 64 paths" in text and "The first 8 are shown" in text
    assert text.count("Path ") == 8 and "merged sweep" in text
    # an intermediate tensor: the gradient arriving at its node
    h = x.sin()
    loss = (h * h).sum() * 3.0
    g, text = run_explain(loss, h)
    np.testing.assert_allclose(g.data, 6 * np.sin(x.data), rtol=1e-12)


def test_explain_errors():
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    unused = cr.tensor([1.0], requires_grad=True)
    loss = (x * 2.0).sum()
    with pytest.raises(GraphError, match="not used"):
        cr.explain(loss, unused, file=io.StringIO())
    with pytest.raises(GraphError, match="scalar"):
        cr.explain(x * 2.0, x, file=io.StringIO())
    with pytest.raises(GraphError, match="does not require grad"):
        cr.explain(loss, cr.tensor([1.0]), file=io.StringIO())
    # a hook that changes what autograd returns: the composed chain rule no longer agrees
    x.register_hook(lambda g: g * 2)
    with pytest.raises(GradientMismatch) as err:
        cr.explain(loss, x, file=io.StringIO())
    assert isinstance(err.value, AssertionError) and "disagree" in str(err.value)


def test_explain_the_fused_perceptron_names_its_arguments_and_layers():
    model = cr.nn.MLP([4, 3, 2])
    x = cr.tensor(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4))
    with cr.nn.fusing():
        loss = F.cross_entropy(model(x), np.array([0, 1]))
    params = dict(model.named_parameters())
    _, text = run_explain(loss, params["layers.2.bias"], model)
    assert ("Perceptron(x, relu_last, layers.0.weight, layers.0.bias, layers.2.weight, "
            "layers.2.bias)") in text and "arg1" not in text
    assert "layer 2 of the fused perceptron: d(h(1) W(2)^T + b(2))/db(2) = 1" in text
    _, text = run_explain(loss, params["layers.0.weight"], model)
    assert "dL/d(layers.0.weight) = (dL/dz(1))^T @ h(0)" in text and "They agree" in text
