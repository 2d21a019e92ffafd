"""The registry row(s) of `reference/semantic_codec.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

from parity.spec import Case, ConfigRow, ModelSpec
from reference.semantic_codec import (
    FULL,
    TINY,
    _codebook,
    build,
    config_json,
    make_codes,
    make_features,
    run_quantize,
    run_vq2emb,
    save_official,
)

SPEC = ModelSpec(
    name="semantic_codec",
    manifest="semantic_codec.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build,
    official_file="MaskGCT/semantic_codec/model.safetensors",
    save_official=save_official,
    config_json=config_json,
    cases=(
        # a later quantizer's in_project input is the residual left by the earlier ones: not injected,
        # so the subtraction stays visible there
        Case("semantic_codec_quantize", "quantize", make_features, run_quantize,
             tuple(f"quantizer.quantizers.{i}.in_project" for i in range(1, 16))),
        Case("semantic_codec_vq2emb", "vq2emb", make_codes, run_vq2emb),
    ),
    allow_unused={"decoder.*": "RepCodec decoder: stored in the official file, never called by IndexTTS2 (quantize/vq2emb only)",
                  "up.*": "downsample_scale > 1: the up conv belongs to the decoder path (RepCodec.forward), never quantize"},
    untapped={"decoder.*": "RepCodec decoder: never called by IndexTTS2 (quantize/vq2emb only), so never run or read",
              "up": "downsample_scale > 1: the up conv belongs to the decoder path (RepCodec.forward), never quantize"},
    faults={
        "codebook_unnormalised": ("semantic_codec_quantize", "quantizer.quantizers.0.codebook"),
        # the first LayerNorm in forward order (every Vocos LayerNorm has the fault)
        "layer_norm_eps": ("semantic_codec_quantize", "encoder.0.norm"),
        "gelu_tanh": ("semantic_codec_quantize", "encoder.0.convnext.0.act"),
    },
    init_overrides={"codebook.weight": _codebook},
    config_space=(
        ConfigRow("num_quantizers", 2, {"num_quantizers": 2}, "parity"),
        ConfigRow("num_quantizers", 2, {"num_quantizers": 2}, "parity", case="semantic_codec_vq2emb"),
        ConfigRow("downsample_scale", 2, {"downsample_scale": 2}, "parity"),
        ConfigRow("downsample_scale", 4, {"downsample_scale": 4}, "parity"),  # official: stride 2 for any value > 1
        ConfigRow("downsample_scale", None, {"downsample_scale": None}, "parity"),
        ConfigRow("vocos_num_layers", 1, {"vocos_num_layers": 1}, "parity"),
        ConfigRow("codebook_size", 8192, {"codebook_size": 8192}, "parity"),
        ConfigRow("codebook_dim", 32, {"codebook_dim": 32}, "refused", match="codebook_dim"),
    ),
)
