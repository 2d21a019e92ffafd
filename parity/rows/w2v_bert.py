"""The registry row(s) of `reference/w2v_bert.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

from parity.spec import Case, ConfigRow, ModelSpec
from reference.w2v_bert import (
    FEATURES,
    FULL,
    STATS,
    TINY,
    _NO_INJECT,
    _clip_audio,
    _clip_features,
    build,
    config_json,
    make_random_features,
    run_embed_audio,
    run_features,
    run_masked,
    run_unmasked,
    save_official,
)

SPEC = ModelSpec(
    name="w2v_bert",
    manifest="w2v_bert.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build,
    official_file="w2v-bert-2.0/model.safetensors",
    save_official=save_official,
    config_json=config_json,
    cases=(
        # speech: 585 fbank frames -> padded to 586, last stacked frame masked (IndexTTS2 passes the mask).
        Case("w2v_bert_speech", "forward_masked", _clip_features("speech_16k.wav"), run_masked, _NO_INJECT),
        Case("w2v_bert_unmasked", "forward", make_random_features, run_unmasked, _NO_INJECT),
        Case("w2v_bert_features_speech", "features", _clip_audio("speech_16k.wav"), run_features),
        Case("w2v_bert_features_short", "features", _clip_audio("short_16k.wav"), run_features),
        Case("w2v_bert_features_silence", "features", _clip_audio("silence_16k.wav"), run_features),
        Case("w2v_bert_features_odd", "features", _clip_audio("odd_16k.wav"), run_features),
        Case("w2v_bert_embed_odd", "embed_audio", _clip_audio("odd_16k.wav"), run_embed_audio, _NO_INJECT),
    ),
    allow_unused={
        "masked_spec_embed": "SpecAugment mask vector, used only in training",
        "encoder.layers.1[7-9].*": "layers after the hidden_states[17] read-out never run (IndexTTS2 reads layer 16's output)",
        "encoder.layers.2[0-3].*": "layers after the hidden_states[17] read-out never run (IndexTTS2 reads layer 16's output)",
    },
    config_space=(
        # transformers pads to an even count, drops n % stride frames, masks at index % stride == 1
        ConfigRow("stride", 3, {"features": {**FEATURES, "stride": 3}, "feature_projection_input_dim": 240}, "parity",
                  case="w2v_bert_features_odd"),
        ConfigRow("stride", 3, {"features": {**FEATURES, "stride": 3}, "feature_projection_input_dim": 240}, "parity",
                  case="w2v_bert_embed_odd"),
        ConfigRow("stride", 1, {"features": {**FEATURES, "stride": 1}, "feature_projection_input_dim": 80}, "refused"),
        ConfigRow("padding_value", 0.0, {"features": {**FEATURES, "padding_value": 0.0}}, "parity", case="w2v_bert_features_odd"),
        ConfigRow("num_mel_bins", 40, {"features": {**FEATURES, "num_mel_bins": 40, "feature_size": 40},
                                       "feature_projection_input_dim": 80}, "parity", case="w2v_bert_features_odd"),
        ConfigRow("layer_norm_eps", 1e-6, {"layer_norm_eps": 1e-6}, "parity"),
        ConfigRow("conv_depthwise_kernel_size", 3, {"conv_depthwise_kernel_size": 3}, "parity"),
        ConfigRow("output_layer", 5, {"output_layer": 5}, "parity"),
        ConfigRow("hidden_act", "gelu", {"hidden_act": "gelu"}, "refused"),
        ConfigRow("position_embeddings_type", "rotary", {"position_embeddings_type": "rotary"}, "refused"),
        ConfigRow("position_embeddings_type", "relative", {"position_embeddings_type": "relative"}, "refused"),
    ),
    faults={
        "hidden_off_by_one": ("w2v_bert_speech", "encoder"),  # the read-out hidden_states[17]
        "var_as_std": ("w2v_bert_speech", STATS),
        "symmetric_dw_padding": ("w2v_bert_speech", "encoder.layers.0.conv_module.depthwise_conv"),
        # every LayerNorm has the fault; the first in forward order names it
        "layer_norm_eps": ("w2v_bert_speech", "feature_projection.layer_norm"),
        "softmax_scale": ("w2v_bert_speech", "encoder.layers.0.self_attn.attention"),
        "swish_beta": ("w2v_bert_speech", "encoder.layers.0.conv_module.activation"),
    },
    fault_needs={
        "var_as_std": ("with_stats", "the stats are not in the official model.safetensors (with_stats False at "
                       "this size); the fault is named at the pipeline's `semantic_emb` "
                       "(tests/test_pipeline.py::test_pipeline_fault_named, wav2vec2bert_stats.pt merged in)"),
    },
    untapped={
        "encoder.layers.*.self_attn.distance_embedding": "the relative-key table is read inside the attention core "
        "tap `<layer>.self_attn.attention` (q·E[clamp(r − l)]); a tap of the gathered [T, T, head] table would cost "
        "T²·head per layer",
        "masked_spec_embed": "SpecAugment mask vector, used only in training",
        "encoder.layers.1[7-9].*": "layers after the hidden_states[17] read-out never run",
        "encoder.layers.2[0-3].*": "layers after the hidden_states[17] read-out never run",
    },
)
