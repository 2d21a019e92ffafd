"""GPT (UnifiedVoice v2) checks beyond the table-driven walk: greedy decoding with a near-tie rule,
KV-cache decoding vs full recomputation, length properties, bad input, and the CPU benchmark."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity.compare import compare_noise
from parity.registry import MODELS
from parity.runner import TORCH_DTYPES, as_torch
from parity.tolerances import NEAR_TIE, rule
from reference.gpt import latent_inputs, spk_inputs, step_inputs

SPEC = MODELS["gpt"]


def _t(inputs, dtype=torch.float32):
    return as_torch(inputs, "cpu", dtype)


def _pair(fx, fn, inputs):
    """fn(reference, torch inputs) in float64 (the truth) and float32 (its noise) → two arrays."""
    out = []
    with torch.no_grad():
        for dt in (torch.float64, torch.float32):
            out.append(fn(fx.reference("cpu", dt), _t(inputs, dt)).numpy())
    return out


def _check(name, ref64, ref32, got):
    """The noise-floor rule (tolerances.py) on one output: Candle vs float64 within k × float32's own error."""
    c = compare_noise(name, ref64, ref32, got, rule("gpt", name, "cpu", "float32"))
    assert c.ok, c.line()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gpt_greedy_matches_reference(seed, fixtures, candle_models):
    """Greedy codes equal the reference's; a differing token is accepted only at a near-tie, and
    from there on decoding is checked teacher-forced on the reference's tokens."""
    fx = fixtures("gpt")
    ref, cm = fx.reference(), candle_models("gpt")
    inp = step_inputs(fx.cfg, 100 + seed)
    del inp["codes"]
    # tiny: up to the cap; official size: 32 steps (random weights hardly ever stop, and 1811
    # full-size steps of the reference loop take hours; the decode code is the same at both sizes)
    max_tokens = fx.cfg["max_mel_tokens"] - 4 if fx.size == "tiny" else 32
    with torch.no_grad():
        t = _t(inp)
        ref_codes, margins = ref.greedy(t["spk_latent"], t["emovec"], t["text"], max_tokens)
    ref_codes, margins = ref_codes.numpy()[0], margins.numpy()
    got, _ = candle.run(cm, "greedy", dict(inp, max_tokens=np.array([max_tokens])))
    got = got["codes"][0]
    n = 0
    while n < min(len(got), len(ref_codes)) and got[n] == ref_codes[n]:
        n += 1
    if n < max(len(got), len(ref_codes)):
        assert n < len(margins) and margins[n] < NEAR_TIE, (
            f"greedy diverges at step {n} (candle {got.tolist()}, reference {ref_codes.tolist()}), "
            f"reference top-2 margin {margins[n] if n < len(margins) else 'n/a'} ≥ {NEAR_TIE}")
    # Teacher-forced on the reference's tokens: every step's argmax agrees except at near-ties.
    logits, _ = candle.run(cm, "step_logits", dict(inp, codes=ref_codes[None].astype(np.int64)))
    expected = list(ref_codes) + [fx.cfg["stop_mel_token"]]
    for j, m in enumerate(margins):
        a = int(np.argmax(logits["logits"][0, j]))
        assert a == expected[j] or m < NEAR_TIE, f"step {j}: candle argmax {a}, reference {expected[j]} (margin {m})"


def test_gpt_greedy_stops_at_stop_token(tmp_path, fixtures):
    """With `mel_head.bias[stop]` raised so that the stop token wins mid-sequence, both sides end
    decoding at the same step and exclude the stop token."""
    from safetensors.torch import load_file, save_file

    from reference.gpt import build_reference

    fx = fixtures("gpt")
    stop = fx.cfg["stop_mel_token"]
    ref = fx.reference()
    for seed in range(100, 108):
        inp = step_inputs(fx.cfg, seed)
        del inp["codes"]
        t = _t(inp)
        with torch.no_grad():
            codes, _ = ref.greedy(t["spk_latent"], t["emovec"], t["text"], 12)
            logits = ref.step_logits(t["spk_latent"], t["emovec"], t["text"], codes)[0]
        gap = (logits.max(-1).values - logits[:, stop]).tolist()[:12]
        # a step j ≥ 1 whose gap is below every earlier one: raising the stop logit to halfway
        # between them leaves every earlier argmax alone and makes the stop token win at j
        rec = [j for j in range(1, len(gap)) if gap[j] < min(gap[:j]) - 1e-2]
        if rec:
            j = rec[-1]
            raise_by = (gap[j] + min(gap[:j])) / 2
            break
    else:
        pytest.fail("no seed in 100..107 has a stop step to provoke (the gaps only grow)")
    del ref
    fx.drop_references()  # official size: the reference holds GBs, and a second one is built below
    sd = load_file(fx.safetensors_path)
    sd["mel_head.bias"] = sd["mel_head.bias"].clone()
    sd["mel_head.bias"][stop] += raise_by
    path = str(tmp_path / "stop.safetensors")
    save_file(sd, path)
    ref2 = build_reference(fx.cfg)
    ref2.load_state_dict(sd, strict=True)
    del sd
    with torch.no_grad():
        want, _ = ref2.greedy(t["spk_latent"], t["emovec"], t["text"], 12)
    del ref2
    assert want.shape[1] == j, (want.shape, j, gap)
    cm = candle.Model("gpt", path, SPEC.config_json(fx.cfg), "cpu", [], SPEC.prefix)
    got, _ = candle.run(cm, "greedy", dict(inp, max_tokens=np.array([12])))
    assert got["codes"].tolist() == want.tolist()


@pytest.mark.parametrize("code_len", [0, 1, 9])
def test_gpt_kv_cache_equals_full_recompute(code_len, fixtures, candle_models):
    """Incremental decoding through the KV cache equals one causal pass over the whole sequence,
    and both equal the reference's per-step logits."""
    fx = fixtures("gpt")
    inp = step_inputs(fx.cfg, 7, code_len=code_len)
    cm = candle_models("gpt")
    cached, _ = candle.run(cm, "step_logits", inp)
    full, _ = candle.run(cm, "step_logits_full", inp)
    ref64, ref32 = _pair(fx, lambda m, t: m.step_logits(t["spk_latent"], t["emovec"], t["text"], t["codes"]), inp)
    assert cached["logits"].shape == (1, code_len + 1, fx.cfg["number_mel_codes"])
    _check("output:logits (KV cache)", ref64, ref32, cached["logits"])
    _check("output:logits (one pass)", ref64, ref32, full["logits"])


def _ref_cached_logits(ref, t, codes):
    """The reference's own KV-cache loop (as `greedy` runs it) fed `codes` → logits [1, K+1, V]."""
    from reference.common import NoTaps

    taps, caches = NoTaps(), [dict() for _ in ref.gpt.h]
    conds, text_emb = ref._prefix(t["spk_latent"], t["emovec"], t["text"], taps)
    toks = torch.cat([torch.tensor([[ref.cfg["start_mel_token"]]], device=codes.device), codes], 1)
    x = torch.cat([conds, text_emb, ref._mel_emb(toks[:, :1], ref._mel_positions(0, 1, codes.device), taps)], 1)
    out = []
    for s in range(toks.shape[1]):
        h = ref.gpt(x, None, caches)[:, -1:]
        out.append(ref.mel_head(ref.final_norm(h)))
        if s + 1 < toks.shape[1]:
            x = ref._mel_emb(toks[:, s + 1:s + 2], ref._mel_positions(s + 1, 1, codes.device), taps)
    return torch.cat(out, 1)


def test_gpt_reference_kv_cache_equals_full(fixtures):
    """The reference's own cached loop sees the same logits as its single-pass path (noise-floor
    rule against the single pass in float64), and greedy's margins / codes are those logits'."""
    fx = fixtures("gpt")
    ref = fx.reference()
    inp = step_inputs(fx.cfg, 3)
    t = _t(inp)
    with torch.no_grad():
        codes, margins = ref.greedy(t["spk_latent"], t["emovec"], t["text"], 12)
        cached = _ref_cached_logits(ref, t, codes)[0]
    ref64, ref32 = _pair(fx, lambda m, t: m.step_logits(t["spk_latent"], t["emovec"], t["text"], codes)[0], inp)
    _check("output:logits (reference KV cache)", ref64, ref32, cached.numpy())
    top2 = torch.topk(cached, 2, dim=-1).values
    assert np.array_equal((top2[:, 0] - top2[:, 1])[: len(margins)].numpy(), margins.numpy().astype(np.float32))
    assert torch.equal(cached.argmax(-1)[: codes.shape[1]], codes[0])


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text_len=st.integers(1, 16), code_len=st.integers(1, 22), short=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_gpt_any_text_and_code_length(text_len, code_len, short, seed, fixtures, candle_models):
    """Teacher-forced latents (batch 2, second row shorter) and cached step logits for any lengths
    the position tables allow."""
    fx = fixtures("gpt")
    ref, cm = fx.reference(), candle_models("gpt")
    inp = latent_inputs(fx.cfg, seed, text_len, code_len)
    inp["text_lens"][1] = max(1, text_len - short)
    inp["code_lens"][1] = max(1, code_len - short)
    got, _ = candle.run(cm, "forward_latent", inp)
    ref64, ref32 = _pair(fx, lambda m, t: m.forward_latent(t["spk_latent"], t["text"], t["text_lens"], t["codes"],
                                                            t["code_lens"], t["emovec"]), inp)
    assert got["latent"].shape == (2, code_len, fx.cfg["model_dim"])
    _check("output:latent", ref64, ref32, got["latent"])
    sinp = {"spk_latent": inp["spk_latent"][:1], "emovec": inp["emovec"][:1], "text": inp["text"][:1],
            "codes": inp["codes"][:1, : min(code_len, fx.cfg["max_mel_tokens"])]}
    got, _ = candle.run(cm, "step_logits", sinp)
    ref64, ref32 = _pair(fx, lambda m, t: m.step_logits(t["spk_latent"], t["emovec"], t["text"], t["codes"]), sinp)
    _check("output:logits", ref64, ref32, got["logits"])


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.integers(3, 60), cut=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_gpt_conformer_perceiver_any_frames(frames, cut, seed, fixtures, candle_models):
    """Speaker conditioning for any number of feature frames, with a padded second row."""
    fx = fixtures("gpt")
    rng = np.random.default_rng(seed)
    inp = {"x": rng.standard_normal((2, fx.cfg["cond_input_size"], frames)).astype(np.float32),
           "lens": np.array([frames, max(1, frames - cut)], np.int64)}
    got, _ = candle.run(candle_models("gpt"), "spk_cond", inp)
    ref64, ref32 = _pair(fx, lambda m, t: m.get_conditioning(t["x"], t["lens"]), inp)
    _check("output:latent", ref64, ref32, got["latent"])


def test_gpt2_stack_matches_transformers(fixtures, candle_models):
    """The hand-written GPT-2 stack equals transformers' GPT2Model set up as IndexTTS does
    (wpe replaced by zeros, wte unused, inputs_embeds), in one pass and through its KV cache."""
    transformers = pytest.importorskip("transformers")
    fx, cfg = fixtures("gpt"), fixtures("gpt").cfg
    # official size: only the GPT-2 stacks are kept (the float64 UnifiedVoice alone is 7 GB)
    candle_models.clear()
    fx.drop_references()
    hf_cfg = transformers.GPT2Config(vocab_size=256, n_positions=64, n_ctx=64, n_embd=cfg["model_dim"],
                                     n_layer=cfg["layers"], n_head=cfg["heads"])
    with torch.random.fork_rng():
        hf = transformers.GPT2Model(hf_cfg).eval()
    del hf.wpe  # IndexTTS replaces the module by a function returning zeros
    hf.wpe = lambda pos: torch.zeros(*pos.shape, cfg["model_dim"], dtype=hf.h[0].ln_1.weight.dtype)
    emb64 = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 13, cfg["model_dim"])))
    ours, theirs = {}, {}
    with torch.no_grad():
        for dt in (torch.float32, torch.float64):
            g = fx.reference("cpu", dt).gpt
            fx.drop_references()
            if dt == torch.float32:
                missing, unexpected = hf.load_state_dict(g.state_dict(), strict=False)
                assert not unexpected and all(k.startswith(("wte.", "wpe.")) or k.endswith("attn.bias")
                                              for k in missing), missing
            h, emb = hf.to(dt), emb64.to(dt)
            theirs[dt] = (h(inputs_embeds=emb).last_hidden_state,
                          h(inputs_embeds=emb[:, 9:10], use_cache=True,
                            past_key_values=h(inputs_embeds=emb[:, :9], use_cache=True).past_key_values).last_hidden_state)
            caches = [dict() for _ in g.h]
            g(emb[:, :9], None, caches)
            ours[dt] = (g(emb), g(emb[:, 9:10], None, caches))
            del g, caches
    # noise-floor rule with transformers as the truth (float64) and its float32 run as the noise
    for j, name in enumerate(("output:hidden (one pass)", "output:hidden (KV cache step)")):
        _check(name, theirs[torch.float64][j].numpy(), theirs[torch.float32][j].numpy(), ours[torch.float32][j].numpy())
    # transformers' own cached step equals its one-pass position 9, in float64 (in float32 the two
    # paths round differently: rms ratio 3.1 at official size, which is transformers', not ours)
    _check("output:hidden step 9", theirs[torch.float64][0][:, 9:10].numpy(), theirs[torch.float32][0][:, 9:10].numpy(),
           theirs[torch.float64][1].numpy())


def official_unified_voice(cls, cfg):
    """The official UnifiedVoice built at a reference config (eval mode); also used by test_sampling."""
    return cls(
        layers=cfg["layers"], model_dim=cfg["model_dim"], heads=cfg["heads"], max_text_tokens=cfg["max_text_tokens"],
        max_mel_tokens=cfg["max_mel_tokens"], number_text_tokens=cfg["number_text_tokens"],
        number_mel_codes=cfg["number_mel_codes"], start_mel_token=cfg["start_mel_token"],
        stop_mel_token=cfg["stop_mel_token"], start_text_token=cfg["start_text_token"],
        stop_text_token=cfg["stop_text_token"], condition_num_latent=cfg["condition_num_latent"],
        condition_type="conformer_perceiver",
        condition_module=dict(cfg["condition_module"], input_layer="conv2d2"),
        emo_condition_module=dict(cfg["emo_condition_module"], input_layer="conv2d2")).eval()


def _official_unified_voice():
    """The official UnifiedVoice class from the PyPI snapshot of index-tts (`pip install --no-deps
    tts-webui-index-tts==2.0.1 einops`); skipped when absent. Its GPT code never touches
    torchaudio, which only its utils module imports, so a bare stand-in module suffices."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("indextts") is None or importlib.util.find_spec("einops") is None:
        pytest.fail("official index-tts package missing (run.sh installs it) (pip install --no-deps tts-webui-index-tts==2.0.1 einops)")
    if importlib.util.find_spec("torchaudio") is None:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules.setdefault("torchaudio", stub)
    from indextts.gpt.model_v2 import UnifiedVoice

    return UnifiedVoice


def test_gpt_reference_matches_official_code():
    """Our reference against the official model_v2 code itself, same synthetic weights (official
    constructor ⇒ input width and emo perceiver width 1024, dim_head 64, pe 5000): key names load
    strictly, conditioning / emovec / teacher-forced latents agree, and official `inference_speech`
    greedy decoding (KV cache, its mel-position quirk) yields our greedy codes."""
    import copy

    from reference.common import synthetic_init
    from reference.gpt import TINY, build_reference

    official_cls = _official_unified_voice()
    cfg = copy.deepcopy(TINY)
    cfg.update(cond_input_size=1024, emo_dim=1024, perceiver_dim_head=64, pos_enc_max_len=5000)
    off = official_unified_voice(official_cls, cfg)
    synthetic_init(off, 0)
    ref = build_reference(cfg)
    ref.load_state_dict(off.state_dict(), strict=True)
    rng = np.random.default_rng(0)
    x64 = torch.from_numpy(rng.standard_normal((2, 1024, 23)))
    lens = torch.tensor([23, 16])
    text = torch.from_numpy(rng.integers(2, cfg["number_text_tokens"], (2, 7)))
    codes = torch.from_numpy(rng.integers(0, cfg["start_mel_token"], (2, 9)))
    tl, cl = torch.tensor([7, 5]), torch.tensor([9, 6])
    res = {}  # (side, dtype) -> outputs; the official class in float64 is the truth, float32 its noise
    with torch.no_grad():
        for dt in (torch.float64, torch.float32):
            x = x64.to(dt)
            xl = x.transpose(1, 2).contiguous()
            o, r = off.to(dt), ref.to(dt)
            spk = o.get_conditioning(x, lens)
            ev = o.merge_emovec(xl, xl.flip(0), lens, lens.flip(0), 0.6)
            want = o(spk, text.clone(), tl, codes.clone(), cl, xl, emo_vec=ev, use_speed=torch.zeros(2, dtype=torch.long))
            res["off", dt] = [spk, o.get_emo_conditioning(x, lens), ev, want]
            res["ref", dt] = [r.get_conditioning(x, lens), r.get_emo_conditioning(x, lens),
                              r.merge_emovec(xl, xl.flip(0), lens, lens.flip(0), 0.6), r.forward_latent(spk, text, tl, codes, cl, ev)]
        for j, name in enumerate(("output:latent (conditioning)", "output:emo (emo conditioning)", "output:emovec (merge)",
                                  "output:latent (forward)")):
            _check(name, res["off", torch.float64][j].numpy(), res["off", torch.float32][j].numpy(), res["ref", torch.float32][j].numpy())
        spk, ev, xl = res["off", torch.float32][0], res["off", torch.float32][2], x.transpose(1, 2).contiguous()
        off.post_init_gpt2_config(kv_cache=True)
        n = cfg["max_mel_tokens"] - 4
        official_codes, _ = off.inference_speech(xl[:1], text[:1], xl[:1], cond_lengths=lens[:1], emo_cond_lengths=lens[:1],
                                                 emo_vec=ev[:1], do_sample=False, num_beams=1, max_generate_length=n)
        ours, _ = ref.greedy(spk[:1], ev[:1], text[:1], n)
    official_codes = official_codes[0].tolist()
    if cfg["stop_mel_token"] in official_codes:  # generate() keeps the stop token; we stop before it
        official_codes = official_codes[: official_codes.index(cfg["stop_mel_token"])]
    assert ours[0].tolist() == official_codes


class TestGptBadInput:
    """Wrong shapes, dtypes, lengths and token ids are InputError, never a panic."""

    def _err(self, cm, method, inputs, match=None):
        with pytest.raises(candle.InputError, match=match):
            candle.run(cm, method, inputs)

    def test_features(self, fixtures, candle_models):
        fx, cm = fixtures("gpt"), candle_models("gpt")
        good = spk_inputs(fx.cfg, 0)
        self._err(cm, "spk_cond", dict(good, x=good["x"][:, :-1]), "features")
        self._err(cm, "spk_cond", dict(good, x=good["x"][:, :, :2], lens=np.array([2, 2])), "T ≥ 3")
        self._err(cm, "spk_cond", dict(good, lens=np.array([5])), "lengths")
        self._err(cm, "spk_cond", dict(good, lens=good["lens"].astype(np.float32)), "int64")
        self._err(cm, "emo_cond", dict(good, x=good["x"][0]))
        self._err(cm, "emovec", good, "channels last")  # get_emovec takes [B, T, 1024]
        long = np.zeros((1, fx.cfg["cond_input_size"], 2 * fx.cfg["pos_enc_max_len"] + 5), np.float32)
        self._err(cm, "spk_cond", {"x": long, "lens": np.array([long.shape[2]])}, "positional table")
        self._err(cm, "spk_perceiver", {"context": np.zeros((1, 4, 3), np.float32), "mask": np.ones((1, 4), np.int64)}, "context")

    def test_tokens_and_lengths(self, fixtures, candle_models):
        fx, cm = fixtures("gpt"), candle_models("gpt")
        good = latent_inputs(fx.cfg, 0)
        rows = fx.cfg["number_text_tokens"] * fx.cfg["types"] + 1  # text_embedding rows, from the config
        self._err(cm, "forward_latent", dict(good, text=good["text"] + rows), "outside")
        self._err(cm, "forward_latent", dict(good, codes=-good["codes"] - 1), "outside")
        self._err(cm, "forward_latent", dict(good, text=np.ones((2, fx.cfg["max_text_tokens"] + 1), np.int64)), "position")
        self._err(cm, "forward_latent", dict(good, code_lens=np.array([3])), "batch")
        self._err(cm, "forward_latent", dict(good, emovec=good["emovec"][:, :-1]), "emovec")
        self._err(cm, "forward_latent", dict(good, text=good["text"].astype(np.float32)), "int64")

    def test_decoding(self, fixtures, candle_models):
        fx, cm = fixtures("gpt"), candle_models("gpt")
        good = step_inputs(fx.cfg, 0)
        two = {k: np.concatenate([v, v]) for k, v in good.items()}
        self._err(cm, "step_logits", two, "batch 1")
        g = {k: v for k, v in good.items() if k != "codes"}
        self._err(cm, "greedy", dict(g, max_tokens=np.array([-1])), "max_tokens")
        self._err(cm, "greedy", dict(g, max_tokens=np.array([1, 2])), "max_tokens")
        too_long = np.zeros((1, fx.cfg["max_mel_tokens"] + 3), np.int64)
        self._err(cm, "step_logits", dict(good, codes=too_long), "position")
        self._err(cm, "greedy", dict(g, max_tokens=np.array([10_000])), "position")
        self._err(cm, "merge_emovec", {"spk_x": np.zeros((1, 9, 20), np.float32), "spk_lens": np.array([9]),
                                       "emo_x": np.zeros((1, 9, 20), np.float32), "emo_lens": np.array([9]),
                                       "alpha": np.array([0.5, 0.5], np.float32)}, "alpha")


    def test_empty_never_panics(self, fixtures, candle_models):
        """Zero-sized batches / sequences: an InputError or a valid (empty) result, never a Rust panic."""
        import indextts_candle

        fx, cm = fixtures("gpt"), candle_models("gpt")
        c, d, n = fx.cfg["cond_input_size"], fx.cfg["model_dim"], fx.cfg["condition_num_latent"]
        calls = [
            ("spk_cond", {"x": np.zeros((0, c, 9), np.float32), "lens": np.zeros(0, np.int64)}),
            ("spk_perceiver", {"context": np.zeros((1, 0, fx.cfg["condition_module"]["output_size"]), np.float32),
                               "mask": np.zeros((1, 0), np.int64)}),
            ("forward_latent", dict(latent_inputs(fx.cfg, 0), spk_latent=np.zeros((0, n, d), np.float32))),
            ("forward_latent", dict(latent_inputs(fx.cfg, 0), codes=np.zeros((2, 0), np.int64))),
            ("step_logits", dict(step_inputs(fx.cfg, 0), text=np.zeros((1, 0), np.int64))),
            ("greedy", dict({k: v for k, v in step_inputs(fx.cfg, 0).items() if k != "codes"}, max_tokens=np.array([0]))),
        ]
        for method, inp in calls:
            try:
                candle.run(cm, method, inp)
            except (candle.InputError, indextts_candle.CandleError):
                pass


# ---- benchmark (official size, CPU; only under --benchmark-only) ----------------------------------
BENCH_FRAMES = 250  # 5 s of 50 Hz w2v-bert features
BENCH_TEXT, BENCH_CODES, BENCH_NEW = 40, 100, 16


def _bench_inputs(cfg):
    rng = np.random.default_rng(0)
    d, n = cfg["model_dim"], cfg["condition_num_latent"]
    spk = {"x": rng.standard_normal((1, cfg["cond_input_size"], BENCH_FRAMES)).astype(np.float32),
           "lens": np.array([BENCH_FRAMES], np.int64)}
    lat = {"spk_latent": rng.standard_normal((1, n, d)).astype(np.float32),
           "text": rng.integers(2, cfg["number_text_tokens"], (1, BENCH_TEXT)),
           "text_lens": np.array([BENCH_TEXT], np.int64),
           "codes": rng.integers(0, cfg["start_mel_token"], (1, BENCH_CODES)),
           "code_lens": np.array([BENCH_CODES], np.int64),
           "emovec": rng.standard_normal((1, d)).astype(np.float32)}
    return spk, lat


def _side(side, fx, device="cpu", dtype="float32"):
    if side == "candle":
        return fx.candle(device, None, dtype), None
    return None, fx.reference(device, TORCH_DTYPES[dtype])


@pytest.mark.benchmark(group="gpt")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_gpt_spk_cond(side, benchmark, bench_fixtures, bench_device, bench_dtype):
    """Speaker conditioning (Conformer + Perceiver) on 5 s of features."""
    fx = bench_fixtures("gpt")
    cm, ref = _side(side, fx, bench_device, bench_dtype)
    spk, _ = _bench_inputs(fx.cfg)
    if cm is not None:
        fn = lambda: candle.run(cm, "spk_cond", spk)  # noqa: E731
    else:
        t = as_torch(spk, bench_device, TORCH_DTYPES[bench_dtype])

        def fn():
            with torch.no_grad():
                return ref.get_conditioning(t["x"], t["lens"])
    measure(benchmark, fn, rounds=2, device=bench_device, dtype=bench_dtype, frames=BENCH_FRAMES)


@pytest.mark.benchmark(group="gpt")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_gpt_forward_latent(side, benchmark, bench_fixtures, bench_device, bench_dtype):
    """Teacher-forced forward: 34 conditioning + 42 text + 102 mel positions."""
    fx = bench_fixtures("gpt")
    cm, ref = _side(side, fx, bench_device, bench_dtype)
    _, lat = _bench_inputs(fx.cfg)
    if cm is not None:
        fn = lambda: candle.run(cm, "forward_latent", lat)  # noqa: E731
    else:
        t = as_torch(lat, bench_device, TORCH_DTYPES[bench_dtype])

        def fn():
            with torch.no_grad():
                return ref.forward_latent(t["spk_latent"], t["text"], t["text_lens"], t["codes"], t["code_lens"], t["emovec"])
    measure(benchmark, fn, rounds=2, device=bench_device, dtype=bench_dtype, positions=34 + BENCH_TEXT + 2 + BENCH_CODES + 2)


@pytest.mark.benchmark(group="gpt")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_gpt_greedy(side, benchmark, bench_fixtures, bench_device, bench_dtype):
    """Greedy decoding with a KV cache: prefix of 34 + 42 positions, then BENCH_NEW steps
    (teacher-forced through `step_logits`, so both sides run exactly BENCH_NEW + 1 steps)."""
    fx = bench_fixtures("gpt")
    cm, ref = _side(side, fx, bench_device, bench_dtype)
    _, lat = _bench_inputs(fx.cfg)
    inp = {"spk_latent": lat["spk_latent"], "emovec": lat["emovec"], "text": lat["text"],
           "codes": lat["codes"][:, :BENCH_NEW]}
    if cm is not None:
        fn = lambda: candle.run(cm, "step_logits", inp)  # noqa: E731
    else:
        t = as_torch(inp, bench_device, TORCH_DTYPES[bench_dtype])

        def fn():  # the reference's cached loop, fed the same tokens
            with torch.no_grad():
                _ref_cached_logits(ref, t, t["codes"])
    measure(benchmark, fn, rounds=2, device=bench_device, dtype=bench_dtype, tokens=BENCH_NEW + 1)
    benchmark.extra_info["tokens_per_s"] = (BENCH_NEW + 1) / benchmark.stats.stats.mean
