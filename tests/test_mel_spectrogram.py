"""s2mel mel spectrogram (`audio.py:mel_spectrogram`, center=False): Rust vs the torch reference.

The transform has no weights, so it is not a registry row: the Candle side is the
`mel_spectrogram` kind loaded from a checkpoint that holds no tensors, and this file walks its taps
(`pad` → `stft` → `magnitude` → `mel_basis` → `log`) with the noise-floor rule of the models: the
reference runs in float64 (the truth) and float32 (its noise; in the injected walk fed each tap's
float64 input, as Candle is). Its faults and config values are checked here as test_models.py and
test_config_space.py do for the registry rows.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from parity import candle
from parity.bench import measure
from parity.compare import Walk, compare_noise, fault_margin_ok, walk
from parity.tolerances import FAULT_MARGIN, rule
from reference.campplus import load_wav
from reference.common import Taps
from reference.mel import FULL, mel_filters, mel_spectrogram

NAME = "mel_spectrogram"
CLIPS = ["speech_22k.wav", "speech_16k.wav", "short_16k.wav", "silence_16k.wav", "odd_16k.wav"]


@pytest.fixture(scope="module")
def no_weights(tmp_path_factory):
    p = tmp_path_factory.mktemp("mel") / "empty.safetensors"
    save_file({}, str(p))
    return str(p)


@pytest.fixture(scope="module")
def mel_models(no_weights):
    cache = {}

    def get(faults=(), cfg=None):
        key = (faults, json.dumps(cfg or FULL, sort_keys=True))
        if key not in cache:
            cache[key] = candle.Model(NAME, no_weights, json.dumps(cfg or FULL), "cpu", list(faults), "")
        return cache[key]

    return get


def mel_walk(cm, wav: np.ndarray, mode: str, case: str = "mel", cfg: dict | None = None) -> Walk:
    """The layer walk of the mel spectrogram under the noise-floor rule (parity/runner.layer_walk)."""
    cfg = cfg or FULL
    taps64 = Taps()
    with torch.no_grad():
        ref64 = mel_spectrogram(torch.from_numpy(wav).double(), cfg, taps64)
    inject = {k: v.numpy() for k, v in taps64.inputs.items()} if mode == "injected" else None
    taps32 = Taps({k: torch.from_numpy(v) for k, v in (inject or {}).items()})
    with torch.no_grad():
        ref32 = mel_spectrogram(torch.from_numpy(wav), cfg, taps32)
    for t in taps64.outputs.values():
        assert t.dtype == torch.float64, "the float64 reference must compute in float64 end to end"
    outs, ctaps = candle.run(cm, "forward", {"wav": wav}, taps=True, inject=inject)
    w = walk(NAME, case, mode, "cpu", {k: v.numpy() for k, v in taps64.outputs.items()}, ctaps,
             noise_taps={k: v.numpy() for k, v in taps32.outputs.items()})
    if mode == "chained":
        w.rows.append(compare_noise("output:mel", ref64.numpy(), ref32.numpy(), outs["mel"],
                                    rule(NAME, "output:mel", "cpu", "float32")))
    return w


def test_mel_spectrogram_filters_are_slaney():
    """The filterbank follows the Slaney definition (independent facts, not a second copy of the code):
    linear 200/3 Hz per mel below 1 kHz, 27 mels per factor 6.4 above, and area-normalised triangles
    (Σ weights·Δf ≈ 1 for bands wide enough to sample); and equals librosa's when it is installed
    (the official code calls librosa.filters.mel)."""
    from reference.mel import hz_to_mel, mel_to_hz

    ours = mel_filters(22050, 1024, 80, 0.0, None)
    assert ours.dtype == np.float32 and ours.shape == (80, 513)
    np.testing.assert_allclose(hz_to_mel([0.0, 500.0, 1000.0, 6400.0]), [0.0, 7.5, 15.0, 42.0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(np.linspace(0, 11025, 50))), np.linspace(0, 11025, 50), rtol=1e-9)
    area = ours.sum(axis=1) * (22050 / 1024)
    np.testing.assert_allclose(area[40:], 1.0, rtol=0.02)
    assert (np.argmax(ours, axis=1)[1:] >= np.argmax(ours, axis=1)[:-1]).all(), "band centres must increase"
    try:
        import librosa
    except ImportError:
        return
    np.testing.assert_allclose(ours, librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=None), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", ["chained", "injected"])
@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: f"mel_spectrogram-{c}")
def test_mel_spectrogram_clips(clip, mode, mel_models):
    wav = load_wav(clip)
    w = mel_walk(mel_models(), wav, mode, clip)
    w.assert_ok()
    assert w.rows[-1].shape[-1] == wav.shape[1] // FULL["hop_size"]


def test_mel_spectrogram_batch(mel_models):
    a = load_wav("speech_22k.wav")[:, :30000]
    b = load_wav("speech_22k.wav")[:, 40000:70000]
    mel_walk(mel_models(), np.concatenate([a, b]), "chained").assert_ok()


# fault -> the leaf tap the injected walk must name (as a registry row's `faults`)
FAULTS = {
    "htk_mel_scale": "mel_basis",  # HTK instead of Slaney mel scale: the magnitude agrees
    "zero_padding": "pad",  # zeros instead of reflect at the edges
    "symmetric_window": "stft",  # Hann periodic=False
}


@pytest.mark.parametrize("faults,over", [((), {}), (("zero_padding",), {}), (("symmetric_window",), {}),
                                         ((), {"center": True}), ((), {"n_fft": 512, "win_size": 400, "hop_size": 160})],
                         ids=["mel-plain", "mel-zero_padding", "mel-symmetric_window", "mel-center", "mel-win400"])
def test_mel_spectrogram_untapped_path_equals_tapped(faults, over, mel_models):
    """Without taps, pad → STFT → magnitude run as one host pass (no `[B, bins, T, 2]` tensor) with
    the same roundings as the tapped stages: the same mel, bit for bit."""
    speech = load_wav("speech_22k.wav")
    wav = np.ascontiguousarray(np.concatenate([speech[:, :20000], speech[:, -20000:]]))
    cm = mel_models(faults, {**FULL, **over} if over else None)
    plain, _ = candle.run(cm, "forward", {"wav": wav})
    tapped, taps = candle.run(cm, "forward", {"wav": wav}, taps=True)
    assert taps and np.array_equal(plain["mel"], tapped["mel"])


@pytest.mark.parametrize("fault", list(FAULTS), ids=[f"mel_spectrogram-{f}" for f in FAULTS])
def test_mel_spectrogram_fault_is_caught(fault, mel_models):
    """As tests/test_models.py::test_fault_is_caught: the injected walk fails first at the leaf,
    FAULT_MARGIN × past its threshold, and the chained walk fails too."""
    wav = load_wav("speech_22k.wav")
    cm = mel_models((fault,))
    w = mel_walk(cm, wav, "injected")
    tap = FAULTS[fault]
    assert w.first_failure == tap, f"fault `{fault}` named at `{w.first_failure}`, expected `{tap}`\n{w.table()}"
    with pytest.raises(AssertionError, match=f"parity failed at `{tap}`"):
        w.assert_ok()
    row = w.row_of(tap)
    assert fault_margin_ok(row), (f"fault `{fault}` stands only {row.margin:.1f}× past the threshold "
                                  f"(needs ≥ {FAULT_MARGIN}×)\n{w.table()}")
    assert not mel_walk(cm, wav, "chained").ok


# (argument, non-default value, config overrides, expect) as a registry row's `config_space`
CONFIG_SPACE = [
    ("center", True, {"center": True}, "parity"),
    ("fmax", 8000.0, {"fmax": 8000.0}, "parity"),
    ("fmin", 50.0, {"fmin": 50.0}, "parity"),
    ("win_size", 800, {"win_size": 800}, "parity"),
    ("num_mels", 100, {"num_mels": 100}, "parity"),
    ("sampling_rate", 16000, {"sampling_rate": 16000}, "parity"),
    ("hop_size", 200, {"hop_size": 200}, "parity"),
    ("n_fft", 1200, {"n_fft": 1200, "win_size": 1200}, "parity"),  # not a power of two: the direct DFT
    ("win_size", 2048, {"win_size": 2048}, "refused"),
    ("fmin", 20000.0, {"fmin": 20000.0}, "refused"),
    ("window", "hann", {"window": "hann"}, "refused"),  # not an argument: unknown keys are refused
]


@pytest.mark.parametrize("arg,value,over,expect", CONFIG_SPACE, ids=[f"mel_spectrogram-{a}={v}" for a, v, _, _ in CONFIG_SPACE])
def test_mel_spectrogram_config_value(arg, value, over, expect, mel_models):
    cfg = {**FULL, **over}
    if expect == "refused":
        with pytest.raises(candle.InputError, match=arg) as e:
            mel_models((), cfg)
        if arg in FULL:  # a known argument's error names the value; an unknown key is named itself
            assert str(value).lower() in str(e.value).lower(), e.value
        return
    wav = load_wav("speech_22k.wav")[:, :40000]
    for mode in ("chained", "injected"):
        mel_walk(mel_models((), cfg), wav, mode, cfg=cfg).assert_ok()


def test_mel_spectrogram_unknown_fault(no_weights):
    with pytest.raises(candle.InputError, match="unknown fault"):
        candle.Model(NAME, no_weights, json.dumps(FULL), "cpu", ["slaney_off"], "")


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(385, 30000), start=st.integers(0, 60000))
def test_mel_spectrogram_any_length(n, start, mel_models):
    """Any length the reflect padding accepts (> 384 samples): frames = N // 256 and parity holds."""
    wav = load_wav("speech_22k.wav")[:, start : start + n]
    if wav.shape[1] < 385:
        wav = load_wav("speech_22k.wav")[:, :n]
    w = mel_walk(mel_models(), np.ascontiguousarray(wav), "chained")
    w.assert_ok()
    assert w.rows[-1].shape == (1, FULL["num_mels"], wav.shape[1] // FULL["hop_size"])


@pytest.mark.parametrize("inputs,match", [
    ({"wav": np.zeros((1, 384), np.float32)}, "more than 384 samples"),
    ({"wav": np.zeros((1000,), np.float32)}, "expects wav"),
    ({"wav": np.zeros((1, 1, 1000), np.float32)}, "expects wav"),
    ({"audio": np.zeros((1, 1000), np.float32)}, "unexpected"),
], ids=["mel_spectrogram-too_short", "mel_spectrogram-rank1", "mel_spectrogram-rank3", "mel_spectrogram-wrong_name"])
def test_mel_spectrogram_bad_input(inputs, match, mel_models):
    with pytest.raises(candle.InputError, match=match):
        candle.run(mel_models(), "forward", inputs)


@pytest.mark.benchmark(group="mel_spectrogram")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_mel_spectrogram(side, benchmark, mel_models):
    """10 s of 22.05 kHz speech → 861 log-mel frames, CPU fp32."""
    speech = load_wav("speech_22k.wav")
    wav = np.ascontiguousarray(np.tile(speech, (1, 2))[:, :220500])
    if side == "candle":
        cm = mel_models()
        fn = lambda: candle.run(cm, "forward", {"wav": wav})  # noqa: E731
    else:
        t = torch.from_numpy(wav)

        def fn():
            with torch.no_grad():
                return mel_spectrogram(t, FULL)
    measure(benchmark, fn, rounds=5, audio_s=10.0)
