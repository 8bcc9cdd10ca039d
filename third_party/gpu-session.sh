#!/usr/bin/env bash
# gpu-session: what one short lease of a CUDA machine should run, in one command, from what
# third_party/gpu-prepare.sh prepared where Go is (carry .native-src):
#
#   bash third_party/gpu-session.sh          (make gpu-session)
#
# 1. gpu-check.sh: builds the shims against the wheel's LibTorch and runs the CUDA tests of
#    the batched network and its CUDA graphs (GPU_CHECK_TESTS, GPU_CHECK_RUN below);
# 2. gpu-bench.sh: the meta-epoch benchmark variants (GPU_BENCH_VARIANTS; its default puts
#    the CUDA-graph variants first), each stopped after GPU_BENCH_TIMEOUT seconds;
# 3. gpu-trace.sh (unless GPU_SESSION_TRACE=0): kernel traces of a few batched steps, eager
#    and replayed, summarised per kernel.
# It prints gpu-check's JSON line, then gpu-bench's and gpu-trace's lines, and when $OUT is
# set (the device tool's output folder) packs the logs of build/gpu-check into
# $OUT/gpu-check-logs.tgz (one file: the tool brings back at most eight). Prepare with
#   GPU_PREPARE_PKGS="./torch ./cells ./metanas/learn ./metanas/train" make gpu-prepare
# Settings of both scripts pass through; the defaults here fit one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS=build/gpu-check
mkdir -p "$LOGS"
export GPU_CHECK_TESTS=${GPU_CHECK_TESTS:-"torch.test cells.test metanas_learn.test metanas_train.test"}
export GPU_CHECK_RUN=${GPU_CHECK_RUN:-CUDA|Batched|Graph}
export GPU_CHECK_OPBENCH=${GPU_CHECK_OPBENCH:-0}
export GPU_BENCH_TIMEOUT=${GPU_BENCH_TIMEOUT:-100}
start=$(date +%s)
bash third_party/gpu-check.sh >"$LOGS/session-check.json"
check=$?
echo "gpu-session: gpu-check exit $check after $(($(date +%s) - start)) s" >&2
cat "$LOGS/session-check.json"
bench=skipped
if [ -x build/bin/bench ]; then
  bash third_party/gpu-bench.sh >"$LOGS/session-bench.jsonl"
  bench=$?
  cat "$LOGS/session-bench.jsonl"
fi
echo "gpu-session: gpu-bench exit $bench after $(($(date +%s) - start)) s" >&2
trace=skipped
if [ "${GPU_SESSION_TRACE:-1}" != 0 ] && [ -x build/bin/bench ]; then
  bash third_party/gpu-trace.sh >"$LOGS/session-trace.jsonl"
  trace=$?
  cat "$LOGS/session-trace.jsonl"
fi
echo "gpu-session: gpu-trace exit $trace after $(($(date +%s) - start)) s" >&2
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  tar -czf "$OUT/gpu-check-logs.tgz" "$LOGS" && echo "gpu-session: logs packed into \$OUT/gpu-check-logs.tgz" >&2
fi
[ "$check" = 0 ] && [ "$bench" = 0 ] && [ "$trace" != 1 ]
