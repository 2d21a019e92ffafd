"""Load-time transforms (Rust) against values produced by PyTorch itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import weight_norm

from parity.candle import InputError, transform


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("layer", ["conv1d", "conv_transpose1d", "linear"])
def test_weight_norm_fold_matches_torch(layer):
    """torch's own weight_norm (dim 0) defines the fold; for ConvTranspose1d dim 0 is in_channels."""
    torch.manual_seed(0)
    mod = {"conv1d": nn.Conv1d(6, 4, 5), "conv_transpose1d": nn.ConvTranspose1d(6, 4, 5, 2), "linear": nn.Linear(6, 4)}[layer]
    mod = weight_norm(mod)
    with torch.no_grad():
        mod.weight_g.mul_(torch.linspace(0.5, 2.0, mod.weight_g.shape[0]).reshape(mod.weight_g.shape))
    mod(torch.randn(1, 6, 9) if layer != "linear" else torch.randn(2, 6))  # the hook recomputes weight
    g, v, w = _np(mod.weight_g), _np(mod.weight_v), _np(mod.weight)
    if layer == "conv_transpose1d":
        assert g.shape == (6, 1, 1), "ConvTranspose1d weight_g is per in_channel"
    (ours,) = transform("weight_norm_fold", g, v)
    np.testing.assert_allclose(ours, w, rtol=1e-6, atol=1e-7)


def test_gpt2_conv1d_transpose_matches_torch():
    """GPT-2 Conv1D computes x @ W + b with W [in, out]; the Linear form needs W.T."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    (wt,) = transform("conv1d_to_linear", w)
    ref = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(wt))
    np.testing.assert_allclose(ref.numpy(), x @ w, rtol=1e-6, atol=1e-6)


def test_split_fused_matches_torch_chunk():
    t = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    q, k, v = t.chunk(3, dim=0)
    ours = transform("split_fused", t.numpy(), sizes=[2, 2, 2], dim=0)
    for a, b in zip(ours, (q, k, v)):
        np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(InputError, match="cannot split"):
        transform("split_fused", t.numpy(), sizes=[2, 3], dim=0)


def test_snake_log_scale():
    a = np.array([-1.0, 0.0, 0.5], dtype=np.float32)
    (e,) = transform("snake_param", a, logscale=True)
    np.testing.assert_allclose(e, torch.exp(torch.from_numpy(a)).numpy(), rtol=1e-7)
    (same,) = transform("snake_param", a, logscale=False)
    np.testing.assert_array_equal(same, a)
