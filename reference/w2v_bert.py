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
import math
import os
import wave

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

from .common import NoTaps

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

_OURS = ("output_layer", "with_stats", "features")


def hf_config(cfg: dict) -> Wav2Vec2BertConfig:
    kw = {k: v for k, v in cfg.items() if k not in _OURS}
    # Inference: no dropout anywhere (also set by .eval(), but keep the config honest).
    kw.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
              conformer_conv_dropout=0.0, layerdrop=0.0, final_dropout=0.0)
    return Wav2Vec2BertConfig(**kw)


def feature_extractor(features: dict | None = None) -> SeamlessM4TFeatureExtractor:
    return SeamlessM4TFeatureExtractor(**(features or FEATURES))


def extract(audio: np.ndarray, features: dict | None = None) -> dict[str, np.ndarray]:
    """16 kHz float audio [N] -> {'input_features' [1,T,80·stride] f32, 'attention_mask' [1,T] i64};
    `features`: the extractor's arguments (default: w2v-bert-2.0's, FEATURES)."""
    fe = feature_extractor(features)
    out = fe(np.asarray(audio, np.float32), sampling_rate=fe.sampling_rate, return_tensors="np")
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
        self.features = dict(cfg.get("features", FEATURES))  # the front end's arguments
        self.with_stats = bool(cfg["with_stats"])
        if self.with_stats:
            setattr(self, STATS, SemanticStats(cfg["hidden_size"]))

    def embed(self, input_features, attention_mask=None, taps=None):
        out = super().forward(input_features=input_features, attention_mask=attention_mask,
                              output_hidden_states=True)
        hidden = out.hidden_states[self.output_layer]
        if not self.with_stats:
            return {"hidden": hidden}
        stats = getattr(self, STATS)
        emb = stats(hidden) if taps is None else taps.block(STATS, hidden, stats)
        return {"hidden": hidden, "emb": emb}


def build(cfg: dict) -> W2vBertSemantic:
    m = W2vBertSemantic(cfg)
    return m.eval()


def _layer_taps(p: str) -> list[str]:
    """One conformer layer's taps in completion order (children before parents)."""
    ffn = lambda f: [f"{p}.{f}_layer_norm", f"{p}.{f}.intermediate_dense", f"{p}.{f}.intermediate_act_fn",  # noqa: E731
                     f"{p}.{f}.output_dense", f"{p}.{f}"]
    a, c = f"{p}.self_attn", f"{p}.conv_module"
    return (ffn("ffn1") + [f"{p}.self_attn_layer_norm", f"{a}.linear_q", f"{a}.linear_k", f"{a}.linear_v",
                           f"{a}.attention", f"{a}.linear_out", a]
            + [f"{c}.{m}" for m in ("layer_norm", "pointwise_conv1", "glu", "depthwise_conv", "depthwise_layer_norm",
                                    "activation", "pointwise_conv2")] + [c]
            + ffn("ffn2") + [f"{p}.final_layer_norm", p])


def tap_names(cfg: dict, masked: bool = True) -> list[str]:
    """Tapped module paths, in completion order (children before parents). `encoder.masked_fill`
    (padded frames zeroed before layer 0) exists only with a mask; `encoder` is the read-out
    `hidden_states[output_layer]`; `<layer>.self_attn.attention` is
    the attention core (no module of its own in transformers): scores + relative-key term, mask,
    softmax, ·V, on the injected q."""
    names = ["feature_projection.layer_norm", "feature_projection.projection", "feature_projection"]
    names += ["encoder.masked_fill"] if masked else []
    for i in range(cfg["output_layer"]):
        names += _layer_taps(f"encoder.layers.{i}")
    return names + ["encoder"] + ([STATS] if cfg.get("with_stats") else [])


def no_inject(cfg: dict) -> tuple[str, ...]:
    """Taps whose input the injected walk must NOT replace, so the functional ops in front of them
    stay visible: the residual adds of a layer (seen at its final_layer_norm), the conv module's
    masked_fill (pointwise_conv1), its causal left pad (depthwise_conv), and the read-out
    `hidden_states[output_layer]` (the stats)."""
    out = []
    for i in range(cfg["output_layer"]):
        p = f"encoder.layers.{i}"
        out += [f"{p}.final_layer_norm", f"{p}.conv_module.pointwise_conv1", f"{p}.conv_module.depthwise_conv"]
    return tuple(out + [STATS])


def _wrap(mod: nn.Module, name: str, taps) -> None:
    """Routes `mod`'s first argument through `taps.block(name, ...)` (recorded; replaced by the
    injected tensor in the injected walk). Tuple outputs: the first element is the tap."""
    orig = mod.forward

    def forward(x, *args, **kwargs):
        rest: list = []

        def fn(v):
            out = orig(v, *args, **kwargs)
            if isinstance(out, tuple):
                rest.extend(out[1:])
                return out[0]
            return out

        y = taps.block(name, x, fn)
        return (y, *rest) if rest else y

    mod.forward = forward


def _attention_forward(attn: nn.Module, name: str, taps):
    """transformers' `Wav2Vec2BertSelfAttention.forward` (4.52.1, relative_key), op for op, with the
    core as its own tap `<self_attn>.attention` (input q). Equal bit for bit to the untouched
    class (tests/test_w2v_bert.py::test_w2v_bert_tapped_reference_is_transformers)."""
    if attn.position_embeddings_type != "relative_key":
        raise ValueError(f"the tapped reference implements position_embeddings_type relative_key, not {attn.position_embeddings_type!r}")
    heads, d = attn.num_heads, attn.head_size

    def core(query_states, key_states, value_states, attention_mask):
        b = query_states.shape[0]
        query = query_states.view(b, -1, heads, d).transpose(1, 2)
        key = key_states.view(b, -1, heads, d).transpose(1, 2)
        value = value_states.view(b, -1, heads, d).transpose(1, 2)
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d)
        ql, kl = query.shape[2], key.shape[2]
        position_ids_l = torch.arange(ql, dtype=torch.long, device=query.device).view(-1, 1)
        position_ids_r = torch.arange(kl, dtype=torch.long, device=query.device).view(1, -1)
        distance = torch.clamp(position_ids_r - position_ids_l, -attn.left_max_position_embeddings,
                               attn.right_max_position_embeddings)
        positional_embedding = attn.distance_embedding(distance + attn.left_max_position_embeddings)
        positional_embedding = positional_embedding.to(dtype=query.dtype)
        relative_position_attn_weights = torch.einsum("bhld,lrd->bhlr", query, positional_embedding)
        scores = scores + (relative_position_attn_weights / math.sqrt(d))
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = attn.dropout(torch.softmax(scores, dim=-1))
        hidden = torch.matmul(probs, value)
        return hidden.transpose(1, 2).reshape(b, -1, heads * d)

    def forward(hidden_states, attention_mask=None, relative_position_embeddings=None, output_attentions=False):
        def fn(h):
            q, k, v = attn.linear_q(h), attn.linear_k(h), attn.linear_v(h)
            ctx = taps.block(f"{name}.attention", q, lambda q: core(q, k, v, attention_mask))
            return attn.linear_out(ctx)

        return taps.block(name, hidden_states, fn), None

    return forward


_CONV_LEAVES = ("layer_norm", "pointwise_conv1", "glu", "depthwise_conv", "depthwise_layer_norm", "activation",
                "pointwise_conv2")


def run_with_taps(model: W2vBertSemantic, input_features: torch.Tensor, attention_mask, taps) -> dict:
    """Runs `embed` through transformers' own forwards with every tapped module's forward routed
    through `taps.block` (leaf taps, injection on the reference side), restored afterwards.

    Only the layers up to the read-out run: `hidden_states[output_layer]` does not depend on the
    later ones (transformers runs them, IndexTTS2 never reads them)."""
    taps = taps if taps is not None else NoTaps()
    mods = dict(model.named_modules())
    patched: list[nn.Module] = []

    def wrap(name):
        _wrap(mods[name], name, taps)
        patched.append(mods[name])

    wrap("feature_projection.layer_norm")
    wrap("feature_projection.projection")
    wrap("feature_projection")
    for i in range(model.output_layer):
        p = f"encoder.layers.{i}"
        for f in ("ffn1", "ffn2"):
            wrap(f"{p}.{f}_layer_norm")
            for leaf in ("intermediate_dense", "intermediate_act_fn", "output_dense"):
                wrap(f"{p}.{f}.{leaf}")
            wrap(f"{p}.{f}")
        wrap(f"{p}.self_attn_layer_norm")
        for leaf in ("linear_q", "linear_k", "linear_v", "linear_out"):
            wrap(f"{p}.self_attn.{leaf}")
        mods[f"{p}.self_attn"].forward = _attention_forward(mods[f"{p}.self_attn"], f"{p}.self_attn", taps)
        patched.append(mods[f"{p}.self_attn"])
        for leaf in _CONV_LEAVES:
            wrap(f"{p}.conv_module.{leaf}")
        wrap(f"{p}.conv_module")
        wrap(f"{p}.final_layer_norm")
        wrap(p)
    enc = model.encoder
    enc_forward = enc.forward

    def encoder_forward(hidden_states, attention_mask=None, **kw):
        result = {}

        def run(h):
            if attention_mask is not None:  # transformers zeroes padded frames first; doing it here
                # as well is a no-op on the values (0 stays 0) and makes the step a tap of its own
                keep = attention_mask.bool().unsqueeze(-1)
                h = taps.block("encoder.masked_fill", h, lambda x: x.masked_fill(~keep, 0.0))
            result["out"] = enc_forward(h, attention_mask=attention_mask, **kw)
            # the layers run stop at the read-out: the last state is hidden_states[output_layer]
            return result["out"].hidden_states[-1]

        taps.block("encoder", hidden_states, run)  # tap `encoder`: the read-out itself
        return result["out"]

    enc.forward = encoder_forward
    patched.append(enc)
    all_layers = enc.layers
    enc.layers = nn.ModuleList(list(all_layers)[: model.output_layer])
    try:
        with torch.no_grad():
            out = model.embed(input_features, attention_mask, taps)
            # transformers draws one torch.rand([]) per layer (layerdrop, in eval too) and the official
            # call runs every layer: take the skipped layers' draws so torch's generator ends where
            # the official forward leaves it (infer_v2 after torch.manual_seed)
            torch.rand(len(all_layers) - model.output_layer)
    finally:
        enc.layers = all_layers
        for m in patched:
            del m.forward
    return out


def config_json(cfg: dict) -> str:
    """What the Rust `W2vBertConfig` parses: model architecture, read-out, stats and front end."""
    keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "feature_projection_input_dim", "hidden_act", "position_embeddings_type",
            "left_max_position_embeddings", "right_max_position_embeddings", "conv_depthwise_kernel_size",
            "layer_norm_eps", "output_layer"]
    d = {k: cfg[k] for k in keys}
    d["stats"] = STATS if cfg["with_stats"] else None
    f = cfg.get("features", FEATURES)
    d["features"] = {"num_mel_bins": f["num_mel_bins"], "stride": f["stride"],
                     "padding_value": f["padding_value"], "sampling_rate": f["sampling_rate"]}
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
        return extract(load_clip(clip), cfg.get("features"))
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
    out = extract(inputs["audio"].cpu().numpy(), model.features)
    return {k: torch.from_numpy(v) for k, v in out.items()}


def run_embed_audio(model, inputs: dict, taps) -> dict:
    # The front end is numpy float32 in transformers (it casts float64 audio to float32), so the
    # float64 run gets the same features, widened exactly; the model then runs in its own dtype.
    f = extract(inputs["audio"].cpu().numpy(), model.features)
    dtype = next(model.parameters()).dtype
    return run_with_taps(model, torch.from_numpy(f["input_features"]).to(dtype), torch.from_numpy(f["attention_mask"]), taps)


# Covers any read-out up to layer 48 (official 17; a config-space row may read another one).
_NO_INJECT = no_inject({"output_layer": 48})
