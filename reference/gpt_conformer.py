"""WeNet-style Conformer encoder as used by IndexTTS2's UnifiedVoice conditioning paths.

Behaviour follows official `indextts/gpt/conformer_encoder.py` + `gpt/conformer/*`: conv2d2
subsampling with a flattening Linear, x·√d, absolute `pe` table handed to a rel-pos attention that
has NO rel_shift, GLU conv module (kernel 15), pre-norm blocks with `norm_final`, `after_norm`.
Attribute names reproduce the official state_dict keys exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import NoTaps


class RelPositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        pos = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0))  # persistent: it is in gpt.pth

    def forward(self, x):
        t = x.size(1)
        if t >= self.max_len:  # the official asserts offset + size < max_len
            raise ValueError(f"Conformer sequence of {t} frames exceeds the positional table ({self.max_len})")
        return x * math.sqrt(self.d_model), self.pe[:, :t]


class Conv2dSubsampling2(nn.Module):
    def __init__(self, idim: int, odim: int, max_len: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(odim * ((idim - 1) // 2), odim))
        self.pos_enc = RelPositionalEncoding(odim, max_len)

    def forward(self, x, mask):
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))  # flatten index c*F' + f
        x, pos = self.pos_enc(x)
        return x, pos, mask[:, :, 2::2]


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(n_head, self.d_k))

    def forward(self, x, mask, pos_emb):
        b = x.size(0)
        q = self.linear_q(x).view(b, -1, self.h, self.d_k)  # [B, T, H, dk]
        k = self.linear_k(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        qu = (q + self.pos_bias_u).transpose(1, 2)
        qv = (q + self.pos_bias_v).transpose(1, 2)
        # Official code comments rel_shift out: the positional term is a plain absolute product.
        scores = (qu @ k.transpose(-2, -1) + qv @ p.transpose(-2, -1)) / math.sqrt(self.d_k)
        masked = ~mask.unsqueeze(1)  # [B, 1, 1, T2]
        scores = scores.masked_fill(masked, -float("inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(masked, 0.0)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.w_2 = nn.Linear(hidden, idim)

    def forward(self, x):
        return self.w_2(F.silu(self.w_1(x)))


class ConvolutionModule(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 15):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x, mask_pad):
        x = x.transpose(1, 2).masked_fill(~mask_pad, 0.0)
        x = F.glu(self.pointwise_conv1(x), dim=1)  # first half · σ(second half)
        x = self.depthwise_conv(x)
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        x = self.pointwise_conv2(x).masked_fill(~mask_pad, 0.0)
        return x.transpose(1, 2)


class ConformerEncoderLayer(nn.Module):
    def __init__(self, size: int, heads: int, linear_units: int, kernel: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units)
        self.conv_module = ConvolutionModule(size, kernel)
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)
        self.norm_conv = nn.LayerNorm(size, eps=1e-5)
        self.norm_final = nn.LayerNorm(size, eps=1e-5)

    def forward(self, x, mask, pos_emb):
        x = x + self.self_attn(self.norm_mha(x), mask, pos_emb)
        x = x + self.conv_module(self.norm_conv(x), mask)
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    def __init__(self, input_size: int, output_size: int, attention_heads: int, linear_units: int,
                 num_blocks: int, cnn_module_kernel: int = 15, pos_max_len: int = 5000):
        super().__init__()
        self.embed = Conv2dSubsampling2(input_size, output_size, pos_max_len)
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)
        self.encoders = nn.ModuleList(
            [ConformerEncoderLayer(output_size, attention_heads, linear_units, cnn_module_kernel) for _ in range(num_blocks)]
        )

    def forward(self, xs, lens, taps=None, name: str = ""):
        """xs [B, T, idim], lens [B] → (out [B, T', d], mask [B, 1, T'])."""
        taps = taps or NoTaps()
        t = xs.size(1)
        mask = (torch.arange(t, device=xs.device)[None, :] < lens[:, None]).unsqueeze(1)
        holder = {}

        def embed(x):
            y, pos, m = self.embed(x, mask)
            holder["pos"], holder["mask"] = pos, m
            return y

        x = taps.block(f"{name}.embed", xs, embed)
        pos, m = holder["pos"], holder["mask"]
        for i, layer in enumerate(self.encoders):
            x = taps.block(f"{name}.encoders.{i}", x, lambda x, layer=layer: layer(x, m, pos))
        x = taps.block(f"{name}.after_norm", x, self.after_norm)
        return x, m
