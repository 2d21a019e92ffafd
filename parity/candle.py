"""The bindings for the harness: models, errors, and `run` on the wire format (indextts2_candle.wire)."""
from __future__ import annotations

import numpy as np

import indextts_candle as _ic

from indextts2_candle.wire import from_wire, to_wire  # noqa: F401 (also the harness's API)

Model = _ic.Model
Tokenizer = _ic.Tokenizer
CheckpointError = _ic.CheckpointError
InputError = _ic.InputError


def run(model, method: str, inputs: dict, taps: bool = False, inject: dict | None = None):
    """Returns ({output: array}, {tap: array} in forward order)."""
    outs, tapped = model.run(method, {k: to_wire(v) for k, v in inputs.items()}, taps,
                             None if inject is None else {k: to_wire(v) for k, v in inject.items()})
    return {k: from_wire(v) for k, v in outs}, {k: from_wire(v) for k, v in tapped}


def transform(name: str, *arrays, **kw) -> list[np.ndarray]:
    return [from_wire(w) for _, w in _ic.transform(name, [to_wire(a) for a in arrays], **kw)]
