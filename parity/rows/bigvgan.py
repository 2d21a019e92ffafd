"""The registry row(s) of `reference/bigvgan.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

from parity.spec import Case, ConfigRow, ModelSpec
from reference.bigvgan import (
    FULL,
    TINY,
    _output_gain,
    build,
    config_json,
    make_mel,
    run_forward,
    save_official,
)

SPEC = ModelSpec(
    name="bigvgan",
    manifest="bigvgan.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build,
    official_file="bigvgan_v2_22khz_80band_256x/bigvgan_generator.pt",
    save_official=save_official,
    config_json=config_json,
    cases=(Case("bigvgan_vocode", "forward", make_mel, run_forward),),
    allow_unused={},  # every stored tensor is used: the kaiser filters are read, not recomputed
    # fault -> the leaf the injected walk must name (measured ratios: README / the fault test's output)
    faults={
        "skip_weight_norm": ("bigvgan_vocode", "conv_pre"),
        "ups_kernel_flipped": ("bigvgan_vocode", "ups.0.0"),
        # resblocks 0 and 1 exchanged: same filters, so the first leaf that differs is block 1's SnakeBeta
        "swap_resblocks": ("bigvgan_vocode", "resblocks.0.activations.0.act"),
        "snake_no_exp": ("bigvgan_vocode", "resblocks.0.activations.0.act"),
        "no_final_clamp": ("bigvgan_vocode", "clamp"),
        "upsample_zero_pad": ("bigvgan_vocode", "resblocks.0.activations.0.upsample"),
        "lowpass_zero_pad": ("bigvgan_vocode", "resblocks.0.activations.0.downsample.lowpass"),
        "kaiser_periodic_window": ("bigvgan_vocode", "resblocks.0.activations.0.upsample"),
        "weight_f16": ("bigvgan_vocode", "resblocks.1.convs1.1"),
    },
    # Every key the official `BigVGAN(h, use_cuda_kernel)` reads, at a value other than TINY's
    # (tests/test_config_space.py): implemented on both sides, or refused by Candle naming it.
    config_space=(
        ConfigRow("activation", "snake", {"activation": "snake"}, "parity"),
        ConfigRow("snake_logscale", False, {"snake_logscale": False}, "parity"),
        ConfigRow("use_tanh_at_final", True, {"use_tanh_at_final": True}, "parity"),
        ConfigRow("use_bias_at_final", True, {"use_bias_at_final": True}, "parity"),
        ConfigRow("resblock", "2", {"resblock": "2"}, "parity"),
        # kernel 5 at rate 2: (k − u) odd, so the stage gives 2T + 1 samples (as torch does)
        ConfigRow("upsample_rates", [3, 2], {"upsample_rates": [3, 2], "upsample_kernel_sizes": [7, 5]}, "parity"),
        ConfigRow("upsample_kernel_sizes", [12, 6], {"upsample_kernel_sizes": [12, 6]}, "parity"),
        ConfigRow("upsample_initial_channel", 24, {"upsample_initial_channel": 24}, "parity"),
        ConfigRow("resblock_kernel_sizes", [5, 9], {"resblock_kernel_sizes": [5, 9], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]]}, "parity"),
        ConfigRow("resblock_dilation_sizes", [[2], [1, 4], [3, 1]], {"resblock_dilation_sizes": [[2], [1, 4], [3, 1]]}, "parity"),
        ConfigRow("num_mels", 24, {"num_mels": 24}, "parity"),
        ConfigRow("use_cuda_kernel", True, {"use_cuda_kernel": True}, "refused"),
        ConfigRow("resblock", "3", {"resblock": "3"}, "refused"),
        ConfigRow("activation", "relu", {"activation": "relu"}, "refused"),
        ConfigRow("resblock_kernel_sizes", [3, 4, 11], {"resblock_kernel_sizes": [3, 4, 11]}, "refused"),
        ConfigRow("upsample_kernel_sizes", [8], {"upsample_kernel_sizes": [8]}, "refused"),
        ConfigRow("upsample_kernel_sizes", [2, 4], {"upsample_kernel_sizes": [2, 4]}, "refused"),
    ),
    init_overrides=_output_gain,
)
