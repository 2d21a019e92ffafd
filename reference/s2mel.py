"""PyTorch reference for IndexTTS2's s2mel (`s2mel.pth`): length regulator, gpt_layer, DiT + WaveNet, CFM.

Written afresh from the official behaviour (index-tts `indextts/s2mel/modules/{length_regulator,
flow_matching,diffusion_transformer,wavenet,encodec,commons}.py`, `gpt_fast/model.py`). Attribute names
reproduce the official state-dict keys exactly; the checkpoint nests them as
`net.{cfm,length_regulator,gpt_layer}.<key>`.

Tap names are module paths relative to the registry row's prefix: `estimator.…` under `net.cfm`,
`length_regulator.…` / `gpt_layer.…` under `net`.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

from .common import NoTaps

# --------------------------------------------------------------------------------------------
# Configs: the official constructor arguments (config.yaml `s2mel` section: DiT, wavenet,
# style_encoder.dim, length_regulator) flattened, plus the gpt_fast / TimestepEmbedder constants
# (rope_base, norm_eps, freq_dim) and infer_v2's hard-coded CFG rate. "full" = official values.

FULL_DIT = dict(
    hidden_dim=512, num_heads=8, depth=13, in_channels=80, content_dim=512, style_dim=192,
    content_codebook_size=1024, content_type="discrete",
    # config.yaml says 8192; the official DiT ignores it (ModelArgs(block_size=16384), input_pos 16384)
    block_size=8192,
    is_causal=False, long_skip_connection=True, zero_prompt_speech_token=False, time_as_token=False,
    style_as_token=False, uvit_skip_connection=True, style_condition=True, final_layer_type="wavenet",
    class_dropout_prob=0.1, dit_type="DiT", reg_loss_type="l1",
    rope_base=10000.0, norm_eps=1e-5, freq_dim=256,
    wavenet_hidden_dim=512, wavenet_num_layers=8, wavenet_kernel_size=5, wavenet_dilation_rate=1,
    wavenet_p_dropout=0.2, wavenet_style_condition=True,
    cfg_rate=0.7,
)
TINY_DIT = dict(
    FULL_DIT, hidden_dim=32, num_heads=4, depth=13, in_channels=12, content_dim=24, style_dim=16,
    content_codebook_size=8, freq_dim=32, wavenet_hidden_dim=32, wavenet_num_layers=3,
)
FULL_LR = dict(channels=512, in_channels=1024, sampling_ratios=[1, 1, 1, 1], is_discrete=False,
               vector_quantize=False, codebook_size=2048, out_channels=None, groups=1, n_codebooks=1,
               quantizer_dropout=0.0, f0_condition=False, n_f0_bins=512,
               latent_dim=1280, latent_hidden=[256, 128])
TINY_LR = dict(FULL_LR, channels=16, in_channels=24, codebook_size=8, n_f0_bins=8, latent_dim=20, latent_hidden=[12, 8])

# The official DiT hard-codes ModelArgs(block_size=16384): the RoPE table and `input_pos` length.
INPUT_POS = 16384


def intermediate_size(dim: int) -> int:
    """gpt_fast ModelArgs default: 2/3 of 4·dim rounded up to a multiple of 256."""
    n = int(2 * (4 * dim) / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    if max_length is None:
        max_length = int(lengths.max())
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """gpt_fast's `x.float()`: float32 for float32/half inputs, but float64 stays float64 (the truth run)."""
    return torch.promote_types(x.dtype, torch.float32)


# --------------------------------------------------------------------------------------------
# gpt_fast transformer with AdaLN (the DiT backbone). Each module's forward takes (taps, prefix)
# and taps its leaves; the caller taps the module itself (children complete before parents).

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.to(_compute_dtype(x))
        return (xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class AdaptiveLayerNorm(nn.Module):
    """scale·RMSNorm(x) + bias with (scale, bias) = project_layer(c), scale first."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = RMSNorm(dim, eps)
        self.dim = dim

    def forward(self, x, c, taps=None, prefix=""):
        taps = taps or NoTaps()
        sb = taps.block(f"{prefix}.project_layer", c, self.project_layer)
        n = taps.block(f"{prefix}.norm", x, self.norm)
        scale, bias = torch.split(sb, self.dim, dim=-1)
        return scale * n + bias


def rope_table(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype) -> torch.Tensor:
    """[T, head_dim/2, 2] (cos, sin) of position·θ_i, θ_i = base^(-2i/head_dim), as gpt_fast's
    precompute_freqs_cis (float32 math, cast to the weights' dtype) — except that a float64 model
    computes the table in float64 (the truth), not float32 widened."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device)[: head_dim // 2].to(ct) / head_dim))
    ang = torch.outer(positions.to(ct), freqs)
    rot = torch.polar(torch.ones_like(ang), ang)  # polar, not cos/sin: they differ by an ulp
    return torch.stack([rot.real, rot.imag], dim=-1).to(dtype)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotates interleaved pairs (2i, 2i+1) of x [B, T, H, D] by the table [T, D/2, 2]."""
    xs = x.to(_compute_dtype(x)).reshape(*x.shape[:-1], -1, 2)
    f = table.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack([xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1], xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], -1)
    return out.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, n_head: int):
        super().__init__()
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)  # fused q ‖ k ‖ v
        self.wo = nn.Linear(dim, dim, bias=False)
        self.n_head = n_head
        self.head_dim = dim // n_head
        self.dim = dim

    def forward(self, x, table, mask, taps=None, prefix=""):
        taps = taps or NoTaps()
        b, t, _ = x.shape
        hd = (b, t, self.n_head, self.head_dim)
        q, k, v = taps.block(f"{prefix}.wqkv", x, self.wqkv).split([self.dim] * 3, dim=-1)
        # RoPE of q is its own leaf; k (and v) enter the attention core from the wqkv output.
        q = taps.block(f"{prefix}.apply_rotary_emb", q.view(hd), lambda q: apply_rope(q, table))

        def core(q):
            kr = apply_rope(k.view(hd), table)
            qh, kh, vh = (z.transpose(1, 2) for z in (q, kr, v.view(hd)))
            y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=0.0)
            return y.transpose(1, 2).contiguous().view(b, t, self.dim)

        y = taps.block(f"{prefix}.scaled_dot_product_attention", q, core)
        return taps.block(f"{prefix}.wo", y, self.wo)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, taps=None, prefix=""):
        """w2(silu(w1 x) · w3 x); the gating product belongs to the `w2` tap (its input is the SiLU)."""
        taps = taps or NoTaps()
        a = taps.block(f"{prefix}.w1", x, self.w1)
        s = taps.block(f"{prefix}.silu", a, F.silu)
        g = taps.block(f"{prefix}.w3", x, self.w3)
        return taps.block(f"{prefix}.w2", s, lambda s: self.w2(s * g))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, n_head: int, eps: float, uvit: bool):
        super().__init__()
        self.attention = Attention(dim, n_head)
        self.feed_forward = FeedForward(dim, intermediate_size(dim))
        self.ffn_norm = AdaptiveLayerNorm(dim, eps)
        self.attention_norm = AdaptiveLayerNorm(dim, eps)
        if uvit:  # stored for every layer, used by the receivers
            self.skip_in_linear = nn.Linear(2 * dim, dim)

    def forward(self, x, c, table, mask, skip=None, taps=None, prefix=""):
        taps = taps or NoTaps()
        p = prefix
        if skip is not None:
            x = taps.block(f"{p}.skip_in_linear", x, lambda x: self.skip_in_linear(torch.cat([x, skip], dim=-1)))
        a = taps.block(f"{p}.attention_norm", x, lambda x: self.attention_norm(x, c, taps, f"{p}.attention_norm"))
        h = x + taps.block(f"{p}.attention", a, lambda a: self.attention(a, table, mask, taps, f"{p}.attention"))
        n = taps.block(f"{p}.ffn_norm", h, lambda h: self.ffn_norm(h, c, taps, f"{p}.ffn_norm"))
        return h + taps.block(f"{p}.feed_forward", n, lambda n: self.feed_forward(n, taps, f"{p}.feed_forward"))


class Transformer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["hidden_dim"]
        uvit = cfg["uvit_skip_connection"]
        self.layers = nn.ModuleList(TransformerBlock(d, cfg["num_heads"], cfg["norm_eps"], uvit) for _ in range(cfg["depth"]))
        self.norm = AdaptiveLayerNorm(d, cfg["norm_eps"])
        self.head_dim = d // cfg["num_heads"]
        self.rope_base = cfg["rope_base"]
        n = cfg["depth"]
        # U-ViT: the first half pushes, the second half (past the middle layer) pops, LIFO.
        self.emit = {i for i in range(n) if i < n // 2} if uvit else set()
        self.receive = {i for i in range(n) if i > n // 2} if uvit else set()

    def forward(self, x, c, input_pos, mask, taps=None, prefix=""):
        taps = taps or NoTaps()
        table = rope_table(input_pos, self.head_dim, self.rope_base, x.dtype)
        stack = []
        for i, layer in enumerate(self.layers):
            skip = stack.pop() if i in self.receive else None
            name = f"{prefix}.layers.{i}"
            x = taps.block(name, x, lambda x, layer=layer, skip=skip, name=name: layer(x, c, table, mask, skip, taps, name))
            if i in self.emit:
                stack.append(x)
        return taps.block(f"{prefix}.norm", x, lambda x: self.norm(x, c, taps, f"{prefix}.norm"))


# --------------------------------------------------------------------------------------------
# Timestep embedder, WaveNet post-net, final layer.

class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.freq_dim = freq_dim
        half = freq_dim // 2
        # a checkpoint buffer (float32 in every file): the float64 run uses the stored values
        self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half))

    def timestep_embedding(self, t):
        args = 1000 * t[:, None].to(_compute_dtype(t)) * self.freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.freq_dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        # float32 math, then the MLP's dtype: what autocast does for a half-precision model (the
        # official class would hand a float32 tensor to a half Linear); a no-op in float32/float64
        return emb.to(self.mlp[0].weight.dtype)

    def forward(self, t, taps=None, prefix=""):
        taps = taps or NoTaps()
        h = taps.block(f"{prefix}.timestep_embedding", t, self.timestep_embedding)
        for i, m in enumerate(self.mlp):
            h = taps.block(f"{prefix}.mlp.{i}", h, m)
        return h


class _NormConv1d(nn.Module):
    def __init__(self, cin, cout, k, dilation):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, k, dilation=dilation))
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """encodec's pad1d(mode='reflect'): zero-extends short inputs on the right first, then crops it off."""
    length = x.shape[-1]
    extra = 0
    m = max(left, right)
    if length <= m:
        extra = m - length + 1
        x = F.pad(x, (0, extra))
    y = F.pad(x, (left, right), mode="reflect")
    return y[..., : y.shape[-1] - extra]


class SConv1d(nn.Module):
    """Weight-normed conv with reflect 'same' padding (stride 1); any `padding=` the caller meant is ignored."""

    def __init__(self, cin, cout, k, dilation=1):
        super().__init__()
        self.conv = _NormConv1d(cin, cout, k, dilation)
        total = (k - 1) * dilation
        self.pad = (total - total // 2, total // 2)

    def forward(self, x):
        return self.conv(reflect_pad(x, *self.pad))


def fused_add_tanh_sigmoid_multiply(a, g, n):
    a = a + g
    return torch.tanh(a[:, :n]) * torch.sigmoid(a[:, n:])


class WN(nn.Module):
    def __init__(self, hidden: int, k: int, dilation_rate: int, n_layers: int, gin: int):
        super().__init__()
        self.hidden = hidden
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.cond_layer = SConv1d(gin, 2 * hidden * n_layers, 1)
        for i in range(n_layers):
            self.in_layers.append(SConv1d(hidden, 2 * hidden, k, dilation=dilation_rate ** i))
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip_layers.append(SConv1d(hidden, out, 1))

    def forward(self, x, x_mask, g, taps=None, prefix=""):
        """Taps per layer i: in_layers.i, acts.i (the gated unit, + the cond slice), res_skip_layers.i,
        x.i (the residual update (x + res)·mask, which feeds only the next injected in_layer)."""
        taps = taps or NoTaps()
        h = self.hidden
        output = torch.zeros_like(x)
        g = taps.block(f"{prefix}.cond_layer", g, self.cond_layer)
        for i in range(self.n_layers):
            x_in = taps.block(f"{prefix}.in_layers.{i}", x, self.in_layers[i])
            g_l = g[:, 2 * h * i: 2 * h * (i + 1)]
            acts = taps.block(f"{prefix}.acts.{i}", x_in, lambda a, g_l=g_l: fused_add_tanh_sigmoid_multiply(a, g_l, h))
            rs = taps.block(f"{prefix}.res_skip_layers.{i}", acts, self.res_skip_layers[i])
            if i < self.n_layers - 1:
                x = taps.block(f"{prefix}.x.{i}", x, lambda x, rs=rs: (x + rs[:, :h]) * x_mask)
                output = output + rs[:, h:]
            else:
                output = output + rs
        return output * x_mask


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = weight_norm(nn.Linear(hidden, out))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c, taps=None, prefix=""):
        taps = taps or NoTaps()
        m = taps.block(f"{prefix}.adaLN_modulation.0", c, self.adaLN_modulation[0])
        m = taps.block(f"{prefix}.adaLN_modulation.1", m, self.adaLN_modulation[1])
        shift, scale = m.chunk(2, dim=1)  # shift first (DiT convention)
        n = taps.block(f"{prefix}.norm_final", x, self.norm_final)
        y = taps.block(f"{prefix}.modulate", n, lambda n: modulate(n, shift, scale))
        return taps.block(f"{prefix}.linear", y, self.linear)


def check_dit_config(cfg: dict) -> None:
    """What the official constructor rejects (or this reference does not build), as Candle refuses it."""
    if cfg["dit_type"] != "DiT":
        raise NotImplementedError(f"Unknown diffusion type {cfg['dit_type']}")
    if cfg["style_condition"] != cfg["wavenet_style_condition"]:
        raise AssertionError("DiT.style_condition must equal wavenet.style_condition (the official assert)")
    for k in ("time_as_token", "style_as_token"):
        if cfg[k]:
            raise NotImplementedError(f"{k}=True is not implemented (refused by Candle too)")
    if cfg["final_layer_type"] != "wavenet":
        raise NotImplementedError(f"final_layer_type={cfg['final_layer_type']!r} is not implemented (refused by Candle too)")


class DiT(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        check_dit_config(cfg)
        d, wn = cfg["hidden_dim"], cfg["wavenet_hidden_dim"]
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.in_channels = cfg["in_channels"]
        self.x_embedder = weight_norm(nn.Linear(cfg["in_channels"], d))  # stored, never used
        self.cond_embedder = nn.Embedding(cfg["content_codebook_size"], d)  # stored, never used
        self.cond_projection = nn.Linear(cfg["content_dim"], d)
        self.is_causal = cfg["is_causal"]
        self.t_embedder = TimestepEmbedder(d, cfg["freq_dim"])
        self.register_buffer("input_pos", torch.arange(INPUT_POS))  # block_size is ignored, as officially
        self.t_embedder2 = TimestepEmbedder(wn, cfg["freq_dim"])
        self.conv1 = nn.Linear(d, wn)
        self.conv2 = nn.Conv1d(wn, cfg["in_channels"], 1)
        self.wavenet = WN(wn, cfg["wavenet_kernel_size"], cfg["wavenet_dilation_rate"], cfg["wavenet_num_layers"], wn)
        self.final_layer = FinalLayer(wn, wn)
        self.res_projection = nn.Linear(d, wn)
        self.style_condition = cfg["style_condition"]
        self.content_mask_embedder = nn.Embedding(1, d)  # stored, never used
        self.long_skip_connection = cfg["long_skip_connection"]
        self.skip_linear = nn.Linear(d + cfg["in_channels"], d)  # stored even without the long skip
        self.cond_x_merge_linear = nn.Linear(d + 2 * cfg["in_channels"] + cfg["style_dim"] * self.style_condition, d)

    def forward(self, x, prompt_x, x_lens, t, style, cond, taps=None, prefix="estimator"):
        taps = taps or NoTaps()
        p = prefix
        b, _, T = x.shape
        t1 = taps.block(f"{p}.t_embedder", t, lambda t: self.t_embedder(t, taps, f"{p}.t_embedder"))
        cond = taps.block(f"{p}.cond_projection", cond, self.cond_projection)
        xt = x.transpose(1, 2)

        def merge(c):  # the official cat([x, prompt_x, cond(, style × T)]) along channels
            parts = [xt, prompt_x.transpose(1, 2), c]
            if self.style_condition:
                parts.append(style[:, None, :].repeat(1, T, 1))
            return torch.cat(parts, dim=-1)

        x_in = taps.block(f"{p}.x_in", cond, merge)
        x_in = taps.block(f"{p}.cond_x_merge_linear", x_in, self.cond_x_merge_linear)
        x_mask = sequence_mask(x_lens).unsqueeze(1)  # [B, 1, T]
        if self.is_causal:  # gpt_fast's causal_mask[None, None, input_pos][..., input_pos]; padding unmasked
            attn_mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))[None, None]
        else:
            attn_mask = x_mask[:, None, :].repeat(1, 1, T, 1)  # keys masked, every query row
        x_res = taps.block(f"{p}.transformer", x_in,
                           lambda h: self.transformer(h, t1[:, None], self.input_pos[:T], attn_mask, taps, f"{p}.transformer"))
        if self.long_skip_connection:
            x_res = taps.block(f"{p}.skip_linear", x_res, lambda r: self.skip_linear(torch.cat([r, xt], dim=-1)))
        h = taps.block(f"{p}.conv1", x_res, self.conv1).transpose(1, 2)
        t2 = taps.block(f"{p}.t_embedder2", t, lambda t: self.t_embedder2(t, taps, f"{p}.t_embedder2"))
        wmask = x_mask.to(h.dtype)
        w = taps.block(f"{p}.wavenet", h, lambda h: self.wavenet(h, wmask, t2[:, :, None], taps, f"{p}.wavenet")).transpose(1, 2)
        # the long residual `wavenet(...)ᵀ + res_projection(x_res)` belongs to the res_projection tap
        out = taps.block(f"{p}.res_projection", x_res, lambda r: w + self.res_projection(r))
        out = taps.block(f"{p}.final_layer", out, lambda o: self.final_layer(o, t1, taps, f"{p}.final_layer")).transpose(1, 2)
        return taps.block(f"{p}.conv2", out, self.conv2)


class CFM(nn.Module):
    """Conditional flow matching: Euler ODE solve with classifier-free guidance (`solve_euler`)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.estimator = DiT(cfg)
        self.cfg_rate = cfg["cfg_rate"]
        self.zero_prompt_speech_token = cfg["zero_prompt_speech_token"]

    def solve_euler(self, z, x_lens, prompt, mu, style, t_span, taps=None):
        """z: initial noise [B, C, T] (given, not drawn); returns (final x, per-step states).
        Taps per step k: `solve_euler.step.k.stacked_dphi_dt` (the estimator on [cond; uncond]),
        `solve_euler.step.k.dphi_dt` (CFG-combined velocity; without CFG the estimator itself),
        `solve_euler.step.k` (x + dt·v, prompt frames re-zeroed)."""
        taps = taps or NoTaps()
        x = z.clone()
        p = prompt.shape[-1]
        prompt_x = torch.zeros_like(x)
        prompt_x[..., :p] = prompt[..., :p]
        x[..., :p] = 0
        if self.zero_prompt_speech_token:
            mu = mu.clone()
            mu[..., :p] = 0  # official quirk: mu is [B, T, C], so this zeroes the first p CHANNELS
        r = self.cfg_rate
        t = t_span[0]
        states = []
        for step in range(1, len(t_span)):
            dt = t_span[step] - t_span[step - 1]
            name = f"solve_euler.step.{step - 1}"

            def euler(x, t=t, dt=dt, name=name):
                if r > 0:
                    def both(x):
                        return self.estimator(torch.cat([x, x]), torch.cat([prompt_x, torch.zeros_like(prompt_x)]), x_lens,
                                              torch.cat([t.reshape(1), t.reshape(1)]).expand(2 * x.shape[0]),
                                              torch.cat([style, torch.zeros_like(style)]), torch.cat([mu, torch.zeros_like(mu)]))
                    v = taps.block(f"{name}.stacked_dphi_dt", x, both)
                    v = taps.block(f"{name}.dphi_dt", v, lambda v: (1.0 + r) * v.chunk(2)[0] - r * v.chunk(2)[1])
                else:
                    v = taps.block(f"{name}.dphi_dt", x, lambda x: self.estimator(
                        x, prompt_x, x_lens, t.reshape(1).expand(x.shape[0]), style, mu))
                y = x + dt * v
                y[:, :, :p] = 0  # the prompt region is re-zeroed after every step
                return y

            x = taps.block(name, x, euler)
            t = t + dt
            states.append(x)
        return x, states


# --------------------------------------------------------------------------------------------
# Length regulator and gpt_layer.

def check_regulator_config(cfg: dict) -> None:
    for k in ("is_discrete", "vector_quantize"):
        if cfg[k]:
            raise NotImplementedError(f"{k}=True is not implemented (refused by Candle too)")
    if cfg["n_codebooks"] != 1:
        raise NotImplementedError("n_codebooks != 1 only matters for discrete input (refused by Candle too)")


class InterpolateRegulator(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        check_regulator_config(cfg)
        c = cfg["channels"]
        out = cfg["out_channels"] or c
        layers = []
        self.interpolate = len(cfg["sampling_ratios"]) > 0  # the ratios' values are never read
        for _ in cfg["sampling_ratios"]:
            layers += [nn.Conv1d(c, c, 3, 1, 1), nn.GroupNorm(cfg["groups"], c), nn.Mish()]
        layers.append(nn.Conv1d(c, out, 1, 1))
        self.model = nn.Sequential(*layers)
        self.embedding = nn.Embedding(cfg["codebook_size"], c)  # stored, never used
        self.mask_token = nn.Parameter(torch.zeros(1, c))  # stored, never used (continuous input)
        self.f0_condition = cfg["f0_condition"]
        if self.f0_condition:  # IndexTTS2 never passes f0: only f0_mask is added
            self.f0_embedding = nn.Embedding(cfg["n_f0_bins"], c)
            self.f0_mask = nn.Parameter(torch.zeros(1, c))
        self.content_in_proj = nn.Linear(cfg["in_channels"], c)

    def forward(self, x, ylens, taps=None, prefix="length_regulator"):
        """Taps: content_in_proj, interpolate (nearest to max(ylens)), f0_mask (f0_condition), model.i;
        the module itself (its output is masked past each length)."""
        taps = taps or NoTaps()
        return taps.block(prefix, x, lambda x: self._forward(x, ylens, taps, prefix))

    def _forward(self, x, ylens, taps, p):
        x = taps.block(f"{p}.content_in_proj", x, self.content_in_proj)
        mask = sequence_mask(ylens).unsqueeze(-1)
        if self.interpolate:
            x = taps.block(f"{p}.interpolate", x,
                           lambda x: F.interpolate(x.transpose(1, 2).contiguous(), size=int(ylens.max()), mode="nearest"))
        else:  # no resampling: the output keeps the input length, the mask is cut to it
            x = x.transpose(1, 2).contiguous()
            mask = mask[:, : x.size(2), :]
        if self.f0_condition:
            x = taps.block(f"{p}.f0_mask", x, lambda x: x + self.f0_mask.unsqueeze(-1))
        for i, m in enumerate(self.model):
            x = taps.block(f"{p}.model.{i}", x, m)
        return x.transpose(1, 2).contiguous() * mask


def make_latent_proj(cfg: dict) -> nn.Sequential:
    dims = [cfg["latent_dim"], *cfg["latent_hidden"], cfg["in_channels"]]
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])  # no activations


class RegulatorPair(nn.Module):
    """`net.length_regulator` + `net.gpt_layer` (the semantic-side pieces of s2mel)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.length_regulator = InterpolateRegulator(cfg)
        self.gpt_layer = make_latent_proj(cfg)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # Loaded from a complete s2mel.pth under prefix `net`, the file also holds `cfm.*` (the dit
        # kind's part); only that subtree is skipped, the rest stays strict.
        own = {k: v for k, v in state_dict.items() if not k.startswith("cfm.")}
        return super().load_state_dict(own, strict=strict, assign=assign)

    def latent_proj(self, latent, taps=None):
        taps = taps or NoTaps()
        for i, m in enumerate(self.gpt_layer):
            latent = taps.block(f"gpt_layer.{i}", latent, m)
        return latent


class S2Mel(nn.Module):
    """The whole `s2mel.pth`: `net = {cfm, length_regulator, gpt_layer}`."""

    def __init__(self, dit_cfg: dict, lr_cfg: dict):
        super().__init__()
        pair = RegulatorPair(lr_cfg)
        self.net = nn.ModuleDict({"cfm": CFM(dit_cfg), "length_regulator": pair.length_regulator,
                                  "gpt_layer": pair.gpt_layer})


def build_full_on_meta() -> S2Mel:
    with torch.device("meta"):
        return S2Mel(copy.deepcopy(FULL_DIT), copy.deepcopy(FULL_LR))


def official_classes():
    """(CFM, InterpolateRegulator) from the installed official index-tts snapshot (PyPI
    `tts-webui-index-tts==2.0.1`, --no-deps), for cross-checks of this reference; None if absent.
    Their modules import `munch` and the DAC package (-> audiotools) only for names the inference
    path never uses, so those imports get bare stand-ins for the duration of the import."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("indextts") is None:
        return None

    def stand_in(name, **attrs):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        m.__path__ = []
        m.__dict__.update(attrs)
        return m

    class Munch(dict):
        __getattr__ = dict.__getitem__

    added = {}
    if importlib.util.find_spec("munch") is None and "munch" not in sys.modules:
        added["munch"] = stand_in("munch", Munch=Munch)
    for name, attrs in [("indextts.s2mel.dac", {}), ("indextts.s2mel.dac.nn", {}),
                        ("indextts.s2mel.dac.nn.quantize", {"VectorQuantize": None})]:
        if name not in sys.modules:
            added[name] = stand_in(name, **attrs)
    sys.modules.update(added)
    try:
        from indextts.s2mel.modules.flow_matching import CFM as OfficialCFM
        from indextts.s2mel.modules.length_regulator import InterpolateRegulator as OfficialRegulator
    finally:
        for name in added:
            if name.startswith("indextts.s2mel.dac"):
                sys.modules.pop(name, None)
    return OfficialCFM, OfficialRegulator


def official_args(cfg: dict):
    """The attribute-style `args` (config.yaml s2mel section) the official CFM/DiT constructors read."""
    from types import SimpleNamespace as ns

    dit_keys = ("hidden_dim", "num_heads", "depth", "in_channels", "content_dim", "content_codebook_size",
                "content_type", "is_causal", "long_skip_connection", "zero_prompt_speech_token", "time_as_token",
                "style_as_token", "uvit_skip_connection", "style_condition", "final_layer_type",
                "class_dropout_prob", "block_size")
    return ns(reg_loss_type=cfg["reg_loss_type"], dit_type=cfg["dit_type"], style_encoder=ns(dim=cfg["style_dim"]),
              DiT=ns(**{k: cfg[k] for k in dit_keys}),
              wavenet=ns(hidden_dim=cfg["wavenet_hidden_dim"], num_layers=cfg["wavenet_num_layers"],
                         kernel_size=cfg["wavenet_kernel_size"], dilation_rate=cfg["wavenet_dilation_rate"],
                         p_dropout=cfg["wavenet_p_dropout"], style_condition=cfg["wavenet_style_condition"]))


def official_regulator_kwargs(cfg: dict) -> dict:
    """InterpolateRegulator's constructor arguments from our flat config."""
    keys = ("channels", "sampling_ratios", "is_discrete", "in_channels", "vector_quantize", "codebook_size",
            "out_channels", "groups", "n_codebooks", "quantizer_dropout", "f0_condition", "n_f0_bins")
    return {k: cfg[k] for k in keys}

# --------------------------------------------------------------------------------------------
# Registry rows. Both kinds read `s2mel.pth`; each synthetic fixture holds only its own part.

import json  # noqa: E402

import numpy as np  # noqa: E402


def _nest(prefixes: dict[str, str], state_dict: dict) -> dict:
    """{'net': {sub: sd}}: `prefixes` maps a module-key root to its entry under `net`."""
    net: dict = {}
    for k, v in state_dict.items():
        for root, sub in prefixes.items():
            if k.startswith(root):
                net.setdefault(sub, {})[k[len(root):]] = v
                break
        else:
            raise KeyError(f"state-dict key {k!r} has no place in s2mel.pth")
    return {"net": net}


def save_cfm(state_dict: dict, path: str) -> None:
    torch.save(_nest({"": "cfm"}, state_dict), path)


def save_regulator(state_dict: dict, path: str) -> None:
    torch.save(_nest({"length_regulator.": "length_regulator", "gpt_layer.": "gpt_layer"}, state_dict), path)


def build_cfm(cfg: dict) -> CFM:
    return CFM(cfg).eval()


def build_regulator(cfg: dict) -> RegulatorPair:
    return RegulatorPair(cfg).eval()


def _mel_like(rng, c: int, t: int) -> np.ndarray:
    """Log-mel-like values (≈ −11 … 2), smooth in time and frequency."""
    tt = np.linspace(0, 1, max(t, 1))[None, :t]
    bands = np.linspace(0, 1, c)[:, None]
    return (-5.0 + 3.0 * np.sin(2 * np.pi * (3 * tt + bands)) - 2.0 * bands + 0.3 * rng.standard_normal((c, t))).astype(np.float32)


def estimator_inputs(cfg: dict, seed: int, frames: int = 21, prompt: int = 6) -> dict[str, np.ndarray]:
    """Batch of 2 (as the CFG pass has), the second row shorter so the key/WaveNet masks matter."""
    rng = np.random.default_rng(seed)
    c = cfg["in_channels"]
    px = np.zeros((2, c, frames), np.float32)
    px[0, :, :prompt] = _mel_like(rng, c, prompt)
    return {
        "x": rng.standard_normal((2, c, frames)).astype(np.float32),
        "prompt_x": px,
        "x_lens": np.array([frames, frames - 3], np.int64),
        "t": np.array([0.28, 0.76], np.float32),
        "style": rng.standard_normal((2, cfg["style_dim"])).astype(np.float32),
        "cond": rng.standard_normal((2, frames, cfg["content_dim"])).astype(np.float32),
    }


def run_estimator(model: CFM, inputs: dict, taps) -> dict:
    i = inputs
    return {"velocity": model.estimator(i["x"], i["prompt_x"], i["x_lens"], i["t"], i["style"], i["cond"], taps=taps)}


def cfm_inputs(cfg: dict, seed: int, frames: int = 23, prompt: int = 7, steps: int = 25) -> dict[str, np.ndarray]:
    """One utterance, B=1 as infer_v2: noise z given, t_span = torch.linspace(0, 1, steps + 1)."""
    rng = np.random.default_rng(seed)
    c = cfg["in_channels"]
    return {
        "z": rng.standard_normal((1, c, frames)).astype(np.float32),
        "x_lens": np.array([frames], np.int64),
        "prompt": _mel_like(rng, c, prompt)[None],
        "mu": rng.standard_normal((1, frames, cfg["content_dim"])).astype(np.float32),
        "style": rng.standard_normal((1, cfg["style_dim"])).astype(np.float32),
        "t_span": torch.linspace(0, 1, steps + 1).numpy(),
    }


def run_cfm(model: CFM, inputs: dict, taps) -> dict:
    i = inputs
    final, states = model.solve_euler(i["z"], i["x_lens"], i["prompt"], i["mu"], i["style"], i["t_span"], taps=taps)
    return {"mel": final, **{f"x_step_{k}": s for k, s in enumerate(states)}}


def regulator_inputs(cfg: dict, seed: int, frames: int = 13, target: int = 22, batch: int = 1) -> dict[str, np.ndarray]:
    """Semantic features [B, T, in_channels] and target lengths; 13 → 22 is a non-integer ratio (≈1.72)."""
    rng = np.random.default_rng(seed)
    ylens = np.array([target - 5 * b for b in range(batch)], np.int64)
    return {"x": rng.standard_normal((batch, frames, cfg["in_channels"])).astype(np.float32), "ylens": ylens}


def run_regulator(model: RegulatorPair, inputs: dict, taps) -> dict:
    return {"out": model.length_regulator(inputs["x"], inputs["ylens"], taps=taps)}


def latent_inputs(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"latent": rng.standard_normal((2, 9, cfg["latent_dim"])).astype(np.float32)}


def run_latent(model: RegulatorPair, inputs: dict, taps) -> dict:
    return {"out": model.latent_proj(inputs["latent"], taps=taps)}


_OTHER_KIND = "read by the other s2mel kind (only present in a real, complete s2mel.pth)"
