"""What a registry row is. Adding a model = a Rust file + a reference file + one `ModelSpec`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Case:
    """One entry point compared between the two sides.

    `name` appears in pytest ids, so it must not contain another model's `-k` word (e.g. no
    "conditioning" in a GPT case: it contains "dit").
    `make_inputs(cfg, seed)` returns numpy inputs keyed by the Rust method's input names.
    `run_reference(module, inputs_as_torch, taps)` returns `{output_name: tensor}` and fills taps.
    """

    name: str
    method: str
    make_inputs: Callable[[dict, int], dict[str, np.ndarray]]
    run_reference: Callable[[torch.nn.Module, dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]
    # Taps that the injected walk must not inject (fnmatch patterns; an exact name matches itself),
    # e.g. a block whose input is not a single tensor.
    no_inject: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigRow:
    """One (official constructor argument, non-default value) of the supported config space
    (tests/test_config_space.py). `overrides` change the TINY reference config (nested dicts merge).

    expect="parity": the reference (= the official class) and Candle both implement the value; a
    synthetic checkpoint at that config is written in the official format and `case` (default: the
    row's first case) passes both walks. expect="refused": Candle's load fails with an error naming
    the argument (regex `match`, default the argument's name) — never a silent default."""

    arg: str
    value: Any
    overrides: dict
    expect: str  # "parity" | "refused"
    case: str = ""
    match: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key = Rust kind = the word `pytest -k` selects
    manifest: str  # file name under fixtures/manifests/
    configs: dict[str, dict]  # "tiny" and "full" reference configs (plain JSON-able dicts)
    build_reference: Callable[[dict], torch.nn.Module]
    official_file: str  # file name in an official checkpoint directory
    save_official: Callable[[dict[str, torch.Tensor], str], None]  # writes the official container
    config_json: Callable[[dict], str]  # reference config -> JSON the Rust config struct parses
    cases: tuple[Case, ...]
    prefix: str = ""  # prefix of this model's keys in the converted safetensors (s2mel: "net.cfm")
    manifest_prefix: str = ""  # prefix of the manifest keys relative to the module's state_dict
    # fnmatch pattern -> why the key may stay unread by Candle. Anything else unused fails coverage.
    allow_unused: dict[str, str] = field(default_factory=dict)
    # fault name -> (case name, leaf tap that the INJECTED walk must report as the first divergence;
    # the chained walk must fail too, anywhere at or after it)
    faults: dict[str, tuple[str, str]] = field(default_factory=dict)
    # fault name -> (config key, why): the fault acts on a part that exists only when cfg[key] is
    # truthy (w2v-bert's stats: the official model.safetensors holds none); elsewhere it is named by
    # the test the reason gives
    fault_needs: dict[str, tuple[str, str]] = field(default_factory=dict)
    # the supported config space: one row per (official argument, non-default value)
    config_space: tuple[ConfigRow, ...] = ()
    # fnmatch pattern over module paths -> why a module holding parameters has no tap of its own
    # (tests/test_models.py::test_every_weight_is_tapped)
    untapped: dict[str, str] = field(default_factory=dict)
    # fnmatch patterns of keys in the same official file that belong to ANOTHER kind (s2mel.pth holds
    # both s2mel kinds); the reference load leaves exactly these out, everything else is strict.
    other_kinds_keys: tuple[str, ...] = ()
    seed: int = 0

    def fault_absent(self, fault: str, cfg: dict) -> str:
        """'' if `fault` can act at `cfg`, else why not (fault_needs)."""
        need = self.fault_needs.get(fault)
        return "" if need is None or cfg.get(need[0]) else f"{self.name} `{fault}`: {need[1]}"
    # key suffix -> filler(key, rng, shape) for synthetic_init, or a function cfg -> such a dict
    init_overrides: Any = field(default_factory=dict)
    # A transform that reads no key (resampling): no manifest or official file, an empty store,
    # and coverage requires that nothing is read.
    weightless: bool = False
