"""numpy ↔ the bindings' wire format (dtype, shape, bytes). Nothing else lives here."""
from __future__ import annotations

import numpy as np

import indextts_candle as _ic

Model = _ic.Model
Tokenizer = _ic.Tokenizer
CheckpointError = _ic.CheckpointError
InputError = _ic.InputError


def to_wire(a) -> tuple[str, list[int], bytes]:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        a = np.ascontiguousarray(a, dtype="<i8")
        return ("int64", list(a.shape), a.tobytes())
    a = np.ascontiguousarray(a, dtype="<f4")
    return ("float32", list(a.shape), a.tobytes())


def from_wire(w) -> np.ndarray:
    dtype, shape, data = w
    return np.frombuffer(data, dtype="<i8" if dtype == "int64" else "<f4").reshape(shape).copy()


def run(model, method: str, inputs: dict, taps: bool = False, inject: dict | None = None):
    """Returns ({output: array}, {tap: array} in forward order)."""
    outs, tapped = model.run(method, {k: to_wire(v) for k, v in inputs.items()}, taps,
                             None if inject is None else {k: to_wire(v) for k, v in inject.items()})
    return {k: from_wire(v) for k, v in outs}, {k: from_wire(v) for k, v in tapped}


def transform(name: str, *arrays, **kw) -> list[np.ndarray]:
    return [from_wire(w) for _, w in _ic.transform(name, [to_wire(a) for a in arrays], **kw)]
