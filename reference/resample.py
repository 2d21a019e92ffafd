"""Reference IndexTTS2 audio front end (`indextts/infer_v2.py`), the behaviour the Rust
`resample` kind must reproduce:

* speaker prompt: `_load_and_cut_audio(path, 15)` keeps the first int(15·sr) samples, then
  `torchaudio.transforms.Resample(sr, 22050)` and `Resample(sr, 16000)` with their defaults
  (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99; identity when the rates are equal);
* emotion prompt: loaded at 16 kHz and cut the same way;
* output: each segment clamped to ±1, segments joined with int(sr·interval_silence/1000) zeros
  (200 ms by default); infer_v2 then saves the float wav with `torchaudio.save`.

`Resample` (the class) builds its kernel in float64 and rounds it to float32;
`torchaudio.functional.resample` on a float32 wav builds it in float32 instead, which moves the
output by up to ~2e-5. The official code uses the class, so this reference does too; the tests
check the Rust port against both. File decoding and librosa's own resampling are out of scope:
the input is samples at a given rate. Taps: `kernel` (`[new, orig + 2·width]`, rates reduced by
their gcd), `resampled`; for the front end `cut`, `resample_22k`, `resample_16k`.
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch
import torchaudio
from safetensors.torch import save_file
from torch import nn
from torchaudio.functional.functional import _get_sinc_resample_kernel


from .common import NoTaps, Taps

# `torchaudio.transforms.Resample`'s constructor defaults (absent keys take these) …
DEFAULTS = {"orig_freq": 16000, "new_freq": 16000, "resampling_method": "sinc_interp_hann", "lowpass_filter_width": 6,
            "rolloff": 0.99, "beta": None}
# … and the pair infer_v2 needs: librosa.load's default rate → the w2v-bert rate
FULL = {**DEFAULTS, "orig_freq": 22050, "new_freq": 16000}
SETTINGS = ("resampling_method", "lowpass_filter_width", "rolloff", "beta")
MAX_PROMPT_SECONDS = 15
INTERVAL_SILENCE_MS = 200
SR_22K, SR_16K = 22050, 16000


def _settings(cfg: dict | None) -> dict:
    return {k: {**DEFAULTS, **(cfg or {})}[k] for k in SETTINGS}


def _kernel_dtype(dtype: torch.dtype):
    """The class builds its kernel with `dtype=None` (float64 math, float32 result, the phase offsets
    divided in float32): that stays the float32 path. The float64 reference passes float64, so the
    kernel is float64 throughout (torchaudio keeps Kaiser's beta and i0(beta) in float32 either way)."""
    return torch.float64 if dtype == torch.float64 else None


def resample(x: torch.Tensor, orig_freq: int, new_freq: int, cfg: dict | None = None) -> torch.Tensor:
    """`torchaudio.transforms.Resample(orig_freq, new_freq, **settings)(x)`, as infer_v2 calls it."""
    return torchaudio.transforms.Resample(int(orig_freq), int(new_freq), **_settings(cfg), dtype=_kernel_dtype(x.dtype))(x)


def kernel(orig_freq: int, new_freq: int, cfg: dict | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The filter bank `Resample` holds, `[new, orig + 2·width]` (float32: float64 math, float32 result)."""
    st = _settings(cfg)
    k, _ = _get_sinc_resample_kernel(int(orig_freq), int(new_freq), math.gcd(int(orig_freq), int(new_freq)),
                                     st["lowpass_filter_width"], st["rolloff"], st["resampling_method"], st["beta"],
                                     dtype=_kernel_dtype(dtype))
    return k[:, 0, :]


def cut(x: torch.Tensor, sr: int, seconds: float = MAX_PROMPT_SECONDS) -> torch.Tensor:
    """`_load_and_cut_audio`'s truncation, along the last axis."""
    n = int(seconds * sr)
    return x[..., :n] if x.shape[-1] > n else x


def join_segments(wavs: list[torch.Tensor], sr: int, interval_ms: int = INTERVAL_SILENCE_MS) -> torch.Tensor:
    """Clamp each segment `[C, N_i]`, `insert_interval_silence`, `torch.cat(dim=-1)`."""
    wavs = [torch.clamp(w, -1.0, 1.0) for w in wavs]
    if interval_ms > 0:
        sil = torch.zeros(*wavs[0].shape[:-1], int(sr * interval_ms / 1000.0))
        wavs = [p for i, w in enumerate(wavs) for p in ((w,) if i == len(wavs) - 1 else (w, sil))]
    return torch.cat(wavs, dim=-1)


def to_pcm16(x: torch.Tensor) -> torch.Tensor:
    """`(clamp(x)·32767).type(torch.int16)` (infer_v2 itself writes float with torchaudio.save)."""
    return (torch.clamp(x, -1.0, 1.0) * 32767).type(torch.int16)


class Resampler(nn.Module):
    """Holds no weights: the config's rate pair and the front end's source rate."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = {**DEFAULTS, **cfg}
        self.orig_freq = int(self.cfg["orig_freq"])
        self.new_freq = int(self.cfg["new_freq"])

    def forward(self, wav: torch.Tensor, orig_freq: int | None = None, new_freq: int | None = None,
                taps: Taps | None = None) -> torch.Tensor:
        taps = taps or NoTaps()
        o = self.orig_freq if orig_freq is None else int(orig_freq)
        n = self.new_freq if new_freq is None else int(new_freq)
        if o != n:  # a tap without an input: nothing to inject
            taps.outputs["kernel"] = kernel(o, n, self.cfg, wav.dtype)
        return taps.block("resampled", wav, lambda x: resample(x, o, n, self.cfg))

    def front(self, wav: torch.Tensor, taps: Taps | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        taps = taps or NoTaps()
        sr = self.orig_freq
        clip = taps.block("cut", wav, lambda x: cut(x, sr))
        a22 = taps.block("resample_22k", clip, lambda c: resample(c, sr, SR_22K, self.cfg))
        a16 = taps.block("resample_16k", clip, lambda c: resample(c, sr, SR_16K, self.cfg))
        return a22, a16


def build(cfg: dict) -> Resampler:
    return Resampler(cfg)


def config_json(cfg: dict) -> str:
    return json.dumps(cfg)


def save_official(state_dict: dict, path: str) -> None:
    save_file({}, path)  # nothing to store


def signal(n: int, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """Full-band test signal `[C, n]`: a chirp across the band plus white noise, peak ≈ 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    sweep = np.sin(2 * np.pi * (50 * t + (sr / 2 - 50) * t**2 / max(2 * t[-1], 1e-9))) if n > 1 else np.zeros(n)
    x = 0.5 * sweep[None] + 0.25 * rng.standard_normal((channels, n))
    return np.clip(x, -0.95, 0.95).astype(np.float32)
