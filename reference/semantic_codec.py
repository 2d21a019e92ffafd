"""Reference RepCodec semantic codec (MaskGCT `repcodec_model.py` as vendored by IndexTTS2).

Module tree = the official one, so `state_dict()` keys equal `semantic_codec/model.safetensors`:
`encoder` = Sequential(VocosBackbone, Linear), `decoder` = the same (stored, never used by IndexTTS2),
`quantizer.quantizers.0` = FactorizedVectorQuantize with weight-normed 1×1 in/out projections.
`quantize(x[B,T,hidden])` → codes [B,T] and emb [B,T,hidden]: the code is the argmax cosine
similarity (search on L2-normalised vectors), the embedding projects the RAW codebook row.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

from .common import NoTaps, Taps

FULL = {  # config.yaml semantic_codec (num_quantizers 1, downsample_scale 1 by default)
    "codebook_size": 8192,
    "hidden_size": 1024,
    "codebook_dim": 8,
    "vocos_dim": 384,
    "vocos_intermediate_dim": 2048,
    "vocos_num_layers": 12,
}
TINY = {"codebook_size": 64, "hidden_size": 32, "codebook_dim": 8, "vocos_dim": 16,
        "vocos_intermediate_dim": 40, "vocos_num_layers": 3}


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, inter: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, inter)
        self.act = nn.GELU()  # exact (erf) GELU
        self.pwconv2 = nn.Linear(inter, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x, taps: Taps | None = None, name: str = ""):  # [B, C, T] -> [B, C, T]
        """Every sub-module is a leaf tap; the layer-scale product is `<block>.gamma` and the
        residual add lies in the block's own tap (`<block>`), after all of them."""
        taps = taps or NoTaps()
        h = taps.block(f"{name}.dwconv", x, self.dwconv)
        h = taps.block(f"{name}.norm", h.transpose(1, 2), self.norm)
        h = taps.block(f"{name}.pwconv1", h, self.pwconv1)
        h = taps.block(f"{name}.act", h, self.act)
        h = taps.block(f"{name}.pwconv2", h, self.pwconv2)
        h = taps.block(f"{name}.gamma", h, lambda v: self.gamma * v)
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, cin: int, dim: int, inter: int, layers: int):
        super().__init__()
        self.embed = nn.Conv1d(cin, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList([ConvNeXtBlock(dim, inter, 1.0 / layers) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, taps: Taps, prefix: str):  # [B, Cin, T] -> [B, T, dim]
        x = taps.block(f"{prefix}.embed", x, self.embed)
        x = taps.block(f"{prefix}.norm", x, lambda v: self.norm(v.transpose(1, 2)).transpose(1, 2))
        for i, blk in enumerate(self.convnext):
            name = f"{prefix}.convnext.{i}"
            x = taps.block(name, x, lambda v, blk=blk, name=name: blk(v, taps, name))
        return taps.block(f"{prefix}.final_layer_norm", x, lambda v: self.final_layer_norm(v.transpose(1, 2)))


class FactorizedVectorQuantize(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_project = weight_norm(nn.Conv1d(input_dim, codebook_dim, kernel_size=1))
        self.out_project = weight_norm(nn.Conv1d(codebook_dim, input_dim, kernel_size=1))
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def search(self, z_e):  # [B, d, T] -> codes [B, T]
        b = z_e.shape[0]
        enc = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        cb = F.normalize(self.codebook.weight)
        # Same expression as the official squared distance (on unit vectors = cosine distance).
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1].reshape(b, -1)

    def vq2emb(self, codes):  # [B, T] -> [B, hidden, T]; raw (unnormalised) codebook rows
        return self.out_project(F.embedding(codes, self.codebook.weight).transpose(1, 2))


class ResidualVQ(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, n: int = 1):
        super().__init__()
        self.quantizers = nn.ModuleList([FactorizedVectorQuantize(input_dim, codebook_size, codebook_dim) for _ in range(n)])


# Official RepCodec constructor defaults (repcodec_model.py); IndexTTS2's config.yaml sets the first six.
DEFAULTS = {"codebook_size": 8192, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 384,
            "vocos_intermediate_dim": 2048, "vocos_num_layers": 12, "num_quantizers": 1, "downsample_scale": 1}


class RepCodec(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        cfg = {**DEFAULTS, **cfg}
        h, d = cfg["hidden_size"], cfg["vocos_dim"]
        inter, n = cfg["vocos_intermediate_dim"], cfg["vocos_num_layers"]
        if cfg["codebook_dim"] == h:
            raise ValueError("codebook_dim == hidden_size: the official quantizer uses identity projections there; not reproduced")
        self.downsample_scale = cfg["downsample_scale"]
        if self.downsample_scale is not None and self.downsample_scale > 1:
            # As the official class: stride 2 whatever the value (> 1); `up` is used only by forward().
            self.down = nn.Conv1d(h, h, kernel_size=3, stride=2, padding=1)
            self.up = nn.Conv1d(h, h, kernel_size=3, stride=1, padding=1)
        self.encoder = nn.Sequential(VocosBackbone(h, d, inter, n), nn.Linear(d, h))
        self.decoder = nn.Sequential(VocosBackbone(h, d, inter, n), nn.Linear(d, h))
        self.quantizer = ResidualVQ(h, cfg["codebook_size"], cfg["codebook_dim"], cfg["num_quantizers"])

    def quantize(self, x: torch.Tensor, taps: Taps | None = None):
        """x [B, T, hidden] → (codes [B, T] int64 (num_quantizers 1) or [N, B, T], emb [B, T', hidden];
        T' = ⌈T/2⌉ with downsampling). The official `quantize`: optional down conv + exact GELU, the
        encoder, then the residual quantizer loop (each stage quantizes what the earlier left)."""
        taps = taps or NoTaps()
        if self.downsample_scale is not None and self.downsample_scale > 1:
            x = taps.block("down", x.transpose(1, 2), self.down)
            x = taps.block("gelu", x, F.gelu).transpose(1, 2)
        y = self.encoder[0](x.transpose(1, 2), taps, "encoder.0")
        y = taps.block("encoder.1", y, self.encoder[1])
        all_codes = []

        def residual_vq(z):  # [B, T, hidden]; the official loop runs on [B, hidden, T] (same values)
            quantized_out, residual = 0.0, z
            for i, q in enumerate(self.quantizer.quantizers):
                p = f"quantizer.quantizers.{i}"
                z_e = taps.block(f"{p}.in_project", residual, lambda v, q=q: q.in_project(v.transpose(1, 2)))
                codes = taps.block(f"{p}.codebook", z_e, q.search)
                # Official straight-through form z_e + (z_q − z_e): same value, same rounding as upstream.
                z_q = taps.block(f"{p}.out_project", codes, lambda c, q=q, z_e=z_e: q.out_project(
                    z_e + (q.codebook(c).transpose(1, 2) - z_e)).transpose(1, 2))
                quantized_out = quantized_out + z_q
                residual = residual - z_q
                all_codes.append(codes)
            return quantized_out

        emb = taps.block("quantizer", y, residual_vq)
        codes = all_codes[0] if len(all_codes) == 1 else torch.stack(all_codes)
        return codes, emb

    def vq2emb(self, codes: torch.Tensor, taps: Taps | None = None):
        """`quantizer.vq2emb`: codes [B, T] (num_quantizers 1: quantizer 0, as infer_v2 calls it) or
        [N, B, T] (Σ over the quantizers) → [B, hidden, T]; raw codebook rows."""
        taps = taps or NoTaps()
        qs = self.quantizer.quantizers
        if len(qs) == 1:
            return taps.block("quantizer.quantizers.0.out_project", codes, qs[0].vq2emb)

        def total(c):
            out = 0.0
            for i, q in enumerate(qs):
                out = out + taps.block(f"quantizer.quantizers.{i}.out_project", c[i], q.vq2emb)
            return out

        return taps.block("quantizer", codes, total)


def build(cfg: dict) -> RepCodec:
    return RepCodec(cfg).eval()


def save_official(state_dict: dict, path: str) -> None:
    """The official file is already a flat safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, path)


def config_json(cfg: dict) -> str:
    return json.dumps({**DEFAULTS, **cfg})


def make_features(cfg: dict, seed: int, frames: int = 37) -> dict[str, np.ndarray]:
    """Normalised w2v-BERT-like features: zero mean, unit variance, smooth in time."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, frames + 4, cfg["hidden_size"]))
    x = (x[:, :-4] + x[:, 1:-3] + x[:, 2:-2] + x[:, 3:-1] + x[:, 4:]) / np.sqrt(5.0)
    return {"x": x.astype(np.float32)}


def make_codes(cfg: dict, seed: int, frames: int = 29) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = cfg.get("num_quantizers", 1)
    shape = (1, frames) if n == 1 else (n, 1, frames)
    return {"codes": rng.integers(0, cfg["codebook_size"], shape).astype(np.int64)}


def run_quantize(model: RepCodec, inputs: dict, taps: Taps) -> dict:
    codes, emb = model.quantize(inputs["x"], taps)
    return {"codes": codes, "emb": emb}


def run_vq2emb(model: RepCodec, inputs: dict, taps: Taps) -> dict:
    # infer_v2: quantizer.vq2emb(codes.unsqueeze(1)) → vq[0] → [B, hidden, T]
    return {"emb": model.vq2emb(inputs["codes"], taps)}


def _codebook(key, rng, shape):
    # Rows of different lengths, so a search on unnormalised vectors picks different codes.
    return rng.standard_normal(shape) * rng.uniform(0.2, 3.0, (shape[0], 1))
