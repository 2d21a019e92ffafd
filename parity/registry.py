"""The model registry: one row per model. Tests, the report and the benchmarks iterate over it."""
from __future__ import annotations

from .rows import bigvgan, campplus, gpt, resample, s2mel, semantic_codec, w2v_bert

from .spec import ModelSpec

MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    bigvgan.SPEC,
    semantic_codec.SPEC,
    campplus.SPEC,
    s2mel.DIT_SPEC,
    s2mel.LENGTH_REGULATOR_SPEC,
    gpt.SPEC,
    w2v_bert.SPEC,
    resample.SPEC,
]}
