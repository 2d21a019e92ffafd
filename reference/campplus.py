"""Reference CAM++ speaker encoder (3D-Speaker `DTDNN.py`/`layers.py` as vendored by IndexTTS2 s2mel)
and the Kaldi fbank front end that feeds it.

Module tree = the official one (`head` FCM, `xvector` Sequential of tdnn / blockN / transitN /
out_nonlinear / stats / dense), so `state_dict()` equals `campplus_cn_common.bin`, BatchNorm
running stats and `num_batches_tracked` included. Eval mode only: BatchNorm uses running stats.

`kaldi_fbank` is a torch port of `torchaudio.compliance.kaldi.fbank` restricted to the options
IndexTTS2 uses (povey window, pre-emphasis 0.97, DC removal, snip_edges, power spectrum, log,
dither 0); torchaudio is not a dependency, `tests/test_campplus.py` checks the port against it
when it is installed.
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import NoTaps, Taps

# The official class's defaults (`CAMPPlus.__init__`), plus the structure it hard-codes (FCM's
# m_channels, the three dense blocks, CAM's seg_len) and the fbank rate, which this port reads
# from the config so that the tiny fixture can shrink them. Absent keys take these values.
DEFAULTS = {
    "feat_dim": 80,
    "embedding_size": 512,
    "growth_rate": 32,
    "bn_size": 4,
    "init_channels": 128,
    "config_str": "batchnorm-relu",
    "memory_efficient": True,  # gradient checkpointing in training only: no effect in eval
    "m_channels": 32,
    "block_layers": [12, 24, 16],
    "kernel_sizes": [3, 3, 3],
    "dilations": [1, 2, 2],
    "seg_len": 100,
    "sample_rate": 16000,
}
FULL = {**DEFAULTS, "embedding_size": 192}  # infer_v2: CAMPPlus(feat_dim=80, embedding_size=192)
# Same structure (every block kind, CAM segment pooling with a partial last segment), fewer channels.
TINY = {**FULL, "feat_dim": 16, "embedding_size": 12, "growth_rate": 8, "bn_size": 2, "init_channels": 16,
        "m_channels": 8, "block_layers": [2, 3, 2], "seg_len": 100}

# ---------------------------------------------------------------- Kaldi fbank (IndexTTS2 options)


def _mel(f):
    return 1127.0 * torch.log(1.0 + f / 700.0)


def kaldi_mel_banks(num_bins: int, padded: int, sr: float, low: float = 20.0, high: float = 0.0,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangles on the Kaldi mel scale (1127·ln(1+f/700)), [num_bins, padded/2 + 1], last column 0.
    torchaudio builds them in float32 (the default dtype); the float64 reference builds them in float64."""
    nyq = 0.5 * sr
    high = high if high > 0 else nyq + high
    n_fft_bins = padded // 2
    width = sr / padded
    mel_low, mel_high = 1127.0 * math.log(1.0 + low / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).to(dtype).unsqueeze(1)  # int64 -> float32 is what torchaudio's promotion does
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    m = _mel(width * torch.arange(n_fft_bins).to(dtype)).unsqueeze(0)
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.max(torch.zeros(1, dtype=dtype), torch.min(up, down))
    return F.pad(banks, (0, 1))


# The window functions `window_type` selects (torchaudio's `_feature_window_function`).
WINDOWS = ("povey", "hanning", "hamming", "rectangular")


def feature_window(kind: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    if kind == "povey":
        return torch.hann_window(n, periodic=False, dtype=dtype).pow(0.85)
    if kind == "hanning":
        return torch.hann_window(n, periodic=False, dtype=dtype)
    if kind == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if kind == "rectangular":
        return torch.ones(n, dtype=dtype)
    raise ValueError(f"window_type {kind!r}: supported {WINDOWS}")


def kaldi_fbank(wav: torch.Tensor, num_mel_bins: int = 80, sample_frequency: float = 16000.0, taps: Taps | None = None,
                window_type: str = "povey", preemphasis_coefficient: float = 0.97, remove_dc_offset: bool = True) -> torch.Tensor:
    """wav [1, N] (float, unscaled) → log mel energies [frames, num_mel_bins]; empty if N < 25 ms.
    Taps `fbank.<torchaudio's variable>` per stage: strided_input (framing), remove_dc_offset,
    preemphasis, window_function (window and zero padding to the FFT size), spectrum (power),
    mel_energies, log."""
    taps = taps or NoTaps()
    x = wav[0]
    win = int(sample_frequency * 0.025)
    shift = int(sample_frequency * 0.010)
    padded = 1 << (win - 1).bit_length()
    if x.numel() < win:
        return torch.empty(0, num_mel_bins, dtype=wav.dtype)
    n = 1 + (x.numel() - win) // shift

    def framing(w):
        v = w[0]
        return v.as_strided((n, win), (shift * v.stride(0), v.stride(0)))

    frames = taps.block("fbank.strided_input", wav, framing)
    if remove_dc_offset:
        frames = taps.block("fbank.remove_dc_offset", frames, lambda f: f - f.mean(dim=1, keepdim=True))

    def preemph(f):
        prev = F.pad(f.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
        return f - preemphasis_coefficient * prev  # first sample against itself

    if preemphasis_coefficient != 0.0:
        frames = taps.block("fbank.preemphasis", frames, preemph)
    window = feature_window(window_type, win, wav.dtype)
    frames = taps.block("fbank.window_function", frames, lambda f: F.pad(f * window, (0, padded - win)))
    power = taps.block("fbank.spectrum", frames, lambda f: torch.fft.rfft(f).abs().pow(2.0))
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_frequency, dtype=wav.dtype)
    mel = taps.block("fbank.mel_energies", power, lambda p: p @ banks.t())
    # torchaudio floors at float32's epsilon whatever the dtype
    eps = torch.tensor(torch.finfo(torch.float).eps, dtype=wav.dtype)
    return taps.block("fbank.log", mel, lambda m: torch.max(m, eps).log())


def campplus_features(wav: torch.Tensor, num_mel_bins: int = 80, sample_frequency: float = 16000.0) -> torch.Tensor:
    """infer_v2 step 6: fbank minus its time mean."""
    f = kaldi_fbank(wav, num_mel_bins, sample_frequency)
    return f - f.mean(dim=0, keepdim=True)


# ---------------------------------------------------------------- CAM++
# Every module is tapped under its path (children before parents); a functional op without a
# module is tapped as `<module path>.<official variable>` or folded into the tap before it
# (F.relu after a head BatchNorm: `head.bn1`, `head.layerN.i.bn1`; FCM's reshape: `head.bn2`).

NONLINEAR_PARTS = ("relu", "prelu", "batchnorm", "batchnorm_")


def get_nonlinear(config_str: str, channels: int) -> nn.Sequential:
    """The official `get_nonlinear`: `config_str` names the parts in order, '-'-separated."""
    s = nn.Sequential()
    for name in config_str.split("-"):
        if name == "relu":
            s.add_module("relu", nn.ReLU())
        elif name == "prelu":
            s.add_module("prelu", nn.PReLU(channels))
        elif name == "batchnorm":
            s.add_module("batchnorm", nn.BatchNorm1d(channels))
        elif name == "batchnorm_":
            s.add_module("batchnorm", nn.BatchNorm1d(channels, affine=False))
        else:
            raise ValueError(f"Unexpected module ({name}).")
    return s


def run_seq(seq: nn.Sequential, path: str, x, taps: Taps):
    for name, mod in seq.named_children():
        x = taps.block(f"{path}.{name}", x, mod)
    return x


class BasicResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout))

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        taps = taps or NoTaps()

        def body(x):
            out = taps.block(f"{path}.conv1", x, self.conv1)
            out = taps.block(f"{path}.bn1", out, lambda v: F.relu(self.bn1(v)))
            out = taps.block(f"{path}.conv2", out, self.conv2)
            out = taps.block(f"{path}.bn2", out, self.bn2)
            sc = run_seq(self.shortcut, f"{path}.shortcut", x, taps) if len(self.shortcut) else x
            return F.relu(out + sc)

        return taps.block(path, x, body)


class FCM(nn.Module):
    def __init__(self, m: int, feat_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.layer1 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.layer2 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.conv2 = nn.Conv2d(m, m, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m)
        self.out_channels = m * (feat_dim // 8)

    def forward(self, x, taps: Taps):  # x [B, F, T]
        out = taps.block("head.conv1", x.unsqueeze(1), self.conv1)
        out = taps.block("head.bn1", out, lambda v: F.relu(self.bn1(v)))
        for name in ("layer1", "layer2"):
            for i, blk in enumerate(getattr(self, name)):
                out = blk(out, taps, f"head.{name}.{i}")
        out = taps.block("head.conv2", out, self.conv2)

        def last(v):
            y = F.relu(self.bn2(v))
            return y.reshape(y.shape[0], y.shape[1] * y.shape[2], y.shape[3])

        return taps.block("head.bn2", out, last)


class TDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, config_str: str):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.nonlinear = get_nonlinear(config_str, cout)

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        taps = taps or NoTaps()
        return run_seq(self.nonlinear, f"{path}.nonlinear", taps.block(f"{path}.linear", x, self.linear), taps)


class CAMLayer(nn.Module):
    def __init__(self, bn_ch: int, cout: int, k: int, dilation: int, seg_len: int):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_ch, cout, k, padding=(k - 1) // 2 * dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn_ch // 2, cout, 1)
        self.sigmoid = nn.Sigmoid()
        self.seg_len = seg_len

    def seg_pooling(self, x):
        # Segment means (last segment partial: ceil_mode averages only the samples present),
        # each repeated over its segment.
        seg = F.avg_pool1d(x, kernel_size=self.seg_len, stride=self.seg_len, ceil_mode=True)
        return seg.repeat_interleave(self.seg_len, dim=-1)[..., : x.shape[-1]]

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        taps = taps or NoTaps()
        y = taps.block(f"{path}.linear_local", x, self.linear_local)
        ctx = taps.block(f"{path}.context", x, lambda v: v.mean(-1, keepdim=True) + self.seg_pooling(v))
        ctx = taps.block(f"{path}.relu", taps.block(f"{path}.linear1", ctx, self.linear1), self.relu)
        m = taps.block(f"{path}.sigmoid", taps.block(f"{path}.linear2", ctx, self.linear2), self.sigmoid)
        return y * m


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, bn_ch: int, k: int, dilation: int, seg_len: int, config_str: str):
        super().__init__()
        self.nonlinear1 = get_nonlinear(config_str, cin)
        self.linear1 = nn.Conv1d(cin, bn_ch, 1, bias=False)
        self.nonlinear2 = get_nonlinear(config_str, bn_ch)
        self.cam_layer = CAMLayer(bn_ch, cout, k, dilation, seg_len)

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        """Dense connectivity (the block's loop): `[x, layer(x)]`, tapped as the layer's path."""
        taps = taps or NoTaps()

        def body(x):
            h = run_seq(self.nonlinear1, f"{path}.nonlinear1", x, taps)
            h = run_seq(self.nonlinear2, f"{path}.nonlinear2", taps.block(f"{path}.linear1", h, self.linear1), taps)
            h = taps.block(f"{path}.cam_layer", h, lambda v: self.cam_layer(v, taps, f"{path}.cam_layer"))
            return torch.cat([x, h], dim=1)

        return taps.block(path, x, body)


class CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, n: int, cin: int, cout: int, bn_ch: int, k: int, dilation: int, seg_len: int, config_str: str):
        super().__init__()
        for i in range(n):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(cin + i * cout, cout, bn_ch, k, dilation, seg_len, config_str))

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        for name, layer in self.named_children():
            x = layer(x, taps, f"{path}.{name}")
        return x


class TransitLayer(nn.Module):
    def __init__(self, cin: int, cout: int, config_str: str):
        super().__init__()
        self.nonlinear = get_nonlinear(config_str, cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x, taps: Taps | None = None, path: str = ""):
        taps = taps or NoTaps()
        return taps.block(f"{path}.linear", run_seq(self.nonlinear, f"{path}.nonlinear", x, taps), self.linear)


class StatsPool(nn.Module):
    def forward(self, x):  # mean ‖ unbiased std over time
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = get_nonlinear("batchnorm_", cout)

    def forward(self, x, taps: Taps | None = None, path: str = ""):  # x [B, C]
        taps = taps or NoTaps()
        y = taps.block(f"{path}.linear", x, lambda v: self.linear(v.unsqueeze(-1)).squeeze(-1))
        return run_seq(self.nonlinear, f"{path}.nonlinear", y, taps)


class CAMPPlus(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        cfg = {**DEFAULTS, **cfg}
        self.cfg = cfg
        cs = cfg["config_str"]
        self.head = FCM(cfg["m_channels"], cfg["feat_dim"])
        ch = self.head.out_channels
        g = cfg["growth_rate"]
        self.xvector = nn.Sequential(OrderedDict([("tdnn", TDNNLayer(ch, cfg["init_channels"], 5, 2, cs))]))
        ch = cfg["init_channels"]
        for i, (n, k, d) in enumerate(zip(cfg["block_layers"], cfg["kernel_sizes"], cfg["dilations"])):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(n, ch, g, cfg["bn_size"] * g, k, d, cfg["seg_len"], cs))
            ch += n * g
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(ch, ch // 2, cs))
            ch //= 2
        self.xvector.add_module("out_nonlinear", get_nonlinear(cs, ch))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(ch * 2, cfg["embedding_size"]))

    def forward(self, feat: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """feat [B, T, F] (fbank minus mean) → speaker embedding [B, embedding_size]."""
        taps = taps or NoTaps()
        x = self.head(feat.permute(0, 2, 1), taps)
        for name, mod in self.xvector.named_children():
            p = f"xvector.{name}"
            if isinstance(mod, nn.Sequential):  # out_nonlinear
                x = run_seq(mod, p, x, taps)
            elif isinstance(mod, StatsPool):
                x = taps.block(p, x, mod)
            elif isinstance(mod, CAMDenseTDNNBlock):
                x = mod(x, taps, p)
            else:  # tdnn, transitN, dense: the parent tap holds nothing but its children
                x = taps.block(p, x, lambda v, mod=mod, p=p: mod(v, taps, p))
        return x


@torch.no_grad()
def fill_running_stats(model: nn.Module, seed: int = 0) -> None:
    """`synthetic_init` fills parameters only; BatchNorm running stats are buffers. Give them
    deterministic non-trivial values (mean ≠ 0, var ≠ 1) so that ignoring them is visible."""
    from .common import _rng_for

    for key, b in model.named_buffers():
        if b.is_meta:
            continue
        if key.endswith("running_mean"):
            b.copy_(torch.as_tensor(0.3 * _rng_for(key, seed).standard_normal(tuple(b.shape)), dtype=b.dtype))
        elif key.endswith("running_var"):
            b.copy_(torch.as_tensor(_rng_for(key, seed).uniform(0.5, 2.0, tuple(b.shape)), dtype=b.dtype))
        elif key.endswith("num_batches_tracked"):
            b.fill_(1000)


def build(cfg: dict) -> CAMPPlus:
    m = CAMPPlus(cfg).eval()
    fill_running_stats(m)
    return m


def save_official(state_dict: dict, path: str) -> None:
    """`campplus_cn_common.bin` is `torch.save(state_dict)`."""
    torch.save(dict(state_dict), path)


def config_json(cfg: dict) -> str:
    return json.dumps(cfg)


AUDIO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "audio")


def load_wav(name: str) -> np.ndarray:
    """A 16-bit PCM mono wav as float32 in [-1, 1], shape [1, N]."""
    import wave

    with wave.open(os.path.join(AUDIO_DIR, name)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, name
        a = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (a.astype(np.float32) / 32768.0)[None]


def make_feat(cfg: dict, seed: int, frames: int = 230) -> dict[str, np.ndarray]:
    """CAM++ input from real speech: fbank (cfg bins) of the 16 kHz clip minus its mean; `seed` picks
    the start. 230 frames → 115 after the stride-2 TDNN: two CAM segments, the second partial."""
    wav = load_wav("speech_16k.wav")
    start = (seed * 1601) % max(wav.shape[1] - (frames + 2) * 160, 1)
    w = torch.from_numpy(wav[:, start : start + (frames + 2) * 160 + 240])
    f = campplus_features(w, cfg["feat_dim"], cfg["sample_rate"])[:frames]
    return {"feat": f[None].numpy().astype(np.float32)}


def make_wav(cfg: dict, seed: int, seconds: float = 1.3) -> dict[str, np.ndarray]:
    wav = load_wav("speech_16k.wav")
    n = int(seconds * cfg["sample_rate"]) + seed % 7
    start = (seed * 997) % max(wav.shape[1] - n, 1)
    return {"wav": np.ascontiguousarray(wav[:, start : start + n])}


def run_embed(model: CAMPPlus, inputs: dict, taps: Taps) -> dict:
    return {"embedding": model(inputs["feat"], taps)}


def run_fbank(model: CAMPPlus, inputs: dict, taps: Taps) -> dict:
    cfg = model.cfg
    f = taps.block("fbank", inputs["wav"], lambda w: kaldi_fbank(w, cfg["feat_dim"], cfg["sample_rate"], taps))
    return {"feat": taps.block("feat", f, lambda v: v - v.mean(dim=0, keepdim=True))}  # infer_v2
