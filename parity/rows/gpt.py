"""The registry row(s) of `reference/gpt.py` (the harness side: cases, config space, SPEC).

`reference/` stands alone; this module imports it, never the reverse."""
from __future__ import annotations

from parity.spec import Case, ConfigRow, ModelSpec
from reference.gpt import (
    FULL,
    NO_INJECT,
    TINY,
    _alpha,
    _cm,
    _conformer,
    _perceiver,
    build_reference,
    config_json,
    emo_inputs,
    emo_perceiver_inputs,
    emovec_inputs,
    latent_inputs,
    merge_inputs,
    save_official,
    spk_inputs,
    spk_perceiver_inputs,
    step_inputs,
)

CASES = tuple(Case(name, method, make, run, no_inject=NO_INJECT) for name, method, make, run in (
    ("gpt_spk_conformer", "spk_conformer", spk_inputs, _conformer(False)),
    ("gpt_emo_conformer", "emo_conformer", emo_inputs, _conformer(True)),
    ("gpt_spk_perceiver", "spk_perceiver", spk_perceiver_inputs, _perceiver(False)),
    ("gpt_emo_perceiver", "emo_perceiver", emo_perceiver_inputs, _perceiver(True)),
    ("gpt_spk_cond", "spk_cond", spk_inputs, lambda m, i, t: {"latent": m.get_conditioning(i["x"], i["lens"], t)}),
    ("gpt_emo_cond", "emo_cond", emo_inputs, lambda m, i, t: {"emo": m.get_emo_conditioning(i["x"], i["lens"], t)}),
    ("gpt_emovec", "emovec", emovec_inputs, lambda m, i, t: {"emovec": m.get_emovec(i["x"], i["lens"], t)}),
    ("gpt_merge_emovec", "merge_emovec", merge_inputs,
         lambda m, i, t: {"emovec": m.merge_emovec(i["spk_x"], i["emo_x"], i["spk_lens"], i["emo_lens"], _alpha(i), t)}),
    ("gpt_forward_latent", "forward_latent", latent_inputs,
         lambda m, i, t: {"latent": m.forward_latent(i["spk_latent"], i["text"], i["text_lens"], i["codes"], i["code_lens"], i["emovec"], t)}),
    ("gpt_step_logits", "step_logits_full", step_inputs,
         lambda m, i, t: {"logits": m.step_logits(i["spk_latent"], i["emovec"], i["text"], i["codes"], t)}),
))


def _p(arg, value, overrides, case="gpt_forward_latent"):
    return ConfigRow(arg, value, overrides, "parity", case)


def _r(arg, value, overrides):
    return ConfigRow(arg, value, overrides, "refused")


# Every UnifiedVoice / condition_module argument at a non-default value (tests/test_config_space.py).
CONFIG_SPACE = (
    _p("layers", 2, {"layers": 2}),
    _p("heads", 2, {"heads": 2}),
    _p("model_dim", 40, {"model_dim": 40}, "gpt_step_logits"),
    _p("max_text_tokens", 12, {"max_text_tokens": 12}),
    _p("max_mel_tokens", 12, {"max_mel_tokens": 12}),
    _p("max_conditioning_inputs", 2, {"max_conditioning_inputs": 2}),
    _p("mel_length_compression", 256, {"mel_length_compression": 256}),
    _p("number_text_tokens", 40, {"number_text_tokens": 40}),
    _p("types", 2, {"types": 2}),
    _p("number_mel_codes", 30, {"number_mel_codes": 30, "start_mel_token": 28, "stop_mel_token": 29}),
    _p("start_mel_token", 20, {"start_mel_token": 20}, "gpt_step_logits"),
    _p("stop_mel_token", 23, {"stop_mel_token": 23}),
    _p("start_text_token", 3, {"start_text_token": 3}, "gpt_step_logits"),
    _p("stop_text_token", 4, {"stop_text_token": 4}, "gpt_step_logits"),
    _p("train_solo_embeddings", True, {"train_solo_embeddings": True}),
    _p("checkpointing", False, {"checkpointing": False}),
    _p("condition_num_latent", 3, {"condition_num_latent": 3}, "gpt_spk_cond"),
    _p("condition_module.output_size", 16, _cm("condition_module", output_size=16), "gpt_spk_cond"),
    _p("condition_module.linear_units", 28, _cm("condition_module", linear_units=28), "gpt_spk_cond"),
    _p("condition_module.attention_heads", 4, _cm("condition_module", attention_heads=4), "gpt_spk_cond"),
    _p("condition_module.num_blocks", 1, _cm("condition_module", num_blocks=1), "gpt_spk_cond"),
    _p("condition_module.perceiver_mult", 3, _cm("condition_module", perceiver_mult=3), "gpt_spk_cond"),
    _p("condition_module.dropout_rate", 0.1, _cm("condition_module", dropout_rate=0.1), "gpt_spk_cond"),
    # output_size = the emotion perceiver's width: proj_context is nn.Identity (no keys)
    _p("emo_condition_module.output_size", 40, _cm("emo_condition_module", output_size=40, attention_heads=4), "gpt_emo_cond"),
    _p("emo_condition_module.linear_units", 20, _cm("emo_condition_module", linear_units=20), "gpt_emo_cond"),
    _p("emo_condition_module.num_blocks", 3, _cm("emo_condition_module", num_blocks=3), "gpt_emo_cond"),
    _p("emo_condition_module.perceiver_mult", 1, _cm("emo_condition_module", perceiver_mult=1), "gpt_emo_cond"),
    # fixed in the official constructors; fields here so the fixtures can shrink them
    _p("perceiver_dim_head", 12, {"perceiver_dim_head": 12}, "gpt_spk_cond"),
    _p("perceiver_depth", 1, {"perceiver_depth": 1}, "gpt_emo_cond"),
    _p("cnn_module_kernel", 7, {"cnn_module_kernel": 7}, "gpt_spk_conformer"),
    _p("pos_enc_max_len", 40, {"pos_enc_max_len": 40}, "gpt_spk_conformer"),
    _p("cond_input_size", 17, {"cond_input_size": 17}, "gpt_spk_cond"),
    _p("emo_dim", 32, {"emo_dim": 32}, "gpt_emovec"),
    _r("condition_type", "perceiver", {"condition_type": "perceiver"}),
    _r("condition_type", "gst", {"condition_type": "gst"}),
    _r("condition_type", "conformer_encoder", {"condition_type": "conformer_encoder"}),
    _r("use_mel_codes_as_input", False, {"use_mel_codes_as_input": False}),
    _r("condition_module.input_layer", "conv2d", _cm("condition_module", input_layer="conv2d")),
    _r("emo_condition_module.input_layer", "linear", _cm("emo_condition_module", input_layer="linear")),
    _r("condition_module.pos_enc_layer_type", "abs_pos", _cm("condition_module", pos_enc_layer_type="abs_pos")),
    _r("condition_module.normalize_before", False, _cm("condition_module", normalize_before=False)),
    _r("condition_module.concat_after", True, _cm("condition_module", concat_after=True)),
    _r("condition_module.macaron_style", True, _cm("condition_module", macaron_style=True)),
    _r("emo_condition_module.use_cnn_module", False, _cm("emo_condition_module", use_cnn_module=False)),
)


SPEC = ModelSpec(
    name="gpt",
    manifest="gpt.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build_reference,
    official_file="gpt.pth",
    save_official=save_official,
    config_json=config_json,
    cases=CASES,
    allow_unused={
        # UnifiedVoice builds text_head but inference and the latent path never call it
        # (forward() returns latents; decoding uses mel_head only).
        "text_head.*": "text logits head: stored, never used by v2 inference",
        "*_solo_embedding": "train_solo_embeddings=True parameters: stored, never used by forward or inference",
    },
    # fault -> (case, the leaf tap the injected walk must name first)
    faults={
        "c_attn_untransposed": ("gpt_forward_latent", "gpt.h.0.attn.c_attn"),
        "to_kv_swapped": ("gpt_spk_perceiver", "perceiver_encoder.layers.0.0.to_kv"),
        "final_norm_skipped": ("gpt_forward_latent", "final_norm"),
        "pos_bias_v_dropped": ("gpt_spk_conformer", "conditioning_encoder.encoders.0.self_attn.forward_attention"),
        "geglu_swapped": ("gpt_emo_perceiver", "emo_perceiver_encoder.layers.0.1.1"),
        "after_norm_skipped": ("gpt_spk_conformer", "conditioning_encoder.after_norm"),
        "gelu_erf": ("gpt_step_logits", "gpt.h.0.mlp.act"),
        "gpt2_ln_eps": ("gpt_forward_latent", "gpt.h.0.ln_1"),
        "conv_norm_eps": ("gpt_emo_conformer", "emo_conditioning_encoder.encoders.0.conv_module.norm"),
        "conformer_scale_d_model": ("gpt_spk_conformer", "conditioning_encoder.encoders.0.self_attn.forward_attention"),
        "perceiver_scale_dim": ("gpt_emo_perceiver", "emo_perceiver_encoder.layers.0.0.attend"),
        "ff_swish_beta": ("gpt_spk_conformer", "conditioning_encoder.encoders.0.feed_forward.activation"),
    },
    config_space=CONFIG_SPACE,
    untapped={
        "text_head": "stored in gpt.pth but never called by v2 inference (allow_unused)",
    },
)
