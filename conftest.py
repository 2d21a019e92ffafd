"""Session-wide options and fixtures for the parity suite.

--device {cpu,cuda,all}  which devices to parametrize (CUDA cases skip cleanly without a GPU)
--dtype {float32,float16,bfloat16,all}  the precision of the layer walks (Candle model and reference);
                         default float32; `all` parametrises the tests that take `run_dtype`
--full-size              synthetic checkpoints at the official size instead of tiny ones
--checkpoints DIR        run on the user's official files instead of synthetic ones
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Parity needs IEEE fp32 on CUDA: TF32 would add ~1e-3 relative error to every matmul/conv.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.deterministic = True


def pytest_addoption(parser):
    g = parser.getgroup("parity")
    g.addoption("--device", default="all", choices=["cpu", "cuda", "all"], help="devices to compare on")
    g.addoption("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "all"],
                help="precision of the layer walks: Candle and the reference both run in it (default float32)")
    g.addoption("--full-size", action="store_true", help="synthetic checkpoints at official size")
    g.addoption("--checkpoints", default=None, metavar="DIR", help="directory with the official checkpoint files")


def cuda_ready() -> tuple[bool, str]:
    import indextts_candle

    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch"
    if not indextts_candle.cuda_available():
        return False, "indextts_candle built without the `cuda` feature"
    return True, ""


DTYPES = ("float32", "float16", "bfloat16")


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        opt = metafunc.config.getoption("--device")
        devs = ["cpu", "cuda"] if opt == "all" else [opt]
        metafunc.parametrize("device", devs, indirect=True, scope="session")
    # one dtype: a plain fixture (test ids unchanged); `all`: one case per dtype
    if "run_dtype" in metafunc.fixturenames and metafunc.config.getoption("--dtype") == "all":
        metafunc.parametrize("run_dtype", DTYPES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def run_dtype(request) -> str:
    """The precision a layer walk runs in (`--dtype`), both sides."""
    return getattr(request, "param", None) or request.config.getoption("--dtype")


@pytest.fixture(scope="session")
def device(request):
    if request.param == "cuda":
        ok, why = cuda_ready()
        if not ok:
            pytest.skip(f"CUDA parity skipped: {why}")
    return request.param


@pytest.fixture(scope="session")
def size(request) -> str:
    if request.config.getoption("--checkpoints"):
        return "real"
    return "full" if request.config.getoption("--full-size") else "tiny"


@pytest.fixture(scope="session")
def fixtures(request):
    """`fixtures(name)` → the model's Fixture (checkpoint in official format + converted), cached."""
    from parity import fixtures as fx
    from parity.registry import MODELS

    ckpt = request.config.getoption("--checkpoints")
    size = "full" if request.config.getoption("--full-size") else "tiny"
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            try:
                cache[name] = fx.get(MODELS[name], size, ckpt)
            except fx.MissingCheckpoints as e:
                pytest.fail(str(e), pytrace=False)
        if size != "tiny" or ckpt:  # official size: only the model under test keeps its references
            for other, f in cache.items():
                if other != name:
                    f.drop_references()
        return cache[name]

    return get


@pytest.fixture(scope="session")
def candle_models(request, fixtures):
    """`candle_models(name, device, faults=(), dtype="float32")` → a loaded Candle model, cached per
    session (at official size only the last one: each holds GBs, and every fault switch is a model of
    its own)."""
    cache: dict = {}
    one = bool(request.config.getoption("--full-size") or request.config.getoption("--checkpoints"))

    def get(name: str, device: str = "cpu", faults: tuple = (), dtype: str = "float32"):
        key = (name, device, tuple(faults), dtype)
        if key not in cache:
            if one:
                cache.clear()
                import gc

                gc.collect()
            cache[key] = fixtures(name).candle(device, list(faults), dtype)
        return cache[key]

    get.clear = cache.clear  # a test about to build GBs of other models frees the cached ones
    return get


@pytest.fixture(scope="session")
def pipeline_fixtures(request):
    """The pipeline's fixtures (paths and configs only, no models) for this run's size:
    `--checkpoints` (official files), `--full-size` or tiny; missing official files fail by name."""
    from parity import pipeline as PP
    from parity.fixtures import MissingCheckpoints

    ckpt = request.config.getoption("--checkpoints")
    size = "full" if (ckpt or request.config.getoption("--full-size")) else "tiny"
    try:
        return PP.fixtures(size, ckpt)
    except MissingCheckpoints as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def bench_fixtures(request):
    """Benchmarks always run at official size (synthetic, or the user's files)."""
    from parity import fixtures as fx
    from parity.registry import MODELS

    ckpt = request.config.getoption("--checkpoints")
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = fx.get(MODELS[name], "full", ckpt)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def bench_device(request) -> str:
    """Where the benchmarks run: cuda under `--device cuda` (both sides; skipped without a GPU),
    else cpu."""
    if request.config.getoption("--device") == "cuda":
        ok, why = cuda_ready()
        if not ok:
            pytest.skip(f"CUDA benchmark skipped: {why}")
        return "cuda"
    return "cpu"


@pytest.fixture(scope="session")
def bench_dtype(request) -> str:
    """The precision both sides of a benchmark run in: `--dtype` (float32 under `all`)."""
    d = request.config.getoption("--dtype")
    return "float32" if d == "all" else d


def pytest_collection_modifyitems(config, items):
    """Benchmarks are official-size and slow: they run only under --benchmark-only."""
    if config.getoption("benchmark_only", False):
        return
    keep, dropped = [], []
    for it in items:
        (dropped if "benchmark" in getattr(it, "fixturenames", ()) else keep).append(it)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_terminal_summary(terminalreporter, config):
    """After a benchmark run: the figures the benchmarks exist for (mean time, RTF, peak memory) and
    Candle ÷ PyTorch per group, so the ratios of one run are printed side by side."""
    bs = getattr(config, "_benchmarksession", None)
    benches = [b for b in getattr(bs, "benchmarks", []) or [] if getattr(b, "stats", None) is not None]
    if not benches:
        return
    tr = terminalreporter
    dev = "CUDA" if config.getoption("--device") == "cuda" else "CPU"
    dt = config.getoption("--dtype")
    tr.section(f"benchmark figures ({dev}, {'float32' if dt == 'all' else dt})")
    groups: dict = {}
    for b in benches:
        mean = b.stats.mean
        info = b.extra_info or {}
        extra = "".join(f"  {k} {info[k]:.3g}" if isinstance(info.get(k), float) else f"  {k} {info[k]}"
                        for k in ("rtf", "audio_s", "size", "peak_rss_mb_process") if k in info)
        tr.write_line(f"{b.group or '-':<22} {b.name:<60} mean {mean:.4f} s{extra}")
        groups.setdefault(b.group, []).append((b.name, mean))
    for g, rows in groups.items():
        cand = [m for n, m in rows if "candle" in n]
        torch_ = [m for n, m in rows if "torch" in n]
        if len(cand) == 1 and len(torch_) == 1:
            tr.write_line(f"{g}: Candle ÷ PyTorch = {cand[0] / torch_[0]:.2f}")
