"""torch's scaled_dot_product_attention on the shape of examples/attn_speed.rs (key mask, f32 CPU).

    python scripts/attn_speed_torch.py [ROUNDS B T H D]
"""
import sys
import time

import torch

args = [int(a) for a in sys.argv[1:]]
rounds = args[0] if args else 10
b, t, h, d = args[1:5] if len(args) >= 5 else (2, 430, 8, 64)
torch.manual_seed(0)
qkv = torch.randn(b, t, 3 * h * d)
q, k, v = (x.reshape(b, t, h, d).transpose(1, 2) for x in qkv.split(h * d, dim=2))
mask = torch.zeros(b, 1, 1, t)
for i in range(b):
    mask[i, ..., t - 7 * i:] = float("-inf")
best = float("inf")
with torch.inference_mode():
    for _ in range(rounds):
        t0 = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        best = min(best, time.perf_counter() - t0)
print(f"torch sdpa b {b} t {t} h {h} d {d}: {best * 1e3:.3f} ms, {4 * b * h * t * t * d / best / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
