"""Table-driven parity tests: every row of the registry gets all of these.

Select one model with `-k <name>`; each test id carries the model name and the case name.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from parity.coverage import coverage
from parity.registry import MODELS
from parity.compare import effect_ratios, fault_margin_ok
from parity import candle
from parity.runner import judged_pair, layer_walk
from parity.tolerances import FAULT_MARGIN, HALF_MODELS, K_MAX, K_RMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = list(MODELS.values())
CASES = [(s.name, c.name) for s in SPECS for c in s.cases]
FAULTS = [(s.name, f) for s in SPECS for f in s.faults]


def _case(model, case):
    return next(c for c in MODELS[model].cases if c.name == case)


def _chained_effect(fx, faulty, candle_models, model, case, tap) -> tuple[float, float]:
    """A fault's own end-to-end effect at `tap`: Candle with the fault against Candle without it
    (chained, same inputs, the same arithmetic otherwise), in units of the float32 reference's error
    against float64 at that tap (max, rms)."""
    inputs = case.make_inputs(fx.cfg, 0)
    _, taps64, _, taps32, _ = judged_pair(fx, case, inputs, "chained", "cpu", "float32")
    _, bad = candle.run(faulty, case.method, inputs, taps=True)
    _, good = candle.run(candle_models(model, "cpu"), case.method, inputs, taps=True)
    return effect_ratios(bad[tap], good[tap], taps64[tap], taps32[tap])


def _manifest(spec):
    with open(os.path.join(ROOT, "fixtures", "manifests", spec.manifest)) as f:
        return json.load(f)


@pytest.mark.parametrize("model", [s.name for s in SPECS])
def test_manifest_full_size(model):
    """The reference at the official config has exactly the official keys, shapes and dtypes."""
    spec = MODELS[model]
    with torch.device("meta"):
        ref = spec.build_reference(spec.configs["full"])
    if spec.weightless:  # no official file: the reference must hold nothing either
        assert not ref.state_dict(), f"weightless row holds {list(ref.state_dict())[:10]}"
        return
    pre = spec.manifest_prefix + "." if spec.manifest_prefix else ""
    ours = {pre + k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in ref.state_dict().items()}
    official = {t["key"]: (t["shape"], t["dtype"]) for t in _manifest(spec)["tensors"]}
    if pre:  # a row that owns part of a shared file (s2mel): the manifest's subtrees the module has
        roots = {k[len(pre):].split(".")[0] for k in ours}
        official = {k: v for k, v in official.items() if k.startswith(pre) and k[len(pre):].split(".")[0] in roots}
    missing = sorted(set(official) - set(ours))
    extra = sorted(set(ours) - set(official))
    assert not missing and not extra, f"missing {missing[:10]} ({len(missing)}), extra {extra[:10]} ({len(extra)})"
    wrong = {k: (ours[k], official[k]) for k in official if ours[k] != official[k]}
    assert not wrong, f"shape/dtype differ (ours, official): {dict(list(wrong.items())[:10])}"


@pytest.mark.parametrize("model", [s.name for s in SPECS])
def test_coverage(model, fixtures, candle_models):
    """Candle read every key it needs from the file (missing = ∅ or load fails), left unread only
    allow-listed keys, and the file holds exactly the reference's keys with their dtypes."""
    spec = MODELS[model]
    fx = fixtures(model)
    cm = candle_models(model)
    cov = coverage(spec, cm)
    assert cov.ok, cov.summary()
    file_keys = cov.file_keys
    pre = spec.prefix + "." if spec.prefix else ""
    ref_sd = fx.reference().state_dict()
    roots = {k.split(".")[0] for k in ref_sd}  # a shared file (s2mel): only this row's subtrees
    in_file = {k[len(pre):]: v for k, v in file_keys.items() if k.startswith(pre) and k[len(pre):].split(".")[0] in roots}
    assert set(in_file) == set(ref_sd), "converted file and reference module disagree on keys"
    for k, (dt, shape) in in_file.items():
        assert list(ref_sd[k].shape) == shape, k
    if fx.size != "real":
        for k, v in ref_sd.items():
            assert str(v.dtype).replace("torch.", "") == in_file[k][0], k


@pytest.mark.parametrize("mode", ["chained", "injected"])
@pytest.mark.parametrize("model,case", CASES, ids=[c for _, c in CASES])
def test_layers(model, case, mode, device, run_dtype, fixtures, candle_models):
    """Every tap within tolerance, in forward order; a failure names the first divergent tap.
    `--dtype` picks the precision both sides run in (tolerances.rule: that dtype's k)."""
    dtype = run_dtype
    if dtype != "float32" and model not in HALF_MODELS:
        pytest.skip(f"{model}: half precision is measured for {sorted(HALF_MODELS)} only (tolerances.NOISE_HALF)")
    layer_walk(fixtures(model), candle_models(model, device, (), dtype), _case(model, case), mode, device,
               dtype=dtype).assert_ok()


def test_chained_effect_measures_the_fault(fixtures, candle_models):
    """The measurement behind a chained walk that passes a fault: zero for the correct model against
    itself, and the fault's own size for a real one (dit `final_ln_eps`: 4.09 / 2.72 × the float32
    noise at tiny, 1.36 / 0.95 at official size)."""
    fx = fixtures("dit")
    case_name, tap = MODELS["dit"].faults["final_ln_eps"]
    case = _case("dit", case_name)
    clean = candle_models("dit", "cpu")
    assert _chained_effect(fx, clean, candle_models, "dit", case, tap) == (0.0, 0.0)
    e_max, e_rms = _chained_effect(fx, candle_models("dit", "cpu", ("final_ln_eps",)), candle_models, "dit", case, tap)
    assert e_max > 0.5 and e_rms > 0.5, (e_max, e_rms)


@pytest.mark.parametrize("model,fault", FAULTS, ids=[f"{m}-{f}" for m, f in FAULTS])
def test_fault_is_caught(model, fault, fixtures, candle_models):
    """Proof of teeth and of localisation: with each known bug class switched on, the INJECTED walk
    fails at exactly the leaf the registry names (not a parent, not downstream), with a margin of
    FAULT_MARGIN × the threshold there; the chained walk fails too."""
    spec = MODELS[model]
    case_name, expected_tap = spec.faults[fault]
    fx = fixtures(model)
    if why := spec.fault_absent(fault, fx.cfg):
        pytest.skip(why)
    cm = candle_models(model, "cpu", (fault,))
    w = layer_walk(fx, cm, _case(model, case_name), "injected", "cpu")
    assert not w.ok, f"fault `{fault}` was NOT detected by the injected walk:\n{w.table()}"
    assert w.first_failure == expected_tap, f"fault `{fault}` named at `{w.first_failure}`, expected `{expected_tap}`\n{w.table()}"
    with pytest.raises(AssertionError, match=f"parity failed at `{expected_tap}`"):
        w.assert_ok()
    row = w.row_of(expected_tap)
    assert row is not None and fault_margin_ok(row), (
        f"fault `{fault}` stands only {row.margin:.1f}× past the threshold at `{expected_tap}` "
        f"(needs ≥ {FAULT_MARGIN}×): ratio max {row.ratio_max:.2f}, rms {row.ratio_rms:.2f}\n{w.table()}")
    c = layer_walk(fx, cm, _case(model, case_name), "chained", "cpu")
    if c.ok:
        # The chained walk may pass only a fault that, end to end, moves its tap by less than the
        # threshold in units of PyTorch float32's own error there: no float32 run can see it.
        e_max, e_rms = _chained_effect(fx, cm, candle_models, model, _case(model, case_name), expected_tap)
        assert e_max <= K_MAX and e_rms <= K_RMS, (
            f"fault `{fault}` passes the chained walk although it moves `{expected_tap}` by "
            f"{e_max:.2f} (max) / {e_rms:.2f} (rms) × the float32 reference's own error:\n{c.table()}")
        print(f"fault `{fault}`: chained walk passes; its end-to-end effect at `{expected_tap}` is "
              f"{e_max:.2f} (max) / {e_rms:.2f} (rms) × the float32 reference's own error (≤ k {K_MAX:g}/{K_RMS:g})")


@pytest.mark.parametrize("model", [s.name for s in SPECS if not s.weightless])
def test_every_weight_is_tapped(model, fixtures):
    """Every module of the reference that holds parameters has a tap of its own name in some case
    (or is listed in the row's `untapped` with the reason), so no weight goes unchecked by name."""
    import fnmatch

    from parity.runner import run_reference

    spec = MODELS[model]
    fx = fixtures(model)
    tapped: set[str] = set()
    for case in spec.cases:
        _, taps = run_reference(fx, case, case.make_inputs(fx.cfg, 0))
        tapped |= set(taps.outputs)
    holders = [n for n, m in fx.reference().named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    missing = [n for n in holders if n not in tapped and not any(fnmatch.fnmatchcase(n, p) for p in spec.untapped)]
    assert not missing, f"{model}: modules holding weights without a tap: {missing[:20]} ({len(missing)})"


@pytest.mark.parametrize("model", [s.name for s in SPECS])
def test_unknown_fault_rejected(model, fixtures):
    from parity.candle import InputError

    with pytest.raises(InputError, match="unknown fault"):
        fixtures(model).candle("cpu", ["no_such_fault"])


@pytest.mark.parametrize("model", [s.name for s in SPECS])
def test_fault_names_have_one_source(model):
    """The Rust crate is the source of truth for fault names (`indextts_candle.faults(kind)`); each
    registry row's `faults` dict (the leaf each must be named at) lists exactly those switches, so
    a renamed or new switch cannot go untested. The GPT kind's decode switches are the sampled
    decode's and are named by tests/test_sampling.py."""
    import indextts_candle

    built = set(indextts_candle.faults(model))
    if model == "gpt":
        from test_sampling import FAULT_EXPECT  # tests/ is on sys.path (rootdir conftest)

        assert set(FAULT_EXPECT) <= built, sorted(set(FAULT_EXPECT) - built)
        built -= set(FAULT_EXPECT)
    assert built == set(MODELS[model].faults), (
        f"{model}: built but not in the registry row: {sorted(built - set(MODELS[model].faults))}; "
        f"in the row but not built: {sorted(set(MODELS[model].faults) - built)}")


def test_reference_stands_alone():
    """`reference/` imports nothing from the harness: each module loads with `parity` never imported."""
    import glob
    import subprocess
    import sys

    mods = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "reference", "*.py")) if not p.endswith("__init__.py"))
    code = "import importlib, sys\nfor m in %r:\n    importlib.import_module('reference.' + m)\nassert 'parity' not in sys.modules, sorted(k for k in sys.modules if k.startswith('parity'))" % mods
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
