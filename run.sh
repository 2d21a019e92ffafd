#!/usr/bin/env bash
# Set-up + the two jobs. `./run.sh report` = the main job, `./run.sh test` = the test suite.
# Both build the Rust extension (release, abi3 wheel) and install it with the Python deps first;
# pip's and cargo's caches make the second run fast. Set INDEXTTS_CUDA=1 to build Candle with CUDA.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore

setup() {
  "$PY" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2"
  local features=()
  [ "${INDEXTTS_CUDA:-0}" = "1" ] && features=(--features cuda)
  rm -rf target/wheels-local
  "$PY" -m maturin build --release -q -m rust_bindings/Cargo.toml -o target/wheels-local "${features[@]}"
  # the `indextts2` CLI (target/release/indextts2): tests/test_cli.py runs it
  cargo build --release -q -p indextts2_cli "${features[@]}"
  local whl
  whl=$(ls target/wheels-local/*.whl)
  # The wheel's metadata carries the dependency ranges of pyproject.toml; [test] adds the test tools.
  "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$whl"
  "$PY" -m pip install -q --disable-pip-version-check "${whl}[test]"
  # The official index-tts code (PyPI snapshot), used only by cross-checks of our references against
  # it. --no-deps: its own pins (gradio, deepspeed, …) are not needed to import the model modules.
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "tts-webui-index-tts==2.0.1" "einops>=0.8,<0.9"
}

case "${1:-}" in
  report)
    shift
    setup
    exec "$PY" -m parity report "$@"
    ;;
  test)
    shift
    setup
    cargo test --release -q -p indextts2_candle
    # The suite on every core (pytest-xdist) unless the caller picks: `-n`/`--numprocesses`/`--dist`
    # given, xdist switched off (`-p no:xdist`), a benchmark run (xdist disables timing), or the
    # official-size tier (one worker peaks at 13 GB on BigVGAN's file, 20 GB on test_models: two at
    # once were OOM-killed on the 24 GB CI-class machine).
    par=(-n auto)
    for a in "$@"; do
      case "$a" in
        -n|-n*|--numprocesses*|--dist*|no:xdist|--benchmark*|--full-size) par=() ;;
      esac
    done
    exec "$PY" -m pytest "${par[@]}" "$@"
    ;;
  *)
    echo "usage: ./run.sh report [--out DIR] [--checkpoints DIR] | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
