"""Converter: official `.pth` / `.pt` / `.bin` → safetensors, keeping the official key names.

One nesting rule, the same for every file:
  1. `torch.load(..., weights_only=True)`: a checkpoint can never run code.
  2. If the top level is a dict whose only entry is a known wrapper (`generator` — BigVGAN,
     `model` / `state_dict` — gpt.pth may be saved that way), that entry is unwrapped.
  3. Nested dicts are flattened by joining keys with '.', so s2mel's
     `{'net': {'cfm': {'estimator.x…': t}}}` becomes `net.cfm.estimator.x…`.
  4. A leading `module.` (DataParallel) is stripped from each key, as the official loaders do.
  5. Non-tensor leaves (epoch counters, config strings) are reported and skipped; a bare tensor
     file (feat1.pt) is stored under the key `tensor`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Any

import torch
from safetensors.torch import save_file

WRAPPERS = ("generator", "model", "state_dict")


class ConversionError(ValueError):
    """The source file cannot be converted; the message says why and names the file."""


def load_official(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if path.endswith(".safetensors"):  # already tensors only (w2v-bert, MaskGCT codec): no pickle
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file: {type(e).__name__}: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConversionError(f"{path}: refused to unpickle (weights_only=True allows tensors and plain "
                              f"containers only; this file would run code or holds foreign objects): {e}") from e
    except Exception as e:  # truncated zip, not a torch file, …
        raise ConversionError(f"{path}: not a readable torch checkpoint: {type(e).__name__}: {e}") from e


def flatten(obj: Any, source: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Applies rules 2–5; returns (tensors, skipped leaf keys)."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}, []
    if not isinstance(obj, dict):
        raise ConversionError(f"{source}: top level is {type(obj).__name__}, expected a state dict")
    if len(obj) == 1 and next(iter(obj)) in WRAPPERS and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))
    out: dict[str, torch.Tensor] = {}
    skipped: list[str] = []

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, torch.Tensor):
                key = key[len("module."):] if key.startswith("module.") else key
                if key in out:
                    raise ConversionError(f"{source}: key `{key}` appears twice after flattening")
                out[key] = v
            else:
                skipped.append(key)

    walk(obj, "")
    if not out:
        raise ConversionError(f"{source}: holds no tensors")
    return out, skipped


def convert(src: str, dst: str, progress: bool | None = None) -> dict[str, Any]:
    tensors, skipped = flatten(load_official(src), src)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    show = progress if progress is not None else (total > 100 * 2**20 and sys.stderr.isatty())
    items = tensors.items()
    if show:
        from tqdm import tqdm

        items = tqdm(items, total=len(tensors), desc=f"convert {os.path.basename(src)}", unit="tensor")
    # safetensors refuses aliased storage: give each tensor its own contiguous copy.
    plain = {k: v.detach().contiguous().clone() for k, v in items}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".partial"
    save_file(plain, tmp, metadata={"source": os.path.basename(src), "converter": "indextts2-parity convert v1"})
    os.replace(tmp, dst)  # never leave a half-written file under the final name
    return {"tensors": len(plain), "bytes": total, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="indextts-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="official checkpoint (.pth/.pt/.bin)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        info = convert(a.src, a.dst, progress=False if a.no_progress else None)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.dst}: {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB"
          + (f"; skipped non-tensor entries: {info['skipped']}" if info["skipped"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
