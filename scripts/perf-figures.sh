#!/usr/bin/env bash
# Every performance figure of the README's table in one go, at official size, CPU fp32, then the
# report's performance section from them:  scripts/perf-figures.sh OUTDIR [ROUNDS]
# Needs about 12 GB free and a quiet machine (the ratios come from alternated rounds, the absolute
# times do not). Run after ./run.sh test or report (the extension and test deps installed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/perf-figures.sh OUTDIR [ROUNDS]}
rounds=${2:-3}
mkdir -p "$out"
PY=${PYTHON:-python3}
# model stages: the two sides alternated round by round (parity.ab)
"$PY" -m parity.ab bigvgan dit_estimator dit_cfm25 gpt_spk_cond gpt_forward_latent gpt_greedy17 w2v_bert_17 \
  semantic_codec campplus mel --rounds "$rounds" --json "$out/ab.json"
# resample and the whole pipeline (one segment, greedy and sampled codes): pytest-benchmark, one side per test
"$PY" -m pytest -q -p no:cacheprovider --benchmark-only --full-size -k "bench_resample or bench_pipeline_rtf" \
  --benchmark-json="$out/bench.json"
# load to ready (Candle, official, memcpy floors) and peak RSS of Candle-only processes
"$PY" -m parity.loadbench gpt bigvgan dit --rounds "$rounds" --json "$out/load.json"
"$PY" -m parity.loadbench --rss pipeline gpt w2v_bert semantic_codec bigvgan dit --json "$out/rss.json"
"$PY" -m parity perf "$out/ab.json" "$out/bench.json" "$out/load.json" "$out/rss.json" --out "$out"
