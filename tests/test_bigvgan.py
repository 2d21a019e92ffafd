"""BigVGAN-specific checks beyond the table-driven walk: the audio gate, mel lengths, benchmark."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity.audio import audio_metrics
from parity.compare import compare
from parity.registry import MODELS
from parity.runner import run_reference
from parity.tolerances import lookup

SPEC = MODELS["bigvgan"]
CASE = SPEC.cases[0]
# Audio gate, CPU fp32: measured on the tiny fixture, 200 frames (1600 samples): SNR 106 dB,
# max|Δ| 3.6e-5, log-mel L1 ≈ 1e-4. Gates sit well below/above with margin, and far from
# what any fault produces (every fault gives SNR < 30 dB).
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
    ref, _ = run_reference(fx, CASE, inputs)
    got, _ = candle.run(candle_models("bigvgan"), "forward", inputs)
    hop = int(np.prod(fx.cfg["upsample_rates"]))
    assert got["wav"].shape == (1, 1, frames * hop)
    c = compare("output:wav", ref["wav"], got["wav"], lookup("bigvgan", "output:wav", "cpu", "float32"))
    assert c.ok, c.line()


@pytest.mark.benchmark(group="bigvgan")
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_bigvgan(side, benchmark, bench_fixtures):
    """≈1 s of 22.05 kHz audio (86 mel frames) at official size on CPU."""
    fx = bench_fixtures("bigvgan")
    mel = CASE.make_inputs(fx.cfg, 0)["mel"]
    mel = np.concatenate([mel] * 4, axis=2)[:, :, :86]
    if side == "candle":
        cm = fx.candle("cpu")
        fn = lambda: candle.run(cm, "forward", {"mel": mel})  # noqa: E731
    else:
        ref = fx.reference("cpu")
        t = torch.from_numpy(mel)

        def fn():
            with torch.no_grad():
                return ref(t)
    measure(benchmark, fn, rounds=3, audio_s=86 * 256 / 22050)
