"""Checkpoints for the parity runs, always in the official file format.

* synthetic: the reference model at a config ("tiny" for the fast tier, "full" = official size),
  filled by `synthetic_init` (deterministic per key), written with the official container
  (`{'generator': …}`, nested s2mel, flat gpt.pth …), then converted like a real file;
* real: the user's official files (`--checkpoints DIR`), converted once into a cache.
Both sides then load the SAME converted file: Candle through its strict store, the reference
through `load_state_dict(strict=True)`.
"""
from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file

from reference.common import synthetic_init
from reference.convert import convert

from .spec import ModelSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir() -> str:
    return os.environ.get("INDEXTTS_FIXTURE_CACHE", os.path.join(ROOT, ".fixture_cache"))


# Bytes of reference modules one official-size fixture keeps: its float64 truth and float32 noise
# run then stay built together for BigVGAN, DiT, the codec, CAMPPlus and the regulator (a walk
# needs both; rebuilding each per walk was most of BigVGAN's hypothesis test, 470 s), while the
# GPT and w2v-bert hold one module at a time.
REF_BUDGET = 4e9


def _nbytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])


@dataclass
class Fixture:
    spec: ModelSpec
    size: str  # "tiny" | "full" | "real"
    cfg: dict
    official_path: str
    safetensors_path: str
    _refs: dict = field(default_factory=dict)

    def reference(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """The reference model with exactly the converted file's weights (strict load), in `dtype`
        (float64: the noise-floor truth; parameters and buffers are cast after the load)."""
        key = (device, dtype)
        if key not in self._refs:
            if self.size != "tiny":  # official size: within REF_BUDGET (w2v-bert float64 alone: 4.8 GB)
                need = os.path.getsize(self.safetensors_path) * torch.finfo(dtype).bits / 32
                while self._refs and sum(_nbytes(m) for m in self._refs.values()) + need > REF_BUDGET:
                    self._refs.pop(next(iter(self._refs)))
                import gc

                gc.collect()
            sd = load_file(self.safetensors_path)
            pre = self.spec.prefix + "." if self.spec.prefix else ""
            own = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)
                   and not any(fnmatch.fnmatchcase(k, p) for p in self.spec.other_kinds_keys)}
            # building draws the modules' random init from torch's global generator: fork it, so
            # that a lazy build inside a seeded run (torch.manual_seed) does not move its stream
            with torch.random.fork_rng(devices=[]):
                m = self.spec.build_reference(self.cfg)
            m.load_state_dict(own, strict=True)
            del sd, own  # official size: the file's tensors must not outlive the load (GPT: 3.5 GB)
            self._refs[key] = m.to(device=device, dtype=dtype).eval()
        return self._refs[key]

    def drop_references(self) -> None:
        """Frees the cached reference modules (official size: several GB in float64)."""
        self._refs.clear()

    def candle(self, device: str = "cpu", faults: list[str] | None = None, dtype: str = "float32"):
        """The Candle model in `dtype` (float weights converted at load, by name: never implicit)."""
        from .candle import Model

        return Model(self.spec.name, self.safetensors_path, self.spec.config_json(self.cfg), device,
                     faults or [], self.spec.prefix, dtype)


def _stamp(spec: ModelSpec, cfg: dict) -> str:
    """Changes whenever the config, seed or the code that makes the weights changes."""
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    h.update(str(spec.seed).encode())
    h.update(inspect.getsource(inspect.getmodule(spec.build_reference)).encode())
    h.update(inspect.getsource(synthetic_init).encode())
    return h.hexdigest()[:12]


def synthetic(spec: ModelSpec, size: str, cfg: dict | None = None) -> Fixture:
    """`cfg` (optional): a config other than the row's own (the config-space rows); it is cached
    under its own stamp like the others."""
    cfg = spec.configs[size] if cfg is None else cfg
    d = os.path.join(cache_dir(), spec.name, f"{size}-{_stamp(spec, cfg)}")
    official = os.path.join(d, spec.official_file)
    st = os.path.join(d, "converted.safetensors")
    if spec.weightless:  # an empty store: the Candle side must not read anything
        official = st
        if not os.path.exists(st):
            os.makedirs(d, exist_ok=True)
            tmp = st + f".{os.getpid()}.tmp.safetensors"
            save_file({}, tmp)
            os.replace(tmp, st)
    if not os.path.exists(st):
        os.makedirs(os.path.dirname(official), exist_ok=True)
        model = spec.build_reference(cfg)
        ov = spec.init_overrides(cfg) if callable(spec.init_overrides) else spec.init_overrides
        synthetic_init(model, spec.seed, ov)
        tmp = official + f".{os.getpid()}.tmp"
        spec.save_official(model.state_dict(), tmp)
        os.replace(tmp, official)
        convert(official, st + f".{os.getpid()}.tmp.safetensors", progress=False)
        os.replace(st + f".{os.getpid()}.tmp.safetensors", st)  # atomic: safe across xdist workers
    return Fixture(spec, size, cfg, official, st)


class MissingCheckpoints(FileNotFoundError):
    pass


def official_layout() -> str:
    """Where --checkpoints DIR expects each file: the IndexTTS-2 checkpoint directory plus one
    sub-directory per external model, named after its Hugging Face repository."""
    from .registry import MODELS

    return "\n".join(f"  {s.official_file:<55} ({s.name})" for s in MODELS.values() if s.official_file)


def real(spec: ModelSpec, directory: str, size: str = "full") -> Fixture:
    """The official file under `directory`; `size` picks the config ("full" = official; "tiny" only
    for a tiny synthetic official directory, parity/official_dir.py)."""
    official = os.path.join(directory, spec.official_file)
    if not os.path.isfile(official):
        raise MissingCheckpoints(f"--checkpoints {directory}: `{spec.official_file}` (for {spec.name}) is missing. "
                                 f"Expected layout:\n{official_layout()}")
    st_stat = os.stat(official)
    d = os.path.join(cache_dir(), "real", spec.name)
    st = os.path.join(d, f"{size}-{st_stat.st_size}-{st_stat.st_mtime_ns}.safetensors")
    if not os.path.exists(st):
        os.makedirs(d, exist_ok=True)
        if official.endswith(".safetensors"):
            os.link(official, st) if os.stat(official).st_dev == os.stat(d).st_dev else __import__("shutil").copy(official, st)
        else:
            convert(official, st)
    return Fixture(spec, "real", spec.configs[size], official, st)


def get(spec: ModelSpec, size: str, checkpoints: str | None = None) -> Fixture:
    return real(spec, checkpoints) if checkpoints and not spec.weightless else synthetic(spec, size)
