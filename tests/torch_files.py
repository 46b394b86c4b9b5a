"""Writing PyTorch state_dict files without PyTorch (test data for robgan_tf.torch_format and interop).

The zip format as torch.save writes it: `<name>/data.pkl`, a protocol-2 pickle whose tensors are calls of
torch._utils._rebuild_tensor_v2 on persistent storage references ("storage", torch.FloatStorage, key, "cpu",
numel), and `<name>/data/<key>` with each storage's little-endian bytes. pickle only writes a global it can
import, so stand-in modules named torch and torch._utils exist while pickling.
"""
import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

_STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


@contextlib.contextmanager
def _stand_in_torch():
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch, utils
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, key, array):
        self.key, self.array = key, array


def save_state_dict(state, path, name="archive"):
    """Writes {key: NumPy array} (float32 or int64) as torch.save(state_dict) would, in the zip format."""
    with _stand_in_torch() as (torch, utils):
        tensors = {}

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _StorageRef):
                    return ("storage", getattr(torch, _STORAGES[obj.array.dtype]), obj.key, "cpu", obj.array.size)
                return None

            def reducer_override(self, obj):
                if isinstance(obj, _Tensor):
                    a = obj.array
                    stride = tuple(s // a.itemsize for s in a.strides)
                    return (utils._rebuild_tensor_v2,
                            (_StorageRef(obj.key, a), 0, a.shape, stride, False, collections.OrderedDict()))
                return NotImplemented

        wrapped = collections.OrderedDict()
        for i, (key, value) in enumerate(state.items()):
            array = np.ascontiguousarray(value)
            tensors[str(i)] = array
            wrapped[key] = _Tensor(str(i), array)
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(wrapped)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", buffer.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for key, array in tensors.items():
            z.writestr(f"{name}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{name}/version", "3\n")
    return path


class _StorageRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


def write_pickle_zip(path, payload, name="archive"):
    """A zip 'checkpoint' whose data.pkl is `payload` (bytes): for files that must be refused."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", payload)
    return path
