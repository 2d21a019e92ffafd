"""A complete synthetic IndexTTS-2 checkpoint directory in the official layout.

What `--checkpoints DIR` expects, made from the synthetic fixtures: the IndexTTS-2 files
(`gpt.pth`, `s2mel.pth` with both s2mel kinds nested under `net`, `wav2vec2bert_stats.pt`,
`feat1.pt`, `feat2.pt`, `bpe.model`) plus one sub-directory
per external model. At "tiny" size it lets CI run the real-file path (discovery, conversion,
caching, the missing-file message) in seconds; `python -m parity official-dir DIR --size full`
writes an official-size directory.
"""
from __future__ import annotations

import os
import shutil

import torch

from reference import official_config as OC
from reference.convert import load_official

from . import pipeline as PP
from .registry import MODELS


def _place(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def _yaml_config(c: dict) -> dict:
    """config.yaml in the official shape (every key the official file has) for pipeline configs `c`."""
    g, lr, d, m = c["gpt"], c["length_regulator"], c["dit"], c["mel_spectrogram"]
    return {
        "dataset": {"bpe_model": "bpe.model", "sample_rate": 24000, "squeeze": False,
                    "mel": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 100,
                            "mel_fmin": 0, "normalize": False}},
        "gpt": {k: g[k] for k in OC.GPT_DEFAULTS if k in g and k not in ("max_conditioning_inputs", "checkpointing",
                                                                         "types", "condition_num_latent")}
               | ({"condition_num_latent": g["condition_num_latent"]} if g["condition_num_latent"] != 32 else {}),
        "semantic_codec": {k: c["semantic_codec"][k] for k in OC.CODEC_KEYS},
        "s2mel": {
            "preprocess_params": {"sr": m["sampling_rate"], "spect_params": {
                "n_fft": m["n_fft"], "win_length": m["win_size"], "hop_length": m["hop_size"], "n_mels": m["num_mels"],
                "fmin": int(m["fmin"]), "fmax": "None" if m["fmax"] is None else m["fmax"]}},
            "dit_type": d["dit_type"], "reg_loss_type": d["reg_loss_type"], "style_encoder": {"dim": d["style_dim"]},
            "length_regulator": {k: lr[v] for k, v in OC.LR_KEYS.items()},
            "DiT": {**{k: d[k] for k in OC.DIT_KEYS}, "target": "mel", "f0_condition": False, "n_f0_bins": 512,
                    "content_codebooks": 1, "add_resblock_in_transformer": False},
            "wavenet": {k: d[v] for k, v in OC.WAVENET_KEYS.items()},
        },
        "gpt_checkpoint": "gpt.pth", "w2v_stat": "wav2vec2bert_stats.pt", "s2mel_checkpoint": "s2mel.pth",
        "emo_matrix": "feat2.pt", "spk_matrix": "feat1.pt", "emo_num": list(c["emotion"]["emo_num"]),
        "qwen_emo_path": "qwen0.6bemo4-merge/",
        "vocoder": {"type": "bigvgan", "name": "nvidia/bigvgan_v2_22khz_80band_256x"}, "version": 2.0,
    }


# the training part of the official BigVGAN config.json (its values), so that reading strips it
_BIGVGAN_TRAINING = {"num_gpus": 0, "batch_size": 32, "learning_rate": 0.0001, "adam_b1": 0.8, "adam_b2": 0.99,
                     "lr_decay": 0.9999996, "seed": 1234, "use_cqtd_instead_of_mrd": True, "cqtd_filters": 128,
                     "mpd_reshapes": [2, 3, 5, 7, 11], "use_spectral_norm": False, "segment_size": 65536,
                     "num_freq": 1025, "fmax_for_loss": None, "normalize_volume": True, "num_workers": 4,
                     "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1}}


def write_configs(directory: str, size: str = "tiny") -> list[str]:
    """The config files of the official layout for the pipeline's configs at `size`: config.yaml,
    the vocoder's and w2v-bert's config.json, and (only where the tiny models differ from what
    infer_v2 hard-codes) `candle_hardcoded.yaml`."""
    import json

    import yaml
    from transformers import Wav2Vec2BertConfig

    from reference import w2v_bert as W

    c = PP.P.CONFIGS[size]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(_yaml_config(c), f, sort_keys=False)
    b = os.path.join(directory, "bigvgan_v2_22khz_80band_256x", "config.json")
    os.makedirs(os.path.dirname(b), exist_ok=True)
    with open(b, "w", encoding="utf-8") as f:
        json.dump({**c["bigvgan"], **_BIGVGAN_TRAINING}, f, indent=2)
    w = os.path.join(directory, "w2v-bert-2.0")
    os.makedirs(w, exist_ok=True)
    Wav2Vec2BertConfig(**{k: v for k, v in c["w2v_bert"].items() if k not in W._OURS}).to_json_file(
        os.path.join(w, "config.json"))
    with open(os.path.join(w, "preprocessor_config.json"), "w", encoding="utf-8") as f:
        json.dump({**OC.FEATURES_FIXED, "feature_extractor_type": "SeamlessM4TFeatureExtractor",
                   "return_attention_mask": True, "padding_side": "right"}, f, indent=2)
    written = ["config.yaml", "bigvgan_v2_22khz_80band_256x/config.json", "w2v-bert-2.0/config.json",
               "w2v-bert-2.0/preprocessor_config.json"]
    diff = {kind: {k: c[kind][k] for k, v in hard.items() if c[kind][k] != v} for kind, hard in OC.HARDCODED.items()}
    diff = {k: v for k, v in diff.items() if v}
    path = os.path.join(directory, OC.HARDCODED_FILE)
    if diff:
        with open(path, "w", encoding="utf-8") as f:
            f.write("# Not an official file: the tiny synthetic models differ from what infer_v2 hard-codes.\n")
            yaml.safe_dump(diff, f, sort_keys=False)
        written.append(OC.HARDCODED_FILE)
    elif os.path.exists(path):
        os.remove(path)
    return written


def write(directory: str, size: str = "tiny") -> list[str]:
    """Writes every file; returns their paths relative to `directory`."""
    fxs = PP.fixtures(size)
    written: list[str] = write_configs(directory, size)
    s2mel: dict = {}
    for k in PP.MODEL_KINDS:
        spec, path = MODELS[k], fxs[k].official_path
        if spec.official_file == "s2mel.pth":  # both s2mel kinds share the one nested file
            for part, sd in load_official(path)["net"].items():
                s2mel.setdefault(part, sd)
            continue
        _place(path, os.path.join(directory, spec.official_file))
        written.append(spec.official_file)
    torch.save({"net": s2mel}, os.path.join(directory, "s2mel.pth"))
    written.append("s2mel.pth")
    loose = os.path.dirname(fxs["emotion"].official_path)
    for f in PP.LOOSE_FILES:
        src = PP.bpe_model() if f == "bpe.model" else os.path.join(loose, f)
        _place(src, os.path.join(directory, f))
        written.append(f)
    return sorted(written)
