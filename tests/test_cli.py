"""The `indextts2` CLI, `indextts-convert DIR` and the Python API (`indextts2_candle.IndexTTS2`) on the
tiny synthetic official directory (`python -m parity official-dir`). Select with `-k cli`.

* end to end: the CLI's WAV equals the Rust pipeline's `tts` (`indextts_candle.Model("pipeline")`)
  on the same converted files, inputs and CFM noise, bit for bit;
* WAV reading: 8/16/24/32-bit integer, 32-bit float, stereo, 16 / 22.05 / 44.1 / 48 kHz, against an
  independent reading (Python's `wave` + numpy, mean over channels, the torchaudio resampler);
* every bad input: exit code 2 and the message;
* the config mapping: official-size config files map to exactly the official configs;
* torch.randn on CPU (the CLI's noise) reproduced by `TorchCpuGenerator::normal_f32`.
"""
from __future__ import annotations

import json
import os
import subprocess
import wave

import numpy as np
import pytest
import torch

from parity import candle
from parity import official_dir as O
from parity import pipeline as PP
from reference import convert as C
from reference import official_config as OC
from reference import resample as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("INDEXTTS2_BIN", os.path.join(ROOT, "target", "release", "indextts2"))
TEXT = "Hello world, this is a test. 你好，世界！"
SEG = "12"  # the tiny GPT has 16 text positions
SR = 22050


def _bin() -> str:
    assert os.path.isfile(BIN), f"{BIN} is missing: build it with `cargo build --release --bin indextts2` (./run.sh test does)"
    return BIN


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([_bin(), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("official"))
    O.write(d, "tiny")
    assert C.main([d, "--no-progress"]) == 0
    return d


def _speech(seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    """A real speech excerpt (fixtures/audio) at 22.05 kHz, float in [-1, 1]."""
    with wave.open(os.path.join(ROOT, "fixtures", "audio", "speech_22k.wav")) as w:
        a = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    a = a[5000:5000 + int(seconds * SR)]
    if sr != SR:
        a = R.build({**R.FULL, "orig_freq": SR, "new_freq": sr})(torch.from_numpy(a)[None])[0].numpy()
    return np.clip(a, -0.99, 0.99)


def write_wav(path: str, x: np.ndarray, sr: int, fmt: str) -> None:
    """x [C, N] float → WAV with Python's `wave` (integers) or by hand (IEEE float, format 3)."""
    x = np.atleast_2d(x)
    inter = x.T.reshape(-1)
    if fmt == "f32":
        data = inter.astype("<f4").tobytes()
        ch, bits = x.shape[0], 32
        fmt_chunk = (np.array([3, ch], "<u2").tobytes() + np.array([sr, sr * ch * 4], "<u4").tobytes()
                     + np.array([ch * 4, bits], "<u2").tobytes())
        with open(path, "wb") as f:
            body = b"WAVE" + b"fmt " + np.uint32(16).tobytes() + fmt_chunk + b"data" + np.uint32(len(data)).tobytes() + data
            f.write(b"RIFF" + np.uint32(len(body)).tobytes() + body)
        return
    bits = int(fmt[1:])
    scale = 2 ** (bits - 1)
    q = np.clip(np.round(inter * scale), -scale, scale - 1).astype(np.int64)
    if bits == 8:  # 8-bit WAV is unsigned
        raw = (q + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        b = q.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        raw = b.tobytes()
    else:
        raw = q.astype(f"<i{bits // 8}").tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(bits // 8)
        w.setframerate(sr)
        w.writeframes(raw)


def read_independent(path: str) -> tuple[np.ndarray, int]:
    """The RIFF chunks by hand + numpy (PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE), integers scaled by
    2^(bits−1) (8-bit unsigned), mono by the mean over channels."""
    with open(path, "rb") as f:
        b = f.read()
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE", path
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], int.from_bytes(b[pos + 4:pos + 8], "little")
        body = b[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            tag, ch = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
            sr, bits = int.from_bytes(body[4:8], "little"), int.from_bytes(body[14:16], "little")
            if tag == 0xFFFE:  # extensible: the sub-format GUID starts with the real tag
                tag = int.from_bytes(body[24:26], "little")
            fmt = (tag, ch, sr, bits)
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    tag, ch, sr, bits = fmt
    if tag == 3:
        x = np.frombuffer(data, "<f4").reshape(-1, ch)
    else:
        assert tag == 1, tag
        if bits == 8:
            q = np.frombuffer(data, np.uint8).astype(np.int64) - 128
        elif bits == 24:
            t = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int64)
            q = t[:, 0] | (t[:, 1] << 8) | (t[:, 2] << 16)
            q = np.where(q >= 2 ** 23, q - 2 ** 24, q)
        else:
            q = np.frombuffer(data, f"<i{bits // 8}").astype(np.int64)
        x = (q / float(2 ** (bits - 1))).astype(np.float32).reshape(-1, ch)
    return x.mean(axis=1, dtype=np.float32), sr


def _pipeline(model_dir: str, gpt_dtype: str | None = None):
    cfg = json.load(open(os.path.join(model_dir, "candle", "pipeline.json")))
    cfg["bpe_model"] = os.path.join(model_dir, "bpe.model")
    if gpt_dtype:
        cfg["gpt_dtype"] = gpt_dtype
    return candle.Model("pipeline", os.path.join(model_dir, "candle", "pipeline.safetensors"), json.dumps(cfg), "cpu", [], "")


def _read_out(path: str) -> np.ndarray:
    return read_independent(path)[0]


def _tts(model, speaker_22k: np.ndarray, noise: np.ndarray, **extra) -> np.ndarray:
    ins = {"speaker": speaker_22k.astype(np.float32), "text_codepoints": np.array([ord(c) for c in TEXT], np.int64),
           "max_tokens": np.array([10], np.int64), "z_pool": noise, "t_span": torch.linspace(0, 1, 26).numpy(),
           "emo_alpha": np.array([extra.pop("emo_alpha", 1.0)], np.float32),
           "max_segment_tokens": np.array([int(SEG)], np.int64), **extra}
    return candle.run(model, "tts", ins)[0]["wav"].reshape(-1)


def test_cli_help_and_convert_command():
    p = cli("--help")
    for flag in ("--model-dir", "--speaker", "--text-file", "--emotion-vector", "--emo-alpha", "--seed", "--greedy",
                 "--segment-tokens", "--interval-ms", "--device", "--pcm16", "--float"):
        assert flag in p.stdout


@pytest.mark.parametrize("emotion", ["speaker", "clip", "vector"])
def test_cli_end_to_end_equals_pipeline(model_dir, tmp_path, emotion):
    """The CLI's float WAV = the Rust pipeline's `tts` on the same converted files, same noise."""
    spk = _speech()
    write_wav(str(tmp_path / "spk.wav"), spk, SR, "f32")
    args = ["--model-dir", model_dir, "--speaker", tmp_path / "spk.wav", "--text", TEXT,
            "--greedy", "--seed", "7", "--segment-tokens", SEG, "--max-mel-tokens", "10"]
    extra: dict = {}
    if emotion == "clip":
        emo = _speech(0.4, 16000)[::-1].copy()
        write_wav(str(tmp_path / "emo.wav"), emo, 16000, "f32")
        args += ["--emotion", tmp_path / "emo.wav", "--emo-alpha", "0.6"]
        extra = {"emo_16k": emo.astype(np.float32), "emo_alpha": 0.6}
    elif emotion == "vector":
        w = [0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0]
        args += ["--emotion-vector", ",".join(map(str, w)), "--emo-alpha", "0.5"]
        extra = {"emo_weights": np.array(w, np.float32), "emo_alpha": 0.5}
    p = cli(*args, "-o", tmp_path / "out.wav", "--dump", tmp_path / "dump")
    assert "RTF" in p.stderr and "peak RSS" in p.stderr, p.stderr
    noise = np.load(tmp_path / "dump" / "z_pool.npy")
    assert np.array_equal(np.load(tmp_path / "dump" / "speaker_22k.npy"), spk.astype(np.float32))  # 22.05 kHz float: as is
    torch.manual_seed(8)  # seed + 1: the seed itself feeds the sampler
    ref_noise = torch.randn(noise.shape).numpy()
    assert np.abs(noise - ref_noise).max() <= 4 * np.spacing(np.float32(4)), "CLI noise is not torch.randn(seed)"
    got = _read_out(str(tmp_path / "out.wav"))
    want = _tts(_pipeline(model_dir), spk, noise, **extra)
    assert got.shape == want.shape and np.array_equal(got, want), f"max|Δ| {np.abs(got - want).max()}"
    if emotion != "speaker":  # the output formats and the sampled decoding once
        return
    # 16-bit output = the same samples through resample.to_pcm16's cast
    cli(*args, "--pcm16", "-o", tmp_path / "out16.wav")
    # the default decoding: infer_v2's beam sampler from torch's stream after manual_seed(seed)
    i = args.index("--max-mel-tokens")
    sampled = [a for a in args[:i] + args[i + 2:] if a != "--greedy"]  # max-mel-tokens: the tiny GPT's 24
    cli(*sampled, "-o", tmp_path / "outs.wav", "--dump", tmp_path / "dumps")
    assert not (tmp_path / "dumps" / "z_pool.npy").exists(), "sampled: the CFM noise comes from the seeded stream"
    ins = {k: v for k, v in extra.items() if k != "emo_alpha"}
    ins.update(speaker=spk.astype(np.float32), text_codepoints=np.array([ord(c) for c in TEXT], np.int64),
               t_span=torch.linspace(0, 1, 26).numpy(),
               emo_alpha=np.array([extra.get("emo_alpha", 1.0)], np.float32),
               max_segment_tokens=np.array([int(SEG)], np.int64), seed=np.array([7], np.int64),
               decode_options=np.frombuffer(json.dumps({"max_mel_tokens": 24}).encode(), np.uint8).astype(np.int64))
    want_s = candle.run(_pipeline(model_dir), "tts", ins)[0]["wav"].reshape(-1)
    assert np.array_equal(_read_out(str(tmp_path / "outs.wav")), want_s)
    q, sr = read_independent(str(tmp_path / "out16.wav"))
    assert sr == SR
    assert np.array_equal(q, (np.clip(want, -1, 1) * 32767).astype(np.int16) / np.float32(32768))


# each format, each rate, both channel counts (8 runs: the CLI and the pipeline each decode a segment)
MATRIX = [("i8", 1, 22050), ("i16", 1, 16000), ("i16", 2, 44100), ("i24", 1, 48000), ("i32", 2, 22050),
          ("f32", 2, 48000), ("f32", 1, 44100), ("i16", 1, 22050)]


def test_cli_half_precision(model_dir, tmp_path):
    """`--dtype float16` = the pipeline with `gpt_dtype` float16 (infer_v2's use_fp16: the GPT in half,
    the rest float32); other values are refused by the parser."""
    spk = _speech()
    write_wav(str(tmp_path / "spk.wav"), spk, SR, "f32")
    args = ["--model-dir", model_dir, "--speaker", tmp_path / "spk.wav", "--text", TEXT, "--greedy", "--seed", "7",
            "--segment-tokens", SEG, "--max-mel-tokens", "10"]
    cli(*args, "--dtype", "float16", "-o", tmp_path / "h.wav", "--dump", tmp_path / "dump")
    want = _tts(_pipeline(model_dir, "float16"), spk, np.load(tmp_path / "dump" / "z_pool.npy"))
    assert np.array_equal(_read_out(str(tmp_path / "h.wav")), want)
    p = cli(*args, "--dtype", "float64", "-o", tmp_path / "x.wav", check=False)
    assert p.returncode == 2 and "float64" in p.stderr


@pytest.mark.parametrize("fmt,channels,sr", MATRIX, ids=[f"{f}-{c}ch-{r}" for f, c, r in MATRIX])
def test_cli_wav_reading_matrix(model_dir, tmp_path, fmt, channels, sr):
    """The CLI's 22.05 kHz speaker signal = the independent reading (wave + numpy, channel mean)
    brought to 22.05 kHz by the reference resampler (torchaudio's, float64 truth vs float32 noise:
    the noise-floor rule), and its output = the pipeline's `tts` on that signal."""
    from parity.compare import compare_noise
    from parity.tolerances import rule

    x = _speech(0.45, sr)
    sig = np.stack([x, 0.5 * x[::-1]]) if channels == 2 else x[None]
    path = str(tmp_path / "in.wav")
    write_wav(path, sig, sr, fmt)
    mono, got_sr = read_independent(path)
    assert got_sr == sr
    text = "Hello world."
    cli("--model-dir", model_dir, "--speaker", path, "--text", text, "-o", tmp_path / "out.wav", "--greedy", "--seed", "1",
        "--max-mel-tokens", "8", "--dump", tmp_path / "dump")
    spk = np.load(tmp_path / "dump" / "speaker_22k.npy")
    if sr == SR:
        assert np.array_equal(spk, mono)
    else:
        refs = [R.build({**R.FULL, "orig_freq": sr, "new_freq": SR}).to(dt)(torch.from_numpy(mono).to(dt)[None])[0].numpy()
                for dt in (torch.float64, torch.float32)]
        c = compare_noise("cli.speaker_22k", refs[0], refs[1], spk, rule("resample", "output:wav", "cpu", "float32"))
        assert c.ok, c.line()
    ins = {"speaker": spk, "text_codepoints": np.array([ord(ch) for ch in text], np.int64),
           "max_tokens": np.array([8], np.int64), "z_pool": np.load(tmp_path / "dump" / "z_pool.npy"),
           "t_span": torch.linspace(0, 1, 26).numpy(), "emo_alpha": np.array([1.0], np.float32)}
    want = candle.run(_pipeline(model_dir), "tts", ins)[0]["wav"].reshape(-1)
    assert np.array_equal(_read_out(str(tmp_path / "out.wav")), want)


def _bad(model_dir, tmp_path, *extra, text=TEXT, speaker=None):
    spk = speaker or str(tmp_path / "spk.wav")
    if speaker is None:
        write_wav(spk, _speech(), SR, "i16")
    args = ["--model-dir", model_dir, "--speaker", spk, "-o", tmp_path / "o.wav", "--greedy", "--segment-tokens", SEG]
    if text is not None:
        args += ["--text", text]
    p = cli(*args, *extra, check=False)
    assert "panicked" not in p.stderr and "RUST_BACKTRACE" not in p.stderr, p.stderr
    return p


def test_cli_bad_inputs(model_dir, tmp_path):
    def refused(p, *words):
        assert p.returncode == 2, (p.returncode, p.stderr)
        for w in words:
            assert w in p.stderr, (w, p.stderr)
        assert not os.path.exists(tmp_path / "o.wav")

    # missing files: all listed at once
    refused(_bad(model_dir, tmp_path, "--emotion", tmp_path / "nope_emo.wav", speaker=str(tmp_path / "nope_spk.wav")),
            "nope_spk.wav", "nope_emo.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    refused(_bad(model_dir, tmp_path, speaker=str(tmp_path / "empty.wav")), "not a readable WAV")
    (tmp_path / "junk.wav").write_bytes(b"RIFF1234WAVEjunkjunkjunk")
    refused(_bad(model_dir, tmp_path, speaker=str(tmp_path / "junk.wav")), "not a readable WAV")
    write_wav(str(tmp_path / "nosamples.wav"), np.zeros((1, 0), np.float32), SR, "i16")
    refused(_bad(model_dir, tmp_path, speaker=str(tmp_path / "nosamples.wav")), "no samples")
    refused(_bad(model_dir, tmp_path, text="   "), "text is empty")
    refused(_bad(model_dir, tmp_path, text="\u200b\u200b"), "gives no tokens")
    refused(_bad(model_dir, tmp_path, "--emo-alpha", "1.5"), "--emo-alpha 1.5", "[0, 1]")
    refused(_bad(model_dir, tmp_path, "--emo-alpha", "-0.1"), "--emo-alpha -0.1")
    refused(_bad(model_dir, tmp_path, "--emotion-vector", "0.1,0.2,0.3"), "8 weights expected", "got 3")
    refused(_bad(model_dir, tmp_path, "--emotion-vector", "0,0,0,0,0,0,0,-1"), "≥ 0")
    refused(_bad(model_dir, tmp_path, "--device", "cuda"), "without CUDA")
    refused(_bad(model_dir, tmp_path, "--max-mel-tokens", "25"), "--max-mel-tokens 25", "[1, 24]")
    write_wav(str(tmp_path / "emo.wav"), _speech(0.2, 16000)[None], 16000, "i16")
    refused(_bad(model_dir, tmp_path, "--emotion", tmp_path / "emo.wav", "--emotion-vector", "0,0,0,0,0,0,0,1"),
            "cannot be used with")
    refused(_bad(model_dir, tmp_path, "--text-file", tmp_path / "nope.txt", text=None), "nope.txt")
    p = _bad(model_dir, tmp_path, text=None)
    assert p.returncode == 2 and "--text" in p.stderr  # clap: one of --text / --text-file


def test_cli_model_dir_errors(model_dir, tmp_path):
    """Missing official files are listed at once; a missing or stale conversion names the command."""
    import shutil

    d = str(tmp_path / "dir")
    shutil.copytree(model_dir, d)
    spk = str(tmp_path / "spk.wav")
    write_wav(spk, _speech(), SR, "i16")
    base = ["--speaker", spk, "--text", TEXT, "-o", tmp_path / "o.wav", "--greedy"]
    os.remove(os.path.join(d, "gpt.pth"))
    os.remove(os.path.join(d, "campplus", "campplus_cn_common.bin"))
    p = cli("--model-dir", d, *base, check=False)
    assert p.returncode == 2 and "gpt.pth" in p.stderr and "campplus_cn_common.bin" in p.stderr, p.stderr
    shutil.rmtree(d)
    shutil.copytree(model_dir, d)
    shutil.rmtree(os.path.join(d, "candle"))
    p = cli("--model-dir", d, *base, check=False)
    assert p.returncode == 2 and f"indextts-convert {d}" in p.stderr, p.stderr
    assert C.main([d, "--no-progress"]) == 0
    os.utime(os.path.join(d, "config.yaml"))  # edited after the conversion
    p = cli("--model-dir", d, *base, check=False)
    assert p.returncode == 2 and "older than" in p.stderr and f"indextts-convert {d}" in p.stderr, p.stderr


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_cli_official_config_maps_to_official_configs(tmp_path, size):
    """config.yaml + the external config.json files, as `official-dir` writes them (the official
    keys; at full size no `candle_hardcoded.yaml`), map to exactly the pipeline's configs."""
    written = O.write_configs(str(tmp_path), size)
    assert (OC.HARDCODED_FILE in written) == (size == "tiny")
    got = OC.pipeline_configs(str(tmp_path))
    want = {k: ({**v, "with_stats": True} if k == "w2v_bert" else v) for k, v in PP.P.CONFIGS[size].items()}
    assert got == want


@pytest.mark.parametrize("edit,words", [
    (lambda c: c["gpt"].update(bogus=1), ["gpt", "bogus"]),
    (lambda c: c["s2mel"]["DiT"].update(f0_condition=True), ["f0_condition", "not supported"]),
    (lambda c: c["vocoder"].update(type="hifigan"), ["vocoder.type"]),
    (lambda c: c.update(version=2.5), ["version"]),
    (lambda c: c.pop("gpt_checkpoint"), ["gpt_checkpoint", "missing"]),
])
def test_cli_official_config_refusals(tmp_path, edit, words):
    import yaml

    O.write_configs(str(tmp_path), "full")
    p = tmp_path / "config.yaml"
    c = yaml.safe_load(p.read_text())
    edit(c)
    p.write_text(yaml.safe_dump(c))
    with pytest.raises(OC.OfficialConfigError) as e:
        OC.pipeline_configs(str(tmp_path))
    for w in words:
        assert w in str(e.value)


def test_cli_bigvgan_training_keys_stripped_unknown_refused(tmp_path):
    O.write_configs(str(tmp_path), "full")
    p = tmp_path / "bigvgan_v2_22khz_80band_256x" / "config.json"
    c = json.loads(p.read_text())
    assert "learning_rate" in c and "dist_config" in c
    assert "learning_rate" not in OC.pipeline_configs(str(tmp_path))["bigvgan"]
    p.write_text(json.dumps({**c, "use_cuda_kernel_maybe": True}))
    with pytest.raises(OC.OfficialConfigError, match="use_cuda_kernel_maybe"):
        OC.pipeline_configs(str(tmp_path))


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**31 + 5])
def test_cli_noise_is_torch_randn(seed):
    """`TorchCpuGenerator::normal_f32(n)` = torch.randn(n) after torch.manual_seed(seed): bit-exact
    below 16 values (the scalar double path); from 16 on the uniforms and the Box–Muller blocks are
    torch's, the log/cos/sin differ from torch's SLEEF (AVX2) kernels by ≤ 3 ulp (measured: 3)."""
    opts = lambda d: np.frombuffer(json.dumps(d).encode(), np.uint8).astype(np.int64)  # noqa: E731
    for n in (1, 2, 7, 15, 16, 17, 31, 100, 4097):
        got = candle.transform("sampling.normal", opts({"seed": seed, "n": n}))[0]
        torch.manual_seed(seed)
        want = torch.randn(n).numpy()
        if n < 16:
            assert np.array_equal(got, want), (seed, n)
        else:
            ulps = np.abs(got - want) / np.spacing(np.abs(want))
            assert ulps.max() <= 3, (seed, n, ulps.max())


def test_cli_python_api_equals_cli(model_dir, tmp_path):
    """`indextts2_candle.infer_v2.IndexTTS2(...).infer(...)` writes the CLI's samples (stereo 44.1 kHz
    speaker, emotion clip at 48 kHz, same seed); unsupported official options are refused."""
    from indextts2_candle.infer_v2 import IndexTTS2, UnsupportedOption

    x = _speech(0.45, 44100)
    write_wav(str(tmp_path / "spk.wav"), np.stack([x, 0.5 * x[::-1]]), 44100, "i16")
    write_wav(str(tmp_path / "emo.wav"), _speech(0.3, 48000)[None], 48000, "i24")
    cli("--model-dir", model_dir, "--speaker", tmp_path / "spk.wav", "--emotion", tmp_path / "emo.wav", "--emo-alpha", "0.7",
        "--text", TEXT, "-o", tmp_path / "cli.wav", "--seed", "5", "--segment-tokens", SEG, "--interval-ms", "100")
    tts = IndexTTS2(cfg_path=os.path.join(model_dir, "config.yaml"), model_dir=model_dir, device="cpu")
    out = tts.infer(str(tmp_path / "spk.wav"), TEXT, str(tmp_path / "api.wav"), emo_audio_prompt=str(tmp_path / "emo.wav"),
                    emo_alpha=0.7, interval_silence=100, max_text_tokens_per_segment=int(SEG), seed=5)
    assert out == str(tmp_path / "api.wav")
    assert np.array_equal(_read_out(out), _read_out(str(tmp_path / "cli.wav")))
    spk = str(tmp_path / "spk.wav")
    for kw, word in [({"use_emo_text": True}, "QwenEmotion"), ({"emo_text": "happy"}, "QwenEmotion"),
                     ({"use_random": True}, "use_random"), ({"typical_p": 0.5}, "typical_p")]:
        with pytest.raises(UnsupportedOption, match=word):
            tts.infer(spk, TEXT, None, **kw)
    with pytest.raises(ValueError, match="8 weights expected"):
        tts.infer(spk, TEXT, None, emo_vector=[0.1])
    with pytest.raises(ValueError, match="max_mel_tokens"):
        tts.infer(spk, TEXT, None, max_mel_tokens=25)
    with pytest.raises(ValueError, match="emo_alpha"):
        tts.infer(spk, TEXT, None, emo_alpha=2.0)
    with pytest.raises(Exception, match="temperature"):  # the Rust DecodeConfig's own check
        tts.infer(spk, TEXT, None, temperature=0.0, max_text_tokens_per_segment=int(SEG), max_mel_tokens=4, seed=0)
    with pytest.raises(UnsupportedOption, match="use_fp16"):
        IndexTTS2(os.path.join(model_dir, "config.yaml"), model_dir, use_fp16=True)


def _py(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p)}
    import sys

    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_cli_parity_and_convert_user_errors(model_dir, tmp_path, capsys):
    """`python -m parity …` and `indextts-convert`: one paragraph on stderr, exit 2, no traceback."""
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "afile").write_text("x")
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    os.remove(partial / "gpt.pth")
    os.remove(partial / "feat2.pt")
    cases = [
        (["-m", "parity", "report", "--checkpoints", empty, "--out", tmp_path / "rep"], ["gpt.pth", "bpe.model", "feat1.pt"]),
        (["-m", "parity", "report", "--checkpoints", tmp_path / "nope"], ["not a directory"]),
        (["-m", "parity", "report", "--models", "nope"], ["unknown models"]),
        (["-m", "parity", "bogus"], ["invalid choice"]),
        (["-m", "parity", "official-dir", tmp_path / "afile"], ["not a directory"]),
        (["-m", "reference.convert", empty], ["config.yaml"]),
        (["-m", "reference.convert", partial], ["gpt.pth", "feat2.pt", "2 file(s)"]),
        (["-m", "reference.convert", tmp_path / "afile"], ["not a model directory"]),
        (["-m", "reference.convert", tmp_path / "nope.pth", tmp_path / "o.safetensors"], ["no such file"]),
    ]
    from parity.__main__ import main as parity_main

    for args, words in cases:  # in process (each interpreter start costs seconds): no exception escapes
        entry = parity_main if args[1] == "parity" else C.main
        capsys.readouterr()
        assert entry([str(a) for a in args[2:]]) == 2, args
        err = capsys.readouterr().err
        for w in words:
            assert w in err, (args, w, err)
    p = _py("-m", "parity", "report", "--checkpoints", empty, "--out", tmp_path / "rep")  # the example
    assert p.returncode == 2 and "Traceback" not in p.stderr and "gpt.pth" in p.stderr, p.stderr


def test_cli_readme_use_it_runs_as_written(tmp_path):
    """The README's "Use it" examples, as written (only /tmp/idx and the output names moved into
    tmp_path). The Python entry points run in process (`python -m parity` = parity.__main__.main,
    `indextts-convert` = reference.convert.main, the Python block by exec; an interpreter start
    costs seconds each), the binaries as subprocesses."""
    import re
    import shlex

    from parity.__main__ import main as parity_main

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    sec = text[text.index("## Use it"):]
    sec = sec[:sec.index("\n## ", 5)]
    bash, py = re.findall(r"```bash\n(.*?)```", sec, re.S)[0], re.findall(r"```python\n(.*?)```", sec, re.S)[0]
    sub = lambda s: (s.replace("/tmp/idx", str(tmp_path / "idx")).replace("out.wav", str(tmp_path / "out.wav"))  # noqa: E731
                     .replace("out_py.wav", str(tmp_path / "out_py.wav")))
    for line in sub(bash).replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[:3] == ["python", "-m", "parity"]:
            assert parity_main(argv[3:]) == 0, line
        elif argv[0] == "indextts-convert":
            assert C.main(argv[1:]) == 0, line
        elif argv[0] == "cargo":  # built by ./run.sh (rebuilding here could drop its --features cuda)
            assert argv[:3] == ["cargo", "build", "--release"] and _bin()
        else:
            assert argv[0] == "./target/release/indextts2", line
            argv[0] = _bin()
            p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, (line, p.stderr)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the example's relative paths
    try:
        exec(compile(sub(py), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert np.array_equal(_read_out(str(tmp_path / "out.wav")), _read_out(str(tmp_path / "out_py.wav")))
