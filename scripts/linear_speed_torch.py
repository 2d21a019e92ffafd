"""torch.nn.functional.linear on the shapes of examples/linear_speed.rs, 2 threads, mean of 20."""
import torch, time
torch.set_num_threads(2)
with torch.no_grad():
  for m,k,n in [(500,384,2048),(500,2048,384),(175,1280,3840),(175,1280,5120),(175,5120,1280),(430,512,2048)]:
    x=torch.randn(1,m,k); w=torch.randn(n,k)*.02; b=torch.randn(n)*.02
    torch.nn.functional.linear(x,w,b)
    t0=time.perf_counter()
    for _ in range(20): torch.nn.functional.linear(x,w,b)
    s=(time.perf_counter()-t0)/20
    print(f"{m}x{k}x{n}: torch {s*1e3:.2f} ms ({2*m*k*n/1e9/s:.0f} GF/s)")
