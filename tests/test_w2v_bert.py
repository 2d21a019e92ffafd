"""Wav2Vec-BERT checks beyond the table-driven walk: front-end edge cases, any audio length,
loader leniency the official `from_pretrained` has (prefix, extra keys, no masked_spec_embed),
bad input, and the official-size benchmark."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from parity import candle
from parity.bench import measure
from parity.candle import InputError, Model
from parity.compare import compare_noise
from parity.coverage import coverage
from parity.registry import MODELS
from parity.tolerances import rule
from reference import w2v_bert as R
from reference.common import Taps

SPEC = MODELS["w2v_bert"]
RULE = lambda name: rule("w2v_bert", name, "cpu", "float32")  # noqa: E731


def _features(cm, audio):
    out, _ = candle.run(cm, "features", {"audio": audio})
    return out


def _assert_features_match(got, audio):
    ref = R.extract(audio)
    assert got["input_features"].shape == ref["input_features"].shape
    np.testing.assert_array_equal(got["attention_mask"], ref["attention_mask"])
    # transformers' front end is numpy float32 whatever the input dtype (float64 audio is cast to
    # float32), so its float64 and float32 runs are the same array: an exception row (exact).
    c = compare_noise("output:input_features", ref["input_features"], ref["input_features"], got["input_features"],
                      RULE("output:input_features"))
    assert c.ok, c.line()


@pytest.mark.parametrize("clip", ["speech_16k.wav", "short_16k.wav", "silence_16k.wav", "odd_16k.wav"])
def test_w2v_bert_features_match_seamless_extractor(clip, candle_models):
    audio = R.load_clip(clip)
    got = _features(candle_models("w2v_bert"), audio)
    _assert_features_match(got, audio)
    # Odd fbank frame counts get one padding frame (value 1) that the mask hides.
    n_fbank = 1 + (len(audio) - 400) // 160
    assert got["attention_mask"].sum() == n_fbank // 2
    if n_fbank % 2:
        assert got["attention_mask"][0, -1] == 0
        np.testing.assert_array_equal(got["input_features"][0, -1, 80:], 1.0)


def test_w2v_bert_features_accept_batch_of_one_and_scale(candle_models):
    cm = candle_models("w2v_bert")
    audio = R.load_clip("odd_16k.wav")
    a = _features(cm, audio)
    b = _features(cm, audio[None])
    np.testing.assert_array_equal(a["input_features"], b["input_features"])
    # Quiet and loud versions of the same clip: the per-bin normalisation removes most of the gain.
    _assert_features_match(_features(cm, 0.01 * audio), 0.01 * audio)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(length=st.integers(560, 20000), offset=st.integers(0, 60000), gain=st.floats(0.05, 1.0))
def test_w2v_bert_any_audio_length(length, offset, gain, fixtures, candle_models):
    """Features and embeddings match for any clip length ≥ 2 fbank frames (odd/even frame counts,
    masked last frame or not, fewer frames than the depthwise kernel or the relative window)."""
    fx = fixtures("w2v_bert")
    cm = candle_models("w2v_bert")
    speech = R.load_clip("speech_16k.wav")
    audio = (gain * speech[offset: offset + length]).astype(np.float32)
    if len(audio) < 560:
        audio = (gain * speech[:length]).astype(np.float32)
    _assert_features_match(_features(cm, audio), audio)
    got, _ = candle.run(cm, "embed_audio", {"audio": audio})
    ref64 = R.run_embed_audio(fx.reference("cpu", torch.float64), {"audio": torch.from_numpy(audio)}, None)
    ref = R.run_embed_audio(fx.reference(), {"audio": torch.from_numpy(audio)}, None)
    assert set(got) == set(ref64), (sorted(got), sorted(ref64))  # `emb` only where the file has stats
    for k in ref64:
        c = compare_noise(f"output:{k}", ref64[k].numpy(), ref[k].numpy(), got[k], RULE(f"output:{k}"))
        assert c.ok, c.line()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [True, False])
def test_w2v_bert_tapped_reference_is_transformers(masked, dtype, fixtures):
    """The tapped reference (every leaf routed through Taps, the attention core re-expressed op for
    op) computes exactly what the untouched transformers class computes, bit for bit, in float32
    and float64; and every tap of `tap_names` was recorded, in that order."""
    fx = fixtures("w2v_bert")
    model = fx.reference("cpu", dtype)
    inputs = R.extract(R.load_clip("odd_16k.wav"))
    x = torch.from_numpy(inputs["input_features"]).to(dtype)
    mask = torch.from_numpy(inputs["attention_mask"]) if masked else None
    taps = Taps()
    got = R.run_with_taps(model, x, mask, taps)
    with torch.no_grad():
        want = model.forward(input_features=x, attention_mask=mask, output_hidden_states=True).hidden_states[model.output_layer]
    assert got["hidden"].dtype == dtype
    assert torch.equal(got["hidden"], want), (got["hidden"] - want).abs().max().item()
    assert list(taps.outputs) == R.tap_names(fx.cfg, masked)
    assert all(v.dtype == dtype for v in taps.outputs.values())
    assert "forward" not in vars(model.encoder.layers[0].self_attn)  # the wrappers are gone again


@pytest.mark.parametrize("n", [0, 1, 399, 400, 559])
def test_w2v_bert_too_short_audio_is_an_input_error(n, candle_models):
    with pytest.raises(InputError, match="samples"):
        _features(candle_models("w2v_bert"), np.zeros(n, np.float32))


class TestW2vBertBadInput:
    def test_audio_rank(self, candle_models):
        with pytest.raises(InputError, match="one clip"):
            _features(candle_models("w2v_bert"), np.zeros((2, 4000), np.float32))

    def test_feature_shape(self, candle_models):
        cm = candle_models("w2v_bert")
        for x in (np.zeros((1, 5, 159), np.float32), np.zeros((5, 160), np.float32), np.zeros((1, 0, 160), np.float32)):
            with pytest.raises(InputError, match="input_features"):
                candle.run(cm, "forward", {"input_features": x})

    def test_mask_shape_and_missing(self, candle_models):
        cm = candle_models("w2v_bert")
        x = np.zeros((1, 6, 160), np.float32)
        with pytest.raises(InputError, match="attention_mask"):
            candle.run(cm, "forward_masked", {"input_features": x, "attention_mask": np.ones((1, 5), np.int64)})
        with pytest.raises(InputError, match="attention_mask"):
            candle.run(cm, "forward_masked", {"input_features": x})
        with pytest.raises(InputError, match="no method"):
            candle.run(cm, "nope", {"input_features": x})

    def test_bad_config(self, fixtures):
        import json

        fx = fixtures("w2v_bert")
        base = json.loads(SPEC.config_json(fx.cfg))
        for patch, msg in [({"output_layer": fx.cfg["num_hidden_layers"] + 1}, "output_layer"), ({"output_layer": 0}, "output_layer"),
                           ({"hidden_act": "gelu"}, "hidden_act"), ({"position_embeddings_type": "rotary"}, "relative_key"),
                           ({"conv_depthwise_kernel_size": 4}, "odd")]:
            with pytest.raises(InputError, match=msg):
                Model("w2v_bert", fx.safetensors_path, json.dumps({**base, **patch}), "cpu", [], "")


def _run_hidden(cm, inputs):
    out, _ = candle.run(cm, "forward_masked", inputs)
    return out


def test_w2v_bert_loader_accepts_prefix_extras_and_no_masked_spec_embed(tmp_path, fixtures, candle_models):
    """What `from_pretrained` tolerates, the Candle loader tolerates too: a `wav2vec2_bert.` prefix
    (via `prefix=`), extra keys, and a file without `masked_spec_embed`."""
    fx = fixtures("w2v_bert")
    sd = load_file(fx.safetensors_path)
    inputs = SPEC.cases[0].make_inputs(fx.cfg, 0)
    want = _run_hidden(candle_models("w2v_bert"), inputs)
    cfg = SPEC.config_json(fx.cfg)

    stats = {k: v for k, v in sd.items() if k.startswith(R.STATS + ".")}
    model = {k: v for k, v in sd.items() if k not in stats}
    p = str(tmp_path / "prefixed.safetensors")
    save_file({**{f"wav2vec2_bert.{k}": v for k, v in model.items()}, **stats,
               "lm_head.weight": torch.ones(3, 3)}, p)
    cm = Model("w2v_bert", p, cfg, "cpu", [], "wav2vec2_bert")
    got = _run_hidden(cm, inputs)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert "lm_head.weight" in cm.unused_keys()

    p2 = str(tmp_path / "no_mask_vector.safetensors")
    save_file({k: v for k, v in sd.items() if k != "masked_spec_embed"}, p2)
    cm2 = Model("w2v_bert", p2, cfg, "cpu", [], "")
    assert coverage(SPEC, cm2).ok
    got = _run_hidden(cm2, inputs)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_w2v_bert_faults_leave_features_alone(candle_models):
    """The model faults are model faults: the front end is unchanged by them."""
    audio = R.load_clip("short_16k.wav")
    base = _features(candle_models("w2v_bert"), audio)
    for f in SPEC.faults:
        got = _features(candle_models("w2v_bert", "cpu", (f,)), audio)
        np.testing.assert_array_equal(got["input_features"], base["input_features"])


@pytest.mark.benchmark(group="w2v_bert")
@pytest.mark.parametrize("side", ["candle", "torch", "torch_17_layers"])
def test_bench_w2v_bert(side, benchmark, bench_fixtures):
    """10 s of 16 kHz audio: features + model up to hidden_states[17], official size, CPU fp32.
    `torch` runs all 24 layers as IndexTTS2 does (transformers has no early exit);
    `torch_17_layers` drops the unused ones for a like-for-like comparison with Candle."""
    fx = bench_fixtures("w2v_bert")
    speech = R.load_clip("speech_16k.wav")
    audio = np.concatenate([speech] * (160000 // len(speech) + 1))[:160000].astype(np.float32)
    if side == "candle":
        cm = fx.candle("cpu")
        fn = lambda: candle.run(cm, "embed_audio", {"audio": audio})  # noqa: E731
    else:
        ref = fx.reference("cpu")
        if side == "torch_17_layers":
            import copy

            def shallow(m):  # shares the weights, owns its submodule table (the cached model is untouched)
                c = copy.copy(m)
                c._modules = dict(m._modules)
                return c

            enc = shallow(ref.encoder)
            enc.layers = torch.nn.ModuleList(list(ref.encoder.layers)[: fx.cfg["output_layer"]])
            ref = shallow(ref)
            ref.encoder = enc
        t = torch.from_numpy(audio)

        def fn():
            with torch.no_grad():
                return R.run_embed_audio(ref, {"audio": t}, None)
    measure(benchmark, fn, rounds=3, audio_s=10.0)
