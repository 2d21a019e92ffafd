"""The report's performance section, from benchmark JSON already written (nothing is timed here,
so the default report stays as fast as it was):

* `pytest --benchmark-only --benchmark-json=F` (pytest-benchmark's file: one Candle and one torch
  row per group; the ratio is of their means);
* `python -m parity.ab … --json F` (alternated rounds: the median per-round ratio);
* `python -m parity.loadbench … --json F` (load figures) and `--rss --json F` (peak RSS).

Writes `perf.png` (Candle ÷ PyTorch per stage, a bar each, the line at 1) and returns the JSON
entry and the markdown lines; CPU model and thread count come from the files and /proc/cpuinfo.
"""
from __future__ import annotations

import json
import os
import statistics
import platform


def cpu_model() -> str:
    """The CPU's name with its family, model and widest vector unit: a VM may name only the vendor
    line ("AMD EPYC"), and the ratios differ between its generations (AVX2 or AVX-512)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (x.strip() for x in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        pass
    if "model name" not in info:
        return platform.processor() or "unknown"
    flags = info.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else None)
    extra = [f"family {info['cpu family']} model {info['model']}"] if "cpu family" in info and "model" in info else []
    return info["model name"] + (f" ({', '.join(extra + ([isa] if isa else []))})" if extra or isa else "")


def _from_pytest_benchmark(d: dict) -> list[dict]:
    groups: dict = {}
    for b in d.get("benchmarks", []):
        # the side is one of the test's parameters (`[candle]`, `[greedy-candle]`, `[candle_mmap]`);
        # the others name the row within the group (`pipeline-rtf/greedy`)
        params = b["name"].split("[", 1)[1].rstrip("]").split("-") if "[" in b["name"] else []
        sides = [p for p in params if p.split("_")[0] in ("candle", "torch")]
        if len(sides) != 1:
            continue
        side = sides[0].split("_")[0]
        key = (b.get("group") or b["name"]) + "".join(f"/{p}" for p in params if p not in sides)
        g = groups.setdefault(key, {"stage": key, "source": "pytest-benchmark"})
        g[f"{side}_s"] = b["stats"]["mean"]
        info = b.get("extra_info") or {}
        g["threads"] = info.get("threads", g.get("threads"))
        if info.get("audio_s"):
            g["audio_s"] = info["audio_s"]
    out = []
    for g in groups.values():
        if "candle_s" in g and "torch_s" in g:
            g["ratio"] = g["candle_s"] / g["torch_s"]
            out.append(g)
    return out


def _from_ab(rows: list) -> list[dict]:
    return [{"stage": r["name"], "source": "parity.ab (alternated)", "candle_s": min(r["candle_s"]),
             "torch_s": min(r["torch_s"]), "ratio": r["ratio_median"], "rounds": len(r["ratios"]),
             "threads": r.get("threads"), **({"audio_s": r["candle_s"] and min(r["candle_s"]) / r["rtf_candle"]}
                                            if r.get("rtf_candle") else {})} for r in rows]


def load(paths: list[str]) -> dict:
    stages, loads, rss = [], [], []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        if isinstance(d, dict) and "benchmarks" in d:
            stages += _from_pytest_benchmark(d)
        elif isinstance(d, list) and d and "ratios" in d[0]:
            stages += _from_ab(d)
        elif isinstance(d, list) and d and "candle_over_official" in d[0]:
            loads += d
        elif isinstance(d, list) and d and "peak_rss_bytes" in d[0]:
            rss += d
        else:
            raise ValueError(f"{p}: not a pytest-benchmark, parity.ab or parity.loadbench JSON file")
    for s in stages:
        if s.get("audio_s"):
            s["rtf_candle"] = s["candle_s"] / s["audio_s"]
            s["rtf_torch"] = s["torch_s"] / s["audio_s"]
    threads = sorted({s["threads"] for s in stages + loads if s.get("threads")})
    return {"cpu": cpu_model(), "threads": threads, "stages": stages, "load": loads, "peak_rss": rss}


def _plot(stages: list[dict], path: str, cpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(stages) + 2), 4))
    r = [s["ratio"] for s in stages]
    ax.bar(range(len(r)), r, color=["tab:green" if v <= 1 else "tab:red" for v in r])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(r)), [s["stage"] for s in stages], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("Candle ÷ PyTorch time (lower is better)")
    ax.set_title(f"CPU fp32, official size — {cpu}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def section(out: str, paths: list[str]) -> tuple[dict, list[str]]:
    d = load(paths)
    md = ["## Performance (CPU, float32, official size)", "",
          f"CPU: `{d['cpu']}`; threads: {d['threads'] or 'n/a'}; from {', '.join(f'`{os.path.basename(p)}`' for p in paths)}", ""]
    if d["stages"]:
        _plot(d["stages"], os.path.join(out, "perf.png"), d["cpu"])
        md += ["| stage | Candle s | PyTorch s | Candle ÷ PyTorch | RTF Candle | RTF PyTorch | source |", "|---|---|---|---|---|---|---|"]
        for s in d["stages"]:
            rtf = (f"{s['rtf_candle']:.3f} | {s['rtf_torch']:.3f}" if "rtf_candle" in s else "- | -")
            md.append(f"| {s['stage']} | {s['candle_s']:.3f} | {s['torch_s']:.3f} | {s['ratio']:.2f} | {rtf} | {s['source']} |")
        md += ["", "Times: the mean of the rounds (pytest-benchmark), or the best round with the median of the "
               "per-round ratios (parity.ab, the sides alternating call by call).", "",
               "![Candle ÷ PyTorch per stage](perf.png)", ""]
    if d["load"]:
        md += ["Load to ready (median of alternated rounds):", "",
               "| model | checkpoint GB | Candle s | official s | memcpy floor s | into fresh memory s | Candle ÷ official "
               "| Candle ÷ floor | Candle ÷ fresh floor |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in d["load"]:
            c, o = statistics.median(r["candle_s"]), statistics.median(r["official_s"])
            fresh = (f"{r['fresh_floor_s']:.3f} ({r['memcpy_fresh_gbps']:.1f} GB/s)", f"{r['candle_over_fresh_floor']:.1f}") \
                if "fresh_floor_s" in r else ("-", "-")  # JSON of an older run
            md.append(f"| {r['name']} | {r['checkpoint_bytes'] / 1e9:.2f} | {c:.2f} | {o:.2f} | {r['floor_s']:.3f} "
                      f"({r['memcpy_gbps']:.1f} GB/s) | {fresh[0]} | {r['candle_over_official']:.2f} "
                      f"| {r['candle_over_floor']:.1f} | {fresh[1]} |")
        md.append("")
        first = [r for r in d["load"] if "candle_first_s" in r]
        if first:
            md += ["First load in a fresh process (`--first`; median; every page of new memory faulted in):", "",
                   "| model | Candle s | official s | Candle ÷ official | Candle ÷ fresh floor |", "|---|---|---|---|---|"]
            for r in first:
                c, o = statistics.median(r["candle_first_s"]), statistics.median(r["official_first_s"])
                md.append(f"| {r['name']} | {c:.3f} | {o:.3f} | {c / o:.2f} | {c / r['fresh_floor_s']:.1f} |")
            md.append("")
    if d["peak_rss"]:
        md += ["Peak RSS of a Candle-only process (load + one forward):", "",
               "| model | peak RSS GB | interpreter baseline GB | weights GB | ratio | ratio above baseline |", "|---|---|---|---|---|---|"]
        md += [f"| {r['name']} | {r['peak_rss_bytes'] / 1e9:.2f} | {r.get('baseline_rss_bytes', float('nan')) / 1e9:.2f} | "
               f"{r['weights_bytes'] / 1e9:.2f} | {r['peak_rss_bytes'] / r['weights_bytes']:.2f} | "
               f"{r.get('ratio_above_baseline', float('nan')):.2f} |" for r in d["peak_rss"]]
        md.append("")
    return d, md
