"""IndexTTS2 inference (spec §5), composed from the reference models, stage by stage.

Nothing here re-implements a model: every stage calls one reference module (the same registry kinds
the Candle side loads) and a few lines of glue that both sides share (transposes, the 1.72 length
rule, slicing the prompt off the mel). Deterministic mode: token ids given, greedy decoding (the
near-tie rule lives in the parity side), CFM noise `z` given.

Configs: one mutually consistent set per size, each model's own config dict with the widths that
connect them made equal:
  w2v hidden  = GPT cond_input_size = LR in_channels (codec width)
  GPT model_dim = LR latent_dim (gpt_layer input)
  LR channels = DiT content_dim;  DiT in_channels = BigVGAN num_mels = mel num_mels;
  DiT style_dim = CAMPPlus embedding_size
The official ("full") configs already agree; the tiny set is built from each model's TINY.

Emotion: the speaker clip (default), another 16 kHz clip with emo_alpha, or an 8-weight emotion
vector over the `feat1.pt`/`feat2.pt` prototypes (reference/emotion.py). B = 1 throughout.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import bigvgan, campplus, emotion, gpt, mel, resample, s2mel, sampling, semantic_codec, w2v_bert

# ---- configs --------------------------------------------------------------------------------------
_H = 32  # w2v hidden = codec width (tiny)
# w2v-bert without stats inside: as officially, they come from `wav2vec2bert_stats.pt` (see
# parity/pipeline.py, which merges that file into the converted w2v-bert file).
TINY = {
    "w2v_bert": {**w2v_bert.TINY, "hidden_size": _H, "with_stats": False},
    "semantic_codec": {**semantic_codec.TINY, "hidden_size": _H},
    "campplus": {**campplus.TINY, "embedding_size": s2mel.TINY_DIT["style_dim"]},
    "mel_spectrogram": {**mel.FULL, "num_mels": s2mel.TINY_DIT["in_channels"]},
    # text ids up to the synthetic bpe.model's 700 pieces (parity/text_fixture.py, unigram variant)
    "gpt": {**copy.deepcopy(gpt.TINY), "cond_input_size": _H, "number_text_tokens": 700},
    "length_regulator": {**s2mel.TINY_LR, "in_channels": _H, "latent_dim": gpt.TINY["model_dim"],
                         "channels": s2mel.TINY_DIT["content_dim"]},
    "dit": {**s2mel.TINY_DIT},
    # hop 64 so that a tiny utterance gives > n_fft samples for the log-mel audio gate
    "bigvgan": {**bigvgan.TINY, "num_mels": s2mel.TINY_DIT["in_channels"], "upsample_rates": [4, 4, 2, 2],
                "upsample_kernel_sizes": [8, 8, 4, 4]},
    "emotion": emotion.config(s2mel.TINY_DIT["style_dim"], gpt.TINY["model_dim"]),
    "resample": dict(resample.FULL),  # the speaker clip arrives at 22.05 kHz (librosa.load's default)
}
FULL = {
    "w2v_bert": copy.deepcopy(w2v_bert.FULL),
    "semantic_codec": copy.deepcopy(semantic_codec.FULL),
    "campplus": copy.deepcopy(campplus.FULL),
    "mel_spectrogram": copy.deepcopy(mel.FULL),
    "gpt": copy.deepcopy(gpt.FULL),
    "length_regulator": copy.deepcopy(s2mel.FULL_LR),
    "dit": copy.deepcopy(s2mel.FULL_DIT),
    "bigvgan": copy.deepcopy(bigvgan.FULL),
    "emotion": emotion.config(s2mel.FULL_DIT["style_dim"], gpt.FULL["model_dim"]),
    "resample": dict(resample.FULL),
}
CONFIGS = {"tiny": TINY, "full": FULL}


def check_consistent(c: dict) -> None:
    """The widths that connect the stages must agree (a wrong set would fail deep inside a stage)."""
    pairs = [
        ("w2v hidden", c["w2v_bert"]["hidden_size"], "GPT cond_input_size", c["gpt"]["cond_input_size"]),
        ("w2v hidden", c["w2v_bert"]["hidden_size"], "codec hidden_size", c["semantic_codec"]["hidden_size"]),
        ("codec hidden_size", c["semantic_codec"]["hidden_size"], "LR in_channels", c["length_regulator"]["in_channels"]),
        ("mel num_mels", c["mel_spectrogram"]["num_mels"], "DiT in_channels", c["dit"]["in_channels"]),
        ("CAMPPlus embedding_size", c["campplus"]["embedding_size"], "DiT style_dim", c["dit"]["style_dim"]),
        ("GPT model_dim", c["gpt"]["model_dim"], "LR latent_dim", c["length_regulator"]["latent_dim"]),
        ("LR channels", c["length_regulator"]["channels"], "DiT content_dim", c["dit"]["content_dim"]),
        ("DiT in_channels", c["dit"]["in_channels"], "BigVGAN num_mels", c["bigvgan"]["num_mels"]),
        ("emotion style_dim", c["emotion"]["style_dim"], "DiT style_dim", c["dit"]["style_dim"]),
        ("emotion model_dim", c["emotion"]["model_dim"], "GPT model_dim", c["gpt"]["model_dim"]),
    ]
    bad = [f"{a}={x} != {b}={y}" for a, x, b, y in pairs if x != y]
    if bad:
        raise ValueError("inconsistent pipeline configs: " + "; ".join(bad))


for _c in CONFIGS.values():
    check_consistent(_c)

# ---- deterministic inputs -------------------------------------------------------------------------
SR_16K, SR_22K = 16000, 22050
LENGTH_RATIO = 1.72  # infer_v2: target mel frames = int(codes · 1.72)


def hop(c: dict) -> int:
    return int(np.prod(c["bigvgan"]["upsample_rates"]))


EMOTIONS = ("speaker", "clip", "vector")
# the emotion-vector case: 8 weights (happy … calm) and an alpha < 1, so the scaling rule is exercised
EMO_WEIGHTS = np.array([0.25, 0.0, 0.15, 0.0, 0.05, 0.0, 0.1, 0.2], np.float32)


DECODINGS = ("greedy", "sampled", "seeded")


def encode_options(o: dict) -> np.ndarray:
    """Decoding options on the tensor wire: the JSON's UTF-8 bytes as int64."""
    return np.frombuffer(json.dumps(o, sort_keys=True).encode(), np.uint8).astype(np.int64)


def decode_options(t) -> dict:
    return json.loads(bytes(np.asarray(t).astype(np.uint8).tolist()).decode())


def make_inputs(c: dict, seed: int = 0, seconds: float = 0.5, text_len: int = 6, max_tokens: int = 20,
                steps: int = 25, emotion: str = "speaker", decoding: str = "greedy",
                options: dict | None = None) -> dict[str, np.ndarray]:
    """Everything the pipeline consumes: the speaker clip at 22.05 kHz (as librosa.load gives it;
    the `front` stage cuts it to 15 s and resamples it to 16 kHz), token ids, CFM noise,
    and the emotion inputs as a user gives them (`emotion`):
      speaker: none (the speaker clip is the emotion reference, emo_alpha 1);
      clip:    another clip at 16 kHz (`emo_16k`) with emo_alpha 0.6;
      vector:  8 emotion weights (`emo_weights`) with emo_alpha 0.8.
    `seed` picks the token ids and the noise.
    `decoding`: greedy (deterministic mode, at most `max_tokens` codes) or sampled: infer_v2's beam
    sampling with `options` over its defaults (max_mel_tokens = `max_tokens`), drawing from
    `draws`, Exp(1) float32 from torch's generator seeded with 1000 + seed (enough for every
    step of every segment); seeded: the same decoding and the CFM noise from torch's own generator
    after torch.manual_seed(1000 + seed) (`seed`; no draws, no z_pool), as infer_v2 draws them."""
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    rng = np.random.default_rng(seed)
    a22 = w2v_bert.load_clip("speech_22k.wav")[: int(seconds * SR_22K)]
    g = c["gpt"]
    n_mels = c["dit"]["in_channels"]
    out = {
        "speaker": a22.astype(np.float32),
        "text": rng.integers(2, g["number_text_tokens"], (1, text_len)).astype(np.int64),
        "max_tokens": np.array([max_tokens], np.int64),
        # noise for the whole CFM sequence (prompt + target); sliced to length once that is known
        "z_pool": rng.standard_normal((1, n_mels, 4096 if n_mels < 80 else 8192)).astype(np.float32),
        "t_span": torch.linspace(0, 1, steps + 1).numpy(),
        "emo_alpha": np.array([1.0], np.float32),
    }
    if decoding == "seeded":
        del out["max_tokens"], out["z_pool"]
        out["decode_options"] = encode_options({"max_mel_tokens": max_tokens, **(options or {})})
        out["seed"] = np.array([1000 + seed], np.int64)
    if decoding == "sampled":
        o = {"max_mel_tokens": max_tokens, **(options or {})}
        full = dict(sampling.DEFAULTS, **o)
        n = 8 * full["max_mel_tokens"] * full["num_beams"] * g["number_mel_codes"]  # 8 segments at most
        del out["max_tokens"]
        out["decode_options"] = encode_options(o)
        out["draws"] = torch.empty(n).exponential_(1, generator=torch.Generator().manual_seed(1000 + seed)).numpy()
    if emotion == "clip":
        out["emo_16k"] = w2v_bert.load_clip("odd_16k.wav").astype(np.float32)
        out["emo_alpha"] = np.array([0.6], np.float32)
    elif emotion == "vector":
        out["emo_weights"] = EMO_WEIGHTS.copy()
        out["emo_alpha"] = np.array([0.8], np.float32)
    return out


def emotion_plan(inputs: dict) -> dict[str, np.ndarray]:
    """infer_v2's emotion rules (shared glue, = pipeline.rs `emotion_plan`): an emotion vector
    drops the emotion clip and has its weights scaled by emo_alpha; without an emotion clip the
    speaker clip is the reference (`emo_audio` None: the front stage's 16 kHz clip; infer_v2 reloads
    the file with librosa at 16 kHz, file decoding is out of scope) and alpha is 1. An emotion clip is
    cut to 15 s. No vector = zero weights, for which the mix is exactly the identity."""
    alpha = float(inputs["emo_alpha"].reshape(-1)[0])
    weights = inputs.get("emo_weights")
    clip = inputs.get("emo_16k")
    if weights is not None:
        weights = np.array(emotion.scale_weights(weights, alpha), np.float32)
        clip = None
    if clip is None:
        alpha = 1.0
    else:
        clip = clip[: int(resample.MAX_PROMPT_SECONDS * SR_16K)]
    if weights is None:
        weights = np.zeros(len(emotion.EMO_NUM), np.float32)
    return {"emo_audio": clip, "merge_alpha": np.array([alpha], np.float32), "mix_weights": weights}


class MelRef(torch.nn.Module):
    """The weightless s2mel mel front end as a module, so every stage runs `module(inputs)`."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def forward(self, y):
        return mel.mel_spectrogram(y, self.cfg)


# ---- stages ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One pipeline stage = one method of one registry kind.

    `inputs(state)` builds the method's inputs from the pipeline state (the same glue on both sides);
    `reference(module, inputs)` runs the reference; `post(outputs, state)` turns the method's outputs
    into state entries (shared glue, e.g. S_infer = gpt_layer(latent) + vq2emb). `compare` names the
    outputs the parity walk checks against the tolerance row ("pipeline", stage name, …).
    """

    name: str
    kind: str
    method: str
    inputs: Callable[[dict], dict]
    reference: Callable[[torch.nn.Module, dict], dict]
    compare: tuple[str, ...]
    post: Callable[[dict, dict], dict] = field(default=lambda outs, state: dict(outs))


def _t(x, dtype: torch.dtype = torch.float32):
    """An input as a tensor; floating inputs in the run's dtype (float32 data widens exactly)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype) if t.is_floating_point() else t


def _n(x) -> np.ndarray:
    """numpy; half-precision tensors widened to float32 (exact; numpy has no bfloat16)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def _ref_features(_m, i):
    return {k: torch.from_numpy(v) for k, v in w2v_bert.extract(_n(i["audio"])).items()}


def _ref_w2v(m, i):
    out = w2v_bert.run_with_taps(m, i["input_features"], i["attention_mask"], None)
    return {"emb": out["emb"]}  # the pipeline's w2v-bert always has the stats merged in


def _ref_greedy(m, i):
    codes, margins = m.greedy(i["spk_latent"], i["emovec"], i["text"], int(i["max_tokens"].reshape(-1)[0]))
    return {"codes": codes, "margins": margins}


def _ref_sampled(m, i):
    """infer_v2's decode: the official beam sampler on the given draws (or, without `draws`, on
    torch's global generator, as infer_v2 after torch.manual_seed), then its trimming. The margins
    are the running minimum of the reference's own per-step ordering margins: a beam walk's first
    differing code can stem from a flip at any earlier step."""
    draws = sampling.GivenDraws(i["draws"].float().numpy()) if "draws" in i else None
    seq, tr = sampling.decode(m, i["spk_latent"], i["emovec"], i["text"], decode_options(i["options"]), draws)
    codes, lens = sampling.infer_v2_trim(seq, m.cfg["stop_mel_token"])
    if len(lens) != 1:
        raise ValueError("no stop token within max_mel_tokens: infer_v2 gives the row its length twice and its "
                         "length regulator / CFM concat then fails")
    margins = np.minimum.accumulate(np.asarray(tr["margin"], np.float64)) if len(tr["margin"]) else np.zeros(0)
    out = {"codes": codes, "margins": torch.from_numpy(margins)}
    return out if draws is None else {**out, "draws_used": torch.tensor([draws.at])}


def _sampled_post(o: dict, s: dict) -> dict:
    if "draws" not in s:  # torch's generator: its state carries on by itself
        return {"codes": o["codes"]}
    # the next segment draws on from where this one stopped (one stream, as torch's generator)
    return {"codes": o["codes"], "draws": s["draws"][int(np.asarray(o["draws_used"]).reshape(-1)[0]):]}


def _emo_inputs(s: dict) -> dict:
    return {"audio": s["audio_16k"] if s["emo_audio"] is None else s["emo_audio"]}


def _cfm_inputs(s: dict) -> dict:
    mu = np.concatenate([s["prompt_cond"], s["target_cond"]], 1)  # cat_condition [1, Tm+Tt, C]
    t = mu.shape[1]
    # no z_pool: the CFM's own torch.randn([1, C, T]) on the global generator (infer_v2 after
    # torch.manual_seed; the decode's multinomials came first)
    z = s["z_pool"][:, :, :t] if "z_pool" in s else torch.randn([1, s["ref_mel"].shape[1], t]).numpy()
    return {"z": z, "x_lens": np.array([t], np.int64), "prompt": s["ref_mel"], "mu": mu,
            "style": s["style"], "t_span": s["t_span"]}


def _target_len(s: dict) -> int:
    return max(1, int(s["codes"].shape[1] * LENGTH_RATIO))


def _emb_lens(s: dict) -> np.ndarray:
    return np.array([s["emb"].shape[1]], np.int64)


# Pipeline order = spec §5: prompt side (steps 2-7), then emotion, decoding, target side (10-16).
STAGES: tuple[Stage, ...] = (
    Stage("front", "resample", "front", lambda s: {"wav": s["speaker"]},
          lambda m, i: dict(zip(("audio_22k", "audio_16k"), m.front(i["wav"]))), ("audio_22k", "audio_16k")),
    Stage("features", "w2v_bert", "features", lambda s: {"audio": s["audio_16k"]}, _ref_features,
          ("input_features", "attention_mask")),
    Stage("semantic_emb", "w2v_bert", "forward_masked",
          lambda s: {"input_features": s["input_features"], "attention_mask": s["attention_mask"]}, _ref_w2v, ("emb",)),
    Stage("s_ref", "semantic_codec", "quantize", lambda s: {"x": s["emb"]},
          lambda m, i: dict(zip(("codes", "emb"), m.quantize(i["x"]))), ("codes", "emb"),
          post=lambda o, s: {"s_ref": o["emb"]}),
    Stage("ref_mel", "mel_spectrogram", "forward", lambda s: {"wav": s["audio_22k"][None]},
          lambda m, i: {"mel": m(i["wav"])}, ("mel",), post=lambda o, s: {"ref_mel": o["mel"]}),
    Stage("spk_fbank", "campplus", "fbank", lambda s: {"wav": s["audio_16k"][None]},
          lambda m, i: {"feat": campplus.campplus_features(i["wav"], m.cfg["feat_dim"], m.cfg["sample_rate"])},
          ("feat",)),
    Stage("style", "campplus", "forward", lambda s: {"feat": s["feat"][None]}, lambda m, i: {"embedding": m(i["feat"])},
          ("embedding",), post=lambda o, s: {"style": o["embedding"]}),
    Stage("prompt_cond", "length_regulator", "forward",
          lambda s: {"x": s["s_ref"], "ylens": np.array([s["ref_mel"].shape[2]], np.int64)},
          lambda m, i: {"out": m.length_regulator(i["x"], i["ylens"])}, ("out",),
          post=lambda o, s: {"prompt_cond": o["out"]}),
    Stage("spk_latent", "gpt", "spk_cond",
          lambda s: {"x": np.ascontiguousarray(np.swapaxes(s["emb"], 1, 2)), "lens": _emb_lens(s)},
          lambda m, i: {"latent": m.get_conditioning(i["x"], i["lens"])}, ("latent",),
          post=lambda o, s: {"spk_latent": o["latent"]}),
    # emotion (steps 8, 10): the emotion clip's w2v-bert embedding, merge_emovec with alpha, then
    # the 8-weight emotion vector (zero weights = none: an exact identity)
    Stage("emo_features", "w2v_bert", "features", _emo_inputs, _ref_features,
          ("input_features", "attention_mask"), post=lambda o, s: {"emo_features": o["input_features"], "emo_mask": o["attention_mask"]}),
    Stage("emo_emb", "w2v_bert", "forward_masked",
          lambda s: {"input_features": s["emo_features"], "attention_mask": s["emo_mask"]}, _ref_w2v, ("emb",),
          post=lambda o, s: {"emo_emb": o["emb"]}),
    Stage("emovec", "gpt", "merge_emovec",
          lambda s: {"spk_x": s["emb"], "spk_lens": _emb_lens(s), "emo_x": s["emo_emb"],
                     "emo_lens": np.array([s["emo_emb"].shape[1]], np.int64), "alpha": s["merge_alpha"]},
          lambda m, i: {"emovec": m.merge_emovec(i["spk_x"], i["emo_x"], i["spk_lens"], i["emo_lens"], i["alpha"])},
          ("emovec",)),
    Stage("emo_mix", "emotion", "mix", lambda s: {"style": s["style"], "emovec": s["emovec"], "weights": s["mix_weights"]},
          lambda m, i: dict(zip(("emovec", "rows"), m.mix(i["style"], i["emovec"], i["weights"]))), ("emovec", "rows")),
    Stage("codes", "gpt", "greedy",
          lambda s: {"spk_latent": s["spk_latent"], "emovec": s["emovec"], "text": s["text"], "max_tokens": s["max_tokens"]},
          _ref_greedy, ("codes",)),
    # logits of every decode step, teacher-forced on the codes (where a near-tie flip is judged)
    Stage("code_logits", "gpt", "step_logits_full",
          lambda s: {"spk_latent": s["spk_latent"], "emovec": s["emovec"], "text": s["text"], "codes": s["codes"]},
          lambda m, i: {"logits": m.step_logits(i["spk_latent"], i["emovec"], i["text"], i["codes"])}, ("logits",)),
    Stage("latent", "gpt", "forward_latent",
          lambda s: {"spk_latent": s["spk_latent"], "text": s["text"], "text_lens": np.array([s["text"].shape[1]], np.int64),
                     "codes": s["codes"], "code_lens": np.array([s["codes"].shape[1]], np.int64), "emovec": s["emovec"]},
          lambda m, i: {"latent": m.forward_latent(i["spk_latent"], i["text"], i["text_lens"], i["codes"], i["code_lens"], i["emovec"])},
          ("latent",)),
    # infer_v2 step 14: vq2emb(codes) [1, hidden, Lc] (B = 1 only, as the official) ...
    Stage("vq_emb", "semantic_codec", "vq2emb", lambda s: {"codes": s["codes"]},
          lambda m, i: {"emb": m.quantizer.quantizers[0].vq2emb(i["codes"])}, ("emb",),
          post=lambda o, s: {"vq_emb": o["emb"]}),
    # ... + gpt_layer(latent) = S_infer
    Stage("s_infer", "length_regulator", "latent_proj", lambda s: {"latent": s["latent"]},
          lambda m, i: {"out": m.latent_proj(i["latent"])}, ("out",),
          post=lambda o, s: {"s_infer": np.swapaxes(s["vq_emb"], 1, 2) + o["out"]}),
    Stage("target_cond", "length_regulator", "forward",
          lambda s: {"x": s["s_infer"], "ylens": np.array([_target_len(s)], np.int64)},
          lambda m, i: {"out": m.length_regulator(i["x"], i["ylens"])}, ("out",),
          post=lambda o, s: {"target_cond": o["out"]}),
    Stage("cfm_mel", "dit", "cfm", _cfm_inputs,
          lambda m, i: {"mel": m.solve_euler(i["z"], i["x_lens"], i["prompt"], i["mu"], i["style"], i["t_span"])[0]},
          ("mel",), post=lambda o, s: {"mel": o["mel"][:, :, s["ref_mel"].shape[2]:]}),  # keep the target part
    Stage("wav", "bigvgan", "forward", lambda s: {"mel": s["mel"]}, lambda m, i: {"wav": bigvgan_forward(m, i["mel"])},
          ("wav",)),
)


# the sampled variant of stage `codes` (inputs with `draws`): gpt `generate_sampled`
CODES_SAMPLED = Stage("codes", "gpt", "generate_sampled",
                      lambda s: {"spk_latent": s["spk_latent"], "emovec": s["emovec"], "text": s["text"],
                                 "options": s["decode_options"], **({"draws": s["draws"]} if "draws" in s else {})},
                      _ref_sampled, ("codes",), post=_sampled_post)


def stages(inputs: dict) -> tuple[Stage, ...]:
    """The stages for these inputs: greedy codes, or (with `draws` or `seed`) the official sampled ones."""
    if "draws" not in inputs and "seed" not in inputs:
        return STAGES
    return tuple(CODES_SAMPLED if st.name == "codes" else st for st in STAGES)


def bigvgan_forward(m, mel):
    from .common import NoTaps

    return m(mel, NoTaps())


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


@torch.no_grad()
def run_stage_on(st: Stage, module: torch.nn.Module, ins: dict, dtype: torch.dtype = torch.float32) -> dict:
    """The stage's reference outputs (numpy) on given method inputs, computed in `dtype`."""
    return {k: _n(v) for k, v in st.reference(module, {k: _t(v, dtype) for k, v in ins.items()}).items()}


@torch.no_grad()
def run_reference_stage(st: Stage, module: torch.nn.Module, state: dict, dtype: torch.dtype = torch.float32,
                        trace: dict | None = None) -> tuple[dict, dict]:
    """Returns (the stage's outputs as numpy, the state entries they become). `trace`, if given,
    records the stage's method inputs under its name (what a forced walk feeds the other sides)."""
    ins = st.inputs(state)
    if trace is not None:
        trace[st.name] = ins
    outs = run_stage_on(st, module, ins, dtype)
    return outs, st.post(outs, state)


def _last_use(stages) -> dict[str, int]:
    return {st.kind: i for i, st in enumerate(stages)}


@torch.no_grad()
def run(modules, inputs: dict, dtype: torch.dtype = torch.float32, trace: dict | None = None,
        follow: Callable[[str, dict], dict] | None = None, release: Callable[[str], None] | None = None,
        dtypes: dict | None = None) -> tuple[dict, dict]:
    """The whole reference pipeline in `dtype` (float64: the truth, float32: what PyTorch users run):
    `modules[kind]` → ({stage: outputs}, final state incl. `wav`). `trace`: see run_reference_stage;
    `follow(stage, outputs)` may give other outputs for the pipeline to continue on (a near-tie code
    flip: continue on the other run's codes; the returned record keeps what the stage computed); `release(kind)` is called after a
    kind's last stage (official size: not every model's weights need to be held at once). `dtypes`:
    kind → dtype for the kinds that run in another one (the official fp16 mode: {"gpt": float16},
    with `modules` holding the GPT in that dtype); their stage inputs are cast to it."""
    state = {**inputs, **emotion_plan(inputs)}
    per_stage = {}
    sts = stages(inputs)
    _manual_seed(inputs)
    last = _last_use(sts)
    for i, st in enumerate(sts):
        outs, upd = run_reference_stage(st, modules[st.kind], state, (dtypes or {}).get(st.kind, dtype), trace)
        if follow is not None:
            new = follow(st.name, outs)
            if new is not outs:
                upd = st.post(new, state)
        per_stage[st.name] = outs  # what the stage computed, even where the state follows other outputs
        state.update(upd)
        if release is not None and last[st.kind] == i:
            release(st.kind)
    return per_stage, state


def _manual_seed(inputs: dict) -> None:
    """`seed` in the inputs (no `draws`, no `z_pool`): the run draws from torch's global generator
    after torch.manual_seed(seed), the decode's multinomials then each segment's CFM randn, as
    infer_v2 does."""
    if "seed" in inputs:
        if "draws" in inputs or "z_pool" in inputs:
            raise ValueError("`seed` is the torch stream of the decode and the CFM noise: give neither `draws` nor `z_pool`")
        torch.manual_seed(int(np.asarray(inputs["seed"]).reshape(-1)[0]))


SEGMENT_START = "codes"  # stages from here on run once per text segment; the ones before, once


@torch.no_grad()
def run_text(modules, inputs: dict, tokenizer, text: str,
             max_segment_tokens: int = 120, interval_ms: int = resample.INTERVAL_SILENCE_MS,
             dtype: torch.dtype = torch.float32, release: Callable[[str], None] | None = None) -> dict:
    """Text to speech as infer_v2: `tokenizer.segments(text)` (reference/text.py: the bpe.model,
    the CJK pre-tokenizer, split_segments), the speaker/emotion stages once, the segment stages per
    segment (same `z_pool` for each: deterministic mode), each wav [1, N] clamped and joined with
    `interval_ms` of silence at 22.05 kHz, all in `dtype`. Returns {"segments", "wavs", "wav"}."""
    segments = tokenizer.segments(text, max_segment_tokens)
    if not segments:
        raise ValueError("the text gives no tokens")
    state = {**inputs, **emotion_plan(inputs)}
    sts = stages(inputs)
    _manual_seed(inputs)
    k = next(i for i, st in enumerate(sts) if st.name == SEGMENT_START)
    seg_kinds = {st.kind for st in sts[k:]}
    last = _last_use(sts[:k])
    for i, st in enumerate(sts[:k]):
        state.update(run_reference_stage(st, modules[st.kind], state, dtype)[1])
        if release is not None and last[st.kind] == i and st.kind not in seg_kinds:
            release(st.kind)
    wavs = []
    for ids in segments:
        seg = {**state, "text": np.array([ids], np.int64)}
        for st in sts[k:]:
            seg.update(run_reference_stage(st, modules[st.kind], seg, dtype)[1])
        if "draws" in seg:
            state["draws"] = seg["draws"]
        wavs.append(torch.from_numpy(np.ascontiguousarray(seg["wav"])).reshape(1, -1))
    if release is not None:
        for kind in seg_kinds:
            release(kind)
    return {"segments": segments, "wavs": [w.numpy() for w in wavs],
            "wav": resample.join_segments(wavs, SR_22K, interval_ms).numpy()}
