"""Audio-level metrics for the final gate: waveform SNR, max |Δ|, log-mel L1 on the vocoder's own
mel (22.05 kHz, n_fft 1024, hop 256, 80 Slaney bands, fmin 0, fmax sr/2, log-clamp 1e-5,
reflect pad (n_fft − hop)/2, center=False)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


def log_mel(wav: np.ndarray, sr: int = 22050, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    """The vocoder's own mel: the same function as the s2mel mel spectrogram (reference/mel.py)."""
    from reference.mel import mel_spectrogram

    cfg = {"sampling_rate": sr, "n_fft": n_fft, "win_size": n_fft, "hop_size": hop, "num_mels": n_mels, "fmin": 0.0, "fmax": None}
    return mel_spectrogram(torch.as_tensor(np.asarray(wav, dtype=np.float32)).reshape(1, -1), cfg)[0].numpy()


@dataclass
class AudioMetrics:
    samples: int
    max_abs: float
    snr_db: float
    log_mel_l1: float

    def row(self) -> dict:
        return asdict(self)


def audio_metrics(ref: np.ndarray, got: np.ndarray, sr: int = 22050) -> AudioMetrics:
    r = np.asarray(ref, np.float64).ravel()
    g = np.asarray(got, np.float64).ravel()
    if r.shape != g.shape:
        raise ValueError(f"waveforms differ in length: reference {r.shape}, candle {g.shape}")
    err = float(np.sum((r - g) ** 2))
    snr = float("inf") if err == 0 else 10 * math.log10(max(float(np.sum(r**2)), 1e-300) / err)
    l1 = float(np.mean(np.abs(log_mel(r, sr) - log_mel(g, sr)))) if r.size > 1024 else float("nan")
    return AudioMetrics(int(r.size), float(np.max(np.abs(r - g))), snr, l1)
