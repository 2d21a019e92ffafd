"""`IndexTTS2(cfg_path, model_dir, …).infer(spk_audio_prompt, text, output_path, …)` on Candle, with
the official argument names and defaults where they apply. It runs what the `indextts2` CLI runs
(the same converted files, WAV reading, resampler, noise and pipeline calls), so both give the same
samples. Options the port does not implement raise `UnsupportedOption` naming them.

Differences from infer_v2 (see README "Use it"): the decoding is infer_v2's (its generation
keywords and defaults) on torch's CPU stream after `torch.manual_seed(seed)` (`seed=` keyword), which
also gives w2v-bert's layerdrop draws and each segment's CFM `torch.randn`, in infer_v2's order (the
same stream as infer_v2 under that seed; randn may differ from torch's AVX2 kernel in the last
ulps); WAV input is resampled by the project's torchaudio-equivalent resampler, not librosa's
soxr; no text normaliser, no QwenEmotion, no fp16/DeepSpeed/CUDA kernel.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from .wire import from_wire, to_wire

from . import wav as W

SR_22K, SR_16K = 22050, 16000
DIFFUSION_STEPS = 25  # infer_v2: diffusion_steps=25
# the generation keywords infer_v2 passes on (crate::sampling::DecodeConfig; absent = infer_v2's defaults)
DECODE_KEYS = ("do_sample", "num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "length_penalty",
               "max_mel_tokens", "num_return_sequences", "early_stopping")


class UnsupportedOption(ValueError):
    """An official option this port does not implement; the message names it."""


def _converted(model_dir: str) -> tuple[str, str]:
    from reference.convert import CONVERTED_DIR, PIPELINE_CONFIG, PIPELINE_FILE

    out = os.path.join(model_dir, CONVERTED_DIR)
    w, c = os.path.join(out, PIPELINE_FILE), os.path.join(out, PIPELINE_CONFIG)
    if not (os.path.isfile(w) and os.path.isfile(c)):
        raise FileNotFoundError(f"{model_dir}: the converted pipeline ({w}, {c}) is missing; "
                                f"convert it once with:  indextts-convert {model_dir}")
    return w, c


class IndexTTS2:
    def __init__(self, cfg_path="checkpoints/config.yaml", model_dir="checkpoints", use_fp16=False, device=None,
                 use_cuda_kernel=None, use_deepspeed=False):
        import indextts_candle as ic

        from reference import official_config as OC

        for name, val in (("use_fp16", use_fp16), ("use_cuda_kernel", use_cuda_kernel), ("use_deepspeed", use_deepspeed)):
            if val:
                raise UnsupportedOption(f"{name}={val!r}: not supported by the Candle port (float32 only, no BigVGAN "
                                        "CUDA kernel, no DeepSpeed)")
        mine = os.path.join(model_dir, "config.yaml")
        if not (os.path.isfile(cfg_path) and os.path.isfile(mine) and os.path.samefile(cfg_path, mine)):
            raise UnsupportedOption(f"cfg_path={cfg_path!r}: must be {mine} (the conversion `indextts-convert "
                                    f"{model_dir}` reads that file)")
        cfg = OC.read_config_yaml(model_dir)
        need = OC.files(model_dir, cfg)
        missing = [os.path.join(model_dir, f) for f in need.values() if not os.path.isfile(os.path.join(model_dir, f))]
        if missing:
            raise FileNotFoundError(f"{model_dir}: {len(missing)} file(s) of the official layout are missing: "
                                    + ", ".join(missing))
        weights, config_json = _converted(model_dir)
        converted = min(os.path.getmtime(weights), os.path.getmtime(config_json))
        srcs = [os.path.join(model_dir, f) for f in need.values()] + [mine, os.path.join(model_dir, OC.HARDCODED_FILE)]
        stale = [s for s in srcs if os.path.isfile(s) and os.path.getmtime(s) > converted]
        if stale:
            raise FileNotFoundError(f"{model_dir}: the converted pipeline is older than {', '.join(stale)}; "
                                    f"convert it again with:  indextts-convert {model_dir}")
        with open(config_json, encoding="utf-8") as f:
            pc = json.load(f)
        pc["bpe_model"] = os.path.join(model_dir, cfg["dataset"]["bpe_model"])
        self.device = device or "cpu"  # infer_v2 picks CUDA when present; here the caller chooses
        self.cfg = pc
        self.model_dir = model_dir
        self._ic = ic
        self._pipe = ic.Model("pipeline", weights, json.dumps(pc), self.device, [], "")
        # the weightless resampler (torchaudio.transforms.Resample's defaults); any store will do
        self._resample = ic.Model("resample", weights, json.dumps({"orig_freq": SR_22K, "new_freq": SR_16K}),
                                  self.device, [], "")
        self._tok = ic.Tokenizer(pc["bpe_model"])

    def _rate(self, x: np.ndarray, sr: int, new: int) -> np.ndarray:
        if sr == new:
            return x
        return _run(self._resample, "forward_rates",
                    {"wav": x, "orig_freq": np.array([sr], np.int64), "new_freq": np.array([new], np.int64)})["wav"]

    def infer(self, spk_audio_prompt, text, output_path, emo_audio_prompt=None, emo_alpha=1.0, emo_vector=None,
              use_emo_text=False, emo_text=None, use_random=False, interval_silence=200, verbose=False,
              max_text_tokens_per_segment=120, **generation_kwargs):
        """As infer_v2's `infer`; extra keyword `seed` (decoding draws and CFM noise; default from the clock) and
        `pcm16` (write 16-bit PCM instead of float32). Returns `output_path`, or `(22050, samples)`
        when it is None/empty, as infer_v2."""
        if use_emo_text or emo_text is not None:
            raise UnsupportedOption("use_emo_text / emo_text: emotion from text needs QwenEmotion, which is not ported")
        if use_random:
            raise UnsupportedOption("use_random=True: random emotion rows are not supported (the cosine-nearest row is used)")
        g = dict(generation_kwargs)
        seed = g.pop("seed", None)
        pcm16 = bool(g.pop("pcm16", False))
        bad = sorted(k for k in g if k not in DECODE_KEYS)
        if bad:
            raise UnsupportedOption(f"generation option(s) {bad}: not supported (known: {list(DECODE_KEYS)})")
        limit = self.cfg["gpt"]["max_mel_tokens"]
        max_mel_tokens = g.pop("max_mel_tokens", None)
        if max_mel_tokens is None:
            max_mel_tokens = min(1500, limit)  # infer_v2's default, or the model's limit when smaller
        elif not 1 <= int(max_mel_tokens) <= limit:
            raise ValueError(f"max_mel_tokens={max_mel_tokens}: must be in [1, {limit}] (the model's gpt.max_mel_tokens)")
        if not (0.0 <= float(emo_alpha) <= 1.0):
            raise ValueError(f"emo_alpha={emo_alpha}: must be in [0, 1]")
        groups = len(self.cfg["emotion"]["emo_num"])
        if emo_vector is not None:
            emo_vector = [float(x) for x in emo_vector]
            if len(emo_vector) != groups:
                raise ValueError(f"emo_vector: {groups} weights expected, got {len(emo_vector)}")
            if any(not np.isfinite(x) or x < 0 for x in emo_vector):
                raise ValueError(f"emo_vector: weights must be finite and ≥ 0, got {emo_vector}")
            emo_audio_prompt = None  # infer_v2: a vector drops the emotion clip
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty")
        if int(max_text_tokens_per_segment) < 1 or int(interval_silence) < 0:
            raise ValueError("max_text_tokens_per_segment must be ≥ 1 and interval_silence ≥ 0")
        segs = self._tok.segments(text, int(max_text_tokens_per_segment))
        if not any(len(s) for s in segs):
            raise ValueError(f"text {text!r} gives no tokens with {self.cfg['bpe_model']}")
        t0 = time.perf_counter()
        spk, sr = W.read_mono(spk_audio_prompt)
        spk = self._rate(spk, sr, SR_22K)
        ins = {"speaker": spk}
        if emo_audio_prompt is not None:
            e, esr = W.read_mono(emo_audio_prompt)
            ins["emo_16k"] = self._rate(e, esr, SR_16K)
        if emo_vector is not None:
            ins["emo_weights"] = np.array(emo_vector, np.float32)
        max_tokens = int(max_mel_tokens)
        if seed is None:
            seed = time.time_ns() & 0xFFFFFFFF
        t_span = _linspace01(DIFFUSION_STEPS)
        ins.update(text_codepoints=np.array([ord(ch) for ch in text], np.int64), seed=np.array([int(seed)], np.int64),
                   decode_options=_json({**g, "max_mel_tokens": max_tokens}), t_span=t_span, emo_alpha=np.array([emo_alpha], np.float32),
                   max_segment_tokens=np.array([int(max_text_tokens_per_segment)], np.int64),
                   interval_ms=np.array([int(interval_silence)], np.int64))
        out = _run(self._pipe, "tts", ins)["wav"].reshape(-1)
        if verbose:
            secs = len(out) / SR_22K
            print(f">> {secs:.2f} s of audio, {len(segs)} segment(s), seed {seed}, RTF {(time.perf_counter() - t0) / secs:.3f}")
        if not output_path:
            return SR_22K, out
        if os.path.dirname(output_path):
            os.makedirs(os.path.dirname(output_path), exist_ok=True)
        W.write(output_path, out, SR_22K, pcm16=pcm16)
        return output_path


def _json(d: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(d).encode(), np.uint8).astype(np.int64)


def _run(model, method: str, inputs: dict) -> dict[str, np.ndarray]:
    outs, _ = model.run(method, {k: to_wire(v) for k, v in inputs.items()}, False, None)
    return {k: from_wire(v) for k, v in outs}


def _linspace01(steps: int) -> np.ndarray:
    """torch.linspace(0, 1, steps + 1) in float32 (its two-sided formula), as the CLI computes it."""
    n = steps + 1
    step = np.float32(1.0) / np.float32(steps)
    half = n // 2
    return np.array([step * np.float32(i) if i < half else np.float32(1.0) - step * np.float32(n - i - 1)
                     for i in range(n)], np.float32)
