"""Stage-by-stage parity of the whole IndexTTS2 pipeline (reference/pipeline.py ↔ Candle kinds).

The reference runs in float64 (the truth) and in float32 (PyTorch's own rounding noise); every float
stage output is judged by the noise-floor rule (tolerances.py: max and RMS of Candle − ref64 within
k × those of ref32 − ref64, `compare_noise`), integer outputs (codes, codec indices, emotion rows,
ids, segment lengths) are exact against the float32 reference. Walks, in pipeline order:
* forced: every Candle stage AND every float32 reference stage gets the float64 reference's
  previous outputs, so each row measures that stage's own error against its own noise (the codes
  are the float64 run's: teacher forcing);
* chained: Candle, ref32 and ref64 each run end to end (greedy codes: exact vs ref32, a near-tie
  flip accepted; all continue on the float64 codes, as parity-practice.md prescribes);
* rust: the Rust `pipeline` kind in one call, against the chained references;
* text: `Pipeline::tts` against `reference.pipeline.run_text` in both dtypes.
The walk names the FIRST stage out of tolerance. The final waveforms also go through the audio gate
(SNR dB, log-mel L1, max|Δ| against the float64 wav; thresholds in tolerances.AUDIO_GATE).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from reference import emotion as E
from reference import resample as R
from reference import pipeline as P

from . import candle
from .audio import AudioMetrics, audio_metrics
from .compare import Comparison, compare, compare_noise, effect_ratios
from .fixtures import Fixture, MissingCheckpoints, cache_dir, official_layout, real, synthetic
from .registry import MODELS
from .spec import ModelSpec
from .tolerances import AUDIO_GATE, EXACT, NEAR_TIE, NOISE, NoiseFloor, rule

# no weights: a config only (their reference module is built from the pipeline's config)
WEIGHTLESS = {"mel_spectrogram": P.MelRef, "resample": R.build}
LOOSE = ("emotion",)  # built from the loose official files (feat1.pt, feat2.pt), no registry row
KINDS = tuple(k for k in dict.fromkeys(st.kind for st in P.STAGES) if k not in WEIGHTLESS)
MODEL_KINDS = tuple(k for k in KINDS if k not in LOOSE)
# the loose files of the IndexTTS-2 checkpoint directory the pipeline reads besides the models
LOOSE_FILES = (E.STATS_FILE, *E.FILES.values(), "bpe.model")
TEXT_VARIANT = "unigram"  # the official bpe.model is a SentencePiece unigram model (parity/text_fixture.py)
# two languages, punctuation, and a small segment limit: several segments joined with silence
TEXT = "Hello world, this is a parity test. 你好，世界！We check every stage; then the audio."
TEXT_SEGMENT_TOKENS = 12

EMOTION_SPEC = ModelSpec(name="emotion", manifest="", configs={k: c["emotion"] for k, c in P.CONFIGS.items()},
                         build_reference=E.build, official_file=E.FILES["emo_matrix"], save_official=None,
                         config_json=E.config_json, cases=())


def _size(fxs: dict[str, Fixture]) -> str:
    return "tiny" if fxs["bigvgan"].cfg == P.CONFIGS["tiny"]["bigvgan"] else "full"


def references(fxs: dict[str, Fixture], device: str = "cpu", dtype=None) -> dict:
    """Every reference module at once, in `dtype` (default float32): for the benchmarks."""
    import torch

    dtype = dtype or torch.float32
    mods = {k: fx.reference(device, dtype) for k, fx in fxs.items()}
    if "bigvgan" in mods:
        mods["bigvgan"].remove_weight_norm()  # as infer_v2 runs the vocoder
    for k, build in WEIGHTLESS.items():
        mods[k] = build(P.CONFIGS[_size(fxs)][k])
    return mods


class LazyReferences(dict):
    """kind -> reference module in one dtype, built on first use and dropped by `release(kind)`
    (after the kind's last stage): at official size one float64 set of weights is ≈ 14 GB."""

    def __init__(self, fxs: dict[str, Fixture], device: str, dtype):
        super().__init__()
        self.fxs, self.device, self.dtype = fxs, device, dtype

    def __missing__(self, kind: str):
        if kind in WEIGHTLESS:
            m = WEIGHTLESS[kind](P.CONFIGS[_size(self.fxs)][kind])
        else:
            m = self.fxs[kind].reference(self.device, self.dtype)
        self[kind] = m
        return m

    def release(self, kind: str) -> None:
        import gc

        self.pop(kind, None)
        if kind in self.fxs:
            self.fxs[kind]._refs.pop((self.device, self.dtype), None)
        gc.collect()

    def release_all(self) -> None:
        for k in list(self):
            self.release(k)


class MixedReferences:
    """kind -> reference module for the official fp16 mode: the GPT in `gpt_dtype`, the rest float32."""

    def __init__(self, fxs: dict[str, Fixture], device: str, gpt_dtype):
        import torch

        self.half, self.full = LazyReferences(fxs, device, gpt_dtype), LazyReferences(fxs, device, torch.float32)

    def __getitem__(self, kind: str):
        return (self.half if kind == "gpt" else self.full)[kind]

    def release(self, kind: str) -> None:
        self.half.release(kind)
        self.full.release(kind)

    def release_all(self) -> None:
        self.half.release_all()
        self.full.release_all()


# Stages whose float outputs carry the GPT's half-precision noise in the mixed mode (the GPT's own and
# everything fed by its float outputs); the others (the speaker/emotion front end, vq_emb of the
# exact codes) are pure float32 there and keep the float32 rule.
GPT_HALF_STAGES = ("spk_latent", "emovec", "emo_mix", "code_logits", "latent", "s_infer", "target_cond", "cfm_mel", "wav")


def mixed_reference(fxs: dict[str, Fixture], inputs: dict, ref: "Reference", gpt_dtype: str,
                    device: str = "cpu") -> tuple[dict, list[str]]:
    """The reference pipeline end to end in the official fp16 mode (GPT in `gpt_dtype`, the rest in
    float32): the mixed mode's noise against `ref`'s float64 run. After a code flip of its own it
    continues on the float64 codes. Returns ({stage: outputs}, notes)."""
    import torch

    from .runner import TORCH_DTYPES

    notes: list[str] = []
    per64 = ref.per64

    def follow(name: str, outs: dict) -> dict:
        if name == "codes" and not _same(outs["codes"], per64["codes"]["codes"]):
            notes.append(f"mixed: the {gpt_dtype}-GPT reference's codes differ from the float64 ones; "
                         "it continues on the float64 codes")
            return {**outs, "codes": per64["codes"]["codes"]}
        return outs

    mods = MixedReferences(fxs, device, TORCH_DTYPES[gpt_dtype])
    try:
        per, _ = P.run(mods, inputs, torch.float32, follow=follow, release=mods.release,
                       dtypes={"gpt": TORCH_DTYPES[gpt_dtype]})
    finally:
        mods.release_all()
        release_references(fxs)
    return per, notes


def mixed_rust_walk(model, inputs: dict, ref: "Reference", per_mixed: dict, gpt_dtype: str,
                    device: str = "cpu") -> "PipelineWalk":
    """The Rust pipeline loaded with `gpt_dtype` (one call) against the float64 run, in units of the
    mixed-mode reference's own error: GPT_HALF_STAGES by NOISE_HALF[gpt_dtype], the rest by the
    float32 rule; codes exact against the mixed reference (near-tie rule)."""
    # AUDIO_GATE's absolute thresholds are float32's (the half GPT alone puts the reference's own wav
    # at ≈ 63 dB SNR): here the wav is judged by the noise rule like every stage, the metrics are kept.
    mixed = dataclasses.replace(ref, per32=per_mixed)
    return rust_walk(model, inputs, mixed, device, dtype_of=lambda stage: gpt_dtype if stage in GPT_HALF_STAGES else "float32",
                     mode=f"rust-{gpt_dtype}-gpt", gate=False)


@dataclass
class Reference:
    """The reference runs of one input set (deterministic: computed once, reused by every walk).
    per64/state64: float64 end to end (the truth); inputs64: each stage's method inputs in that run
    (what the forced walk feeds Candle and the float32 stages); forced32: each float32 reference
    stage on inputs64 (the forced walk's noise); per32/state32: float32 end to end (the chained and
    rust walks' noise; after a near-tie code flip of its own it continues on the float64 codes)."""

    per64: dict
    state64: dict
    inputs64: dict
    forced32: dict
    per32: dict
    state32: dict
    notes: list = field(default_factory=list)


def release_references(fxs: dict[str, Fixture]) -> None:
    import gc

    for fx in fxs.values():
        fx._refs.clear()
    gc.collect()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a == b))


def reference_run(fxs: dict[str, Fixture], inputs: dict, device: str = "cpu") -> Reference:
    """The float64 run, then the float32 runs (forced per stage, and end to end). Modules are
    dropped as soon as no later stage needs them; results are what callers keep."""
    import torch

    notes: list[str] = []
    m64 = LazyReferences(fxs, device, torch.float64)
    inputs64: dict = {}
    try:
        per64, state64 = P.run(m64, inputs, torch.float64, trace=inputs64, release=m64.release)
    finally:
        m64.release_all()

    def follow(name: str, outs: dict) -> dict:
        # the float32 reference's own near tie: continue on the float64 codes (parity-practice.md)
        if name == "codes" and not _same(outs["codes"], per64["codes"]["codes"]):
            notes.append(f"chained: the float32 reference's codes differ from the float64 ones "
                         f"({outs['codes'].shape[1]} vs {per64['codes']['codes'].shape[1]} codes); "
                         "it continues on the float64 codes")
            return {**outs, "codes": per64["codes"]["codes"]}
        return outs

    m32 = LazyReferences(fxs, device, torch.float32)
    try:
        forced32 = {st.name: P.run_stage_on(st, m32[st.kind], inputs64[st.name], torch.float32) for st in P.stages(inputs)}
        per32, state32 = P.run(m32, inputs, torch.float32, follow=follow, release=m32.release)
    finally:
        m32.release_all()
        release_references(fxs)
    if not _same(forced32["codes"]["codes"], per64["codes"]["codes"]):
        notes.append("forced: the float32 reference's codes differ from the float64 ones (a near tie of its own)")
    return Reference(per64, state64, inputs64, forced32, per32, state32, notes)


def spec_for(kind: str, size: str):
    """The registry row with the pipeline's consistent config in place of the model's own."""
    spec = MODELS[kind]
    return dataclasses.replace(spec, configs={**spec.configs, size: P.CONFIGS[size][kind]})


def missing_files(checkpoints: str) -> list[str]:
    need = [f"{MODELS[k].official_file} ({k})" for k in MODEL_KINDS] + [f"{f} (pipeline)" for f in LOOSE_FILES]
    return [n for n in need if not os.path.isfile(os.path.join(checkpoints, n.split(" (")[0]))]


def _synthetic_loose(size: str) -> str:
    """The loose official files (`wav2vec2bert_stats.pt`, `feat1.pt`, `feat2.pt`) at a size, cached."""
    import hashlib
    import inspect
    import json

    import torch

    c = P.CONFIGS[size]
    h = hashlib.sha256(json.dumps(c["emotion"], sort_keys=True).encode() + str(c["w2v_bert"]["hidden_size"]).encode()
                       + inspect.getsource(E).encode()).hexdigest()[:12]
    d = os.path.join(cache_dir(), "pipeline", f"loose-{size}-{h}")
    if not os.path.isfile(os.path.join(d, "done")):
        tmp = f"{d}.{os.getpid()}.tmp"
        os.makedirs(tmp, exist_ok=True)
        torch.save(E.synthetic_stats(c["w2v_bert"]["hidden_size"]), os.path.join(tmp, E.STATS_FILE))
        E.save_official(E.synthetic(c["emotion"]), tmp)
        open(os.path.join(tmp, "done"), "w").close()
        try:
            os.replace(tmp, d)  # atomic: safe across xdist workers
        except OSError:  # another worker won
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return d


def _merged(name: str, parts: list[tuple[str, str]]) -> str:
    """One safetensors from (prefix, file) parts (.pt read with weights_only, bare tensors under the
    prefix itself), cached by the parts' paths, sizes and mtimes."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from reference.convert import flatten, load_official

    h = hashlib.sha256("|".join(f"{p}:{f}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}" for p, f in parts).encode())
    path = os.path.join(cache_dir(), "pipeline", f"{name}-{h.hexdigest()[:12]}.safetensors")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = {}
        for prefix, f in parts:
            sd = load_file(f) if f.endswith(".safetensors") else flatten(load_official(f), f)[0]
            for k, v in sd.items():
                key = prefix if k == "tensor" else (f"{prefix}.{k}" if prefix else k)
                out[key] = v.contiguous()
        tmp = f"{path}.{os.getpid()}.tmp.safetensors"
        save_file(out, tmp)
        os.replace(tmp, path)
    return path


def bpe_model(checkpoints: str | None = None) -> str:
    """The text model: DIR/bpe.model, or the synthetic one (same vocabulary at both sizes)."""
    if checkpoints:
        return os.path.join(checkpoints, "bpe.model")
    from .text_fixture import synthetic_bpe_model

    return synthetic_bpe_model(variant=TEXT_VARIANT)


def bpe_path(fxs: dict[str, Fixture]) -> str:
    """The text model belonging to these fixtures (the checkpoint directory's for real files)."""
    g = fxs["gpt"]
    return bpe_model(os.path.dirname(g.official_path) if g.size == "real" else None)


def fixtures(size: str = "tiny", checkpoints: str | None = None) -> dict[str, Fixture]:
    """Every pipeline component at `size`, synthetic or from `checkpoints` (the official layout;
    `size` then only picks the configs: "full" = official, "tiny" for a tiny synthetic official
    directory, see parity/official_dir.py). The w2v-bert fixture gets `wav2vec2bert_stats.pt`
    merged in as `semantic_stats.*`; `emotion` is feat1.pt + feat2.pt."""
    if checkpoints:
        need = missing_files(checkpoints)
        if need:  # one message listing everything the pipeline needs, not the first miss only
            raise MissingCheckpoints(f"--checkpoints {checkpoints}: the pipeline needs these missing files: "
                                     f"{', '.join(need)}. Expected layout:\n{official_layout()}\n"
                                     + "".join(f"  {f}\n" for f in LOOSE_FILES))
        fxs = {k: real(spec_for(k, size), checkpoints, size) for k in MODEL_KINDS}
        loose = checkpoints
    else:
        fxs = {k: synthetic(spec_for(k, size), size) for k in MODEL_KINDS}
        loose = _synthetic_loose(size)
    w = fxs["w2v_bert"]
    from reference.w2v_bert import STATS

    w_cfg = {**w.cfg, "with_stats": True}
    fxs["w2v_bert"] = Fixture(dataclasses.replace(w.spec, configs={**w.spec.configs, size: w_cfg}), w.size, w_cfg,
                              w.official_path, _merged("w2v-stats", [("", w.safetensors_path),
                                                                     (STATS, os.path.join(loose, E.STATS_FILE))]))
    fxs["emotion"] = Fixture(EMOTION_SPEC, size, P.CONFIGS[size]["emotion"], os.path.join(loose, E.FILES["emo_matrix"]),
                             _merged("emotion", [(k, os.path.join(loose, f)) for k, f in E.FILES.items()]))
    return fxs


# Synthetic GPT weights, unlike trained ones, hardly ever emit the stop token, and infer_v2 cannot
# synthesise a segment without one (see `Pipeline::codes`). The sampled walks therefore raise the
# GPT's stop logit (`mel_head.bias[stop] += stop_bias`) and use make_inputs seeds whose cases stop
# within max_mel_tokens = 20. Both depend on the size's random weights, so each size has its own
# row, measured with `python -m parity.stop_cases SIZE` (the counts quoted below).
@dataclass(frozen=True)
class SampledCases:
    stop_bias: float
    beam3_seed: int     # infer_v2's 3 beams: the sampled walks and the report's case
    beam1_seed: int     # 1 beam
    text_seed: int      # 3 beams, the text of several segments: every segment stops with ≥ 1 code
    fault_seed: int     # 3 beams (and fault_options), the case on which every decoding fault changes the codes
    seeded_one_seed: int   # seeded mode (torch's generator), 1 beam, one segment
    seeded_text_seed: int | None  # seeded mode, 3 beams, the text: every segment stops with ≥ 1 code (None: not measured)
    fault_options: tuple = ()  # the decoding-fault case's decode options over infer_v2's defaults, (name, value) pairs


SAMPLED_CASES = {
    # tiny, max 20 codes: 3 beams end with 6-11 codes, 1 beam with 1-12 (seed 4, 1 beam: no stop at
    # all); at 1.5 and above most 3-beam runs stop within 0-3 codes, too short for the CFM and the
    # audio gate. 3 beams seed 1: 11 codes; 1 beam seed 0: 12. Of seeds 0-7 (3 beams) only 0 and 3
    # let every decoding fault change the codes; seed 3: 7 codes. Seeded, 1 beam, seed 3: 12 codes
    # (the 3-beam ones stop within 8); seeded text: of seeds 0-7, 2, 4 and 7 give every segment a code.
    "tiny": SampledCases(0.75, 1, 0, 1, 3, 3, 2),
    # official size (8194 codes, flatter logits: the stop sits 4.2-4.6 below the top and 3.3-3.6
    # below the 30th, so it is no top-k candidate below ≈ 3.4): at 3.2 no decode stops within 20
    # codes, at 3.8 3 beams stop within 0-8; at 3.5 3 beams end with 8-18 codes, 1 beam only on
    # seed 2 (14 codes); 3 beams seed 2: 11 codes. Text, 3 beams: seed 1 gives 3 11 18 14 17 17
    # codes per segment (seeds 0 and 2: a segment without a stop). Seeded, 1 beam: only seed 2 (11
    # codes). Seeded text, 3 beams: seed 0 has a segment without a stop, seed 1 stops in all 6.
    # Decoding faults: on infer_v2's defaults no seed of 0-7 is changed by `penalty_on_logits` (with
    # a penalty of 10 no repeated code is a top-30 candidate) or by `length_penalty_one`; length
    # penalty -1 with repetition penalty 1.5 leaves both blind too (the defaults' code counts on every
    # seed). Length penalty 2 (longer hypotheses win, so lp 1 differs) needs early stopping to end:
    # with it and repetition penalty 1.2, seeds 0 (15 codes) and 4 (18) are changed by all 6 (seeds
    # 1-3, 5 and 7 reach the 20-code limit). `python -m parity.stop_cases full --what faults
    # --fault-options '{"length_penalty": 2.0, "early_stopping": true, "repetition_penalty": 1.2}'`
    "full": SampledCases(3.5, 2, 2, 1, 0, 2, 1,
                         (("length_penalty", 2.0), ("early_stopping", True), ("repetition_penalty", 1.2))),
}


# the GPT's decoding faults: invisible to the greedy walks, named at stage `codes` by the sampled one
DECODE_FAULTS = ("penalty_on_logits", "top_p_one_too_few", "beam_scores_not_added", "kv_cache_not_reordered",
                 "length_penalty_one", "eos_beam_not_finalised")


def sampled_cases(fxs_or_size) -> SampledCases:
    size = fxs_or_size if isinstance(fxs_or_size, str) else _size(fxs_or_size)
    if size not in SAMPLED_CASES:
        raise ValueError(f"no measured sampled cases for size {size!r} (have {sorted(SAMPLED_CASES)})")
    return SAMPLED_CASES[size]


def fewest_gate_codes(size: str) -> int:
    """The fewest codes whose wav the audio gate can judge: its log-mel needs > n_fft (1024) samples,
    and n codes give int(n · LENGTH_RATIO) mel frames of hop(c) samples."""
    hop = P.hop(P.CONFIGS[size])
    return next(n for n in range(1, 10_000) if int(n * P.LENGTH_RATIO) * hop > 1024)


def sampled_fixtures(fxs: dict[str, Fixture], bias: float | None = None) -> dict[str, Fixture]:
    """`fxs` with the GPT's stop logit raised by `bias` (default: the size's measured stop_bias; a
    copy of its converted file, cached beside it); official checkpoints (`--checkpoints`) are used
    as they are."""
    import dataclasses

    from safetensors.torch import load_file, save_file

    fx = fxs["gpt"]
    if fx.size == "real":
        return fxs
    bias = sampled_cases(fx.size).stop_bias if bias is None else bias
    path = os.path.join(os.path.dirname(fx.safetensors_path), f"stop-biased-{bias:g}.safetensors")
    if not os.path.exists(path):
        sd = load_file(fx.safetensors_path)
        key = (fx.spec.prefix + "." if fx.spec.prefix else "") + "mel_head.bias"
        sd[key] = sd[key].clone()
        sd[key][fx.cfg["stop_mel_token"]] += bias
        tmp = path + f".{os.getpid()}.tmp.safetensors"
        save_file(sd, tmp)
        os.replace(tmp, path)  # atomic: safe across xdist workers
    return {**fxs, "gpt": dataclasses.replace(fx, safetensors_path=path, _refs={})}


def candle_model(fxs: dict[str, Fixture], kind: str, device: str = "cpu", faults: list[str] | None = None):
    import json

    if kind in WEIGHTLESS:  # any store will do (they read no key); the vocoder's file is always there
        return candle.Model(kind, fxs["bigvgan"].safetensors_path, json.dumps(P.CONFIGS[_size(fxs)][kind]), device,
                            faults or [], "")
    return fxs[kind].candle(device, faults or [])


def candle_models(fxs: dict[str, Fixture], device: str = "cpu", faults: dict[str, list[str]] | None = None) -> dict:
    faults = faults or {}
    return {k: candle_model(fxs, k, device, faults.get(k)) for k in (*fxs, *WEIGHTLESS)}


@dataclass
class StageResult:
    stage: str
    kind: str
    rows: list[Comparison] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)


@dataclass
class PipelineWalk:
    mode: str  # "forced" | "chained"
    device: str
    stages: list[StageResult] = field(default_factory=list)
    audio: AudioMetrics | None = None
    audio_fail: str = ""
    ref_state: dict = field(default_factory=dict, repr=False)  # the float64 run's
    candle_state: dict = field(default_factory=dict, repr=False)
    notes: list = field(default_factory=list)

    @property
    def first_failure(self) -> str | None:
        for s in self.stages:
            if not s.ok:
                return s.stage
        if len(self.stages) < len(P.STAGES):
            return P.STAGES[len(self.stages)].name
        return "audio_gate" if self.audio_fail else None

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    def table(self) -> str:
        lines = [f"[pipeline / {self.mode} / {self.device}]"] + [f"note: {n}" for n in self.notes]
        for s in self.stages:
            lines += [f"{s.stage:<12} {r.line()}" for r in s.rows]
            if s.note:
                lines.append(f"{s.stage:<12} note: {s.note}")
        if self.audio is not None:
            a = self.audio
            lines.append(f"audio gate   samples {a.samples} SNR {a.snr_db:.1f} dB  log-mel L1 {a.log_mel_l1:.3e}  "
                         f"max|Δ| {a.max_abs:.3e}  {'FAIL ' + self.audio_fail if self.audio_fail else 'ok'}")
        if not self.ok:
            lines.append(f"FIRST DIVERGENT STAGE: {self.first_failure}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"pipeline parity failed at stage `{self.first_failure}`\n{self.table()}")

    def rows(self) -> list[dict]:
        return [{"stage": s.stage, "kind": s.kind, "note": s.note, **r.row()} for s in self.stages for r in s.rows]


def _codes_row(name: str, ref: dict, got: np.ndarray, tol) -> tuple[Comparison, str, bool]:
    """Integer codes, exact against the float32 reference `ref` ({"codes", "margins"}), with the
    near-tie rule: a flip is accepted at the first differing step when that reference's top-2 logit
    margin there is below NEAR_TIE. Returns (row, note, flipped)."""
    rc, margins = ref["codes"], ref["margins"]
    c = compare(name, rc, got, tol)
    if c.ok:
        return c, "", False
    n = min(rc.shape[1], got.shape[1] if got.ndim == 2 else 0)
    diff = [i for i in range(n) if rc[0, i] != got[0, i]]
    k = diff[0] if diff else n  # length differs: the flip is at the step where one side stopped
    m = float(margins[k]) if k < len(margins) else float("inf")
    if m < NEAR_TIE:
        c.ok, c.reason = True, f"near-tie flip accepted at step {k} (reference top-2 margin {m:.2e} < {NEAR_TIE})"
        return c, c.reason + "; continuing on the reference codes", True
    c.reason += f"; first differing step {k}, reference top-2 margin {m:.3e} ≥ {NEAR_TIE}"
    return c, "", False


def _rows(st, r64: dict, r32: dict, got: dict, key: str, device: str, res: "StageResult", dtype: str = "float32") -> None:
    """One row per compared output: codes by the near-tie rule against ref32, the rest by
    compare_noise (floats: Candle vs ref64 within k × ref32's own noise; integers exact vs ref32).
    `dtype`: the precision of the noise run at this stage (the mixed mode's GPT stages: half)."""
    for o in st.compare:
        if o not in got:
            res.note = f"candle returned no `{o}`"
            continue
        name = f"{st.name}.{o}"
        tol = rule("pipeline", key + name, device, dtype)
        if st.name == "codes":
            row, note, _ = _codes_row(name, r32, got[o], tol)
            res.note = note
        else:
            row = compare_noise(name, r64[o], r32[o], got[o], tol)
        res.rows.append(row)


def walk(fxs: dict[str, Fixture], cms: dict, inputs: dict, mode: str, device: str = "cpu",
         ref: Reference | None = None, stop_at_failure: bool = False) -> PipelineWalk:
    """`ref` = a previous `reference_run` on the same inputs (the reference is deterministic; reuse it).
    forced: each Candle stage on the float64 run's stage inputs, against ref64 and the float32
    stage on the same inputs; chained: Candle end to end against the two end-to-end runs.
    `stop_at_failure`: the forced walk too ends at its first failing stage (a fault test reads only
    that; at official size the stages after it are most of the time). The chained walk always does."""
    if mode not in ("forced", "chained"):
        raise ValueError(mode)
    if ref is None:
        ref = reference_run(fxs, inputs, device)
    w = PipelineWalk(mode, device)
    c_state = {**inputs, **P.emotion_plan(inputs)}
    for st in P.stages(inputs):
        res = StageResult(st.name, st.kind)
        w.stages.append(res)
        r64 = ref.per64[st.name]
        r32 = ref.forced32[st.name] if mode == "forced" else ref.per32[st.name]
        ins = ref.inputs64[st.name] if mode == "forced" else st.inputs(c_state)
        try:
            got, _ = candle.run(cms[st.kind], st.method, ins)
        except Exception as e:  # a Candle error (shape, bad input) is this stage's failure
            res.note = f"candle raised {type(e).__name__}: {e}"
            break
        _rows(st, r64, r32, got, "" if mode == "forced" else "chained:", device, res)
        if mode == "chained":
            if st.name == "codes" and res.ok and not _same(got.get("codes", r64["codes"]), r64["codes"]):
                # an accepted near tie (or the float32 reference's own): every side continues on the
                # float64 codes, so the stages after it stay comparable
                res.note = (res.note or "codes differ from the float64 run's") + "; continuing on the float64 codes"
                got = {**got, "codes": r64["codes"]}
            c_state.update(st.post(got, c_state))
            if not res.ok:
                break  # downstream of a broken chained stage nothing is meaningful
        elif stop_at_failure and not res.ok:
            break
    w.ref_state, w.candle_state = ref.state64, c_state
    w.notes = [n for n in ref.notes if n.startswith(mode)]
    if mode == "chained" and w.first_failure is None:
        w.audio = audio_metrics(ref.state64["wav"], c_state["wav"])
        w.audio_fail = audio_gate_failure(w.audio)
    return w


def fault_effect(cms: dict, broken, ref: Reference, inputs: dict, stage: str, device: str = "cpu") -> tuple[float, float, str]:
    """A fault's own effect at `stage`: the broken Candle model against the correct one on the float64
    run's stage inputs (the same arithmetic otherwise), in units of the float32 reference's error
    there. → (worst max ratio, worst rms ratio, the output they belong to). A fault that no walk
    names at official size must stand below the threshold here: no float32 run can see it."""
    st = next(s for s in P.stages(inputs) if s.name == stage)
    ins = ref.inputs64[stage]
    bad, _ = candle.run(broken, st.method, ins)
    good, _ = candle.run(cms[st.kind], st.method, ins)
    worst = (0.0, 0.0, "")
    for o in st.compare:
        r = effect_ratios(bad[o], good[o], ref.per64[stage][o], ref.forced32[stage][o])
        if max(r[0] / NOISE.k_max, r[1] / NOISE.k_rms) > max(worst[0] / NOISE.k_max, worst[1] / NOISE.k_rms):
            worst = (*r, f"{stage}.{o}")
    return worst


def audio_gate_failure(a: AudioMetrics) -> str:
    g = AUDIO_GATE
    bad = []
    if not a.snr_db >= g["min_snr_db"]:
        bad.append(f"SNR {a.snr_db:.1f} dB < {g['min_snr_db']}")
    if not a.log_mel_l1 <= g["max_log_mel_l1"]:
        bad.append(f"log-mel L1 {a.log_mel_l1:.3e} > {g['max_log_mel_l1']}")
    if not a.max_abs <= g["max_abs"]:
        bad.append(f"max|Δ| {a.max_abs:.3e} > {g['max_abs']}")
    return "; ".join(bad)


# ---- the Rust `pipeline` kind (crates/indextts2_candle/src/pipeline.rs) ---------------------------
# Prefix of each component's converted keys in the one pipeline safetensors (= pipeline.rs PREFIXES;
# the two s2mel kinds share `s2mel.` + their `net.…` keys).
RUST_PREFIX = {"w2v_bert": "w2v_bert.", "semantic_codec": "semantic_codec.", "campplus": "campplus.", "gpt": "gpt.",
               "length_regulator": "s2mel.", "dit": "s2mel.", "bigvgan": "bigvgan.", "emotion": "emotion."}
SYNTH_INPUTS = ("speaker", "text", "z_pool", "t_span", "emo_alpha")
# greedy: max_tokens; sampled: decode_options + draws (or seed)
SYNTH_OPTIONAL = ("emo_16k", "emo_weights", "max_tokens", "decode_options", "draws", "seed")


def synth_inputs(inputs: dict, text: bool = True) -> dict:
    """The inputs of the Rust pipeline's `synthesize` (`text=False`: of `tts`, which takes the text
    as code points instead)."""
    return {k: inputs[k] for k in SYNTH_INPUTS + SYNTH_OPTIONAL if k in inputs and (text or k != "text")}


def rust_files(fxs: dict[str, Fixture]) -> tuple[str, str]:
    """(one safetensors with every component under its prefix, the pipeline config JSON), cached."""
    import hashlib
    import json

    from safetensors.numpy import load_file, save_file

    from .fixtures import cache_dir

    h = hashlib.sha256("|".join(fxs[k].safetensors_path for k in KINDS).encode()).hexdigest()[:12]
    d = os.path.join(cache_dir(), "pipeline")
    path = os.path.join(d, f"pipeline-{h}.safetensors")
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        merged: dict = {}
        for k in KINDS:
            for key, v in load_file(fxs[k].safetensors_path).items():
                merged.setdefault(RUST_PREFIX[k] + key, v)
        tmp = path + f".{os.getpid()}.tmp.safetensors"
        save_file(merged, tmp)
        os.replace(tmp, path)  # atomic: safe across xdist workers
    cfg = {k: json.loads(fxs[k].spec.config_json(fxs[k].cfg)) for k in KINDS}
    for k in WEIGHTLESS:
        cfg[k] = P.CONFIGS[_size(fxs)][k]
    cfg["bpe_model"] = bpe_path(fxs)
    if cfg["w2v_bert"].get("stats"):  # stats are read from the store's root: give their full key
        cfg["w2v_bert"]["stats"] = RUST_PREFIX["w2v_bert"] + cfg["w2v_bert"]["stats"]
    return path, json.dumps(cfg)


def rust_pipeline(fxs: dict[str, Fixture], device: str = "cpu", faults: list[str] | None = None,
                  gpt_dtype: str | None = None):
    """faults: `<kind>:<fault>` names (the components' own switches); gpt_dtype: the official fp16
    mode's GPT precision (config `gpt_dtype`; None = float32 throughout)."""
    import json

    path, cfg = rust_files(fxs)
    if gpt_dtype is not None:
        cfg = json.dumps({**json.loads(cfg), "gpt_dtype": gpt_dtype})
    return candle.Model("pipeline", path, cfg, device, faults or [], "")


def rust_walk(model, inputs: dict, ref: Reference, device: str = "cpu", dtype_of=lambda stage: "float32",
              mode: str = "rust", gate: bool = True) -> PipelineWalk:
    """The Rust pipeline end to end (chained by construction) against the end-to-end references,
    same rows as the Python-composed chained walk. It cannot be teacher-forced: a near-tie flip of a
    code is reported as accepted but the stages after it then differ in length."""
    w = PipelineWalk(mode, device)
    try:
        outs, _ = candle.run(model, "synthesize", synth_inputs(inputs))
    except Exception as e:
        w.stages.append(StageResult(P.STAGES[0].name, "pipeline", note=f"candle raised {type(e).__name__}: {e}"))
        return w
    c_state = dict(inputs)
    for st in P.stages(inputs):
        res = StageResult(st.name, st.kind)
        w.stages.append(res)
        got = {o: outs[f"{st.name}.{o}"] for o in st.compare if f"{st.name}.{o}" in outs}
        _rows(st, ref.per64[st.name], ref.per32[st.name], got, "chained:", device, res, dtype_of(st.name))
        if len(got) < len(st.compare):
            res.note = f"the Rust pipeline returned no `{st.name}.{next(o for o in st.compare if o not in got)}`"
        if not res.ok:
            break
    if "wav.wav" in outs:
        c_state["wav"] = outs["wav.wav"]
        c_state["mel"] = outs["cfm_mel.mel"][:, :, outs["ref_mel.mel"].shape[2]:]
    w.ref_state, w.candle_state = ref.state64, c_state
    w.notes = [n for n in ref.notes if n.startswith("chained")]
    if w.first_failure is None:
        w.audio = audio_metrics(ref.state64["wav"], c_state["wav"])
        w.audio_fail = audio_gate_failure(w.audio) if gate else ""
    return w


# ---- text to speech: bpe.model → segments → joined wav (Rust `tts` vs reference.pipeline.run_text) --
@dataclass
class TextResult:
    rows: list[Comparison]
    audio: AudioMetrics | None
    audio_fail: str
    ref: dict  # the float64 run
    candle: dict
    ref32: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and self.audio is not None and not self.audio_fail

    def table(self) -> str:
        lines = ["[pipeline / text]"] + [f"text         {r.line()}" for r in self.rows]
        if self.audio is not None:
            a = self.audio
            lines.append(f"audio gate   samples {a.samples} SNR {a.snr_db:.1f} dB  log-mel L1 {a.log_mel_l1:.3e}  "
                         f"max|Δ| {a.max_abs:.3e}  {'FAIL ' + self.audio_fail if self.audio_fail else 'ok'}")
        return "\n".join(lines)


def text_reference(fxs: dict[str, Fixture], inputs: dict, text: str = TEXT,
                   max_segment_tokens: int = TEXT_SEGMENT_TOKENS, device: str = "cpu") -> tuple[dict, dict]:
    """`reference.pipeline.run_text` in float64 (the truth) and float32 (its noise), end to end."""
    import torch

    from reference.text import TextTokenizer

    runs = []
    for dtype in (torch.float64, torch.float32):
        mods = LazyReferences(fxs, device, dtype)
        try:
            runs.append(P.run_text(mods, inputs, TextTokenizer(bpe_path(fxs)), text, max_segment_tokens, dtype=dtype,
                                   release=mods.release))
        finally:
            mods.release_all()
            release_references(fxs)
    return runs[0], runs[1]


def text_walk(fxs: dict[str, Fixture], inputs: dict, text: str = TEXT, max_segment_tokens: int = TEXT_SEGMENT_TOKENS,
              device: str = "cpu", model=None, ref: tuple[dict, dict] | None = None) -> TextResult:
    """Token ids and segmentation exact (vs the float32 reference), the joined wav by the noise
    rule (`text.wav`) and the audio gate against the float64 wav."""
    ref64, ref32 = ref or text_reference(fxs, inputs, text, max_segment_tokens, device)
    model = model or rust_pipeline(fxs, device)
    ins = synth_inputs(inputs, text=False)
    ins["text_codepoints"] = np.array([ord(c) for c in text], np.int64)
    ins["max_segment_tokens"] = np.array([max_segment_tokens], np.int64)
    got, _ = candle.run(model, "tts", ins)
    rows = [compare("text.ids", np.array([i for s in ref32["segments"] for i in s], np.int64), got["ids"], EXACT),
            compare("text.segment_lens", np.array([len(s) for s in ref32["segments"]], np.int64), got["segment_lens"], EXACT),
            compare("text.segment_samples", np.array([w.shape[-1] for w in ref32["wavs"]], np.int64),
                    got["segment_samples"], EXACT)]
    rows.append(compare_noise("text.wav", ref64["wav"], ref32["wav"], got["wav"], rule("pipeline", "text.wav", device, "float32")))
    audio = audio_metrics(ref64["wav"], got["wav"]) if got["wav"].shape == ref64["wav"].shape else None
    fail = "shapes differ" if audio is None else audio_gate_failure(audio)
    return TextResult(rows, audio, fail, ref64, got, ref32)


# ---- report section (python -m parity report) -----------------------------------------------------
def _plot_mels(ref_mel: np.ndarray, got_mel: np.ndarray, ref_wav: np.ndarray, got_wav: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .audio import log_mel

    rows = [("CFM mel (target part)", ref_mel[0], got_mel[0]),
            ("log-mel of the wav (80 bands)", log_mel(ref_wav.ravel()), log_mel(got_wav.ravel()))]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6))
    for (title, r, g), ax in zip(rows, axes):
        lo, hi = float(min(r.min(), g.min())), float(max(r.max(), g.max()))
        for a, img, name in ((ax[0], r, "reference"), (ax[1], g, "Candle")):
            im = a.imshow(img, origin="lower", aspect="auto", vmin=lo, vmax=hi)
            a.set_title(f"{title}: {name}", fontsize=9)
            fig.colorbar(im, ax=a)
        im = ax[2].imshow(g - r, origin="lower", aspect="auto", cmap="coolwarm")
        ax[2].set_title(f"Candle − reference (max |Δ| {float(np.abs(g - r).max()):.1e})", fontsize=9)
        fig.colorbar(im, ax=ax[2])
    for a in axes[-1]:
        a.set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _md_row(stage: str, kind: str, r: Comparison) -> str:
    """ratio max / rms (Candle's error over the float32 reference's own), Candle's error vs float64,
    ref32's own noise; integer and hand-set rows show their count / max|Δ| and their rule."""
    ok = "✓" if r.ok else "✗"
    if isinstance(r.tol, NoiseFloor):
        return (f"| {stage} | {kind} | `{r.name}` | {list(r.shape)} | {r.ratio_max:.2f} | {r.ratio_rms:.2f} | "
                f"{r.max_abs:.2e} | {r.err_rms:.2e} | {r.noise_max:.2e} | {r.noise_rms:.2e} | {r.snr_db:.1f} | "
                f"noise k {r.tol.k_max:g}/{r.tol.k_rms:g} | {ok} |")
    rule_ = ("exact" if r.tol is None or (r.tol.atol == 0 and r.tol.rtol == 0)
             else f"hand-set atol {r.tol.atol:.0e} ({r.tol.note})")
    return (f"| {stage} | {kind} | `{r.name}` | {list(r.shape)} | - | - | {r.max_abs:.2e} | - | - | - | "
            f"{r.snr_db:.1f} | {rule_} | {ok} |")


MD_HEAD = ["| stage | kind | output | shape | ratio max | ratio rms | max abs Δ (vs f64) | rms Δ | ref32 noise max | "
           "ref32 noise rms | SNR dB | rule | ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def _walks(entry: dict, md: list, failed: list, label: str, fxs, cms, inputs, ref, device):
    """The forced, chained and rust walks of one case into `entry` / `md` / `failed`; returns the chained walk."""
    chained = None
    for mode in ("forced", "chained", "rust"):
        w = rust_walk(rust_pipeline(fxs, device), inputs, ref, device) if mode == "rust" else walk(fxs, cms, inputs, mode, device, ref=ref)
        chained = w if mode == "chained" else chained
        entry["walks"].append({"mode": mode, "ok": w.ok, "first_failure": w.first_failure, "rows": w.rows(),
                               "audio": None if w.audio is None else w.audio.row(), "audio_fail": w.audio_fail})
        md += [f"### pipeline — {label}{mode}: {'OK' if w.ok else 'FAIL at stage `' + str(w.first_failure) + '`'}", ""] + MD_HEAD
        for s in w.stages:
            md += [_md_row(s.stage, s.kind, r) for r in s.rows]
            if s.note:
                md.append(f"| {s.stage} | {s.kind} | note | {s.note} | | | | | | | | | |")
        md.append("")
        if w.audio is not None:
            a = w.audio
            md += [f"Audio gate vs the float64 wav ({a.samples} samples): SNR {a.snr_db:.1f} dB (≥ {AUDIO_GATE['min_snr_db']}), "
                   f"log-mel L1 {a.log_mel_l1:.2e} (≤ {AUDIO_GATE['max_log_mel_l1']}), max|Δ| {a.max_abs:.2e} "
                   f"(≤ {AUDIO_GATE['max_abs']}): {'OK' if not w.audio_fail else 'FAIL ' + w.audio_fail}", ""]
        if not w.ok:
            failed.append(f"pipeline/{label}{mode}: first divergent stage `{w.first_failure}`")
    return chained


def _text_md(md: list, failed: list, t: "TextResult", label: str, what: str, *intro: str) -> dict:
    """One text walk's markdown (into `md`) and failure (into `failed`); returns its JSON entry."""
    md += [f"### pipeline — {label} ({what}): {'OK' if t.ok else 'FAIL'}", "", *intro, *([""] if intro else [])] + MD_HEAD
    md += [_md_row("text", "pipeline", r) for r in t.rows]
    if t.audio is not None:
        md += ["", f"Audio gate: SNR {t.audio.snr_db:.1f} dB, log-mel L1 {t.audio.log_mel_l1:.2e}, max|Δ| {t.audio.max_abs:.2e}"
               f"{': FAIL ' + t.audio_fail if t.audio_fail else ''}"]
    md.append("")
    if not t.ok:
        failed.append(f"pipeline/{label}: " + (t.audio_fail or "ids, segments or wav differ"))
    return {"ok": t.ok, "segments": t.ref["segments"], "rows": [r.row() for r in t.rows],
            "audio": None if t.audio is None else t.audio.row(), "audio_fail": t.audio_fail}


def report_section(out: str, size: str, checkpoints: str | None, device: str, write_wav) -> tuple[dict, list[str], list[str]]:
    """Runs every walk; returns (JSON entry, markdown lines, failures) and writes the pipeline wavs
    and pipeline_mels.png under `out`."""
    fxs = fixtures(size, checkpoints)
    cms = candle_models(fxs, device)
    inputs = P.make_inputs(P.CONFIGS[size], 0)
    ref = reference_run(fxs, inputs, device)
    entry, failed = {"walks": [], "notes": ref.notes}, []
    md = ["## pipeline (stage by stage)", "",
          "The reference runs in float64 (truth) and float32 (noise). forced: each Candle stage and each float32 "
          "reference stage get the float64 run's previous outputs (the stage's own error); chained: Candle, ref32 "
          "and ref64 each end to end; rust: the Rust `pipeline` kind in one call. ratio = Candle's error vs float64 "
          "over the float32 reference's own (max, rms); integers exact vs float32.", ""]
    md += [f"Note: {n}" for n in ref.notes]
    chained = _walks(entry, md, failed, "", fxs, cms, inputs, ref, device)
    # the official decoding: infer_v2's beam sampling on given Exp(1) draws (stop-biased tiny GPT)
    sfxs = sampled_fixtures(fxs)
    cases = sampled_cases(size)
    s_inputs = P.make_inputs(P.CONFIGS[size], cases.beam3_seed, decoding="sampled")
    s_ref = reference_run(sfxs, s_inputs, device)
    codes = s_ref.per64["codes"]["codes"]
    md += ["## pipeline — sampled decoding (infer_v2's beam sampling)", "",
           f"Text ids → infer_v2's decoding (3 beams, top-k 30, top-p 0.8, temperature 0.8, repetition penalty 10) on "
           f"the same Exp(1) draws on every side → codes ({codes.shape[1]} codes, "
           f"{int(s_ref.per64['codes']['draws_used'][0])} draws) → wav through the audio gate."
           + ("" if sfxs is fxs else f" The synthetic GPT's stop logit is raised by {cases.stop_bias:g} (trained weights end "
              "utterances, random ones hardly ever; infer_v2 cannot synthesise a segment without a stop token)."), ""]
    md += [f"Note: {n}" for n in s_ref.notes]
    s_entry: dict = {"walks": [], "notes": s_ref.notes, "codes": codes.tolist(), "stop_bias": 0.0 if sfxs is fxs else cases.stop_bias}
    _walks(s_entry, md, failed, "sampled ", sfxs, candle_models(sfxs, device), s_inputs, s_ref, device)
    st = text_walk(sfxs, P.make_inputs(P.CONFIGS[size], cases.text_seed, decoding="sampled"), device=device)
    s_entry["text"] = _text_md(md, failed, st, "sampled text", f"{len(st.ref['segments'])} segments, the draws "
                               "consumed on from segment to segment")
    entry["sampled"] = s_entry
    del cms
    t = text_walk(fxs, inputs, device=device)
    entry["text"] = {"text": TEXT, **_text_md(md, failed, t, "text", f"{len(t.ref['segments'])} segments through "
                                              f"`bpe.model`, joined with 200 ms silences", f"Text: “{TEXT}”")}
    if t.ok:
        write_wav(os.path.join(out, "pipeline_text_reference.wav"), t.ref["wav"], 22050)
        write_wav(os.path.join(out, "pipeline_text_candle.wav"), t.candle["wav"], 22050)
        md += ["Wavs: `pipeline_text_reference.wav` (float64 reference), `pipeline_text_candle.wav`.", ""]
    if chained is not None and "wav" in chained.candle_state and "wav" in chained.ref_state:
        sr = fxs["bigvgan"].cfg["sampling_rate"]
        write_wav(os.path.join(out, "pipeline_reference.wav"), chained.ref_state["wav"], sr)
        write_wav(os.path.join(out, "pipeline_candle.wav"), chained.candle_state["wav"], sr)
        _plot_mels(chained.ref_state["mel"], chained.candle_state["mel"], chained.ref_state["wav"],
                   chained.candle_state["wav"], os.path.join(out, "pipeline_mels.png"))
        md += ["Wavs: `pipeline_reference.wav`, `pipeline_candle.wav`; spectrograms: `pipeline_mels.png`.", ""]
    return entry, md, failed


# ---- survey: the worst ratios per stage and walk on correct code (the measurement behind k) --------
def survey(seeds=(0, 1, 2, 3), size: str = "tiny", emotions=P.EMOTIONS, device: str = "cpu", text: bool = True) -> dict:
    """{(walk, row): (worst ratio_max, worst ratio_rms, where)} over seeds × emotion inputs; prints a table."""
    fxs = fixtures(size)
    cms = candle_models(fxs, device)
    rust = rust_pipeline(fxs, device)
    worst: dict = {}
    fails: list[str] = []

    def add(mode: str, rows, where: str):
        for r in rows:
            if not r.ok:
                fails.append(f"{mode} {r.name} {where}: {r.reason}")
            if not isinstance(r.tol, NoiseFloor):
                continue
            k = (mode, r.name)
            m0, r0, _ = worst.get(k, (-1.0, -1.0, ""))
            worst[k] = (max(m0, r.ratio_max), max(r0, r.ratio_rms), where if r.ratio_max > m0 else worst.get(k, (0, 0, where))[2])

    for seed in seeds:
        for emo in emotions:
            inputs = P.make_inputs(P.CONFIGS[size], seed, emotion=emo)
            ref = reference_run(fxs, inputs, device)
            for mode in ("forced", "chained", "rust"):
                w = rust_walk(rust, inputs, ref, device) if mode == "rust" else walk(fxs, cms, inputs, mode, device, ref=ref)
                add(mode, [r for s in w.stages for r in s.rows], f"seed {seed} {emo}")
                if not w.ok:
                    fails.append(f"{mode} seed {seed} {emo}: first failure {w.first_failure} {w.audio_fail}")
                if w.audio is not None:
                    k = (mode, "audio SNR dB (min)")
                    worst[k] = (min(worst.get(k, (1e9,))[0], w.audio.snr_db), 0.0, f"seed {seed} {emo}")
            if text and emo == "speaker":
                t = text_walk(fxs, inputs, device=device, model=rust)
                add("text", t.rows, f"seed {seed}")
                if t.audio is not None:
                    k = ("text", "audio SNR dB (min)")
                    worst[k] = (min(worst.get(k, (1e9,))[0], t.audio.snr_db), 0.0, f"seed {seed}")
    print(f"pipeline survey, {size}, seeds {list(seeds)}, emotions {list(emotions)}: worst ratio max / rms")
    for (mode, name), (m, r, where) in worst.items():
        print(f"  {mode:<8} {name:<28} {m:8.3f} {r:8.3f}   ({where})")
    print("failures:" if fails else "no failures", *fails, sep="\n  ")
    return worst


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="pipeline noise-floor survey (worst ratios on correct code)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--emotions", nargs="*", default=list(P.EMOTIONS))
    ap.add_argument("--no-text", action="store_true")
    a = ap.parse_args()
    survey(a.seeds, a.size, a.emotions, text=not a.no_text)
