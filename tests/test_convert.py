"""The converter: official containers → safetensors with official keys; never runs pickled code."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from reference.convert import ConversionError, convert, main


def test_bigvgan_generator_is_unwrapped(tmp_path):
    src = tmp_path / "bigvgan_generator.pt"
    torch.save({"generator": {"conv_pre.weight_g": torch.ones(2, 1, 1), "conv_pre.bias": torch.zeros(2)}}, src)
    convert(str(src), str(tmp_path / "o.safetensors"))
    assert set(load_file(tmp_path / "o.safetensors")) == {"conv_pre.weight_g", "conv_pre.bias"}


def test_s2mel_nesting_is_flattened_and_extras_reported(tmp_path):
    src = tmp_path / "s2mel.pth"
    torch.save({"net": {"cfm": {"estimator.conv2.weight": torch.ones(1)}, "gpt_layer": {"0.bias": torch.ones(1),
                                                                                      "name": "x"}},
                "epoch": 7, "iters": 10}, src)
    info = convert(str(src), str(tmp_path / "o.safetensors"))
    assert set(load_file(tmp_path / "o.safetensors")) == {"net.cfm.estimator.conv2.weight", "net.gpt_layer.0.bias"}
    assert info["ignored"] == ["epoch", "iters"]  # beside `net`: load_checkpoint2 reads state['net'] only
    assert info["skipped"] == ["net.gpt_layer.name"]


def _tiny_s2mel_net(ddp: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """The tiny S2Mel's `net` dict as the official trainer saves it: one state dict per sub-model,
    each taken from the model wrapped in DataParallel when `ddp` (so every key starts `module.`)."""
    import reference.s2mel as R
    from reference.common import synthetic_init

    m = R.S2Mel(dict(R.TINY_DIT), dict(R.TINY_LR))
    synthetic_init(m, 0)
    subs = dict(m.net.named_children())
    assert set(subs) == {"cfm", "length_regulator", "gpt_layer"}, subs.keys()
    net = {k: (torch.nn.DataParallel(v) if ddp else v).state_dict() for k, v in subs.items()}
    if ddp:
        assert all(k.startswith("module.") for sd in net.values() for k in sd)
    return net, m.state_dict()


def _same_file(a, b):
    x, y = load_file(a), load_file(b)
    assert list(x) == list(y)
    for k in x:
        assert torch.equal(x[k], y[k]), k


def test_ddp_saved_s2mel_strips_module_in_every_sub_dict(tmp_path):
    """A DDP-saved s2mel.pth has `module.` inside each sub-dict of `net` (the official
    load_checkpoint2 strips it per sub-dict): it converts to exactly the plain file, which Candle
    loads strictly (a kept `module.` was a missing key)."""
    import json

    import indextts_candle as candle
    import reference.s2mel as R

    plain, expected = _tiny_s2mel_net(ddp=False)
    ddp, _ = _tiny_s2mel_net(ddp=True)
    torch.save({"net": plain}, tmp_path / "plain.pth")
    torch.save({"net": ddp}, tmp_path / "ddp.pth")
    convert(str(tmp_path / "plain.pth"), str(tmp_path / "plain.safetensors"))
    info = convert(str(tmp_path / "ddp.pth"), str(tmp_path / "ddp.safetensors"))
    assert info["ignored"] == [] and info["skipped"] == []
    _same_file(tmp_path / "plain.safetensors", tmp_path / "ddp.safetensors")
    assert set(load_file(tmp_path / "ddp.safetensors")) == set(expected)
    candle.Model("dit", str(tmp_path / "ddp.safetensors"), json.dumps(R.TINY_DIT), "cpu", [], "net.cfm")
    candle.Model("length_regulator", str(tmp_path / "ddp.safetensors"), json.dumps(R.TINY_LR), "cpu", [], "net")


def test_optimizer_state_beside_net_is_ignored_and_reported(tmp_path, capsys):
    """A training checkpoint: `net` plus optimizer (tensor state after a step), scheduler, ema and
    counters. The official loader reads `net` only; so does the converter, and it says what it left."""
    net, expected = _tiny_s2mel_net(ddp=True)
    params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(params, lr=1e-3)
    (params[0].sum() + params[1].sum()).backward()
    opt.step()
    assert any(isinstance(v, torch.Tensor) for s in opt.state_dict()["state"].values() for v in s.values())
    ema = {k: [[t.clone() for t in sd.values()]] for k, sd in net.items()}
    torch.save({"net": net, "optimizer": opt.state_dict(), "scheduler": {"last_epoch": 3}, "ema": ema,
                "epoch": 3, "iters": 1200}, tmp_path / "s2mel.pth")
    info = convert(str(tmp_path / "s2mel.pth"), str(tmp_path / "o.safetensors"))
    assert set(load_file(tmp_path / "o.safetensors")) == set(expected)
    assert info["ignored"] == ["optimizer", "scheduler", "ema", "epoch", "iters"]
    assert main([str(tmp_path / "s2mel.pth"), str(tmp_path / "o2.safetensors"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ignored" in out and "optimizer" in out and "ema" in out


def test_module_prefix_at_the_top_level_and_duplicates(tmp_path):
    torch.save({"module.conv_pre.weight_g": torch.ones(2, 1, 1)}, tmp_path / "a.pt")
    convert(str(tmp_path / "a.pt"), str(tmp_path / "a.safetensors"))
    assert list(load_file(tmp_path / "a.safetensors")) == ["conv_pre.weight_g"]
    # A key present both with and without `module.` is ambiguous: refused, naming it.
    torch.save({"net": {"cfm": {"module.x": torch.ones(1), "x": torch.zeros(1)}}}, tmp_path / "b.pth")
    with pytest.raises(ConversionError, match="net.cfm.x"):
        convert(str(tmp_path / "b.pth"), str(tmp_path / "b.safetensors"))


def test_model_and_generator_entries_beside_others(tmp_path):
    """gpt.pth: `load_checkpoint` reads checkpoint['model'] when present; BigVGAN reads
    checkpoint['generator']: the rest is ignored and reported."""
    torch.save({"model": {"gpt.ln_f.weight": torch.ones(3)}, "optimizer": {"state": {0: {"m": torch.ones(1)}}},
                "step": 5}, tmp_path / "gpt.pth")
    info = convert(str(tmp_path / "gpt.pth"), str(tmp_path / "o.safetensors"))
    assert list(load_file(tmp_path / "o.safetensors")) == ["gpt.ln_f.weight"] and info["ignored"] == ["optimizer", "step"]
    torch.save({"generator": {"conv_pre.bias": torch.ones(2)}, "optim_g": {"state": {}}}, tmp_path / "g.pt")
    info = convert(str(tmp_path / "g.pt"), str(tmp_path / "g.safetensors"))
    assert list(load_file(tmp_path / "g.safetensors")) == ["conv_pre.bias"] and info["ignored"] == ["optim_g"]


def test_flat_and_model_wrapped_gpt(tmp_path):
    for obj in ({"gpt.ln_f.weight": torch.ones(3)}, {"model": {"gpt.ln_f.weight": torch.ones(3)}}):
        torch.save(obj, tmp_path / "gpt.pth")
        convert(str(tmp_path / "gpt.pth"), str(tmp_path / "o.safetensors"))
        assert list(load_file(tmp_path / "o.safetensors")) == ["gpt.ln_f.weight"]


def test_shared_storage_and_bare_tensor(tmp_path):
    t = torch.arange(6.0)
    torch.save({"a": t, "b": t[:3]}, tmp_path / "shared.pt")
    convert(str(tmp_path / "shared.pt"), str(tmp_path / "o.safetensors"))
    assert load_file(tmp_path / "o.safetensors")["b"].tolist() == [0.0, 1.0, 2.0]
    torch.save(torch.ones(73, 192), tmp_path / "feat1.pt")
    convert(str(tmp_path / "feat1.pt"), str(tmp_path / "f.safetensors"))
    assert load_file(tmp_path / "f.safetensors")["tensor"].shape == (73, 192)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = "/tmp/indextts_convert_pwned"


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    if os.path.exists(EVIL_MARK):
        os.remove(EVIL_MARK)
    src = tmp_path / "evil.pth"
    with open(src, "wb") as f:
        torch.save({"w": torch.ones(1), "payload": _Evil()}, f)
    with pytest.raises(ConversionError, match="refused to unpickle"):
        convert(str(src), str(tmp_path / "o.safetensors"))
    assert not os.path.exists(EVIL_MARK), "the pickle's code ran"
    assert not os.path.exists(tmp_path / "o.safetensors")
    raw = tmp_path / "raw.pkl"  # a plain pickle (not a torch zip) too
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ConversionError):
        convert(str(raw), str(tmp_path / "o.safetensors"))
    assert not os.path.exists(EVIL_MARK)


@pytest.mark.parametrize("blob,match", [(b"", "not a readable"), (b"PK\x03\x04garbage", "not a readable")])
def test_corrupt_sources(tmp_path, blob, match):
    p = tmp_path / "bad.pth"
    p.write_bytes(blob)
    with pytest.raises(ConversionError, match=match):
        convert(str(p), str(tmp_path / "o.safetensors"))


def test_truncated_torch_file(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="cut.pth"):
        convert(str(tmp_path / "cut.pth"), str(tmp_path / "o.safetensors"))


def test_non_dict_and_empty(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="expected a state dict"):
        convert(str(tmp_path / "list.pth"), str(tmp_path / "o.safetensors"))
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(ConversionError, match="no tensors"):
        convert(str(tmp_path / "empty.pth"), str(tmp_path / "o.safetensors"))


def test_cli_exit_codes(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "o.safetensors"), "--no-progress"]) == 0


def _evil_file(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "payload": _Evil()}, src)
    return src


@pytest.mark.parametrize("case,match", [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("garbage", "not a readable torch checkpoint"),
    ("evil", "refused to unpickle"),
    ("no_dst", "give SRC and DST"),  # one argument = a model directory
    ("bad_flag", "unrecognized arguments: --bogus"),
    ("same", "overwrite the source"),
    ("unwritable", "cannot write the output"),
])
def test_cli_user_errors_are_one_paragraph_exit_2(tmp_path, case, match):
    """Every user error of the installed command: exit status 2, one paragraph on stderr (the
    reason, then at most a usage line), no traceback, nothing on stdout, no output file."""
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    (tmp_path / "garbage.pth").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "blocker").write_text("a file where a directory is needed")
    dst = str(tmp_path / "o.safetensors")
    args = {"missing": [str(tmp_path / "nope.pth"), dst], "directory": [str(tmp_path), dst],
            "garbage": [str(tmp_path / "garbage.pth"), dst], "evil": [str(_evil_file(tmp_path)), dst],
            "no_dst": [str(tmp_path / "w.pth")], "bad_flag": ["--bogus", str(tmp_path / "w.pth"), dst],
            "same": [str(tmp_path / "w.pth"), str(tmp_path / "w.pth")],
            "unwritable": [str(tmp_path / "w.pth"), str(tmp_path / "blocker" / "o.safetensors")]}[case]
    r = subprocess.run([sys.executable, "-m", "reference.convert", *args], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("indextts-convert: error: ") and match in lines[0], r.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("usage: ")), r.stderr
    assert not os.path.exists(dst) and not os.path.exists(dst + ".partial")
    assert not os.path.exists(EVIL_MARK)


def test_progress_bar_for_big_files(tmp_path):
    torch.save({"w": torch.ones(8)}, tmp_path / "w.pth")
    r = subprocess.run([sys.executable, "-c", "import sys; from reference.convert import convert; "
                        f"convert({str(tmp_path / 'w.pth')!r}, {str(tmp_path / 'o.safetensors')!r}, progress=True)"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0 and "convert w.pth" in r.stderr
