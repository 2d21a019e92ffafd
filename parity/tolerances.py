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


# Measured worst ratios on correct code (see the module docstring); the thresholds add the margin.
K_MAX = 4.0
K_RMS = 2.0
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
    # --- campplus, mel_spectrogram, resample ---
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

# LEGACY: the per-pattern rows of the float32-only harness, used only by comparisons that have not
# been given a float32 noise reference yet. Being removed model by model.
TABLE: dict[tuple[str, str, str, str], Tolerance] = {
    # Semantic codec (RepCodec), peak-relative max|Δ| over tiny + official size (500 frames), both
    # walks: encoder taps and in_project ≤ 1.95e-6; out_project / emb 3.3e-7.
    # Codes are integers and compared exactly: any differing code fails.
    ("semantic_codec", "quantizer.quantizers.0.codebook", "cpu", "float32"): T(0.0, 0.0, 0.0, "codes: exact"),
    ("semantic_codec", "output:codes", "cpu", "float32"): T(0.0, 0.0, 0.0, "codes: exact"),
    ("semantic_codec", "quantizer.quantizers.0.out_project", "cpu", "float32"): T(4e-6, 0.0, 3.3e-7, "1×1 projection of raw codebook rows"),
    ("semantic_codec", "output:emb", "cpu", "float32"): T(4e-6, 0.0, 3.3e-7, "= out_project"),
    ("semantic_codec", "*", "cpu", "float32"): T(2e-5, 0.0, 1.95e-6, "ConvNeXt blocks, exact GELU, LayerNorm eps 1e-6"),
    # CAMPPlus, peak-relative, tiny + official size, the four clips and the whole speech clip (585
    # frames), both walks. Kaldi fbank: the reference FFT runs in f32 (as upstream), Candle's in f64;
    # log of low-energy bins magnifies the f32 rounding: fbank 1.81e-5, mean-removed feat 2.33e-5
    # (absolute 2.9e-4 on |log E| ≤ 16). Network taps ≤ 1.65e-6 (block3); stats/dense/embedding ≤ 2.6e-7.
    ("campplus", "fbank", "cpu", "float32"): T(2e-4, 0.0, 1.81e-5, "log energies, f32 vs f64 FFT"),
    ("campplus", "output:feat", "cpu", "float32"): T(2.5e-4, 0.0, 2.33e-5, "fbank minus its time mean"),
    ("campplus", "xvector.stats", "cpu", "float32"): T(3e-6, 0.0, 2.6e-7, "mean ‖ unbiased std over time"),
    ("campplus", "xvector.dense", "cpu", "float32"): T(3e-6, 0.0, 1.9e-7, "speaker embedding"),
    ("campplus", "output:embedding", "cpu", "float32"): T(3e-6, 0.0, 1.6e-7, "speaker embedding"),
    ("campplus", "*", "cpu", "float32"): T(2e-5, 0.0, 1.65e-6, "eval BatchNorm, dense CAM blocks"),
    # s2mel mel spectrogram (no weights, so not a registry row: tests/test_mel_spectrogram.py).
    # Peak-relative over speech 22 kHz, the 16 kHz clips, short, ±1-LSB silence, odd length, both
    # walks: |STFT| 1.9e-7, mel energies 1.1e-7, log-mel chained 3.6e-5 (quiet bands: the log
    # magnifies the f32 torch.stft rounding; absolute 4.1e-4), injected 8.5e-8.
    ("mel_spectrogram", "stft", "cpu", "float32"): T(2e-6, 0.0, 1.9e-7, "f32 torch.stft vs f64 FFT"),
    ("mel_spectrogram", "mel_basis", "cpu", "float32"): T(1.5e-6, 0.0, 1.1e-7, "Slaney filterbank matmul"),
    ("mel_spectrogram", "*", "cpu", "float32"): T(4e-4, 0.0, 3.6e-5, "log(clamp 1e-5) of the above"),
    # GPT (UnifiedVoice v2), absolute max|Δ| (peak-relative is smaller). Tiny fixture: conv2d2
    # subsampling output (|x| ≤ 13 after ×√d) 3.8e-6; every later tap (conformer blocks, perceiver
    # layers, GPT-2 blocks, ln_f, final_norm, logits) ≤ 2.4e-6 chained, ≤ 1.5e-6 injected. Faults
    # move their first tap by ≥ 1.4e-2. Official size (--full-size, synthetic): embed 8.8e-5 (the
    # 261632-wide flatten Linear), gpt.h.N 2.1e-5 chained on growing residuals, every other tap
    # ≤ 8.1e-6; all pass these rows.
    ("gpt", "*embed", "cpu", "float32"): T(4e-5, 1e-5, 3.8e-6, "3x3 conv + 7-bin flatten Linear, ×√d"),
    ("gpt", "*", "cpu", "float32"): T(2e-5, 1e-5, 2.4e-6, "fp32 matmul order; LayerNorm renormalises"),
    # Wav2Vec-BERT (absolute max|Δ|; the peak scaling only loosens these). Front end: Candle's
    # fbank/normalise/stack is bit-identical to transformers' SeamlessM4TFeatureExtractor on all four clips (max|Δ| 0: f64 spectrum rounded through
    # complex64, numpy's float32 pairwise sums reproduced); atol only covers libm/FFT rounding on
    # other platforms. Mask: integers, compared exactly. Model, tiny fixture (17 layers run):
    # chained final_layer_norm ≤ 6.9e-6, ffn/conv/attn ≤ 4.1e-6, feature_projection 2.7e-6,
    # hidden 1.8e-6, semantic_stats/emb 2.6e-6; injected every block ≤ 2.7e-6. Official-size
    # synthetic fixture (1024 wide, 17 layers): chained ≤ 8.4e-6, injected ≤ 7.9e-6.
    ("w2v_bert", "output:input_features", "cpu", "float32"): T(1e-5, 0.0, 0.0, "bit-exact on CPU"),
    ("w2v_bert", "output:attention_mask", "cpu", "float32"): T(0.0, 0.0, 0.0, "integer mask"),
    ("w2v_bert", "*", "cpu", "float32"): T(7e-5, 1e-5, 6.9e-6, "17 conformer layers, LayerNorm-bounded"),
    # s2mel DiT / CFM (absolute max|Δ|; the peak scaling only loosens these). Tiny fixture (13 layers,
    # dim 32), chained and injected walks, seeds 0-2, values O(1-10): transformer layers ≤ 3.81e-6,
    # wavenet convs ≤ 2.62e-6, other estimator blocks ≤ 2.26e-6 (final_layer), 25-step Euler states
    # ≤ 9.5e-7. Faults give ≥ 1e-2 at their first tap. Official size (dim 512, T=64, synthetic
    # weights) also passes: layers ≤ 1.48e-5, wavenet ≤ 1.19e-5, velocity 6.5e-6, 25-step mel 2.3e-6.
    ("dit", "estimator.transformer.*", "cpu", "float32"): T(4e-5, 1e-5, 3.81e-6, "13-layer stack at full size"),
    ("dit", "estimator.wavenet.*", "cpu", "float32"): T(3e-5, 1e-5, 2.62e-6, "reflect-padded weight-normed convs"),
    ("dit", "solve_euler.*", "cpu", "float32"): T(1e-5, 1e-5, 9.5e-7, "Euler state after each CFG step"),
    ("dit", "output:*", "cpu", "float32"): T(2e-5, 1e-5, 1.55e-6, "velocity, per-step states, mel"),
    ("dit", "*", "cpu", "float32"): T(3e-5, 1e-5, 2.26e-6, "embedders, projections, final layer"),
    # s2mel length regulator + gpt_layer. Tiny fixture, both walks, seeds 0-2: model.N (conv/GroupNorm/
    # Mish) ≤ 2.15e-6, output ≤ 1.55e-6, gpt_layer ≤ 9.5e-7. Official size: model.N ≤ 6.8e-6, gpt_layer 3.0e-6.
    ("length_regulator", "*", "cpu", "float32"): T(2e-5, 1e-5, 2.15e-6, "conv/GroupNorm/Mish stack"),
    # Resampling front end (torchaudio.transforms.Resample defaults, the 15 s cut). CPU, seeds 0-3,
    # every case of the row, both walks: the kernel equals torchaudio's bit for bit (f64 math
    # rounded to f32 on both sides); outputs ≤ 3.6e-7 (22050→16000 3.1e-7, 44100→16000 3.0e-7,
    # 16000→22050 2.0e-7, 24000→16000 1.5e-8; tests/test_resample.py pairs ≤ 3.6e-7): torch sums all orig+2·width taps in f32, Candle only
    # the non-zero ones in f64. The cut and the identity resampling are exact.
    ("resample", "kernel", "cpu", "float32"): T(1e-7, 0.0, 0.0, "bit-exact; 1e-7 leaves room for another libm"),
    ("resample", "cut", "cpu", "float32"): T(0.0, 0.0, 0.0, "a slice: exact"),
    ("resample", "*", "cpu", "float32"): T(3e-6, 0.0, 3.6e-7, "polyphase sums, f32 vs f64 accumulation"),
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


def _legacy(model: str, tap: str, device: str, dtype: str) -> Tolerance:
    dev = "cuda" if device.startswith("cuda") else device
    for (m, pat, d, dt), tol in TABLE.items():
        if m == model and d == dev and dt == dtype and fnmatch.fnmatchcase(tap, pat):
            return tol
    if dev == "cuda":  # unmeasured on CUDA: the CPU row ×10 (documented above)
        cpu = _legacy(model, tap, "cpu", dtype)
        return Tolerance(cpu.atol * 10, cpu.rtol * 10, cpu.measured, "CPU row ×10, CUDA not yet measured", cpu.min_snr_db)
    raise KeyError(f"no tolerance row for ({model!r}, {tap!r}, {device!r}, {dtype!r}); add one to parity/tolerances.py")


def lookup(model: str, tap: str, device: str, dtype: str) -> Tolerance:
    """The hand-set row of a comparison that has no float32 noise reference (legacy path)."""
    return _legacy(model, tap, device, dtype)


def rule(model: str, tap: str, device: str, dtype: str) -> "Tolerance | NoiseFloor":
    """The rule for a tap compared with a float64 reference and a float32 noise reference: an
    exception row if one matches, else the noise-floor rule. The same k holds on CUDA (its float32
    noise is measured on CUDA too); CUDA rows are unmeasured until a GPU run (README, "CUDA")."""
    dev = "cuda" if device.startswith("cuda") else device
    for (m, pat, d, dt), tol in EXCEPTIONS.items():
        if m == model and d == dev and dt == dtype and fnmatch.fnmatchcase(tap, pat):
            return tol
    return NOISE
