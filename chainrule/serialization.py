"""Atomic, checksummed save/load of state_dicts in the safetensors format (never pickle).

File layout: an ordinary safetensors file. Tensors and arrays are its tensors; everything else
lives as JSON in the header's `__metadata__` (a str -> str dict):

    "chainrule.format"     format version ("1")
    "chainrule.structure"  the object, each tensor replaced by a reference to its stored name
    "chainrule.sha256"     over sha256(structure) and every stored tensor in sorted name order
                           (name, dtype, shape, then its little-endian bytes)

A top-level dict of str -> Tensor/ndarray (a state_dict) stores each tensor under its own key,
so `safetensors.torch.load_file` and `safetensors.numpy.load_file` read the same names PyTorch
uses. Anything else stores tensors under their path: keys and list indices joined by "/", with
"~" and "/" inside a key escaped as "~0" and "~1" (as in JSON pointers); a name that is taken
anyway (int key 0 beside str key "0") gets a "~2" suffix, which escaping never produces.
"""
import collections
import hashlib
import itertools
import json
import os
import struct
import tempfile

import numpy as np

from chainrule.errors import ChainruleError, SerializationError
from chainrule.tensor import Tensor

FORMAT_VERSION = "1"
_KEYS = ("format", "structure", "sha256")  # metadata keys, each prefixed "chainrule."
_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64"}
_SCALARS = (type(None), bool, int, float, str)
_CHUNK = 1 << 20  # bytes per os.write call


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise ChainruleError("saving and loading need the safetensors package: "
                             "pip install safetensors (or pip install \"chainrule[nn]\")") from None
    return safetensors


def save(obj, path):
    """Write `obj` to `path` as a safetensors file, atomically.

    `obj` is a Tensor, ndarray, numpy scalar, None, bool, int, float or str, or a dict
    (OrderedDict), list or tuple of these, nested; dict keys are str, int, float, bool, None or
    tuples of them. `load` gives back the same structure and types: Tensors come back as
    `cr.Tensor` (same dtype and `requires_grad`; `.grad`, the graph and `Parameter`-ness are not
    saved), ndarrays as ndarrays, numpy scalars as numpy scalars, int keys as ints, tuples as
    tuples. A tensor that appears twice is stored twice and loads as two tensors.

    The file is written to a temporary `.<name>.<random>.tmp` in the same folder, fsynced and
    renamed over `path`, so a crash mid-save leaves the previous file intact (a killed process
    may leave that clearly named temporary file behind; it is safe to delete).
    """
    st = _safetensors()
    path = os.fspath(path)
    arrays, structure = _encode_root(obj, path)
    values = (FORMAT_VERSION, structure, _digest(structure, arrays))
    metadata = {f"chainrule.{k}": v for k, v in zip(_KEYS, values)}
    try:
        blob = st.numpy.save(arrays, metadata=metadata)
    except st.SafetensorError as e:
        raise SerializationError(f"cannot save to '{path}': {_one_line(e)}") from None
    atomic_write(path, blob)


def load(path):
    """Read an object written by `save`, verifying its sha256.

    A safetensors file without chainrule metadata (e.g. from `safetensors.torch.save_file`)
    loads as a flat dict of name -> `cr.Tensor`; such files carry no checksum, so none is
    checked. A corrupted, truncated, empty or foreign file raises `cr.SerializationError`
    (a missing file, `FileNotFoundError`).
    """
    st = _safetensors()
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    metadata = _check_layout(raw, path)
    try:
        arrays = st.numpy.load(raw)
    except st.SafetensorError as e:
        raise _load_error(path, f"invalid safetensors file: {_one_line(e)}") from None
    if not any(k.startswith("chainrule") for k in metadata or {}):  # e.g. safetensors.torch
        return {name: Tensor(a) for name, a in arrays.items()}
    version, structure, stored = (metadata.get(f"chainrule.{k}") for k in _KEYS)
    if not all(isinstance(v, str) for v in (version, structure, stored)):
        raise _load_error(path, "corrupted chainrule metadata: an entry is missing")
    if version != FORMAT_VERSION:
        raise _load_error(path, f"unknown chainrule format version {version!r} "
                                f"(this chainrule reads version {FORMAT_VERSION})")
    actual = _digest(structure, arrays)
    if actual != stored:
        raise _load_error(path, f"checksum mismatch (stored sha256 {stored[:12]}..., computed "
                                f"{actual[:12]}...): the file is corrupted")
    try:
        return _decode(json.loads(structure), arrays)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise _load_error(path, f"unreadable structure metadata: {_one_line(e)}") from None


# ---- encoding ---------------------------------------------------------------------------------
def _encode_root(obj, path):
    arrays = {}
    if isinstance(obj, dict) and "__metadata__" not in obj and all(
            type(k) is str and isinstance(v, (Tensor, np.ndarray)) for k, v in obj.items()):
        names = {_escape(k): k for k in obj}  # a state_dict: plain names, as PyTorch reads them
    else:
        names = None

    def leaf_name(where):
        return "/".join(where) if names is None else names[where[0]]

    def array(x, where):
        a = np.asarray(x, order="C")  # not ascontiguousarray: it turns 0-d into 1-d
        if a.dtype.name not in _DTYPES:
            raise _save_error(path, where, f"dtype {a.dtype} is not supported")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # safetensors is little-endian
        base = name = leaf_name(where)
        for k in itertools.count(2):  # int key 0 beside str key "0"; escaping never makes "~2"
            if name not in arrays:
                break
            name = f"{base}~{k}"
        arrays[name] = a
        return name

    active = set()  # ids of the containers on the current path, to refuse cycles

    def enc(x, where):
        if type(x) in _SCALARS:
            return x
        if isinstance(x, Tensor):
            return {"tensor": array(x.data, where), "requires_grad": x.requires_grad}
        if isinstance(x, np.ndarray):
            return {"ndarray": array(x, where)}
        if isinstance(x, np.generic):
            return {"numpy_scalar": array(np.asarray(x), where)}
        if type(x) not in (list, tuple, dict, collections.OrderedDict):
            raise _save_error(path, where, f"cannot store an object of type {type(x).__name__}")
        if id(x) in active:
            raise _save_error(path, where, "the structure contains a reference cycle")
        active.add(id(x))
        if isinstance(x, dict):
            out = {"dict": [[_enc_key(k, path, where), enc(v, where + [_escape(k)])]
                            for k, v in x.items()]}
            if type(x) is collections.OrderedDict:
                out["ordered"] = True
        else:
            items = [enc(v, where + [str(i)]) for i, v in enumerate(x)]
            out = items if type(x) is list else {"tuple": items}
        active.discard(id(x))
        return out

    structure = json.dumps(enc(obj, []), separators=(",", ":"))
    return arrays, structure


def _enc_key(k, path, where):
    if type(k) in _SCALARS:
        return k
    if type(k) is tuple:
        return {"tuple": [_enc_key(v, path, where) for v in k]}
    raise _save_error(path, where, f"cannot store a dict key of type {type(k).__name__}")


def _escape(key):
    text = key if type(key) is str else json.dumps(_enc_key(key, "", []))
    return text.replace("~", "~0").replace("/", "~1")


def _decode(x, arrays):
    if not isinstance(x, (dict, list)):
        return x
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if "tensor" in x:
        return Tensor(arrays[x["tensor"]], requires_grad=x["requires_grad"])
    if "ndarray" in x:
        return arrays[x["ndarray"]]
    if "numpy_scalar" in x:
        return arrays[x["numpy_scalar"]][()]
    if "tuple" in x:
        return tuple(_decode(v, arrays) for v in x["tuple"])
    pairs = [(_decode(k, arrays), _decode(v, arrays)) for k, v in x["dict"]]
    return collections.OrderedDict(pairs) if x.get("ordered") else dict(pairs)


def _digest(structure, arrays):
    h = hashlib.sha256(hashlib.sha256(structure.encode()).digest())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode())
        h.update(np.asarray(a, order="C").data)
    return h.hexdigest()


# ---- files ------------------------------------------------------------------------------------
def atomic_write(path, blob):
    """Write bytes (or text, as UTF-8) to `path` so that a crash leaves the old file or the new
    one, never a mix: a temporary file in the same folder, fsync, os.replace, fsync the folder."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view[:_CHUNK]):]
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _mode_for(path))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _mode_for(path):
    """The existing file's permissions, else what open() would give (mkstemp uses 0o600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _check_layout(raw, path):
    """Validate the 8-byte length, JSON header and data size; return `__metadata__` or None."""
    size = len(raw)
    if size == 0:
        raise _load_error(path, "the file is empty")
    if size < 8:
        raise _load_error(path, f"not a safetensors file: only {size} bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    looks_like_header = raw[8:9] == b"{" and n < 100_000_000
    if n > size - 8:
        if looks_like_header:
            raise _load_error(path, f"the file is truncated: the header needs {n} bytes but "
                                    f"only {size - 8} follow")
        raise _load_error(path, f"not a safetensors file (it starts with {raw[:8]!r})")
    if not looks_like_header:
        raise _load_error(path, f"not a safetensors file (it starts with {raw[:8]!r})")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
        end = max([e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"],
                  default=0)
        metadata = header.get("__metadata__")
        if type(end) is not int:
            raise TypeError(f"data offset {end!r} is not an integer")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _load_error(path, f"corrupted safetensors header: {_one_line(e)}") from None
    if end > size - 8 - n:
        raise _load_error(path, f"the file is truncated: tensor data needs {end} bytes but only "
                                f"{size - 8 - n} are present")
    if end < size - 8 - n:
        raise _load_error(path, f"{size - 8 - n - end} unexpected bytes after the tensor data")
    if metadata is not None and not isinstance(metadata, dict):
        raise _load_error(path, "corrupted safetensors header: __metadata__ is not a dict")
    return metadata


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def _load_error(path, problem):
    return SerializationError(f"cannot load '{path}': {problem}")


def _save_error(path, where, problem):
    at = "/".join(where) or "the top level"
    return SerializationError(f"cannot save to '{path}': {problem} (at {at})")
