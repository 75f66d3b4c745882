#!/usr/bin/env bash
# Compile-only checks of the CUDA backend, for machines without a GPU (called from .ci/run).
#  1. every csrc/**/*.cu through nvcc -c for sm_80 and sm_90 with -Xptxas -v: prints registers / stack / spills per
#     kernel and fails if any kernel spills (spill stores or loads > 0 bytes);
#  2. the PTX of the tensor-core files (csrc/cuda/conv_tc*.cu) must contain mma.sync, ldmatrix and cp.async, and
#     their compute_75 PTX must trap (no tensor cores there: a kernel must fail, never return zeros);
#  3. csrc/cuda/ops_cuda.cpp must pass g++ -fsyntax-only against torch's headers (skipped if torch is missing).
# Without nvcc it prints "nvcc not found: skipping" and succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=nvcc
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc
  else echo "nvcc not found: skipping"; exit 0
  fi
fi
CUDA_INC=""
for dir in "${CUDA_HOME:-}/include" "${CUDA_PATH:-}/include" \
           "$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")/include" /usr/local/cuda/include; do
  if [[ -f "$dir/cuda_runtime.h" ]]; then CUDA_INC="$dir"; break; fi
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
ARCHS=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90)
# The flags torch.utils.cpp_extension adds to every nvcc call, so the check sees what the real build sees.
TORCH_NVCC_FLAGS=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
                  -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -Xcompiler -fPIC)
mapfile -t CU_FILES < <(find csrc -name '*.cu' | sort)
if [[ ${#CU_FILES[@]} -eq 0 ]]; then echo "no .cu files under csrc"; exit 1; fi
echo "== nvcc: $("$NVCC" --version | tail -1)"
echo "== compiling ${#CU_FILES[@]} CUDA files for sm_80 and sm_90 ($JOBS at a time)"

compile_one() {  # file -> $TMP/<name>.o, ptxas report in $TMP/<name>.log, status in $TMP/<name>.rc
  local f="$1" name
  name="$(echo "$f" | tr '/' '_')"
  set +e
  "$NVCC" -c -std=c++17 -O3 -Icsrc "${ARCHS[@]}" "${TORCH_NVCC_FLAGS[@]}" -Xptxas -v "$f" -o "$TMP/$name.o" \
    >"$TMP/$name.log" 2>&1
  echo $? >"$TMP/$name.rc"
}
running=0
for f in "${CU_FILES[@]}"; do
  compile_one "$f" &
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
done
wait

demangle() { if command -v c++filt >/dev/null 2>&1; then c++filt; else cat; fi; }
status=0
for f in "${CU_FILES[@]}"; do
  name="$(echo "$f" | tr '/' '_')"
  rc="$(cat "$TMP/$name.rc")"
  echo "-- $f (nvcc rc=$rc)"
  if [[ "$rc" != 0 ]]; then
    grep -v '^ptxas info' "$TMP/$name.log" | head -60
    echo "FAIL: nvcc could not compile $f"
    status=1
    continue
  fi
  grep -iE 'warning' "$TMP/$name.log" | head -20 || true
  # One line per kernel: arch, registers, stack, spill stores/loads, shared memory, name.
  awk -v q="'" '
    /Compiling entry function/ { split($0, part, q); fn = part[2]; arch = part[4]; entry = 1; next }
    /Function properties for/   { entry = ($NF == fn); next }   # a non-inlined callee has its own block
    /bytes stack frame/         { if (entry) { stack = $1; sst = $5; sld = $9 } next }
    /Used [0-9]+ registers/     { if (entry) {
                                    regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs);
                                    smem = "0"; if ($0 ~ /bytes smem/) { smem = $0; sub(/ bytes smem.*/, "", smem); sub(/.* /, "", smem) }
                                    printf "%s regs=%-3s stack=%-3s spill=%s/%s smem=%-6s %s\n", arch, regs, stack, sst, sld, smem, fn
                                    entry = 0 } }
  ' "$TMP/$name.log" | demangle | sed -E 's/fastconv::cuda::(\(anonymous namespace\)::)?//g' | cut -c1-190
  if grep -qE '[1-9][0-9]* bytes spill (stores|loads)' "$TMP/$name.log"; then
    echo "FAIL: register spills in $f:"
    grep -B2 -E '[1-9][0-9]* bytes spill (stores|loads)' "$TMP/$name.log" | demangle | head -40
    status=1
  fi
done

echo "== tensor-core PTX"
mapfile -t TC_FILES < <(find csrc -name 'conv_tc*.cu' | sort)
if [[ ${#TC_FILES[@]} -eq 0 ]]; then
  echo "FAIL: no tensor-core source (csrc/**/conv_tc*.cu)"
  status=1
fi
for f in "${TC_FILES[@]}"; do
  for arch in 80 90; do
    ptx="$TMP/$(basename "$f" .cu).sm$arch.ptx"
    if ! "$NVCC" -ptx -std=c++17 -O3 -Icsrc -arch=compute_$arch "${TORCH_NVCC_FLAGS[@]:0:5}" "$f" -o "$ptx" 2>"$ptx.log"; then
      cat "$ptx.log"; echo "FAIL: nvcc -ptx $f for compute_$arch"; status=1; continue
    fi
    echo "-- $f compute_$arch:"
    grep -oE '(mma\.sync\.aligned|ldmatrix\.sync\.aligned|cp\.async)[.a-z0-9:]*' "$ptx" | sort | uniq -c | sed 's/^/   /'
    for need in 'mma.sync.aligned' 'ldmatrix.sync.aligned' 'cp.async.cg.shared.global' 'cp.async.wait_group'; do
      if ! grep -q "$need" "$ptx"; then echo "FAIL: $need missing from the PTX of $f (compute_$arch)"; status=1; fi
    done
  done
  # Below sm_80 the tensor-core instructions do not exist: such code must trap, never run on and return zeros.
  ptx="$TMP/$(basename "$f" .cu).sm75.ptx"
  if ! "$NVCC" -ptx -std=c++17 -O3 -Icsrc -arch=compute_75 "${TORCH_NVCC_FLAGS[@]:0:5}" "$f" -o "$ptx" 2>"$ptx.log"; then
    cat "$ptx.log"; echo "FAIL: nvcc -ptx $f for compute_75"; status=1; continue
  fi
  echo "-- $f compute_75: $(grep -c 'trap;' "$ptx") trap instructions, $(grep -c 'mma.sync' "$ptx" || true) mma.sync"
  if ! grep -q 'trap;' "$ptx"; then echo "FAIL: the compute_75 PTX of $f has no trap"; status=1; fi
done

echo "== ops_cuda.cpp syntax check"
if TORCH_INC="$(python3 -c "import torch.utils.cpp_extension as c; print(' '.join('-isystem ' + p for p in c.include_paths()))" 2>/dev/null)"; then
  # A CPU build of torch ships c10/cuda headers without the generated cuda_cmake_macros.h.
  # shellcheck disable=SC2086
  if [[ -z "$CUDA_INC" ]]; then
    echo "FAIL: cuda_runtime.h not found (set CUDA_HOME)"; status=1
  elif g++ -std=c++17 -fsyntax-only -Wall -Wextra -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE $TORCH_INC -isystem "$CUDA_INC" \
       -Icsrc csrc/cuda/ops_cuda.cpp; then
    echo "ops_cuda.cpp: ok"
  else
    echo "FAIL: ops_cuda.cpp does not compile"; status=1
  fi
else
  echo "torch not importable: skipping the ops_cuda.cpp syntax check"
fi

if [[ $status == 0 ]]; then echo "check_cuda: OK"; else echo "check_cuda: FAILED"; fi
exit $status
