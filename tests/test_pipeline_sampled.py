"""The official sampled decoding through the pipeline: infer_v2's beam sampling on given Exp(1)
draws (and torch's own generator, `seed`), with the stop-biased synthetic GPT (PP.SAMPLED_CASES).

Its own module so that test_pipeline.py's module fixtures (the unbiased models, ≈ 7 GB at official
size) are gone before these load theirs: on a 24 GB machine both sets at once do not fit. The text
tests come first, before the biased Candle models exist (each loads a Rust pipeline of its own).
"""
from __future__ import annotations

import numpy as np
import pytest

from parity import pipeline as PP
from reference import pipeline as P

DECODE_FAULTS = PP.DECODE_FAULTS


@pytest.fixture(scope="module")
def sampled_fxs(pipeline_fixtures, device):
    """The size's fixtures with the GPT's stop logit raised (PP.sampled_fixtures), and the device."""
    return PP.sampled_fixtures(pipeline_fixtures), device


def test_pipeline_sampled_text(sampled_fxs):
    """Text through bpe.model → several segments with infer_v2's 3 beams, each sampled on from where
    the previous segment's draws stopped (one stream, as torch's generator), joined: ids, segments
    and wav. (With 1 beam a segment of this text never stops at tiny, which infer_v2 cannot
    synthesise either.)"""
    fxs, device = sampled_fxs
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], PP.sampled_cases(fxs).text_seed, decoding="sampled")
    t = PP.text_walk(fxs, inputs, device=device)
    assert t.ok, t.table()
    assert len(t.ref["segments"]) > 1


def test_pipeline_seed_is_torch_manual_seed(sampled_fxs):
    """`seed` = s in the Rust pipeline (no draws, no z_pool) is torch.manual_seed(s) before the
    official flow: w2v-bert's layerdrop draws, the decode's own torch.multinomial (unpatched), then
    the CFM's torch.randn, from one generator, segment after segment. One segment (the rust walk,
    1 beam) and a text of several segments with infer_v2's 3 beams, on the size's measured seeds
    (PP.SAMPLED_CASES: a segment whose first candidate is the stop token cannot be synthesised,
    officially neither)."""
    fxs, device = sampled_fxs
    cfg = P.CONFIGS[PP._size(fxs)]
    cases = PP.sampled_cases(fxs)
    one = P.make_inputs(cfg, cases.seeded_one_seed, decoding="seeded", options={"num_beams": 1})
    ref = PP.reference_run(fxs, one, device)
    assert ref.per64["codes"]["codes"].shape[1] >= PP.fewest_gate_codes(PP._size(fxs))
    PP.rust_walk(PP.rust_pipeline(fxs, device), one, ref, device).assert_ok()
    if cases.seeded_text_seed is None:
        pytest.fail(f"no seeded text case measured at size {PP._size(fxs)}: "
                    f"python -m parity.stop_cases {PP._size(fxs)} --what seeded_text", pytrace=False)
    t = PP.text_walk(fxs, P.make_inputs(cfg, cases.seeded_text_seed, decoding="seeded"), device=device)
    assert t.ok, t.table()
    assert len(t.ref["segments"]) > 1


# the sampled cases (make_inputs seed, beams) with the stop-biased GPT: PP.SAMPLED_CASES, per size
SAMPLED = {"beam3": ("beam3_seed", {}), "beam1": ("beam1_seed", {"num_beams": 1})}


@pytest.fixture(scope="module")
def sampled_models(sampled_fxs):
    """The Candle models with the stop-biased GPT (official size: ≈ 7 GB), created after the text
    tests above, which need none of them."""
    fxs, device = sampled_fxs
    return fxs, PP.candle_models(fxs, device), device


@pytest.fixture(scope="module", params=sorted(SAMPLED), ids=lambda k: f"sampled_{k}")
def sampled_pipe(request, sampled_models):
    fxs, cms, device = sampled_models
    field_, opts = SAMPLED[request.param]
    seed = getattr(PP.sampled_cases(fxs), field_)
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], seed, decoding="sampled", options=opts)
    return fxs, cms, inputs, PP.reference_run(fxs, inputs, device), device


def test_pipeline_sampled_walks(sampled_pipe):
    """Text ids → sampled codes (the same Exp(1) draws on every side) → wav: the forced and chained
    walks and the Rust pipeline in one call, through the audio gate; the codes end with a stop
    token, and the Rust pipeline consumed exactly the reference's draws."""
    from parity import candle

    fxs, cms, inputs, ref, device = sampled_pipe
    codes = ref.per64["codes"]["codes"]
    assert codes.shape[1] >= max(4, PP.fewest_gate_codes(PP._size(fxs))), f"only {codes.shape[1]} codes: too short to mean anything"
    for mode in ("forced", "chained"):
        PP.walk(fxs, cms, inputs, mode, device, ref=ref).assert_ok()
    rust = PP.rust_pipeline(fxs, device)
    PP.rust_walk(rust, inputs, ref, device).assert_ok()
    outs, _ = candle.run(rust, "synthesize", PP.synth_inputs(inputs))
    assert int(outs["draws_used"][0]) == int(ref.per32["codes"]["draws_used"][0])


def test_pipeline_sampled_differs_from_greedy(sampled_pipe):
    """The sampled walk really samples: its codes are not the greedy decode of the same inputs."""
    fxs, cms, inputs, ref, device = sampled_pipe
    from parity import candle

    st = ref.inputs64["codes"]
    max_tokens = np.array([P.decode_options(inputs["decode_options"])["max_mel_tokens"]], np.int64)
    got, _ = candle.run(cms["gpt"], "greedy", {k: st[k] for k in ("spk_latent", "emovec", "text")} | {"max_tokens": max_tokens})
    assert not PP._same(got["codes"], ref.per64["codes"]["codes"])


@pytest.fixture(scope="module")
def sampled_fault_pipe(sampled_models):
    fxs, cms, device = sampled_models
    cases = PP.sampled_cases(fxs)
    inputs = P.make_inputs(P.CONFIGS[PP._size(fxs)], cases.fault_seed, decoding="sampled", options=dict(cases.fault_options))
    return fxs, cms, inputs, PP.reference_run(fxs, inputs, device), device


@pytest.mark.parametrize("fault", DECODE_FAULTS)
def test_pipeline_sampled_decode_fault_named(fault, sampled_fault_pipe):
    """Each decoding fault breaks the pipeline at stage `codes` (infer_v2's 3 beams)."""
    fxs, cms, inputs, ref, device = sampled_fault_pipe
    PP.walk(fxs, cms, inputs, "forced", device, ref=ref).assert_ok()  # correct code passes on this case
    broken = {**cms, "gpt": PP.candle_model(fxs, "gpt", device, [fault])}
    w = PP.walk(fxs, broken, inputs, "forced", device, ref=ref)
    assert w.first_failure == "codes", f"decode fault `{fault}` named `{w.first_failure}`\n{w.table()}"
