"""s2mel mel spectrogram (`audio.py:mel_spectrogram`, center=False): Rust vs the torch reference.

The transform has no weights, so it is not a registry row: the Candle side is the
`mel_spectrogram` kind loaded from a checkpoint that holds no tensors, and this file walks its taps
(`stft` magnitude → `mel_basis` → `log`) with the same compare/tolerance table as the models.
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
from parity.compare import Walk, compare, walk
from parity.tolerances import lookup
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

    def get(faults=()):
        if faults not in cache:
            cache[faults] = candle.Model(NAME, no_weights, json.dumps(FULL), "cpu", list(faults), "")
        return cache[faults]

    return get


def mel_walk(cm, wav: np.ndarray, mode: str, case: str = "mel") -> Walk:
    taps = Taps()
    with torch.no_grad():
        ref = mel_spectrogram(torch.from_numpy(wav), FULL, taps)
    inject = {k: v.numpy() for k, v in taps.inputs.items()} if mode == "injected" else None
    outs, ctaps = candle.run(cm, "forward", {"wav": wav}, taps=True, inject=inject)
    w = walk(NAME, case, mode, "cpu", {k: v.numpy() for k, v in taps.outputs.items()}, ctaps)
    if mode == "chained":
        w.rows.append(compare("output:mel", ref.numpy(), outs["mel"], lookup(NAME, "output:mel", "cpu", "float32")))
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


def test_mel_spectrogram_fault_htk_scale(mel_models):
    """HTK mel scale instead of Slaney: the magnitude agrees, the first divergence is `mel_basis`."""
    w = mel_walk(mel_models(("htk_mel_scale",)), load_wav("speech_22k.wav"), "chained")
    assert not w.ok, w.table()
    assert w.first_failure == "mel_basis", w.table()
    with pytest.raises(AssertionError, match="parity failed at `mel_basis`"):
        w.assert_ok()


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
    assert w.rows[-1].shape == (1, 80, wav.shape[1] // 256)


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
