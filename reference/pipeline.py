"""IndexTTS2 inference (spec §5), composed from the reference models, stage by stage.

Nothing here re-implements a model: every stage calls one reference module (the same registry kinds
the Candle side loads) and a few lines of glue that both sides share (transposes, the 1.72 length
rule, slicing the prompt off the mel). Deterministic mode: token ids given, greedy decoding (the
near-tie rule lives in the parity side), CFM noise `z` given.

Configs: one mutually consistent set per size, each model's own config dict with the widths that
connect them made equal:
  w2v hidden  = GPT cond_input_size = LR in_channels (codec width)
  GPT model_dim = LR latent_dim (gpt_layer input)
  LR channels = DiT content_dim;  DiT in_channels = BigVGAN num_mels;  DiT style_dim = CAMPPlus width
The official ("full") configs already agree; the tiny set is built from each model's TINY.

Not landed yet (feat-frontend): semantic codec, CAMPPlus, mel front end. Until then the pipeline
starts at the semantic embedding for the prompt side (S_ref := spk_cond_emb, as the codec's
quantize would return a same-shaped embedding), the vq2emb term of S_infer is a fixed table lookup
given as an input (`vq_table[codes]`), `style` is a given vector and `ref_mel` is the log-mel of
the 22.05 kHz clip from `parity.audio.log_mel` with the pipeline's band count.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import bigvgan, gpt, s2mel, w2v_bert

# ---- configs --------------------------------------------------------------------------------------
_H = 32  # w2v hidden = codec width (tiny)
TINY = {
    "w2v_bert": {**w2v_bert.TINY, "hidden_size": _H},
    "gpt": {**copy.deepcopy(gpt.TINY), "cond_input_size": _H},
    "length_regulator": {**s2mel.TINY_LR, "in_channels": _H, "latent_dim": gpt.TINY["model_dim"],
                         "channels": s2mel.TINY_DIT["content_dim"]},
    "dit": {**s2mel.TINY_DIT},
    # hop 64 so that a tiny utterance gives > n_fft samples for the log-mel audio gate
    "bigvgan": {**bigvgan.TINY, "num_mels": s2mel.TINY_DIT["in_channels"], "upsample_rates": [4, 4, 2, 2],
                "upsample_kernel_sizes": [8, 8, 4, 4]},
}
FULL = {
    "w2v_bert": copy.deepcopy(w2v_bert.FULL),
    "gpt": copy.deepcopy(gpt.FULL),
    "length_regulator": copy.deepcopy(s2mel.FULL_LR),
    "dit": copy.deepcopy(s2mel.FULL_DIT),
    "bigvgan": copy.deepcopy(bigvgan.FULL),
}
CONFIGS = {"tiny": TINY, "full": FULL}


def check_consistent(c: dict) -> None:
    """The widths that connect the stages must agree (a wrong set would fail deep inside a stage)."""
    pairs = [
        ("w2v hidden", c["w2v_bert"]["hidden_size"], "GPT cond_input_size", c["gpt"]["cond_input_size"]),
        ("w2v hidden", c["w2v_bert"]["hidden_size"], "LR in_channels", c["length_regulator"]["in_channels"]),
        ("GPT model_dim", c["gpt"]["model_dim"], "LR latent_dim", c["length_regulator"]["latent_dim"]),
        ("LR channels", c["length_regulator"]["channels"], "DiT content_dim", c["dit"]["content_dim"]),
        ("DiT in_channels", c["dit"]["in_channels"], "BigVGAN num_mels", c["bigvgan"]["num_mels"]),
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


def make_inputs(c: dict, seed: int = 0, seconds: float = 0.5, text_len: int = 6, max_tokens: int = 20,
                steps: int = 25) -> dict[str, np.ndarray]:
    """Everything the pipeline consumes: clips, token ids, CFM noise, the stand-ins listed above."""
    from parity.audio import log_mel

    rng = np.random.default_rng(seed)
    a16 = w2v_bert.load_clip("speech_16k.wav")[: int(seconds * SR_16K)]
    a22 = w2v_bert.load_clip("speech_22k.wav")[: int(seconds * SR_22K)]
    n_mels = c["dit"]["in_channels"]
    ref_mel = log_mel(a22, SR_22K, 1024, 256, n_mels)[None].astype(np.float32)  # [1, C, Tm]
    g = c["gpt"]
    return {
        "audio_16k": a16.astype(np.float32),
        "ref_mel": ref_mel,
        "text": rng.integers(2, g["number_text_tokens"], (1, text_len)).astype(np.int64),
        "max_tokens": np.array([max_tokens], np.int64),
        "style": rng.standard_normal((1, c["dit"]["style_dim"])).astype(np.float32),
        # stands in for semantic_codec.vq2emb until the codec lands: one row per code
        "vq_table": (0.5 * rng.standard_normal((g["number_mel_codes"], c["length_regulator"]["in_channels"]))).astype(np.float32),
        # noise for the whole CFM sequence (prompt + target); sliced to length once that is known
        "z_pool": rng.standard_normal((1, n_mels, 4096 if n_mels < 80 else 8192)).astype(np.float32),
        "t_span": torch.linspace(0, 1, steps + 1).numpy(),
    }


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


def _t(x):
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _n(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ref_features(_m, i):
    return {k: torch.from_numpy(v) for k, v in w2v_bert.extract(_n(i["audio"])).items()}


def _ref_w2v(m, i):
    out = w2v_bert.run_with_taps(m, i["input_features"], i["attention_mask"], None)
    return {"emb": out.get("emb", out["hidden"])}


def _ref_greedy(m, i):
    codes, margins = m.greedy(i["spk_latent"], i["emovec"], i["text"], int(i["max_tokens"].reshape(-1)[0]))
    return {"codes": codes, "margins": margins}


def _cfm_inputs(s: dict) -> dict:
    mu = np.concatenate([s["prompt_cond"], s["target_cond"]], 1)  # cat_condition [1, Tm+Tt, C]
    t = mu.shape[1]
    return {"z": s["z_pool"][:, :, :t], "x_lens": np.array([t], np.int64), "prompt": s["ref_mel"], "mu": mu,
            "style": s["style"], "t_span": s["t_span"]}


def _target_len(s: dict) -> int:
    return max(1, int(s["codes"].shape[1] * LENGTH_RATIO))


STAGES: tuple[Stage, ...] = (
    Stage("fbank", "w2v_bert", "features", lambda s: {"audio": s["audio_16k"]}, _ref_features,
          ("input_features", "attention_mask")),
    Stage("semantic_emb", "w2v_bert", "forward_masked",
          lambda s: {"input_features": s["input_features"], "attention_mask": s["attention_mask"]}, _ref_w2v, ("emb",),
          post=lambda o, s: {"emb": o["emb"], "s_ref": o["emb"]}),  # codec quantize not landed: S_ref := emb
    Stage("spk_latent", "gpt", "spk_cond",
          lambda s: {"x": np.ascontiguousarray(np.swapaxes(s["emb"], 1, 2)), "lens": np.array([s["emb"].shape[1]], np.int64)},
          lambda m, i: {"latent": m.get_conditioning(i["x"], i["lens"])}, ("latent",),
          post=lambda o, s: {"spk_latent": o["latent"]}),
    # emotion reference = speaker clip (the default), emo_alpha 1 ⇒ merge_emovec = get_emovec(emo)
    Stage("emovec", "gpt", "emovec", lambda s: {"x": s["emb"], "lens": np.array([s["emb"].shape[1]], np.int64)},
          lambda m, i: {"emovec": m.get_emovec(i["x"], i["lens"])}, ("emovec",)),
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
    Stage("s_infer", "length_regulator", "latent_proj", lambda s: {"latent": s["latent"]},
          lambda m, i: {"out": m.latent_proj(i["latent"])}, ("out",),
          post=lambda o, s: {"s_infer": s["vq_table"][s["codes"][0]][None] + o["out"]}),
    Stage("prompt_cond", "length_regulator", "forward",
          lambda s: {"x": s["s_ref"], "ylens": np.array([s["ref_mel"].shape[2]], np.int64)},
          lambda m, i: {"out": m.length_regulator(i["x"], i["ylens"])}, ("out",),
          post=lambda o, s: {"prompt_cond": o["out"]}),
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


def bigvgan_forward(m, mel):
    from .common import NoTaps

    return m(mel, NoTaps())


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


@torch.no_grad()
def run_reference_stage(st: Stage, module: torch.nn.Module, state: dict) -> tuple[dict, dict]:
    """Returns (the stage's outputs as numpy, the state entries they become)."""
    ins = st.inputs(state)
    outs = {k: _n(v) for k, v in st.reference(module, {k: _t(v) for k, v in ins.items()}).items()}
    return outs, st.post(outs, state)


@torch.no_grad()
def run(modules: dict[str, torch.nn.Module], inputs: dict) -> tuple[dict, dict]:
    """The whole reference pipeline: `modules[kind]` → ({stage: outputs}, final state incl. `wav`)."""
    state = dict(inputs)
    per_stage = {}
    for st in STAGES:
        outs, upd = run_reference_stage(st, modules[st.kind], state)
        per_stage[st.name] = outs
        state.update(upd)
    return per_stage, state
