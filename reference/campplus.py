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

FULL = {  # CAMPPlus(feat_dim=80, embedding_size=192) with the class defaults
    "feat_dim": 80,
    "embedding_size": 192,
    "growth_rate": 32,
    "bn_size": 4,
    "init_channels": 128,
    "m_channels": 32,
    "block_layers": [12, 24, 16],
    "kernel_sizes": [3, 3, 3],
    "dilations": [1, 2, 2],
    "seg_len": 100,
    "sample_rate": 16000,
}
# Same structure (every block kind, CAM segment pooling with a partial last segment), fewer channels.
TINY = {**FULL, "feat_dim": 16, "embedding_size": 12, "growth_rate": 8, "bn_size": 2, "init_channels": 16,
        "m_channels": 8, "block_layers": [2, 3, 2], "seg_len": 100}

# ---------------------------------------------------------------- Kaldi fbank (IndexTTS2 options)


def _mel(f):
    return 1127.0 * torch.log(1.0 + f / 700.0)


def kaldi_mel_banks(num_bins: int, padded: int, sr: float, low: float = 20.0, high: float = 0.0) -> torch.Tensor:
    """Triangles on the Kaldi mel scale (1127·ln(1+f/700)), [num_bins, padded/2 + 1], last column 0."""
    nyq = 0.5 * sr
    high = high if high > 0 else nyq + high
    n_fft_bins = padded // 2
    width = sr / padded
    mel_low, mel_high = 1127.0 * math.log(1.0 + low / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    m = _mel(width * torch.arange(n_fft_bins)).unsqueeze(0)
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return F.pad(banks, (0, 1))


def kaldi_fbank(wav: torch.Tensor, num_mel_bins: int = 80, sample_frequency: float = 16000.0) -> torch.Tensor:
    """wav [1, N] (float, unscaled) → log mel energies [frames, num_mel_bins]; empty if N < 25 ms."""
    x = wav[0]
    win = int(sample_frequency * 0.025)
    shift = int(sample_frequency * 0.010)
    padded = 1 << (win - 1).bit_length()
    if x.numel() < win:
        return torch.empty(0, num_mel_bins, dtype=wav.dtype)
    n = 1 + (x.numel() - win) // shift
    frames = x.as_strided((n, win), (shift * x.stride(0), x.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC offset
    prev = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    frames = frames - 0.97 * prev  # pre-emphasis, first sample against itself
    window = torch.hann_window(win, periodic=False, dtype=wav.dtype).pow(0.85)  # povey
    frames = F.pad(frames * window, (0, padded - win))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_frequency).to(wav.dtype)
    mel = power @ banks.t()
    return torch.max(mel, torch.tensor(torch.finfo(torch.float).eps, dtype=wav.dtype)).log()


def campplus_features(wav: torch.Tensor, num_mel_bins: int = 80, sample_frequency: float = 16000.0) -> torch.Tensor:
    """infer_v2 step 6: fbank minus its time mean."""
    f = kaldi_fbank(wav, num_mel_bins, sample_frequency)
    return f - f.mean(dim=0, keepdim=True)


# ---------------------------------------------------------------- CAM++


def nonlinear(channels: int, affine: bool = True) -> nn.Sequential:
    """`get_nonlinear('batchnorm-relu')` / `('batchnorm_')`: keys `batchnorm.*`; ReLU has no keys."""
    s = nn.Sequential()
    s.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    if affine:
        s.add_module("relu", nn.ReLU())
    return s


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

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


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
        out = taps.block("head.conv1", x.unsqueeze(1), lambda v: F.relu(self.bn1(self.conv1(v))))
        for name in ("layer1", "layer2"):
            for i, blk in enumerate(getattr(self, name)):
                out = taps.block(f"head.{name}.{i}", out, blk)

        def last(v):
            y = F.relu(self.bn2(self.conv2(v)))
            return y.reshape(y.shape[0], y.shape[1] * y.shape[2], y.shape[3])

        return taps.block("head.conv2", out, last)


class TDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.nonlinear = nonlinear(cout)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    def __init__(self, bn_ch: int, cout: int, k: int, dilation: int, seg_len: int):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_ch, cout, k, padding=(k - 1) // 2 * dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.linear2 = nn.Conv1d(bn_ch // 2, cout, 1)
        self.seg_len = seg_len

    def seg_pooling(self, x):
        # Segment means (last segment partial: ceil_mode averages only the samples present),
        # each repeated over its segment.
        seg = F.avg_pool1d(x, kernel_size=self.seg_len, stride=self.seg_len, ceil_mode=True)
        return seg.repeat_interleave(self.seg_len, dim=-1)[..., : x.shape[-1]]

    def forward(self, x):
        y = self.linear_local(x)
        ctx = x.mean(-1, keepdim=True) + self.seg_pooling(x)
        m = torch.sigmoid(self.linear2(F.relu(self.linear1(ctx))))
        return y * m


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, bn_ch: int, k: int, dilation: int, seg_len: int):
        super().__init__()
        self.nonlinear1 = nonlinear(cin)
        self.linear1 = nn.Conv1d(cin, bn_ch, 1, bias=False)
        self.nonlinear2 = nonlinear(bn_ch)
        self.cam_layer = CAMLayer(bn_ch, cout, k, dilation, seg_len)

    def forward(self, x):  # dense connectivity: the block output is [x, layer(x)]
        return torch.cat([x, self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))], dim=1)


class CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, n: int, cin: int, cout: int, bn_ch: int, k: int, dilation: int, seg_len: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(cin + i * cout, cout, bn_ch, k, dilation, seg_len))


class TransitLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.nonlinear = nonlinear(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    def forward(self, x):  # mean ‖ unbiased std over time
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nonlinear(cout, affine=False)

    def forward(self, x):  # x [B, C]
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.head = FCM(cfg["m_channels"], cfg["feat_dim"])
        ch = self.head.out_channels
        g = cfg["growth_rate"]
        self.xvector = nn.Sequential(OrderedDict([("tdnn", TDNNLayer(ch, cfg["init_channels"], 5, 2))]))
        ch = cfg["init_channels"]
        for i, (n, k, d) in enumerate(zip(cfg["block_layers"], cfg["kernel_sizes"], cfg["dilations"])):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(n, ch, g, cfg["bn_size"] * g, k, d, cfg["seg_len"]))
            ch += n * g
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(ch, ch // 2))
            ch //= 2
        self.xvector.add_module("out_nonlinear", nonlinear(ch))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(ch * 2, cfg["embedding_size"]))

    def forward(self, feat: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """feat [B, T, F] (fbank minus mean) → speaker embedding [B, embedding_size]."""
        taps = taps or NoTaps()
        x = self.head(feat.permute(0, 2, 1), taps)
        for name, mod in self.xvector.named_children():
            if isinstance(mod, CAMDenseTDNNBlock):
                for lname, layer in mod.named_children():
                    x = taps.block(f"xvector.{name}.{lname}", x, layer)
            else:
                x = taps.block(f"xvector.{name}", x, mod)
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
    f = taps.block("fbank", inputs["wav"], lambda w: kaldi_fbank(w, cfg["feat_dim"], cfg["sample_rate"]))
    return {"feat": f - f.mean(dim=0, keepdim=True)}


from parity.spec import Case, ModelSpec  # noqa: E402  (registry row lives beside the model)

SPEC = ModelSpec(
    name="campplus",
    manifest="campplus.json",
    configs={"tiny": TINY, "full": FULL},
    build_reference=build,
    official_file="campplus/campplus_cn_common.bin",
    save_official=save_official,
    config_json=config_json,
    cases=(
        Case("campplus_embed", "forward", make_feat, run_embed),
        Case("campplus_fbank", "fbank", make_wav, run_fbank),
    ),
    allow_unused={"*.num_batches_tracked": "BatchNorm step counter: only used in training (momentum=None); eval uses running stats"},
    faults={"bn_running_stats_ignored": ("campplus_embed", "head.conv1")},
)
