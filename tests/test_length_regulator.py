"""s2mel length regulator (+ gpt_layer) checks beyond the table-driven walk: many target lengths
(integer and non-integer ratios, shrinking), torch's floor-nearest indices, the infer_v2 step-14
composition, a property test over lengths, and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity import candle
from parity.candle import InputError
from parity.compare import compare_noise
from parity.registry import MODELS
from parity.runner import layer_walk, run_reference
from parity.tolerances import rule
from reference import s2mel as R

SPEC = MODELS["length_regulator"]
CASE = next(c for c in SPEC.cases if c.name == "length_regulator_upsample")
LATENT = next(c for c in SPEC.cases if c.name == "length_regulator_latent_proj")



def _noise_ok(fx, inputs, got, case=None):
    """Candle's `out` against the float64 reference, judged by the float32 reference's own noise."""
    case = case or CASE
    ref64, _ = run_reference(fx, case, inputs, dtype=torch.float64)
    ref32, _ = run_reference(fx, case, inputs, dtype=torch.float32)
    c = compare_noise("output:out", ref64["out"], ref32["out"], got["out"], rule("length_regulator", "output:out", "cpu", "float32"))
    assert c.ok, c.line()


# (source frames, target frames): ×1, ×2, the ×1.72 of infer_v2 (37 codes → 63 frames), odd
# non-integer ratios, shrinking, a single source frame.
LENGTHS = [(7, 7), (5, 10), (37, 63), (13, 22), (11, 19), (17, 29), (9, 4), (30, 13), (1, 5), (50, 86)]


@pytest.mark.parametrize("mode", ["chained", "injected"])
@pytest.mark.parametrize("t_in,t_out", LENGTHS, ids=[f"{a}to{b}" for a, b in LENGTHS])
def test_length_regulator_target_lengths(t_in, t_out, mode, fixtures, candle_models):
    fx = fixtures("length_regulator")
    inputs = R.regulator_inputs(fx.cfg, t_in, frames=t_in, target=t_out)
    w = layer_walk(fx, candle_models("length_regulator"), CASE, mode, "cpu", inputs=inputs)
    w.assert_ok()


@pytest.mark.parametrize("t_in,t_out", [(1000, 1721), (997, 1999), (613, 1054), (1500, 2580)])
def test_length_regulator_long_nearest_is_torch_floor(t_in, t_out, fixtures, candle_models):
    """Long sequences, where f32 rounding of j·(in/out) decides the source frame: torch picks
    floor(j·in/out) in f32; a different index would move whole frames, far beyond tolerance."""
    fx = fixtures("length_regulator")
    src = torch.arange(t_in, dtype=torch.float32)[None, None]
    want = F.interpolate(src, size=t_out, mode="nearest")[0, 0].long().numpy()
    f32 = np.minimum(np.floor(np.arange(t_out, dtype=np.float32) * np.float32(np.float32(t_in) / np.float32(t_out))), t_in - 1)
    np.testing.assert_array_equal(f32.astype(np.int64), want)  # the rule the Rust side implements
    inputs = R.regulator_inputs(fx.cfg, 0, frames=t_in, target=t_out)
    got, _ = candle.run(candle_models("length_regulator"), "forward", inputs)
    _noise_ok(fx, inputs, got)


def test_length_regulator_infer_step14(fixtures, candle_models):
    """S_infer = vq_emb + gpt_layer(latent); cond = LR(S_infer, ylens=int(Lc·1.72)), as infer_v2."""
    fx = fixtures("length_regulator")
    cm = candle_models("length_regulator")
    rng = np.random.default_rng(5)
    lc = 29
    latent = rng.standard_normal((1, lc, fx.cfg["latent_dim"])).astype(np.float32)
    vq = rng.standard_normal((1, lc, fx.cfg["in_channels"])).astype(np.float32)
    target = int(lc * 1.72)
    got_p, _ = candle.run(cm, "latent_proj", {"latent": latent})
    got, _ = candle.run(cm, "forward", {"x": vq + got_p["out"], "ylens": np.array([target], np.int64)})
    refs = {}
    for dt in (torch.float64, torch.float32):
        m = fx.reference("cpu", dt)
        with torch.no_grad():
            s = torch.from_numpy(vq).to(dt) + m.latent_proj(torch.from_numpy(latent).to(dt))
            refs[dt] = m.length_regulator(s, torch.tensor([target])).numpy()
    assert got["out"].shape == (1, target, fx.cfg["channels"])
    c = compare_noise("output:out", refs[torch.float64], refs[torch.float32], got["out"],
                      rule("length_regulator", "output:out", "cpu", "float32"))
    assert c.ok, c.line()


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(t_in=st.integers(1, 40), t_out=st.integers(1, 80), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_length_regulator_any_lengths(t_in, t_out, batch, seed, fixtures, candle_models):
    fx = fixtures("length_regulator")
    rng = np.random.default_rng(seed)
    ylens = np.array([t_out] + list(rng.integers(1, t_out + 1, batch - 1)), np.int64)
    inputs = {"x": rng.standard_normal((batch, t_in, fx.cfg["in_channels"])).astype(np.float32), "ylens": ylens}
    got, _ = candle.run(candle_models("length_regulator"), "forward", inputs)
    _noise_ok(fx, inputs, got)
    for b, n in enumerate(ylens):  # frames past each length are exactly zero
        assert not got["out"][b, n:].any()


@pytest.mark.parametrize("what", ["ylens_zero", "ylens_count", "channels", "ylens_float", "latent_dim"])
def test_length_regulator_bad_input(what, fixtures, candle_models):
    fx = fixtures("length_regulator")
    i = CASE.make_inputs(fx.cfg, 0)
    method = "latent_proj" if what == "latent_dim" else "forward"
    bad = {
        "ylens_zero": {**i, "ylens": np.array([0], np.int64)},
        "ylens_count": {**i, "ylens": np.array([5, 6], np.int64)},
        "channels": {**i, "x": i["x"][..., :-1]},
        "ylens_float": {**i, "ylens": np.array([5.0], np.float32)},
        "latent_dim": {"latent": LATENT.make_inputs(fx.cfg, 0)["latent"][..., :-1]},
    }[what]
    with pytest.raises(InputError):
        candle.run(candle_models("length_regulator"), method, bad)


OFFICIAL_VARIANTS = [{}, {"sampling_ratios": []}, {"sampling_ratios": [1, 1]}, {"f0_condition": True, "n_f0_bins": 4},
                     {"groups": 4, "out_channels": 8, "codebook_size": 16, "quantizer_dropout": 0.5}]


@pytest.mark.parametrize("over", OFFICIAL_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "official")
def test_length_regulator_reference_matches_official_code(over):
    """Our reference against the official InterpolateRegulator (PyPI snapshot), same weights, at the
    official values and at each implemented non-default argument: the state dict loads strictly and
    outputs agree bit for bit, masks and non-integer ratios included (without sampling ratios the
    output keeps the input length; targets below it are skipped, where the official mask multiply fails)."""
    from reference.common import synthetic_init

    classes = R.official_classes()
    if classes is None:
        pytest.fail("official index-tts package missing (run.sh installs it) (pip install --no-deps tts-webui-index-tts==2.0.1)")
    cfg = dict(R.TINY_LR, **over)
    off = classes[1](**R.official_regulator_kwargs(cfg)).eval()
    synthetic_init(off, 0)
    ours = R.build_regulator(cfg)
    ours.length_regulator.load_state_dict(off.state_dict(), strict=True)
    rng = np.random.default_rng(0)
    for t_in, t_out in LENGTHS:
        x = torch.from_numpy(rng.standard_normal((2, t_in, cfg["in_channels"])).astype(np.float32))
        yl = torch.tensor([t_out, max(1, t_out - 2)])
        if not cfg["sampling_ratios"] and 1 < t_out < t_in:
            continue
        with torch.no_grad():
            want = off(x, yl, n_quantizers=3)[0]
            got = ours.length_regulator(x, yl)
        assert torch.equal(got, want), (t_in, t_out, (got - want).abs().max())


def test_length_regulator_no_ratios_keeps_length(fixtures):
    """sampling_ratios=[]: no interpolation, the output has the input's frames (not the target's), and
    a target shorter than the input (> 1 frame) is refused where the official code fails to broadcast."""
    from parity import fixtures as fxm

    cfg = dict(R.TINY_LR, sampling_ratios=[])
    f = fxm.synthetic(SPEC, "tiny", cfg)
    cm = f.candle("cpu")
    x = np.random.default_rng(0).standard_normal((1, 9, cfg["in_channels"])).astype(np.float32)
    got, taps = candle.run(cm, "forward", {"x": x, "ylens": np.array([17], np.int64)}, taps=True)
    assert got["out"].shape == (1, 9, cfg["channels"]) and "length_regulator.interpolate" not in taps
    with pytest.raises(InputError, match="sampling_ratios"):
        candle.run(cm, "forward", {"x": x, "ylens": np.array([5], np.int64)})
