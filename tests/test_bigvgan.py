"""BigVGAN-specific checks beyond the table-driven walk: the audio gate, mel lengths, the reference
against the official class, benchmark."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity.audio import audio_metrics
from parity.compare import compare_noise
from parity.registry import MODELS
from parity.runner import TORCH_DTYPES, run_reference
from parity.tolerances import rule

SPEC = MODELS["bigvgan"]
CASE = SPEC.cases[0]
# Audio gate, CPU fp32, Candle vs the float32 reference, tiny fixture, 192 frames (1536 samples):
# measured SNR 121.2 dB, max|Δ| 3.8e-6, log-mel L1 2.8e-6 (the float32 reference itself vs float64:
# 122.0 dB, 3.2e-6, 2.6e-6). The faults give SNR ≤ 47 dB, except weight_f16: 75.8 dB, max|Δ| 6.8e-4.
GATE = {"min_snr_db": 80.0, "max_abs": 3e-4, "max_log_mel_l1": 2e-3}


def test_bigvgan_audio_gate(fixtures, candle_models, device):
    fx = fixtures("bigvgan")
    inputs = {"mel": np.concatenate([CASE.make_inputs(fx.cfg, s)["mel"] for s in range(8)], axis=2)}
    ref, _ = run_reference(fx, CASE, inputs, device)
    got, _ = candle.run(candle_models("bigvgan", device), "forward", inputs)
    m = audio_metrics(ref["wav"], got["wav"], fx.cfg["sampling_rate"])
    assert np.abs(ref["wav"]).max() <= 1.0 and np.abs(got["wav"]).max() <= 1.0
    assert m.snr_db >= GATE["min_snr_db"], m
    assert m.max_abs <= GATE["max_abs"], m
    assert m.log_mel_l1 <= GATE["max_log_mel_l1"], m


# A stage sums its resblocks, so exchanging two of them cannot change the audio: only the per-tap
# walk (test_fault_is_caught) sees it. Kept as a fault because it proves taps see wiring, not just sound.
AUDIO_INVISIBLE = {"swap_resblocks"}


@pytest.mark.parametrize("fault", sorted(set(SPEC.faults) - AUDIO_INVISIBLE))
def test_bigvgan_fault_fails_audio_gate(fault, fixtures, candle_models):
    fx = fixtures("bigvgan")
    inputs = {"mel": np.concatenate([CASE.make_inputs(fx.cfg, s)["mel"] for s in range(8)], axis=2)}
    ref, _ = run_reference(fx, CASE, inputs)
    got, _ = candle.run(candle_models("bigvgan", "cpu", (fault,)), "forward", inputs)
    m = audio_metrics(ref["wav"], got["wav"])
    assert m.snr_db < GATE["min_snr_db"] or m.max_abs > GATE["max_abs"], f"{fault} passes the audio gate: {m}"


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_bigvgan_any_mel_length(frames, seed, fixtures, candle_models):
    fx = fixtures("bigvgan")
    from reference.bigvgan import make_mel

    inputs = make_mel(fx.cfg, seed, frames)
    ref64, _ = run_reference(fx, CASE, inputs, dtype=torch.float64)
    ref32, _ = run_reference(fx, CASE, inputs)
    got, _ = candle.run(candle_models("bigvgan"), "forward", inputs)
    hop = int(np.prod(fx.cfg["upsample_rates"]))
    assert got["wav"].shape == (1, 1, frames * hop)
    c = compare_noise("output:wav", ref64["wav"], ref32["wav"], got["wav"], rule("bigvgan", "output:wav", "cpu", "float32"))
    assert c.ok, c.line()


def test_bigvgan_batch_of_two(fixtures, candle_models):
    """Two mels in one batch: each row within the float32 noise rule of the reference's batched run.
    Candle's own batched CPU conv_transpose1d was wrong for batch > 1 (off by up to ~20 in its unit
    test); the upsamplers run as `dense::PolyphaseTranspose` (or per batch row) instead."""
    fx = fixtures("bigvgan")
    inputs = {"mel": np.concatenate([CASE.make_inputs(fx.cfg, s)["mel"] for s in (3, 4)], axis=0)}
    assert inputs["mel"].shape[0] == 2
    ref64, _ = run_reference(fx, CASE, inputs, dtype=torch.float64)
    ref32, _ = run_reference(fx, CASE, inputs)
    got, _ = candle.run(candle_models("bigvgan"), "forward", inputs)
    assert got["wav"].shape == ref32["wav"].shape
    for i in range(2):
        c = compare_noise(f"output:wav[{i}]", ref64["wav"][i], ref32["wav"][i], got["wav"][i], rule("bigvgan", "output:wav", "cpu", "float32"))
        assert c.ok, c.line()


def _official_bigvgan():
    """The official class (indextts/s2mel/modules/bigvgan, the IndexTTS2 vocoder). Its module imports
    librosa and scipy for training utilities the generator never calls: stubbed when absent."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("indextts") is None:
        pytest.fail("official index-tts package missing (run.sh installs it) (pip install --no-deps tts-webui-index-tts==2.0.1)")
    missing = {r for r in ("librosa", "scipy") if r not in sys.modules and importlib.util.find_spec(r) is None}
    stubs = [n for n in ("librosa", "librosa.util", "librosa.filters", "scipy", "scipy.io", "scipy.io.wavfile")
             if n.split(".")[0] in missing and n not in sys.modules]
    for name in stubs:
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stub.__path__ = []
        stub.normalize = stub.mel = stub.read = stub.write = None
        sys.modules[name] = stub
    try:
        from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
        from indextts.s2mel.modules.bigvgan.env import AttrDict
    finally:  # other tests probe for the real packages
        for name in stubs:
            sys.modules.pop(name, None)

    return lambda cfg: BigVGAN(AttrDict(dict(cfg)), use_cuda_kernel=False).eval()


# Configs the official class runs (resblock "2" cannot: its vendored AMPBlock2.forward returns None).
OFFICIAL_CONFIGS = {
    "tiny": {},
    "snake": {"activation": "snake"},
    "linear_scale": {"snake_logscale": False},
    "tanh_bias": {"use_tanh_at_final": True, "use_bias_at_final": True},
    "absent_flags": None,  # use_tanh_at_final / use_bias_at_final left out: both default to True
    "other_ups": {"upsample_rates": [3, 2], "upsample_kernel_sizes": [7, 4], "resblock_kernel_sizes": [5],
                  "resblock_dilation_sizes": [[1, 2]]},
}


@pytest.mark.parametrize("name", list(OFFICIAL_CONFIGS))
def test_bigvgan_reference_matches_official_code(name):
    """Our reference against the official BigVGAN itself, same synthetic weights: the keys load
    strictly and the waveforms are bit-identical in float32 (same ops in the same order)."""
    from reference.bigvgan import TINY, build
    from reference.common import synthetic_init

    official = _official_bigvgan()
    over = OFFICIAL_CONFIGS[name]
    cfg = {k: v for k, v in TINY.items() if k not in ("use_tanh_at_final", "use_bias_at_final")} if over is None \
        else {**TINY, **over}
    ours = build(cfg)
    synthetic_init(ours, 3)
    off = official(cfg)
    off.load_state_dict(ours.state_dict(), strict=True)
    assert ours.use_tanh_at_final == off.use_tanh_at_final and ours.use_bias_at_final == off.use_bias_at_final
    mel = torch.from_numpy(CASE.make_inputs(cfg, 5)["mel"])
    with torch.no_grad():
        a, b = ours(mel), off(mel)
    assert a.shape == b.shape and torch.equal(a, b), f"max|Δ| {(a - b).abs().max().item():.3e}"


def test_bigvgan_resblock2_keys_match_official_code():
    """resblock "2": the official module tree and keys (its forward cannot run, see the reference)."""
    from reference.bigvgan import TINY, build

    cfg = {**TINY, "resblock": "2"}
    ours = {k: tuple(v.shape) for k, v in build(cfg).state_dict().items()}
    off = {k: tuple(v.shape) for k, v in _official_bigvgan()(cfg).state_dict().items()}
    assert ours == off


@pytest.mark.benchmark(group="bigvgan")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_bigvgan(side, benchmark, bench_fixtures, bench_device, bench_dtype):
    """≈1 s of 22.05 kHz audio (86 mel frames) at official size (`--device cuda`: on the GPU)."""
    fx = bench_fixtures("bigvgan")
    mel = CASE.make_inputs(fx.cfg, 0)["mel"]
    mel = np.concatenate([mel] * 4, axis=2)[:, :, :86]
    if side == "candle":
        cm = fx.candle(bench_device, None, bench_dtype)
        fn = lambda: candle.run(cm, "forward", {"mel": mel})  # noqa: E731
    else:
        ref = fx.reference(bench_device, TORCH_DTYPES[bench_dtype]).remove_weight_norm()  # as infer_v2 runs it
        t = torch.from_numpy(mel).to(bench_device, TORCH_DTYPES[bench_dtype])

        def fn():
            with torch.no_grad():
                return ref(t)
    measure(benchmark, fn, rounds=3, device=bench_device, dtype=bench_dtype, audio_s=86 * 256 / 22050)
