"""Perceiver resampler of IndexTTS2's UnifiedVoice (official `indextts/gpt/perceiver.py`).

Latents cross-attend over cat(latents, context) (cross_attn_include_queries), fused `to_kv` = K‖V,
key padding filled with -finfo.max, GEGLU feed-forward with exact gelu on the second half,
output `F.normalize(x)·√dim·gamma`. Attribute names reproduce the official keys.

Leaf taps: proj_context, `latents` (the parameter broadcast over the batch; never injected),
per layer `0.to_q`, `0.to_kv` (with the cat), `0.attend` (input q; heads split/merged inside),
`0.to_out`, `1.0`, `1.1` (GEGLU), `1.2`, the layer (both residual adds), `norm`, and the whole
resampler under its own path (it holds `latents`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import NoTaps

# fnmatch patterns of taps the injected walk must not inject: the latents are a weight, not a value.
NO_INJECT = ("*.latents",)


class Attention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = dim_head ** -0.5
        inner = dim_head * heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, context, mask, taps, name):
        q = taps.block(f"{name}.to_q", x, self.to_q)
        # cross_attn_include_queries: keys/values over cat(latents, context); the cat sits in this tap.
        kv = taps.block(f"{name}.to_kv", x, lambda x: self.to_kv(torch.cat((x, context), dim=-2)))
        k, v = kv.chunk(2, dim=-1)
        b = x.size(0)

        def attend(q):  # the official `Attend` plus the head split / merge around it
            q, kh, vh = (t.reshape(b, t.size(1), self.heads, -1).transpose(1, 2) for t in (q, k, v))
            sim = (q @ kh.transpose(-2, -1)) * self.scale
            if mask is not None:
                sim = sim.masked_fill(~mask[:, None, None, :], -torch.finfo(sim.dtype).max)
            out = sim.softmax(dim=-1) @ vh
            return out.transpose(1, 2).reshape(b, q.size(2), -1)

        out = taps.block(f"{name}.attend", q, attend)
        return taps.block(f"{name}.to_out", out, self.to_out)


class GEGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(nn.Linear(dim, inner * 2), GEGLU(), nn.Linear(inner, dim))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, depth: int = 2, dim_context: int | None = None, num_latents: int = 32,
                 dim_head: int = 64, heads: int = 8, ff_mult: int = 4):
        super().__init__()
        dim_context = dim_context or dim
        self.proj_context = nn.Linear(dim_context, dim) if dim_context != dim else nn.Identity()
        self.latents = nn.Parameter(torch.empty(num_latents, dim))
        self.layers = nn.ModuleList(
            [nn.ModuleList([Attention(dim, dim_head, heads), feed_forward(dim, ff_mult)]) for _ in range(depth)]
        )
        self.norm = RMSNorm(dim)

    def forward(self, x, mask=None, taps=None, name: str = ""):
        taps = taps or NoTaps()
        b = x.size(0)

        def whole(x):
            x = taps.block(f"{name}.proj_context", x, self.proj_context)
            lat = taps.block(f"{name}.latents", self.latents, lambda p: p.unsqueeze(0).expand(b, -1, -1))
            for i, (attn, ff) in enumerate(self.layers):
                def layer(lat, attn=attn, ff=ff, i=i):
                    lat = attn(lat, x, mask, taps, f"{name}.layers.{i}.0") + lat
                    h = taps.block(f"{name}.layers.{i}.1.0", lat, ff[0])
                    h = taps.block(f"{name}.layers.{i}.1.1", h, ff[1])
                    return taps.block(f"{name}.layers.{i}.1.2", h, ff[2]) + lat
                # the layer tap holds both residual adds (its children's inputs are injected)
                lat = taps.block(f"{name}.layers.{i}", lat, layer)
            return taps.block(f"{name}.norm", lat, self.norm)

        return taps.block(name, x, whole)
