"""CAMPPlus and its Kaldi fbank front end, beyond the table-driven walk: the fbank port against
torchaudio, fbank parity on real clips (speech, very short, silence, odd length), the full-size
wav → embedding chain, any audio length, bad input, benchmark."""
from __future__ import annotations

import importlib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity import fixtures as fxm
from parity.compare import compare_noise
from parity.registry import MODELS
from parity.runner import layer_walk, run_reference
from parity.tolerances import rule
from reference.campplus import FULL, TINY, campplus_features, kaldi_fbank, load_wav

SPEC = MODELS["campplus"]
EMBED = next(c for c in SPEC.cases if c.method == "forward")
FBANK = next(c for c in SPEC.cases if c.method == "fbank")
CLIPS = ["speech_16k.wav", "short_16k.wav", "silence_16k.wav", "odd_16k.wav"]


@pytest.fixture(scope="module")
def full():
    """Official size (80 bins, 12/24/16 dense layers): the fbank clips run at the real bin count."""
    fx = fxm.synthetic(SPEC, "full")
    return fx, fx.candle("cpu")


@pytest.mark.parametrize("clip", CLIPS + ["odd_lengths"], ids=lambda c: f"campplus-{c}")
def test_campplus_fbank_port_equals_torchaudio(clip):
    """The reference's own torch port equals `torchaudio.compliance.kaldi.fbank` (when installed)."""
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    if clip == "odd_lengths":
        rng = np.random.default_rng(0)
        wavs = [torch.from_numpy((0.3 * rng.standard_normal((1, n))).astype(np.float32)) for n in (400, 401, 559, 560, 4321)]
    else:
        wavs = [torch.from_numpy(load_wav(clip))]
    for w in wavs:
        ref = kaldi.fbank(w, num_mel_bins=80, dither=0.0, sample_frequency=16000)
        ours = kaldi_fbank(w, 80, 16000.0)
        assert ours.shape == ref.shape
        assert torch.equal(ours, ref) or (ours - ref).abs().max() <= 1e-6, (ours - ref).abs().max()


@pytest.mark.parametrize("mode", ["chained", "injected"])
@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: f"campplus-{c}")
def test_campplus_fbank_clips(clip, mode, full):
    fx, cm = full
    layer_walk(fx, cm, FBANK, mode, "cpu", inputs={"wav": load_wav(clip)}).assert_ok()


def test_campplus_digital_zeros(full):
    """All-zero audio (the silence clip has ±1 LSB dither, this has none): every energy is floored
    at ε, so the mean-removed features are 0 up to the f32 rounding of the mean."""
    _, cm = full
    got, taps = candle.run(cm, "fbank", {"wav": np.zeros((1, 16000), np.float32)}, taps=True)
    assert got["feat"].shape == (98, 80)
    assert np.all(taps["fbank"] == np.float32(np.log(np.finfo(np.float32).eps)))
    assert np.abs(got["feat"]).max() <= 1e-5


def test_campplus_full_size_speech_chain(full):
    """infer_v2 step 6 at official size on real speech: Candle fbank → Candle CAMPPlus vs the
    reference fbank → reference CAMPPlus; then the layer walk on the reference features."""
    fx, cm = full
    wav = load_wav("speech_16k.wav")
    feat_c, _ = candle.run(cm, "fbank", {"wav": wav})
    emb_c, _ = candle.run(cm, "forward", {"feat": feat_c["feat"][None]})
    emb = {}
    for dt in (torch.float64, torch.float32):
        f = campplus_features(torch.from_numpy(wav).to(dt), 80, 16000.0)
        with torch.no_grad():
            emb[dt] = fx.reference("cpu", dt)(f[None]).numpy()
    feat_r = campplus_features(torch.from_numpy(wav), 80, 16000.0)
    c = compare_noise("output:embedding", emb[torch.float64], emb[torch.float32], emb_c["embedding"],
                      rule("campplus", "output:embedding", "cpu", "float32"))
    assert c.ok and c.cosine > 0.999999, c.line()
    for mode in ("chained", "injected"):
        layer_walk(fx, cm, EMBED, mode, "cpu", inputs={"feat": feat_r[None].numpy()}).assert_ok()


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(720, 48000), start=st.integers(0, 40000))
def test_campplus_any_clip_length(n, start, fixtures, candle_models):
    """Any clip length from 3 fbank frames to 3 s: fbank and embedding both within tolerance."""
    fx = fixtures("campplus")
    cm = candle_models("campplus")
    wav = load_wav("speech_16k.wav")[:, start : start + n]
    if wav.shape[1] < 720:
        wav = load_wav("speech_16k.wav")[:, :n]
    ref64, _ = run_reference(fx, FBANK, {"wav": wav}, dtype=torch.float64)
    ref, _ = run_reference(fx, FBANK, {"wav": wav})
    got, _ = candle.run(cm, "fbank", {"wav": wav})
    c = compare_noise("output:feat", ref64["feat"], ref["feat"], got["feat"], rule("campplus", "output:feat", "cpu", "float32"))
    assert c.ok, c.line()
    feat = ref["feat"][None]
    ref_e64, _ = run_reference(fx, EMBED, {"feat": feat}, dtype=torch.float64)
    ref_e, _ = run_reference(fx, EMBED, {"feat": feat})
    got_e, _ = candle.run(cm, "forward", {"feat": feat})
    c = compare_noise("output:embedding", ref_e64["embedding"], ref_e["embedding"], got_e["embedding"],
                      rule("campplus", "output:embedding", "cpu", "float32"))
    assert c.ok, c.line()


def test_campplus_untapped_path_equals_tapped(candle_models):
    """Without taps CAMPPlus fuses each BatchNorm with its ReLU (and the head blocks' residual sum)
    and runs each CAM gate on one column per segment: the same f32 roundings as the tapped
    per-layer path (the gate's 1×1 convs form each column on its own), so the outputs are
    bit-identical."""
    cm = candle_models("campplus")
    wav = load_wav("speech_16k.wav")[:, :24000]
    plain, _ = candle.run(cm, "fbank", {"wav": wav})
    tapped, taps = candle.run(cm, "fbank", {"wav": wav}, taps=True)
    assert taps and np.array_equal(plain["feat"], tapped["feat"])
    feat = plain["feat"][None]
    plain, _ = candle.run(cm, "forward", {"feat": feat})
    tapped, taps = candle.run(cm, "forward", {"feat": feat}, taps=True)
    assert taps and np.array_equal(plain["embedding"], tapped["embedding"])


@pytest.mark.parametrize("method,inputs,match", [
    ("fbank", {"wav": np.zeros((1, 399), np.float32)}, "fbank expects"),
    ("fbank", {"wav": np.zeros((16000,), np.float32)}, "fbank expects"),
    ("fbank", {"wav": np.zeros((2, 16000), np.float32)}, "fbank expects"),
    ("fbank", {"wav": np.full((1, 800), np.nan, np.float32)}, "NaN"),
    ("forward", {"feat": np.zeros((1, 50, TINY["feat_dim"] - 1), np.float32)}, "CAMPPlus expects"),
    ("forward", {"feat": np.zeros((1, 2, TINY["feat_dim"]), np.float32)}, "CAMPPlus expects"),
    ("forward", {"feat": np.zeros((50, TINY["feat_dim"]), np.float32)}, "CAMPPlus expects"),
    ("forward", {"wav": np.zeros((1, 800), np.float32)}, "unexpected"),
], ids=["campplus-too_short", "campplus-rank1", "campplus-stereo", "campplus-nan", "campplus-wrong_bins",
        "campplus-two_frames", "campplus-rank2_feat", "campplus-wrong_input_name"])
def test_campplus_bad_input(method, inputs, match, candle_models):
    with pytest.raises(candle.InputError, match=match):
        candle.run(candle_models("campplus"), method, inputs)


@pytest.mark.benchmark(group="campplus")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_campplus(side, benchmark, bench_fixtures):
    """10 s of 16 kHz speech → fbank → CAMPPlus embedding, official size, CPU fp32."""
    fx = bench_fixtures("campplus")
    speech = load_wav("speech_16k.wav")
    wav = np.ascontiguousarray(np.tile(speech, (1, 2))[:, :160000])
    if side == "candle":
        cm = fx.candle("cpu")

        def fn():
            f, _ = candle.run(cm, "fbank", {"wav": wav})
            return candle.run(cm, "forward", {"feat": f["feat"][None]})
    else:
        ref = fx.reference("cpu")
        t = torch.from_numpy(wav)

        def fn():
            with torch.no_grad():
                return ref(campplus_features(t, 80, 16000.0)[None])
    measure(benchmark, fn, rounds=5, audio_s=10.0)


def test_campplus_reference_matches_official_code(full):
    """Our reference against the official CAMPPlus class itself (PyPI snapshot of index-tts,
    `pip install --no-deps tts-webui-index-tts==2.0.1`; skipped when absent): the synthetic
    state dict (BatchNorm stats included) loads strictly and the embeddings agree on real speech."""
    dtdnn = importlib.import_module("indextts.s2mel.modules.campplus.DTDNN")
    fx, _ = full
    ours = fx.reference()
    off = dtdnn.CAMPPlus(feat_dim=80, embedding_size=192).eval()
    off.load_state_dict(ours.state_dict(), strict=True)
    feat = campplus_features(torch.from_numpy(load_wav("speech_16k.wav")), 80, 16000.0)[None]
    with torch.no_grad():
        a, b = ours(feat), off(feat)
    assert (a - b).abs().max().item() <= 1e-6


@pytest.mark.parametrize("config_str", ["batchnorm-prelu", "prelu-batchnorm", "batchnorm-relu"],
                         ids=lambda c: f"campplus-{c}")
def test_campplus_config_str_matches_official_code(config_str):
    """`config_str` as the official class builds it: the same module tree (state-dict keys, PReLU
    weights included) and the same embedding, in float64 (the two share every op)."""
    dtdnn = importlib.import_module("indextts.s2mel.modules.campplus.DTDNN")
    cfg = {**FULL, "config_str": config_str}
    from reference.common import synthetic_init

    ours = SPEC.build_reference(cfg)
    synthetic_init(ours, 0, SPEC.init_overrides)
    ours = ours.double().eval()
    off = dtdnn.CAMPPlus(feat_dim=80, embedding_size=192, config_str=config_str).double().eval()
    off.load_state_dict(ours.state_dict(), strict=True)
    feat = campplus_features(torch.from_numpy(load_wav("short_16k.wav")).double(), 80, 16000.0)[None]
    with torch.no_grad():
        a, b = ours(feat), off(feat)
    assert (a - b).abs().max().item() <= 1e-12 * max(1.0, a.abs().max().item())
