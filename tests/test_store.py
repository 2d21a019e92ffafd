"""The strict store and loader under bad input: every case is a clear Python exception.

Also the proof that no loader can fall back to random or zero weights: removing any key the model
reads makes the load fail with an error naming that key and the file.
"""
from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import indextts_candle
from parity.candle import CheckpointError, InputError, Model, run
from parity.coverage import coverage
from parity.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_bigvgan(fixtures):
    fx = fixtures("bigvgan")
    return fx, load_file(fx.safetensors_path)


def _load(fx, path, faults=()):
    return Model("bigvgan", path, fx.spec.config_json(fx.cfg), "cpu", list(faults))


def _write(tmp_path, sd, name="ckpt.safetensors"):
    p = str(tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, p)
    return p


def test_missing_file(tmp_path, tiny_bigvgan):
    fx, _ = tiny_bigvgan
    with pytest.raises(CheckpointError, match="cannot open checkpoint"):
        _load(fx, str(tmp_path / "nope.safetensors"))


def test_truncated_file(tmp_path, tiny_bigvgan):
    fx, _ = tiny_bigvgan
    data = open(fx.safetensors_path, "rb").read()
    for cut in (3, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=re.escape(str(p))):
            _load(fx, str(p))


def test_corrupt_header(tmp_path, tiny_bigvgan):
    fx, _ = tiny_bigvgan
    cases = {
        "garbage": b"\x00" * 3 + b"not a safetensors file at all" * 4,
        "huge_len": struct.pack("<Q", 2**60) + b"{}",
        "bad_json": struct.pack("<Q", 10) + b"{not json}",
        "bad_offsets": struct.pack("<Q", 64) + json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999]}}).encode().ljust(64),
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(blob)
        with pytest.raises(CheckpointError, match="safetensors|header|truncated"):
            _load(fx, str(p))


def test_wrong_dtype(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    bad = dict(sd, **{"conv_pre.bias": sd["conv_pre.bias"].to(torch.int64)})
    with pytest.raises(CheckpointError, match=r"dtype mismatch for `conv_pre.bias`.*int64"):
        _load(fx, _write(tmp_path, bad))


def test_half_precision_file_is_upcast_and_reported(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    cm = _load(fx, _write(tmp_path, half))
    assert set(cm.requested_keys().values()) == {"float16"}, "the report must show the stored dtype"


def test_shape_mismatch(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    bad = dict(sd, **{"ups.0.0.weight_v": sd["ups.0.0.weight_v"][:, :, :-1]})
    with pytest.raises(CheckpointError, match=r"shape mismatch for `ups.0.0.weight_v`.*file has \[.*\], model expects \["):
        _load(fx, _write(tmp_path, bad))


def test_nan_weight(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    w = sd["resblocks.1.convs1.0.weight_v"].clone()
    w.view(-1)[7] = float("nan")
    with pytest.raises(CheckpointError, match=r"`resblocks.1.convs1.0.weight_v`.*NaN"):
        _load(fx, _write(tmp_path, dict(sd, **{"resblocks.1.convs1.0.weight_v": w})))


def test_model_dtype_is_explicit(tmp_path, tiny_bigvgan, fixtures):
    """Half precision is asked for by name: an unknown dtype, or half precision for a kind that has no
    half port, is refused naming it; a weight that float16 cannot hold is an error naming the key,
    while float32 loads the same file."""
    fx, sd = tiny_bigvgan
    cfg = fx.spec.config_json(fx.cfg)
    with pytest.raises(InputError, match="unsupported model dtype `float8`"):
        Model("bigvgan", fx.safetensors_path, cfg, "cpu", [], "", "float8")
    w2v = fixtures("w2v_bert")
    with pytest.raises(InputError, match="w2v_bert runs in float32 only; float16 is ported for"):
        Model("w2v_bert", w2v.safetensors_path, w2v.spec.config_json(w2v.cfg), "cpu", [], "", "float16")
    key = "conv_pre.bias"
    big = dict(sd)
    big[key] = sd[key].clone().fill_(1e6)
    path = _write(tmp_path, big)
    with pytest.raises(CheckpointError, match=f"`{key}`.*finite as stored \\(float32\\) but overflows the requested float16"):
        Model("bigvgan", path, cfg, "cpu", [], "", "float16")
    Model("bigvgan", path, cfg, "cpu", [], "", "bfloat16")  # bf16 has float32's range
    Model("bigvgan", path, cfg)


def test_extra_key_fails_coverage(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    cm = _load(fx, _write(tmp_path, dict(sd, **{"conv_pre.weight_extra": torch.ones(3)})))
    cov = coverage(MODELS["bigvgan"], cm)
    assert not cov.ok and "conv_pre.weight_extra" in cov.summary()


def test_wrong_nesting_names_the_key_and_the_fix(tmp_path, tiny_bigvgan):
    fx, sd = tiny_bigvgan
    nested = {f"gen.{k}": v for k, v in sd.items()}
    with pytest.raises(CheckpointError, match=r"missing key `conv_pre.weight_g`.*the file has `gen.conv_pre.weight_g`"):
        _load(fx, _write(tmp_path, nested))


def test_fused_weight_is_accepted(tmp_path, tiny_bigvgan):
    """BigVGAN's from_pretrained also takes files whose weight norm was removed (fused `weight`)."""
    fx, sd = tiny_bigvgan
    ref = fx.reference()
    fused = {}
    for k, v in sd.items():
        if k.endswith("weight_g"):
            base = k[: -len("weight_g")]
            g, vv = sd[base + "weight_g"], sd[base + "weight_v"]
            fused[base + "weight"] = g * vv / vv.reshape(vv.shape[0], -1).norm(dim=1).reshape(g.shape)
        elif not k.endswith("weight_v"):
            fused[k] = v
    cm = _load(fx, _write(tmp_path, fused))
    assert coverage(MODELS["bigvgan"], cm).ok
    mel = MODELS["bigvgan"].cases[0].make_inputs(fx.cfg, 0)["mel"]
    out, _ = run(cm, "forward", {"mel": mel})
    with torch.no_grad():
        want = ref(torch.from_numpy(mel)).numpy()
    np.testing.assert_allclose(out["wav"], want, atol=3e-4)


@pytest.mark.parametrize("model", list(MODELS))
def test_every_read_key_is_required(model, tmp_path, fixtures, candle_models):
    """No fallback anywhere: drop any key the model reads and the load fails naming key and file.
    Tiny: every key (up to 150, else an even sample). Official size: an even sample of 16, the
    first and last included (each is a rewrite of the whole checkpoint; the loader's code and the
    key names are the same as at tiny size, where every key is dropped once)."""
    fx = fixtures(model)
    sd = load_file(fx.safetensors_path)
    keys = sorted(candle_models(model).requested_keys())
    step = max(1, len(keys) // (150 if fx.size == "tiny" else 15))
    keys = sorted(set(keys[::step]) | set(keys[-1:]))
    for k in keys:
        p = _write(tmp_path, {kk: v for kk, v in sd.items() if kk != k}, "drop.safetensors")
        try:
            Model(model, p, fx.spec.config_json(fx.cfg), "cpu", [], fx.spec.prefix)
        except CheckpointError as e:
            assert f"`{k}`" in str(e) and p in str(e), f"dropped `{k}`: the error must name it and the file {p}: {e}"
        else:
            pytest.fail(f"{model}: the load succeeded without `{k}` (expected a CheckpointError naming `{k}` and {p}): "
                        f"a fallback stands in for that weight")


# Every zero/one/constant constructor in the crate's non-test code, with why it is not a weight.
# (file, code fragment on that line) -> reason. The scan below fails on any other site, and on an
# entry here that matches no line any more (so the list cannot go stale).
NOT_WEIGHTS = {
    ("dense.rs", "let mut out = vec![0f32; co * ci * k];"): "output buffer of the tap-major copy of a loaded weight (every value written)",
    ("dense.rs", "let mut out = vec![0f32; cin * cout * k];"): "output buffer of the polyphase regrouping of a loaded transposed-conv weight (every value written)",
    ("fastload.rs", "|| vec![0f32; per * row],"): "per-task scratch block of the weight-norm fold, read from the file before use",
    ("dense.rs", "let mut tile = vec![0f32; k * OB * IB];"): "per-task L1 tile of the polyphase regrouping (filled from the loaded weight before use)",
    ("fastload.rs", "let mut gb = vec![0u8; co * 4];"): "buffer of the weight-norm fold's g bytes, filled by the file read before use",
    ("campplus/fbank.rs", "vec![0f32; frames * bins]"): "output buffer of the fused fbank (every frame written)",
    ("campplus/fbank.rs", "vec![0f64; win], vec![0f64; nb], vec![0f64; bins]"): "per-thread frame / spectrum / mel scratch of the fused fbank",
    ("campplus/fused.rs", "vec![0f32; x.len()]"): "output buffer of the fused BatchNorm kernel",
    ("campplus/fused.rs", "vec![0f64; b * k * c * t]"): "im2col columns of the dilated CAM conv (conv zero padding)",
    ("campplus/fused.rs", "vec![0f32; b * cout * n]"): "output buffer of the blocked head conv",
    ("mel.rs", "input: vec![0.0; self.n]"): "FFT input scratch",
    ("mel.rs", "vec![0f32; n_fft / 2 + 1], vec![0f32; mels]"): "per-thread spectrum / mel scratch of the fused mel",
    ("mel.rs", "let mut out = vec![0f32; b * mels * frames];"): "output buffer of the fused mel (every frame written)",
    ("mel.rs", "(vec![0f32; nb], vec![0f32; mels])"): "spectrum / mel scratch of the centred mel",
    ("mel.rs", "let mut out = vec![0f32; b * mels * t];"): "output buffer of mel_basis",
    ("mel.rs", "let mut col = vec![0f32; mels];"): "one frame's mel column scratch",
    ("campplus/fbank.rs", "vec![0f64; out_cols]"): "scratch row of the fbank frame loop",
    ("campplus/mod.rs", "(vec![1.0; ch], vec![0.0; ch])"): "BatchNorm(affine=False) has no weight: the official identity affine (config_str `batchnorm_`)",
    ("dit/mod.rs", "x.narrow(2, 0, tp)?.zeros_like()"): "official: the prompt frames of x are zeroed in the estimator input",
    ("dit/mod.rs", "mu.zeros_like()"): "official zero_prompt_speech_token: mu's first prompt_len channels zeroed",
    ("dit/mod.rs", "z.narrow(2, tp, tt - tp)?.zeros_like()"): "official: prompt_x is zero after the prompt",
    ("dit/mod.rs", "prompt_x.zeros_like()"): "official CFG: the unconditional half has a zero prompt",
    ("dit/mod.rs", "style.zeros_like()"): "official CFG: the unconditional half has a zero style",
    ("dit/mod.rs", "Tensor::cat(&[&mu, &mu.zeros_like()?], 0)"): "official CFG: the unconditional half has a zero mu",
    ("dit/mod.rs", "return vec![0.0];"): "t_span of 0 steps (torch.linspace(0, 1, 1))",
    ("gpt_decode.rs", "&vec![0; n]"): "cache row indices: every beam copies row 0 of the prefix",
    ("mel.rs", "vec![0.0; cfg.n_fft]"): "the Hann window, filled right after",
    ("mel.rs", "vec![0.0; pad]"): "padding buffer of the STFT frame (filled by reflection)",
    ("mel.rs", "vec![0f32; b * nb * frames * 2]"): "output buffer of the STFT",
    ("pipeline.rs", "None => vec![0.0; groups],"): "no emotion vector given: infer_v2 mixes nothing (Σw = 0)",
    ("resample.rs", "vec![0f32; self.new * taps]"): "the kernel's buffer, filled from the sinc formula right after",
    ("resample.rs", "vec![0f32; k.out_len(r.len())]"): "output buffer of the polyphase sums",
    ("resample.rs", "vec![0f32; n]"): "the 200 ms of silence infer_v2 puts between segments",
    ("semantic_codec.rs", "let mut out = vec![0i64; n];"): "output buffer of the fused nearest-code search (every row written)",
    ("semantic_codec.rs", "let mut dots = vec![0f32; k];"): "per-unit scratch of the dot products, reset per row",
    ("w2v_features.rs", "vec![0f64; NBINS]"): "power spectrum buffer",
    ("w2v_features.rs", "vec![vec![0f32; m]; n]"): "normalised features' buffer",
    ("w2v_features.rs", "vec![0f32; n]"): "column buffer of the normalisation",
    ("wavenet.rs", "zeros_like()?.broadcast_as(dims)"): "official F.pad of the activation (zeros), not a weight",
    ("wavenet.rs", "None => Ok(x.zeros_like()?)"): "official: WaveNet output is zeros when it has no layers",
}


def test_no_random_or_zero_weight_constructors_in_rust():
    """Source-level proof: the Candle crate has no random/VarMap/zero/one/constant constructor
    outside tests, except the explicit, commented NOT_WEIGHTS sites (activation padding, scratch
    buffers, the official code's own zeros)."""
    # `pad_with_zeros(` is zero padding of activations (allowed), not a weight constructor.
    pat = re.compile(r"randn|rand_uniform|Tensor::rand|VarMap|Init::|VarBuilder::zeros|(?<!pad_with_)zeros\(|ones\("
                     r"|Tensor::full\(\s*0|zeros_like|ones_like|Tensor::new\(&\[0|vec!\[0")
    hits, used = [], set()
    src = os.path.join(ROOT, "crates", "indextts2_candle", "src")
    files = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs if f.endswith(".rs"))
    assert "lib.rs" in files and "text/mod.rs" in files  # module folders are walked too
    for name in files:
        text = open(os.path.join(src, name)).read().split("#[cfg(test)]")[0]
        for i, line in enumerate(text.splitlines()):
            code = line.strip()
            if code.startswith("//") or not pat.search(code.replace("leading_zeros()", "")):
                continue
            allowed = [k for k in NOT_WEIGHTS if k[0] == name and k[1] in code]
            if allowed:
                used.update(allowed)
            else:
                hits.append(f"{name}:{i + 1}: {code}")
    assert not hits, "weight-like constructors found (a weight must come from the file):\n" + "\n".join(hits)
    stale = sorted(set(NOT_WEIGHTS) - used)
    assert not stale, f"NOT_WEIGHTS entries that match no line: {stale}"


class TestBadForwardInput:
    def test_wrong_channels(self, tiny_bigvgan, candle_models):
        cm = candle_models("bigvgan")
        with pytest.raises(InputError, match="expects mel"):
            run(cm, "forward", {"mel": np.zeros((1, 7, 10), np.float32)})

    def test_wrong_rank_and_empty(self, candle_models):
        cm = candle_models("bigvgan")
        with pytest.raises((InputError, indextts_candle.CandleError)):
            run(cm, "forward", {"mel": np.zeros((16, 10), np.float32)})
        with pytest.raises(InputError):
            run(cm, "forward", {"mel": np.zeros((1, 16, 0), np.float32)})

    def test_nan_int_and_unknown_inputs(self, candle_models, fixtures):
        cm = candle_models("bigvgan")
        m = fixtures("bigvgan").cfg["num_mels"]  # a well-formed mel at this size, so only the fault under test is wrong
        with pytest.raises(InputError, match="NaN"):
            run(cm, "forward", {"mel": np.full((1, m, 4), np.nan, np.float32)})
        with pytest.raises(InputError, match="float32"):
            run(cm, "forward", {"mel": np.zeros((1, m, 4), np.int64)})
        with pytest.raises(InputError, match="unexpected `x`"):
            run(cm, "forward", {"mel": np.zeros((1, m, 4), np.float32), "x": np.zeros(1, np.float32)})
        with pytest.raises(InputError, match="no method"):
            run(cm, "nope", {})
        with pytest.raises(InputError, match="unknown taps"):
            run(cm, "forward", {"mel": np.zeros((1, m, 4), np.float32)}, inject={"no.such.tap": np.zeros(1, np.float32)})

    def test_bad_wire_bytes_and_config(self, tiny_bigvgan):
        fx, _ = tiny_bigvgan
        cm = _load(fx, fx.safetensors_path)
        with pytest.raises(InputError, match="needs .* bytes"):
            cm.run("forward", {"mel": ("float32", [1, 16, 4], b"\x00" * 7)})
        with pytest.raises(InputError, match="invalid bigvgan config"):
            Model("bigvgan", fx.safetensors_path, "{not json", "cpu")
        with pytest.raises(InputError, match="unknown model kind"):
            Model("nope", fx.safetensors_path, "{}", "cpu")
        with pytest.raises(InputError, match="unknown device"):
            Model("bigvgan", fx.safetensors_path, fx.spec.config_json(fx.cfg), "tpu")


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, body: struct.pack("<Q", n) + body, st.integers(0, 2**64 - 1), st.binary(max_size=64)),
    st.builds(lambda obj, pad: (lambda b: struct.pack("<Q", len(b)) + b + pad)(json.dumps(obj).encode()),
              st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({
                  "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "XX", ""]),
                  "shape": st.lists(st.integers(-2, 2**40), max_size=3),
                  "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3)}), max_size=3),
              st.binary(max_size=32)),
))
def test_header_fuzz_never_panics(tmp_path, header):
    """Arbitrary headers: either a clean CheckpointError or a successful open — never a panic."""
    p = tmp_path / "fuzz.safetensors"
    p.write_bytes(header)
    try:
        indextts_candle.inspect_checkpoint(str(p))
    except CheckpointError:
        pass
