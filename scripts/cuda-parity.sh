#!/usr/bin/env bash
# The CUDA parity run, sized for one GPU slot (≤ 8 minutes on one H200), and its CPU rehearsal.
#
#   scripts/cuda-parity.sh OUTDIR              # on the GPU machine (no registry, no Rust): wheels from dist/cuda/
#   scripts/cuda-parity.sh --rehearse OUTDIR   # here, on CPU: the same commands with --device cpu and the
#                                              # CPU wheel (dist/cpu/, scripts/build-cuda-wheel.sh --cpu)
#
# Steps (each under its own time limit, all logged to OUTDIR/run.log, timed in OUTDIR/steps.tsv):
#   install      the extension wheel + the reference's wheels at our pins into a target folder
#                (pip --no-index --target; PYTHONPATH puts them before the machine's transformers 5.x)
#   env          versions, CUDA usable by torch AND the extension (the run stops here if not)
#   determinism  each GPT/DiT/BigVGAN case twice on the same Candle model: max|run1 − run2|
#   survey       the noise ratios (float32, tiny, seeds 0-2, both walks) → survey.json (the CUDA k rows)
#   tiny         pytest --device D -k D: every device-parametrised test of the tiny tier
#   full         pytest --device D --full-size: the layer walks of the GPT, DiT and BigVGAN at official size
#   bench        pytest --benchmark-only --device D: GPT, DiT, BigVGAN, Candle vs torch → bench.json
#   half         pytest --device D --dtype all: the half-precision layer walks (tiny, GPT/DiT/BigVGAN)
# Then summary.json + summary.md, run.log and raw.tar.gz (the JSON / JUnit files): four files, within
# the eight the device tool brings back. Exit status 0 only if every step passed. Selections and limits can
# be narrowed with TINY_K / FULL_K / BENCH_K / HALF_K and LIMIT_<STEP> (seconds); the rehearsal
# narrows TINY_K / FULL_K / BENCH_K (this machine: 2 shared cores, no official-size GPT).
set -uo pipefail
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then REHEARSE=1; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: scripts/cuda-parity.sh [--rehearse] OUTDIR" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
PY=${PYTHON:-python3}
START=$(date +%s)
BUDGET=${BUDGET:-450}  # seconds for all steps: each step's limit is cut to what is left, a step past it is skipped (rc 125)
if [ $REHEARSE = 1 ]; then
  DEV=cpu
  EXT_DIR=${EXT_DIR:-$ROOT/dist/cpu}
  : "${TINY_K:=cpu and (gpt or dit or bigvgan)}"
  : "${FULL_K:=cpu and bigvgan and test_layers and injected}"
  : "${BENCH_K:=bench_bigvgan}"
  : "${SURVEY_SEEDS:=0}"
  BUDGET=${BUDGET_REHEARSE:-2400}
  SCALE=${SCALE:-5}  # time limits ×5: 2 shared cores here
else
  DEV=cuda
  EXT_DIR=${EXT_DIR:-$ROOT/dist/cuda}
fi
: "${TINY_K:=$DEV}"
: "${FULL_K:=$DEV and test_layers and (gpt or dit or bigvgan)}"
: "${BENCH_K:=bench_gpt or bench_dit or bench_bigvgan}"
: "${HALF_K:=$DEV and test_layers and (gpt or dit or bigvgan)}"
: "${SURVEY_SEEDS:=0 1 2}"
SCALE=${SCALE:-1}
SITE=${SITE:-/tmp/indextts-site-$DEV}
export INDEXTTS_FIXTURE_CACHE=${INDEXTTS_FIXTURE_CACHE:-/tmp/indextts-fixtures}
export PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
LOG=$OUT/run.log
: > "$LOG"
: > "$OUT/steps.tsv"
rm -f "$OUT"/junit-*.xml "$OUT"/{env,survey,determinism,bench,summary}.json "$OUT/summary.md"
FAILED=0

step() {  # step NAME LIMIT_S CMD...: runs CMD under a time limit, records rc and seconds
  local name=$1 limit=$2 rc t0 t1 ms
  shift 2
  local var="LIMIT_${name^^}"
  limit=${!var:-$(( limit * SCALE ))}
  local left=$(( BUDGET - ($(date +%s) - START) ))
  [ "$limit" -le "$left" ] || limit=$left
  t0=$(date +%s%N)
  if [ "$left" -le 0 ]; then
    rc=125
    echo "=== $name: skipped, the ${BUDGET}s budget is spent" | tee -a "$LOG"
  else
    echo "=== $name (limit ${limit}s): $*" >> "$LOG"
    if declare -F "$1" > /dev/null; then  # a shell function (timeout runs programs only)
      "$@" >> "$LOG" 2>&1
    else
      timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
    fi
    rc=$?
  fi
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))  # bash arithmetic: the GPU machine may have no bc
  printf '%s\t%d\t%d.%03d\n' "$name" "$rc" $(( ms / 1000 )) $(( ms % 1000 )) >> "$OUT/steps.tsv"
  echo "$name: rc $rc, $(tail -1 "$OUT/steps.tsv" | cut -f3) s"
  [ "$rc" -eq 0 ] || FAILED=1
  return "$rc"
}

# --- install: the extension from EXT_DIR, the reference's wheels from dist/cuda (a wheel that EXT_DIR
# also holds, e.g. the rehearsal's sentencepiece for this interpreter, is taken from EXT_DIR) ---
install_wheels() {
  local wheels=() have=() w n
  for w in "$EXT_DIR"/*.whl; do wheels+=("$w"); have+=("$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')"); done
  for w in "$ROOT"/dist/cuda/*.whl; do
    n=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
    [[ " ${have[*]} " == *" $n "* ]] || wheels+=("$w")
  done
  ls "$EXT_DIR"/indextts2_candle_parity-*.whl > /dev/null || { echo "no extension wheel in $EXT_DIR" >&2; return 1; }
  printf '%s\n' "${wheels[@]}"
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}"
}
step install 120 install_wheels
export PYTHONPATH=$SITE
# The extension links libcuda (the driver) and the CUDA 13 libraries torch's wheels bring
# (nvidia/cu13/lib: cudart, nvrtc, cublas, cublasLt, curand); nothing of CUDA is in the wheel.
LIBS=$("$PY" - <<'EOF'
import glob, os, site, sys
want = ["libcudart.so.13", "libnvrtc.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"]
roots = [p for p in sys.path if os.path.isdir(p)] + site.getsitepackages()
dirs = []
for so in want:
    for r in roots:
        hits = glob.glob(os.path.join(r, "nvidia", "**", so), recursive=True)
        if hits:
            d = os.path.dirname(hits[0])
            if d not in dirs:
                dirs.append(d)
            break
print(":".join(dirs + [d for d in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib") if os.path.isdir(d)]))
EOF
)
export LD_LIBRARY_PATH=${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{ echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd "$SITE"/indextts_candle/*.so "$SITE"/indextts_candle*.so 2>/dev/null; } >> "$LOG"
if ldd "$SITE"/indextts_candle/*.so "$SITE"/indextts_candle*.so 2>/dev/null | grep -q "not found"; then
  echo "the extension's libraries are not all found (run.log has ldd's list)" | tee -a "$LOG"
fi

if step env 60 "$PY" -m parity.gpu_run env "$OUT/env.json" --device "$DEV"; then
  # -v: a step killed at its limit writes no JUnit file; its PASSED/FAILED lines in run.log still count
  PYTEST=("$PY" -m pytest -p no:cacheprovider -v -rfE --device "$DEV")
  step determinism 60 "$PY" -m parity.gpu_run determinism "$OUT/determinism.json" --device "$DEV"
  step survey 120 "$PY" -m parity survey --device "$DEV" --models gpt dit bigvgan --seeds $SURVEY_SEEDS --json "$OUT/survey.json"
  step tiny 150 "${PYTEST[@]}" -k "$TINY_K" --junitxml "$OUT/junit-tiny.xml"
  step full 150 "${PYTEST[@]}" --full-size -k "$FULL_K" --junitxml "$OUT/junit-full.xml"
  step bench 120 "${PYTEST[@]}" --benchmark-only -k "$BENCH_K" --benchmark-json "$OUT/bench.json"
  step half 90 "${PYTEST[@]}" --dtype all -k "$HALF_K" --junitxml "$OUT/junit-half.xml"
fi
"$PY" -m parity.gpu_run summary "$OUT" >> "$LOG" 2>&1
cat "$OUT/steps.tsv"
# The device tool returns at most 8 files: summary.json (which holds env, survey, determinism, the
# JUnit totals and the benchmarks), summary.md, run.log, and the raw files in one archive.
( cd "$OUT" && tar czf raw.tar.gz --remove-files steps.tsv $(ls env.json survey.json determinism.json bench.json junit-*.xml 2>/dev/null) )
echo "total $(( $(date +%s) - START )) s; $OUT/summary.md"
exit $FAILED
