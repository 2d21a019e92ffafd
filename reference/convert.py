"""Converter: official `.pth` / `.pt` / `.bin` → safetensors, keeping the official key names.

One nesting rule, the same for every file, read off the official loaders:
  1. `torch.load(..., weights_only=True)`: a checkpoint can never run code.
  2. The entry the official loader reads is selected: `net` (s2mel.pth, `load_checkpoint2` reads
     `state['net']`; the `net.` prefix is kept), `generator` (BigVGAN reads
     `checkpoint['generator']`), `model` (gpt.pth, `load_checkpoint` reads `checkpoint['model']`
     when present); a lone `state_dict` entry is unwrapped too. Entries beside the selected one
     (optimizer, scheduler, ema, epoch, iters, …) are ignored, as the official loader ignores
     them, and reported.
  3. Nested dicts are flattened by joining keys with '.', so s2mel's
     `{'net': {'cfm': {'estimator.x…': t}}}` becomes `net.cfm.estimator.x…`.
  4. A leading `module.` (DataParallel / DDP) is stripped from every key at every nesting level,
     as `load_checkpoint2` strips it from each sub-dict of `net`.
  5. Non-tensor leaves (config strings, counters) are reported and skipped; a bare tensor file
     (feat1.pt) is stored under the key `tensor`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
from typing import Any

import torch
from safetensors.torch import save_file

class ConversionError(ValueError):
    """The source file cannot be converted; the message says why and names the file."""


def _one_line(e: BaseException) -> str:
    """torch's weights-only refusal is several paragraphs; keep its reason, on one line."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed") and "\n\n" in text:
        text = text.split("\n\n", 1)[1]  # the first paragraph is torch's advice to trust the file
    text = text.split("Check the documentation", 1)[0]
    return " ".join(text.split())


def load_official(path: str) -> Any:
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory; name the checkpoint file inside it")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise ConversionError(f"{path}: cannot be read (permission denied)")
    if path.endswith(".safetensors"):  # already tensors only (w2v-bert, MaskGCT codec): no pickle
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file: {type(e).__name__}: {_one_line(e)}") from e
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: refused to unpickle (weights_only=True allows tensors and plain "
                              f"containers only; this file would run code or holds foreign objects): {_one_line(e)}") from e
    except Exception as e:  # truncated zip, not a torch file, …
        raise ConversionError(f"{path}: not a readable torch checkpoint: {type(e).__name__}: {_one_line(e)}") from e


# The entry each official loader reads, and whether its name stays in the keys.
LOADER_ENTRIES = {"net": True, "generator": False, "model": False}
LONE_WRAPPERS = ("state_dict",)  # unwrapped only when it is the only entry
DDP = "module."


def select_entry(obj: dict) -> tuple[dict, str, list[str]]:
    """Rule 2: (the dict the official loader reads, the key prefix it keeps, ignored entries)."""
    for name, keep in LOADER_ENTRIES.items():
        if isinstance(obj.get(name), dict):
            return obj[name], f"{name}." if keep else "", [str(k) for k in obj if k != name]
    if len(obj) == 1 and next(iter(obj)) in LONE_WRAPPERS and isinstance(next(iter(obj.values())), dict):
        return next(iter(obj.values())), "", []
    return obj, "", []


def flatten(obj: Any, source: str = "") -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Applies rules 2-5; returns (tensors, skipped non-tensor leaf keys, ignored top-level entries)."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}, [], []
    if not isinstance(obj, dict):
        raise ConversionError(f"{source}: top level is {type(obj).__name__}, expected a state dict")
    obj, root, ignored = select_entry(obj)
    out: dict[str, torch.Tensor] = {}
    skipped: list[str] = []

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            k = str(k)
            key = prefix + (k[len(DDP):] if k.startswith(DDP) else k)
            if isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, torch.Tensor):
                if key in out:
                    raise ConversionError(f"{source}: key `{key}` appears twice after flattening "
                                          f"(and stripping `{DDP}`)")
                out[key] = v
            else:
                skipped.append(key)

    walk(obj, root)
    if not out:
        raise ConversionError(f"{source}: holds no tensors")
    return out, skipped, ignored


def convert(src: str, dst: str, progress: bool | None = None) -> dict[str, Any]:
    tensors, skipped, ignored = flatten(load_official(src), src)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    show = progress if progress is not None else (total > 100 * 2**20 and sys.stderr.isatty())
    items = tensors.items()
    if show:
        from tqdm import tqdm

        items = tqdm(items, total=len(tensors), desc=f"convert {os.path.basename(src)}", unit="tensor")
    # safetensors refuses aliased storage: give each tensor its own contiguous copy.
    plain = {k: v.detach().contiguous().clone() for k, v in items}
    tmp = dst + ".partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        save_file(plain, tmp, metadata={"source": os.path.basename(src), "converter": "indextts2-parity convert v1"})
        os.replace(tmp, dst)  # never leave a half-written file under the final name
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ConversionError(f"{dst}: cannot write the output: {e.strerror or e}") from e
    return {"tensors": len(plain), "bytes": total, "skipped": skipped, "ignored": ignored}


CONVERTED_DIR = "candle"  # DIR/candle/: what `indextts-convert DIR` writes and the Rust CLI reads
PIPELINE_FILE, PIPELINE_CONFIG = "pipeline.safetensors", "pipeline.json"


def convert_dir(directory: str, progress: bool | None = None) -> dict[str, Any]:
    """An official IndexTTS-2 model directory → `DIR/candle/pipeline.safetensors` (every model under
    its pipeline prefix, official key names) + `DIR/candle/pipeline.json` (the Candle
    `PipelineConfig`, from config.yaml and the external models' config files; `bpe_model` is left
    null: the reader takes `dataset.bpe_model` from config.yaml)."""
    import json

    from . import official_config as OC

    if not os.path.isdir(directory):
        raise ConversionError(f"{directory}: not a directory")
    try:
        cfg = OC.read_config_yaml(directory)
        need = OC.files(directory, cfg)
        missing = [f for f in need.values() if not os.path.isfile(os.path.join(directory, f))]
        if missing:  # every one at once, before anything is read
            raise ConversionError(f"{directory}: {len(missing)} file(s) of the official layout are missing: "
                                  f"{', '.join(missing)}")
        configs = OC.pipeline_configs(directory)
    except OC.OfficialConfigError as e:
        raise ConversionError(str(e)) from e
    parts = [("w2v_bert.", need["w2v_bert"]), ("w2v_bert.semantic_stats.", need["w2v_stat"]),
             ("semantic_codec.", need["semantic_codec"]), ("campplus.", need["campplus"]), ("gpt.", need["gpt"]),
             ("s2mel.", need["s2mel"]), ("bigvgan.", need["bigvgan"]),
             ("emotion.spk_matrix", need["spk_matrix"]), ("emotion.emo_matrix", need["emo_matrix"])]
    tensors: dict[str, torch.Tensor] = {}
    report: dict[str, list[str]] = {}
    for prefix, rel in parts:
        sd, skipped, ignored = flatten(load_official(os.path.join(directory, rel)), rel)
        if skipped or ignored:
            report[rel] = skipped + ignored
        for k, v in sd.items():
            key = prefix if k == "tensor" else prefix + k  # a bare tensor file is stored under its prefix
            tensors[key] = v
    out = os.path.join(directory, CONVERTED_DIR)
    info = _save(tensors, os.path.join(out, PIPELINE_FILE), f"{os.path.basename(os.path.abspath(directory))}/",
                 progress)
    tmp = os.path.join(out, PIPELINE_CONFIG + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(OC.rust_config(configs), f, indent=1)
    os.replace(tmp, os.path.join(out, PIPELINE_CONFIG))
    return {**info, "skipped": [f"{r}: {v}" for r, v in report.items()], "ignored": [], "out": out}


def _save(tensors: dict, dst: str, source: str, progress: bool | None) -> dict[str, Any]:
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    show = progress if progress is not None else (total > 100 * 2**20 and sys.stderr.isatty())
    items = tensors.items()
    if show:
        from tqdm import tqdm

        items = tqdm(items, total=len(tensors), desc=f"convert {source}", unit="tensor")
    plain = {k: v.detach().contiguous().clone() for k, v in items}
    tmp = dst + ".partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        save_file(plain, tmp, metadata={"source": source, "converter": "indextts2-parity convert v1"})
        os.replace(tmp, dst)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ConversionError(f"{dst}: cannot write the output: {e.strerror or e}") from e
    return {"tensors": len(plain), "bytes": total}


USAGE = ("usage: indextts-convert [--no-progress] SRC DST | DIR  (SRC: official .pth/.pt/.bin/.safetensors, DST: "
         ".safetensors; DIR: an official IndexTTS-2 model directory, written to DIR/candle/)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one paragraph and exit 2, like every other user error here
        raise ConversionError(f"{message}\n{USAGE}")


def main(argv: list[str] | None = None) -> int:
    """The `indextts-convert` command. Every user error (bad arguments, missing or unreadable source,
    unwritable destination) prints one paragraph to stderr and returns 2, with no traceback."""
    ap = _Parser(prog="indextts-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="official checkpoint (.pth/.pt/.bin, or .safetensors)")
    ap.add_argument("dst", nargs="?", help="output .safetensors (omit when SRC is a model directory)")
    ap.add_argument("--no-progress", action="store_true")
    try:
        a = ap.parse_args(argv)
        if a.dst is None:
            if not os.path.isdir(a.src):
                raise ConversionError(f"{a.src}: not a model directory; give SRC and DST to convert one file\n{USAGE}")
            info = convert_dir(a.src, progress=False if a.no_progress else None)
            print(f"wrote {info['out']}/{PIPELINE_FILE} ({info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB) "
                  f"and {info['out']}/{PIPELINE_CONFIG}"
                  + (f"; skipped entries beside the weights: {info['skipped']}" if info["skipped"] else ""))
            return 0
        if os.path.abspath(a.src) == os.path.abspath(a.dst):
            raise ConversionError(f"{a.dst}: the output would overwrite the source; name another file")
        info = convert(a.src, a.dst, progress=False if a.no_progress else None)
    except ConversionError as e:
        print(f"indextts-convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.dst}: {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB"
          + (f"; ignored entries beside the weights (the official loader ignores them too): {info['ignored']}"
             if info["ignored"] else "")
          + (f"; skipped non-tensor entries: {info['skipped']}" if info["skipped"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
