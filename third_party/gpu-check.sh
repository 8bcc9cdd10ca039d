#!/usr/bin/env bash
# gpu-check: checks metanas-go on a CUDA machine that has a PyTorch wheel (2.x) but no Go
# toolchain and no network, from what third_party/gpu-prepare.sh prepared where Go is:
#   .native-src/cgotorch/     gotorch's cgotorch sources
#   .native-src/bin.tar.gz    build/bin packed: the Go test binaries (*.test, tests.txt) and
#                             commands (opbench among them); unpacked into build/bin here
#
#   bash third_party/gpu-check.sh            (make gpu-check)
#
# Steps: unpack .native-src/bin.tar.gz when present; locate LibTorch with find-libtorch.sh
# (the wheel of python3 when it has CUDA; LIBTORCH=dir overrides); compile cgotorch and our
# shim against it into build/lib and the C++ benchmark into build/bin/opchain
# (third_party/native.mk, without Go: GOTORCH is the folder holding cgotorch/); point
# LD_LIBRARY_PATH at build/lib and the LibTorch libraries (the prebuilt Go binaries carry an
# rpath of the checkout they were built in); run every prebuilt test binary verbosely in its
# package folder (tests skip their CUDA parts where there is no GPU); then opbench on the GPU.
# Build and test logs go to build/gpu-check/.
#
# Standard output is ONE JSON line:
#   {"device": GPU name or "cpu", "libtorch": version, "tests_passed": N, "tests_failed": N,
#    "op_timings": {"env": {...}, "chain": {...}, "conv": {...}}, ...}
# where tests count top-level tests; a test left unfinished by a panic or -test.timeout counts
# as failed, and so does a binary that exits non-zero without any failed test.
# Without a CUDA LibTorch or GPU it runs everything on the CPU and says device "cpu".
#
# Environment:
#   LIBTORCH                an unpacked LibTorch to use instead of the wheel's
#   GOTORCH                 the folder holding cgotorch/ (default .native-src, else Go's module cache)
#   GPU_CHECK_DEVICE        cuda (default) or cpu: cpu benchmarks on the CPU even with a GPU
#   GPU_CHECK_TESTS         test binaries to run, e.g. "torch.test cells.test" (default: all
#                           of build/bin/tests.txt; "-" runs none)
#   GPU_CHECK_RUN           -test.run pattern (default .)
#   GPU_CHECK_TEST_TIMEOUT  -test.timeout per test binary (default 5m)
#   GPU_CHECK_OPBENCH       0 skips opbench (default 1)
#   GPU_CHECK_OPBENCH_ARGS  extra opbench flags (e.g. "--trials 9 --case chain")
#   GPU_CHECK_OPBENCH_TIMEOUT  seconds before opbench is stopped (default 300)
#   CXX                     the C++ compiler (default g++)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
LOGS=build/gpu-check
mkdir -p "$LOGS" build/bin
# nproc honours OMP_NUM_THREADS (often 1 or 2 for tiny ops): count the cores without it.
NPROC=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 2)
WANT=${GPU_CHECK_DEVICE:-cuda}
RUN=${GPU_CHECK_RUN:-.}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-5m}
OPBENCH_ARGS=${GPU_CHECK_OPBENCH_ARGS:-}
OPBENCH_TIMEOUT=${GPU_CHECK_OPBENCH_TIMEOUT:-300}
export CXX=${CXX:-g++}

log() { echo "gpu-check: $*" >&2; }

# jstr prints its argument as a JSON string (control characters dropped).
jstr() {
  local s
  s=$(printf '%s' "$1" | tr '\n\t' '  ' | tr -d '\000-\037')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# jarr prints its arguments as a JSON array of strings.
jarr() {
  local out="[" sep="" a
  for a in "$@"; do out+="$sep$(jstr "$a")"; sep=","; done
  printf '%s]' "$out"
}

DEVICE=cpu LT_VERSION=unknown LT_SOURCE="" LT_LIBDIR="" LT_CUDA=0 CUDA=false
PASSED=0 FAILED=0 SKIPPED=0 BINARIES=0
FAILED_NAMES=() NOTES=()
TIMINGS='{"skipped":"not run"}'

# emit prints the result line; with an argument it is an error and the exit status is 1.
emit() {
  local err=${1:-}
  printf '{"device":%s,"libtorch":%s,"libtorch_source":%s,"cuda":%s,"tests_passed":%d,"tests_failed":%d,"tests_skipped":%d,"test_binaries":%d,"failed":%s,"op_timings":%s,"notes":%s,"logs":%s' \
    "$(jstr "$DEVICE")" "$(jstr "$LT_VERSION")" "$(jstr "$LT_SOURCE")" "$CUDA" "$PASSED" "$FAILED" "$SKIPPED" "$BINARIES" \
    "$(jarr ${FAILED_NAMES[@]+"${FAILED_NAMES[@]}"})" "$TIMINGS" "$(jarr ${NOTES[@]+"${NOTES[@]}"})" "$(jstr "$ROOT/$LOGS")"
  if [ -n "$err" ]; then
    printf ',"error":%s}\n' "$(jstr "$err")"
    exit 1
  fi
  printf '}\n'
}

# --- prebuilt Go binaries ----------------------------------------------------------------
if [ -f .native-src/bin.tar.gz ]; then
  log "unpacking .native-src/bin.tar.gz into build/bin"
  tar -C build -xzf .native-src/bin.tar.gz || emit "could not unpack .native-src/bin.tar.gz"
fi

# --- tools -------------------------------------------------------------------------------
for t in make "$CXX"; do
  command -v "$t" >/dev/null || emit "$t is missing: install make and a C++17 compiler (g++)"
done

# --- LibTorch ----------------------------------------------------------------------------
if ! LIBTORCH="${LIBTORCH:-}" third_party/find-libtorch.sh >build/libtorch.mk.new 2>"$LOGS/find-libtorch.log"; then
  emit "no LibTorch found: $(tail -3 "$LOGS/find-libtorch.log")"
fi
changed=0
if ! cmp -s build/libtorch.mk.new build/libtorch.mk; then
  mv build/libtorch.mk.new build/libtorch.mk
  touch build/libtorch.stamp
  changed=1
else
  rm -f build/libtorch.mk.new
fi
lt() { sed -n "s/^$1=//p" build/libtorch.mk; }
LT_VERSION=$(lt LT_VERSION) LT_SOURCE=$(lt LT_SOURCE) LT_LIBDIR=$(lt LT_LIBDIR) LT_CUDA=$(lt LT_CUDA)
log "LibTorch $LT_VERSION from $LT_SOURCE (CUDA=$LT_CUDA) in $LT_LIBDIR"
[ "$LT_CUDA" = 1 ] || NOTES+=("LibTorch without CUDA ($LT_SOURCE): everything runs on the CPU")

# --- native libraries and the C++ benchmark ----------------------------------------------
if [ -z "${GOTORCH:-}" ]; then
  if ls .native-src/cgotorch/*.cc >/dev/null 2>&1; then
    GOTORCH=$ROOT/.native-src
  elif command -v go >/dev/null; then
    GOTORCH=$(go list -m -f '{{.Dir}}' github.com/wangkuiyi/gotorch 2>/dev/null)
  fi
fi
if [ -z "${GOTORCH:-}" ] || ! ls "$GOTORCH"/cgotorch/*.cc >/dev/null 2>&1; then
  emit "no cgotorch sources: run third_party/gpu-prepare.sh where Go is and carry .native-src, or set GOTORCH to the folder holding cgotorch/"
fi
[ "$changed" = 1 ] && rm -f build/bin/opchain # rebuild it against this LibTorch
log "compiling cgotorch ($GOTORCH/cgotorch) and the shim into build/lib (log: $LOGS/build.log)"
# native.mk asks Go for GOTORCH; the value given here wins ("go: not found" is harmless).
if ! make --no-print-directory -f third_party/native.mk -j"$NPROC" GOTORCH="$GOTORCH" all >"$LOGS/build.log" 2>&1; then
  # The shim's CUDA kernels (nvcc) are the newest part: without them the rest still runs.
  # (The shim's objects compiled for the kernels' callers are rebuilt without them.)
  if grep -q 'nvcc' "$LOGS/build.log" && rm -f build/obj/shim/*.o &&
    make --no-print-directory -f third_party/native.mk -j"$NPROC" GOTORCH="$GOTORCH" NVCC= all >>"$LOGS/build.log" 2>&1; then
    NOTES+=("the shim's CUDA kernels did not compile (build.log), so it was built without them: $(grep -m2 -E 'error' "$LOGS/build.log" | head -2)")
  else
    emit "native build failed: $(grep -m3 -E 'error|Error' "$LOGS/build.log" | head -3)"
  fi
fi
if [ "$(lt LT_CUDA)" = 1 ]; then
  if nm -D build/lib/libmetanas_shim.so 2>/dev/null | grep -q mt_ns_cuda_sum; then
    log "the shim has its CUDA kernels (torch/shim/*.cu)"
  else
    NOTES+=("the shim has no CUDA kernels (no nvcc found: set NVCC or CUDA_HOME): METANAS_NODE_FUSED=1 takes the unfused calls on CUDA")
  fi
fi
if ! make --no-print-directory -f third_party/native.mk GOTORCH="$GOTORCH" build/bin/opchain >>"$LOGS/build.log" 2>&1; then
  NOTES+=("build/bin/opchain did not build (see build.log): opbench reports C++ as skipped")
fi

# --- run-time library path ---------------------------------------------------------------
export LD_LIBRARY_PATH="$LT_LIBDIR:$ROOT/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The Go binaries were linked where LibTorch's libraries may carry versioned names
# (Debian: libtorch.so.1.13); point such names at this LibTorch's libraries. The binaries
# call only the C functions of our shim and cgotorch, so the LibTorch version may differ.
for b in build/bin/*; do
  [ -f "$b" ] && [ -x "$b" ] && ldd "$b" 2>/dev/null | awk '/=> not found/{print $1}'
done | sort -u | while read -r name; do
  base=${name%%.so*}.so
  if [ -e "$LT_LIBDIR/$base" ]; then
    ln -sfn "$LT_LIBDIR/$base" "build/lib/$name"
    log "linked build/lib/$name -> $LT_LIBDIR/$base"
  else
    log "warning: the prebuilt binaries need $name, which is not in build/lib or $LT_LIBDIR"
  fi
done

# --- device ------------------------------------------------------------------------------
if [ "$WANT" = cuda ] && [ "$LT_CUDA" = 1 ]; then
  info=$(build/bin/opchain --case info 2>>"$LOGS/build.log" || true)
  if [[ $info == *'"cuda":true'* ]] || { [ -z "$info" ] && nvidia-smi -L >/dev/null 2>&1; }; then
    CUDA=true
    DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    if [ -z "$DEVICE" ]; then
      DEVICE=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null || echo "cuda (name unknown)")
    fi
  else
    NOTES+=("LibTorch has CUDA but sees no GPU: everything runs on the CPU")
  fi
elif [ "$WANT" != cuda ]; then
  NOTES+=("GPU_CHECK_DEVICE=$WANT: benchmarks on the CPU")
fi
log "device: $DEVICE"

# --- Go tests ----------------------------------------------------------------------------
if [ -f build/bin/tests.txt ]; then
  manifest=$(cat build/bin/tests.txt)
elif [ -x build/bin/torch.test ]; then
  manifest="torch.test torch"
else
  manifest=""
  NOTES+=("no prebuilt Go test binaries in build/bin: run third_party/gpu-prepare.sh where Go is")
fi
while read -r bin dir; do
  [ -n "$bin" ] || continue
  if [ -n "${GPU_CHECK_TESTS:-}" ] && [[ " $GPU_CHECK_TESTS " != *" $bin "* ]]; then
    continue
  fi
  if [ ! -x "build/bin/$bin" ] || [ ! -d "$dir" ]; then
    FAILED=$((FAILED + 1)) FAILED_NAMES+=("$bin: missing binary or package folder $dir")
    continue
  fi
  BINARIES=$((BINARIES + 1))
  out="$LOGS/${bin%.test}.log"
  log "running $bin in $dir (log: $out)"
  (cd "$dir" && "$ROOT/build/bin/$bin" -test.run "$RUN" -test.v -test.count=1 -test.timeout="$TEST_TIMEOUT") >"$out" 2>&1
  rc=$?
  p=$(grep -c '^--- PASS: ' "$out")
  f=$(grep -c '^--- FAIL: ' "$out")
  s=$(grep -c '^--- SKIP: ' "$out")
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + s))
  while read -r name; do
    [ -n "$name" ] && FAILED_NAMES+=("${bin%.test}: $name")
  done < <(sed -n 's/^--- FAIL: \([^ ]*\).*/\1/p' "$out")
  if [ "$rc" != 0 ]; then
    # A panic or -test.timeout ends the binary without a result line for the tests that
    # were running: count each top-level test that started and never finished.
    why=$(grep -m1 -E '^(panic|fatal error|signal)|error while loading' "$out")
    unfinished=$(awk '/^=== RUN /{ if ($3 !~ /\//) run[$3] = 1 }
      /^--- (PASS|FAIL|SKIP): /{ done[$3] = 1 }
      END { for (t in run) if (!(t in done)) print t }' "$out")
    for name in $unfinished; do
      FAILED=$((FAILED + 1)) FAILED_NAMES+=("${bin%.test}: $name did not finish: $why")
    done
    if [ -z "$unfinished" ] && [ "$f" = 0 ]; then
      FAILED=$((FAILED + 1)) FAILED_NAMES+=("${bin%.test}: exit status $rc without a failed test: $why")
    fi
  fi
  log "$bin: $p passed, $f failed, $s skipped (exit $rc)"
done <<<"$manifest"

# --- op-cost benchmark -------------------------------------------------------------------
if [ "${GPU_CHECK_OPBENCH:-1}" = 0 ]; then
  TIMINGS='{"skipped":"GPU_CHECK_OPBENCH=0"}'
elif [ -x build/bin/opbench ]; then
  dev=cpu
  [ "$CUDA" = true ] && dev=cuda
  log "running opbench --device $dev $OPBENCH_ARGS (log: $LOGS/opbench.log)"
  # shellcheck disable=SC2086
  if timeout -k 10 "$OPBENCH_TIMEOUT" build/bin/opbench --device "$dev" $OPBENCH_ARGS >"$LOGS/opbench.jsonl" 2>"$LOGS/opbench.log"; then
    TIMINGS="{" sep=""
    while IFS= read -r l; do
      [[ $l == "{"* ]] || continue
      k=$(printf '%s' "$l" | sed -n 's/^{"case":"\([A-Za-z0-9_]*\)".*/\1/p')
      TIMINGS+="$sep\"${k:-env}\":$l" sep=","
    done <"$LOGS/opbench.jsonl"
    TIMINGS+="}"
  else
    TIMINGS="{\"error\":$(jstr "opbench failed or ran past ${OPBENCH_TIMEOUT}s: $(tail -2 "$LOGS/opbench.log")")}"
  fi
else
  TIMINGS='{"skipped":"build/bin/opbench not prebuilt: run third_party/gpu-prepare.sh where Go is and carry build/bin"}'
fi

emit
