"""A complete synthetic IndexTTS-2 checkpoint directory in the official layout.

What `--checkpoints DIR` expects, made from the synthetic fixtures: the IndexTTS-2 files
(`gpt.pth`, `s2mel.pth` with both s2mel kinds nested under `net`, `wav2vec2bert_stats.pt`,
`feat1.pt`, `feat2.pt`, `bpe.model`) plus one sub-directory
per external model. At "tiny" size it lets CI run the real-file path (discovery, conversion,
caching, the missing-file message) in seconds; `python -m parity official-dir DIR --size full`
writes an official-size directory.
"""
from __future__ import annotations

import os
import shutil

import torch

from reference.convert import load_official

from . import pipeline as PP
from .registry import MODELS


def _place(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def write(directory: str, size: str = "tiny") -> list[str]:
    """Writes every file; returns their paths relative to `directory`."""
    fxs = PP.fixtures(size)
    written: list[str] = []
    s2mel: dict = {}
    for k in PP.MODEL_KINDS:
        spec, path = MODELS[k], fxs[k].official_path
        if spec.official_file == "s2mel.pth":  # both s2mel kinds share the one nested file
            for part, sd in load_official(path)["net"].items():
                s2mel.setdefault(part, sd)
            continue
        _place(path, os.path.join(directory, spec.official_file))
        written.append(spec.official_file)
    torch.save({"net": s2mel}, os.path.join(directory, "s2mel.pth"))
    written.append("s2mel.pth")
    loose = os.path.dirname(fxs["emotion"].official_path)
    for f in PP.LOOSE_FILES:
        src = PP.bpe_model() if f == "bpe.model" else os.path.join(loose, f)
        _place(src, os.path.join(directory, f))
        written.append(f)
    return sorted(written)
