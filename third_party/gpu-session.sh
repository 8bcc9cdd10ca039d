#!/usr/bin/env bash
# gpu-session: what one short lease of a CUDA machine should run, in one command, from what
# third_party/gpu-prepare.sh prepared where Go is (carry .native-src):
#
#   bash third_party/gpu-session.sh          (make gpu-session)
#
# Its parts, in this order (GPU_SESSION_PARTS picks some; default all of them):
#   check   gpu-check.sh: builds the shims against the wheel's LibTorch and runs the CUDA
#           tests of the batched network and its CUDA graphs (GPU_CHECK_TESTS, GPU_CHECK_RUN
#           below); without it the shims are still built (make skips what is current);
#   bench   gpu-bench.sh: the meta-epoch benchmark variants (GPU_BENCH_VARIANTS), each
#           stopped after GPU_BENCH_TIMEOUT seconds, and bench --node-bench (a batched
#           og_metanas node's batch norm and sum, unfused and fused, in float32 and
#           bfloat16: the fused CUDA kernels' time and bandwidth, a few seconds);
#   ab      A/Bs of experiments switched by the environment: GPU_SESSION_AB_VARIANT (default
#           the first bench variant) again with each setting of GPU_SESSION_AB_ENVS
#           (';'-separated, each one or more NAME=value, optionally followed by "|" and the
#           bench flags of another variant for that setting, or only "|FLAGS": that
#           variant as it is; default METANAS_NODE_FUSED=1 first (the shim's CUDA
#           kernels for the node batch norm and sum, the gradients' fans, the split pieces'
#           buffers and the fused batch norm + ReLU: 32-34 % fewer bytes a float32 step,
#           and GPU memory), then METANAS_DW_WGRAD=1 (the shim's depthwise weight gradient
#           instead of cuDNN's, about 6 ms of a step in the fourth lease) alone and with it,
#           then METANAS_NODE_FUSED=1 on in_metanas in batches of 5, then og_metanas in
#           bfloat16 without and with it (--precision bf16:
#           half the bytes of a float32 step, whose 46 GiB of memory traffic alone take
#           longer than the 10x target leaves on an H100), then METANAS_STATE_FUSION=0 (each edge's op chain on
#           its own: CUDA's newest default, unmeasured), METANAS_TF32_MATMUL=1 (cuBLAS's
#           products in TF32, as the reference's 1x1 convolutions are in cuDNN),
#           METANAS_NODE_RECOMPUTE=1 on in_metanas in batches of 5 and on og_metanas (node
#           sums that keep their members before the norm: GPU memory, time), og_metanas
#           in two batches of 5 at once
#           (--batch-workers 2: two batched networks replaying their graphs side by side
#           on two streams), og_metanas in bfloat16 in two batches of 5
#           at once, METANAS_STATE_FUSION=0 on in_metanas in batches of 5 (GPU memory: the
#           grouped chains keep each state's ReLU once per reader),
#           METANAS_FACTORIZED_REDUCE=split (the FactorizedReduce's two
#           convolutions, as before CUDA's default of one), METANAS_GRAPH_WAIT=0 on in_metanas in batches of 5
#           (graphs of both minibatch shapes captured as before: GPU memory), in_metanas in
#           batches of 10 (whether it fits now), in_metanas in bfloat16 (time and GPU
#           memory), og_metanas in five batches of 2 at once,
#           METANAS_NODE_SUM=loop,
#           METANAS_BRANCH_STREAMS=4, then CUDA's two default switches off one at a time
#           (METANAS_NODE_BATCH_NORM=0, METANAS_POINTWISE=conv), most wanted first; empty
#           skips them); their lines carry "env" (the GPU memory peaks are in them too);
#   memory  GPU memory over a long run (none when GPU_SESSION_MEMORY_EPOCHS=0): gpu-bench.sh
#           with bench --memory-epochs N (default 2000) on batches of 4 tasks replayed from
#           CUDA graphs, stopped after GPU_SESSION_MEMORY_TIMEOUT seconds (default 150; its
#           log keeps a sample every 50 meta-epochs);
#   trace   gpu-trace.sh (also off with GPU_SESSION_TRACE=0): kernel traces of a few batched
#           steps, eager and replayed, summarised per kernel.
# The parts after bench start only while GPU_SESSION_DEADLINE seconds (default 540) from the
# start leave them time (the later ones are skipped first), and the memory run is cut to
# what is left, so that the logs are packed before a 10-minute call ends. All parts do not
# fit one call: a lease's first call runs the default (check, bench, the A/Bs as time
# allows; the log says which were skipped), and a second call on the still-warm machine
# runs the rest, e.g.
#   GPU_SESSION_PARTS="ab memory trace" GPU_SESSION_AB_ENVS="<those skipped>" bash third_party/gpu-session.sh
# It prints gpu-check's JSON line, then the others' lines, and when $OUT is set (the device
# tool's output folder) packs the logs of build/gpu-check into $OUT/gpu-check-logs.tgz (one
# file: the tool brings back at most eight). Prepare with
#   GPU_PREPARE_PKGS="./torch ./cells ./metanas/learn ./metanas/train" make gpu-prepare
# Settings of the scripts pass through.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
LOGS=build/gpu-check
mkdir -p "$LOGS"
export GPU_CHECK_TESTS=${GPU_CHECK_TESTS:-"torch.test cells.test metanas_learn.test metanas_train.test"}
export GPU_CHECK_RUN=${GPU_CHECK_RUN:-CUDA|Batched|Graph|StateGroupsMatch}
export GPU_CHECK_OPBENCH=${GPU_CHECK_OPBENCH:-0}
export GPU_BENCH_TIMEOUT=${GPU_BENCH_TIMEOUT:-100}
# The bench variants of a session: the batched og_metanas and in_metanas steps from graphs.
export GPU_BENCH_VARIANTS=${GPU_BENCH_VARIANTS:-"--cases og_metanas --batch-tasks 10 --cuda-graphs;--node-bench 20;--node-bench 20 --precision bf16;--cases in_metanas --batch-tasks 5 --cuda-graphs"}
AB_ENVS=${GPU_SESSION_AB_ENVS-METANAS_NODE_FUSED=1;METANAS_DW_WGRAD=1;METANAS_NODE_FUSED=1 METANAS_DW_WGRAD=1;METANAS_NODE_FUSED=1|--cases in_metanas --batch-tasks 5 --cuda-graphs;|--cases og_metanas --batch-tasks 10 --cuda-graphs --precision bf16;METANAS_NODE_FUSED=1|--cases og_metanas --batch-tasks 10 --cuda-graphs --precision bf16;METANAS_STATE_FUSION=0;METANAS_TF32_MATMUL=1;METANAS_NODE_RECOMPUTE=1|--cases in_metanas --batch-tasks 5 --cuda-graphs;METANAS_NODE_RECOMPUTE=1;|--cases og_metanas --batch-tasks 5 --batch-workers 2 --cuda-graphs;|--cases og_metanas --batch-tasks 5 --batch-workers 2 --cuda-graphs --precision bf16;METANAS_STATE_FUSION=0|--cases in_metanas --batch-tasks 5 --cuda-graphs;METANAS_FACTORIZED_REDUCE=split;METANAS_GRAPH_WAIT=0|--cases in_metanas --batch-tasks 5 --cuda-graphs;|--cases in_metanas --batch-tasks 10 --cuda-graphs;|--cases in_metanas --batch-tasks 5 --cuda-graphs --precision bf16;|--cases og_metanas --batch-tasks 2 --batch-workers 5 --cuda-graphs;METANAS_NODE_SUM=loop;METANAS_BRANCH_STREAMS=4;METANAS_NODE_BATCH_NORM=0;METANAS_POINTWISE=conv}
PARTS=" ${GPU_SESSION_PARTS:-check bench ab memory trace} "
for p in $PARTS; do
  case $p in check | bench | ab | memory | trace) ;;
  *) echo "gpu-session: GPU_SESSION_PARTS: unknown part '$p' (parts: check bench ab memory trace)" >&2; exit 2 ;;
  esac
done
want() { [[ $PARTS == *" $1 "* ]]; }
MEM_EPOCHS=${GPU_SESSION_MEMORY_EPOCHS:-2000}
DEADLINE=${GPU_SESSION_DEADLINE:-540}
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }
left() { echo $((DEADLINE - $(elapsed))); }
say() { echo "gpu-session: $*" >&2; }

check=skipped
if want check; then
  bash third_party/gpu-check.sh >"$LOGS/session-check.json"
  check=$?
  say "gpu-check exit $check after $(elapsed) s"
  cat "$LOGS/session-check.json"
else
  GPU_CHECK_TESTS=- GPU_CHECK_OPBENCH=0 bash third_party/gpu-check.sh >"$LOGS/session-build.json"
  check=$?
  say "build (no tests) exit $check after $(elapsed) s"
  [ "$check" = 0 ] || cat "$LOGS/session-build.json"
fi
bench=skipped ab=skipped trace=skipped memory=skipped
if [ -x build/bin/bench ]; then
  if want bench; then
    bash third_party/gpu-bench.sh >"$LOGS/session-bench.jsonl"
    bench=$?
    cat "$LOGS/session-bench.jsonl"
    say "gpu-bench exit $bench after $(elapsed) s"
  fi

  if want ab; then
    first=${GPU_SESSION_AB_VARIANT:-${GPU_BENCH_VARIANTS%%;*}}
    IFS=';' read -r -a abs <<<"$AB_ENVS"
    : >"$LOGS/session-ab.jsonl"
    for entry in ${abs[@]+"${abs[@]}"}; do
      [ -n "$entry" ] || continue
      # "SETTINGS|FLAGS" runs the bench variant FLAGS instead of the first one.
      e=${entry%%|*} v=$first
      [ "$e" = "$entry" ] || v=${entry#*|}
      if [ "$(left)" -le $((GPU_BENCH_TIMEOUT + 30)) ]; then
        say "A/B ($entry) skipped: $(left) s left before the deadline"
        continue
      fi
      # shellcheck disable=SC2086
      env $e GPU_BENCH_VARIANTS="$v" bash third_party/gpu-bench.sh |
        sed "s|^{|{\"env\":\"$e\",|" >>"$LOGS/session-ab.jsonl"
      s=${PIPESTATUS[0]}
      if [ "$s" != 0 ]; then ab=1; elif [ "$ab" = skipped ]; then ab=0; fi
      say "A/B ($entry) exit $s after $(elapsed) s"
    done
    cat "$LOGS/session-ab.jsonl"
  fi

  if want memory && [ "$MEM_EPOCHS" -gt 0 ]; then
    mt=$(($(left) - 20))
    [ "$mt" -gt "${GPU_SESSION_MEMORY_TIMEOUT:-150}" ] && mt=${GPU_SESSION_MEMORY_TIMEOUT:-150}
    if [ "$mt" -ge 60 ]; then
      GPU_BENCH_VARIANTS="--memory-epochs $MEM_EPOCHS --batch-tasks 4 --cuda-graphs" GPU_BENCH_TIMEOUT=$mt \
        bash third_party/gpu-bench.sh >"$LOGS/session-memory.jsonl"
      memory=$?
      cat "$LOGS/session-memory.jsonl"
      say "memory run ($mt s at most) exit $memory after $(elapsed) s"
    else
      say "memory run skipped: $(left) s left before the deadline"
    fi
  fi

  if want trace && [ "${GPU_SESSION_TRACE:-1}" != 0 ]; then
    if [ "$(left)" -gt 90 ]; then
      GPU_TRACE_TIMEOUT=${GPU_TRACE_TIMEOUT:-60} GPU_TRACE_BUDGET=$(($(left) + 20)) \
        bash third_party/gpu-trace.sh >"$LOGS/session-trace.jsonl"
      trace=$?
      cat "$LOGS/session-trace.jsonl"
      say "gpu-trace exit $trace after $(elapsed) s"
    else
      say "trace skipped: $(left) s left before the deadline"
    fi
  fi
else
  say "build/bin/bench missing: run third_party/gpu-prepare.sh where Go is and carry .native-src"
fi
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  tar -czf "$OUT/gpu-check-logs.tgz" "$LOGS" && say "logs packed into \$OUT/gpu-check-logs.tgz"
fi
for s in "$check" "$bench" "$ab" "$trace" "$memory"; do
  [ "$s" = 0 ] || [ "$s" = skipped ] || exit 1
done
