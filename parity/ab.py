"""Candle ÷ PyTorch at official size, the two sides ALTERNATED round by round in one process.

`pytest --benchmark-only` runs every Candle round, then every torch round; on a shared machine the
load changes between the two and the ratio with it. Here round i runs Candle then torch (or torch
then Candle, alternating), so both see the same load; the figure is the median of the per-round
ratios. Same inputs as the `test_bench_*` benchmarks.

    python -m parity.ab bigvgan dit_estimator gpt_forward_latent --rounds 3 [--json F]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _bigvgan(candle_only=False):
    from parity import candle, fixtures
    from parity.registry import MODELS

    spec = MODELS["bigvgan"]
    fx = fixtures.get(spec, "full", None)
    mel = spec.cases[0].make_inputs(fx.cfg, 0)["mel"]
    mel = np.concatenate([mel] * 4, axis=2)[:, :, :86]
    cm, t = fx.candle("cpu"), torch.from_numpy(mel)
    c = lambda: candle.run(cm, "forward", {"mel": mel})  # noqa: E731
    if candle_only:
        return c, None, None
    ref = fx.reference("cpu").remove_weight_norm()  # as infer_v2 runs it
    return c, (lambda: ref(t)), 86 * 256 / 22050


def _dit(which):
    def setup(candle_only=False):
        from parity import candle, fixtures
        from parity.registry import MODELS
        from parity.runner import run_reference
        from reference import s2mel as R

        spec = MODELS["dit"]
        fx = fixtures.get(spec, "full", None)
        frames, prompt = 430, 130
        if which == "estimator":
            case = next(c for c in spec.cases if c.name == "dit_estimator")
            inputs = R.estimator_inputs(fx.cfg, 0, frames=frames, prompt=prompt)
            inputs["x_lens"] = np.array([frames, frames], np.int64)
        else:
            case = next(c for c in spec.cases if c.name == "dit_cfm")
            inputs = R.cfm_inputs(fx.cfg, 0, frames=frames, prompt=prompt, steps=25)
        cm = fx.candle("cpu")
        return (lambda: candle.run(cm, case.method, inputs)), (lambda: run_reference(fx, case, inputs)), frames * 256 / 22050
    return setup


def _gpt(which):
    def setup(candle_only=False):
        from parity import candle, fixtures
        from parity.runner import as_torch
        from parity.registry import MODELS

        fx = fixtures.get(MODELS["gpt"], "full", None)
        cfg = fx.cfg
        rng = np.random.default_rng(0)
        d, n = cfg["model_dim"], cfg["condition_num_latent"]
        spk = {"x": rng.standard_normal((1, cfg["cond_input_size"], 250)).astype(np.float32),
               "lens": np.array([250], np.int64)}
        lat = {"spk_latent": rng.standard_normal((1, n, d)).astype(np.float32),
               "text": rng.integers(2, cfg["number_text_tokens"], (1, 40)),
               "text_lens": np.array([40], np.int64),
               "codes": rng.integers(0, cfg["start_mel_token"], (1, 100)),
               "code_lens": np.array([100], np.int64),
               "emovec": rng.standard_normal((1, d)).astype(np.float32)}
        if candle_only:
            cm = fx.candle("cpu")
            return (lambda: candle.run(cm, which, spk if which == "spk_cond" else lat)), None, None
        # torch first: its load holds the file's tensors and the module at once (2× the weights);
        # Candle's model joins after that peak (official size: 3.5 GB each)
        ref = fx.reference("cpu")
        cm = fx.candle("cpu")
        if which == "step_logits":  # KV-cache decoding, 17 steps (test_bench_gpt_greedy)
            import os
            import sys

            sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
            from test_gpt import _ref_cached_logits

            inp = {"spk_latent": lat["spk_latent"], "emovec": lat["emovec"], "text": lat["text"], "codes": lat["codes"][:, :16]}
            t = as_torch(inp, "cpu", torch.float32)
            return (lambda: candle.run(cm, "step_logits", inp)), (lambda: _ref_cached_logits(ref, t, t["codes"])), None
        if which == "spk_cond":
            t = as_torch(spk, "cpu", torch.float32)
            return (lambda: candle.run(cm, "spk_cond", spk)), (lambda: ref.get_conditioning(t["x"], t["lens"])), None
        t = as_torch(lat, "cpu", torch.float32)
        return ((lambda: candle.run(cm, "forward_latent", lat)),
                (lambda: ref.forward_latent(t["spk_latent"], t["text"], t["text_lens"], t["codes"], t["code_lens"], t["emovec"])),
                None)
    return setup


def _campplus(candle_only=False):
    from parity import candle, fixtures
    from parity.registry import MODELS
    from reference.campplus import campplus_features, load_wav

    fx = fixtures.get(MODELS["campplus"], "full", None)
    wav = np.ascontiguousarray(np.tile(load_wav("speech_16k.wav"), (1, 2))[:, :160000])
    cm, ref, t = fx.candle("cpu"), fx.reference("cpu"), torch.from_numpy(wav)

    def c():
        f, _ = candle.run(cm, "fbank", {"wav": wav})
        return candle.run(cm, "forward", {"feat": f["feat"][None]})
    return c, (lambda: ref(campplus_features(t, 80, 16000.0)[None])), 10.0


def _codec(candle_only=False):
    from parity import candle, fixtures
    from parity.registry import MODELS
    from reference.semantic_codec import make_features

    fx = fixtures.get(MODELS["semantic_codec"], "full", None)
    x = make_features(fx.cfg, 0, frames=500)["x"]
    cm, ref, t = fx.candle("cpu"), fx.reference("cpu"), torch.from_numpy(x)
    return (lambda: candle.run(cm, "quantize", {"x": x})), (lambda: ref.quantize(t)), 10.0


def _mel(candle_only=False):
    from parity import candle
    from reference.campplus import load_wav
    from reference.mel import FULL, mel_spectrogram

    import os
    import tempfile

    from safetensors.torch import save_file

    wav = np.ascontiguousarray(np.tile(load_wav("speech_22k.wav"), (1, 2))[:, :220500])
    empty = os.path.join(tempfile.mkdtemp(), "empty.safetensors")
    save_file({}, empty)  # the mel row has no weights
    cm = candle.Model("mel_spectrogram", empty, json.dumps(FULL), "cpu", [], "")
    t = torch.from_numpy(wav)
    return (lambda: candle.run(cm, "forward", {"wav": wav})), (lambda: mel_spectrogram(t, FULL)), 10.0


def _w2v(candle_only=False):
    import copy

    from parity import candle, fixtures
    from parity.registry import MODELS
    from reference import w2v_bert as R

    fx = fixtures.get(MODELS["w2v_bert"], "full", None)
    speech = R.load_clip("speech_16k.wav")
    audio = np.concatenate([speech] * (160000 // len(speech) + 1))[:160000].astype(np.float32)
    cm = fx.candle("cpu")
    if candle_only:
        return (lambda: candle.run(cm, "embed_audio", {"audio": audio})), None, None
    ref = fx.reference("cpu")

    def shallow(m):  # shares the weights, owns its submodule table (the cached model is untouched)
        c = copy.copy(m)
        c._modules = dict(m._modules)
        return c

    enc = shallow(ref.encoder)  # like for like: the 17 layers Candle runs (transformers has no early exit)
    enc.layers = torch.nn.ModuleList(list(ref.encoder.layers)[: fx.cfg["output_layer"]])
    ref = shallow(ref)
    ref.encoder = enc
    t = torch.from_numpy(audio)
    return (lambda: candle.run(cm, "embed_audio", {"audio": audio})), (lambda: R.run_embed_audio(ref, {"audio": t}, None)), 10.0


BENCHES = {"w2v_bert_17": _w2v, "bigvgan": _bigvgan, "dit_estimator": _dit("estimator"), "dit_cfm25": _dit("cfm"),
           "gpt_spk_cond": _gpt("spk_cond"), "gpt_forward_latent": _gpt("forward_latent"), "gpt_greedy17": _gpt("step_logits"),
           "campplus": _campplus, "semantic_codec": _codec, "mel": _mel}


def _time(fn) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - t0


def run(name: str, rounds: int) -> dict:
    c, t, audio_s = BENCHES[name]()
    _time(c), _time(t)  # warm-up: allocations, page-in
    cs, ts = [], []
    for i in range(rounds):
        if i % 2 == 0:
            cs.append(_time(c)), ts.append(_time(t))
        else:
            ts.append(_time(t)), cs.append(_time(c))
    ratios = [a / b for a, b in zip(cs, ts)]
    out = {"name": name, "candle_s": cs, "torch_s": ts, "ratios": ratios,
           "ratio_median": statistics.median(ratios), "ratio_of_min": min(cs) / min(ts),
           "threads": torch.get_num_threads()}
    if audio_s:
        out["rtf_candle"] = min(cs) / audio_s
        out["rtf_torch"] = min(ts) / audio_s
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benches", nargs="+", choices=sorted(BENCHES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args(argv)
    res = []
    import gc

    for name in a.benches:
        r = run(name, a.rounds)
        gc.collect()  # the previous bench's models go before the next one loads
        res.append(r)
        print(f"{name:<20} candle {' '.join(f'{x:.3f}' for x in r['candle_s'])} s | torch "
              f"{' '.join(f'{x:.3f}' for x in r['torch_s'])} s | ratio median {r['ratio_median']:.2f}, "
              f"of min {r['ratio_of_min']:.2f}", flush=True)
        if a.json:  # after every bench: a later one that dies (memory) keeps the earlier figures
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
