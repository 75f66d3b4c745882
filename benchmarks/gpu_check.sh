#!/usr/bin/env bash
# One prepared run that proves or disproves fastconv's CUDA half on a GPU machine (issue 25), in under 10 minutes:
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        (OUT unset: benchmarks/results/gpu-check-<date>)
#
# Steps, in this order, each under its own `timeout`, each writing its own log under $OUT; a failed step does not
# stop the later ones, except the build (nothing can run without it):
#   machine       nvidia-smi, nvcc, compute-sanitizer, ncu, python / torch / cuDNN versions, the GPU -> machine.txt
#   build         FASTCONV_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 pip install --no-build-isolation -e .
#                 (build time in build.log and the summary), then: does fastconv::conv2d have a CUDA kernel?
#   correctness   benchmarks/gpu_check.py correctness -> correctness.json (criteria: that file's docstring)
#   memcheck      compute-sanitizer --tool memcheck over gpu_check.py sanitizer, torch's caching allocator off;
#                 PASS: "ERROR SUMMARY: 0 errors" and sane results
#   racecheck     the same with --tool racecheck (fastconv's kernels only, where the filter is accepted)
#   tensor_cores  benchmarks/gpu_check.py tensor-cores -> tensor_cores.json (tensor-core kernels proven by name)
#   pytest        python3 -m pytest -q -x tests/cuda/test_cuda.py -> pytest.log, pytest-cuda.xml
#   tc_ncu        ncu: tensor-pipe instructions of tc_conv_kernel > 0 (hardware counters; a second proof)
#   compare       benchmarks/compare.py --device cuda --quick, only if >= 120 s of a 480 s budget are left
# $OUT/summary.txt lists every step's status (PASS / FAIL / TIMEOUT / INCOMPLETE / SKIPPED), seconds and a note;
# it is rewritten after each step, so it survives a kill.
#
# Environment: GPU_CHECK_BUDGET_S (default 560: every step's limit is cut to what is left of it, so the whole
# script ends inside a 600 s command limit); GPU_CHECK_STEPS (a space-separated subset of the step names above;
# leave out "build" to reuse the build of an earlier call on the same machine); GPU_CHECK_ARCH (9.0);
# PYTHON (python3). Exit status: 0 if no step failed, timed out or stopped incomplete; 1 otherwise.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

PY="${PYTHON:-python3}"
ARCH="${GPU_CHECK_ARCH:-9.0}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-560}"
COMPARE_BUDGET_S=480
COMPARE_MIN_S=120
STEPS="${GPU_CHECK_STEPS:-machine build correctness memcheck racecheck tensor_cores pytest tc_ncu compare}"
OUT="${OUT:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" || exit 1
OUT="$(cd "$OUT" && pwd)"
export OUT
SUMMARY="$OUT/summary.txt"
START=$(date +%s)
ROWS=()
BUILD_OK=1
ANY_BAD=0
LIMIT=0 RC=0 SECS=0
# the CUDA tools are often in /usr/local/cuda/bin without it being on PATH
if [[ -d /usr/local/cuda/bin && ":$PATH:" != *":/usr/local/cuda/bin:"* ]]; then PATH="$PATH:/usr/local/cuda/bin"; fi

# --- bookkeeping -------------------------------------------------------------------------------------------------

elapsed() { echo $(( $(date +%s) - START )); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

write_summary() {
  {
    echo "fastconv GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ): $(elapsed) s elapsed of a $BUDGET_S s budget"
    echo "results: $OUT"
    printf '%-13s %-10s %7s  %s\n' STEP STATUS SECONDS NOTE
    local row
    for row in ${ROWS[@]+"${ROWS[@]}"}; do echo "$row"; done
  } >"$SUMMARY"
}

# record STEP STATUS SECONDS [NOTE]
record() {
  ROWS+=("$(printf '%-13s %-10s %7s  %s' "$1" "$2" "$3" "${4:-}")")
  [[ $2 == PASS || $2 == SKIPPED ]] || ANY_BAD=1
  write_summary
  echo "== $1: $2 after $3 s${4:+ - $4}"
}

# plan STEP WANTED_S [MIN_S]: returns 0 with LIMIT set when STEP is to run now (WANTED_S cut to what is left of
# the budget); otherwise records it as SKIPPED, with the reason, and returns 1.
plan() {
  local step=$1 want=$2 min=${3:-20} left
  if ! wanted "$step"; then record "$step" SKIPPED 0 "not in GPU_CHECK_STEPS"; return 1; fi
  if [[ $step != machine && $step != build && $BUILD_OK != 1 ]]; then
    record "$step" SKIPPED 0 "the build failed"; return 1
  fi
  left=$(( BUDGET_S - $(elapsed) - 5 ))
  LIMIT=$(( want < left ? want : left ))
  if (( LIMIT < min )); then record "$step" SKIPPED 0 "only $left s of the budget left"; return 1; fi
  echo "== $step: running, up to $LIMIT s"
}

# limited LOG CMD...: CMD under `timeout $LIMIT` (its whole process group), stdout and stderr to LOG; sets RC, SECS.
limited() {
  local log=$1 t0
  shift
  t0=$(date +%s)
  timeout -k 10 "$LIMIT" "$@" >"$log" 2>&1
  RC=$?
  SECS=$(( $(date +%s) - t0 ))
}

# status of exit code RC; gpu_check.py's 4 means: stopped by its own time limit, nothing failed
status_of() {
  case $RC in
    0) echo PASS ;;
    124|137) echo TIMEOUT ;;
    4) if [[ ${1:-} == gpu_check ]]; then echo INCOMPLETE; else echo FAIL; fi ;;
    *) echo FAIL ;;
  esac
}

show_tail() {  # LOG [N]
  echo "   --- last ${2:-15} lines of ${1#"$OUT"/}:"
  tail -n "${2:-15}" "$1" | sed 's/^/   | /'
}

# finish STEP LOG NOTE: records a gpu_check.py step; shows the log's tail unless it passed
finish() {
  local st
  st=$(status_of gpu_check)
  [[ $st == PASS ]] || show_tail "$2"
  record "$1" "$st" "$SECS" "$3"
}

note_of() {  # the summary (or cannot-run) line gpu_check.py prints
  grep -m1 -E '^(SUMMARY|CANNOT RUN)' "$1" 2>/dev/null | sed 's/^SUMMARY //'
}

# --- steps -----------------------------------------------------------------------------------------------------

machine_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  cpus: $(nproc)  repo: $(pwd)"
  local cmd
  for cmd in "nvidia-smi" "nvcc --version" "compute-sanitizer --version" "ncu --version" "ninja --version" \
             "git rev-parse HEAD" "git status --short"; do
    echo
    echo "== $cmd"
    timeout 30 $cmd 2>&1 | head -n 60  # (word splitting of $cmd intended)
  done
  echo
  echo "== python, torch, GPU"
  timeout 90 "$PY" - <<'EOF' 2>&1
import platform, sys
print("python", sys.version.split()[0], platform.platform())
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB")
EOF
}

step_machine() {
  plan machine 120 || return
  local t0
  t0=$(date +%s)
  machine_info >"$OUT/machine.txt" 2>&1
  SECS=$(( $(date +%s) - t0 ))
  local gpu
  gpu=$(grep -m1 '^GPU: ' "$OUT/machine.txt")
  if grep -q '^cuda available: True' "$OUT/machine.txt"; then
    record machine PASS "$SECS" "$gpu; $(grep -m1 '^torch ' "$OUT/machine.txt")"
  else
    show_tail "$OUT/machine.txt" 20
    record machine FAIL "$SECS" "torch sees no CUDA device (machine.txt)"
  fi
}

HAS_CUDA_KERNELS='import torch, fastconv
ok = torch._C._dispatch_has_kernel_for_dispatch_key("fastconv::conv2d", "CUDA")
print("fastconv from", fastconv.__file__, "- CUDA kernels registered:", ok)
raise SystemExit(0 if ok else 1)'

step_build() {
  if ! wanted build; then record build SKIPPED 0 "not in GPU_CHECK_STEPS: using the fastconv already built"; return; fi
  plan build 420 60 || { BUILD_OK=0; return; }
  limited "$OUT/build.log" env FASTCONV_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=16 \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .
  local st note="pip install -e . (TORCH_CUDA_ARCH_LIST=$ARCH) took $SECS s"
  st=$(status_of)
  echo "== pip exit code $RC after $SECS s" >>"$OUT/build.log"
  if [[ $st == PASS ]] && ! timeout 120 "$PY" -c "$HAS_CUDA_KERNELS" >>"$OUT/build.log" 2>&1; then
    st=FAIL
    note="$note, but fastconv::conv2d has no CUDA kernel"
  fi
  if [[ $st != PASS ]]; then
    BUILD_OK=0
    show_tail "$OUT/build.log" 30
  fi
  record build "$st" "$SECS" "$note"
}

step_correctness() {
  plan correctness 150 60 || return
  limited "$OUT/correctness.log" "$PY" benchmarks/gpu_check.py correctness --out "$OUT/correctness.json" \
    --time-limit $(( LIMIT - 25 ))
  finish correctness "$OUT/correctness.log" "$(note_of "$OUT/correctness.log")"
}

SAN="" SAN_OPTS=() RACE_FILTER=() SAN_READY=0
# Finds compute-sanitizer and the options this version has: API errors (torch probes some APIs that fail by
# design) not reported, a print limit, an exit code for errors; racecheck limited to fastconv's kernels if the
# --kernel-name filter is accepted (tried on `true`, which has no CUDA and ends at once).
init_sanitizer() {
  (( SAN_READY )) && return
  SAN_READY=1
  SAN=$(command -v compute-sanitizer || true)
  [[ -n $SAN ]] || return
  local help
  help=$("$SAN" --help 2>&1)
  [[ $help == *--report-api-errors* ]] && SAN_OPTS+=(--report-api-errors no)
  [[ $help == *--print-limit* ]] && SAN_OPTS+=(--print-limit 40)
  [[ $help == *--error-exitcode* ]] && SAN_OPTS+=(--error-exitcode 99)
  if [[ $help == *--kernel-name* ]] &&
     timeout 30 "$SAN" --tool racecheck --kernel-name kns=fastconv true 2>&1 | grep -q 'ERROR SUMMARY'; then
    RACE_FILTER=(--kernel-name kns=fastconv)
  fi
}

# sanitizer_step STEP TOOL [OPTIONS...]
sanitizer_step() {
  local step=$1 tool=$2
  shift 2
  plan "$step" 75 30 || return
  init_sanitizer
  if [[ -z $SAN ]]; then record "$step" SKIPPED 0 "compute-sanitizer not found"; return; fi
  local log="$OUT/$step.log"
  limited "$log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool "$tool" ${SAN_OPTS[@]+"${SAN_OPTS[@]}"} "$@" \
    "$PY" benchmarks/gpu_check.py sanitizer
  local errors sane st
  errors=$(grep -m1 -o 'ERROR SUMMARY: [0-9]* errors*' "$log")
  sane=$(grep -m1 -o 'sanitizer cases: [0-9]*/[0-9]* sane' "$log")
  if (( RC == 124 || RC == 137 )); then st=TIMEOUT
  elif (( RC == 0 )) && [[ $errors == "ERROR SUMMARY: 0 errors" ]]; then st=PASS
  else st=FAIL
  fi
  [[ $st == PASS ]] || show_tail "$log" 30
  record "$step" "$st" "$SECS" "${errors:-no ERROR SUMMARY line}; ${sane:-no sanity line}${*:+; $*}"
}

step_memcheck() { sanitizer_step memcheck memcheck; }
step_racecheck() {
  if wanted racecheck && [[ $BUILD_OK == 1 ]]; then init_sanitizer; fi  # RACE_FILTER is needed before the call
  sanitizer_step racecheck racecheck ${RACE_FILTER[@]+"${RACE_FILTER[@]}"}
}

step_tensor_cores() {
  plan tensor_cores 90 30 || return
  limited "$OUT/tensor_cores.log" "$PY" benchmarks/gpu_check.py tensor-cores --out "$OUT/tensor_cores.json"
  finish tensor_cores "$OUT/tensor_cores.log" "$(note_of "$OUT/tensor_cores.log")"
}

step_pytest() {
  plan pytest 150 30 || return
  limited "$OUT/pytest.log" "$PY" -m pytest -q -x -p no:cacheprovider --junitxml="$OUT/pytest-cuda.xml" \
    tests/cuda/test_cuda.py
  local st note
  st=$(status_of)
  note=$(grep -E '[0-9]+ (passed|failed|skipped|errors?)' "$OUT/pytest.log" | tail -n 1)
  if [[ $st == PASS ]] && ! grep -qE '[0-9]+ passed' "$OUT/pytest.log"; then
    st=FAIL
    note="nothing passed (all skipped?) $note"
  fi
  [[ -f $OUT/pytest-cuda.xml ]] || note="$note (no junit xml: pytest did not finish)"
  [[ $st == PASS ]] || show_tail "$OUT/pytest.log" 30
  record pytest "$st" "$SECS" "$note"
}

# The tensor-pipe metric this ncu knows (listed by --query-metrics on this GPU).
tensor_metric() {
  local listed m
  listed=$(timeout 30 "$1" --query-metrics 2>/dev/null)
  for m in sm__inst_executed_pipe_tensor_op_hmma sm__pipe_tensor_op_hmma_cycles_active; do
    if grep -qE "^$m([[:space:]]|$)" <<<"$listed"; then echo "$m.sum"; return; fi
  done
  echo sm__inst_executed_pipe_tensor_op_hmma.sum
}

step_tc_ncu() {
  plan tc_ncu 75 40 || return
  local ncu metric counts n pos st note
  ncu=$(command -v ncu || true)
  if [[ -z $ncu ]]; then record tc_ncu SKIPPED 0 "ncu not found"; return; fi
  metric=$(tensor_metric "$ncu")
  limited "$OUT/tc_ncu.log" "$ncu" --target-processes all --kernel-name regex:tc_conv_kernel --launch-count 3 \
    --metrics "$metric" "$PY" benchmarks/gpu_check.py tc-probe
  counts=$(awk -v m="$metric" '$1 == m { v = $NF; gsub(",", "", v); n++; if (v + 0 > 0) pos++ }
                               END { printf "%d %d", n, pos }' "$OUT/tc_ncu.log")
  n=${counts% *}
  pos=${counts#* }
  note="$metric > 0 in $pos of $n tc_conv_kernel launches profiled"
  if grep -q 'ERR_NVGPUCTRPERM' "$OUT/tc_ncu.log"; then
    record tc_ncu SKIPPED "$SECS" "no permission for the GPU's performance counters (ERR_NVGPUCTRPERM)"
    return
  fi
  if (( RC == 124 || RC == 137 )); then st=TIMEOUT
  elif (( RC == 0 && n >= 3 && pos == n )); then st=PASS
  else st=FAIL
  fi
  [[ $st == PASS ]] || show_tail "$OUT/tc_ncu.log" 20
  record tc_ncu "$st" "$SECS" "$note"
}

step_compare() {
  if ! wanted compare; then record compare SKIPPED 0 "not in GPU_CHECK_STEPS"; return; fi
  local left=$(( COMPARE_BUDGET_S - $(elapsed) ))
  if (( left < COMPARE_MIN_S )); then
    record compare SKIPPED 0 "only $left s of the $COMPARE_BUDGET_S s budget left (needs $COMPARE_MIN_S)"
    return
  fi
  plan compare "$left" "$COMPARE_MIN_S" || return
  limited "$OUT/compare.log" "$PY" benchmarks/compare.py --device cuda --quick --keep-going \
    --json "$OUT/compare-cuda-quick.json"
  local st
  st=$(status_of)
  [[ $st == PASS ]] || show_tail "$OUT/compare.log" 20
  record compare "$st" "$SECS" "$(grep -m1 '^correctness:' "$OUT/compare.log")"
}

# --- main ------------------------------------------------------------------------------------------------------

echo "fastconv GPU check -> $OUT (budget $BUDGET_S s; steps: $STEPS)"
write_summary
step_machine
step_build
step_correctness
step_memcheck
step_racecheck
step_tensor_cores
step_pytest
step_tc_ncu
step_compare
echo
cat "$SUMMARY"
exit "$ANY_BAD"
