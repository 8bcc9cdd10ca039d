#!/usr/bin/env bash
# gpu-bench: the MetaNAS benchmark (cmd/bench) on a CUDA machine that has a PyTorch wheel
# but no Go toolchain, in one go, from what third_party/gpu-prepare.sh prepared where Go is
# (carry .native-src):
#
#   bash third_party/gpu-bench.sh            (make gpu-bench)
#
# It builds the native libraries against the wheel's LibTorch through gpu-check.sh (tests
# and opbench off), then runs build/bin/bench --device cuda once per variant and prints one
# JSON line per variant: bench's own line plus "variant", "seconds", "gpu_mem_peak_mib"
# (the most GPU memory in use, sampled by nvidia-smi every half second) and "gpu_util_pct"
# (the mean of nvidia-smi's utilization.gpu over those samples: the share of time a kernel
# ran; near 100 means the GPU, not the host, bounds the run), or an "error".
#
# Environment:
#   GPU_BENCH_VARIANTS  variants separated by ';', each a list of bench flags (default below)
#   GPU_BENCH_TIMEOUT   seconds per variant before it is stopped (default 240)
#   GPU_BENCH_DEVICE    bench's --device (default cuda)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
LOGS=build/gpu-check
mkdir -p "$LOGS"
DEV=${GPU_BENCH_DEVICE:-cuda}
TIMEOUT=${GPU_BENCH_TIMEOUT:-240}
VARIANTS=${GPU_BENCH_VARIANTS:-"--cases og_metanas --batch-tasks 10 --cuda-graphs;--cases og_metanas --batch-tasks 10;--cases in_metanas --batch-tasks 5 --cuda-graphs;--cases og_metanas --workers 1 --tasks 2"}

log() { echo "gpu-bench: $*" >&2; }

log "building the native libraries (gpu-check.sh without tests and opbench; make skips what is current)"
GPU_CHECK_TESTS=- GPU_CHECK_OPBENCH=0 bash third_party/gpu-check.sh >"$LOGS/gpu-bench-build.json" ||
  { cat "$LOGS/gpu-bench-build.json"; exit 1; }
LT_LIBDIR=$(sed -n 's/^LT_LIBDIR=//p' build/libtorch.mk)
export LD_LIBRARY_PATH="$LT_LIBDIR:$ROOT/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x build/bin/bench ] || { echo '{"error":"build/bin/bench missing: run third_party/gpu-prepare.sh where Go is and carry .native-src"}'; exit 1; }

IFS=';' read -r -a vs <<<"$VARIANTS"
status=0
for v in "${vs[@]}"; do
  v=$(echo "$v" | xargs)
  [ -n "$v" ] || continue
  name=$(echo "$v" | tr -c 'A-Za-z0-9_\n' '_' | tr -s _)
  log "bench --device $DEV $v (log: $LOGS/bench$name.log)"
  peakf=$LOGS/bench$name.mem
  utilf=$LOGS/bench$name.util
  echo 0 >"$peakf"
  : >"$utilf"
  sampler=""
  if command -v nvidia-smi >/dev/null; then
    (base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
     peak=0
     while sleep 0.5; do
       l=$(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')
       m=${l%%,*}
       [ -n "$m" ] && [ "$((m - base))" -gt "$peak" ] && peak=$((m - base)) && echo "$peak" >"$peakf"
       [ -n "$l" ] && echo "${l##*,}" >>"$utilf"
     done) &
    sampler=$!
  fi
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  out=$(timeout -k 10 "$TIMEOUT" build/bin/bench --device "$DEV" $v 2>"$LOGS/bench$name.log")
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  secs=$((ms / 1000)).$(printf '%03d' $((ms % 1000)))
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
  mem=$(cat "$peakf")
  util=$(awk '$1 ~ /^[0-9]+$/ {s += $1; n++} END {if (n) printf "%.1f", s / n; else print -1}' "$utilf")
  if [ "$rc" = 0 ] && [[ $out == "{"* ]]; then
    while IFS= read -r l; do
      [[ $l == "{"* ]] && echo "${l%\}},\"variant\":\"$v\",\"seconds\":${secs:-0},\"gpu_mem_peak_mib\":${mem:-0},\"gpu_util_pct\":${util:--1}}"
    done <<<"$out"
  else
    status=1
    err=$(tail -3 "$LOGS/bench$name.log" | tr '\n\t"\\' '    ')
    echo "{\"variant\":\"$v\",\"error\":\"exit $rc: $err\",\"seconds\":${secs:-0}}"
  fi
done
exit $status
