#!/usr/bin/env bash
# Builds `tandem` with `--features cuda` on a machine without a GPU or a system CUDA install:
# assembles the CUDA 13.0 toolkit from NVIDIA's PyPI wheels into a cache folder (once, about
# 1.2 GB), adds a link-time stand-in for the driver library, and runs
# `cargo build --release --features cuda` with the toolkit's variables set.
#
#   scripts/cuda-build.sh [CARGO_ARGS...]
#
#   TANDEM_CUDA_TOOLKIT  where the toolkit tree goes [${XDG_CACHE_HOME:-~/.cache}/tandem-cuda-13.0]
#   CUDA_COMPUTE_CAP     the target GPU's compute capability without the dot [90: H100, H200];
#                        there is no GPU to ask, and candle's kernel build needs it
#
# Only the CUDA 13 wheels carry a whole compiler (nvcc, cicc, fatbinary, nvlink); the 12.x
# nvcc wheels hold ptxas and headers only. Every wheel is pinned at 13.0.x: a newer nvcc pulls
# newer nvvm and crt, and a driver of the 580 series (CUDA 13.0) may refuse its PTX.
#
# The binary needs libcuda.so.1, libcurand.so.10, libcublas.so.13, libcublasLt.so.13 and
# libcudart.so.13 at run time: a GPU host's driver and CUDA 13 runtime provide them (or point
# LD_LIBRARY_PATH at the toolkit's lib64). The stand-in libcuda.so in lib64/stubs only links: on
# LD_LIBRARY_PATH it lets the binary start, finds no GPU (CUDA_ERROR_STUB_LIBRARY) and runs models
# on the CPU; without any libcuda.so.1 the loader refuses to start the binary (exit 127).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLKIT=${TANDEM_CUDA_TOOLKIT:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem-cuda-13.0}
WHEELS=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
    nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14
)

assemble() {
    echo "assembling the CUDA 13.0 toolkit in $TOOLKIT"
    rm -rf "$TOOLKIT"
    mkdir -p "$TOOLKIT"
    python3 -m venv "$TOOLKIT/.venv"
    "$TOOLKIT/.venv/bin/pip" install --quiet --disable-pip-version-check "${WHEELS[@]}"
    # The wheels install one toolkit-shaped tree: site-packages/nvidia/cu13/{bin,include,lib,nvvm}.
    local tree
    tree=$("$TOOLKIT/.venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
    [ -x "$tree/bin/nvcc" ] || { echo "no nvcc in $tree" >&2; exit 1; }
    ln -s "$tree/bin" "$TOOLKIT/bin"
    ln -s "$tree/include" "$TOOLKIT/include"
    ln -s "$tree/nvvm" "$TOOLKIT/nvvm"
    # The build looks for libraries in lib64 (and lib64/stubs), under their plain names too.
    mkdir -p "$TOOLKIT/lib64/stubs"
    local lib
    for lib in "$tree"/lib/*.so.* "$tree"/lib/*.a; do
        [ -e "$lib" ] && ln -s "$lib" "$TOOLKIT/lib64/"
    done
    for lib in cublas cublasLt cudart curand nvrtc; do
        (cd "$TOOLKIT/lib64" && ln -sf "$(ls "lib$lib".so.[0-9]* | head -1)" "lib$lib.so")
    done
    # No wheel ships the driver's libcuda.so. Linking needs one (cudarc links the driver
    # dynamically): a stand-in exporting every cu* entry point of cuda.h, each returning 34,
    # CUDA_ERROR_STUB_LIBRARY.
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$tree/include/cuda.h" | sort -u |
        awk '{print "int " $1 "(void) { return 34; }"}' >"$TOOLKIT/lib64/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TOOLKIT/lib64/stubs/libcuda.so" "$TOOLKIT/lib64/stubs/libcuda_stub.c"
    ln -sf libcuda.so "$TOOLKIT/lib64/stubs/libcuda.so.1"
    touch "$TOOLKIT/.complete"
}

[ -e "$TOOLKIT/.complete" ] || assemble

export CUDA_HOME=$TOOLKIT CUDA_PATH=$TOOLKIT CUDA_ROOT=$TOOLKIT
export PATH=$TOOLKIT/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -2
echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

start=$(date +%s)
cargo build --release --features cuda "$@"
echo "built in $(( $(date +%s) - start )) s: ${CARGO_TARGET_DIR:-target}/release/tandem"
