#!/usr/bin/env bash
# gpu-trace: where a batched task step's GPU time goes, on a CUDA machine prepared as for
# gpu-check.sh (carry .native-src). For each variant it runs cmd/bench on a copy of a preset
# shortened to one task step of GPU_TRACE_SHOTS minibatches (so a meta-epoch is a few
# batched steps), with --kernel-trace, then summarises each trace with
# third_party/bench/trace_kernels.py: kernels per step, their summed and merged (busy) time
# against the span, and the costliest kernels. Prints one JSON line per trace.
#
#   bash third_party/gpu-trace.sh            (make gpu-trace)
#
# Environment:
#   GPU_TRACE_CASE      preset (default og_metanas)
#   GPU_TRACE_SHOTS     train shots of the shortened preset: that many minibatches of
#                       `ways` images per meta-epoch and task (default 3)
#   GPU_TRACE_VARIANTS  bench flag lists separated by ';' (default: batched eager, with the
#                       host's operators recorded so that each kernel is named with the
#                       operators that launched it; graphs; graphs in bfloat16)
#   GPU_TRACE_TIMEOUT   seconds per variant (default 90)
#   GPU_TRACE_BUDGET    seconds for all variants (default 0: no limit): a variant gets what
#                       is left, up to GPU_TRACE_TIMEOUT, and is skipped (a JSON line says
#                       so) when under 30 s are left
#   GPU_TRACE_TOP       kernels listed per trace (default 25)
# It runs bench through gpu-bench.sh (which builds the native libraries and sets the library
# path), one variant at a time, with the trace flags added.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
CASE=${GPU_TRACE_CASE:-og_metanas}
SHOTS=${GPU_TRACE_SHOTS:-3}
VARIANTS=${GPU_TRACE_VARIANTS:-"--batch-tasks 10 --kernel-trace-ops;--batch-tasks 10 --cuda-graphs;--batch-tasks 10 --cuda-graphs --precision bf16"}
TIMEOUT=${GPU_TRACE_TIMEOUT:-90}
TOP=${GPU_TRACE_TOP:-25}
BUDGET=${GPU_TRACE_BUDGET:-0}
t0=$(date +%s)
log() { echo "gpu-trace: $*" >&2; }

[ -f "configs/$CASE.yaml" ] || { echo "{\"error\":\"no preset configs/$CASE.yaml\"}"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One task step per meta-epoch, SHOTS minibatches: the preset's keys keep their indentation.
sed -E -e 's/^(  steps:) [0-9]+/\1 1/' -e "s/^(  train_shots:) [0-9]+/\\1 $SHOTS/" "configs/$CASE.yaml" >"$work/$CASE.yaml"
grep -qE "^  train_shots: $SHOTS\b" "$work/$CASE.yaml" && grep -qE '^  steps: 1\b' "$work/$CASE.yaml" ||
  { echo "{\"error\":\"could not shorten configs/$CASE.yaml (task.steps, data.train_shots)\"}"; exit 1; }
ways=$(sed -nE 's/^  ways: ([0-9]+).*/\1/p' "$work/$CASE.yaml")
bs=$(sed -nE 's/^  batch_size: ([0-9]+).*/\1/p' "$work/$CASE.yaml")
steps=$(((ways * SHOTS + bs - 1) / bs))
log "$CASE shortened: 1 task step of $SHOTS shots ($steps minibatches of $bs) per meta-epoch"

IFS=';' read -r -a vs <<<"$VARIANTS"
status=0
k=0
for v in "${vs[@]}"; do
  v=$(echo "$v" | xargs)
  [ -n "$v" ] || continue
  k=$((k + 1))
  t=$TIMEOUT
  if [ "$BUDGET" -gt 0 ]; then
    left=$((BUDGET - ($(date +%s) - t0)))
    if [ "$left" -lt 30 ]; then
      log "variant $k ($v) skipped: $left s of GPU_TRACE_BUDGET left"
      echo "{\"variant\":\"$v\",\"skipped\":\"$left s of the budget left\"}"
      continue
    fi
    [ "$left" -lt "$t" ] && t=$left
  fi
  log "variant $k: $v (at most $t s)"
  b=$(GPU_BENCH_TIMEOUT=$t GPU_BENCH_VARIANTS="--configs $work --cases $CASE --test-steps 2 --kernel-trace $work/t$k $v" \
    bash third_party/gpu-bench.sh | grep -m1 '^{')
  [[ -n $b && $b != *'"error"'* ]] || status=1
  found=0
  for f in "$work/t$k"-*.json; do
    [ -f "$f" ] || continue
    found=1
    python3 third_party/bench/trace_kernels.py "$f" --steps "$steps" --top "$TOP" \
      --extra "{\"variant\":\"$v\",\"steps\":$steps,\"bench\":${b:-null}}"
    rm -f "$f"
  done
  [ "$found" = 1 ] || echo "{\"variant\":\"$v\",\"error\":\"no trace written\",\"bench\":${b:-null}}"
done
exit $status
