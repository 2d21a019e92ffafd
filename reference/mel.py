"""Reference s2mel mel spectrogram (`indextts/s2mel/modules/audio.py:mel_spectrogram`, center=False).

reflect pad (n_fft − hop)/2 each side → STFT (periodic Hann, no centering) → |X| = √(re² + im² + 1e-9)
→ librosa Slaney mel filterbank (computed here in numpy, following `librosa.filters.mel` with
htk=False, norm='slaney', float32 result) → log(clamp(·, 1e-5)).
Taps: `stft` (magnitude), `mel_basis` (mel energies), `log` (the output).
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from .common import NoTaps, Taps

FULL = {  # config.yaml s2mel.preprocess_params as infer_v2 passes them
    "sampling_rate": 22050,
    "n_fft": 1024,
    "win_size": 1024,
    "hop_size": 256,
    "num_mels": 80,
    "fmin": 0.0,
    "fmax": None,
}

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz (66.67 Hz per mel) …
_MIN_LOG_HZ = 1000.0
_LOGSTEP = np.log(6.4) / 27.0  # … logarithmic above


def hz_to_mel(f, htk: bool = False):
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = f / _F_SP
    log = _MIN_LOG_HZ / _F_SP + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m, htk: bool = False):
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    min_log_mel = _MIN_LOG_HZ / _F_SP
    return np.where(m >= min_log_mel, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - min_log_mel)), _F_SP * m)


def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
                dtype=np.float32) -> np.ndarray:
    """[n_mels, n_fft/2 + 1] float32, like `librosa.filters.mel` (triangles between mel-spaced edges,
    each scaled by 2 / bandwidth in Hz)."""
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rise = -ramps[:-2] / widths[:-1, None]
    fall = ramps[2:] / widths[1:, None]
    w = np.maximum(0.0, np.minimum(rise, fall))
    w *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return w.astype(dtype)


def mel_spectrogram(y: torch.Tensor, cfg: dict, taps: Taps | None = None, htk: bool = False) -> torch.Tensor:
    """y [B, N] float → log-mel [B, num_mels, N // hop]."""
    taps = taps or NoTaps()
    n_fft, hop, win = cfg["n_fft"], cfg["hop_size"], cfg["win_size"]
    basis = torch.from_numpy(mel_filters(cfg["sampling_rate"], n_fft, cfg["num_mels"], cfg["fmin"], cfg["fmax"], htk,
                                         np.float64 if y.dtype == torch.float64 else np.float32))
    window = torch.hann_window(win, dtype=y.dtype)
    pad = (n_fft - hop) // 2

    def stft(v):
        v = F.pad(v.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        s = torch.view_as_real(torch.stft(v, n_fft, hop_length=hop, win_length=win, window=window, center=False,
                                          normalized=False, onesided=True, return_complex=True))
        return torch.sqrt(s.pow(2).sum(-1) + 1e-9)

    mag = taps.block("stft", y, stft)
    mel = taps.block("mel_basis", mag, lambda m: torch.matmul(basis, m))
    return taps.block("log", mel, lambda m: torch.log(torch.clamp(m, min=1e-5)))


def config_json(cfg: dict) -> str:
    return json.dumps(cfg)
