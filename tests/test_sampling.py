"""Official decoding (issue 12): the beam-sampled `generate` infer_v2 runs, in Candle
(`crates/indextts2_candle/src/sampling/`, gpt method `generate_sampled`) against the reference
(`reference/sampling.py`), which is itself checked against the official `inference_speech`.

Randomness is an input: Python draws q ~ Exp(1) (beams × vocab per step, what torch.multinomial
draws) and hands the same draws to both sides; `seed=s` in Candle reproduces torch's CPU stream.
Each step is compared stage by stage — logits, processed scores, drawn candidates, chosen beams,
hypotheses — and the first (step, stage) that breaks is named. Run: `pytest -k sampling`.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from parity import candle
from parity.bench import measure
from parity.registry import MODELS
from reference import sampling as S
from reference.gpt import step_inputs

SPEC = MODELS["gpt"]
# Near-tie rule (log domain). A differing candidate set/order is accepted only where the
# reference's own margin — log of the n-th over the (n+1)-th drawn ratio p/q, or the gap between
# consecutive sorted candidate scores — is below NEAR_TIE; the walk then continues forced on the
# reference's candidates. A log-ratio moves by at most the error of the two scores it compares
# (measured, see STAGE_TOL: tiny ≤ 1.1e-5, full size ≤ 2.3e-5), so 1e-3 is far above the
# noise while a real bug moves scores by ≥ 1e-1. Smallest reference margins seen: tiny 2.8e-4,
# full size 1.8e-4 (no flip at either).
NEAR_TIE = 1e-3
# Float stages: max |Δ| allowed over finite entries, measured on correct code from the per-step
# records (1/3 beams × both emovecs, 20 steps): tiny seeds 0-5: logits 2.3e-6, scores 6.1e-6,
# beam scores 1.1e-5; full size seed 0: logits 1.1e-5, scores 1.1e-5, beam scores 2.3e-5.
# Set at ~10×.
STAGE_TOL = {"tiny": {"logits": 2e-5, "scores": 6e-5, "beam_scores": 1e-4},
             "full": {"logits": 1e-4, "scores": 1e-4, "beam_scores": 2e-4}}
FAULT_EXPECT = {  # fault → (stage, how the step is found on the reference trace)
    "penalty_on_logits": ("scores", "first"),
    "top_p_one_too_few": ("scores", "first"),
    "beam_scores_not_added": ("cand", "first"),
    "kv_cache_not_reordered": ("logits", "after_reorder"),
    "length_penalty_one": ("hyps", "hyp_after_0"),
    "eos_beam_not_finalised": ("hyps", "first_hyp"),
}


def _opts(d: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(d).encode(), np.uint8).astype(np.int64)


def _t(inputs):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def _draws(seed: int, steps: int, beams: int, vocab: int) -> np.ndarray:
    return torch.empty(steps * beams * vocab).exponential_(1, generator=torch.Generator().manual_seed(seed)).numpy()


def _inputs(cfg, ref, seed: int, emo: str) -> dict:
    """Speaker latent, text and an emovec: `merge` = the GPT's own emotion path on random features
    (infer_v2 without an emotion vector), `vector` = that plus an 8-weight-style mix of rows."""
    inp = step_inputs(cfg, 200 + seed)
    del inp["codes"]
    rng = np.random.default_rng(300 + seed)
    feats = torch.from_numpy(rng.standard_normal((1, 19, cfg["cond_input_size"])).astype(np.float32))
    with torch.no_grad():
        ev = ref.get_emovec(feats, torch.tensor([19])).numpy()
    if emo == "vector":
        w = rng.uniform(0, 0.2, 8).astype(np.float32)
        rows = rng.standard_normal((8, cfg["model_dim"])).astype(np.float32)
        ev = (w @ rows)[None] + (1 - w.sum()) * ev
    inp["emovec"] = ev.astype(np.float32)
    return inp


def _candle(cm, inp, opts, q, forced=None):
    args = dict(inp, options=_opts(opts), draws=q, trace=np.array([1]))
    if forced is not None and len(forced):
        args["forced"] = np.asarray(forced, np.int64)
    return candle.run(cm, "generate_sampled", args)[0]


def _reference(ref, inp, opts, q):
    t = _t(inp)
    seq, tr = S.decode(ref, t["spk_latent"], t["emovec"], t["text"], opts, S.GivenDraws(q))
    return seq.numpy(), tr


def first_break(got, tr, B, V, tol, start=0):
    """First (step, stage, detail) where Candle's record leaves the reference's, from `start` on."""
    steps = min(int(got["steps"][0]), len(tr["hyps"]))
    for s in range(start, steps):
        g = {k: got[k][s] for k in ("logits", "scores", "cand", "beam_tokens", "beam_idx", "beam_scores", "hyps", "hyp_worst")}
        r = {k: tr[k][s].reshape(g[k].shape) for k in g}
        d = np.abs(g["logits"] - r["logits"]).max()
        if d > tol["logits"]:
            return s, "logits", f"max|Δ| {d:.3g}"
        fin = np.isfinite(r["scores"])
        if not np.array_equal(fin, np.isfinite(g["scores"])):
            return s, "scores", f"{int((fin != np.isfinite(g['scores'])).sum())} tokens filtered differently"
        d = np.abs(g["scores"][fin] - r["scores"][fin]).max()
        if d > tol["scores"]:
            return s, "scores", f"max|Δ| {d:.3g}"
        if not np.array_equal(g["cand"], r["cand"]):
            return s, "cand", f"candle {g['cand'].tolist()} reference {r['cand'].tolist()}"
        if not (np.array_equal(g["beam_tokens"], r["beam_tokens"]) and np.array_equal(g["beam_idx"], r["beam_idx"])):
            return s, "beams", f"candle {g['beam_tokens'].tolist()}@{g['beam_idx'].tolist()} reference {r['beam_tokens'].tolist()}@{r['beam_idx'].tolist()}"
        live = r["beam_scores"] > -1e8
        if np.abs(g["beam_scores"][live] - r["beam_scores"][live]).max(initial=0) > tol["beam_scores"]:
            return s, "beam_scores", f"candle {g['beam_scores']} reference {r['beam_scores']}"
        hw = abs(float(g["hyp_worst"]) - float(r["hyp_worst"]))
        if g["hyps"] != r["hyps"] or not (hw <= tol["beam_scores"] or g["hyp_worst"] == r["hyp_worst"]):
            return s, "hyps", f"candle {int(g['hyps'])} (worst {float(g['hyp_worst']):.4g}), reference {int(r['hyps'])} (worst {float(r['hyp_worst']):.4g})"
    if int(got["steps"][0]) != len(tr["hyps"]):
        return steps, "stop", f"candle ran {int(got['steps'][0])} steps, reference {len(tr['hyps'])}"
    return None


def walk(cm, ref, inp, opts, q, size):
    """Chained walk with the near-tie rule → (steps compared, accepted flips, reference sequences)."""
    B, V = opts["num_beams"], ref.cfg["number_mel_codes"]
    tol = STAGE_TOL[size]
    seq, tr = _reference(ref, inp, opts, q)
    forced, flips, start = [], [], 0
    while True:
        got = _candle(cm, inp, opts, q, forced)
        br = first_break(got, tr, B, V, tol, start)
        if br is None:
            break
        s, stage, detail = br
        m = tr["margin"][s] if s < len(tr["margin"]) else float("inf")
        assert stage == "cand" and m < NEAR_TIE, (
            f"decoding breaks at step {s}, stage {stage}: {detail} (reference margin {m:.3g}, near-tie {NEAR_TIE})")
        flips.append((s, m))
        forced = [row.tolist() for row in tr["cand"][: s + 1]]
        start = s + 1
    assert got["sequences"].tolist() == seq.tolist(), "final sequences differ after an identical walk"
    want_codes, want_lens = S.infer_v2_trim(torch.from_numpy(seq), ref.cfg["stop_mel_token"])
    assert got["codes"].tolist() == want_codes.tolist() and got["code_lens"].tolist() == want_lens.tolist()
    assert int(got["draws_used"][0]) == len(tr["hyps"]) * B * V, "every entry of every step is drawn"
    return len(tr["hyps"]), flips, seq


def _stop_biased(tmp_path, fx, bias):
    """The fixture with `mel_head.bias[stop]` raised, so stop candidates appear within a few steps."""
    from safetensors.torch import load_file, save_file

    from reference.gpt import build_reference

    sd = load_file(fx.safetensors_path)
    sd["mel_head.bias"] = sd["mel_head.bias"].clone()
    sd["mel_head.bias"][fx.cfg["stop_mel_token"]] += bias
    path = str(tmp_path / "stop_biased.safetensors")
    save_file(sd, path)
    ref = build_reference(fx.cfg)
    ref.load_state_dict(sd, strict=True)
    return path, ref


STATS = {"steps": 0, "flips": []}


@pytest.mark.parametrize("emo", ["merge", "vector"])
@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_sampling_codes_identical(seed, beams, emo, fixtures, candle_models, size):
    """Same draws → the same codes, step by step (near-tie rule), at the fixture's size."""
    fx = fixtures("gpt")
    ref, cm = fx.reference(), candle_models("gpt")
    steps = 10 if size == "full" else min(20, fx.cfg["max_mel_tokens"] - 4)  # full size: ~4 s a step on 2 cores
    opts = dict(num_beams=beams, max_mel_tokens=steps)
    inp = _inputs(fx.cfg, ref, seed, emo)
    q = _draws(seed, steps, beams, fx.cfg["number_mel_codes"])
    n, flips, _ = walk(cm, ref, inp, opts, q, "full" if size == "full" else "tiny")
    STATS["steps"] += n
    STATS["flips"] += flips
    print(f"steps compared {n}, flips {flips}; running total {STATS['steps']} steps, {len(STATS['flips'])} flips")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_stop_tokens_and_hypotheses(seed, tmp_path, fixtures, size):
    """With the stop logit raised, stop candidates become hypotheses, beams finish early and the
    decode ends on `is_done`: every stage still agrees, and infer_v2's trimming too."""
    if size == "full":
        pytest.skip("tiny only: rewrites the checkpoint (2 GB at official size); the decode code is size-independent")
    fx = fixtures("gpt")
    path, ref = _stop_biased(tmp_path, fx, 2.5)
    cm = candle.Model("gpt", path, SPEC.config_json(fx.cfg), "cpu", [], SPEC.prefix)
    for beams, ret in ((3, 1), (3, 2), (1, 1)):
        opts = dict(num_beams=beams, max_mel_tokens=20, num_return_sequences=ret)
        q = _draws(seed, 20, beams, fx.cfg["number_mel_codes"])
        n, flips, seq = walk(cm, ref, _inputs(fx.cfg, ref, seed, "merge"), opts, q, "tiny")
        assert seq.shape[0] == ret
        if beams == 3:
            _, tr = _reference(ref, _inputs(fx.cfg, ref, seed, "merge"), opts, q)
            assert tr["hyps"].max() > 0, "the stop token never became a hypothesis: raise the bias"


def test_sampling_greedy_and_beam_search_without_sampling(fixtures, candle_models):
    """do_sample=False: greedy (1 beam, penalty on the logits) and plain beam search (top-k of the
    scores) need no draws and still agree with the reference."""
    fx = fixtures("gpt")
    ref, cm = fx.reference(), candle_models("gpt")
    inp = _inputs(fx.cfg, ref, 0, "merge")
    for beams in (1, 3):
        opts = dict(do_sample=False, num_beams=beams, max_mel_tokens=16)
        got = candle.run(cm, "generate_sampled", dict(inp, options=_opts(opts)))[0]
        t = _t(inp)
        seq, _ = S.decode(ref, t["spk_latent"], t["emovec"], t["text"], opts, None)
        assert got["sequences"].tolist() == seq.tolist()


def test_sampling_seed_reproduces_torch_stream(fixtures, candle_models):
    """`seed=s` in Candle equals torch.manual_seed(s) with the real, unpatched torch.multinomial."""
    fx = fixtures("gpt")
    ref, cm = fx.reference(), candle_models("gpt")
    V = fx.cfg["number_mel_codes"]
    for s in (0, 7, 2**31 + 5):
        n = 3 * V * 5
        got = candle.transform("sampling.exponential", _opts({"seed": s, "n": n}))[0]
        torch.manual_seed(s)
        assert np.array_equal(got, torch.empty(n).exponential_(1).numpy()), f"seed {s}: Exp(1) stream differs"
    inp = _inputs(fx.cfg, ref, 1, "merge")
    for beams in (1, 3):
        opts = dict(num_beams=beams, max_mel_tokens=16)
        got = candle.run(cm, "generate_sampled", dict(inp, options=_opts(opts), seed=np.array([1234])))[0]
        torch.manual_seed(1234)
        t = _t(inp)
        seq, _ = S.decode(ref, t["spk_latent"], t["emovec"], t["text"], opts, None)
        assert got["sequences"].tolist() == seq.tolist()


def test_sampling_multinomial_is_topk_of_p_over_exponential():
    """torch 2.9 CPU: multinomial without replacement (n = 1 and n = 6) = topk(p / q), q the
    exponential_ draws of the same generator state; and the Candle candidate rule agrees."""
    for n in (1, 6):
        for seed in range(4):
            p = torch.softmax(torch.randn(3, 40, generator=torch.Generator().manual_seed(99 + seed)) * 3, -1).reshape(1, -1)
            a = torch.multinomial(p, n, generator=torch.Generator().manual_seed(seed))
            q = torch.empty_like(p).exponential_(1, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(a, torch.topk(p / q, n).indices)
            got = candle.transform("sampling.multinomial", p.numpy(), q.numpy(), _opts({"n": n}))[0]
            assert got.tolist() == a.tolist()


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.sampled_from([10, 26, 78, 383, 384, 385, 1000, 24582]), k=st.integers(1, 16), zeros=st.floats(0.5, 1.0),
       seed=st.integers(0, 2**16))
def test_sampling_topk_tie_order_property(n, k, zeros, seed):
    """torch.topk's CPU order among equal values (partial_sort for k·64 ≤ n, nth_element + sort
    otherwise), which fixes the zero-probability entries multinomial draws: Candle equals it."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 4, (1, n)) * (rng.random((1, n)) > zeros)).astype(np.float32)
    want = torch.topk(torch.from_numpy(x), min(k, n)).indices.numpy()
    assert np.array_equal(candle.transform("sampling.topk", x, _opts({"k": min(k, n)}))[0], want)
    # torch.sort(ascending) — what TopPLogitsWarper sorts by — with the same ties
    want = torch.sort(torch.from_numpy(x), descending=False).indices.numpy()
    assert np.array_equal(candle.transform("sampling.argsort", x)[0], want)


# ---- processors against transformers' own classes ------------------------------------------------
_scores = arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 70)),
                 elements=st.floats(-30, 10, width=32, allow_nan=False, allow_infinity=False))
_PROP = dict(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@settings(**_PROP)
@given(scores=_scores, penalty=st.sampled_from([10.0, 1.2, 0.7, 3.3]), data=st.data())
def test_sampling_repetition_penalty_property(scores, penalty, data):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    b, v = scores.shape
    ids = data.draw(arrays(np.int64, (b, data.draw(st.integers(1, 12))), elements=st.integers(0, v - 1)))
    want = RepetitionPenaltyLogitsProcessor(penalty=penalty)(torch.from_numpy(ids), torch.from_numpy(scores)).numpy()
    got = candle.transform("sampling.repetition_penalty", scores, ids, _opts({"penalty": penalty}))[0]
    assert np.array_equal(got, want)


@settings(**_PROP)
@given(scores=_scores, t=st.sampled_from([0.8, 0.3, 1.7, 0.55]))
def test_sampling_temperature_property(scores, t):
    from transformers.generation.logits_process import TemperatureLogitsWarper

    want = TemperatureLogitsWarper(t)(None, torch.from_numpy(scores)).numpy()
    assert np.array_equal(candle.transform("sampling.temperature", scores, _opts({"temperature": t}))[0], want)


@settings(**_PROP)
@given(scores=_scores, k=st.integers(1, 80), keep=st.integers(1, 3), ties=st.booleans())
def test_sampling_top_k_property(scores, k, keep, ties):
    from transformers.generation.logits_process import TopKLogitsWarper

    if ties:
        scores = np.round(scores / 4) * 4  # many equal scores at the cut
    want = TopKLogitsWarper(top_k=k, min_tokens_to_keep=keep)(None, torch.from_numpy(scores)).numpy()
    got = candle.transform("sampling.top_k", scores, _opts({"top_k": k, "min_tokens_to_keep": keep}))[0]
    assert np.array_equal(got, want)


@settings(**_PROP)
@given(scores=_scores, p=st.sampled_from([0.8, 0.5, 0.95, 0.3, 0.99]), keep=st.integers(1, 3), inf=st.integers(0, 5))
def test_sampling_top_p_property(scores, p, keep, inf):
    """Equal to TopPLogitsWarper, except where the reference's cumulative probability at the cut
    lies within TOP_P_TIE of the threshold (softmax exps differ by float32 ulps)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    scores = scores.copy()
    scores[:, :inf] = -3e38  # filtered entries (the bindings refuse ±inf inputs; probability 0 either way)
    x = torch.from_numpy(scores)
    want = TopPLogitsWarper(top_p=p, min_tokens_to_keep=keep)(None, x).numpy()
    got = candle.transform("sampling.top_p", scores, _opts({"top_p": p, "min_tokens_to_keep": keep}))[0]
    cum = torch.sort(x, descending=False).values.softmax(-1).cumsum(-1)
    near = ((cum - np.float32(1 - p)).abs() < TOP_P_TIE).any(-1).numpy()
    for r in range(scores.shape[0]):
        if not near[r]:
            assert np.array_equal(np.isfinite(got[r]), np.isfinite(want[r])), (r, got[r], want[r])
    assert np.array_equal(got[np.isfinite(got)], scores[np.isfinite(got)])


# float32 cumsum of a softmax over ≤ 70 entries: Candle vs torch differ by ≤ 2 ulp of 1.0 (measured
# 1.2e-7); 1e-6 is ~8×.
TOP_P_TIE = 1e-6


@settings(**_PROP)
@given(scores=_scores)
def test_sampling_log_softmax_property(scores):
    x = torch.from_numpy(scores)
    np.testing.assert_allclose(candle.transform("sampling.log_softmax", scores)[0], torch.log_softmax(x, -1).numpy(), atol=4e-6)
    np.testing.assert_allclose(candle.transform("sampling.softmax", scores)[0], torch.softmax(x, -1).numpy(), atol=1e-7, rtol=1e-6)


# ---- the reference against the official code -----------------------------------------------------
def _official(cfg):
    import importlib.util

    if importlib.util.find_spec("indextts") is None:
        pytest.fail("official index-tts package missing (pip install --no-deps tts-webui-index-tts==2.0.1)")
    from indextts.gpt.model_v2 import UnifiedVoice

    from test_gpt import official_unified_voice  # tests/ is on sys.path (rootdir conftest)

    return official_unified_voice(UnifiedVoice, cfg)


@pytest.mark.parametrize("bias", [0.0, 2.5])
def test_sampling_reference_matches_official_inference_speech(bias, tmp_path):
    """reference/sampling.py = the official `inference_speech` with infer_v2's kwargs (its own
    generate, beam sampler and scorer), with torch.multinomial patched to the same draws; and
    Candle (`seed`) = the official code under torch.manual_seed with the real multinomial."""
    from safetensors.torch import save_file

    from reference.common import synthetic_init
    from reference.gpt import TINY, build_reference, config_json

    cfg = copy.deepcopy(TINY)
    cfg.update(cond_input_size=1024, emo_dim=1024, perceiver_dim_head=64, pos_enc_max_len=5000)
    off = _official(cfg)
    synthetic_init(off, 0)
    with torch.no_grad():
        off.mel_head.bias[cfg["stop_mel_token"]] += bias
    off.post_init_gpt2_config(kv_cache=True)
    ref = build_reference(cfg)
    ref.load_state_dict(off.state_dict(), strict=False)
    path = str(tmp_path / "gpt.safetensors")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    cm = candle.Model("gpt", path, config_json(cfg), "cpu", [], SPEC.prefix)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((1, 21, 1024)).astype(np.float32))
    lens = torch.tensor([21])
    text = torch.from_numpy(rng.integers(2, cfg["number_text_tokens"], (1, 6)))
    V, n = cfg["number_mel_codes"], cfg["max_mel_tokens"] - 4
    with torch.no_grad():
        spk = off.get_conditioning(x.transpose(1, 2), lens)
        ev = off.merge_emovec(x, x.flip(1), lens, lens, 0.7)
    for beams in (3, 1):
        kw = dict(do_sample=True, top_p=0.8, top_k=30, temperature=0.8, num_return_sequences=1, length_penalty=0.0,
                  num_beams=beams, repetition_penalty=10.0, max_generate_length=n)
        opts = dict(num_beams=beams, max_mel_tokens=n)
        for seed in range(3):
            q = _draws(seed, n, beams, V)
            with torch.no_grad(), S.draws_from(S.GivenDraws(q)):
                want, _ = off.inference_speech(x, text, x, cond_lengths=lens, emo_cond_lengths=lens, emo_vec=ev, **kw)
            got, _ = S.decode(ref, spk, ev, text, opts, S.GivenDraws(q))
            assert got.tolist() == want.tolist(), (beams, seed)
            torch.manual_seed(seed)
            with torch.no_grad():
                want, _ = off.inference_speech(x, text, x, cond_lengths=lens, emo_cond_lengths=lens, emo_vec=ev, **kw)
            inp = {"spk_latent": spk.numpy(), "emovec": ev.numpy(), "text": text.numpy()}
            mine = candle.run(cm, "generate_sampled", dict(inp, options=_opts(opts), seed=np.array([seed])))[0]
            assert mine["sequences"].tolist() == want.tolist(), ("seeded", beams, seed)


# ---- faults --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", list(FAULT_EXPECT))
def test_sampling_fault_is_named(fault, tmp_path, fixtures, size):
    """Each decoding fault breaks at the step and stage it belongs to (never silently)."""
    if size == "full":
        pytest.skip("tiny only: rewrites the checkpoint (2 GB at official size); the decode code is size-independent")
    fx = fixtures("gpt")
    path, ref = _stop_biased(tmp_path, fx, 2.5)
    cm = candle.Model("gpt", path, SPEC.config_json(fx.cfg), "cpu", [fault], SPEC.prefix)
    B, V = 3, fx.cfg["number_mel_codes"]
    opts = dict(num_beams=B, max_mel_tokens=20)
    inp = _inputs(fx.cfg, ref, 0, "merge")
    q = _draws(0, 20, B, V)
    _, tr = _reference(ref, inp, opts, q)
    stage, where = FAULT_EXPECT[fault]
    if where == "first":
        step = 0
    elif where == "after_reorder":  # step 0's reorder copies identical rows; the next one matters
        step = 1 + next(s for s in range(1, len(tr["beam_idx"])) if tr["beam_idx"][s].tolist() != list(range(B)))
    elif where == "hyp_after_0":  # a hypothesis finished at step 0 has length 1: len**1 = len**0
        step = next(s for s in range(1, len(tr["hyps"])) if (tr["hyps"][s], tr["hyp_worst"][s]) != (tr["hyps"][s - 1], tr["hyp_worst"][s - 1]))
    else:
        step = int(np.argmax(tr["hyps"] > 0))
        assert tr["hyps"][step] > 0, "no hypothesis in the reference walk: raise the stop bias"
    br = first_break(_candle(cm, inp, opts, q), tr, B, V, STAGE_TOL["tiny"])
    assert br is not None, f"{fault}: no stage broke"
    assert br[:2] == (step, stage), f"{fault}: broke at step {br[0]} stage {br[1]} ({br[2]}), expected step {step} stage {stage}"


class TestSamplingBadOptions:
    def _err(self, cm, inp, match, **extra):
        with pytest.raises(candle.InputError, match=match):
            candle.run(cm, "generate_sampled", dict(inp, **extra))

    def test_refused(self, fixtures, candle_models):
        fx, cm = fixtures("gpt"), candle_models("gpt")
        inp = _inputs(fx.cfg, fx.reference(), 0, "merge")
        q = np.ones(10, np.float32)
        self._err(cm, inp, "typical_p", options=_opts({"typical_p": 0.9}), draws=q)
        self._err(cm, inp, "num_return_sequences", options=_opts({"num_beams": 2, "num_return_sequences": 3}), draws=q)
        self._err(cm, inp, "top_p", options=_opts({"top_p": 1.5}), draws=q)
        self._err(cm, inp, "temperature", options=_opts({"temperature": 0.0}), draws=q)
        self._err(cm, inp, "ran out", options=_opts({"max_mel_tokens": 4}), draws=q)
        self._err(cm, inp, "exactly one", options=_opts({}))
        self._err(cm, inp, "position", options=_opts({"max_mel_tokens": fx.cfg["max_mel_tokens"] + 3}), seed=np.array([0]))
        self._err(cm, inp, "unexpected", options=_opts({}), seed=np.array([0]), codes=np.zeros((1, 2), np.int64))


# ---- benchmark (official size, CPU; only under --benchmark-only) ---------------------------------
BENCH_STEPS = 24


def _official_generate(fx, inp, q):
    """The official code's own decode: `UnifiedVoice.inference_model.generate` set up exactly as
    `inference_speech` does (conditioning given, not timed), infer_v2's kwargs, the same draws."""
    from transformers import LogitsProcessorList

    off = _official(fx.cfg)
    off.load_state_dict(fx.reference().state_dict(), strict=True)
    off.post_init_gpt2_config(kv_cache=True)
    t = _t(inp)
    stop = fx.cfg["stop_mel_token"]

    def run():
        with torch.no_grad():
            conds = torch.cat((t["spk_latent"] + t["emovec"][:, None], off.speed_emb(torch.ones(1, dtype=torch.long))[:, None],
                               off.speed_emb(torch.zeros(1, dtype=torch.long))[:, None]), 1)
            ids, emb, mask = off.prepare_gpt_inputs(conds, t["text"])
            off.inference_model.store_mel_emb(emb)
            with S.draws_from(S.GivenDraws(q)):
                return off.inference_model.generate(
                    ids, bos_token_id=fx.cfg["start_mel_token"], pad_token_id=stop, eos_token_id=stop, attention_mask=mask,
                    max_length=ids.shape[1] + BENCH_STEPS, logits_processor=LogitsProcessorList(), num_return_sequences=1,
                    do_sample=True, top_p=0.8, top_k=30, temperature=0.8, length_penalty=0.0, num_beams=3,
                    repetition_penalty=10.0)
    return run


@pytest.mark.benchmark(group="gpt_beam_sampling")
@pytest.mark.parametrize("side", ["candle", "torch", "official"])
def test_bench_sampling_beam3(side, benchmark, bench_fixtures):
    """3-beam sampled decode with the KV cache, BENCH_STEPS steps, same draws on every side: Candle
    `generate_sampled`, the reference loop (torch), and the official `generate` (official)."""
    fx = bench_fixtures("gpt")
    V = fx.cfg["number_mel_codes"]
    inp = step_inputs(fx.cfg, 0, text_len=40)
    del inp["codes"]
    opts = dict(num_beams=3, max_mel_tokens=BENCH_STEPS)
    q = _draws(0, BENCH_STEPS, 3, V)
    if side == "candle":
        cm = fx.candle("cpu")
        fn = lambda: candle.run(cm, "generate_sampled", dict(inp, options=_opts(opts), draws=q))  # noqa: E731
    elif side == "torch":
        ref, t = fx.reference("cpu"), _t(inp)
        fn = lambda: S.decode(ref, t["spk_latent"], t["emovec"], t["text"], opts, S.GivenDraws(q))  # noqa: E731
    else:
        fn = _official_generate(fx, inp, q)
    measure(benchmark, fn, rounds=2, tokens=BENCH_STEPS)
    benchmark.extra_info["tokens_per_s"] = BENCH_STEPS / benchmark.stats.stats.mean
