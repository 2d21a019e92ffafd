"""Runs one case on both sides and walks the taps. Shared by the tests, the report and the benches."""
from __future__ import annotations

import fnmatch
import hashlib
from collections import OrderedDict

import numpy as np
import torch

from reference.common import Taps

from . import candle
from .compare import Walk, compare, compare_noise, walk
from .fixtures import Fixture
from .spec import Case
from .tolerances import rule


def to_np(t) -> np.ndarray:
    """Half-precision tensors are widened to float32 (exact; numpy has no bfloat16)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    return np.asarray(t)


def as_torch(inputs: dict, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """numpy inputs -> tensors; floating inputs in `dtype` (float32 data widened exactly to float64)."""
    out = {}
    for k, v in inputs.items():
        t = torch.from_numpy(np.ascontiguousarray(v)).to(device)
        out[k] = t.to(dtype) if t.is_floating_point() else t
    return out


@torch.no_grad()
def run_reference(fx: Fixture, case: Case, inputs: dict, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  inject: dict | None = None):
    """One reference run in `dtype`; `inject`: tap name -> input (the injected walk on the reference side)."""
    taps = Taps({k: torch.as_tensor(v) for k, v in (inject or {}).items()})
    model = fx.reference(device, dtype)
    outs = case.run_reference(model, as_torch(inputs, device, dtype), taps)
    if taps.inject:
        raise ValueError(f"injected inputs name taps the reference never ran: {sorted(taps.inject)}")
    return {k: to_np(v) for k, v in outs.items()}, taps


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def reference_pair(fx: Fixture, case: Case, inputs: dict, mode: str, device: str = "cpu", dtype: str = "float32"):
    """The float64 truth and the noise run (the reference in `dtype`, float32 by default) of one
    case. In the injected walk the noise run gets every block's float64 input, as Candle does.
    Returns (out64, taps64, out_dt, taps_dt, inject)."""
    out64, taps64 = run_reference(fx, case, inputs, device, torch.float64)
    inject = None
    if mode == "injected":
        inject = {k: to_np(v) for k, v in taps64.inputs.items()
                  if not any(fnmatch.fnmatchcase(k, p) for p in case.no_inject)}
    elif mode != "chained":
        raise ValueError(mode)
    out32, taps32 = run_reference(fx, case, inputs, device, TORCH_DTYPES[dtype], inject)
    return out64, taps64, out32, taps32, inject


# The last few reference pairs, so that a Candle model with a fault switch (or another walk of the
# same case) is judged against reference runs already made: the reference side does not depend on
# the Candle model. At official size this is most of a fault test's time (w2v-bert: four float64 /
# float32 runs, and a rebuilt module each, per test). Kept small: one pair of w2v-bert's leaf taps
# at official size holds a few GB.
_PAIRS: "OrderedDict[tuple, tuple]" = OrderedDict()
_PAIRS_KEEP = 2


def _digest(inputs: dict) -> str:
    h = hashlib.sha1()
    for k in sorted(inputs):
        a = np.ascontiguousarray(inputs[k])
        h.update(f"{k}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def judged_pair(fx: Fixture, case: Case, inputs: dict, mode: str, device: str, dtype: str):
    """`reference_pair` reduced to what a walk reads (numpy outputs and taps, the injected inputs),
    cached per (checkpoint file, case, inputs, mode, device, dtype)."""
    key = (fx.safetensors_path, fx.spec.name, case.name, id(case.run_reference), mode, device, dtype, _digest(inputs))
    if key in _PAIRS:
        _PAIRS.move_to_end(key)
        return _PAIRS[key]
    out64, taps64, out32, taps32, inject = reference_pair(fx, case, inputs, mode, device, dtype)
    got = ({k: to_np(v) for k, v in out64.items()}, {k: to_np(v) for k, v in taps64.outputs.items()},
           {k: to_np(v) for k, v in out32.items()}, {k: to_np(v) for k, v in taps32.outputs.items()}, inject)
    del taps64, taps32
    _PAIRS[key] = got
    while len(_PAIRS) > _PAIRS_KEEP:
        _PAIRS.popitem(last=False)
    return got


def layer_walk(fx: Fixture, cm, case: Case, mode: str, device: str, seed: int = 0, inputs: dict | None = None,
               dtype: str = "float32") -> Walk:
    """chained: all three run end to end. injected: each Candle block (and each reference block in
    `dtype`) gets the float64 reference's input. Every float tap is judged by the noise-floor rule:
    Candle (loaded in `dtype`) against float64, in units of the reference's own error in `dtype`."""
    inputs = inputs if inputs is not None else case.make_inputs(fx.cfg, seed)
    out64, taps64, out32, taps32, inject = judged_pair(fx, case, inputs, mode, device, dtype)
    outs, ctaps = candle.run(cm, case.method, inputs, taps=True, inject=inject)
    w = walk(fx.spec.name, case.name, mode, device, taps64, ctaps, dtype, noise_taps=taps32)
    if mode == "chained":  # the method's named outputs, after the taps
        for k, ref in out64.items():
            got = outs.get(k)
            if got is None:
                w.missing.append(f"output:{k}")
            else:
                name = f"output:{k}"
                w.rows.append(compare_noise(name, ref, out32[k], got, rule(fx.spec.name, name, device, dtype)))
    return w
