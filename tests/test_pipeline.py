"""End-to-end pipeline parity, stage by stage (parity/pipeline.py): forced and chained walks, the
final audio gate, the near-tie rule, and proof of teeth (a broken stage is the one named).

Test ids carry only pipeline stage names (never a model's `-k` word), so `-k pipeline` selects this
file and test_pipeline_sampled.py (the sampled decoding) and nothing else.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity import pipeline as PP
from parity.audio import audio_metrics
from parity.tolerances import AUDIO_GATE, EXACT, K_MAX, K_RMS, NEAR_TIE, NOISE_HALF, NoiseFloor, rule
from reference import pipeline as P

STAGE_ORDER = ["front", "features", "semantic_emb", "s_ref", "ref_mel", "spk_fbank", "style", "prompt_cond", "spk_latent",
               "emo_features", "emo_emb", "emovec", "emo_mix", "codes", "code_logits", "latent", "vq_emb", "s_infer", "target_cond", "cfm_mel", "wav"]

# (registry kind, existing fault switch, the stage the walk must name)
FAULTS = [
    ("resample", "rectangular_window", "front"),
    ("w2v_bert", "var_as_std", "semantic_emb"),
    ("semantic_codec", "codebook_unnormalised", "s_ref"),
    ("mel_spectrogram", "htk_mel_scale", "ref_mel"),
    ("mel_spectrogram", "zero_padding", "ref_mel"),  # ratio 2.1e4 / 1.4e4
    ("mel_spectrogram", "symmetric_window", "ref_mel"),  # ratio 2.3e3 / 3.8e3
    ("campplus", "bn_running_stats_ignored", "style"),
    ("gpt", "pos_bias_v_dropped", "spk_latent"),
    ("gpt", "final_norm_skipped", "codes"),
    ("emotion", "residual_dropped", "emo_mix"),
    ("length_regulator", "interp_round", "prompt_cond"),
    ("dit", "adaln_swapped", "cfm_mel"),
    ("bigvgan", "skip_weight_norm", "wav"),
    # the other switches of each kind, among them the leaf-level classes of issue 10 (eps, window,
    # padding, activation, scale, interpolation, f16 weight); stage measured on tiny, seed 0, all walks
    ("w2v_bert", "hidden_off_by_one", "semantic_emb"),
    ("w2v_bert", "symmetric_dw_padding", "semantic_emb"),
    ("campplus", "bn_eps_dropped", "style"),  # ratio 87 / 66 forced, 10 / 10 chained
    ("campplus", "fbank_hanning_window", "spk_fbank"),
    ("campplus", "fbank_no_preemphasis", "spk_fbank"),
    ("campplus", "fbank_no_remove_dc", "spk_fbank"),
    ("length_regulator", "groupnorm_per_channel", "prompt_cond"),
    ("length_regulator", "nearest_exact", "prompt_cond"),
    ("length_regulator", "groupnorm_eps", "prompt_cond"),  # ratio 38 / 37 forced
    ("length_regulator", "mish_as_swish", "prompt_cond"),
    ("gpt", "c_attn_untransposed", "codes"),
    ("gpt", "to_kv_swapped", "spk_latent"),
    ("gpt", "geglu_swapped", "spk_latent"),
    ("gpt", "after_norm_skipped", "spk_latent"),
    ("dit", "final_no_plus_one", "cfm_mel"),
    ("dit", "wqkv_split_order", "cfm_mel"),
    ("dit", "rope_halves", "cfm_mel"),
    ("dit", "uvit_skip_shifted", "cfm_mel"),
    ("dit", "wavenet_zero_pad", "cfm_mel"),
    ("dit", "skip_weight_norm", "cfm_mel"),
    ("dit", "final_ln_eps", "cfm_mel"),  # ratio 7.4 / 5.6 forced, 4.6 / 4.2 chained: the smallest margin
    ("dit", "rope_base", "cfm_mel"),
    ("dit", "softmax_scale_dim", "cfm_mel"),
    ("dit", "ffn_swish_beta", "cfm_mel"),
    ("bigvgan", "ups_kernel_flipped", "wav"),
    ("bigvgan", "no_final_clamp", "wav"),
    ("bigvgan", "snake_no_exp", "wav"),
    ("bigvgan", "upsample_zero_pad", "wav"),
    ("bigvgan", "lowpass_zero_pad", "wav"),
    ("bigvgan", "kaiser_periodic_window", "wav"),
    ("bigvgan", "weight_f16", "wav"),  # ratio 152 / 160 forced
    ("w2v_bert", "layer_norm_eps", "semantic_emb"),  # ratio 53 / 49 forced, 7.6 / 6.5 chained
    ("w2v_bert", "softmax_scale", "semantic_emb"),
    ("w2v_bert", "swish_beta", "semantic_emb"),
    ("gpt", "gelu_erf", "code_logits"),  # the codes do not flip at tiny; ratio 444 / 521 forced, 16 / 15 chained
    ("gpt", "gpt2_ln_eps", "code_logits"),  # 198 / 217 forced, 7.2 / 6.1 chained
    # the forced walk names the stage of the leaf (ratio 61 / 98); end to end the chained and rust
    # walks, whose noise has accumulated, first cross the threshold downstream (tiny: s_infer, 2.5 / 3.4)
    ("gpt", "conv_norm_eps", "spk_latent"),
    ("gpt", "conformer_scale_d_model", "spk_latent"),
    ("gpt", "perceiver_scale_dim", "spk_latent"),
    ("gpt", "ff_swish_beta", "spk_latent"),
]


def _at_or_after(named: str | None, stage: str) -> bool:
    """The chained and rust walks feed Candle its own outputs, so a fault's error adds to noise that
    has accumulated: they must fail at the fault's stage or downstream of it, never upstream (the
    forced walk, fed the float64 run's inputs, names the stage exactly)."""
    order = [st.name for st in P.STAGES] + ["audio_gate"]
    return named in order and order.index(named) >= order.index(stage)
# Switches the pipeline cannot see at its inputs (the output is unchanged), each with the reason;
# their own model tests name them.
INVISIBLE = {
    ("resample", "no_cut"): "the pipeline's 0.5 s speaker clip is shorter than the 15 s cut",
    ("semantic_codec", "layer_norm_eps"): "encoder-only: flips no code at tiny; the pipeline uses the codes only",
    ("semantic_codec", "gelu_tanh"): "encoder-only: flips no code at tiny; the pipeline uses the codes only",
    ("bigvgan", "swap_resblocks"): "each stage averages its resblocks: the swap changes only their order in the sum",
}
# The decoding faults act on the sampled decode only: the greedy walks of FAULTS cannot see them;
# test_pipeline_sampled_decode_fault_named names each at stage `codes` (tests/test_sampling.py at
# its decoding step).
DECODE_FAULTS = PP.DECODE_FAULTS
INVISIBLE.update({("gpt", f): "sampled decoding only: see test_pipeline_sampled.py::test_pipeline_sampled_decode_fault_named" for f in DECODE_FAULTS})


def test_pipeline_faults_cover_every_switch():
    """Every fault switch of every pipeline kind is in FAULTS (with the stage the walk must name)."""
    import indextts_candle

    kinds = dict.fromkeys(st.kind for st in P.STAGES)
    have = {(k, f) for k in kinds for f in indextts_candle.faults(k)}
    listed = {(k, f) for k, f, _ in FAULTS} | {("emotion", "dot_not_cosine")} | set(INVISIBLE)  # dot: own test
    assert have == listed, f"not in FAULTS: {sorted(have - listed)}; not built: {sorted(listed - have)}"


@pytest.fixture(scope="module")  # module: gone before test_pipeline_sampled.py loads its models
def pipe(pipeline_fixtures, device):
    fxs = pipeline_fixtures
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], 0)
    ref = PP.reference_run(fxs, inputs, device)
    return fxs, PP.candle_models(fxs, device), inputs, ref, device


def test_pipeline_stage_order():
    assert [s.name for s in P.STAGES] == STAGE_ORDER


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_pipeline_configs_consistent(size):
    P.check_consistent(P.CONFIGS[size])
    bad = {k: dict(v) for k, v in P.CONFIGS[size].items()}
    bad["bigvgan"]["num_mels"] += 1
    with pytest.raises(ValueError, match="BigVGAN num_mels"):
        P.check_consistent(bad)


def test_pipeline_every_stage_has_a_row():
    """Every float stage output is judged by the noise rule unless a hand-set row (where float64 is
    impossible) names it; every pipeline exception row matches a stage output of some walk."""
    from parity.tolerances import EXCEPTIONS

    keys = [f"{w}{st.name}.{o}" for st in P.STAGES for o in st.compare for w in ("", "chained:")] + ["text.wav"]
    fixed = {k for k in keys if not isinstance(rule("pipeline", k, "cpu", "float32"), NoiseFloor)}
    assert fixed == {"features.input_features", "emo_features.input_features"}, fixed
    import fnmatch

    for (m, pat, _, _), tol in EXCEPTIONS.items():
        if m == "pipeline":
            assert tol.note and any(fnmatch.fnmatchcase(k, pat) for k in keys), f"stale pipeline row {pat!r}"


def test_pipeline_reference_runs_in_float64(pipe):
    """The truth is float64 end to end (except the transformers feature extractor, numpy float32),
    and the float32 reference's noise is non-zero wherever Candle's error is judged against it."""
    _, _, _, ref, _ = pipe
    for st in P.STAGES:
        for o in st.compare:
            a64, f32 = ref.per64[st.name][o], ref.forced32[st.name][o]
            if a64.dtype.kind != "f":
                continue
            if st.name.endswith("features"):  # SeamlessM4TFeatureExtractor: float32 numpy code
                assert a64.dtype == np.float32 and np.array_equal(a64, f32)
                continue
            assert a64.dtype == np.float64, (st.name, o, a64.dtype)
            exact = st.name == "front" and o == "audio_22k"  # 22.05 → 22.05 kHz is the identity
            assert exact or np.abs(f32.astype(np.float64) - a64).max() > 0, f"{st.name}.{o}: no float32 noise"


@pytest.mark.parametrize("mode", ["forced", "chained"])
def test_pipeline_stages(mode, pipe):
    """Every stage within its tolerance row; a failure names the first stage out of tolerance."""
    fxs, cms, inputs, ref, device = pipe
    w = PP.walk(fxs, cms, inputs, mode, device, ref=ref)
    print(w.table())
    assert [s.stage for s in w.stages] == STAGE_ORDER
    w.assert_ok()


def test_pipeline_wave_gate(pipe):
    """Final waveform of the chained run: SNR, log-mel L1 and max|Δ| within AUDIO_GATE."""
    fxs, cms, inputs, ref, device = pipe
    w = PP.walk(fxs, cms, inputs, "chained", device, ref=ref)
    assert w.audio is not None, w.table()
    assert w.audio.samples > 1024, "too short for the log-mel metric"
    assert not w.audio_fail, w.table()
    # teeth: 1e-3 of noise on the same wav fails the gate
    wav = w.ref_state["wav"].astype(np.float32)
    noisy = wav + 1e-3 * np.random.default_rng(0).standard_normal(wav.shape).astype(np.float32)
    assert PP.audio_gate_failure(audio_metrics(wav, noisy))


def _below_noise(pipe, broken_model, stage: str, what: str, w) -> None:
    """A walk may pass a fault only when the fault's own effect at its stage (broken vs correct
    Candle on the same inputs) is below the threshold in units of float32's own error there."""
    fxs, cms, inputs, ref, device = pipe
    e_max, e_rms, out = PP.fault_effect(cms, broken_model, ref, inputs, stage, device)
    assert e_max <= K_MAX and e_rms <= K_RMS, (
        f"{what} passes every stage although it moves `{out}` by {e_max:.2f} (max) / {e_rms:.2f} (rms) × "
        f"the float32 reference's own error\n{w.table()}")
    print(f"{what}: every stage passes; its effect at `{out}` is {e_max:.2f} (max) / {e_rms:.2f} (rms) × "
          f"the float32 reference's own error (≤ k {K_MAX:g}/{K_RMS:g})")


@pytest.mark.parametrize("kind,fault,stage", FAULTS, ids=[f"fault_at_{s}" for _, _, s in FAULTS])
def test_pipeline_fault_named(kind, fault, stage, pipe):
    fxs, cms, inputs, ref, device = pipe
    broken = {**cms, kind: PP.candle_model(fxs, kind, device, [fault])}
    for mode in ("forced", "chained"):
        w = PP.walk(fxs, broken, inputs, mode, device, ref=ref, stop_at_failure=True)
        if w.ok:
            _below_noise(pipe, broken[kind], stage, f"{mode}: fault `{fault}`", w)
            continue
        if mode == "forced":
            assert w.first_failure == stage, f"forced: fault `{fault}` named `{w.first_failure}`, expected `{stage}`\n{w.table()}"
        else:
            assert _at_or_after(w.first_failure, stage), (
                f"chained: fault `{fault}` named `{w.first_failure}`, upstream of its stage `{stage}`\n{w.table()}")
        with pytest.raises(AssertionError, match=f"pipeline parity failed at stage `{w.first_failure}`"):
            w.assert_ok()


def test_pipeline_near_tie_rule():
    tol = EXACT
    ref = {"codes": np.array([[3, 4, 5, 6]]), "margins": np.array([1.0, 1.0, NEAR_TIE / 10, 1.0])}
    row, note, flipped = PP._codes_row("codes.codes", ref, np.array([[3, 4, 9, 9]]), tol)
    assert row.ok and flipped and "step 2" in note
    row, _, flipped = PP._codes_row("codes.codes", ref, np.array([[3, 7, 5, 6]]), tol)
    assert not row.ok and not flipped and "step 1" in row.reason
    # early stop on one side = a flip at the step where it stopped
    row, _, flipped = PP._codes_row("codes.codes", ref, np.array([[3, 4]]), tol)
    assert row.ok and flipped
    row, _, _ = PP._codes_row("codes.codes", ref, np.array([[3, 4, 5, 6]]), tol)
    assert row.ok


def test_pipeline_chained_continues_on_reference_codes_after_a_near_tie(pipe, monkeypatch):
    """A flipped code (accepted as a near tie) must not break the stages after it."""
    import dataclasses

    fxs, cms, inputs, ref, device = pipe
    per32 = {k: dict(v) for k, v in ref.per32.items()}
    per32["codes"]["margins"] = np.zeros_like(per32["codes"]["margins"])  # every step a tie
    real_run = PP.candle.run

    def flip(model, method, ins, **kw):
        outs, taps = real_run(model, method, ins, **kw)
        if method == "greedy":
            outs["codes"] = outs["codes"][:, :-1]  # Candle "stopped" one step early
        return outs, taps

    monkeypatch.setattr(PP.candle, "run", flip)
    w = PP.walk(fxs, cms, inputs, "chained", device, ref=dataclasses.replace(ref, per32=per32))
    note = w.stages[STAGE_ORDER.index("codes")].note
    assert "near-tie" in note and "continuing on the float64 codes" in note
    w.assert_ok()


def test_pipeline_candle_error_names_stage(pipe, monkeypatch):
    fxs, cms, inputs, ref, device = pipe
    real_run = PP.candle.run

    def boom(model, method, ins, **kw):
        if method == "latent_proj":
            raise PP.candle.InputError("latent: wrong width")
        return real_run(model, method, ins, **kw)

    monkeypatch.setattr(PP.candle, "run", boom)
    w = PP.walk(fxs, cms, inputs, "forced", device, ref=ref)
    assert w.first_failure == "s_infer" and "wrong width" in w.table()


# ---- emotion inputs: another clip with emo_alpha, the 8-weight emotion vector -----------------------
@pytest.fixture(scope="module", params=["clip", "vector"], ids=["emo_clip", "emo_vector"])
def emo_pipe(request, pipe):
    fxs, cms, _, _, device = pipe
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], 0, emotion=request.param)
    return fxs, cms, inputs, PP.reference_run(fxs, inputs, device), device, request.param


def test_pipeline_emotion_inputs(emo_pipe, pipe):
    """Forced and chained walks and the Rust pipeline with an emotion clip / emotion vector."""
    fxs, cms, inputs, ref, device, mode = emo_pipe
    plan = P.emotion_plan(inputs)
    if mode == "vector":  # the weights were scaled by alpha 0.8, the clip is the speaker's, alpha 1
        assert np.allclose(plan["mix_weights"], [int(x * 0.8 * 10000) / 10000 for x in P.EMO_WEIGHTS])
        assert plan["merge_alpha"][0] == 1.0 and plan["emo_audio"] is None
    else:
        assert plan["merge_alpha"][0] == np.float32(0.6) and not plan["mix_weights"].any()
    for mode_ in ("forced", "chained"):
        w = PP.walk(fxs, cms, inputs, mode_, device, ref=ref)
        w.assert_ok()
    w = PP.rust_walk(PP.rust_pipeline(fxs, device), inputs, ref, device)  # dropped right after
    w.assert_ok()
    # the emotion changed the result: the emovec differs from the speaker-only one (pipe: seed 0, speaker)
    base_emovec = pipe[3].per64["emo_mix"]["emovec"]
    assert np.abs(ref.per64["emo_mix"]["emovec"] - base_emovec).max() > 1e-3


def test_pipeline_emotion_row_choice_fault(pipe):
    """Rows picked by dot product instead of cosine: named at emo_mix (emotion vector case)."""
    fxs, cms, _, _, device = pipe
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], 0, emotion="vector")
    ref = PP.reference_run(fxs, inputs, device)
    # precondition: on these prototypes the dot product picks other rows than the cosine
    import torch

    m = fxs["emotion"].reference(device)
    style = torch.from_numpy(ref.state32["style"])
    dot_rows = [int(torch.argmax(b @ style[0])) for b in torch.split(m.spk_matrix.detach(), m.emo_num)]
    assert dot_rows != ref.per32["emo_mix"]["rows"].tolist(), "fixture too regular for this fault"
    broken = {**cms, "emotion": PP.candle_model(fxs, "emotion", device, ["dot_not_cosine"])}
    w = PP.walk(fxs, broken, inputs, "forced", device, ref=ref)
    assert w.first_failure == "emo_mix", w.table()


def test_pipeline_emotion_missing_key_named(pipe, tmp_path):
    from safetensors.numpy import load_file, save_file

    from parity import candle

    fxs, _, _, _, device = pipe
    fx = fxs["emotion"]
    sd = load_file(fx.safetensors_path)
    bad = tmp_path / "emotion.safetensors"
    save_file({k: v for k, v in sd.items() if k != "emo_matrix"}, str(bad))
    with pytest.raises(candle.CheckpointError, match=r"emo_matrix.*emotion\.safetensors|emotion\.safetensors.*emo_matrix"):
        candle.Model("emotion", str(bad), fx.spec.config_json(fx.cfg), device, [], "")
    with pytest.raises(candle.InputError, match="weights"):
        candle.run(fx.candle(device), "mix", {"style": np.zeros((1, fx.cfg["style_dim"]), np.float32),
                                             "emovec": np.zeros((1, fx.cfg["model_dim"]), np.float32),
                                             "weights": np.zeros(3, np.float32)})


# ---- the Rust `pipeline` kind (crates/indextts2_candle/src/pipeline.rs) -----------------------------
@pytest.fixture
def rust_pipe(pipe):
    """Per test: at official size a whole Rust pipeline holds ≈ 7 GB, dropped after each test."""
    import gc

    fxs, _, _, _, device = pipe
    m = PP.rust_pipeline(fxs, device)
    yield m
    del m
    gc.collect()


def test_pipeline_rust_end_to_end(pipe, rust_pipe):
    """The Candle-composed pipeline (one Rust call) against the reference, stage by stage + audio gate."""
    fxs, _, inputs, ref, device = pipe
    w = PP.rust_walk(rust_pipe, inputs, ref, device)
    print(w.table())
    assert [s.stage for s in w.stages] == STAGE_ORDER
    w.assert_ok()
    assert w.audio is not None and not w.audio_fail


@pytest.mark.parametrize("gpt_dtype", ["float16", "bfloat16"], ids=["f16", "bf16"])
def test_pipeline_rust_half_precision_mode(gpt_dtype, pipe):
    """The official fp16 mode (config `gpt_dtype`: the GPT in half precision, the rest float32), one
    Rust call, against the reference in the same mode: every stage by the noise rule (the GPT's and
    the stages it feeds with tolerances.NOISE_HALF, the others float32's), codes exact. Seed 0 only:
    on other tiny seeds half-precision greedy codes flip at margins above NEAR_TIE (README, Precision)."""
    import gc

    fxs, _, inputs, ref, device = pipe
    per, notes = PP.mixed_reference(fxs, inputs, ref, gpt_dtype, device)
    m = PP.rust_pipeline(fxs, device, gpt_dtype=gpt_dtype)
    try:
        w = PP.mixed_rust_walk(m, inputs, ref, per, gpt_dtype, device)
    finally:
        del m
        gc.collect()
    w.notes += notes
    print(w.table())
    assert [s.stage for s in w.stages] == STAGE_ORDER
    w.assert_ok()
    assert not notes, notes  # tiny fixture: the half GPT's own codes equal the float64 ones
    spk = next(s for s in w.stages if s.stage == "spk_latent").rows[0]
    assert spk.tol.k_max == NOISE_HALF[gpt_dtype].k_max  # the GPT stages are judged as half precision


def test_pipeline_half_precision_mode_refused(pipe):
    fxs = pipe[0]
    from parity.candle import InputError

    with pytest.raises(InputError, match="gpt_dtype"):
        PP.rust_pipeline(fxs, "cpu", gpt_dtype="float8")
    path, cfg = PP.rust_files(fxs)
    with pytest.raises(InputError, match="pipeline runs in float32"):
        PP.candle.Model("pipeline", path, cfg, "cpu", [], "", "float16")


def test_pipeline_rust_coverage(pipe, rust_pipe):
    """Every key of the pipeline file is read except the components' own allow-listed ones."""
    import fnmatch

    from parity.registry import MODELS

    allowed = [PP.RUST_PREFIX[k] + pat for k in PP.MODEL_KINDS for pat, why in MODELS[k].allow_unused.items()
               if "other s2mel kind" not in why]
    bad = [k for k in rust_pipe.unused_keys() if not any(fnmatch.fnmatchcase(k, p) for p in allowed)]
    assert not bad, bad[:10]


@pytest.mark.parametrize("kind,fault,stage", FAULTS, ids=[f"rust_fault_at_{s}" for _, _, s in FAULTS])
def test_pipeline_rust_fault_named(kind, fault, stage, pipe):
    fxs, _, inputs, ref, device = pipe
    w = PP.rust_walk(PP.rust_pipeline(fxs, device, [f"{kind}:{fault}"]), inputs, ref, device)
    if w.ok:
        _below_noise(pipe, PP.candle_model(fxs, kind, device, [fault]), stage, f"fault `{kind}:{fault}`", w)
        return
    assert _at_or_after(w.first_failure, stage), (
        f"fault `{kind}:{fault}` named `{w.first_failure}`, upstream of its stage `{stage}`\n{w.table()}")


def test_pipeline_rust_bad_input(pipe, rust_pipe):
    from parity import candle
    from parity.candle import InputError

    fxs, _, inputs, _, device = pipe
    ins = PP.synth_inputs(inputs)
    with pytest.raises(InputError, match="needs input `t_span`"):
        candle.run(rust_pipe, "synthesize", {k: v for k, v in ins.items() if k != "t_span"})
    with pytest.raises(InputError, match="z_pool"):
        candle.run(rust_pipe, "synthesize", {**ins, "z_pool": ins["z_pool"][:, :, :3]})
    with pytest.raises(InputError, match="no method"):
        candle.run(rust_pipe, "speak", ins)
    with pytest.raises(InputError, match="unknown fault"):
        PP.rust_pipeline(fxs, device, ["adaln_swapped"])  # must be `<kind>:<fault>`


# ---- benchmarks (pytest --benchmark-only -k pipeline) -------------------------------------------------
def _bench_pipe(request, decoding: str = "greedy"):
    size = "full" if request.config.getoption("--full-size") else "tiny"
    ckpt = request.config.getoption("--checkpoints")
    fxs = PP.fixtures("full" if ckpt else size, ckpt)
    if decoding == "greedy":
        return fxs, P.make_inputs(P.CONFIGS[PP._size(fxs)], 0)
    # a synthetic GPT rarely samples its stop token within 20 codes (infer_v2 then fails): the
    # stop-biased GPT and the size's measured 3-beam case of test_pipeline_sampled
    fxs = PP.sampled_fixtures(fxs)
    return fxs, P.make_inputs(P.CONFIGS[PP._size(fxs)], PP.sampled_cases(fxs).beam3_seed, decoding="sampled")


@pytest.mark.benchmark(group="pipeline-rtf")
@pytest.mark.parametrize("side", ["candle", "torch"])
@pytest.mark.parametrize("decoding", ["greedy", "sampled"])
def test_bench_pipeline_rtf(decoding, side, benchmark, request):
    """End-to-end real-time factor (seconds of compute per second of audio), CPU, one segment of at
    most 20 codes: greedy codes, or infer_v2's sampled decoding (its defaults: 3 beams, top_k 30,
    top_p 0.8, temperature 0.8) on the same given draws on both sides, with the stop-biased GPT. Tiny configs unless
    --full-size (tiny figures show the composition's overhead only; RTF claims need --full-size or
    --checkpoints)."""
    from parity import candle
    from parity.bench import measure

    fxs, inputs = _bench_pipe(request, decoding)
    if side == "candle":
        m = PP.rust_pipeline(fxs, "cpu")
        ins = PP.synth_inputs(inputs)
        fn = lambda: candle.run(m, "synthesize", ins)[0]["wav.wav"]  # noqa: E731
    else:
        mods = PP.references(fxs, "cpu")
        fn = lambda: P.run(mods, inputs)[1]["wav"]  # noqa: E731
    audio_s = np.asarray(fn()).size / 22050  # also the warm-up
    measure(benchmark, fn, rounds=3, warmup=False, audio_s=audio_s, size=PP._size(fxs), decoding=decoding)
    benchmark.extra_info["rtf"] = benchmark.stats.stats.mean / audio_s


@pytest.mark.benchmark(group="pipeline-load")
@pytest.mark.parametrize("side", ["candle_mmap", "torch_load"])
def test_bench_pipeline_load(side, benchmark, request):
    """Whole-stack load: the Rust pipeline from its one safetensors (header mapped, tensors read
    into their buffers; the id `candle_mmap` is kept for the trend lines) vs torch.load of the
    official files (what the official code loads before it can build a module)."""
    import torch

    from parity.bench import measure

    fxs, _ = _bench_pipe(request)
    if side == "candle_mmap":
        PP.rust_files(fxs)
        fn = lambda: PP.rust_pipeline(fxs, "cpu")  # noqa: E731
    else:
        files = sorted({fx.official_path for fx in fxs.values()})

        def fn():
            for f in files:
                if f.endswith(".safetensors"):
                    from safetensors.torch import load_file

                    load_file(f)
                else:
                    torch.load(f, map_location="cpu", weights_only=True)
    measure(benchmark, fn, rounds=3, size=PP._size(fxs))


def test_pipeline_missing_checkpoints_listed(tmp_path):
    """`--checkpoints DIR` without the files: one message naming every file the pipeline needs."""
    from parity.fixtures import MissingCheckpoints

    (tmp_path / "gpt.pth").write_bytes(b"")
    with pytest.raises(MissingCheckpoints) as e:
        PP.fixtures("full", str(tmp_path))
    msg = str(e.value).split("Expected layout")[0]
    assert "Expected layout" in str(e.value)
    for f in ("bigvgan_generator.pt", "s2mel.pth", "campplus_cn_common.bin", "model.safetensors",
              "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt"):
        assert f in msg, msg
    assert "gpt.pth" not in msg


def test_pipeline_official_directory_round_trip(tmp_path, device):
    """`--checkpoints DIR` end to end on a tiny synthetic directory in the official layout (both s2mel
    kinds in one nested s2mel.pth, the loose files at the top): discovery, conversion and the walk."""
    from parity import official_dir
    from parity.fixtures import MissingCheckpoints

    written = official_dir.write(str(tmp_path), "tiny")
    assert {"gpt.pth", "s2mel.pth", "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt"} <= set(written)
    fxs = PP.fixtures("tiny", str(tmp_path))
    assert all(fxs[k].size == "real" for k in PP.MODEL_KINDS)
    inputs = P.make_inputs(P.CONFIGS["tiny"], 0, emotion="vector")
    w = PP.walk(fxs, PP.candle_models(fxs, device), inputs, "forced", device)
    w.assert_ok()
    (tmp_path / "feat1.pt").unlink()
    with pytest.raises(MissingCheckpoints, match="feat1.pt"):
        PP.fixtures("tiny", str(tmp_path))


# ---- text through the bpe.model: segments, joined wav --------------------------------------------
def test_pipeline_text_to_speech(pipe):
    """Rust `tts` (bpe.model → segments → per-segment synthesis → 200 ms silences) = reference run_text."""
    fxs, _, inputs, _, device = pipe
    r = PP.text_walk(fxs, inputs, device=device)
    print(r.table())
    assert len(r.ref["segments"]) >= 2, "the test text must give several segments"
    assert r.ok, r.table()
    gap = int(22050 * 0.2)
    n0 = r.ref["wavs"][0].shape[-1]
    assert not r.candle["wav"][0, n0:n0 + gap].any(), "200 ms of silence between segments"


def test_pipeline_text_bad_input(pipe, rust_pipe):
    from parity import candle
    from parity.candle import InputError

    _, _, inputs, _, _ = pipe
    ins = PP.synth_inputs(inputs, text=False)
    with pytest.raises(InputError, match="Unicode scalar"):
        candle.run(rust_pipe, "tts", {**ins, "text_codepoints": np.array([0xD800], np.int64)})
    with pytest.raises(InputError, match="no tokens"):
        candle.run(rust_pipe, "tts", {**ins, "text_codepoints": np.array([ord(" ")], np.int64)})


# ---- the official sampled decoding: bad input (the walks: test_pipeline_sampled.py) -------------
def test_pipeline_decoding_bad_input(pipe, rust_pipe):
    from parity import candle
    from parity.candle import InputError

    fxs, _, inputs, _, _ = pipe
    ins = PP.synth_inputs(inputs)
    sampled = P.make_inputs(P.CONFIGS[PP._size(fxs)], 0, decoding="sampled")
    with pytest.raises(InputError, match="exclude each other"):
        candle.run(rust_pipe, "synthesize", {**ins, "draws": sampled["draws"]})
    no_decoding = {k: v for k, v in ins.items() if k != "max_tokens"}
    with pytest.raises(InputError, match="give `max_tokens`"):
        candle.run(rust_pipe, "synthesize", no_decoding)
    with pytest.raises(InputError, match="num_return_sequences"):
        candle.run(rust_pipe, "synthesize", {**no_decoding, "draws": sampled["draws"],
                                             "decode_options": P.encode_options({"num_return_sequences": 2, "max_mel_tokens": 20})})
    with pytest.raises(InputError, match="top_p"):
        candle.run(rust_pipe, "synthesize", {**no_decoding, "seed": np.array([0]),
                                             "decode_options": P.encode_options({"top_p": 1.5})})
    with pytest.raises(InputError, match="unknown field"):
        candle.run(rust_pipe, "synthesize", {**no_decoding, "seed": np.array([0]),
                                             "decode_options": P.encode_options({"beams": 3})})


def test_pipeline_sampled_without_stop_token_refused(pipe, rust_pipe):
    """infer_v2 cannot synthesise a segment whose decode never stops (its code_lens get the length
    twice; the CFM concat then fails): the Rust pipeline refuses it with that reason (the unbiased
    tiny GPT does not stop within 6 codes)."""
    from parity import candle
    from parity.candle import InputError

    fxs, _, inputs, _, _ = pipe
    sampled = P.make_inputs(P.CONFIGS[PP._size(fxs)], 0, decoding="sampled", max_tokens=6)
    with pytest.raises(InputError, match="no stop token within max_mel_tokens = 6"):
        candle.run(rust_pipe, "synthesize", PP.synth_inputs(sampled))
