"""The 8-weight emotion vector (infer_v2 `emo_vector` branch) and the other loose pipeline files.

`feat1.pt` = speaker prototypes [Σemo_num, style_dim], `feat2.pt` = emotion prototypes
[Σemo_num, model_dim] (bare tensors), split per emotion by `emo_num`. For group i the row is the
argmax of cosine(style, feat1ᵢ); emovec = Σ wᵢ·feat2ᵢ[rowᵢ] + (1 − Σw)·emovec. With an emotion
vector, emo_alpha clamped to [0, 1] scales the weights, truncated to 4 decimals.

`wav2vec2bert_stats.pt` = {'mean': [1024], 'var': [1024]} for the w2v-bert read-out.
Converted keys: `spk_matrix`, `emo_matrix` (emotion), `semantic_stats.{mean,var}` (stats).
"""
from __future__ import annotations

import json

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn

from reference.common import synthetic_init

EMO_NUM = [3, 17, 2, 8, 4, 5, 10, 24]  # happy, angry, sad, afraid, disgusted, melancholic, surprised, calm
FILES = {"spk_matrix": "feat1.pt", "emo_matrix": "feat2.pt"}
STATS_FILE = "wav2vec2bert_stats.pt"


def config(style_dim: int, model_dim: int) -> dict:
    return {"emo_num": list(EMO_NUM), "style_dim": style_dim, "model_dim": model_dim}


class EmotionMatrices(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.emo_num = list(cfg["emo_num"])
        n = sum(self.emo_num)
        self.spk_matrix = nn.Parameter(torch.zeros(n, cfg["style_dim"]))
        self.emo_matrix = nn.Parameter(torch.zeros(n, cfg["model_dim"]))

    def rows(self, style: torch.Tensor) -> torch.Tensor:
        """Per emotion group, the prototype most cosine-similar to `style` [1, S] (first on ties).
        infer_v2 casts both to float32 (`.float()`); a float64 run (the parity truth) stays float64."""
        dt = torch.float64 if style.dtype == torch.float64 else torch.float32
        return torch.stack([torch.argmax(F.cosine_similarity(style.to(dt), m.to(dt), dim=1))
                            for m in torch.split(self.spk_matrix, self.emo_num)])

    def mix(self, style, emovec, weights):
        rows = self.rows(style)
        picked = torch.cat([m[r].unsqueeze(0) for r, m in zip(rows, torch.split(self.emo_matrix, self.emo_num))], 0)
        mixed = torch.sum(weights.unsqueeze(1) * picked, 0).unsqueeze(0)
        return mixed + (1 - torch.sum(weights)) * emovec, rows


def scale_weights(weights, emo_alpha: float) -> list[float]:
    s = max(0.0, min(1.0, float(emo_alpha)))
    w = [float(x) for x in weights]
    return w if s == 1.0 else [int(x * s * 10000) / 10000 for x in w]


def build(cfg: dict) -> EmotionMatrices:
    return EmotionMatrices(cfg).eval()


def synthetic(cfg: dict, seed: int = 7) -> EmotionMatrices:
    """Prototype rows at the scale of the vectors they stand for (style ~ O(1), emovec ~ O(0.5))."""
    m = build(cfg)
    # rows of unequal length (as real prototypes): the cosine argmax then differs from the raw
    # dot product's, so choosing rows by the wrong one cannot go unnoticed at any width
    synthetic_init(m, seed, {"spk_matrix": lambda k, rng, s: rng.standard_normal(s) * np.exp(rng.normal(0, 1, (s[0], 1))),
                             "emo_matrix": lambda k, rng, s: 0.5 * rng.standard_normal(s)})
    return m


def save_official(m: EmotionMatrices, directory: str) -> dict[str, str]:
    """The two bare-tensor files, as the official checkpoint directory holds them."""
    import os

    out = {}
    for key, name in FILES.items():
        out[key] = os.path.join(directory, name)
        torch.save(getattr(m, key).detach().clone(), out[key])
    return out


def config_json(cfg: dict) -> str:
    return json.dumps(cfg)


# ---- wav2vec2bert_stats.pt ------------------------------------------------------------------------
def synthetic_stats(dim: int) -> dict[str, torch.Tensor]:
    """Deterministic and deliberately not the identity (var ≠ 1), so "var used as std" shows."""
    from reference.w2v_bert import SemanticStats

    s = SemanticStats(dim)
    return {"mean": s.mean.clone(), "var": s.var.clone()}
