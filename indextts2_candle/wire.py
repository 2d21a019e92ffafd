"""numpy ↔ the bindings' wire format (dtype, shape, little-endian bytes): int64 or float32."""
from __future__ import annotations

import numpy as np


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
