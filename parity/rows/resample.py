"""The registry row(s) of `reference/resample.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

import numpy as np
from parity.spec import Case, ConfigRow, ModelSpec
from reference.resample import (
    FULL,
    build,
    config_json,
    save_official,
    signal,
)

def _rates_case(name: str, orig: int, new: int, n: int, channels: int = 1) -> Case:
    def make(cfg, seed):
        return {"wav": signal(n, orig, seed, channels), "orig_freq": np.array(orig, np.int64),
                "new_freq": np.array(new, np.int64)}

    return Case(name, "forward_rates", make,
                lambda m, i, taps: {"wav": m(i["wav"], int(i["orig_freq"]), int(i["new_freq"]), taps)})


def _front_case(name: str, n: int) -> Case:
    def make(cfg, seed):
        return {"wav": signal(n, cfg["orig_freq"], seed)}

    def run(m, i, taps):
        a22, a16 = m.front(i["wav"], taps)
        return {"audio_22k": a22, "audio_16k": a16}

    # The resamplers take the cut's output uninjected (the cut is exact either way): a wrong cut
    # then fails at `cut` instead of breaking the injection of a differently shaped clip.
    return Case(name, "front", make, run, no_inject=("resample_22k", "resample_16k"))


SPEC = ModelSpec(
    name="resample",
    manifest="",
    configs={"tiny": FULL, "full": FULL},
    build_reference=build,
    official_file="",
    save_official=save_official,
    config_json=config_json,
    cases=(
        Case("resample-22050to16000", "forward", lambda cfg, seed: {"wav": signal(3 * cfg["orig_freq"], cfg["orig_freq"], seed)},
             lambda m, i, taps: {"wav": m(i["wav"], taps=taps)}),
        _rates_case("resample-identity-22050", 22050, 22050, 5000),
        _rates_case("resample-16000to22050", 16000, 22050, 16001, channels=2),
        _rates_case("resample-44100to16000", 44100, 16000, 44100),
        _rates_case("resample-24000to16000", 24000, 16000, 7),
        _rates_case("resample-22050to16000-short", 22050, 16000, 1),
        _front_case("resample-front-16s", 16 * 22050 + 123),
        _front_case("resample-front-short", 5000),
    ),
    faults={
        "rectangular_window": ("resample-22050to16000", "kernel"),
        "no_cut": ("resample-front-16s", "cut"),
    },
    config_space=(
        ConfigRow("lowpass_filter_width", 4, {"lowpass_filter_width": 4}, "parity"),
        ConfigRow("lowpass_filter_width", 0, {"lowpass_filter_width": 0}, "refused"),
        ConfigRow("rolloff", 0.9, {"rolloff": 0.9}, "parity"),
        ConfigRow("rolloff", 0.0, {"rolloff": 0.0}, "refused"),
        ConfigRow("resampling_method", "sinc_interp_kaiser", {"resampling_method": "sinc_interp_kaiser"}, "parity"),
        ConfigRow("beta", 8.0, {"resampling_method": "sinc_interp_kaiser", "beta": 8.0}, "parity"),
        ConfigRow("resampling_method", "kaiser_window", {"resampling_method": "kaiser_window", "beta": 6.0}, "parity"),
        ConfigRow("resampling_method", "linear", {"resampling_method": "linear"}, "refused"),
    ),
    weightless=True,
)
