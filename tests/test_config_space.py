"""The supported config space, one row per (official constructor argument, non-default value).

Each registry row lists its `config_space` (parity/spec.py `ConfigRow`): a value is either
implemented on both sides — then a synthetic checkpoint at that config, in the official format,
passes both walks — or refused by Candle's load with an error naming the argument. Nothing loads
and silently computes something else. README "Supported config space" is this table in prose.
"""
from __future__ import annotations

import copy

import pytest

from parity.registry import MODELS
from parity.runner import layer_walk

ROWS = [(s.name, r) for s in MODELS.values() for r in s.config_space]


def merged(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def test_every_row_has_a_config_space():
    """Every model with a config documents its non-default values (weightless rows included)."""
    missing = [s.name for s in MODELS.values() if not s.config_space]
    assert not missing, f"registry rows without config-space rows: {missing}"


@pytest.mark.parametrize("model,row", ROWS, ids=[f"{m}-{r.arg}={r.value}" for m, r in ROWS])
def test_config_value(model, row):
    from parity import fixtures as fx
    from parity.candle import CheckpointError, InputError

    spec = MODELS[model]
    cfg = merged(spec.configs["tiny"], row.overrides)
    if row.expect == "refused":
        base = fx.synthetic(spec, "tiny")
        with pytest.raises((InputError, CheckpointError), match=row.match or row.arg) as e:
            from parity.candle import Model

            Model(spec.name, base.safetensors_path, spec.config_json(cfg), "cpu", [], spec.prefix)
        assert str(row.value).lower() in str(e.value).lower(), f"the error must name the value {row.value!r}: {e.value}"
        return
    assert row.expect == "parity", row.expect
    f = fx.synthetic(spec, "tiny", cfg)
    case = next(c for c in spec.cases if c.name == (row.case or spec.cases[0].name))
    cm = f.candle("cpu")
    for mode in ("chained", "injected"):
        layer_walk(f, cm, case, mode, "cpu").assert_ok()
