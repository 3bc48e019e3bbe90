"""cr.save / cr.load: round trips, PyTorch interchange, corruption detection, crash-safe writes."""
import collections
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

import chainrule as cr

st_numpy = pytest.importorskip("safetensors.numpy")


def assert_same(a, b, where="obj"):
    """Exact equality of structure, types, dtypes, shapes and values (NaN == NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, cr.Tensor):
        assert a.requires_grad == b.requires_grad, where
        a, b = a.data, b.data
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert type(k) is type(list(b)[list(a).index(k)]), f"{where}: key {k!r}"
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def state_dict(seed=0, dtype=cr.float32):
    g = cr.Generator(seed)
    return {"0.weight": cr.randn(8, 4, generator=g, dtype=dtype),
            "0.bias": cr.randn(8, generator=g, dtype=dtype),
            "2.weight": cr.randn(3, 8, generator=g, dtype=dtype),
            "2.bias": cr.randn(3, generator=g, dtype=dtype)}


def checkpoint():
    """A model + optimizer checkpoint: int keys, per-parameter arrays, scalars, tuples."""
    rng = np.random.default_rng(1)
    return {
        "model": state_dict(),
        "optimizer": {
            "state": {0: {"step": 7, "exp_avg": rng.standard_normal((8, 4)),
                          "exp_avg_sq": cr.tensor(rng.random((8, 4))), "lr_scale": np.float32(0.5)},
                      3: {"step": 7, "momentum_buffer": None}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                              "params": [0, 1, 2, 3], "name": "all / ~weights~"}]},
        "epoch": 3,
        "history": [0.5, float("inf"), float("nan"), -0.0, 10**30],
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "odd keys": {1.5: "float", True: "bool", None: "none", ("x", 2): "tuple", "0": "str", 0: "int"},
        "a/b": {"~c": cr.tensor([True, False, True])},
        "scalar": cr.tensor(2.5, dtype=cr.float64),
        "empty": cr.zeros(0, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "view": rng.standard_normal((4, 6))[::2, 1::2],
        "trainable": cr.randn(2, 2, requires_grad=True),
    }


def header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, json.loads(raw[8:8 + n])


def load_error(path):
    with pytest.raises(cr.SerializationError) as info:
        cr.load(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert isinstance(info.value, cr.ChainruleError) and isinstance(info.value, ValueError)
    return msg


# ---- round trips -----------------------------------------------------------------------------
def test_round_trip_nested_checkpoint(tmp_path):
    obj = checkpoint()
    cr.save(obj, tmp_path / "ckpt.safetensors")
    back = cr.load(tmp_path / "ckpt.safetensors")
    assert_same(obj, back)
    assert isinstance(back["optimizer"]["state"][0]["exp_avg"], np.ndarray)  # arrays stay arrays
    back["model"]["0.weight"] -= 1.0  # loaded tensors own writable memory
    with pytest.raises(AssertionError):
        assert_same(obj["model"], back["model"])


@pytest.mark.parametrize("dtype", [cr.float32, cr.float64, cr.int64, cr.bool_, cr.float16])
@pytest.mark.parametrize("nested", [False, True])
def test_round_trip_dtypes(tmp_path, dtype, nested):
    data = (np.arange(-6, 6).reshape(3, 4) * 0.7).astype(dtype)
    obj = {"t": cr.tensor(data), "a": data[0], "s": data[0, 1]}
    obj = {"x": [obj]} if nested else {"t": obj["t"], "a": obj["a"]}
    cr.save(obj, tmp_path / "f")
    assert_same(obj, cr.load(tmp_path / "f"))


@pytest.mark.parametrize("obj", [cr.ones(2), [], {}, None, 3, "text", (1, [2, (3,)]), [cr.ones(1)] * 2])
def test_round_trip_other_roots(tmp_path, obj):
    cr.save(obj, tmp_path / "f")
    assert_same(obj, cr.load(tmp_path / "f"))


def test_keys_with_the_same_text_do_not_collide(tmp_path):
    obj = {"d": {0: cr.ones(1), "0": cr.zeros(1), "0~2": cr.full((1,), 2.0), (0,): cr.full((1,), 3.0)}}
    cr.save(obj, tmp_path / "f")
    assert_same(obj, cr.load(tmp_path / "f"))
    assert len(st_numpy.load_file(tmp_path / "f")) == 4


def test_flat_state_dict_has_plain_names(tmp_path):
    sd = state_dict()
    cr.save(sd, tmp_path / "model.safetensors")
    plain = st_numpy.load_file(tmp_path / "model.safetensors")
    assert sorted(plain) == sorted(sd)
    for k in sd:
        assert plain[k].dtype == np.float32
        np.testing.assert_array_equal(plain[k], sd[k].data)
    meta = header(tmp_path / "model.safetensors")[2]["__metadata__"]
    assert meta["chainrule.format"] == "1" and len(meta["chainrule.sha256"]) == 64
    assert list(cr.load(tmp_path / "model.safetensors")) == list(sd)  # order kept


def test_nested_names_are_escaped_paths(tmp_path):
    cr.save(checkpoint(), tmp_path / "f")
    names = set(st_numpy.load_file(tmp_path / "f"))
    assert {"model/0.weight", "optimizer/state/0/exp_avg", "a~1b/~0c"} <= names


def test_foreign_safetensors_loads_flat_without_checksum(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    st_numpy.save_file(arrays, tmp_path / "np.safetensors")
    back = cr.load(tmp_path / "np.safetensors")
    assert set(back) == {"w", "b"} and all(type(v) is cr.Tensor for v in back.values())
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(back[k].data, arrays[k])


def test_adam_checkpoint_resumes_identically(tmp_path):
    optim = cr.optim

    def steps(params, opt, n):
        for _ in range(n):
            opt.zero_grad()
            ((params[0] ** 2).sum() + (params[0].sum(0) * params[1]).sum()).backward()
            opt.step()

    params = [cr.randn(3, 2, dtype=cr.float64, requires_grad=True),
              cr.zeros(2, dtype=cr.float64, requires_grad=True)]
    opt = optim.Adam(params, lr=0.1)
    steps(params, opt, 3)
    cr.save({"params": params, "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "ckpt")
    ckpt = cr.load(tmp_path / "ckpt")
    assert_same(opt.state_dict(), ckpt["optimizer"])
    resumed = ckpt["params"]
    opt2 = optim.Adam(resumed, lr=0.1)
    opt2.load_state_dict(ckpt["optimizer"])
    steps(params, opt, 2)
    steps(resumed, opt2, 2)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.data, b.data)


# ---- what cannot be saved --------------------------------------------------------------------
@pytest.mark.parametrize("obj, where", [
    ({"a": {"b": object()}}, "a/b"), ({"s": {1, 2}}, "s"), ([np.ones(2, np.complex64)], "0"),
    ({frozenset(): 1}, "the top level"), ({"n": np.array(["x"])}, "n")])
def test_unsupported_objects_raise_before_writing(tmp_path, obj, where):
    with pytest.raises(cr.SerializationError, match=f"at {where}"):
        cr.save(obj, tmp_path / "f")
    assert os.listdir(tmp_path) == []


def test_reference_cycle_is_refused(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(cr.SerializationError, match="cycle"):
        cr.save({"x": loop}, tmp_path / "f")


# ---- damaged and foreign files ---------------------------------------------------------------
def test_flipped_byte_in_tensor_data_is_detected(tmp_path):
    path = tmp_path / "model.safetensors"
    cr.save(state_dict(), path)
    raw, n, head = header(path)
    start, end = head["2.weight"]["data_offsets"]
    pos = 8 + n + (start + end) // 2
    bad = bytearray(raw)
    bad[pos] ^= 0x01
    path.write_bytes(bytes(bad))
    st_numpy.load_file(path)  # safetensors alone does not notice
    assert "checksum mismatch" in load_error(path)


def test_every_single_bit_flip_is_detected(tmp_path):
    good = tmp_path / "good"
    cr.save({"w": cr.tensor([[1.0, -2.0]]), "m": [cr.tensor([True]), 3]}, good)
    raw = good.read_bytes()
    path = tmp_path / "bad"
    for pos in range(len(raw)):
        for bit in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= bit
            path.write_bytes(bytes(bad))
            load_error(path)


@pytest.mark.parametrize("keep", ["4 bytes", "half header", "header only", "one byte short"])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "model.safetensors"
    cr.save(state_dict(), path)
    raw, n, _ = header(path)
    size = {"4 bytes": 4, "half header": 8 + n // 2, "header only": 8 + n,
            "one byte short": len(raw) - 1}[keep]
    path.write_bytes(raw[:size])
    msg = load_error(path)
    assert "truncated" in msg or "only 4 bytes" in msg


def test_trailing_bytes(tmp_path):
    path = tmp_path / "model.safetensors"
    cr.save(state_dict(), path)
    path.write_bytes(path.read_bytes() + b"\0\0\0")
    assert "3 unexpected bytes" in load_error(path)


def tiny_png():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"), (tiny_png(), "not a safetensors file"),
    (b"hello, this is a text file\n" * 20, "not a safetensors file"),
    (b'{"0.weight": [1, 2, 3]}', "not a safetensors file"),
    (struct.pack("<Q", 10) + b'{"a": nope', "corrupted safetensors header"),
    (struct.pack("<Q", 2) + b"{}", None)])
def test_empty_and_foreign_files(tmp_path, content, problem):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    if problem is None:  # a valid, empty safetensors file
        assert cr.load(path) == {}
    else:
        assert problem in load_error(path)


# ---- atomic writes ---------------------------------------------------------------------------
def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    old = state_dict(0)
    cr.save(old, path)

    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        cr.save(state_dict(1), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert_same(old, cr.load(path))


def test_save_replaces_file_and_keeps_permissions(tmp_path):
    path = tmp_path / "model.safetensors"
    cr.save(state_dict(0), path)
    os.chmod(path, 0o640)
    cr.save(state_dict(1), path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert_same(state_dict(1), cr.load(path))


WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import chainrule as cr
    real_write = os.write
    def slow_write(fd, data):  # ~20 ms per MiB: a slow disk, so the kill lands mid-write
        time.sleep(0.02)
        return real_write(fd, data)
    os.write = slow_write
    state = {f"layer{i}.weight": cr.tensor(np.full((512, 512), i, np.float32)) for i in range(64)}
    cr.save(state, sys.argv[1])
    print("finished")
""")


def test_killed_writer_leaves_old_file_intact(tmp_path):
    path = tmp_path / "model.safetensors"
    old = state_dict(0)
    cr.save(old, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            temps = [p for p in tmp_path.iterdir() if p.name != path.name]
            if temps and temps[0].stat().st_size >= 2 << 20:
                break
            assert proc.poll() is None, "the writer exited before it could be killed"
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out = proc.communicate()[0]
    assert b"finished" not in out and proc.returncode == -signal.SIGKILL
    assert_same(old, cr.load(path))
    (temp,) = [p for p in tmp_path.iterdir() if p.name != path.name]
    # the leftover is hidden, named after the target, ends in .tmp, and is partial
    assert temp.name.startswith(".model.safetensors.") and temp.name.endswith(".tmp")
    assert temp.stat().st_size < 64 * 512 * 512 * 4
    load_error(temp)
    cr.save(state_dict(2), path)  # the leftover does not get in the way of the next save
    assert_same(state_dict(2), cr.load(path))


# ---- safetensors is optional -----------------------------------------------------------------
def test_engine_imports_without_safetensors():
    code = ("import sys; sys.modules['safetensors'] = None\n"
            "import chainrule as cr\n"
            "try:\n    cr.save({}, 'x')\nexcept cr.ChainruleError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.count("\n") == 1 and "pip install safetensors" in out.stdout


# ---- PyTorch interchange ---------------------------------------------------------------------
def torch_mlp(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()


def manual_forward(sd, x):
    h = cr.relu(x @ sd["0.weight"].T + sd["0.bias"])
    return h @ sd["2.weight"].T + sd["2.bias"]


def chainrule_nn():
    try:
        from chainrule import nn
    except ImportError:
        return None
    has = all(hasattr(nn, n) for n in ("Sequential", "Linear", "ReLU"))
    return nn if has and hasattr(nn.Module, "load_state_dict") else None


def test_torch_state_dict_loads_into_chainrule(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    model = torch_mlp(torch)
    st_torch.save_file(model.state_dict(), tmp_path / "torch.safetensors")
    sd = cr.load(tmp_path / "torch.safetensors")
    assert sorted(sd) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert sd["0.weight"].shape == (8, 4) and sd["0.weight"].dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 4))
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(manual_forward(sd, cr.tensor(x, dtype=cr.float64)).data, expected,
                               rtol=1e-6, atol=1e-12)
    nn = chainrule_nn()
    if nn is not None:
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(cr.float64)
        net.load_state_dict(sd)
        np.testing.assert_allclose(net(cr.tensor(x, dtype=cr.float64)).data, expected,
                                   rtol=1e-6, atol=1e-12)


def test_chainrule_state_dict_loads_into_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    nn = chainrule_nn()
    if nn is None:
        sd = state_dict(3, dtype=cr.float64)
    else:
        cr.manual_seed(3)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(cr.float64)
        sd = net.state_dict()
    cr.save(sd, tmp_path / "cr.safetensors")
    model = torch_mlp(torch)
    model.load_state_dict(st_torch.load_file(tmp_path / "cr.safetensors"), strict=True)
    x = np.random.default_rng(1).standard_normal((5, 4))
    expected = manual_forward(sd, cr.tensor(x, dtype=cr.float64)).data
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected,
                               rtol=1e-6, atol=1e-12)
    if nn is not None:
        np.testing.assert_allclose(net(cr.tensor(x, dtype=cr.float64)).data, expected, rtol=1e-12)
