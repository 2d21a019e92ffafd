"""torch.nn.functional.conv1d on the shapes of examples/bv_convs.rs (BigVGAN official size, ≈1 s of audio), 2 threads."""
import torch, time
torch.set_num_threads(2)
tot = 0
with torch.no_grad():
  for c, l in [(768, 344), (384, 1376), (192, 2752), (96, 5504), (48, 11008), (24, 22016)]:
    x = torch.randn(1, c, l); st = 0
    for k in [3, 7, 11]:
        for dil in [1, 3, 5, 1, 1, 1]:
            w = torch.randn(c, c, k) * 0.01; p = dil * (k - 1) // 2
            torch.nn.functional.conv1d(x, w, None, 1, p, dil)
            t0 = time.perf_counter(); torch.nn.functional.conv1d(x, w, None, 1, p, dil); st += time.perf_counter() - t0
    print(f"C={c} L={l}: {st*1e3:.1f} ms  {2*c*c*l*6*21/st/1e9:.1f} GFLOP/s"); tot += st
print(f"total {tot*1e3:.1f} ms")
