"""Load-to-ready and peak memory at official size, three load figures from ONE run:

* Candle: `Model(...)` construction (mmap the converted safetensors, copy/convert every tensor,
  the finiteness scan, the model's load-time transforms);
* official: what infer_v2 does per model: build the modules, `torch.load` the official file
  (`weights_only=True`), `load_state_dict(strict=True)` (BigVGAN: `remove_weight_norm()`), `.eval()`;
* floor: the checkpoint's bytes ÷ this machine's memcpy bandwidth, measured in the same run, into
  touched memory and into fresh memory (the kernel zeroes each new page on first touch, which a
  load into new buffers cannot avoid).

The sides alternate round by round (a shared machine's load hits both). In one process a load
reuses memory the previous one freed, so `--first N` also times N first loads, each side in a
fresh process (the page cache warm): the figure of a program that loads once, where every page
of new memory is faulted in. `--rss` instead runs one
Candle-only child process per model (load + one forward at the benchmark's input) and reports its
peak RSS (VmHWM) against the weights' bytes; `--rss pipeline` is one whole Candle-only synthesis
(every official-size model, one segment) with its load time and RTF.

    python -m parity.loadbench gpt bigvgan dit --rounds 3 [--first 3] [--json F]
    python -m parity.loadbench --rss gpt bigvgan dit pipeline
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CONTAINERS = {"bigvgan": "generator", "gpt": None, "dit": None}


def memcpy_gbps(nbytes: int = 1 << 30, reps: int = 3, fresh: bool = False) -> float:
    """Best of `reps` copies of a `nbytes` buffer, GB/s: into a buffer touched first, or (`fresh`)
    into newly allocated, never-touched memory, which is what a load into new buffers pays (the
    kernel zeroes each page on its first touch; 1 GB is its own mmap, returned on `del`)."""
    a = np.ones(nbytes // 8)
    b = None
    if not fresh:
        b = np.empty_like(a)
        b[:] = 0.0  # touched: its pages exist before the timed copies
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst = np.empty_like(a) if fresh else b
        np.copyto(dst, a)
        best = min(best, time.perf_counter() - t0)
        del dst
    return nbytes / best / 1e9


def _flatten(d: dict, pre: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{pre}{k}."))
        else:
            out[f"{pre}{k}"] = v
    return out


def official_load(spec, fx):
    """The official load path on the official-format file."""
    import fnmatch

    import torch

    t0 = time.perf_counter()
    m = spec.build_reference(fx.cfg)
    ck = torch.load(fx.official_path, map_location="cpu", weights_only=True)
    if CONTAINERS.get(spec.name):
        ck = ck[CONTAINERS[spec.name]]
    sd = _flatten(ck)
    pre = spec.prefix + "." if spec.prefix else ""
    own = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)
           and not any(fnmatch.fnmatchcase(k, p) for p in spec.other_kinds_keys)}
    m.load_state_dict(own, strict=True)
    if spec.name == "bigvgan":
        m.remove_weight_norm()  # infer_v2 folds the vocoder's weight norm after loading
    m.eval()
    dt = time.perf_counter() - t0
    del m, ck, sd, own
    return dt


def candle_load(fx):
    t0 = time.perf_counter()
    m = fx.candle("cpu")
    dt = time.perf_counter() - t0
    del m
    return dt


def _first_child(side: str, name: str) -> None:
    """One fresh process, one load (`side` candle or official), after reading both files once."""
    from parity import fixtures
    from parity.registry import MODELS

    spec = MODELS[name]
    fx = fixtures.get(spec, "full", None)
    for p in (fx.safetensors_path, fx.official_path):
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    print(json.dumps(candle_load(fx) if side == "candle" else official_load(spec, fx)))


def _child(*args: str):
    """This module run as a child process; the JSON of its last output line."""
    out = subprocess.run([sys.executable, "-m", "parity.loadbench", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_loads(name: str, rounds: int) -> tuple[list, list]:
    """`rounds` first loads per side, each in its own process, the sides alternating."""
    cs, os_ = [], []
    for _ in range(rounds):
        cs.append(_child("--first-child", "candle", name)), os_.append(_child("--first-child", "official", name))
    return cs, os_


def load_figures(name: str, rounds: int, first: int = 0) -> dict:
    import torch

    from parity import fixtures
    from parity.registry import MODELS

    spec = MODELS[name]
    fx = fixtures.get(spec, "full", None)
    nbytes = os.path.getsize(fx.safetensors_path)
    candle_load(fx), official_load(spec, fx)  # page cache warm for both files
    cs, os_ = [], []
    for i in range(rounds):
        if i % 2 == 0:
            cs.append(candle_load(fx)), os_.append(official_load(spec, fx))
        else:
            os_.append(official_load(spec, fx)), cs.append(candle_load(fx))
    bw, fresh = memcpy_gbps(), memcpy_gbps(fresh=True)
    floor, fresh_floor = nbytes / (bw * 1e9), nbytes / (fresh * 1e9)
    c, o = statistics.median(cs), statistics.median(os_)
    extra = {}
    if first:
        fc, fo = first_loads(name, first)
        extra = {"candle_first_s": fc, "official_first_s": fo,
                 "first_candle_over_official": statistics.median(fc) / statistics.median(fo),
                 "first_candle_over_fresh_floor": statistics.median(fc) / fresh_floor}
    return {**extra, "name": name, "checkpoint_bytes": nbytes, "candle_s": cs, "official_s": os_, "memcpy_gbps": bw,
            "floor_s": floor, "memcpy_fresh_gbps": fresh, "fresh_floor_s": fresh_floor,
            "candle_over_official": c / o, "candle_over_floor": c / floor, "candle_over_fresh_floor": c / fresh_floor,
            "threads": torch.get_num_threads()}


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def _read_bytes(path: str, keys) -> int:
    """Bytes of `keys` as stored in the safetensors file (what the model reads of it)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sum(header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in keys)


def _rss_pipeline() -> None:
    """One Candle-only synthesis at official size: the Rust pipeline from its one file, one segment
    of the pipeline benchmark (greedy codes), peak RSS and RTF."""
    import time

    from parity import candle
    from parity import pipeline as PP
    from reference import pipeline as P

    fxs = PP.fixtures("full")
    path, _ = PP.rust_files(fxs)
    inputs = PP.synth_inputs(P.make_inputs(P.CONFIGS["full"], 0))
    base = _vm("VmRSS")  # python, torch, numpy and the extension: not the pipeline's
    t0 = time.perf_counter()
    m = PP.rust_pipeline(fxs, "cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    wav = candle.run(m, "synthesize", inputs)[0]["wav.wav"]
    synth_s = time.perf_counter() - t0
    audio_s = wav.size / 22050
    print(json.dumps({"name": "pipeline", "peak_rss_bytes": _vm("VmHWM"), "baseline_rss_bytes": base,
                      "weights_bytes": _read_bytes(path, m.requested_keys()), "file_bytes": os.path.getsize(path),
                      "load_s": load_s, "synth_s": synth_s, "audio_s": audio_s, "rtf": synth_s / audio_s}))


def _rss_child(name: str) -> None:
    """One Candle-only process: load, one forward at the benchmark input, peak RSS."""
    if name == "pipeline":
        return _rss_pipeline()
    from parity import ab

    setup = ab.BENCHES[{"dit": "dit_estimator", "gpt": "gpt_forward_latent", "w2v_bert": "w2v_bert_17"}.get(name, name)]
    from parity import fixtures
    from parity.registry import MODELS

    fx = fixtures.get(MODELS[name], "full", None)
    with open("/proc/self/status") as f:  # python, torch, numpy and the extension: not the model's
        base = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    c, _, _ = setup(candle_only=True)
    c()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(json.dumps({"name": name, "peak_rss_bytes": hwm, "baseline_rss_bytes": base,
                      "weights_bytes": os.path.getsize(fx.safetensors_path)}))


def rss_figures(name: str) -> dict:
    r = _child("--rss-child", name)
    r["ratio"] = r["peak_rss_bytes"] / r["weights_bytes"]
    r["ratio_above_baseline"] = (r["peak_rss_bytes"] - r["baseline_rss_bytes"]) / r["weights_bytes"]
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rss", action="store_true")
    p.add_argument("--first", type=int, default=0, metavar="N",
                   help="also N first loads per side, each in a fresh process")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first-child", help=argparse.SUPPRESS)
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.first_child:
        _first_child(a.first_child, a.models[0])
        return 0
    if a.rss_child:
        _rss_child(a.models[0])
        return 0
    res = []
    for n in a.models:
        if a.rss:
            r = rss_figures(n)
            print(f"{n:<16} peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB, weights {r['weights_bytes'] / 1e9:.2f} GB, "
                  f"ratio {r['ratio']:.2f}; above the interpreter's {r['baseline_rss_bytes'] / 1e9:.2f} GB: "
                  f"{r['ratio_above_baseline']:.2f}" + (f"; load {r['load_s']:.1f} s, synthesis {r['synth_s']:.1f} s "
                  f"for {r['audio_s']:.2f} s of audio, RTF {r['rtf']:.2f}" if "rtf" in r else ""), flush=True)
        else:
            if n not in CONTAINERS:
                raise SystemExit(f"load figures: {n} has no official .pth load path here (known: {sorted(CONTAINERS)})")
            r = load_figures(n, a.rounds, a.first)
            if a.first:
                print(f"{n:<16} first load in a fresh process: candle "
                      f"{' '.join(f'{x:.3f}' for x in r['candle_first_s'])} s | official "
                      f"{' '.join(f'{x:.3f}' for x in r['official_first_s'])} s | candle/official "
                      f"{r['first_candle_over_official']:.2f}, candle/fresh floor "
                      f"{r['first_candle_over_fresh_floor']:.2f}", flush=True)
            print(f"{n:<16} candle {' '.join(f'{x:.3f}' for x in r['candle_s'])} s | official "
                  f"{' '.join(f'{x:.3f}' for x in r['official_s'])} s | floor {r['floor_s']:.3f} s "
                  f"({r['checkpoint_bytes'] / 1e9:.2f} GB at {r['memcpy_gbps']:.1f} GB/s), into fresh memory "
                  f"{r['fresh_floor_s']:.3f} s ({r['memcpy_fresh_gbps']:.1f} GB/s) | candle/official "
                  f"{r['candle_over_official']:.2f}, candle/floor {r['candle_over_floor']:.2f}, "
                  f"candle/fresh floor {r['candle_over_fresh_floor']:.2f}", flush=True)
        res.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
