#!/usr/bin/env bash
# Builds the CPU emulation harness of the CUDA kernels: the real csrc/cuda/*.cu compiled as C++ against emu.h
# (threads for blocks, a barrier for __syncthreads, per-warp emulation of ldmatrix / mma), checked by harness.cpp
# against float64 references. Usage: tests/cuda_emu/build.sh OUT_DIR   (needs g++ and the CUDA runtime headers)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?output directory}"
emu="$root/tests/cuda_emu"
cuda_inc="${CUDA_HOME:-/usr/local/cuda}/include"
flags=(-std=c++20 -O2 "-DFASTCONV_EMULATE=\"$emu/emu.h\"" "-I$cuda_inc" "-I$root/csrc" "-I$emu")
mkdir -p "$out"
for f in conv_fwd conv_bwd maxpool conv_tc; do
  g++ "${flags[@]}" -c -x c++ "$root/csrc/cuda/$f.cu" -o "$out/$f.o" &
done
g++ "${flags[@]}" -c "$emu/harness.cpp" -o "$out/harness.o"
wait
g++ -o "$out/harness" "$out"/*.o -lpthread
