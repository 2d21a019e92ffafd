"""The report's performance section reads benchmark JSON (it times nothing): ratios, RTF, load
and memory rows, the chart, the CPU model; an unknown file is refused."""
from __future__ import annotations

import json
import os

import pytest

from parity import perf


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def test_perf_section_from_benchmark_json(tmp_path):
    pb = _write(tmp_path, "bench.json", {"benchmarks": [
        {"group": "bigvgan", "name": "test_bench_bigvgan[candle]", "stats": {"mean": 0.5},
         "extra_info": {"threads": 2, "audio_s": 1.0}},
        {"group": "bigvgan", "name": "test_bench_bigvgan[torch]", "stats": {"mean": 2.0},
         "extra_info": {"threads": 2, "audio_s": 1.0}},
        # a parametrised benchmark: the side is one parameter, the others name the row
        {"group": "pipeline-rtf", "name": "test_bench_pipeline_rtf[sampled-candle]", "stats": {"mean": 3.0},
         "extra_info": {"threads": 2, "audio_s": 0.5}},
        {"group": "pipeline-rtf", "name": "test_bench_pipeline_rtf[sampled-torch]", "stats": {"mean": 6.0},
         "extra_info": {"threads": 2, "audio_s": 0.5}},
        {"group": "pipeline-load", "name": "test_bench_pipeline_load[candle_mmap]", "stats": {"mean": 1.0}, "extra_info": {}},
        {"group": "pipeline-load", "name": "test_bench_pipeline_load[torch_load]", "stats": {"mean": 4.0}, "extra_info": {}}]})
    ab = _write(tmp_path, "ab.json", [{"name": "dit_estimator", "candle_s": [3.0, 2.0], "torch_s": [4.0, 4.0],
                                       "ratios": [0.75, 0.5], "ratio_median": 0.625, "ratio_of_min": 0.5, "threads": 2}])
    ld = _write(tmp_path, "load.json", [{"name": "gpt", "checkpoint_bytes": 2e9, "candle_s": [1.0], "official_s": [4.0],
                                         "memcpy_gbps": 10.0, "floor_s": 0.2, "candle_over_official": 0.25,
                                         "candle_over_floor": 5.0, "memcpy_fresh_gbps": 5.0, "fresh_floor_s": 0.4,
                                         "candle_over_fresh_floor": 2.5, "threads": 2},
                                        {"name": "dit", "checkpoint_bytes": 4e8, "candle_s": [0.05], "official_s": [0.3],
                                         "memcpy_gbps": 20.0, "floor_s": 0.02, "candle_over_official": 0.17,
                                         "candle_over_floor": 2.5, "memcpy_fresh_gbps": 10.0, "fresh_floor_s": 0.04,
                                         "candle_over_fresh_floor": 1.25, "threads": 2,
                                         "candle_first_s": [0.12, 0.1, 0.11], "official_first_s": [0.5, 0.6, 0.55]}])
    rss = _write(tmp_path, "rss.json", [{"name": "gpt", "peak_rss_bytes": 3e9, "baseline_rss_bytes": 5e8,
                                         "weights_bytes": 2e9, "ratio": 1.5, "ratio_above_baseline": 1.25}])
    d, md = perf.section(str(tmp_path), [pb, ab, ld, rss])
    stages = {s["stage"]: s for s in d["stages"]}
    assert stages["bigvgan"]["ratio"] == pytest.approx(0.25) and stages["bigvgan"]["rtf_candle"] == pytest.approx(0.5)
    assert stages["dit_estimator"]["ratio"] == pytest.approx(0.625)
    assert stages["pipeline-rtf/sampled"]["ratio"] == pytest.approx(0.5)
    assert stages["pipeline-rtf/sampled"]["rtf_torch"] == pytest.approx(12.0)
    assert stages["pipeline-load"]["ratio"] == pytest.approx(0.25)
    assert d["threads"] == [2] and d["cpu"] == perf.cpu_model() and d["cpu"]
    text = "\n".join(md)
    assert "| bigvgan | 0.500 | 2.000 | 0.25 |" in text and "| gpt | 2.00 | 1.00 | 4.00 |" in text
    assert "| 0.200 (10.0 GB/s) | 0.400 (5.0 GB/s) | 0.25 | 5.0 | 2.5 |" in text
    assert "| gpt | 3.00 | 0.50 | 2.00 | 1.50 | 1.25 |" in text
    # the fresh-process loads of the one model that has them, as medians
    assert "| dit | 0.110 | 0.550 | 0.20 | 2.8 |" in text and "| gpt | 1.000 |" not in text
    assert os.path.getsize(tmp_path / "perf.png") > 0


def test_perf_section_refuses_unknown_json(tmp_path):
    with pytest.raises(ValueError, match="not a pytest-benchmark"):
        perf.section(str(tmp_path), [_write(tmp_path, "x.json", {"foo": 1})])
