"""Reading PyTorch `state_dict` files without PyTorch, and without running anything they name.

A file written by `torch.save(net.state_dict(), path)` is a pickle. Unpickling runs whatever callables the pickle
names, so `pickle.load` on a downloaded checkpoint can run arbitrary code. Here the unpickler resolves exactly the
names a state_dict needs -- `collections.OrderedDict`, PyTorch's tensor rebuild functions and its storage types --
to functions of this module that build NumPy arrays; any other name is refused before anything is called.

Both formats are read (docs/FIDELITY.md, "Importing the authors' checkpoints", has the layouts):
- the zip format (torch >= 1.6): `<name>/data.pkl` plus one raw little-endian file per storage, `<name>/data/<key>`;
- the legacy format (torch <= 1.5, the authors' torch 0.4): five pickles in a row -- magic number, protocol
  version, system info, the object, the storage keys -- then each storage as an int64 element count and its bytes.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# PyTorch's storage type names -> NumPy little-endian dtypes. bfloat16 has no NumPy type: its 16 bits are read as
# uint16 and widened to float32 (bfloat16 is the upper half of a float32).
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchCheckpointError(ValueError):
    """A checkpoint that cannot be read as asked: not a state_dict, damaged, unsafe, or not the network named."""


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage named in the pickle; its bytes are attached after the pickle is read (legacy files keep them
    after it)."""

    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel = kind, str(key), int(numel)
        self.array = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):  # an nn.Parameter pickled inside a state_dict: its data
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path, storages):
        super().__init__(file)
        self.path, self.storages = path, storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchCheckpointError(
                f"{self.path}: the pickle names {module}.{name}, which a PyTorch state_dict never holds; refused "
                "without calling it (a pickle can run any callable it names). Only tensors in (ordered) dicts are "
                "read: save the weights with torch.save(net.state_dict(), path).") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchCheckpointError(f"{self.path}: an unknown persistent reference {pid!r} in the pickle.")
        kind, key, numel = pid[1], pid[2], pid[4]
        view = pid[5] if len(pid) == 6 else None
        if key not in self.storages:  # numel is the whole storage's, also when a view of it is referenced
            self.storages[key] = _Storage(kind, key, numel)
        return self.storages[key] if view is None else ("view", self.storages[key], view)


def _load_pickle(data, path, storages):
    try:
        return _Unpickler(io.BytesIO(data) if isinstance(data, bytes) else data, path, storages).load()
    except TorchCheckpointError:
        raise
    except Exception as e:  # truncated or malformed pickle streams raise many kinds of error
        raise TorchCheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from None


def _array(storage, raw, path, byteorder="little"):
    dtype = storage.kind.dtype if byteorder == "little" else storage.kind.dtype.newbyteorder(">")
    need = storage.numel * dtype.itemsize
    if len(raw) < need:
        raise TorchCheckpointError(f"{path}: storage {storage.key} holds {len(raw)} bytes, {need} expected: the file is "
                              "truncated or damaged.")
    out = np.frombuffer(raw[:need], dtype=dtype)
    if storage.kind.name == "BFloat16Storage":
        return (out.astype(np.uint32) << 16).view(np.float32)
    return out.astype(dtype.newbyteorder("="), copy=False)


def _materialise(obj, path):
    """The unpickled object with every tensor placeholder replaced by a NumPy array (a copy, bounds-checked: a
    crafted stride or offset must not read outside its storage)."""
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v, path)) for k, v in obj.items())
    if not isinstance(obj, _Tensor):
        return obj
    storage = obj.storage
    base = storage
    if isinstance(storage, tuple):  # a legacy view: ("view", storage, (view_key, offset, size))
        _, base, (_, start, length) = storage
        flat = base.array[int(start): int(start) + int(length)]
    else:
        flat = base.array
    size, stride, offset = obj.size, obj.stride, obj.offset
    if len(size) != len(stride) or any(int(s) < 0 for s in size) or any(int(s) < 0 for s in stride) or offset < 0:
        raise TorchCheckpointError(f"{path}: a tensor with size {size}, stride {stride}, offset {offset} is malformed.")
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchCheckpointError(f"{path}: a tensor reaches element {last} of a storage of {flat.size}: the file is "
                              "damaged.")
    items = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * items for s in stride],
                                           writeable=False)
    return np.array(view)


def _read_zip(path):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise TorchCheckpointError(f"{path}: a damaged zip checkpoint ({e}).") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchCheckpointError(f"{path}: a zip file but not a PyTorch checkpoint (no <name>/data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        if byteorder not in ("little", "big"):
            raise TorchCheckpointError(f"{path}: unknown byte order {byteorder!r}.")
        storages = {}
        obj = _load_pickle(archive.read(pickles[0]), path, storages)
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise TorchCheckpointError(f"{path}: storage {member} is missing: the file is damaged.")
            storage.array = _array(storage, archive.read(member), path, byteorder)
    return obj


def _read_legacy(path):
    with open(path, "rb") as f:
        header = [_load_pickle(f, path, {}) for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not isinstance(header[2], dict):
            raise TorchCheckpointError(f"{path}: not a PyTorch checkpoint (wrong magic number or protocol version).")
        byteorder = "little" if header[2].get("little_endian", True) else "big"
        storages = {}
        obj = _load_pickle(f, path, storages)
        keys = _load_pickle(f, path, {})
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise TorchCheckpointError(f"{path}: the storage list does not match the tensors: the file is damaged.")
        for key in keys:
            storage = storages[str(key)]
            head = f.read(8)
            if len(head) < 8:
                raise TorchCheckpointError(f"{path}: truncated before storage {key}.")
            count = struct.unpack("<q" if byteorder == "little" else ">q", head)[0]
            if count != storage.numel:
                raise TorchCheckpointError(f"{path}: storage {key} says {count} elements, the pickle {storage.numel}.")
            storage.array = _array(storage, f.read(count * storage.kind.dtype.itemsize), path, byteorder)
    return obj


def read_state_dict(path):
    """{name: float32/int NumPy array} from a PyTorch state_dict file (zip or legacy format), without torch.

    Raises TorchCheckpointError for a file that is not one, is damaged, or names anything but tensors and dicts."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TorchCheckpointError(f"{path}: no such checkpoint file.")
    with open(path, "rb") as f:
        magic = f.read(4)
    obj = _read_zip(path) if magic == b"PK\x03\x04" else _read_legacy(path)
    state = _materialise(obj, path)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise TorchCheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors by name). "
                              "Save the weights with torch.save(net.state_dict(), path).")
    bad = [k for k, v in state.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise TorchCheckpointError(f"{path}: entry {bad[0]!r} is not a tensor; a state_dict holds tensors only.")
    return state
