"""The official IndexTTS-2 model directory → the Candle pipeline's config (one dict per model kind).

What infer_v2 reads, and from where:
* `config.yaml` (IndexTTS-2): `gpt` (UnifiedVoice kwargs), `semantic_codec` (RepCodec),
  `s2mel` (mel front end, length regulator, DiT + WaveNet), `emo_num`, the file names, `vocoder`.
* `<vocoder name>/config.json` (BigVGAN's own file: architecture + training keys).
* `w2v-bert-2.0/config.json` (+ `preprocessor_config.json` if present), as `from_pretrained` reads them.
* values infer_v2 hard-codes (CAMPPlus(feat_dim=80, embedding_size=192), hidden_states[17], the
  DiT's timestep width, gpt_layer's widths, 25 CFM steps, …): `HARDCODED` below. A synthetic
  directory (`python -m parity official-dir`) whose tiny models differ there says so in
  `candle_hardcoded.yaml` — not an official file; only the keys of `HARDCODED` are allowed in it.

Every key of those files is mapped, or ignored with the reason next to it, or refused
(`OfficialConfigError` naming the file, the key and the value). Nothing is dropped silently.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any

from . import campplus, mel, resample, semantic_codec, w2v_bert
from . import emotion as E


class OfficialConfigError(ValueError):
    """The directory's config cannot be used; the message names the file, the key and why."""


HARDCODED_FILE = "candle_hardcoded.yaml"

# infer_v2 / the official modules hard-code these (not in config.yaml); the values are the official ones.
HARDCODED: dict[str, dict[str, Any]] = {
    "campplus": dict(campplus.FULL),  # CAMPPlus(feat_dim=80, embedding_size=192), class defaults otherwise
    "gpt": {"cond_input_size": 1024, "emo_dim": 1024, "perceiver_dim_head": 64, "perceiver_depth": 2,
            "pos_enc_max_len": 5000, "cnn_module_kernel": 15},
    "dit": {"rope_base": 10000.0, "norm_eps": 1e-5, "freq_dim": 256, "cfg_rate": 0.7},
    "length_regulator": {"latent_dim": 1280, "latent_hidden": [256, 128], "out_channels": None, "groups": 1},
    "w2v_bert": {"output_layer": 17},
}

# ---- config.yaml -------------------------------------------------------------------------------
TOP_FILES = ("gpt_checkpoint", "w2v_stat", "s2mel_checkpoint", "emo_matrix", "spk_matrix")
TOP_IGNORED = {
    # QwenEmotion (emotion from text, use_emo_text) is not ported: its path is never read.
    "qwen_emo_path": "the QwenEmotion text-emotion model is not supported",
}
# dataset: infer_v2 reads only dataset.bpe_model; the rest describes the training data / IndexTTS 1.x mel.
DATASET_IGNORED = ("sample_rate", "squeeze", "mel")
# UnifiedVoice's constructor defaults (absent config.yaml keys take them, as UnifiedVoice(**cfg.gpt) does).
GPT_DEFAULTS = {"layers": 8, "model_dim": 512, "heads": 8, "max_text_tokens": 120, "max_mel_tokens": 250,
                "max_conditioning_inputs": 1, "mel_length_compression": 1024, "number_text_tokens": 256,
                "start_text_token": 0, "stop_text_token": 1, "number_mel_codes": 8194, "start_mel_token": 8192,
                "stop_mel_token": 8193, "train_solo_embeddings": False, "use_mel_codes_as_input": True,
                "checkpointing": True, "types": 1, "condition_num_latent": 32, "condition_type": "perceiver",
                "condition_module": None, "emo_condition_module": None}
CODEC_KEYS = ("codebook_size", "hidden_size", "codebook_dim", "vocos_dim", "vocos_intermediate_dim", "vocos_num_layers")
# s2mel.length_regulator (config.yaml name → InterpolateRegulator argument)
LR_KEYS = {"channels": "channels", "is_discrete": "is_discrete", "in_channels": "in_channels",
           "content_codebook_size": "codebook_size", "sampling_ratios": "sampling_ratios",
           "vector_quantize": "vector_quantize", "n_codebooks": "n_codebooks", "quantizer_dropout": "quantizer_dropout",
           "f0_condition": "f0_condition", "n_f0_bins": "n_f0_bins"}
DIT_KEYS = ("hidden_dim", "num_heads", "depth", "class_dropout_prob", "block_size", "in_channels", "style_condition",
            "final_layer_type", "content_dim", "content_codebook_size", "content_type", "is_causal",
            "long_skip_connection", "zero_prompt_speech_token", "time_as_token", "style_as_token", "uvit_skip_connection")
# DiT keys that are only accepted at the one value the port implements (the official DiT's other
# branches are not ported); n_f0_bins is read only when f0_condition is on.
DIT_FIXED = {"target": "mel", "f0_condition": False, "content_codebooks": 1, "add_resblock_in_transformer": False}
DIT_IGNORED = ("n_f0_bins",)
WAVENET_KEYS = {"hidden_dim": "wavenet_hidden_dim", "num_layers": "wavenet_num_layers",
                "kernel_size": "wavenet_kernel_size", "dilation_rate": "wavenet_dilation_rate",
                "p_dropout": "wavenet_p_dropout", "style_condition": "wavenet_style_condition"}

# ---- BigVGAN config.json -------------------------------------------------------------------------
BIGVGAN_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                "resblock_kernel_sizes", "resblock_dilation_sizes", "use_tanh_at_final", "use_bias_at_final",
                "activation", "snake_logscale", "num_mels", "hop_size", "sampling_rate", "n_fft", "win_size",
                "fmin", "fmax")
# Training-only keys of nvidia/bigvgan_v2_22khz_80band_256x/config.json: optimiser, data loader,
# discriminators and losses. The generator's forward pass reads none of them.
BIGVGAN_TRAINING = ("num_gpus", "batch_size", "learning_rate", "adam_b1", "adam_b2", "lr_decay", "seed",
                    "use_cqtd_instead_of_mrd", "cqtd_filters", "cqtd_max_filters", "cqtd_filters_scale",
                    "cqtd_dilations", "cqtd_hop_lengths", "cqtd_n_octaves", "cqtd_bins_per_octaves",
                    "mpd_reshapes", "use_spectral_norm", "discriminator_channel_mult", "resolutions",
                    "use_multiscale_melloss", "lambda_melloss", "clip_grad_norm", "segment_size", "num_freq",
                    "fmax_for_loss", "normalize_volume", "num_workers", "dist_config")

# ---- w2v-bert-2.0 config.json --------------------------------------------------------------------
W2V_KEYS = tuple(k for k in w2v_bert.FULL if k not in ("output_layer", "with_stats", "add_adapter",
                                                       "use_intermediate_ffn_before_adapter", "mask_time_prob",
                                                       "mask_feature_prob"))
W2V_FIXED = {"add_adapter": False}  # the adapter stack is not ported (IndexTTS2 reads hidden_states[17])
# Keys that do not change hidden_states[17] at inference: dropouts and spec-augment (off in eval),
# the CTC / x-vector / classifier / codevector heads and the adapter's settings (not part of the
# encoder; add_adapter is false), rotary/absolute position settings (position_embeddings_type is
# relative_key), and PretrainedConfig's generic generation / bookkeeping fields.
W2V_IGNORED = (
    "activation_dropout", "attention_dropout", "conformer_conv_dropout", "feat_proj_dropout", "final_dropout",
    "hidden_dropout", "layerdrop", "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks",
    "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks", "ctc_loss_reduction", "ctc_zero_infinity",
    "vocab_size", "tdnn_dim", "tdnn_kernel", "tdnn_dilation", "xvector_output_dim", "classifier_proj_size",
    "use_weighted_layer_sum", "adapter_act", "adapter_kernel_size", "adapter_stride", "num_adapter_layers",
    "output_hidden_size", "use_intermediate_ffn_before_adapter", "rotary_embedding_base", "max_source_positions",
    "initializer_range", "architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "add_cross_attention", "bad_words_ids", "begin_suppress_tokens",
    "chunk_size_feed_forward", "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty",
    "do_sample", "early_stopping", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty",
    "finetuning_task", "forced_bos_token_id", "forced_eos_token_id", "id2label", "is_decoder", "is_encoder_decoder",
    "label2id", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_beam_groups", "num_beams",
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "prefix", "problem_type",
    "pruned_heads", "remove_invalid_values", "repetition_penalty", "return_dict", "return_dict_in_generate",
    "sep_token_id", "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss",
    "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class", "top_k", "top_p", "torchscript", "typical_p",
    "use_bfloat16", "num_codevectors_per_group", "num_codevector_groups", "contrastive_logits_temperature",
    "num_negatives", "codevector_dim", "proj_codevector_dim", "diversity_loss_weight", "feat_quantizer_dropout")
# preprocessor_config.json (SeamlessM4TFeatureExtractor): the values the port implements.
FEATURES_FIXED = {"feature_size": 80, "num_mel_bins": 80, "sampling_rate": 16000, "stride": 2, "padding_value": 1.0}
FEATURES_IGNORED = ("feature_extractor_type", "processor_class", "return_attention_mask", "padding_side")


def _refuse(where: str, msg: str):
    raise OfficialConfigError(f"{where}: {msg}")


def _check_keys(where: str, d: dict, known) -> None:
    bad = sorted(set(d) - set(known))
    if bad:
        _refuse(where, f"unknown key(s) {bad}; known: {sorted(known)}")


def _fixed(where: str, d: dict, fixed: dict) -> None:
    for k, v in fixed.items():
        if k in d and d[k] != v:
            _refuse(where, f"`{k}: {d[k]!r}` is not supported (only {v!r} is implemented)")


def _read_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except OSError as e:
        _refuse(path, f"cannot be read: {e.strerror or e}")
    except yaml.YAMLError as e:
        _refuse(path, f"not valid YAML: {' '.join(str(e).split())}")
    if not isinstance(d, dict):
        _refuse(path, "top level is not a mapping")
    return d


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except OSError as e:
        _refuse(path, f"cannot be read: {e.strerror or e}")
    except ValueError as e:
        _refuse(path, f"not valid JSON: {e}")
    if not isinstance(d, dict):
        _refuse(path, "top level is not an object")
    return d


def vocoder_dir(cfg: dict) -> str:
    """`vocoder.name` (a Hugging Face repository) → its sub-directory (the repository's name)."""
    return str(cfg["vocoder"]["name"]).rstrip("/").split("/")[-1]


def files(directory: str, cfg: dict) -> dict[str, str]:
    """Every source file the pipeline needs (role → path relative to `directory`)."""
    return {
        "gpt": cfg["gpt_checkpoint"], "s2mel": cfg["s2mel_checkpoint"], "w2v_stat": cfg["w2v_stat"],
        "emo_matrix": cfg["emo_matrix"], "spk_matrix": cfg["spk_matrix"], "bpe_model": cfg["dataset"]["bpe_model"],
        "w2v_bert": "w2v-bert-2.0/model.safetensors", "w2v_bert_config": "w2v-bert-2.0/config.json",
        "semantic_codec": "MaskGCT/semantic_codec/model.safetensors",
        "campplus": "campplus/campplus_cn_common.bin",
        "bigvgan": f"{vocoder_dir(cfg)}/bigvgan_generator.pt", "bigvgan_config": f"{vocoder_dir(cfg)}/config.json",
    }


def read_config_yaml(directory: str) -> dict:
    path = os.path.join(directory, "config.yaml")
    if not os.path.isfile(path):
        _refuse(path, "missing (the official IndexTTS-2 config, read as infer_v2 reads it)")
    cfg = _read_yaml(path)
    known = {"dataset", "gpt", "semantic_codec", "s2mel", "emo_num", "vocoder", "version", *TOP_FILES, *TOP_IGNORED}
    _check_keys(path, cfg, known)
    for k in ("dataset", "gpt", "semantic_codec", "s2mel", "emo_num", "vocoder", *TOP_FILES):
        if k not in cfg:
            _refuse(path, f"`{k}` is missing")
    if "version" in cfg and float(cfg["version"]) != 2.0:
        _refuse(path, f"`version: {cfg['version']}`: only IndexTTS 2.0 is implemented")
    _check_keys(f"{path} dataset", cfg["dataset"], {"bpe_model", *DATASET_IGNORED})
    if "bpe_model" not in cfg["dataset"]:
        _refuse(path, "`dataset.bpe_model` is missing")
    v = cfg["vocoder"]
    _check_keys(f"{path} vocoder", v, {"type", "name"})
    if v.get("type") != "bigvgan":
        _refuse(path, f"`vocoder.type: {v.get('type')!r}`: only bigvgan is implemented")
    return cfg


def pipeline_configs(directory: str) -> dict[str, dict]:
    """Each pipeline kind's config (the reference's form, = reference/pipeline.py CONFIGS at the
    official size for the official files) from the directory's config files."""
    path = os.path.join(directory, "config.yaml")
    cfg = read_config_yaml(directory)
    hard = copy.deepcopy(HARDCODED)
    hpath = os.path.join(directory, HARDCODED_FILE)
    if os.path.isfile(hpath):  # synthetic directories only
        over = _read_yaml(hpath)
        _check_keys(hpath, over, hard)
        for kind, d in over.items():
            _check_keys(f"{hpath} {kind}", d, hard[kind])
            hard[kind].update(d)
    out: dict[str, dict] = {}

    g = cfg["gpt"]
    _check_keys(f"{path} gpt", g, GPT_DEFAULTS)
    out["gpt"] = {**GPT_DEFAULTS, **g, **hard["gpt"]}

    c = cfg["semantic_codec"]
    _check_keys(f"{path} semantic_codec", c, CODEC_KEYS)
    missing = [k for k in CODEC_KEYS if k not in c]
    if missing:
        _refuse(f"{path} semantic_codec", f"missing {missing} (build_semantic_codec reads them all)")
    out["semantic_codec"] = {k: c[k] for k in CODEC_KEYS}

    s = cfg["s2mel"]
    _check_keys(f"{path} s2mel", s, {"preprocess_params", "dit_type", "reg_loss_type", "style_encoder",
                                     "length_regulator", "DiT", "wavenet"})
    pp = s["preprocess_params"]
    _check_keys(f"{path} s2mel.preprocess_params", pp, {"sr", "spect_params"})
    sp = pp["spect_params"]
    _check_keys(f"{path} s2mel.preprocess_params.spect_params", sp,
                {"n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax"})
    # infer_v2's own rule: fmax "None" → None, any other value → 8000
    out["mel_spectrogram"] = {**mel.FULL, "sampling_rate": pp["sr"], "n_fft": sp["n_fft"], "win_size": sp["win_length"],
                              "hop_size": sp["hop_length"], "num_mels": sp["n_mels"], "fmin": float(sp.get("fmin", 0)),
                              "fmax": None if sp.get("fmax", "None") == "None" else 8000}
    lr = s["length_regulator"]
    _check_keys(f"{path} s2mel.length_regulator", lr, LR_KEYS)
    out["length_regulator"] = {"channels": None, "in_channels": None, "sampling_ratios": None, "is_discrete": False,
                               "vector_quantize": False, "codebook_size": 1024, "out_channels": None, "groups": 1,
                               "n_codebooks": 1, "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512,
                               **{LR_KEYS[k]: v for k, v in lr.items()}, **hard["length_regulator"]}
    for k in ("channels", "in_channels", "sampling_ratios"):
        if out["length_regulator"][k] is None:
            _refuse(f"{path} s2mel.length_regulator", f"`{k}` is missing")
    d = s["DiT"]
    _check_keys(f"{path} s2mel.DiT", d, {*DIT_KEYS, *DIT_FIXED, *DIT_IGNORED})
    _fixed(f"{path} s2mel.DiT", d, DIT_FIXED)
    missing = [k for k in DIT_KEYS if k not in d]
    if missing:
        _refuse(f"{path} s2mel.DiT", f"missing {missing}")
    w = s["wavenet"]
    _check_keys(f"{path} s2mel.wavenet", w, WAVENET_KEYS)
    _check_keys(f"{path} s2mel.style_encoder", s["style_encoder"], {"dim"})
    out["dit"] = {**{k: d[k] for k in DIT_KEYS}, "style_dim": s["style_encoder"]["dim"],
                  "dit_type": s.get("dit_type", "DiT"), "reg_loss_type": s.get("reg_loss_type", "l1"),
                  **{WAVENET_KEYS[k]: v for k, v in w.items()}, **hard["dit"]}

    out["emotion"] = {**E.config(hard["campplus"]["embedding_size"], out["gpt"]["model_dim"]),
                      "emo_num": list(cfg["emo_num"])}
    out["campplus"] = hard["campplus"]
    out["resample"] = dict(resample.FULL)  # torchaudio Resample(22050, 16000) with its defaults

    # BigVGAN: its own config.json
    bpath = os.path.join(directory, files(directory, cfg)["bigvgan_config"])
    b = _read_json(bpath)
    _check_keys(bpath, b, {*BIGVGAN_KEYS, *BIGVGAN_TRAINING})
    out["bigvgan"] = {**{k: b[k] for k in BIGVGAN_KEYS if k in b}}
    missing = [k for k in BIGVGAN_KEYS if k not in b and k not in ("use_tanh_at_final", "use_bias_at_final")]
    if missing:
        _refuse(bpath, f"missing {missing}")
    for k in ("use_tanh_at_final", "use_bias_at_final"):  # the official class's defaults when absent
        out["bigvgan"].setdefault(k, True)

    # w2v-bert: config.json (+ preprocessor_config.json)
    wpath = os.path.join(directory, files(directory, cfg)["w2v_bert_config"])
    wc = _read_json(wpath)
    _check_keys(wpath, wc, {*W2V_KEYS, *W2V_FIXED, *W2V_IGNORED})
    _fixed(wpath, wc, W2V_FIXED)
    from transformers import Wav2Vec2BertConfig  # absent keys take transformers' defaults, as from_pretrained

    dflt = Wav2Vec2BertConfig().to_dict()
    out["w2v_bert"] = {**w2v_bert.FULL, **{k: wc.get(k, dflt[k]) for k in W2V_KEYS}, **hard["w2v_bert"],
                       "with_stats": True}
    fpath = os.path.join(os.path.dirname(wpath), "preprocessor_config.json")
    if os.path.isfile(fpath):
        fc = _read_json(fpath)
        _check_keys(fpath, fc, {*FEATURES_FIXED, *FEATURES_IGNORED})
        _fixed(fpath, fc, FEATURES_FIXED)
    _consistent(path, out)
    return out


def _consistent(path: str, c: dict) -> None:
    """The widths infer_v2 wires together must agree (a mismatch would fail deep inside a model)."""
    checks = [("mel n_mels", c["mel_spectrogram"]["num_mels"], "DiT in_channels", c["dit"]["in_channels"]),
              ("mel n_mels", c["mel_spectrogram"]["num_mels"], "BigVGAN num_mels", c["bigvgan"]["num_mels"]),
              ("s2mel style_encoder.dim", c["dit"]["style_dim"], "CAMPPlus embedding_size", c["campplus"]["embedding_size"]),
              ("s2mel sr", c["mel_spectrogram"]["sampling_rate"], "BigVGAN sampling_rate", c["bigvgan"]["sampling_rate"])]
    for a, va, b, vb in checks:
        if va != vb:
            _refuse(path, f"{a} = {va} but {b} = {vb}; infer_v2 needs them equal")


def rust_config(configs: dict[str, dict], bpe_model: str | None = None) -> dict:
    """The Candle `PipelineConfig` JSON (what `Pipeline::load` parses) from `pipeline_configs`."""
    out = {}
    for k, c in configs.items():
        if k == "w2v_bert":
            d = json.loads(w2v_bert.config_json(c))
            d["stats"] = "w2v_bert." + d["stats"]  # read from the store's root: the full key
        elif k == "semantic_codec":
            d = {**semantic_codec.DEFAULTS, **c}
        else:
            d = copy.deepcopy(c)
        out[k] = d
    out["bpe_model"] = bpe_model
    return out


# one safetensors for the Rust pipeline: each model's keys under its prefix
PREFIX = {"w2v_bert": "w2v_bert.", "semantic_codec": "semantic_codec.", "campplus": "campplus.", "gpt": "gpt.",
          "s2mel": "s2mel.", "bigvgan": "bigvgan."}
