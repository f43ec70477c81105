"""The legacy PyTorch checkpoint reader on hand-built files: real tensors come back; crafted files cannot run code."""

import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from towers.encoders import torch_legacy_io

pytestmark = pytest.mark.unit


def _fake_torch():
    """Module objects named as torch's, so pickle writes the GLOBAL opcodes a real legacy checkpoint has."""
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch = types.ModuleType("torch")
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage = FloatStorage
    return {"torch": torch, "torch._utils": utils}, _rebuild_tensor_v2, FloatStorage


class _Tensor:
    def __init__(self, rebuild, key, size, stride, offset=0):
        self.rebuild, self.key, self.size, self.stride, self.offset = rebuild, key, size, stride, offset

    def __reduce__(self):
        return self.rebuild, (("storage-ref", self.key), self.offset, self.size, self.stride)


def write_checkpoint(path, tensors: dict, storages: dict, counts: dict | None = None):
    """tensors: name -> (storage key, size, stride, offset); storages: key -> float32 array."""
    modules, rebuild, float_storage = _fake_torch()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        buffer = io.BytesIO()
        for header in (torch_legacy_io._MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, buffer, protocol=2)

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, tuple) and obj and obj[0] == "storage-ref":
                    return ("storage", float_storage, obj[1], "cpu", len(storages[obj[1]]))
                return None

        Pickler(buffer, protocol=2).dump(
            {name: _Tensor(rebuild, key, size, stride, offset) for name, (key, size, stride, offset) in tensors.items()}
        )
        pickle.dump(list(storages), buffer, protocol=2)
        for key, values in storages.items():
            buffer.write(struct.pack("<q", (counts or {}).get(key, len(values))))
            buffer.write(np.asarray(values, np.float32).tobytes())
    finally:
        for name, module in saved.items():
            sys.modules.pop(name) if module is None else sys.modules.__setitem__(name, module)
    path.write_bytes(buffer.getvalue())
    return path


def test_reads_tensors_with_offsets_and_strides(tmp_path):
    data = np.arange(8, dtype=np.float32)
    path = write_checkpoint(tmp_path / "ok.pth", {"w": ("0", (2, 3), (3, 1), 1), "t": ("0", (2,), (4,), 0)}, {"0": data})
    state = torch_legacy_io.load(str(path))
    np.testing.assert_array_equal(state["w"], data[1:7].reshape(2, 3))
    np.testing.assert_array_equal(state["t"], [0.0, 4.0])


class _RunsCode:
    def __reduce__(self):
        return os.system, ("touch PWNED",)


@pytest.mark.parametrize("where", ["magic", "state"])
def test_a_crafted_pickle_never_runs_code(tmp_path, where, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    if where == "magic":
        pickle.dump(_RunsCode(), buffer, protocol=2)
    else:
        for header in (torch_legacy_io._MAGIC, 1001, {}):
            pickle.dump(header, buffer, protocol=2)
        pickle.dump({"w": _RunsCode()}, buffer, protocol=2)
    (tmp_path / "evil.pth").write_bytes(buffer.getvalue())
    with pytest.raises((ValueError, pickle.UnpicklingError), match="posix.system|not a legacy"):
        torch_legacy_io.load(str(tmp_path / "evil.pth"))
    assert not (tmp_path / "PWNED").exists()


def test_sizes_past_the_storage_or_the_file_are_refused(tmp_path):
    past = write_checkpoint(tmp_path / "past.pth", {"w": ("0", (100,), (1,), 0)}, {"0": np.zeros(4)})
    with pytest.raises(pickle.UnpicklingError, match="reads past its storage"):
        torch_legacy_io.load(str(past))
    huge = write_checkpoint(tmp_path / "huge.pth", {"w": ("0", (4,), (1,), 0)}, {"0": np.zeros(4)}, counts={"0": 2**60})
    with pytest.raises(pickle.UnpicklingError, match="declares"):
        torch_legacy_io.load(str(huge))
