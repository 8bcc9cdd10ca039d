#!/usr/bin/env bash
# gpu-session: what one short lease of a CUDA machine should run, in one command, from what
# third_party/gpu-prepare.sh prepared where Go is (carry .native-src):
#
#   bash third_party/gpu-session.sh          (make gpu-session)
#
# 1. gpu-check.sh: builds the shims against the wheel's LibTorch and runs the CUDA tests of
#    the batched network and its CUDA graphs (GPU_CHECK_TESTS, GPU_CHECK_RUN below);
# 2. gpu-bench.sh: the meta-epoch benchmark variants (GPU_BENCH_VARIANTS; its default puts
#    the CUDA-graph variants first), each stopped after GPU_BENCH_TIMEOUT seconds.
# It prints gpu-check's JSON line, then gpu-bench's lines, and when $OUT is set (the device
# tool's output folder) copies every log of build/gpu-check there. Prepare with
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
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  cp -r "$LOGS" "$OUT/" && echo "gpu-session: logs copied to \$OUT/gpu-check" >&2
fi
[ "$check" = 0 ] && [ "$bench" = 0 ]
