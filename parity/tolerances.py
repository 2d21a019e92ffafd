"""THE tolerance table: the noise-floor rule, its constant k, the floors and the exceptions.

Noise-floor rule (every float tap unless an exception row below says otherwise). For each tap the
reference runs twice on the same input, in float64 (the "truth") and in float32 (what PyTorch users
run); in the injected walk the float32 reference, like Candle, gets each block's float64 input. The
reference's own fp32 rounding noise at that tap is `noise = ref32 − ref64`; Candle's error is
`err = candle32 − ref64`. A tap passes when

    max|err| ≤ K_MAX · max(max|noise|, FLOOR · peak)   and   rms(err) ≤ K_RMS · max(rms(noise), FLOOR · rms(ref64))

with peak = max|ref64|: Candle is as accurate as PyTorch fp32 itself, within a factor k. The floor
(one float32 ulp, relative) only matters for taps whose float32 noise is 0 (exact copies, slices).
Integer taps (codes, masks, ids) are exact. Hand-set rows (`Tolerance`) remain only where float64 is
impossible, each with its reason; they compare against the float32 reference as before.

K_MAX / K_RMS are measured (`python -m parity survey`, see README "Tolerances"): the worst ratio on
correct code over every model, case, seed 0-2, both walks, tiny and official size, plus the margin
stated next to them. A fault must stand ≥ FAULT_MARGIN × the threshold at its tap
(tests/test_models.py::test_fault_margin).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """A hand-set row: |candle − ref32| ≤ atol·max(1, peak) + rtol·|ref32| elementwise (and SNR)."""

    atol: float
    rtol: float
    measured: float  # observed max|Δ| that justifies the row
    note: str = ""
    min_snr_db: float | None = None
    kind: str = "fixed"


@dataclass(frozen=True)
class NoiseFloor:
    """The default: Candle's error against float64 within k × the float32 reference's own error."""

    k_max: float
    k_rms: float
    note: str = ""
    kind: str = "noise"
    floor: float = 2.0**-23  # one ulp (relative) of the noise run's dtype: float32 unless a half row


# Measured worst ratios on correct code (`python -m parity survey`, tiny seeds 0-2 every model and
# walk, plus the official-size runs that completed; and the model tests' own cases):
#   max: 4.63  dit `test_dit_estimator_at_fixed_t[injected-1.0]`, layers.1.feed_forward.w2 (tiny);
#        otherwise ≤ 3.27 (bigvgan official size, injected, resblocks.9.convs2.2), ≤ 2.72 tiny survey
#   rms: 2.16  w2v_bert hypothesis clip of 560 samples (one frame, 32 values) at output:hidden;
#        2.14 bigvgan official size injected (resblocks.3.convs1.2); ≤ 1.70 tiny survey
# Thresholds: the worst seen + 30% (max) / + 40% (rms), rounded up. Faults must stand 10× past them.
K_MAX = 6.0
K_RMS = 3.0
FLOOR = 2.0**-23  # one float32 ulp at the tap's peak (max) or its rms (rms): for taps with zero noise
FAULT_MARGIN = 10.0  # every fault's ratio at its tap ≥ this × the threshold it must exceed
NOISE = NoiseFloor(K_MAX, K_RMS, "noise floor: err vs float64 within k × the float32 reference's own")
EXACT = Tolerance(0.0, 0.0, 0.0, "exact")

T = Tolerance
# (model, tap pattern, device, dtype) -> Tolerance
# Exceptions to the noise rule, (model, tap pattern, device, dtype) -> row; the first match wins.
EXCEPTIONS: dict[tuple[str, str, str, str], Tolerance] = {
    # --- bigvgan ---
    # --- s2mel: dit, length_regulator ---
    # --- gpt ---
    # --- w2v_bert, semantic_codec ---
    # float64 impossible: transformers' SeamlessM4TFeatureExtractor is numpy float32 code and casts
    # float64 audio to float32, so its "float64" run is the float32 one (noise 0). Candle reproduces
    # it bit for bit: max|Δ| 0 on the four clips and every hypothesis length (tests/test_w2v_bert.py).
    ("w2v_bert", "output:input_features", "cpu", "float32"): T(0.0, 0.0, 0.0, "float64 impossible (numpy float32 front end); bit-exact"),
    # --- campplus, mel_spectrogram, resample ---
    # None needed: every tap runs in float64 on the reference side. Worst ratios on correct code
    # (survey, seeds 0-2 tiny + seed 0 official size, both walks; mel over its five clips):
    # campplus max 2.34 / rms 1.76 (official size; tiny 1.95 / 1.57), fbank stages ≤ 0.98 / 0.54,
    # mel ≤ 1.05 / 0.52, resample 1.00 / 1.00 (Candle's kernel equals the float32 one bit for bit,
    # so err = noise). Faults: campplus bn_eps_dropped 78 / 65 at head.bn1 (smallest), every other
    # ≥ 1e4 (see the report's fault table).
    # --- pipeline (parity/pipeline.py; tap "<stage>.<output>" in the forced walk, "chained:<stage>.<output>"
    # in the chained and rust walks, "text.wav"): every float stage output takes the noise rule, the
    # integer ones (codes, s_ref codes, emo_mix rows, masks, ids, segment lengths) are exact vs float32.
    # Forced walk only: the w2v front end is transformers' SeamlessM4TFeatureExtractor, numpy float32
    # code with no float64 path, so float64 and float32 references are the same array (noise 0);
    # Candle is bit-identical to it: max|Δ| 0 (tiny, seeds 0-3, all three emotion inputs). In the
    # chained walks the features inherit the resampler's float32 noise and take the noise rule.
    ("pipeline", "features.input_features", "cpu", "float32"): T(1e-5, 0.0, 0.0, "SeamlessM4T features: numpy float32, bit-exact"),
    ("pipeline", "emo_features.input_features", "cpu", "float32"): T(1e-5, 0.0, 0.0, "SeamlessM4T features: numpy float32, bit-exact"),
}

# Greedy codes: a flip at step k is accepted when the float32 reference's top-2 logit margin there is
# below this. The per-step logits differ by ≤ 2.2e-6 on tiny (legacy code_logits row; official-size
# GPT taps ≤ 2.1e-5), so a real flip needs a margin < 2·4e-5; 1e-4 covers that and nothing more. The
# tiny fixtures' smallest margin is 5.5e-3 (seeds 0-3), so no flip is accepted there; the float32 and
# float64 references' codes were identical on tiny, seed 0, all three emotion inputs.
NEAR_TIE = 1e-4

# Final audio gate on the chained / rust / text waveforms (parity/pipeline.py), against the float64
# reference's wav. Measured against the float32 reference before (tiny, CPU, seeds 0-3): SNR ≥ 118.0 dB,
# log-mel L1 ≤ 9.5e-7, max|Δ| ≤ 2.50e-6; against float64 (tiny, seed 0, three emotion inputs): SNR ≥
# 104.5 dB chained and rust, 108.1 dB text (the chained float32 reference itself sits at max|Δ| 3.4e-5:
# the front end's float32 noise, amplified by the w2v log-mel features, carries through; Candle's
# ratio to it is ≤ 0.39). The gates sit ≥ 10 dB above that.
AUDIO_GATE = {"min_snr_db": 95.0, "max_log_mel_l1": 1e-5, "max_abs": 3e-5}


# --- half precision (`pytest --dtype float16|bfloat16|all`) ---
# The same rule, one dtype down: truth = the float64 reference, noise = the reference run in that
# dtype (weights cast by `.to(dtype)`, inputs rounded to it; in the injected walk each block gets
# the float64 input rounded to it), Candle loaded in that dtype (weights converted at load; softmax,
# norms, RoPE, the BigVGAN filters and bf16 CPU convs accumulate in f32, as torch's kernels do).
# Measured worst ratios on correct code (`python -m parity survey --dtype D --models gpt dit bigvgan`,
# tiny, seeds 0-2, both walks, CPU, torch 2.9.1):
#   float16   max: gpt 2.24 (gpt_spk_perceiver, chained, seed 2, perceiver_encoder.layers.1.1.1),
#                  dit 2.03 (dit_estimator, injected, seed 1, estimator.wavenet.in_layers.2), bigvgan 1.48
#             rms: gpt 1.68 (gpt_emo_cond, chained, seed 2, emo_perceiver_encoder.layers.0.1.2),
#                  dit 1.31, bigvgan 1.13
#   bfloat16  max: gpt 2.26 (gpt_spk_conformer, chained, seed 1, conditioning_encoder.encoders.1.
#                  conv_module.pointwise_conv2), dit 2.25 (dit_estimator, injected, seed 2,
#                  estimator.wavenet.in_layers.1), bigvgan 1.61
#             rms: dit 1.49 (the same tap), gpt 1.45, bigvgan 1.26
# Thresholds: the worst seen + 30% (max) / + 40% (rms), rounded up to a half: 2.26·1.3 = 2.94 → 3,
# 1.68·1.4 = 2.35 → 2.5 (the same for both dtypes). Not covered: the other models (no half rows: a
# half run of them is refused by `rule`), and the greedy decode — an argmax over logits whose half
# noise is ~1e3× float32's flips wherever the top-2 margin is small, so NEAR_TIE (set from float32
# logits) does not transfer; greedy codes stay float32-only (tests/test_gpt.py) instead of loosening it.
HALF_MODELS = frozenset({"gpt", "dit", "bigvgan"})
NOISE_HALF: dict[str, NoiseFloor] = {
    "float16": NoiseFloor(3.0, 2.5, "noise floor in float16: err vs float64 within k × the float16 reference's own",
                          floor=2.0**-10),
    "bfloat16": NoiseFloor(3.0, 2.5, "noise floor in bfloat16: err vs float64 within k × the bfloat16 reference's own",
                           floor=2.0**-7),
}


def rule(model: str, tap: str, device: str, dtype: str) -> "Tolerance | NoiseFloor":
    """The rule for a tap compared with a float64 reference and a noise reference in `dtype`: an
    exception row if one matches, else the noise-floor rule (NOISE, or NOISE_HALF[dtype] for the
    measured half-precision models). The same k holds on CUDA (its noise is measured on CUDA too);
    CUDA rows are unmeasured until a GPU run (README, "CUDA")."""
    if dtype != "float32":
        if dtype not in NOISE_HALF or model not in HALF_MODELS | {"pipeline"}:
            raise ValueError(f"no measured noise rule for {model} in {dtype} (measured: {sorted(HALF_MODELS)} "
                             f"in {sorted(NOISE_HALF)})")
    dev = "cuda" if device.startswith("cuda") else device
    for (m, pat, d, dt), tol in EXCEPTIONS.items():
        if m == model and d == dev and dt == dtype and fnmatch.fnmatchcase(tap, pat):
            return tol
    return NOISE if dtype == "float32" else NOISE_HALF[dtype]
