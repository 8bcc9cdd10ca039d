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
#    and replayed, summarised per kernel;
# 4. GPU memory over a long run (unless GPU_SESSION_MEMORY_EPOCHS=0): gpu-bench.sh with
#    bench --memory-epochs N (default 2000) on batches of 4 tasks replayed from CUDA graphs,
#    stopped after GPU_SESSION_MEMORY_TIMEOUT seconds (default 200; its log keeps a sample
#    every 50 meta-epochs).
# It prints gpu-check's JSON line, then the others' lines, and when $OUT is
# set (the device tool's output folder) packs the logs of build/gpu-check into
# $OUT/gpu-check-logs.tgz (one file: the tool brings back at most eight). Prepare with
#   GPU_PREPARE_PKGS="./torch ./cells ./metanas/learn ./metanas/train" make gpu-prepare
# Settings of the scripts pass through; the defaults here fit one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS=build/gpu-check
mkdir -p "$LOGS"
export GPU_CHECK_TESTS=${GPU_CHECK_TESTS:-"torch.test cells.test metanas_learn.test metanas_train.test"}
export GPU_CHECK_RUN=${GPU_CHECK_RUN:-CUDA|Batched|Graph}
export GPU_CHECK_OPBENCH=${GPU_CHECK_OPBENCH:-0}
export GPU_BENCH_TIMEOUT=${GPU_BENCH_TIMEOUT:-100}
# The bench variants of a session: the batched og_metanas step from graphs, and in_metanas
# batched (its 75 support images per task are not whole minibatches of 20: no graphs).
export GPU_BENCH_VARIANTS=${GPU_BENCH_VARIANTS:-"--cases og_metanas --batch-tasks 10 --cuda-graphs;--cases in_metanas --batch-tasks 5"}
MEM_EPOCHS=${GPU_SESSION_MEMORY_EPOCHS:-2000}
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
memory=skipped
if [ "$MEM_EPOCHS" -gt 0 ] && [ -x build/bin/bench ]; then
  GPU_BENCH_VARIANTS="--memory-epochs $MEM_EPOCHS --batch-tasks 4 --cuda-graphs" GPU_BENCH_TIMEOUT=${GPU_SESSION_MEMORY_TIMEOUT:-200} \
    bash third_party/gpu-bench.sh >"$LOGS/session-memory.jsonl"
  memory=$?
  cat "$LOGS/session-memory.jsonl"
fi
echo "gpu-session: memory run exit $memory after $(($(date +%s) - start)) s" >&2
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  tar -czf "$OUT/gpu-check-logs.tgz" "$LOGS" && echo "gpu-session: logs packed into \$OUT/gpu-check-logs.tgz" >&2
fi
[ "$check" = 0 ] && [ "$bench" = 0 ] && [ "$trace" != 1 ] && [ "$memory" != 1 ]
