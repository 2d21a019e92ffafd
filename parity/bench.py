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


def measure(benchmark, fn, rounds: int, warmup: bool = True, **info) -> None:
    if warmup:
        fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    benchmark.extra_info.update({"device": "cpu", "dtype": "float32", "threads": torch.get_num_threads(),
                                 "peak_rss_mb_process": peak_rss_mb(), **info})
