#!/usr/bin/env bash
# Builds the CUDA abi3 wheel of the bindings on a machine WITHOUT a GPU or a CUDA install, from
# registry packages only (PyPI's nvidia-* wheels + crates.io), and collects the Python wheels the
# GPU machine lacks at our pins. Output: dist/cuda/ (wheels, <= 64 MiB together, checked).
#
#   scripts/build-cuda-wheel.sh            # toolchain in .cuda-toolchain/, cargo target in target/cuda/
#   scripts/build-cuda-wheel.sh --cpu      # the rehearsal's CPU wheel (dist/cpu/) + sentencepiece for
#                                          # this interpreter (the carried one is built for Python 3.12)
#
# Pins: nvcc 13.0 because the GPU machine's driver is 580 (CUDA 13.0); PTX from a newer nvcc is
# refused there (CUDA_ERROR_UNSUPPORTED_PTX_VERSION). CUDA_COMPUTE_CAP=90 (H200; no GPU to detect).
# Heavy (candle-kernels' nvcc compile of ~30 .cu files): nice'd, one job, one nvcc thread, unless
# CARGO_BUILD_JOBS / CUDAFORGE_THREADS say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
TC=${CUDA_TOOLCHAIN_DIR:-$ROOT/.cuda-toolchain}
OUTDIR=${CUDA_WHEEL_DIR:-$ROOT/dist/cuda}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${1:-}" = "--cpu" ]; then
  out=$ROOT/dist/cpu
  rm -rf "$out" && mkdir -p "$out"
  "$PY" -m pip install -q "maturin>=1.5,<2"
  nice -n "${NICE:-10}" "$PY" -m maturin build --release -m rust_bindings/Cargo.toml --auditwheel skip --strip -o "$out"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$out" sentencepiece==0.2.3
  ls -l "$out"
  exit 0
fi

# 1. The CUDA 13.0 toolchain from PyPI. The 13.x nvcc wheel is split: nvcc (+ptxas, fatbinary) in
#    nvidia-cuda-nvcc, cicc/libdevice in nvidia-nvvm, the crt/ headers in nvidia-cuda-crt, the
#    cuda_fp16.h / cuda_bf16.h runtime headers in nvidia-cuda-runtime, <nv/target> in cccl. All
#    land in one prefix, nvidia/cu13 = CUDA_HOME. nvrtc/cublas/curand are only linked against.
CUDA_PKGS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
if [ ! -x "$TC/py/nvidia/cu13/bin/nvcc" ]; then
  "$PY" -m pip install -q --no-deps --target "$TC/py" "${CUDA_PKGS[@]}"
fi
export CUDA_HOME=$TC/py/nvidia/cu13
export PATH=$CUDA_HOME/bin:$PATH
nvcc --version | grep -q "release 13.0" || { echo "nvcc is not 13.0: $(nvcc --version | tail -2)" >&2; exit 1; }

# 2. What the link step needs. cudarc (candle's dependency) is built with `dynamic-linking`: the
#    extension is linked with -lcuda -lnvrtc -lcurand -lcublas -lcublasLt, and candle-kernels adds
#    -lcudart (+ libstdc++). The PyPI wheels ship only the versioned sonames (libcublas.so.13 …):
#    the unversioned names the linker looks for are symlinks in $CUDA_HOME/lib. libcuda is the
#    driver and no PyPI wheel ships it: a stub with SONAME libcuda.so.1 is generated from the entry
#    points cudarc binds (each returns CUDA_ERROR_STUB_LIBRARY = 34), in lib/stubs, where cudarc's
#    link search looks. At run time the real driver's libcuda.so.1 and torch's nvidia/cu13/lib
#    libraries are found through LD_LIBRARY_PATH (scripts/cuda-parity.sh).
LIB=$CUDA_HOME/lib
for so in libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13 libcudart.so.13; do
  ln -sf "$so" "$LIB/${so%.so.*}.so"
done
cargo fetch -q
CUDARC_SRC=$(cargo metadata -q --format-version 1 --features indextts2_candle_py/cuda | "$PY" -c '
import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
mkdir -p "$LIB/stubs"
if [ ! -f "$LIB/stubs/libcuda.so" ] || [ "$CUDARC_SRC/src/driver/sys/mod.rs" -nt "$LIB/stubs/libcuda.so" ]; then
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC_SRC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u |
    awk '{print "int " $1 "(void) { return 34; }"}' > "$LIB/stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LIB/stubs/libcuda.so" "$LIB/stubs/libcuda_stub.c"
fi

# 3. The wheel. Own target dir (the CPU build in target/release stays untouched); no auditwheel
#    repair: the CUDA libraries must come from the GPU machine, never be copied into the wheel.
export CUDA_COMPUTE_CAP=90
export CARGO_TARGET_DIR=$ROOT/target/cuda
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-1}
if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$ROOT/target/release" ]; then
  mkdir -p "$CARGO_TARGET_DIR" && cp -a "$ROOT/target/release" "$CARGO_TARGET_DIR/"   # seeds the CPU-only deps
fi
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
"$PY" -m pip install -q "maturin>=1.5,<2"
nice -n "${NICE:-15}" "$PY" -m maturin build --release -m rust_bindings/Cargo.toml --features cuda \
  --auditwheel skip --target-dir "$CARGO_TARGET_DIR" -o "$OUTDIR"

# 4. The Python wheels the GPU machine lacks at our pins (it has torch 2.11 cu130, numpy,
#    safetensors, torchaudio, hypothesis, pytest, pytest-benchmark; no registry): transformers at the
#    official package's pin and its tokenizers/huggingface-hub ranges, sentencepiece >= 0.2.3 (the
#    machine has 0.2.2, whose unigram scoring differs), the official index-tts code for the
#    cross-checks (+ einops is there already).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$OUTDIR" \
  transformers==4.52.1 tokenizers==0.21.4 "huggingface-hub>=0.30,<1.0" "sentencepiece==0.2.3" \
  tts-webui-index-tts==2.0.1
ls -l "$OUTDIR"
total=$(du -cb "$OUTDIR"/*.whl | tail -1 | cut -f1)
echo "wheels: $total bytes"
[ "$total" -le $((64 * 1024 * 1024)) ] || { echo "wheels exceed 64 MiB" >&2; exit 1; }
