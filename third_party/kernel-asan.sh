#!/usr/bin/env bash
# Runs the tests of the shim's CUDA kernels through their host emulation (cuda_emu.h) with
# AddressSanitizer watching the kernels' code: a load or store outside a tensor's memory,
# which a GPU might not report, fails with the kernel's line. The emulated tests of the
# torch package and the whole batched pass of cells (TestSearchNetFusedMatchesUnfused);
# LibTorch's own code is not instrumented, and the CPU tensor pool is off so that every
# tensor is an allocation of its own. Needs gcc's libasan. About a minute once the shim is
# built (CI runs it after make test).
#
#   bash third_party/kernel-asan.sh        (or: make kernel-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
CXX=${CXX:-g++}
asan=$("$CXX" -print-file-name=libasan.so)
[ -f "$asan" ] || { echo "kernel-asan: needs AddressSanitizer's runtime ($CXX -print-file-name=libasan.so found none; install libasan)" >&2; exit 2; }
make --no-print-directory native >/dev/null
make --no-print-directory -f third_party/native.mk build/asan/libmetanas_shim.so >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$GO" test -c -o "$tmp/torch.test" ./torch
"$GO" test -c -o "$tmp/cells.test" ./cells
export METANAS_CPU_POOL=0 LD_PRELOAD="$asan" LD_LIBRARY_PATH="$PWD/build/asan:$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Go handles its own signals; leaks are LibTorch's and Go's business, not the kernels'.
export ASAN_OPTIONS=detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:detect_stack_use_after_return=0:halt_on_error=1
# run PKG PATTERN runs PKG's tests matching PATTERN (ASan's note on swapcontext, which the
# emulation's fibers use, left out).
run() {
  (cd "$1" && "$tmp/$1.test" -test.run "$2" -test.count=1) 2>&1 |
    { grep -v "doesn't fully support makecontext" || true; }
}
status=0
run torch 'Emulated' || status=1
run cells '^TestSearchNetFusedMatchesUnfused$' || status=1
[ "$status" = 0 ] && echo "kernel-asan: no access outside a tensor by the emulated kernels"
exit $status
