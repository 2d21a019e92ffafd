"""The main job: parity run + report.

    python -m parity report --out report/            # embedded tiny fixtures, CPU
    python -m parity report --checkpoints DIR        # the user's official files
Writes report/summary.md and summary.json (per-tap table: every model, case and walk mode; the
pipeline's per-stage table), errors.png (max|Δ| per tap in forward order), pipeline_mels.png
(reference vs Candle vs difference spectrograms), the vocoder's and the pipeline's wavs.
Exit code 0 only if every tap of every model is within tolerance and coverage is exact — so CI can
gate on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import wave

import numpy as np


def _write_wav(path: str, wav: np.ndarray, sr: int) -> None:
    pcm = (np.clip(np.asarray(wav, np.float64).ravel(), -1, 1) * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def _plot(walks, path: str) -> None:
    """One panel per model: the noise ratio max|candle − ref64| / max|ref32 − ref64| per tap in forward
    order (chained solid, injected dashed), with the threshold K_MAX as a red line."""
    from .tolerances import K_MAX

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(w.model for w in walks))
    cols = 2
    rows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows), squeeze=False)
    for ax, model in zip(axes.ravel(), models):
        for w in (w for w in walks if w.model == model):
            ys = [r.ratio_max if np.isfinite(r.ratio_max) else (r.atol_needed if np.isfinite(r.atol_needed) else 1.0)
                  for r in w.rows]
            ys = [max(y, 1e-3) for y in ys]
            ax.semilogy(range(len(ys)), ys, "-" if w.mode == "chained" else "--", marker=".", ms=3,
                        label=f"{w.case} ({w.mode})")
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("tap index (forward order)", fontsize=8)
        ax.axhline(K_MAX, color="red", lw=0.8)
        ax.set_ylabel("noise ratio (max)", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")
    for ax in axes.ravel()[len(models):]:
        ax.axis("off")
    fig.suptitle("Candle vs PyTorch float64, in units of PyTorch float32's own error, per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rule_text(r) -> str:
    if r.tol is None:
        return "-"
    if r.tol.kind == "noise":
        return f"k {r.tol.k_max:g}/{r.tol.k_rms:g}"
    return "exact" if r.tol.atol == 0 and r.tol.rtol == 0 else f"fixed {r.tol.atol:.0e}/{r.tol.rtol:.0e}: {r.tol.note}"


def _fault_sensitivity(fx, spec, device: str):
    """Each fault switched on: the injected walk's first divergent tap and how far past the threshold
    it stands there (the sensitivity margin; tests/test_models.py asserts ≥ FAULT_MARGIN)."""
    from .compare import fault_margin_ok
    from .runner import layer_walk
    from .tolerances import FAULT_MARGIN

    rows, failed = [], []
    md = [f"#### {spec.name}: fault sensitivity (injected walk; margin = max(ratio max / k max, ratio rms / k rms), "
          f"must be ≥ {FAULT_MARGIN:g})", "",
          "| fault | expected leaf | first divergent tap | ratio max | ratio rms | margin | ok |", "|---|---|---|---|---|---|---|"]
    for fault, (case_name, tap) in spec.faults.items():
        if why := spec.fault_absent(fault, fx.cfg):
            md.append(f"| `{fault}` | `{tap}` | – | – | – | – | n/a: {why} |")
            continue
        case = next(c for c in spec.cases if c.name == case_name)
        w = layer_walk(fx, fx.candle(device, [fault]), case, "injected", device)
        r = w.row_of(tap)
        ok = w.first_failure == tap and r is not None and fault_margin_ok(r)
        row = {"fault": fault, "case": case_name, "expected_tap": tap, "first_failure": w.first_failure,
               "ratio_max": None if r is None else r.ratio_max, "ratio_rms": None if r is None else r.ratio_rms,
               "margin": None if r is None else r.margin, "max_abs": None if r is None else r.max_abs, "ok": ok}
        rows.append(row)
        md.append(f"| `{fault}` | `{tap}` | `{w.first_failure}` | {row['ratio_max'] or float('nan'):.1f} | "
                  f"{row['ratio_rms'] or float('nan'):.1f} | {row['margin'] or float('nan'):.1f} | {'✓' if ok else '✗'} |")
        if not ok:
            failed.append(f"{spec.name}: fault `{fault}` not named at `{tap}` with margin (got `{w.first_failure}`)")
    return rows, md + [""], failed


def survey(models: list[str] | None, size: str, seeds: list[int], device: str, dtype: str = "float32",
           json_out: str | None = None) -> int:
    """The measurement behind K_MAX / K_RMS (and, with `dtype`, behind NOISE_HALF): every case, seed
    and walk on correct code, both sides in `dtype`; prints the worst noise ratios per (model, case,
    walk) and overall."""
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.nn.utils.weight_norm. is deprecated", category=FutureWarning)
    from .fixtures import get
    from .registry import MODELS
    from .runner import layer_walk

    worst_max, worst_rms, failed, records = (0.0, ""), (0.0, ""), [], []
    for name in models or list(MODELS):
        spec = MODELS[name]
        fx = get(spec, size, None)
        cm = fx.candle(device, None, dtype)
        for case in spec.cases:
            for mode in ("chained", "injected"):
                for seed in seeds:
                    where = f"{name}/{case.name}/{mode}/seed {seed}"
                    try:
                        w = layer_walk(fx, cm, case, mode, device, seed=seed, dtype=dtype)
                    except Exception as e:  # noqa: BLE001 - a survey reports every case
                        print(f"{where:<58} ERROR {type(e).__name__}: {str(e)[:300]}")
                        failed.append(f"{where}: {type(e).__name__}")
                        records.append({"model": name, "case": case.name, "mode": mode, "seed": seed,
                                        "error": f"{type(e).__name__}: {str(e)[:300]}"})
                        continue
                    rows = [r for r in w.rows if r.tol is not None and r.tol.kind == "noise"]
                    if not rows:
                        continue
                    m = max(rows, key=lambda r: r.ratio_max)
                    q = max(rows, key=lambda r: r.ratio_rms)
                    records.append({"model": name, "case": case.name, "mode": mode, "seed": seed, "ok": w.ok,
                                    "first_failure": w.first_failure, "ratio_max": m.ratio_max, "at_max": m.name,
                                    "ratio_rms": q.ratio_rms, "at_rms": q.name, "max_abs": m.max_abs,
                                    "noise_max": m.noise_max})
                    print(f"{where:<58} max {m.ratio_max:6.2f} at {m.name:<50} rms {q.ratio_rms:5.2f} at {q.name}"
                          + ("" if w.ok else f"   FAIL at {w.first_failure}"))
                    if m.ratio_max > worst_max[0]:
                        worst_max = (m.ratio_max, f"{where} {m.name}")
                    if q.ratio_rms > worst_rms[0]:
                        worst_rms = (q.ratio_rms, f"{where} {q.name}")
                    if not w.ok:
                        failed.append(f"{where}: {w.first_failure}")
        fx.drop_references()
    print(f"worst max-ratio {worst_max[0]:.3f} ({worst_max[1]}); worst rms-ratio {worst_rms[0]:.3f} ({worst_rms[1]})")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"device": device, "dtype": dtype, "size": size, "seeds": seeds, "failed": failed,
                       "worst_max": list(worst_max), "worst_rms": list(worst_rms), "runs": records}, f, indent=1)
    return 1 if failed else 0


def report(out: str, models: list[str] | None, size: str, checkpoints: str | None, device: str,
           perf: list[str] | None = None) -> int:
    import warnings

    import torch

    import indextts_candle

    # The official classes use the old weight_norm on purpose (it yields the weight_g/_v keys).
    warnings.filterwarnings("ignore", message=".*torch.nn.utils.weight_norm. is deprecated", category=FutureWarning)

    from . import candle
    from .audio import audio_metrics
    from .coverage import coverage
    from .fixtures import get
    from .registry import MODELS
    from .runner import layer_walk, run_reference

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    names = models or [*MODELS, "pipeline"]
    with_pipeline = "pipeline" in names
    names = [n for n in names if n != "pipeline"]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise UserError(f"unknown models {unknown}; known: {[*MODELS, 'pipeline']}")
    if checkpoints:
        _check_checkpoints(checkpoints, names, with_pipeline)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the report directory: {e.strerror or e}") from None
    result = {"environment": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                              "platform": platform.platform(), "device": device, "size": "real" if checkpoints else size,
                              "candle_cuda": indextts_candle.cuda_available()},
              "models": {}}
    walks, md, failed = [], ["# IndexTTS2 Candle ↔ PyTorch parity report", ""], []
    md += [f"- {k}: `{v}`" for k, v in result["environment"].items()] + [""]
    for name in names:
        spec = MODELS[name]
        fx = get(spec, size, checkpoints)
        cm = fx.candle(device)
        cov = coverage(spec, cm)
        entry = {"coverage": {"ok": cov.ok, "file_keys": len(cov.file_keys), "read": len(cov.requested),
                              "allowed_unused": cov.allowed_unused, "problems": cov.problems}, "walks": []}
        md += [f"## {name}", "", f"Coverage: {'OK' if cov.ok else 'FAIL'} — {cov.summary()}", ""]
        if not cov.ok:
            failed.append(f"{name}: coverage")
        for case in spec.cases:
            for mode in ("chained", "injected"):
                w = layer_walk(fx, cm, case, mode, device)
                walks.append(w)
                entry["walks"].append({"case": case.name, "mode": mode, "ok": w.ok, "first_failure": w.first_failure,
                                       "missing": w.missing, "extra": w.extra, "rows": [r.row() for r in w.rows]})
                md += [f"### {case.name} — {mode}: {'OK' if w.ok else 'FAIL at `' + str(w.first_failure) + '`'}", "",
                       "| tap | shape | ratio max | ratio rms | max abs Δ | at | rms Δ | ref32 noise max | ref32 noise rms | rule | ok |",
                       "|---|---|---|---|---|---|---|---|---|---|---|"]
                for r in w.rows:
                    md.append(f"| `{r.name}` | {list(r.shape)} | {r.ratio_max:.2f} | {r.ratio_rms:.2f} | {r.max_abs:.3e} | "
                              f"{list(r.argmax)} | {r.err_rms:.2e} | {r.noise_max:.2e} | {r.noise_rms:.2e} | "
                              f"{_rule_text(r)} | {'✓' if r.ok else '✗'} |")
                md.append("")
                if not w.ok:
                    failed.append(f"{name}/{case.name}/{mode}: first divergent tap `{w.first_failure}`")
        if spec.faults and device == "cpu":
            entry["faults"], fmd, ffailed = _fault_sensitivity(fx, spec, device)
            md += fmd
            failed += ffailed
        if name == "bigvgan":
            case = spec.cases[0]
            mel = np.concatenate([case.make_inputs(fx.cfg, s)["mel"] for s in range(8)], axis=2)
            ref, _ = run_reference(fx, case, {"mel": mel}, device)
            got, _ = candle.run(cm, "forward", {"mel": mel})
            sr = fx.cfg["sampling_rate"]
            _write_wav(os.path.join(out, "bigvgan_reference.wav"), ref["wav"], sr)
            _write_wav(os.path.join(out, "bigvgan_candle.wav"), got["wav"], sr)
            m = audio_metrics(ref["wav"], got["wav"], sr)
            entry["audio"] = m.row()
            md += [f"Audio (vocoder, {m.samples} samples): SNR {m.snr_db:.1f} dB, max|Δ| {m.max_abs:.2e}, "
                   f"log-mel L1 {m.log_mel_l1:.2e}; wavs: `bigvgan_reference.wav`, `bigvgan_candle.wav`", ""]
        result["models"][name] = entry
    if with_pipeline:
        from .pipeline import report_section

        result["pipeline"], pmd, pfailed = report_section(out, size, checkpoints, device, _write_wav)
        md += pmd
        failed += pfailed
    if perf:  # read from benchmark JSON written earlier: timing nothing here keeps the report fast
        from .perf import section

        result["performance"], pmd = section(out, perf)
        md += pmd
    if walks:  # `--models pipeline` alone has no per-model walks
        _plot(walks, os.path.join(out, "errors.png"))
    result["ok"] = not failed
    result["failures"] = failed
    md = md[:2] + ["**Result: " + ("PASS" if not failed else "FAIL — " + "; ".join(failed)) + "**", ""] + md[2:]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"report written to {out}/ (summary.md, summary.json, errors.png, wavs)")
    print("PASS" if not failed else "FAIL:\n  " + "\n  ".join(failed))
    return 0 if not failed else 1


class UserError(Exception):
    """A user error: printed as one paragraph, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message}\n{self.format_usage().strip()}")


def _check_checkpoints(directory: str, names: list[str], with_pipeline: bool) -> None:
    """Every file the requested models need, all missing ones at once (before any work starts)."""
    from .fixtures import official_layout
    from .pipeline import missing_files
    from .registry import MODELS

    if not os.path.isdir(directory):
        raise UserError(f"--checkpoints {directory}: not a directory")
    need = [f"{MODELS[n].official_file} ({n})" for n in names
            if MODELS[n].official_file and not MODELS[n].weightless
            and not os.path.isfile(os.path.join(directory, MODELS[n].official_file))]
    if with_pipeline:
        need += [f for f in missing_files(directory) if f not in need]
    if need:
        raise UserError(f"--checkpoints {directory}: {len(need)} file(s) missing: {', '.join(need)}. "
                        f"Expected layout:\n{official_layout()}")


def main(argv: list[str] | None = None) -> int:
    """`python -m parity …`: user errors (bad arguments, missing or unreadable checkpoint files, an
    unwritable directory) print one paragraph on stderr and return 2, with no traceback."""
    from reference.convert import ConversionError
    from reference.official_config import OfficialConfigError

    from .fixtures import MissingCheckpoints

    try:
        return _main(argv)
    except (UserError, MissingCheckpoints, ConversionError, OfficialConfigError) as e:
        print(f"python -m parity: error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m parity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="run every model's parity walk and write the report")
    r.add_argument("--out", default="report")
    r.add_argument("--models", nargs="*", help="subset of registry names (and `pipeline`)")
    r.add_argument("--full-size", action="store_true", help="synthetic checkpoints at official size")
    r.add_argument("--checkpoints", metavar="DIR", help="official checkpoint directory")
    r.add_argument("--device", default="cpu")
    r.add_argument("--perf", nargs="+", metavar="JSON", help="add the performance section from benchmark JSON files "
                   "(pytest --benchmark-json, python -m parity.ab/loadbench --json); nothing is timed by the report")
    f = sub.add_parser("perf", help="write only the performance section (perf.md, perf.json, perf.png) from benchmark JSON")
    f.add_argument("json", nargs="+")
    f.add_argument("--out", default="report")
    v = sub.add_parser("survey", help="measure the noise ratios of correct code (the basis of K_MAX / K_RMS)")
    v.add_argument("--models", nargs="*")
    v.add_argument("--full-size", action="store_true")
    v.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    v.add_argument("--device", default="cpu")
    v.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    v.add_argument("--json", metavar="FILE", help="also write every run's worst ratios as JSON")
    o = sub.add_parser("official-dir", help="write a synthetic checkpoint directory in the official layout")
    o.add_argument("dir")
    o.add_argument("--size", choices=["tiny", "full"], default="tiny")
    a = ap.parse_args(argv)
    if a.cmd == "official-dir":
        from .official_dir import write

        if os.path.exists(a.dir) and not os.path.isdir(a.dir):
            raise UserError(f"{a.dir}: exists and is not a directory")
        try:
            files = write(a.dir, a.size)
        except OSError as e:
            raise UserError(f"{a.dir}: cannot write the directory: {e.strerror or e}") from None
        for f in files:
            print(os.path.join(a.dir, f))
        return 0
    if a.cmd == "perf":
        from .perf import section

        os.makedirs(a.out, exist_ok=True)
        d, md = section(a.out, a.json)
        with open(os.path.join(a.out, "perf.json"), "w") as fh:
            json.dump(d, fh, indent=1)
        with open(os.path.join(a.out, "perf.md"), "w") as fh:
            fh.write("\n".join(md) + "\n")
        print(f"performance section written to {a.out}/ (perf.md, perf.json{', perf.png' if d['stages'] else ''})")
        return 0
    if a.cmd == "survey":
        return survey(a.models, "full" if a.full_size else "tiny", a.seeds, a.device, a.dtype, a.json)
    return report(a.out, a.models, "full" if a.full_size else "tiny", a.checkpoints, a.device, a.perf)


if __name__ == "__main__":
    raise SystemExit(main())
