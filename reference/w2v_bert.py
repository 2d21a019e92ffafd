"""Wav2Vec-BERT 2.0 reference: transformers' own `Wav2Vec2BertModel` + `SeamlessM4TFeatureExtractor`.

No hand-written copy of the model: the reference *is* the transformers class (pinned 4.52.1, the
version the official package pins). This file only holds the configs, the IndexTTS2 read-out
(`hidden_states[output_layer]`, official 17 = output of `encoder.layers[16]`) and the stats
normalisation `(h − mean) / √var` (`wav2vec2bert_stats.pt` stores `var`, not `std`).

Stats: when present they live in the same safetensors as the model, at the root under
`semantic_stats.{mean,var}` (copy them there from `wav2vec2bert_stats.pt`). The official
`model.safetensors` has none, so the full-size (manifest) config carries no stats submodule; the
tiny fixture does, which tests the normalisation and its fault.
"""
from __future__ import annotations

import json
import os
import wave

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

STATS = "semantic_stats"

# Published w2v-bert-2.0 architecture (= transformers 4.52.1 Wav2Vec2BertConfig defaults).
FULL = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feature_projection_input_dim": 160,
    "hidden_act": "swish",
    "position_embeddings_type": "relative_key",
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
    "conv_depthwise_kernel_size": 31,
    "layer_norm_eps": 1e-5,
    "add_adapter": False,
    "use_intermediate_ffn_before_adapter": False,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "output_layer": 17,  # hidden_states index IndexTTS2 reads
    # The official model.safetensors holds no stats (they come from wav2vec2bert_stats.pt), so the
    # manifest-shaped full-size module carries none; real-file runs compare hidden_states[17].
    "with_stats": False,
}

# Tiny: narrow (32 wide) but with the official read-out index 17 and one unused layer after it,
# so the allow-list of unread layers (17+) is the same exact pattern at both sizes and tap names
# match the official ones. Small relative window: a few dozen frames hit both clamps.
TINY = {
    **FULL,
    "hidden_size": 32,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "left_max_position_embeddings": 6,
    "right_max_position_embeddings": 3,
    "conv_depthwise_kernel_size": 5,
    "output_layer": 17,
    "with_stats": True,
}

# SeamlessM4TFeatureExtractor as published with facebook/w2v-bert-2.0 (padding_value 1, stride 2).
FEATURES = {"feature_size": 80, "num_mel_bins": 80, "sampling_rate": 16000, "stride": 2, "padding_value": 1.0}

_OURS = ("output_layer", "with_stats")


def hf_config(cfg: dict) -> Wav2Vec2BertConfig:
    kw = {k: v for k, v in cfg.items() if k not in _OURS}
    # Inference: no dropout anywhere (also set by .eval(), but keep the config honest).
    kw.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
              conformer_conv_dropout=0.0, layerdrop=0.0, final_dropout=0.0)
    return Wav2Vec2BertConfig(**kw)


def feature_extractor() -> SeamlessM4TFeatureExtractor:
    return SeamlessM4TFeatureExtractor(**FEATURES)


def extract(audio: np.ndarray) -> dict[str, np.ndarray]:
    """16 kHz float audio [N] -> {'input_features' [1,T,160] f32, 'attention_mask' [1,T] i64}."""
    out = feature_extractor()(np.asarray(audio, np.float32), sampling_rate=16000, return_tensors="np")
    return {"input_features": out["input_features"].astype(np.float32),
            "attention_mask": out["attention_mask"].astype(np.int64)}


class SemanticStats(nn.Module):
    """(h − mean) / √var with the official stats file's `mean`/`var` [hidden]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # Placeholder until a real stats file is loaded: deterministic and deliberately not the
        # identity (var ≠ 1) so that "var used as std" cannot pass unnoticed in the fixtures.
        i = torch.arange(dim, dtype=torch.float32)
        self.register_buffer("mean", 0.3 * torch.sin(0.37 * i + 0.1))
        self.register_buffer("var", 0.3 + 2.0 * (1.0 + torch.cos(0.71 * i)) / 2.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / torch.sqrt(self.var)


class W2vBertSemantic(Wav2Vec2BertModel):
    """`Wav2Vec2BertModel` (same state-dict keys) plus the IndexTTS2 read-out and stats."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(hf_config(cfg))
        self.output_layer = int(cfg["output_layer"])
        self.with_stats = bool(cfg["with_stats"])
        if self.with_stats:
            setattr(self, STATS, SemanticStats(cfg["hidden_size"]))

    def embed(self, input_features, attention_mask=None):
        out = super().forward(input_features=input_features, attention_mask=attention_mask,
                              output_hidden_states=True)
        hidden = out.hidden_states[self.output_layer]
        if not self.with_stats:
            return {"hidden": hidden}
        return {"hidden": hidden, "emb": getattr(self, STATS)(hidden)}


def build(cfg: dict) -> W2vBertSemantic:
    m = W2vBertSemantic(cfg)
    return m.eval()


def tap_names(cfg: dict) -> list[str]:
    """Tapped module paths, in completion (forward-hook) order."""
    names = ["feature_projection"]
    for i in range(cfg["output_layer"]):
        p = f"encoder.layers.{i}"
        # final_layer_norm's output is the layer's output (= hidden_states[i + 1]).
        names += [f"{p}.ffn1", f"{p}.self_attn", f"{p}.conv_module", f"{p}.ffn2", f"{p}.final_layer_norm"]
    return names + ([STATS] if cfg.get("with_stats") else [])


def _first(t):
    return t[0] if isinstance(t, tuple) else t


def run_with_taps(model: W2vBertSemantic, input_features: torch.Tensor, attention_mask, taps) -> dict:
    """Runs `embed` with forward hooks on the tapped modules, feeding `taps.inputs/outputs`.

    Layers past the read-out also run in transformers (it always runs them all); they are not
    tapped and their outputs are never used.
    """
    mods = dict(model.named_modules())
    tcfg = {"output_layer": model.output_layer, "with_stats": model.with_stats}
    wanted = set(tap_names(tcfg))
    handles = []

    def hook(name):
        def f(_m, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            taps.inputs[name] = x.detach().clone()
            taps.outputs[name] = _first(out).detach().clone()
        return f

    if taps is not None:
        for name in tap_names(tcfg):
            handles.append(mods[name].register_forward_hook(hook(name), with_kwargs=True))
    try:
        with torch.no_grad():
            out = model.embed(input_features, attention_mask)
    finally:
        for h in handles:
            h.remove()
    if taps is not None:  # drop anything recorded past the read-out
        for d in (taps.inputs, taps.outputs):
            for k in [k for k in d if k not in wanted]:
                del d[k]
    return out


def config_json(cfg: dict) -> str:
    """What the Rust `W2vBertConfig` parses: model architecture, read-out, stats and front end."""
    keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "feature_projection_input_dim", "hidden_act", "position_embeddings_type",
            "left_max_position_embeddings", "right_max_position_embeddings", "conv_depthwise_kernel_size",
            "layer_norm_eps", "output_layer"]
    d = {k: cfg[k] for k in keys}
    d["stats"] = STATS if cfg["with_stats"] else None
    d["features"] = {"num_mel_bins": FEATURES["num_mel_bins"], "stride": FEATURES["stride"],
                     "padding_value": FEATURES["padding_value"], "sampling_rate": FEATURES["sampling_rate"]}
    return json.dumps(d)


# ---------------------------------------------------------------------------------------------
# Registry row.

AUDIO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "audio")


def load_clip(name: str) -> np.ndarray:
    """A 16-bit mono clip from fixtures/audio as float32 in [-1, 1) (as librosa/torchaudio load it)."""
    with wave.open(os.path.join(AUDIO_DIR, name)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{name}: expected mono int16")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def save_official(state_dict: dict, path: str) -> None:
    """`model.safetensors`, flat (tiny fixtures also carry `semantic_stats.*`, see the docstring)."""
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, path, metadata={"format": "pt"})


def _clip_features(clip: str):
    def make(cfg: dict, seed: int) -> dict[str, np.ndarray]:
        return extract(load_clip(clip))
    return make


def _clip_audio(clip: str):
    def make(cfg: dict, seed: int) -> dict[str, np.ndarray]:
        return {"audio": load_clip(clip)}
    return make


def make_random_features(cfg: dict, seed: int, frames: int = 37) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_features": rng.standard_normal((1, frames, cfg["feature_projection_input_dim"])).astype(np.float32)}


def run_masked(model, inputs: dict, taps) -> dict:
    return run_with_taps(model, inputs["input_features"], inputs["attention_mask"], taps)


def run_unmasked(model, inputs: dict, taps) -> dict:
    return run_with_taps(model, inputs["input_features"], None, taps)


def run_features(model, inputs: dict, taps) -> dict:
    out = extract(inputs["audio"].cpu().numpy())
    return {k: torch.from_numpy(v) for k, v in out.items()}


def run_embed_audio(model, inputs: dict, taps) -> dict:
    f = extract(inputs["audio"].cpu().numpy())
    return run_with_taps(model, torch.from_numpy(f["input_features"]), torch.from_numpy(f["attention_mask"]), taps)


from parity.spec import Case, ModelSpec  # noqa: E402  (registry row lives beside the model)

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
        Case("w2v_bert_speech", "forward_masked", _clip_features("speech_16k.wav"), run_masked),
        Case("w2v_bert_unmasked", "forward", make_random_features, run_unmasked),
        Case("w2v_bert_features_speech", "features", _clip_audio("speech_16k.wav"), run_features),
        Case("w2v_bert_features_short", "features", _clip_audio("short_16k.wav"), run_features),
        Case("w2v_bert_features_silence", "features", _clip_audio("silence_16k.wav"), run_features),
        Case("w2v_bert_features_odd", "features", _clip_audio("odd_16k.wav"), run_features),
        Case("w2v_bert_embed_odd", "embed_audio", _clip_audio("odd_16k.wav"), run_embed_audio),
    ),
    allow_unused={
        "masked_spec_embed": "SpecAugment mask vector, used only in training",
        "encoder.layers.1[7-9].*": "layers after the hidden_states[17] read-out never run (IndexTTS2 reads layer 16's output)",
        "encoder.layers.2[0-3].*": "layers after the hidden_states[17] read-out never run (IndexTTS2 reads layer 16's output)",
    },
    faults={
        "hidden_off_by_one": ("w2v_bert_speech", STATS),
        "var_as_std": ("w2v_bert_speech", STATS),
        "symmetric_dw_padding": ("w2v_bert_speech", "encoder.layers.0.conv_module"),
    },
)
