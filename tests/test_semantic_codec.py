"""RepCodec semantic codec checks beyond the table-driven walk: full-size exact codes, any length,
bad input, benchmark."""
from __future__ import annotations

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
from reference.semantic_codec import make_codes, make_features

SPEC = MODELS["semantic_codec"]
QUANTIZE = next(c for c in SPEC.cases if c.method == "quantize")


def test_semantic_codec_full_size_codes_exact():
    """Official size (8192 codes of dim 8, 12 ConvNeXt layers): 10 s of features (500 frames);
    every code equal, every tap within tolerance, in both walks."""
    fx = fxm.synthetic(SPEC, "full")
    cm = fx.candle("cpu")
    inputs = make_features(fx.cfg, 3, frames=500)
    for mode in ("chained", "injected"):
        w = layer_walk(fx, cm, QUANTIZE, mode, "cpu", inputs=inputs)
        w.assert_ok()
    codes = next(r for r in w.rows if r.name == "quantizer.quantizers.0.codebook")
    assert codes.max_abs == 0.0


def test_semantic_codec_batch_rows_independent(fixtures, candle_models):
    """B=2: each row's codes equal the B=1 result for that row (no cross-batch leakage)."""
    fx = fixtures("semantic_codec")
    cm = candle_models("semantic_codec")
    a, b = make_features(fx.cfg, 1)["x"], make_features(fx.cfg, 2)["x"]
    both, _ = candle.run(cm, "quantize", {"x": np.concatenate([a, b])})
    one, _ = candle.run(cm, "quantize", {"x": b})
    np.testing.assert_array_equal(both["codes"][1:], one["codes"])
    ref, _ = run_reference(fx, QUANTIZE, {"x": np.concatenate([a, b])})
    np.testing.assert_array_equal(both["codes"], ref["codes"])


def test_semantic_codec_untapped_path_equals_tapped(fixtures, candle_models):
    """Without taps each ConvNeXt block adds its layer-scaled branch in one pass (x + h·γ) and
    keeps the residual stream channels-last: the same f32 roundings as the tapped path, so codes
    and embedding are bit-identical."""
    fx = fixtures("semantic_codec")
    cm = candle_models("semantic_codec")
    inputs = make_features(fx.cfg, 5, frames=120)
    plain, _ = candle.run(cm, "quantize", inputs)
    tapped, taps = candle.run(cm, "quantize", inputs, taps=True)
    assert taps and np.array_equal(plain["emb"], tapped["emb"])
    np.testing.assert_array_equal(plain["codes"], tapped["codes"])


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.integers(1, 160), seed=st.integers(0, 2**16))
def test_semantic_codec_any_length(frames, seed, fixtures, candle_models):
    fx = fixtures("semantic_codec")
    inputs = make_features(fx.cfg, seed, frames)
    ref64, _ = run_reference(fx, QUANTIZE, inputs, dtype=torch.float64)
    ref, _ = run_reference(fx, QUANTIZE, inputs)
    got, _ = candle.run(candle_models("semantic_codec"), "quantize", inputs)
    np.testing.assert_array_equal(got["codes"], ref["codes"])
    c = compare_noise("output:emb", ref64["emb"], ref["emb"], got["emb"], rule("semantic_codec", "output:emb", "cpu", "float32"))
    assert c.ok, c.line()


# Bounds come from the config (tiny: 64 codes of width 32; official: 8192 codes of width 1024).
@pytest.mark.parametrize("method,make,match", [
    ("quantize", lambda c: {"x": np.zeros((1, 5, c["hidden_size"] + 1), np.float32)}, "expects x"),
    ("quantize", lambda c: {"x": np.zeros((1, 0, c["hidden_size"]), np.float32)}, "expects x"),
    ("quantize", lambda c: {"x": np.zeros((5, c["hidden_size"]), np.float32)}, "expects x"),
    ("vq2emb", lambda c: {"codes": np.array([[0, c["codebook_size"]]], np.int64)}, "outside the codebook"),
    ("vq2emb", lambda c: {"codes": np.array([[-1]], np.int64)}, "outside the codebook"),
    ("vq2emb", lambda c: {"codes": np.zeros((1, 2, 3), np.int64)}, "expects codes"),
    ("decode", lambda c: {"x": np.zeros((1, 5, c["hidden_size"]), np.float32)}, "no method"),
], ids=["semantic_codec-wrong_dim", "semantic_codec-empty", "semantic_codec-rank2", "semantic_codec-code_too_big",
        "semantic_codec-negative_code", "semantic_codec-codes_rank3", "semantic_codec-no_decoder"])
def test_semantic_codec_bad_input(method, make, match, fixtures, candle_models):
    cfg = fixtures("semantic_codec").cfg
    with pytest.raises(candle.InputError, match=match):
        candle.run(candle_models("semantic_codec"), method, make(cfg))
    if method == "vq2emb" and match == "outside the codebook":  # the last valid code is accepted
        candle.run(candle_models("semantic_codec"), method, {"codes": np.array([[0, cfg["codebook_size"] - 1]], np.int64)})


@pytest.mark.benchmark(group="semantic_codec")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_semantic_codec(side, benchmark, bench_fixtures):
    """10 s of 16 kHz audio = 500 w2v-BERT frames (50 Hz), official size, CPU fp32, quantize()."""
    fx = bench_fixtures("semantic_codec")
    x = make_features(fx.cfg, 0, frames=500)["x"]
    if side == "candle":
        cm = fx.candle("cpu")
        fn = lambda: candle.run(cm, "quantize", {"x": x})  # noqa: E731
    else:
        ref = fx.reference("cpu")
        t = torch.from_numpy(x)

        def fn():
            with torch.no_grad():
                return ref.quantize(t)
    measure(benchmark, fn, rounds=5, audio_s=10.0, frames=500)


def test_semantic_codec_vq2emb_matches_quantize_emb(fixtures, candle_models):
    """vq2emb(codes) (the GPT-code path, [B, hidden, T]) equals quantize's emb for the same codes:
    Candle's vq2emb against the reference's quantize emb (float64 truth, float32 noise)."""
    fx = fixtures("semantic_codec")
    cm = candle_models("semantic_codec")
    inputs = make_features(fx.cfg, 5)
    q64, _ = run_reference(fx, QUANTIZE, inputs, dtype=torch.float64)
    q32, _ = run_reference(fx, QUANTIZE, inputs)
    q, _ = candle.run(cm, "quantize", inputs)
    np.testing.assert_array_equal(q["codes"], q32["codes"])
    v, _ = candle.run(cm, "vq2emb", {"codes": q["codes"]})
    c = compare_noise("output:emb", q64["emb"], q32["emb"], v["emb"].transpose(0, 2, 1),
                      rule("semantic_codec", "output:emb", "cpu", "float32"))
    assert c.ok, c.line()
    assert make_codes(fx.cfg, 0)["codes"].max() < fx.cfg["codebook_size"]


def _official_repcodec():
    """The official RepCodec class from the PyPI snapshot of index-tts (`pip install --no-deps
    tts-webui-index-tts==2.0.1 einops`); skipped when absent. Its vocos module imports scipy and
    torchaudio for classes RepCodec never builds, so bare stand-in modules suffice when missing."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("indextts") is None or importlib.util.find_spec("einops") is None:
        pytest.fail("official index-tts package missing (run.sh installs it) (pip install --no-deps tts-webui-index-tts==2.0.1 einops)")

    stubs = []

    def stub(name):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = m
        stubs.append(name)
        return m

    try:
        import scipy  # noqa: F401
    except ImportError:
        stub("scipy")
    try:
        from torchaudio.functional.functional import _hz_to_mel  # noqa: F401
    except ImportError:
        for name in ("torchaudio", "torchaudio.functional", "torchaudio.functional.functional"):
            if name not in sys.modules:
                stub(name)
        f = sys.modules["torchaudio.functional.functional"]
        f._hz_to_mel = f._mel_to_hz = None
    try:
        from indextts.utils.maskgct.models.codec.kmeans.repcodec_model import RepCodec
    finally:  # a stub left behind breaks later imports (test_bigvgan's official class needs scipy.io)
        for name in stubs:
            sys.modules.pop(name, None)

    return RepCodec


@pytest.mark.parametrize("over", [{}, {"num_quantizers": 2}, {"downsample_scale": 2}, {"downsample_scale": 4}],
                         ids=["default", "num_quantizers=2", "downsample_scale=2", "downsample_scale=4"])
def test_semantic_codec_reference_matches_official_code(over, fixtures):
    """Our reference against the official RepCodec itself, at the default and at the non-default
    constructor values of the config space: same keys (strict load), same codes, same embeddings
    (quantize and vq2emb), bit for bit in float32 and float64."""
    from reference.common import synthetic_init

    official = _official_repcodec()
    cfg = {**fixtures("semantic_codec").cfg, **over}
    ours = SPEC.build_reference(cfg)
    synthetic_init(ours, 0, SPEC.init_overrides)
    off = official(cfg=type("Cfg", (), dict(cfg))()).eval()
    off.load_state_dict(ours.state_dict(), strict=True)
    x = torch.from_numpy(make_features(cfg, 7, frames=64)["x"])
    for dtype in (torch.float32, torch.float64):  # the same arithmetic: equal bit for bit
        ours, off = ours.to(dtype), off.to(dtype)
        with torch.no_grad():
            c1, e1 = ours.quantize(x.to(dtype))
            c2, e2 = off.quantize(x.to(dtype))
            assert torch.equal(c1, c2.reshape(c1.shape))
            assert torch.equal(e1, e2), (e1 - e2).abs().max().item()
            v1 = ours.vq2emb(c1)
            v2 = off.quantizer.vq2emb(c1.unsqueeze(0) if c1.dim() == 2 else c1)
            assert torch.equal(v1, v2), (v1 - v2).abs().max().item()
