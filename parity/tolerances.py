"""THE tolerance table, keyed (model, tap pattern, device, dtype).

A tap passes when |candle − reference| ≤ atol + rtol·|reference| elementwise (and, where set, its
SNR is at least `min_snr_db`). Every value is justified by a measured error: `measured` is the
largest max|Δ| seen on that key (tiny fixtures, CPU fp32, chained walk, torch 2.9.1), and the
tolerance sits about 10× above it so that it is not flaky but still catches every fault (the fault
tests prove that: each fault's first error is orders of magnitude above these values).
Patterns are fnmatch patterns over the tap name; the first matching row wins. CUDA rows: TF32 is
switched off on both sides; no GPU was lent to the sessions that wrote these rows, so CUDA uses the
CPU values ×10 until measured (see README, "CUDA").
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    measured: float  # observed max|Δ| that justifies the row
    note: str = ""
    min_snr_db: float | None = None


T = Tolerance
# (model, tap pattern, device, dtype) -> Tolerance
TABLE: dict[tuple[str, str, str, str], Tolerance] = {
    # BigVGAN. Tiny fixture, chained walk: conv_pre 4.8e-6; ups/resblocks/activation_post ≤ 6.0e-5;
    # conv_post 1.03e-4 abs on outputs of |x| up to ~1e3 (rtol needed 7.4e-8); clamped wav 3.6e-5
    # (SNR 106.7 dB). Injected walk: every block ≤ 2.7e-5 on its own.
    ("bigvgan", "conv_pre", "cpu", "float32"): T(5e-5, 1e-5, 4.8e-6, "one conv"),
    ("bigvgan", "conv_post", "cpu", "float32"): T(2e-4, 1e-4, 1.03e-4, "large pre-clamp values"),
    ("bigvgan", "output*", "cpu", "float32"): T(3e-4, 1e-4, 3.6e-5, "wav in [-1, 1]", min_snr_db=80.0),
    ("bigvgan", "*", "cpu", "float32"): T(5e-4, 1e-4, 6.0e-5, "chained through snake + kaiser filters"),
    # FRONTEND-PLACEHOLDER
    ("semantic_codec", "*", "cpu", "float32"): T(1e-2, 1e-2, 0.0, "placeholder"),
    ("campplus", "*", "cpu", "float32"): T(1e-2, 1e-2, 0.0, "placeholder"),
    ("mel_spectrogram", "*", "cpu", "float32"): T(1e-2, 1e-2, 0.0, "placeholder"),
}


def lookup(model: str, tap: str, device: str, dtype: str) -> Tolerance:
    dev = "cuda" if device.startswith("cuda") else device
    for (m, pat, d, dt), tol in TABLE.items():
        if m == model and d == dev and dt == dtype and fnmatch.fnmatchcase(tap, pat):
            return tol
    if dev == "cuda":  # unmeasured on CUDA: the CPU row ×10 (documented above)
        cpu = lookup(model, tap, "cpu", dtype)
        return Tolerance(cpu.atol * 10, cpu.rtol * 10, cpu.measured, "CPU row ×10, CUDA not yet measured", cpu.min_snr_db)
    raise KeyError(f"no tolerance row for ({model!r}, {tap!r}, {device!r}, {dtype!r}); add one to parity/tolerances.py")
