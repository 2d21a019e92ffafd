"""WeNet-style Conformer encoder as used by IndexTTS2's UnifiedVoice conditioning paths.

Behaviour follows official `indextts/gpt/conformer_encoder.py` + `gpt/conformer/*`: conv2d2
subsampling with a flattening Linear, x·√d, absolute `pe` table handed to a rel-pos attention that
has NO rel_shift, GLU conv module (kernel 15), pre-norm blocks with `norm_final`, `after_norm`.
Attribute names reproduce the official state_dict keys exactly.

Leaf taps (name = module path; a functional op = `<enclosing module>.<official name>`). Every op
lies inside some tap's fn with no injected tap between it and that tap's output: the flatten sits in
`embed.out.0`, the mask fills and layout transposes in the conv-module taps, the head split/merge in
`self_attn.forward_attention` (the scores + masked softmax + A·V of the official code; its final
`linear_out` is tapped on its own), and the three residual adds reach `norm_final`, which the
injected walk therefore leaves uninjected (`NO_INJECT`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import NoTaps

# fnmatch patterns of taps the injected walk must not inject (see the module docstring).
NO_INJECT = ("*.encoders.*.norm_final", "*.embed.pos_enc.position_encoding")


class RelPositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        pos = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0))  # persistent: it is in gpt.pth (a weight, cast with the model)

    def forward(self, x, taps, name):
        t = x.size(1)
        if t >= self.max_len:  # the official asserts offset + size < max_len
            raise ValueError(f"Conformer sequence of {t} frames exceeds the positional table ({self.max_len})")
        x = taps.block(name, x, lambda x: x * self.xscale)
        pos = taps.block(f"{name}.position_encoding", self.pe, lambda pe: pe[:, :t])
        return x, pos


class Conv2dSubsampling2(nn.Module):
    def __init__(self, idim: int, odim: int, max_len: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(odim * ((idim - 1) // 2), odim))
        self.pos_enc = RelPositionalEncoding(odim, max_len)

    def forward(self, x, taps, name):
        x = taps.block(f"{name}.conv.0", x, lambda x: self.conv[0](x.unsqueeze(1)))  # [B, C, T', F']
        x = taps.block(f"{name}.conv.1", x, self.conv[1])

        def out(x):
            b, c, t, f = x.shape
            return self.out[0](x.transpose(1, 2).contiguous().view(b, t, c * f))  # flatten index c*F' + f

        x = taps.block(f"{name}.out.0", x, out)
        return self.pos_enc(x, taps, f"{name}.pos_enc")


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

    def forward(self, x, mask, pos_emb, taps, name):
        b = x.size(0)
        q = taps.block(f"{name}.linear_q", x, self.linear_q)
        k = taps.block(f"{name}.linear_k", x, self.linear_k)
        v = taps.block(f"{name}.linear_v", x, self.linear_v)
        p = taps.block(f"{name}.linear_pos", pos_emb, self.linear_pos)

        def core(q):
            q = q.view(b, -1, self.h, self.d_k)  # [B, T, H, dk]
            kh = k.view(b, -1, self.h, self.d_k).transpose(1, 2)
            vh = v.view(b, -1, self.h, self.d_k).transpose(1, 2)
            ph = p.view(p.size(0), -1, self.h, self.d_k).transpose(1, 2)
            qu = (q + self.pos_bias_u).transpose(1, 2)
            qv = (q + self.pos_bias_v).transpose(1, 2)
            # Official code comments rel_shift out: the positional term is a plain absolute product.
            scores = (torch.matmul(qu, kh.transpose(-2, -1)) + torch.matmul(qv, ph.transpose(-2, -1))) / math.sqrt(self.d_k)
            masked = ~mask.unsqueeze(1)  # [B, 1, 1, T2]
            scores = scores.masked_fill(masked, -float("inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(masked, 0.0)
            return torch.matmul(attn, vh).transpose(1, 2).contiguous().view(b, -1, self.h * self.d_k)

        o = taps.block(f"{name}.forward_attention", q, core)
        return taps.block(f"{name}.linear_out", o, self.linear_out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.activation = nn.SiLU()
        self.w_2 = nn.Linear(hidden, idim)

    def forward(self, x, taps, name):
        x = taps.block(f"{name}.w_1", x, self.w_1)
        x = taps.block(f"{name}.activation", x, self.activation)
        return taps.block(f"{name}.w_2", x, self.w_2)


class ConvolutionModule(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 15):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x, mask_pad, taps, name):
        """x [B, T, C] → [B, T, C]; the taps keep the official layouts: [B, 2C|C, T] up to the
        depthwise conv, [B, T, C] from the norm on."""
        x = taps.block(f"{name}.pointwise_conv1", x, lambda x: self.pointwise_conv1(x.transpose(1, 2).masked_fill(~mask_pad, 0.0)))
        x = taps.block(f"{name}.glu", x, lambda x: F.glu(x, dim=1))  # first half · σ(second half)
        x = taps.block(f"{name}.depthwise_conv", x, self.depthwise_conv)
        x = taps.block(f"{name}.norm", x, lambda x: self.norm(x.transpose(1, 2)))
        x = taps.block(f"{name}.activation", x, self.activation)
        return taps.block(f"{name}.pointwise_conv2", x,
                          lambda x: self.pointwise_conv2(x.transpose(1, 2)).masked_fill(~mask_pad, 0.0).transpose(1, 2))


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

    def forward(self, x, mask, pos_emb, taps, name):
        h = taps.block(f"{name}.norm_mha", x, self.norm_mha)
        x = x + taps.block(f"{name}.self_attn", h, lambda h: self.self_attn(h, mask, pos_emb, taps, f"{name}.self_attn"))
        h = taps.block(f"{name}.norm_conv", x, self.norm_conv)
        x = x + self.conv_module(h, mask, taps, f"{name}.conv_module")
        h = taps.block(f"{name}.norm_ff", x, self.norm_ff)
        x = x + self.feed_forward(h, taps, f"{name}.feed_forward")
        return taps.block(f"{name}.norm_final", x, self.norm_final)


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
            y, holder["pos"] = self.embed(x, taps, f"{name}.embed")
            return y

        x = taps.block(f"{name}.embed", xs, embed)
        pos, m = holder["pos"], mask[:, :, 2::2]
        for i, layer in enumerate(self.encoders):
            x = taps.block(f"{name}.encoders.{i}", x, lambda x, layer=layer, i=i: layer(x, m, pos, taps, f"{name}.encoders.{i}"))
        x = taps.block(f"{name}.after_norm", x, self.after_norm)
        return x, m
