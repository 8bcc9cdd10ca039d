#!/usr/bin/env bash
# Compiles (syntax only) every shim source against a newer LibTorch's headers than the one
# we build with here, with and without CUDA, so that a session without a GPU machine learns
# before a lease whether the shim still builds against the PyTorch wheels of GPU machines.
#
# The headers come from Debian's next release, fetched as packages into a cache and
# unpacked there (nothing is installed; the system's apt sources are untouched):
# libtorch-dev (LibTorch's headers), nvidia-cuda-dev and libcu++-dev (the CUDA runtime's),
# and nvidia-cuda-toolkit (nvcc, which compiles the shim's CUDA kernels, torch/shim/*.cu,
# for the H100's sm_90 as native.mk does). About 1 GB of packages to fetch once (2.7 GB
# unpacked).
#
#   bash third_party/compat-check.sh            (or: make compat-check)
#   COMPAT_SUITE=trixie COMPAT_CACHE=~/.cache/metanas-compat  (the defaults)
#
# Exit status 0 when every source compiles in both modes (the CUDA mode with the kernels'
# callers, -DMT_CUDA_KERNELS) and every kernel source compiles (by nvcc, and as C++ for the
# host emulation, -DMT_CUDA_EMU); otherwise the compiler's errors, file by file, and
# status 1.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${COMPAT_SUITE:-trixie}
CACHE=${COMPAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metanas-compat}/$SUITE
PKGS=(libtorch-dev nvidia-cuda-dev libcu++-dev)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
CXX=${CXX:-g++}

need() { command -v "$1" >/dev/null || { echo "compat-check: needs $1 ($2)" >&2; exit 2; }; }
need apt-get "Debian's apt"
need dpkg-deb "Debian's dpkg"
need "$CXX" "a C++ compiler"
[ -r "$KEYRING" ] || { echo "compat-check: needs $KEYRING (package debian-archive-keyring)" >&2; exit 2; }

root="$CACHE/root"
if [ ! -f "$CACHE/unpacked" ]; then
  mkdir -p "$CACHE/lists/partial" "$CACHE/archives/partial" "$CACHE/debs"
  cat > "$CACHE/sources.list" <<EOF
deb [signed-by=$KEYRING] http://deb.debian.org/debian $SUITE main contrib non-free
EOF
  APT=(-o "Dir::Etc::SourceList=$CACHE/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$CACHE/lists" -o "Dir::Cache=$CACHE" -o "Dir::Cache::archives=$CACHE/archives"
    -o Debug::NoLocking=1 -o "APT::Sandbox::User=$(id -un)")
  echo "compat-check: fetching ${PKGS[*]} from Debian $SUITE into $CACHE"
  apt-get "${APT[@]}" -qq update
  (cd "$CACHE/debs" && apt-get "${APT[@]}" -qq download "${PKGS[@]/%//$SUITE}")
  for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # A header that LibTorch's own build generates and Debian's CPU package leaves out.
  mkdir -p "$CACHE/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$CACHE/stub/c10/cuda/impl/cuda_cmake_macros.h"
  touch "$CACHE/unpacked"
fi

# nvcc, in a cache of its own (caches made before it lack it): its profile, which names
# the toolkit's folders, is rewritten for where it is unpacked.
nvroot="$CACHE/nvcc-root"
if [ ! -f "$CACHE/nvcc-unpacked" ]; then
  APT=(-o "Dir::Etc::SourceList=$CACHE/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$CACHE/lists" -o "Dir::Cache=$CACHE" -o "Dir::Cache::archives=$CACHE/archives"
    -o Debug::NoLocking=1 -o "APT::Sandbox::User=$(id -un)")
  echo "compat-check: fetching nvidia-cuda-toolkit from Debian $SUITE into $CACHE"
  mkdir -p "$CACHE/nvcc-debs"
  (cd "$CACHE/nvcc-debs" && apt-get "${APT[@]}" -qq download "nvidia-cuda-toolkit/$SUITE")
  for deb in "$CACHE"/nvcc-debs/*.deb; do dpkg-deb -x "$deb" "$nvroot"; done
  bin="$nvroot/usr/lib/nvidia-cuda-toolkit/bin"
  rm -f "$bin/nvcc.profile"
  cat > "$bin/nvcc.profile" <<EOF
NVVMIR_LIBRARY_DIR = $nvroot/usr/lib/nvidia-cuda-toolkit/libdevice
PATH += $bin:$nvroot/usr/bin:
INCLUDES += "-I$root/usr/include"
EOF
  touch "$CACHE/nvcc-unpacked"
fi
NVCC="$nvroot/usr/lib/nvidia-cuda-toolkit/bin/nvcc"

inc="$root/usr/include"
version=$(awk '/#define TORCH_VERSION_(MAJOR|MINOR|PATCH) /{printf "%s%s", sep, $3; sep="."}' \
  "$inc/torch/csrc/api/include/torch/version.h" 2>/dev/null || true)
std=c++17
case "$version" in 2.1[2-9]* | 2.[2-9][0-9]* | [3-9]*) std=c++20 ;; esac # as native.mk
[ -f build/include/cgotorch/cgotorch.h ] || make --no-print-directory native >/dev/null
echo "compat-check: the shim against LibTorch ${version:-?} headers ($SUITE), -std=$std"

flags=(-std=$std -fsyntax-only -fPIC -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI=1 -isystem "$inc"
  -isystem "$inc/torch/csrc/api/include" -Ibuild/include -Wall -Wno-deprecated-declarations)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
export CXX logs
check() { # mode source: compiles one source, its output in $logs
  local mode=$1 src=$2 extra=()
  [ "$mode" = cuda ] && extra=(-DWITH_CUDA -DMT_CUDA_KERNELS -isystem "$CACHE/stub")
  if "$CXX" "${flags[@]}" "${extra[@]}" "$src" >"$logs/$mode-$(basename "$src").log" 2>&1; then
    echo "  ok    $mode  $src"
  else
    echo "  FAIL  $mode  $src"
    touch "$logs/failed"
  fi
}
export -f check
export CACHE
jobs=${COMPAT_JOBS:-$(nproc)}
for mode in cpu cuda; do
  for src in torch/shim/*.cc; do echo "$mode $src"; done
done | xargs -P "$jobs" -L 1 bash -c 'flags=('"$(printf '%q ' "${flags[@]}")"'); check "$0" "$1"'
# The kernels, compiled whole (device code and all), with native.mk's nvcc flags.
for src in torch/shim/*.cu; do
  [ -e "$src" ] || continue
  if "$NVCC" -std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_75,code=compute_75 \
    -Xcompiler -fPIC -c "$src" -o "$logs/$(basename "$src").o" >"$logs/nvcc-$(basename "$src").log" 2>&1; then
    echo "  ok    nvcc  $src"
  else
    echo "  FAIL  nvcc  $src"
    touch "$logs/failed"
  fi
done
# Their host emulation (cuda_emu.h), which native.mk compiles as C++ in every build.
for src in torch/shim/*.cu; do
  [ -e "$src" ] || continue
  if "$CXX" "${flags[@]}" -Wno-unknown-pragmas -DMT_CUDA_EMU -x c++ "$src" >"$logs/emu-$(basename "$src").log" 2>&1; then
    echo "  ok    emu   $src"
  else
    echo "  FAIL  emu   $src"
    touch "$logs/failed"
  fi
done
if [ -f "$logs/failed" ]; then
  for log in "$logs"/*.log; do
    grep -q "error" "$log" || continue
    echo "== $(basename "$log" .log)"
    grep -E "error|required from" "$log" | head -20
  done
  exit 1
fi
echo "compat-check: every shim source compiles, with and without CUDA, and nvcc compiles the kernels (and g++ their emulation)"
