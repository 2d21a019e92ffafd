"""Reference BigVGAN v2 (NVIDIA `bigvgan.py`, resblock "1", Snake/SnakeBeta, alias-free activations).

Written from the official behaviour, with the official module tree so that `state_dict()` keys
equal `bigvgan_generator.pt`'s `generator` dict. Weight norm uses the old
`torch.nn.utils.weight_norm`, as the official class does, so the keys are `weight_g`/`weight_v`.
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

from .common import NoTaps, Taps

FULL = {  # architecture keys of nvidia/bigvgan_v2_22khz_80band_256x config.json
    "resblock": "1",
    "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "activation": "snakebeta",
    "snake_logscale": True,
    "num_mels": 80,
    "hop_size": 256,
    "sampling_rate": 22050,
    "n_fft": 1024,
    "win_size": 1024,
    "fmin": 0,
    "fmax": None,
}
# Same structure, every stage kept (incl. the 4× ones and all three kernels), far fewer channels.
TINY = {**FULL, "upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4], "upsample_initial_channel": 32, "num_mels": 16}


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc lowpass, normalised to unit DC gain; shape [1, 1, kernel_size]. Computed in
    torch's default dtype, as the official code does; it is a buffer, so the checkpoint's stored values
    replace it at load and `.to(dtype)` carries it to float64 with the rest of the module."""
    even = kernel_size % 2 == 0
    half = kernel_size // 2
    delta_f = 4 * half_width
    atten = 2.285 * (half - 1) * math.pi * delta_f + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    t = (torch.arange(-half, half) + 0.5) if even else (torch.arange(kernel_size) - half)
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    filt = filt / filt.sum()
    return filt.view(1, 1, kernel_size)


class Snake(nn.Module):
    """x + 1/(α + 1e-9) · sin²(αx); α stored as log α when `alpha_logscale`."""

    def __init__(self, channels: int, alpha_logscale: bool):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if alpha_logscale else torch.ones(channels))

    def forward(self, x):
        a = self.alpha[None, :, None]
        if self.alpha_logscale:
            a = torch.exp(a)
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


class SnakeBeta(nn.Module):
    """x + 1/(β + 1e-9) · sin²(αx); α, β stored as logs when `alpha_logscale`."""

    def __init__(self, channels: int, alpha_logscale: bool):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        init = torch.zeros(channels) if alpha_logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x):
        a, b = self.alpha[None, :, None], self.beta[None, :, None]
        if self.alpha_logscale:
            a, b = torch.exp(a), torch.exp(b)
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a).pow(2)


def make_activation(cfg: dict, ch: int) -> nn.Module:
    if cfg["activation"] == "snake":
        return Snake(ch, cfg["snake_logscale"])
    if cfg["activation"] == "snakebeta":
        return SnakeBeta(ch, cfg["snake_logscale"])
    raise NotImplementedError(f"activation {cfg['activation']!r}: the official class knows 'snake' and 'snakebeta'")


class UpSample1d(nn.Module):
    def __init__(self, ratio: int = 2):
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2
        self.pad = self.kernel_size // ratio - 1
        self.crop_l = self.pad * ratio + (self.kernel_size - ratio) // 2
        self.crop_r = self.pad * ratio + (self.kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, self.kernel_size))

    def forward(self, x):
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=self.ratio, groups=c)
        return x[..., self.crop_l : -self.crop_r]


class LowPassFilter1d(nn.Module):
    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int):
        super().__init__()
        even = kernel_size % 2 == 0
        self.pad_l, self.pad_r, self.stride = kernel_size // 2 - int(even), kernel_size // 2, stride
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x):
        c = x.shape[1]
        x = F.pad(x, (self.pad_l, self.pad_r), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2):
        super().__init__()
        k = int(6 * ratio // 2) * 2
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, k)

    def forward(self, x):
        return self.lowpass(x)


class Activation1d(nn.Module):
    """Alias-free activation: ×2 upsample, Snake/SnakeBeta, lowpass + ×2 downsample.
    Taps `<name>.upsample`, `<name>.act`, `<name>.downsample.lowpass` (DownSample1d only calls it)."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act, self.upsample, self.downsample = act, UpSample1d(2), DownSample1d(2)

    def forward(self, x, taps: Taps | None = None, name: str = ""):
        taps = taps or NoTaps()
        x = taps.block(f"{name}.upsample", x, self.upsample)
        x = taps.block(f"{name}.act", x, self.act)
        return taps.block(f"{name}.downsample.lowpass", x, self.downsample.lowpass)


def _pad(k: int, d: int) -> int:
    return (k * d - d) // 2


def _wn_conv(ch: int, k: int, d: int) -> nn.Module:
    return weight_norm(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d)))


class AMPBlock1(nn.Module):
    """Per dilation d: x += convs2(act(convs1_d(act(x)))). The residual adds are not injected (only each
    tap's own input is), so they show in the block's tap `resblocks.k`."""

    def __init__(self, cfg: dict, ch: int, k: int, dil: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(_wn_conv(ch, k, d) for d in dil)
        self.convs2 = nn.ModuleList(_wn_conv(ch, k, 1) for _ in dil)
        self.activations = nn.ModuleList(Activation1d(make_activation(cfg, ch)) for _ in range(2 * len(dil)))

    def forward(self, x, taps: Taps | None = None, name: str = ""):
        taps = taps or NoTaps()
        for j, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = self.activations[2 * j](x, taps, f"{name}.activations.{2 * j}")
            xt = taps.block(f"{name}.convs1.{j}", xt, c1)
            xt = self.activations[2 * j + 1](xt, taps, f"{name}.activations.{2 * j + 1}")
            xt = taps.block(f"{name}.convs2.{j}", xt, c2)
            x = xt + x
        return x


class AMPBlock2(nn.Module):
    """Per dilation d: x += convs_d(act(x)). The vendored IndexTTS copy's forward lacks its final
    `return x` (it returns None, so resblock "2" cannot run there); this follows NVIDIA's BigVGAN,
    of which it is a copy, and returns x."""

    def __init__(self, cfg: dict, ch: int, k: int, dil: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(_wn_conv(ch, k, d) for d in dil)
        self.activations = nn.ModuleList(Activation1d(make_activation(cfg, ch)) for _ in dil)

    def forward(self, x, taps: Taps | None = None, name: str = ""):
        taps = taps or NoTaps()
        for j, c in enumerate(self.convs):
            xt = self.activations[j](x, taps, f"{name}.activations.{j}")
            x = taps.block(f"{name}.convs.{j}", xt, c) + x
        return x


class BigVGAN(nn.Module):
    """The official `BigVGAN(h)`: `h` is config.json's dict. Absent `use_tanh_at_final` /
    `use_bias_at_final` default to True, as the official class's `h.get(..., True)` does."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        if cfg.get("use_cuda_kernel", False):
            raise NotImplementedError("use_cuda_kernel=True: the fused CUDA anti-alias kernel is not reproduced")
        c0 = cfg["upsample_initial_channel"]
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.conv_pre = weight_norm(nn.Conv1d(cfg["num_mels"], c0, 7, 1, padding=3))
        if cfg["resblock"] == "1":
            block = AMPBlock1
        elif cfg["resblock"] == "2":
            block = AMPBlock2
        else:
            raise ValueError(f"Incorrect resblock class specified in hyperparameters. Got {cfg['resblock']}")
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
            conv = nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            self.ups.append(nn.ModuleList([weight_norm(conv)]))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = c0 // 2 ** (i + 1)
            for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
                self.resblocks.append(block(cfg, ch, k, d))
        self.activation_post = Activation1d(make_activation(cfg, ch))
        self.use_bias_at_final = cfg.get("use_bias_at_final", True)
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3, bias=self.use_bias_at_final))
        self.use_tanh_at_final = cfg.get("use_tanh_at_final", True)

    def remove_weight_norm(self) -> "BigVGAN":
        """Fold every weight-normed conv into a plain `weight`, as infer_v2 does after loading (its
        forward then skips the per-call g·v/‖v‖): what the benchmarks time."""
        for m in self.modules():
            if hasattr(m, "weight_g"):
                torch.nn.utils.remove_weight_norm(m)
        return self

    def forward(self, mel: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """Taps, in completion order: conv_pre; per stage i: ups.i.0, each resblock's leaves and the block
        (resblocks.k), then `xs.i` = the stage mean (official `x = xs / num_kernels`, tapped on the last
        resblock's output so the sum is inside it); activation_post's leaves; conv_post; `tanh` or `clamp`."""
        taps = taps or NoTaps()
        x = taps.block("conv_pre", mel, self.conv_pre)
        for i, up in enumerate(self.ups):
            x = taps.block(f"ups.{i}.0", x, up[0])
            ys = []
            for j in range(self.num_kernels):
                k = i * self.num_kernels + j
                name = f"resblocks.{k}"
                ys.append(taps.block(name, x, lambda v, m=self.resblocks[k], n=name: m(v, taps, n)))
            x = taps.block(f"xs.{i}", ys[-1], lambda last, prev=ys[:-1]: _stage_mean(prev, last, self.num_kernels))
        x = self.activation_post(x, taps, "activation_post")
        x = taps.block("conv_post", x, self.conv_post)
        if self.use_tanh_at_final:
            return taps.block("tanh", x, torch.tanh)
        return taps.block("clamp", x, lambda v: torch.clamp(v, min=-1.0, max=1.0))


def _stage_mean(prev: list, last: torch.Tensor, n: int) -> torch.Tensor:
    """The official accumulation order: xs = y0; xs += y1; ...; x = xs / num_kernels."""
    xs = None
    for y in [*prev, last]:
        xs = y if xs is None else xs + y
    return xs / n


def build(cfg: dict) -> BigVGAN:
    return BigVGAN(cfg).eval()


def save_official(state_dict: dict, path: str) -> None:
    """`bigvgan_generator.pt` is `{'generator': state_dict}`."""
    torch.save({"generator": state_dict}, path)


def config_json(cfg: dict) -> str:
    return json.dumps(cfg)


def make_mel(cfg: dict, seed: int, frames: int = 24) -> dict[str, np.ndarray]:
    """A smooth log-mel-like input: values in the range real log-mels take (≈ −11 … 2)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, frames)[None, :]
    bands = np.linspace(0, 1, cfg["num_mels"])[:, None]
    mel = -5.0 + 3.0 * np.sin(2 * np.pi * (3 * t + bands)) - 2.0 * bands + 0.3 * rng.standard_normal((cfg["num_mels"], frames))
    return {"mel": mel[None].astype(np.float32)}


def run_forward(model: BigVGAN, inputs: dict[str, torch.Tensor], taps: Taps) -> dict[str, torch.Tensor]:
    return {"wav": model(inputs["mel"], taps)}


def _output_gain(cfg: dict) -> dict:
    """Synthetic weights grow activations stage by stage, so the output gain is set per size to give
    a waveform that is partly inside (-1, 1) and partly clipped — realistic, and the clamp is exercised.
    Measured pre-clamp peaks with gain ≈ 3.5: tiny ≈ 80, full ≈ 700; with these gains ≈ 3 and ≈ 2.7."""
    lo = 0.12 if cfg["upsample_initial_channel"] < 512 else 0.012

    def fill(key, rng, shape):
        return lo * (1.0 + 0.25 * np.abs(rng.standard_normal(shape)))

    return {"conv_post.weight_g": fill}
