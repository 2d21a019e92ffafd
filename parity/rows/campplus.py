"""The registry row(s) of `reference/campplus.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

from parity.spec import Case, ConfigRow, ModelSpec
from reference.campplus import (
    FULL,
    TINY,
    build,
    config_json,
    make_feat,
    make_wav,
    run_embed,
    run_fbank,
    save_official,
)

SPEC = ModelSpec(
    name="campplus",
    manifest="campplus.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build,
    official_file="campplus/campplus_cn_common.bin",
    save_official=save_official,
    config_json=config_json,
    cases=(
        Case("campplus_embed", "forward", make_feat, run_embed),
        Case("campplus_fbank", "fbank", make_wav, run_fbank),
    ),
    allow_unused={"*.num_batches_tracked": "BatchNorm step counter: only used in training (momentum=None); eval uses running stats"},
    # PReLU slopes as a trained net has them (≈ 0.25, torch's init), not the 1 ± 0.1 of a norm gain
    init_overrides={"prelu.weight": lambda key, rng, shape: 0.25 + 0.05 * rng.standard_normal(shape)},
    faults={
        "bn_running_stats_ignored": ("campplus_embed", "head.bn1"),
        "bn_eps_dropped": ("campplus_embed", "head.bn1"),
        "fbank_hanning_window": ("campplus_fbank", "fbank.window_function"),
        "fbank_no_preemphasis": ("campplus_fbank", "fbank.preemphasis"),
        "fbank_no_remove_dc": ("campplus_fbank", "fbank.remove_dc_offset"),
    },
    config_space=(
        ConfigRow("config_str", "batchnorm-prelu", {"config_str": "batchnorm-prelu"}, "parity"),
        ConfigRow("config_str", "prelu-batchnorm", {"config_str": "prelu-batchnorm"}, "parity"),
        ConfigRow("config_str", "batchnorm-tanh", {"config_str": "batchnorm-tanh"}, "refused"),
        ConfigRow("memory_efficient", False, {"memory_efficient": False}, "parity"),
        ConfigRow("embedding_size", 20, {"embedding_size": 20}, "parity"),
        ConfigRow("growth_rate", 4, {"growth_rate": 4}, "parity"),
        ConfigRow("bn_size", 3, {"bn_size": 3}, "parity"),
        ConfigRow("init_channels", 24, {"init_channels": 24}, "parity"),
        ConfigRow("feat_dim", 24, {"feat_dim": 24}, "parity"),
        ConfigRow("feat_dim", 20, {"feat_dim": 20}, "refused"),
    ),
)
