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
    torch.save({"net": {"cfm": {"estimator.conv2.weight": torch.ones(1)}, "gpt_layer": {"module.0.bias": torch.ones(1)}},
                "epoch": 7, "iters": 10}, src)
    info = convert(str(src), str(tmp_path / "o.safetensors"))
    assert set(load_file(tmp_path / "o.safetensors")) == {"net.cfm.estimator.conv2.weight", "net.gpt_layer.module.0.bias"}
    assert info["skipped"] == ["epoch", "iters"]


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


def test_progress_bar_for_big_files(tmp_path):
    torch.save({"w": torch.ones(8)}, tmp_path / "w.pth")
    r = subprocess.run([sys.executable, "-c", "import sys; from reference.convert import convert; "
                        f"convert({str(tmp_path / 'w.pth')!r}, {str(tmp_path / 'o.safetensors')!r}, progress=True)"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0 and "convert w.pth" in r.stderr
