#!/usr/bin/env bash
# Prepares, on a machine with Go, what third_party/gpu-check.sh needs on a CUDA machine that
# has PyTorch but no Go toolchain and no network:
#   .native-src/cgotorch/   gotorch's cgotorch sources, copied from the Go module cache
#   build/bin/*.test        the Go test binaries (go test -c), one per package with tests
#   build/bin/tests.txt     "binary package-dir" lines: where gpu-check.sh runs each binary
#   build/bin/<cmd>         the commands (go build ./cmd/...), opbench among them
#   .native-src/bin.tar.gz  build/bin packed (about 40 MiB for all packages), which
#                           gpu-check.sh unpacks: carrying .native-src alone is enough
# It builds the native libraries here first (make native), since the Go binaries link against
# them. Carry .native-src to the CUDA machine (run's carry: [".native-src"]), then run
#   bash third_party/gpu-check.sh
# The Go binaries find build/lib through an absolute rpath of this checkout; gpu-check.sh sets
# LD_LIBRARY_PATH instead, so the checkout may sit anywhere there.
#
# Environment: GO (default go), GPU_PREPARE_PKGS (space-separated package patterns to build
# test binaries of; default: every package with tests).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
MOD=github.com/metanas-go/metanas

command -v "$GO" >/dev/null || { echo "gpu-prepare: Go is missing (run this where Go is installed)" >&2; exit 1; }

echo "gpu-prepare: building the native libraries (make native)" >&2
make --no-print-directory native >&2

gotorch=$("$GO" list -m -f '{{.Dir}}' github.com/wangkuiyi/gotorch)
rm -rf .native-src/cgotorch
mkdir -p .native-src/cgotorch
cp -p "$gotorch"/cgotorch/*.cc "$gotorch"/cgotorch/*.h .native-src/cgotorch/
chmod -R u+w .native-src
echo "gpu-prepare: copied $(ls .native-src/cgotorch | wc -l) cgotorch files from $gotorch" >&2

mkdir -p build/bin
rm -f build/bin/*.test build/bin/tests.txt
# -s -w: no symbol table or DWARF (smaller to carry; panics still name functions).
ldflags="-s -w"
# shellcheck disable=SC2086
pkgs=$("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ${GPU_PREPARE_PKGS:-./...})
manifest=build/bin/tests.txt.new
: >"$manifest"
for pkg in $pkgs; do
  rel=${pkg#"$MOD"}
  rel=${rel#/}
  [ -n "$rel" ] || rel=.
  name=$(echo "$rel" | tr / _).test
  echo "gpu-prepare: go test -c ./$rel -> build/bin/$name" >&2
  if ! "$GO" test -c -ldflags="$ldflags" -o "build/bin/$name" "./$rel"; then
    echo "gpu-prepare: warning: the tests of ./$rel do not build; left out" >&2
    continue
  fi
  if [ -f "build/bin/$name" ]; then echo "$name $rel" >>"$manifest"; fi
done
mv "$manifest" build/bin/tests.txt

echo "gpu-prepare: go build ./cmd/... -> build/bin/" >&2
for c in cmd/*/; do
  "$GO" build -ldflags="$ldflags" -o build/bin/ "./$c" || echo "gpu-prepare: warning: ./$c does not build; left out" >&2
done

# build/bin/opchain is left out: gpu-check.sh compiles it against the CUDA machine's LibTorch.
tar -C build --exclude=bin/opchain -czf .native-src/bin.tar.gz bin
size=$(du -cm .native-src | tail -1 | cut -f1)
echo "gpu-prepare: ready: carry [\".native-src\"] (${size} MiB); run: bash third_party/gpu-check.sh" >&2
if [ "$size" -gt 60 ]; then
  echo "gpu-prepare: warning: ${size} MiB may exceed what can be carried (64 MiB); narrow GPU_PREPARE_PKGS (e.g. GPU_PREPARE_PKGS=./torch)" >&2
fi
