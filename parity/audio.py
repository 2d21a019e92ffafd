"""Audio-level metrics for the final gate: waveform SNR, max |Δ|, log-mel L1 on the vocoder's own
mel (22.05 kHz, n_fft 1024, hop 256, 80 Slaney bands, fmin 0, fmax sr/2, log-clamp 1e-5,
reflect pad (n_fft − hop)/2, center=False)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm='slaney'): triangular bands, area-normalised."""
    fmax = sr / 2 if fmax is None else fmax
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def log_mel(wav: np.ndarray, sr: int = 22050, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).reshape(1, -1)
    pad = (n_fft - hop) // 2
    x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(x, n_fft, hop, n_fft, torch.hann_window(n_fft), center=False, return_complex=True)
    mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    mel = torch.from_numpy(slaney_mel_filters(sr, n_fft, n_mels)) @ mag
    return torch.log(torch.clamp(mel, min=1e-5))[0].numpy()


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
