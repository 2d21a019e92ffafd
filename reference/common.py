"""Shared pieces of the reference side: activation taps and deterministic synthetic weights."""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
from torch import nn


class Taps:
    """Records, per tapped block, the block's input and output in forward order.

    The tap name is the block's module path (= checkpoint key prefix = Candle tap = report row).
    The inputs are what the *injected* layer walk feeds to the Candle block of the same name.
    """

    def __init__(self, inject: "dict[str, torch.Tensor] | None" = None) -> None:
        self.inputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.outputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        # Injected walk on the reference side: the float32 reference runs each tapped block on the
        # float64 reference's input (rounded to this run's dtype), exactly as Candle does, so the
        # per-tap noise it shows is the block's own rounding, not what accumulated upstream.
        self.inject = dict(inject or {})

    def block(self, name: str, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if name in self.inject:
            inj = self.inject.pop(name)
            if tuple(inj.shape) != tuple(x.shape):
                raise ValueError(f"injected input for `{name}` has shape {tuple(inj.shape)}, the block expects {tuple(x.shape)}")
            x = inj.to(device=x.device, dtype=x.dtype)
        self.inputs[name] = x.detach().clone()
        y = fn(x)
        self.outputs[name] = y.detach().clone()
        return y


class NoTaps(Taps):
    def block(self, name, x, fn):  # noqa: D401 - same signature, records nothing
        return fn(x)


def _rng_for(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@torch.no_grad()
def synthetic_init(model: nn.Module, seed: int, overrides: dict[str, Callable[[str, np.random.Generator, tuple], np.ndarray]] | None = None) -> None:
    """Fills every parameter with deterministic values drawn from a per-key numpy RNG.

    Independent of torch's RNG and init order, so the same (key, seed) gives the same weights on any
    torch version and at any config. Scales keep activations O(1): weights ~ N(0, 1/fan_in),
    norm gains ~ 1 + N(0, 0.1), biases ~ N(0, 0.05). `weight_g` is set to ‖weight_v‖·(1 + N(0, 0.1))
    so weight norm is a real, non-identity transform. Buffers (filters, positional tables) keep the
    values the module computed, as in an official file; `overrides` maps a key suffix to a filler.
    """
    overrides = overrides or {}
    params = dict(model.named_parameters())
    for key, p in params.items():
        rng = _rng_for(key, seed)
        shape = tuple(p.shape)
        filler = next((f for suffix, f in overrides.items() if key.endswith(suffix)), None)
        if filler is not None:
            val = filler(key, rng, shape)
        elif key.endswith("weight_g"):
            continue  # set from weight_v below
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if shape[1:] else shape[0]
            val = rng.standard_normal(shape) / math.sqrt(max(fan_in, 1))
        elif key.endswith("bias"):
            val = 0.05 * rng.standard_normal(shape)
        else:
            val = 1.0 + 0.1 * rng.standard_normal(shape)
        p.copy_(torch.as_tensor(np.asarray(val), dtype=p.dtype))
    for key, p in params.items():
        if key.endswith("weight_g") and not any(key.endswith(s) for s in overrides):
            v = params[key[: -len("weight_g")] + "weight_v"]
            norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(p.shape)
            scale = 1.0 + 0.1 * _rng_for(key, seed).standard_normal(tuple(p.shape))
            p.copy_(norm * torch.as_tensor(scale, dtype=p.dtype))
