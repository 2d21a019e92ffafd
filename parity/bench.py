"""The one timing recipe for the Candle-vs-PyTorch benchmarks: warm-up outside the timing
(allocations, page-in of the mmap), `rounds` single calls, and the facts a reader needs."""
from __future__ import annotations

import torch


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (VmHWM); both sides share one process, so compare
    runs of one side (`-k candle` / `-k torch`) for a per-side figure."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synced(fn, device: str):
    """fn, then wait for the GPU: a CUDA call returns before its kernels finish (Candle's outputs
    come back to the host, which waits anyway; torch's do not)."""
    if not device.startswith("cuda"):
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def measure(benchmark, fn, rounds: int, warmup: bool = True, device: str = "cpu", dtype: str = "float32", **info) -> None:
    fn = synced(fn, device)
    if warmup:
        fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    benchmark.extra_info.update({"device": device, "dtype": dtype, "threads": torch.get_num_threads(),
                                 "peak_rss_mb_process": peak_rss_mb(), **info})
