"""Measures a size's row of `pipeline.SAMPLED_CASES`: how the stop-biased synthetic GPT ends its
sampled decodes, per make_inputs seed (float32 reference; the Candle GPT for the decoding faults).

    python -m parity.stop_cases SIZE [--bias B] [--what gaps,sampled,seeded,text,faults,seeded_text]

gaps:        the unbiased greedy case's step logits: top − stop and 30th − stop (top-k is 30), per
             step; a bias near these makes the stop token a candidate at all
sampled:     codes of the 3-beam and 1-beam sampled decodes, per seed (`--seeds`, default 0-7) ("-": no stop within 20)
seeded:      codes of the seeded (torch generator) 1-beam decode, seeds 0-7
text:        codes per text segment, 3 beams, the draws consumed on from segment to segment
faults:      3 beams, seeds 0-7: the decoding faults that leave the Candle codes unchanged, per
             decode-option set of `--fault-options` (JSON objects over infer_v2's defaults, `;`
             between sets; default: the size's SAMPLED_CASES fault_options)
seeded_text: seeded, 3 beams, the whole text (every segment's CFM draws from the generator), the
             first seeds from 0 on whose segments all stop with ≥ 1 code (slow: full segments)
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from reference import pipeline as P
from reference.text import TextTokenizer

from . import candle
from . import pipeline as PP

class _Stop(Exception):
    pass


def _upto(mods, inputs: dict, stage: str) -> tuple[dict, dict]:
    """The float32 reference run up to `stage`: (its method inputs, its outputs); raises ValueError
    where the decode never stops."""
    trace, got = {}, {}

    def follow(name, outs):
        if name == stage:
            got.update(outs)
            raise _Stop
        return outs

    try:
        P.run(mods, inputs, torch.float32, trace=trace, follow=follow)
    except _Stop:
        pass
    return trace[stage], got


def _codes_inputs(ins: dict, i: dict, text: np.ndarray, draws: np.ndarray) -> dict:
    """Stage `codes` (sampled) method inputs: the speaker side of `ins`, the options of make_inputs `i`."""
    return P.CODES_SAMPLED.inputs({"spk_latent": ins["spk_latent"], "emovec": ins["emovec"], "text": text,
                                   "decode_options": i["decode_options"], "draws": draws})


def _decode(gpt, st: dict) -> tuple[int | None, int]:
    """The reference's own stage (decode + infer_v2's trim): (codes or None without a stop, draws used)."""
    try:
        out = P.run_stage_on(P.CODES_SAMPLED, gpt, st)
    except ValueError:
        return None, 0
    return out["codes"].shape[1], int(out["draws_used"].reshape(-1)[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", choices=["tiny", "full"])
    ap.add_argument("--bias", type=float, default=None, help="default: the size's SAMPLED_CASES stop_bias")
    ap.add_argument("--what", default="gaps,sampled,seeded,text,faults")
    ap.add_argument("--fault-options", default=None, help="e.g. '{}; {\"length_penalty\": 2.0}'")
    ap.add_argument("--seeds", default="0-7", help="first-last make_inputs seeds")
    a = ap.parse_args(argv)
    what = set(a.what.split(","))
    first, last = (int(x) for x in a.seeds.split("-"))
    seeds = range(first, last + 1)
    cfg = P.CONFIGS[a.size]
    fxs0 = PP.fixtures(a.size, None)
    bias = PP.sampled_cases(a.size).stop_bias if a.bias is None else a.bias
    if "gaps" in what:
        mods = PP.LazyReferences(fxs0, "cpu", torch.float32)
        _, out = _upto(mods, P.make_inputs(cfg, 0), "code_logits")
        lg, stop = out["logits"][0], cfg["gpt"]["stop_mel_token"]
        srt = -np.sort(-lg, axis=1)
        k = min(30, srt.shape[1]) - 1
        fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
        print(f"unbiased greedy case, per step: top − stop {fmt(srt[:, 0] - lg[:, stop])}")
        print(f"                                {k + 1}th − stop {fmt(srt[:, k] - lg[:, stop])}", flush=True)
        mods.release_all()
    fxs = PP.sampled_fixtures(fxs0, bias)
    mods = PP.LazyReferences(fxs, "cpu", torch.float32)
    ins, _ = _upto(mods, P.make_inputs(cfg, 0), "codes")  # the speaker side is the same for every seed
    gpt = mods["gpt"]
    show = lambda n: "-" if n is None else str(n)  # noqa: E731
    if "sampled" in what:
        for beams in (3, 1):
            row = []
            for s in seeds:
                i = P.make_inputs(cfg, s, decoding="sampled", options={} if beams == 3 else {"num_beams": 1})
                row.append(show(_decode(gpt, _codes_inputs(ins, i, i["text"], i["draws"]))[0]))
            print(f"bias {bias:g}, sampled, {beams} beam(s): codes for seeds {seeds.start}-{seeds.stop - 1}: {' '.join(row)}", flush=True)
    if "seeded" in what:
        row = []
        for s in seeds:
            try:
                _, out = _upto(mods, P.make_inputs(cfg, s, decoding="seeded", options={"num_beams": 1}), "codes")
                row.append(str(out["codes"].shape[1]))
            except ValueError:
                row.append("-")
        print(f"bias {bias:g}, seeded, 1 beam: codes for seeds {seeds.start}-{seeds.stop - 1}: {' '.join(row)}", flush=True)
    if "text" in what:
        segs = TextTokenizer(PP.bpe_path(fxs)).segments(PP.TEXT, PP.TEXT_SEGMENT_TOKENS)
        for s in seeds:
            i = P.make_inputs(cfg, s, decoding="sampled")
            draws, row = i["draws"], []
            for ids in segs:
                n, used = _decode(gpt, _codes_inputs(ins, i, np.array([ids], np.int64), draws))
                row.append(show(n))
                if n is None:
                    break
                draws = draws[used:]
            print(f"bias {bias:g}, sampled text ({len(segs)} segments), 3 beams, seed {s}: codes per segment {' '.join(row)}",
                  flush=True)
    if "faults" in what:
        import gc
        import json

        sets = ([json.loads(x) for x in a.fault_options.split(";")] if a.fault_options is not None
                else [dict(PP.sampled_cases(a.size).fault_options)])
        if what <= {"faults"}:
            del gpt
            mods.release_all()  # only the Candle GPTs from here on
        cases = {}
        good = PP.candle_model(fxs, "gpt")
        for j, opts in enumerate(sets):
            for s in seeds:
                i = P.make_inputs(cfg, s, decoding="sampled", options=opts)
                st = _codes_inputs(ins, i, i["text"], i["draws"])
                try:
                    cases[j, s] = (st, candle.run(good, "generate_sampled", st)[0]["codes"])
                except candle.InputError as e:
                    print(f"bias {bias:g}, faults, options {opts}, seed {s}: {e}", flush=True)
        del good
        same = {c: [] for c in cases}
        for f in PP.DECODE_FAULTS:  # one official-size GPT at a time
            m = PP.candle_model(fxs, "gpt", "cpu", [f])
            for c, (st, codes) in cases.items():
                try:
                    if np.array_equal(candle.run(m, "generate_sampled", st)[0]["codes"], codes):
                        same[c].append(f)
                except candle.InputError:
                    pass  # the fault makes the decode fail: that changes the codes too
            print(f"  {f}: leaves the codes of {[c for c in cases if f in same[c]] or 'no case'} unchanged "
                  "((option set, seed))", flush=True)
            del m
            gc.collect()
        for (j, s), fs in same.items():
            print(f"bias {bias:g}, faults, options {sets[j]}, seed {s} ({cases[j, s][1].shape[1]} codes): "
                  f"unchanged by {fs or 'none'}", flush=True)
    if "seeded_text" in what:
        tok = TextTokenizer(PP.bpe_path(fxs))
        for s in seeds:
            try:
                r = P.run_text(mods, P.make_inputs(cfg, s, decoding="seeded"), tok, PP.TEXT, PP.TEXT_SEGMENT_TOKENS)
                print(f"bias {bias:g}, seeded text, seed {s}: {len(r['segments'])} segments, every one stops", flush=True)
                break
            except ValueError as e:
                print(f"bias {bias:g}, seeded text, seed {s}: {e}", flush=True)


if __name__ == "__main__":
    main()
