"""The IndexTTS2 front end (`infer_v2.py`): torchaudio resampling, the 15 s prompt cut, joining the
synthesised segments. The registry row `resample` (tests/test_models.py) walks the fixed cases;
this file adds the properties: any length and rate pair, the cut's exact length, the join layout,
other source rates for the speaker front end, bad input, and the benchmark.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchaudio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity.compare import compare_noise
from parity.tolerances import rule
from reference import resample as R

NAME = "resample"
PAIRS = [(22050, 16000), (16000, 22050), (44100, 16000), (24000, 16000), (22050, 22050), (48000, 22050),
         (8000, 16000), (44100, 22050), (16000, 24000), (32000, 16000)]
# torchaudio.functional.resample on a float32 wav builds its kernel in float32 (the class, which
# infer_v2 uses, in float64): that alone moves outputs by up to 1.8e-5 (kernel entries by 1e-5), so
# the comparison with the functional form gets its own bound, 10× above the largest difference seen.
FUNCTIONAL_ATOL = 2e-4
LOOSE = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def resamplers(fixtures):
    """`resamplers(orig, new, faults=())` → the Candle `resample` kind on the row's empty store."""
    store = fixtures(NAME).safetensors_path
    cache: dict = {}

    def get(orig: int = 22050, new: int = 16000, faults: tuple = ()):
        key = (orig, new, faults)
        if key not in cache:
            cache[key] = candle.Model(NAME, store, json.dumps({"orig_freq": orig, "new_freq": new}), "cpu", list(faults), "")
        return cache[key]

    return get


def _rates(o: int, n: int) -> dict:
    return {"orig_freq": np.array(o, np.int64), "new_freq": np.array(n, np.int64)}


def _check(name: str, ref64: np.ndarray, ref32: np.ndarray, got: np.ndarray) -> None:
    """The noise-floor rule: Candle vs the float64 reference within k × the float32 reference's error."""
    c = compare_noise(name, ref64, ref32, got, rule(NAME, "output:wav", "cpu", "float32"))
    assert c.ok, c.line()


def _ref_pair(fn, x: np.ndarray):
    """`fn` (a torch function of the wav) in float64 and in float32."""
    with torch.no_grad():
        return fn(torch.from_numpy(x).double()), fn(torch.from_numpy(x))


@LOOSE
@given(n=st.integers(1, 5000), pair=st.sampled_from(PAIRS), channels=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2**16))
def test_resample_any_length_and_rates(n, pair, channels, seed, resamplers):
    """Any length and rate pair: same length as torchaudio (ceil(new·N/orig) after the gcd) and within
    the table's tolerance of `transforms.Resample`; `functional.resample` within FUNCTIONAL_ATOL.
    channels 0 = a rank-1 wav."""
    o, new = pair
    x = R.signal(n, o, seed, max(channels, 1))
    x = x[0] if channels == 0 else x
    out, taps = candle.run(resamplers(), "forward_rates", {"wav": x, **_rates(o, new)}, taps=True)
    got = out["wav"]
    ref64, ref = (t.numpy() for t in _ref_pair(lambda t: R.resample(t, o, new), x))
    with torch.no_grad():
        fun = torchaudio.functional.resample(torch.from_numpy(x), o, new).numpy()
    g = math.gcd(o, new)
    assert got.shape == ref.shape == fun.shape == ref64.shape
    assert got.shape[-1] == (n if o == new else min(math.ceil(np.float32(new // g * n / (o // g))), (n // (o // g) + 1) * (new // g)))
    _check(f"{o}->{new} n={n}", ref64, ref, got)
    assert np.max(np.abs(fun - got), initial=0.0) <= FUNCTIONAL_ATOL
    if o != new:
        np.testing.assert_array_equal(taps["kernel"], R.kernel(o, new).numpy())
    else:
        assert np.array_equal(got, x)


@pytest.mark.parametrize("sr", [16000, 22050, 24000, 44100])
@pytest.mark.parametrize("delta", [-1000, -1, 0, 1, 777])
def test_resample_cut_to_15s(sr, delta, resamplers):
    """The first int(15·sr) samples when longer; unchanged when not longer."""
    n = 15 * sr + delta
    x = R.signal(n, sr, 0, 2)
    out, _ = candle.run(resamplers(), "cut", {"wav": x, "sampling_rate": np.array(sr, np.int64), "seconds": np.array(15.0, np.float32)})
    want = R.cut(torch.from_numpy(x), sr).numpy()
    assert out["wav"].shape == (2, min(n, 15 * sr))
    np.testing.assert_array_equal(out["wav"], want)


@pytest.mark.parametrize("orig", [16000, 22050, 24000, 44100])
def test_resample_front_other_rates(orig, resamplers):
    """The speaker front end for source rates other than librosa's default: cut, then both rates."""
    x = R.signal(15 * orig + 3001, orig, 1)
    out, _ = candle.run(resamplers(orig, 16000), "front", {"wav": x})
    r64, r32 = _ref_pair(R.Resampler({"orig_freq": orig, "new_freq": 16000}).front, x)
    assert out["audio_22k"].shape == (1, 15 * 22050) and out["audio_16k"].shape == (1, 15 * 16000)
    _check("audio_22k", r64[0].numpy(), r32[0].numpy(), out["audio_22k"])
    _check("audio_16k", r64[1].numpy(), r32[1].numpy(), out["audio_16k"])


def _join(cm, segs, sr, ms):
    flat = np.concatenate(segs, axis=-1)
    out, _ = candle.run(cm, "join", {"segments": flat, "lens": np.array([s.shape[-1] for s in segs], np.int64),
                                     "sampling_rate": np.array(sr, np.int64), "interval_ms": np.array(ms, np.int64)})
    return out["wav"]


@pytest.mark.parametrize("sr,ms", [(22050, 200), (22050, 0), (16000, 333), (24000, -5), (22050, 1)])
def test_resample_join_segments(sr, ms, resamplers):
    """Segments clamped to ±1 with int(sr·ms/1000) zeros between neighbours (none for ms ≤ 0)."""
    rng = np.random.default_rng(sr + ms)
    segs = [(1.5 * rng.standard_normal((2, n))).astype(np.float32) for n in (100, 1, 57)]
    got = _join(resamplers(), segs, sr, ms)
    want = R.join_segments([torch.from_numpy(s) for s in segs], sr, ms).numpy()
    np.testing.assert_array_equal(got, want)
    sil = int(sr * ms / 1000.0) if ms > 0 else 0
    assert got.shape == (2, 158 + 2 * sil)
    assert np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(got[:, 100 : 100 + sil], 0.0)
    np.testing.assert_array_equal(got[:, :100], np.clip(segs[0], -1, 1))
    np.testing.assert_array_equal(got[:, -57:], np.clip(segs[2], -1, 1))


def test_resample_join_one_segment(resamplers):
    seg = np.array([[0.5, 2.0, -3.0]], np.float32)
    np.testing.assert_array_equal(_join(resamplers(), [seg], 22050, 200), [[0.5, 1.0, -1.0]])


def test_resample_pcm16_cast_matches_torch():
    """The documented int16 conversion truncates toward zero like torch's cast (Rust: `to_pcm16`,
    checked in its unit test with the same values)."""
    x = torch.tensor([2.0, -0.5, 0.0, 0.25, -1.0])
    assert R.to_pcm16(x).tolist() == [32767, -16383, 0, 8191, -32767]


_BAD = [
    ("forward", {"wav": np.zeros((1, 1, 10), np.float32)}, "expects samples"),
    ("forward", {"wav": np.zeros((1, 0), np.float32)}, "at least one sample"),
    ("forward", {"wav": np.zeros((0,), np.float32)}, "at least one sample"),
    ("forward", {"wav": np.zeros((1, 10), np.int64)}, "float32"),
    ("forward", {"x": np.zeros((1, 10), np.float32)}, "unexpected"),
    ("forward_rates", {"wav": np.zeros((1, 10), np.float32), **_rates(0, 16000)}, "positive rate"),
    ("forward_rates", {"wav": np.zeros((1, 10), np.float32), **_rates(22050, -1)}, "positive rate"),
    ("forward_rates", {"wav": np.zeros((1, 10), np.float32), "orig_freq": np.array([1, 2]), "new_freq": np.array(2)}, "one int64"),
    ("front", {"wav": np.zeros((1, 2, 3), np.float32)}, "expects samples"),
    ("cut", {"wav": np.zeros((1, 10), np.float32), "sampling_rate": np.array(16000), "seconds": np.array(-1.0, np.float32)}, "seconds"),
    ("join", {"segments": np.zeros((1, 10), np.float32), "lens": np.array([4, 4]), "sampling_rate": np.array(22050),
              "interval_ms": np.array(200)}, "sum to 8"),
    ("join", {"segments": np.zeros((1, 10), np.float32), "lens": np.array([], np.int64), "sampling_rate": np.array(22050),
              "interval_ms": np.array(200)}, "sum to 0"),
    ("join", {"segments": np.zeros((1, 10), np.float32), "lens": np.array([11]), "sampling_rate": np.array(22050),
              "interval_ms": np.array(200)}, "past"),
    ("nope", {"wav": np.zeros((1, 10), np.float32)}, "no method"),
]


@pytest.mark.parametrize("method,inputs,match", _BAD, ids=[f"resample-bad-{i}-{m}" for i, (m, _, _) in enumerate(_BAD)])
def test_resample_bad_input(method, inputs, match, resamplers):
    with pytest.raises(candle.InputError, match=match):
        candle.run(resamplers(), method, inputs)


@pytest.mark.parametrize("cfg", [{"orig_freq": 0, "new_freq": 16000}, {"orig_freq": 22050, "new_freq": 16000, "rollof": 0.9},
                                 {"orig_freq": -1, "new_freq": 2}, {"orig_freq": 22050, "new_freq": 16000, "beta": -1.0}],
                         ids=["resample-cfg-zero", "resample-cfg-unknown-key", "resample-cfg-negative", "resample-cfg-negative-beta"])
def test_resample_bad_config(cfg, fixtures):
    with pytest.raises(candle.InputError, match="config"):
        candle.Model(NAME, fixtures(NAME).safetensors_path, json.dumps(cfg), "cpu", [], "")


@pytest.mark.benchmark(group="resample")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_resample(side, benchmark, resamplers):
    """15 s of 22.05 kHz audio → 16 kHz, CPU fp32; torch builds its `Resample` per call as infer_v2 does."""
    x = R.signal(15 * 22050, 22050, 0)
    if side == "candle":
        cm = resamplers(22050, 16000)
        fn = lambda: candle.run(cm, "forward", {"wav": x})  # noqa: E731
    else:
        t = torch.from_numpy(x)

        def fn():
            with torch.no_grad():
                return R.resample(t, 22050, 16000)
    measure(benchmark, fn, rounds=10, audio_s=15.0)
