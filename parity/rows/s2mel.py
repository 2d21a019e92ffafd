"""The registry row(s) of `reference/s2mel.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

import json  # noqa: E402
import numpy as np  # noqa: E402
from parity.spec import Case, ConfigRow, ModelSpec
from reference.s2mel import (
    FULL_DIT,
    FULL_LR,
    TINY_DIT,
    TINY_LR,
    _OTHER_KIND,
    build_cfm,
    build_regulator,
    cfm_inputs,
    estimator_inputs,
    latent_inputs,
    regulator_inputs,
    run_cfm,
    run_estimator,
    run_latent,
    run_regulator,
    save_cfm,
    save_regulator,
)

DIT_SPEC = ModelSpec(
    name="dit",
    manifest="s2mel.json",
    configs={"tiny": TINY_DIT, "full": FULL_DIT},
    build_reference=build_cfm,
    official_file="s2mel.pth",
    save_official=save_cfm,
    config_json=json.dumps,
    cases=(
        Case("dit_estimator", "estimator", estimator_inputs, run_estimator),
        Case("dit_cfm", "cfm", cfm_inputs, run_cfm),
    ),
    prefix="net.cfm",
    manifest_prefix="net.cfm",
    other_kinds_keys=("net.length_regulator.*", "net.gpt_layer.*"),
    allow_unused={
        "net.cfm.estimator.x_embedder.*": "DiT.forward feeds x through cond_x_merge_linear; x_embedder is never called",
        "net.cfm.estimator.cond_embedder.weight": "discrete-content embedding; the forward always uses cond_projection",
        "net.cfm.estimator.content_mask_embedder.weight": "training-only content dropout embedding",
        "net.length_regulator.*": _OTHER_KIND,
        "net.gpt_layer.*": _OTHER_KIND,
    },
    faults={
        "adaln_swapped": ("dit_estimator", "estimator.transformer.layers.0.attention_norm"),
        "final_no_plus_one": ("dit_estimator", "estimator.final_layer.modulate"),
        # q is injected at its RoPE leaf; the swapped k/v first reach the attention core
        "wqkv_split_order": ("dit_estimator", "estimator.transformer.layers.0.attention.scaled_dot_product_attention"),
        "rope_halves": ("dit_estimator", "estimator.transformer.layers.0.attention.apply_rotary_emb"),
        # tiny keeps the official depth 13 so the U-ViT pairing (0-5 -> 12-7) and this tap hold for every size
        "uvit_skip_shifted": ("dit_estimator", "estimator.transformer.layers.7.skip_in_linear"),
        "wavenet_zero_pad": ("dit_estimator", "estimator.wavenet.in_layers.0"),
        "skip_weight_norm": ("dit_estimator", "estimator.wavenet.cond_layer"),
        "final_ln_eps": ("dit_estimator", "estimator.final_layer.norm_final"),
        "rope_base": ("dit_estimator", "estimator.transformer.layers.0.attention.apply_rotary_emb"),
        "softmax_scale_dim": ("dit_estimator", "estimator.transformer.layers.0.attention.scaled_dot_product_attention"),
        "ffn_swish_beta": ("dit_estimator", "estimator.transformer.layers.0.feed_forward.silu"),
    },
    config_space=(
        ConfigRow("long_skip_connection", False, {"long_skip_connection": False}, "parity"),
        ConfigRow("is_causal", True, {"is_causal": True}, "parity"),
        ConfigRow("zero_prompt_speech_token", True, {"zero_prompt_speech_token": True}, "parity", case="dit_cfm"),
        ConfigRow("uvit_skip_connection", False, {"uvit_skip_connection": False}, "parity"),
        ConfigRow("style_condition", False, {"style_condition": False, "wavenet_style_condition": False}, "parity"),
        # the official DiT ignores block_size (16384 positions); config.yaml's 8192 is the default here
        ConfigRow("block_size", 16384, {"block_size": 16384}, "parity"),
        ConfigRow("content_type", "continuous", {"content_type": "continuous"}, "parity"),
        ConfigRow("content_codebook_size", 16, {"content_codebook_size": 16}, "parity"),
        ConfigRow("class_dropout_prob", 0.0, {"class_dropout_prob": 0.0}, "parity"),
        ConfigRow("reg_loss_type", "l2", {"reg_loss_type": "l2"}, "parity"),
        ConfigRow("wavenet_dilation_rate", 2, {"wavenet_dilation_rate": 2}, "parity"),
        ConfigRow("wavenet_kernel_size", 3, {"wavenet_kernel_size": 3}, "parity"),
        ConfigRow("wavenet_p_dropout", 0.0, {"wavenet_p_dropout": 0.0}, "parity"),
        ConfigRow("time_as_token", True, {"time_as_token": True}, "refused"),
        ConfigRow("style_as_token", True, {"style_as_token": True}, "refused"),
        ConfigRow("final_layer_type", "mlp", {"final_layer_type": "mlp"}, "refused"),
        ConfigRow("wavenet_style_condition", False, {"wavenet_style_condition": False}, "refused"),
        ConfigRow("dit_type", "UNet", {"dit_type": "UNet"}, "refused", match="unknown variant"),
    ),
    untapped={
        "estimator.wavenet.*.conv.conv": "the weight-normed Conv1d inside encodec's SConv1d: tapped as the SConv1d "
                                         "(`…in_layers.N`, `…res_skip_layers.N`, `…cond_layer`) = reflect pad1d + this conv",
        "estimator.transformer.layers.[0-6].skip_in_linear": "stored for every layer; only the U-ViT receivers "
                                                             "(layers past the middle) call it",
        "estimator.x_embedder": "never called by DiT.forward (allow_unused)",
        "estimator.cond_embedder": "never called by DiT.forward (allow_unused)",
        "estimator.content_mask_embedder": "never called by DiT.forward (allow_unused)",
    },
)


LENGTH_REGULATOR_SPEC = ModelSpec(
    name="length_regulator",
    manifest="s2mel.json",
    configs={"tiny": TINY_LR, "full": FULL_LR},
    build_reference=build_regulator,
    official_file="s2mel.pth",
    save_official=save_regulator,
    config_json=json.dumps,
    cases=(
        Case("length_regulator_upsample", "forward", regulator_inputs, run_regulator),
        Case("length_regulator_batch", "forward", lambda cfg, seed: regulator_inputs(cfg, seed, 9, 17, 2), run_regulator),
        Case("length_regulator_latent_proj", "latent_proj", latent_inputs, run_latent),
        # one row masked inside the output (with sampling_ratios=[]: inside the input length too)
        Case("length_regulator_masked", "forward",
             lambda cfg, seed: {**regulator_inputs(cfg, seed, 9, 17, 2), "ylens": np.array([17, 5], np.int64)}, run_regulator),
    ),
    prefix="net",
    manifest_prefix="net",
    other_kinds_keys=("net.cfm.*",),
    allow_unused={
        "net.length_regulator.embedding.weight": "discrete-token embedding; IndexTTS2 feeds continuous features (content_in_proj)",
        "net.length_regulator.mask_token": "training-only token mask",
        "net.length_regulator.f0_embedding.weight": "f0_condition: IndexTTS2 never passes f0, so only f0_mask is added",
        "net.cfm.*": _OTHER_KIND,
    },
    faults={
        "interp_round": ("length_regulator_upsample", "length_regulator.interpolate"),
        "groupnorm_per_channel": ("length_regulator_upsample", "length_regulator.model.1"),
        "nearest_exact": ("length_regulator_upsample", "length_regulator.interpolate"),
        "groupnorm_eps": ("length_regulator_upsample", "length_regulator.model.1"),
        "mish_as_swish": ("length_regulator_upsample", "length_regulator.model.2"),
    },
    config_space=(
        # no resampling: the output keeps the input's 9 frames although the target is 17 (official)
        ConfigRow("sampling_ratios", [], {"sampling_ratios": []}, "parity", case="length_regulator_masked"),
        ConfigRow("sampling_ratios", [1, 1], {"sampling_ratios": [1, 1]}, "parity"),
        ConfigRow("sampling_ratios", [2, 3, 2, 3], {"sampling_ratios": [2, 3, 2, 3]}, "parity"),  # values never read
        ConfigRow("f0_condition", True, {"f0_condition": True}, "parity"),
        ConfigRow("n_f0_bins", 4, {"f0_condition": True, "n_f0_bins": 4}, "parity"),
        ConfigRow("groups", 4, {"groups": 4}, "parity"),
        ConfigRow("out_channels", 8, {"out_channels": 8}, "parity"),
        ConfigRow("codebook_size", 16, {"codebook_size": 16}, "parity"),
        ConfigRow("quantizer_dropout", 0.5, {"quantizer_dropout": 0.5}, "parity"),
        ConfigRow("is_discrete", True, {"is_discrete": True}, "refused"),
        ConfigRow("vector_quantize", True, {"vector_quantize": True}, "refused"),
        ConfigRow("n_codebooks", 2, {"n_codebooks": 2}, "refused"),
    ),
    untapped={
        "length_regulator.embedding": "discrete-token embedding; never called with continuous input (allow_unused)",
        "length_regulator.f0_embedding": "f0 embedding; IndexTTS2 never passes f0 (only f0_mask is added)",
    },
)
