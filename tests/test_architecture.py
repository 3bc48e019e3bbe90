"""The layers of STYLE.md: each module imports only from its own layer or the layers below it
(engine < math < models < training < interfaces), so the engine never depends on a model, a
loader or a picture. tensor.py's method delegations to ops/functional are the one exception:
Tensor methods are how users reach the math."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "chainrule"

LAYERS = {  # module (dotted, relative to chainrule) -> layer rank
    "errors": 0, "dtypes": 0, "random": 0, "tensor": 0, "autograd": 0, "creation": 0,
    "replay": 0, "memory": 0,
    "ops": 1, "functional": 1, "testing": 1, "jacobian": 1,
    "nn": 2,
    "optim": 3, "data": 3, "serialization": 3, "train": 3, "metrics": 3, "diagnostics": 3,
    "experiments": 3,
    "viz": 4, "cli": 4, "__main__": 4, "__init__": 4,
}
ALLOWED = {("tensor", "ops"), ("tensor", "functional")}


def layer_of(parts):
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key, LAYERS[key]
    return None, None


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chainrule"):
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            yield node.lineno, [m for m in mods if m.count(".") >= 1] or mods
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("chainrule."):
                    yield node.lineno, [a.name]


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield path, parts


@pytest.mark.parametrize("path,parts", list(modules()), ids=lambda v: getattr(v, "name", None))
def test_imports_point_down_the_layers(path, parts):
    name, rank = layer_of(parts)
    assert rank is not None, f"{path}: add this module to LAYERS in tests/test_architecture.py"
    for line, targets in imports(path):
        for target in targets:
            t_parts = target.split(".")[1:]
            t_name, t_rank = layer_of(t_parts)
            if t_rank is None or (name, t_name) in ALLOWED:
                continue
            assert t_rank <= rank, (f"{path.relative_to(ROOT)}:{line} imports {target} "
                                    f"(layer {t_rank}) from layer {rank}")


def test_the_engine_needs_only_numpy():
    for path, parts in modules():
        _, rank = layer_of(parts)
        if rank != 0:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for n in names:
                top = (n or "").split(".")[0]
                assert top in {"numpy", "chainrule"} or top in __import__("sys").stdlib_module_names, \
                    f"{path.name} imports {n}"
