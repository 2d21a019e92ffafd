"""Pieces of the one-slot GPU run (scripts/cuda-parity.sh), rehearsed on CPU with the same commands.

    python -m parity.gpu_run env OUT.json [--device cuda]      what the machine and the wheels are
    python -m parity.gpu_run determinism OUT.json [--device cuda] [--dtype float32]
    python -m parity.gpu_run summary OUTDIR                    summary.json + summary.md of a run

`determinism` runs every case of the GPT, DiT and BigVGAN (tiny, seed 0) twice on the same Candle
model and reports, per case, the largest difference between the two runs over every tap and output:
0 means bit-identical. Candle's CUDA reductions may use atomics (order-dependent float sums); this is
the measurement of whether they do here, not an assumption.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET

import numpy as np

MODELS = ("gpt", "dit", "bigvgan")


def env(out: str, device: str) -> int:
    import torch

    import indextts_candle

    info = {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available_torch": torch.cuda.is_available(),
        "cuda_available_candle": bool(indextts_candle.cuda_available()), "extension": indextts_candle.__file__,
        "device_requested": device,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for mod in ("transformers", "tokenizers", "sentencepiece", "numpy", "safetensors", "torchaudio", "hypothesis",
                "pytest", "pytest_benchmark"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - recorded, judged below
            info[mod] = f"missing: {type(e).__name__}"
    with open(out, "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))
    if device == "cuda" and not (info["cuda_available_torch"] and info["cuda_available_candle"]):
        print("CUDA is not usable by both torch and the extension: stop here", file=sys.stderr)
        return 1
    bad = [m for m in ("transformers", "sentencepiece") if str(info[m]).startswith("missing")]
    if bad or info["transformers"] != "4.52.1":
        print(f"reference packages not at our pins: {bad or info['transformers']}", file=sys.stderr)
        return 1
    return 0


def determinism(out: str, device: str, dtype: str) -> int:
    from . import candle
    from .fixtures import get
    from .registry import MODELS as ROWS

    rows = []
    for name in MODELS:
        spec = ROWS[name]
        fx = get(spec, "tiny")
        cm = fx.candle(device, None, dtype)
        for case in spec.cases:
            inputs = case.make_inputs(fx.cfg, 0)
            runs = [candle.run(cm, case.method, inputs, taps=True) for _ in range(2)]
            worst, where = 0.0, ""
            for part in (0, 1):  # outputs, taps
                for k, a in runs[0][part].items():
                    b = runs[1][part][k]
                    d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
                    if d > worst:
                        worst, where = d, k
            rows.append({"model": name, "case": case.name, "max_abs_between_runs": worst, "at": where,
                         "bit_identical": worst == 0.0})
            print(f"{name:<8} {case.name:<28} max|run1 − run2| {worst:.3e} {where}")
    with open(out, "w") as f:
        json.dump({"device": device, "dtype": dtype, "cases": rows}, f, indent=1)
    return 0


def _junit(path: str) -> dict:
    if not os.path.exists(path):
        return {"missing": True}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    tot["failed_ids"] = failed[:50]
    return tot


def summary(outdir: str) -> int:
    res: dict = {"steps": {}}
    steps_file = os.path.join(outdir, "steps.tsv")
    if os.path.exists(steps_file):
        for line in open(steps_file):
            name, rc, secs = line.rstrip("\n").split("\t")
            res["steps"][name] = {"rc": int(rc), "seconds": float(secs)}
    for j in sorted(glob.glob(os.path.join(outdir, "junit-*.xml"))):
        res[os.path.basename(j)[6:-4]] = _junit(j)
    # a pytest step killed at its time limit writes no JUnit file: count its -v lines in run.log
    log = os.path.join(outdir, "run.log")
    if os.path.exists(log):
        step = None
        counts: dict = {}
        for line in open(log, errors="replace"):
            if line.startswith("=== "):
                step = line[4:].split(" ")[0].rstrip(":")
                continue
            for word in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
                if step and f" {word}" in line and "::" in line:
                    counts.setdefault(step, {}).setdefault(word.lower(), 0)
                    counts[step][word.lower()] += 1
        for step, c in counts.items():
            if step not in res:
                res[step] = {"from_log": True, **c}
    for name in ("env", "survey", "determinism"):
        p = os.path.join(outdir, f"{name}.json")
        if os.path.exists(p):
            res[name] = json.load(open(p))
    bp = os.path.join(outdir, "bench.json")
    if os.path.exists(bp):
        b = json.load(open(bp))
        res["bench"] = [{"name": x["name"], "group": x.get("group"), "mean_s": x["stats"]["mean"],
                         "extra": x.get("extra_info", {})} for x in b.get("benchmarks", [])]
    res["ok"] = bool(res["steps"]) and all(s["rc"] == 0 for s in res["steps"].values())
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = ["# CUDA parity run" if res.get("env", {}).get("device_requested") == "cuda" else "# parity run (CPU rehearsal)", ""]
    e = res.get("env", {})
    md.append(f"torch {e.get('torch')} (CUDA {e.get('torch_cuda')}), GPU {e.get('gpu', '-')}, transformers "
              f"{e.get('transformers')}, extension {e.get('extension')}")
    md += ["", "| step | rc | seconds |", "|---|---|---|"]
    md += [f"| {k} | {v['rc']} | {v['seconds']:.0f} |" for k, v in res["steps"].items()]
    for k, v in res.items():
        if isinstance(v, dict) and v.get("from_log"):
            md.append(f"\n**{k}** (no JUnit file: killed at its limit; counted from run.log): "
                      + ", ".join(f"{n} {w}" for w, n in v.items() if w != "from_log"))
        if isinstance(v, dict) and "tests" in v:
            md.append(f"\n**{k}**: {v['passed']} passed, {v['failures'] + v['errors']} failed, {v['skipped']} skipped"
                      + ("".join(f"\n- FAILED {i}" for i in v["failed_ids"])))
    if "survey" in res:
        s = res["survey"]
        md += ["", f"## noise ratios ({s['device']}, {s['dtype']}, tiny, seeds {s['seeds']})", "",
               "| model | case | walk | seed | ratio max | at | ratio rms | at |", "|---|---|---|---|---|---|---|---|"]
        for r in s["runs"]:
            if "error" in r:
                md.append(f"| {r['model']} | {r['case']} | {r['mode']} | {r['seed']} | ERROR {r['error'][:80]} | | | |")
            else:
                md.append(f"| {r['model']} | {r['case']} | {r['mode']} | {r['seed']} | {r['ratio_max']:.2f} | {r['at_max']} "
                          f"| {r['ratio_rms']:.2f} | {r['at_rms']} |")
        md.append(f"\nworst: max {s['worst_max'][0]:.3f} ({s['worst_max'][1]}), rms {s['worst_rms'][0]:.3f} ({s['worst_rms'][1]})")
    if "determinism" in res:
        md += ["", f"## determinism (two Candle runs, {res['determinism']['device']})", "", "| model | case | max abs difference | at |",
               "|---|---|---|---|"]
        md += [f"| {r['model']} | {r['case']} | {r['max_abs_between_runs']:.3e} | {r['at']} |" for r in res["determinism"]["cases"]]
    if "bench" in res:
        md += ["", "## benchmarks (official size)", "", "| group | name | mean s | device | dtype |", "|---|---|---|---|---|"]
        md += [f"| {b['group']} | {b['name']} | {b['mean_s']:.4f} | {b['extra'].get('device')} | {b['extra'].get('dtype')} |"
               for b in res["bench"]]
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if res["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parity.gpu_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("out")
    e.add_argument("--device", default="cpu")
    d = sub.add_parser("determinism")
    d.add_argument("out")
    d.add_argument("--device", default="cpu")
    d.add_argument("--dtype", default="float32")
    s = sub.add_parser("summary")
    s.add_argument("outdir")
    a = ap.parse_args(argv)
    if a.cmd == "env":
        return env(a.out, a.device)
    if a.cmd == "determinism":
        return determinism(a.out, a.device, a.dtype)
    return summary(a.outdir)


if __name__ == "__main__":
    raise SystemExit(main())
