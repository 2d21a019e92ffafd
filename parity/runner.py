"""Runs one case on both sides and walks the taps. Shared by the tests, the report and the benches."""
from __future__ import annotations

import numpy as np
import torch

from reference.common import Taps

from . import candle
from .compare import Walk, compare, walk
from .fixtures import Fixture
from .spec import Case
from .tolerances import lookup


def to_np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


@torch.no_grad()
def run_reference(fx: Fixture, case: Case, inputs: dict, device: str = "cpu"):
    taps = Taps()
    model = fx.reference(device)
    tin = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}
    outs = case.run_reference(model, tin, taps)
    return {k: to_np(v) for k, v in outs.items()}, taps


def layer_walk(fx: Fixture, cm, case: Case, mode: str, device: str, seed: int = 0, inputs: dict | None = None) -> Walk:
    """chained: both sides run end to end. injected: each Candle block gets the reference's input."""
    inputs = inputs if inputs is not None else case.make_inputs(fx.cfg, seed)
    ref_outs, taps = run_reference(fx, case, inputs, device)
    if mode == "chained":
        outs, ctaps = candle.run(cm, case.method, inputs, taps=True)
    elif mode == "injected":
        inject = {k: to_np(v) for k, v in taps.inputs.items() if k not in case.no_inject}
        outs, ctaps = candle.run(cm, case.method, inputs, taps=True, inject=inject)
    else:
        raise ValueError(mode)
    w = walk(fx.spec.name, case.name, mode, device, {k: to_np(v) for k, v in taps.outputs.items()}, ctaps)
    if mode == "chained":  # the method's named outputs, after the taps
        for k, ref in ref_outs.items():
            got = outs.get(k)
            if got is None:
                w.missing.append(f"output:{k}")
            else:
                w.rows.append(compare(f"output:{k}", ref, got, lookup(fx.spec.name, f"output:{k}", device, "float32")))
    return w
