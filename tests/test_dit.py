"""s2mel DiT / CFM checks beyond the table-driven walk (tests/test_models.py runs the `dit` row's
manifest, coverage, chained + injected walks of `dit_estimator` and `dit_cfm`, and the faults).

Here: the whole `s2mel.pth` manifest, a complete official-layout file shared by both s2mel kinds,
the exact unused allow-list, the estimator at several t, the 25 per-step states, a property test
over mel and prompt lengths, bad inputs, and the benchmark.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.bench import measure
from parity.candle import InputError
from parity.compare import compare_noise
from parity.coverage import coverage
from parity.registry import MODELS
from parity.runner import TORCH_DTYPES, layer_walk, run_reference
from parity.tolerances import rule
from reference import s2mel as R
from reference.common import synthetic_init
from reference.convert import convert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = MODELS["dit"]
EST = next(c for c in SPEC.cases if c.name == "dit_estimator")
CFM_CASE = next(c for c in SPEC.cases if c.name == "dit_cfm")
warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated")


def _noise_ok(fx, case, inputs, got, keys):
    """Candle's outputs against the float64 reference, judged by the float32 reference's own noise."""
    ref64, _ = run_reference(fx, case, inputs, dtype=torch.float64)
    ref32, _ = run_reference(fx, case, inputs, dtype=torch.float32)
    for k in keys:
        c = compare_noise(f"output:{k}", ref64[k], ref32[k], got[k], rule("dit", f"output:{k}", "cpu", "float32"))
        assert c.ok, c.line()
    return ref64


def test_dit_whole_s2mel_manifest_exact():
    """`net = {cfm, length_regulator, gpt_layer}` at official size: every key, shape, dtype, buffer,
    in the manifest's order (input_pos int64, t_embedder{,2}.freqs)."""
    with open(os.path.join(ROOT, "fixtures", "manifests", "s2mel.json")) as f:
        manifest = json.load(f)["tensors"]
    model = R.build_full_on_meta()
    sd = model.state_dict()
    ours = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert ours == [(t["key"], t["shape"], t["dtype"]) for t in manifest]
    buffers = {k for k, _ in model.named_buffers()}
    assert buffers == {t["key"] for t in manifest if t["kind"] == "buffer"}
    assert sd["net.cfm.estimator.input_pos"].dtype == torch.int64


@pytest.fixture(scope="module")
def complete_file(tmp_path_factory):
    """A complete tiny s2mel.pth in the official nesting, converted like a real file."""
    d = tmp_path_factory.mktemp("s2mel")
    m = R.S2Mel(dict(R.TINY_DIT), dict(R.TINY_LR))
    synthetic_init(m, 0)
    sd = m.state_dict()
    net: dict = {}
    for k, v in sd.items():
        _, sub, rest = k.split(".", 2)
        net.setdefault(sub, {})[rest] = v
    torch.save({"net": net, "optimizer": {"step": 1}}, d / "s2mel.pth")
    convert(str(d / "s2mel.pth"), str(d / "s2mel.safetensors"), progress=False)
    return m, str(d / "s2mel.safetensors")


def test_dit_complete_file_both_kinds_share_it(complete_file):
    """Both kinds load from one real-layout file; each leaves unread only its allow-list (the other
    kind's subtree + the documented dead weights), and the estimator still matches."""
    m, path = complete_file
    dit = candle.Model("dit", path, json.dumps(R.TINY_DIT), "cpu", [], "net.cfm")
    reg = candle.Model("length_regulator", path, json.dumps(R.TINY_LR), "cpu", [], "net")
    inputs = EST.make_inputs(R.TINY_DIT, 0)
    got, _ = candle.run(dit, "estimator", inputs)
    candle.run(reg, "forward", MODELS["length_regulator"].cases[0].make_inputs(R.TINY_LR, 0))
    for spec, cm in ((SPEC, dit), (MODELS["length_regulator"], reg)):
        cov = coverage(spec, cm)
        assert cov.ok, cov.summary()
    refs = {}
    with torch.no_grad():
        for dt in (torch.float64, torch.float32):
            cfm = R.CFM(dict(R.TINY_DIT))
            cfm.load_state_dict(m.net["cfm"].state_dict(), strict=True)
            cfm = cfm.to(dt).eval()
            i = {k: torch.from_numpy(v).to(dt) if v.dtype == np.float32 else torch.from_numpy(v) for k, v in inputs.items()}
            refs[dt] = R.run_estimator(cfm, i, None)["velocity"].numpy()
    c = compare_noise("output:velocity", refs[torch.float64], refs[torch.float32], got["velocity"],
                      rule("dit", "output:velocity", "cpu", "float32"))
    assert c.ok, c.line()


# Non-default official arguments the reference implements (the config-space parity rows).
OFFICIAL_VARIANTS = [{}, {"is_causal": True}, {"long_skip_connection": False}, {"uvit_skip_connection": False},
                     {"style_condition": False, "wavenet_style_condition": False}, {"zero_prompt_speech_token": True},
                     {"block_size": 16384, "content_type": "continuous", "wavenet_dilation_rate": 2}]


@pytest.mark.parametrize("over", OFFICIAL_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "official")
def test_dit_reference_matches_official_code(over):
    """Our reference against the official CFM/DiT/gpt_fast/WaveNet code itself (PyPI snapshot), same
    synthetic weights, at the official values and at each implemented non-default argument: keys load
    strictly both ways, the estimator (with a masked row) and the full 25-step CFG solve agree bit for
    bit. The official DiT hard-codes input_pos 16384 (whatever block_size says) and a 256-wide t embedding."""
    classes = R.official_classes()
    if classes is None:
        pytest.fail("official index-tts package missing (run.sh installs it) (pip install --no-deps tts-webui-index-tts==2.0.1)")
    cfg = dict(R.TINY_DIT, freq_dim=256, **over)
    off = classes[0](R.official_args(cfg)).eval()
    synthetic_init(off, 0)
    ours = R.CFM(cfg).eval()
    ours.load_state_dict(off.state_dict(), strict=True)
    off.estimator.setup_caches(max_batch_size=1, max_seq_length=8192)  # as infer_v2 (RoPE tables)
    i = {k: torch.from_numpy(v) for k, v in R.estimator_inputs(cfg, 0).items()}
    c = {k: torch.from_numpy(v) for k, v in R.cfm_inputs(cfg, 0).items()}
    with torch.no_grad():
        a = off.estimator(i["x"], i["prompt_x"], i["x_lens"], i["t"], i["style"], i["cond"])
        b = R.run_estimator(ours, i, None)["velocity"]
        assert torch.equal(a, b), (a - b).abs().max()  # bit-exact (same op order, RoPE via polar)
        # the official solver zeroes prompt frames of x and (zero_prompt_speech_token) mu in place
        a = off.solve_euler(c["z"].clone(), c["x_lens"], c["prompt"], c["mu"].clone(), c["style"], None, c["t_span"], 0.7)
        b = R.run_cfm(ours, c, None)["mel"]
        assert torch.equal(a, b), (a - b).abs().max()


def test_dit_unused_keys_are_exactly_the_dead_weights(fixtures, candle_models):
    fx = fixtures("dit")
    cm = candle_models("dit")
    candle.run(cm, "estimator", EST.make_inputs(fx.cfg, 0))
    own = [k for k in cm.unused_keys() if k.startswith("net.cfm.")]  # a real file also holds the LR part
    assert sorted(own) == sorted(f"net.cfm.estimator.{k}" for k in [
        "cond_embedder.weight", "content_mask_embedder.weight", "x_embedder.bias", "x_embedder.weight_g", "x_embedder.weight_v"])


@pytest.mark.parametrize("t", [0.0, 0.04, 0.5, 0.96, 1.0])
@pytest.mark.parametrize("mode", ["chained", "injected"])
def test_dit_estimator_at_fixed_t(t, mode, fixtures, candle_models):
    fx = fixtures("dit")
    inputs = EST.make_inputs(fx.cfg, 1)
    inputs["t"] = np.full(2, t, np.float32)
    layer_walk(fx, candle_models("dit"), EST, mode, "cpu", inputs=inputs).assert_ok()


def test_dit_cfm_every_step_state(fixtures, candle_models):
    """25 Euler/CFG steps with the same injected z: every state and the final mel; prompt stays 0."""
    fx = fixtures("dit")
    inputs = CFM_CASE.make_inputs(fx.cfg, 2)
    got, taps = candle.run(candle_models("dit"), "cfm", inputs, taps=True)
    steps = [f"solve_euler.step.{k}" for k in range(25)]
    assert [t for t in taps if t in steps] == steps
    assert list(taps) == [f"{s}{leaf}" for s in steps for leaf in (".stacked_dphi_dt", ".dphi_dt", "")]
    assert set(got) == {"mel", *(f"x_step_{k}" for k in range(25))}
    _noise_ok(fx, CFM_CASE, inputs, got, [f"x_step_{k}" for k in range(25)])
    np.testing.assert_array_equal(got["mel"], got["x_step_24"])
    p = inputs["prompt"].shape[-1]
    assert not got["mel"][..., :p].any() and np.abs(got["mel"][..., p:]).max() > 0.1


def test_dit_cfm_without_guidance(fixtures):
    """cfg_rate 0 takes the single-pass branch (no stacked unconditional batch)."""
    fx = fixtures("dit")
    cfg = dict(fx.cfg, cfg_rate=0.0)
    cm = candle.Model("dit", fx.safetensors_path, json.dumps(cfg), "cpu", [], SPEC.prefix)
    models = [fx.reference("cpu", dt) for dt in (torch.float64, torch.float32)]
    inputs = CFM_CASE.make_inputs(fx.cfg, 3, steps=4)
    old = models[0].cfg_rate
    got, taps = candle.run(cm, "cfm", inputs, taps=True)
    assert not any(t.endswith("stacked_dphi_dt") for t in taps) and "solve_euler.step.0.dphi_dt" in taps
    try:
        for m in models:
            m.cfg_rate = 0.0
        # _noise_ok runs the fixture's cached modules: both must be the ones set here
        assert all(fx.reference("cpu", dt) is m for dt, m in zip((torch.float64, torch.float32), models))
        _noise_ok(fx, CFM_CASE, inputs, got, ["mel"])
    finally:
        for m in models:
            m.cfg_rate = old


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.integers(1, 48), prompt_frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_dit_any_mel_and_prompt_length(frames, prompt_frac, seed, fixtures, candle_models):
    """Short sequences hit encodec's zero-extended reflect padding (T ≤ 2) and prompts up to T."""
    fx = fixtures("dit")
    prompt = int(round(prompt_frac * frames))
    inputs = CFM_CASE.make_inputs(fx.cfg, seed, frames=frames, prompt=prompt, steps=3)
    got, _ = candle.run(candle_models("dit"), "cfm", inputs)
    assert got["mel"].shape == (1, fx.cfg["in_channels"], frames)
    _noise_ok(fx, CFM_CASE, inputs, got, ["mel", "x_step_0"])


def _bad(inputs, **changes):
    d = dict(inputs)
    d.update(changes)
    return d


@pytest.mark.parametrize("what", ["channels", "x_lens_long", "x_lens_zero", "x_lens_count", "t_shape", "cond_len", "style_dim", "too_long"])
def test_dit_estimator_bad_input(what, fixtures, candle_models):
    fx = fixtures("dit")
    i = EST.make_inputs(fx.cfg, 0)
    T = i["x"].shape[-1]
    bad = {
        "channels": _bad(i, x=i["x"][:, :-1], prompt_x=i["prompt_x"][:, :-1]),
        "x_lens_long": _bad(i, x_lens=np.array([T + 1, T], np.int64)),
        "x_lens_zero": _bad(i, x_lens=np.array([T, 0], np.int64)),
        "x_lens_count": _bad(i, x_lens=np.array([T, T, T], np.int64)),
        "t_shape": _bad(i, t=np.zeros(3, np.float32)),
        "cond_len": _bad(i, cond=i["cond"][:, :-1]),
        "style_dim": _bad(i, style=i["style"][:, :-1]),
        # the official input_pos / RoPE table length (block_size is ignored, as officially)
        "too_long": _bad(i, x=np.zeros((1, fx.cfg["in_channels"], R.INPUT_POS + 1), np.float32)),
    }[what]
    with pytest.raises(InputError):
        candle.run(candle_models("dit"), "estimator", bad)


@pytest.mark.parametrize("what", ["prompt_longer", "one_point_span", "missing_input", "int_z"])
def test_dit_cfm_bad_input(what, fixtures, candle_models):
    fx = fixtures("dit")
    i = CFM_CASE.make_inputs(fx.cfg, 0)
    bad = {
        "prompt_longer": _bad(i, prompt=np.zeros((1, fx.cfg["in_channels"], i["z"].shape[-1] + 1), np.float32)),
        "one_point_span": _bad(i, t_span=np.zeros(1, np.float32)),
        "missing_input": {k: v for k, v in i.items() if k != "mu"},
        "int_z": _bad(i, z=np.zeros(i["z"].shape, np.int64)),
    }[what]
    with pytest.raises(InputError):
        candle.run(candle_models("dit"), "cfm", bad)


# ≈5 s of 22.05 kHz audio = 430 mel frames, of which 130 are the prompt.
BENCH_T, BENCH_PROMPT = 430, 130


def _bench_inputs(cfg, which):
    if which == "estimator":
        i = R.estimator_inputs(cfg, 0, frames=BENCH_T, prompt=BENCH_PROMPT)
        i["x_lens"] = np.array([BENCH_T, BENCH_T], np.int64)  # the CFG batch: both rows full length
        return i
    return R.cfm_inputs(cfg, 0, frames=BENCH_T, prompt=BENCH_PROMPT, steps=25)


@pytest.mark.benchmark(group="dit")
@pytest.mark.parametrize("which", ["estimator", "cfm25"])
@pytest.mark.parametrize("side", ["candle", "torch"])
def test_bench_dit(side, which, benchmark, bench_fixtures, bench_device, bench_dtype):
    """Official size: one estimator call (CFG batch of 2) and the full 25-step CFM (`--device cuda`:
    on the GPU)."""
    fx = bench_fixtures("dit")
    case = EST if which == "estimator" else CFM_CASE
    inputs = _bench_inputs(fx.cfg, "estimator" if which == "estimator" else "cfm")
    if side == "candle":
        cm = fx.candle(bench_device, None, bench_dtype)
        fn = lambda: candle.run(cm, case.method, inputs)  # noqa: E731
    else:
        fn = lambda: run_reference(fx, case, inputs, bench_device, TORCH_DTYPES[bench_dtype])  # noqa: E731
    # the 25-step CFM is minutes long on CPU: one round, no warm-up
    measure(benchmark, fn, rounds=3 if which == "estimator" else 1, warmup=which == "estimator",
            device=bench_device, dtype=bench_dtype, frames=BENCH_T, audio_s=BENCH_T * 256 / 22050)
