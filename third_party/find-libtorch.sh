#!/usr/bin/env bash
# Locates a LibTorch installation and prints make-style variables:
#   LT_INC (include flags), LT_LIBDIR, LT_CUDA (0|1), LT_ABI (0|1), LT_VERSION, LT_SOURCE.
# Order: $LIBTORCH, then the PyTorch wheel of python3 when it has CUDA, then Debian's
# libtorch-dev; when none is found and we are root on Debian, installs libtorch-dev.
set -euo pipefail

emit() { # dir-style layout: $1=root include dir, $2=lib dir, $3=cuda, $4=abi, $5=version, $6=source
  if [ "$1" = /usr/include ]; then
    echo "LT_INC=-isystem $1/torch/csrc/api/include"
  else
    echo "LT_INC=-isystem $1 -isystem $1/torch/csrc/api/include"
  fi
  echo "LT_LIBDIR=$2"
  echo "LT_CUDA=$3"
  echo "LT_ABI=$4"
  echo "LT_VERSION=$5"
  echo "LT_SOURCE=$6"
}

version_of() { # reads the version from a LibTorch include tree
  local f="$1/torch/csrc/api/include/torch/version.h"
  if [ -f "$f" ]; then
    local v
    v=$(awk '/#define TORCH_VERSION_(MAJOR|MINOR|PATCH) /{printf "%s%s", sep, $3; sep="."}' "$f")
    echo "${v:-unknown}"
  else echo unknown; fi
}

has_cuda_lib() { ls "$1"/libtorch_cuda.so >/dev/null 2>&1 && echo 1 || echo 0; }

if [ -n "${LIBTORCH:-}" ]; then
  if [ ! -f "$LIBTORCH/include/torch/csrc/api/include/torch/torch.h" ]; then
    echo "find-libtorch: LIBTORCH=$LIBTORCH has no include/torch/csrc/api/include/torch/torch.h;" >&2
    echo "  point LIBTORCH at an unpacked LibTorch (the folder holding include/ and lib/)." >&2
    exit 1
  fi
  emit "$LIBTORCH/include" "$LIBTORCH/lib" "$(has_cuda_lib "$LIBTORCH/lib")" 1 "$(version_of "$LIBTORCH/include")" "LIBTORCH"
  exit 0
fi

for py in python3 /usr/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  info=$("$py" - <<'PY' 2>/dev/null || true
import os, torch
d = os.path.dirname(torch.__file__)
cuda = 1 if torch.version.cuda and os.path.exists(os.path.join(d, "lib", "libtorch_cuda.so")) else 0
print(d, cuda, int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.__version__)
PY
)
  if [ -n "$info" ]; then
    read -r dir cuda abi ver <<<"$info"
    if [ "$cuda" = 1 ] && [ -d "$dir/include" ]; then
      emit "$dir/include" "$dir/lib" 1 "$abi" "$ver" "python:$py"
      exit 0
    fi
  fi
done

debian_ok() { [ -f /usr/include/torch/csrc/api/include/torch/torch.h ] && ls /usr/lib/*-linux-gnu/libtorch.so >/dev/null 2>&1; }
if ! debian_ok; then
  if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
    echo "find-libtorch: no LibTorch found; installing Debian's libtorch-dev (apt-get install -y libtorch-dev)" >&2
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtorch-dev) >&2
  fi
fi
if debian_ok; then
  libdir=$(dirname "$(ls /usr/lib/*-linux-gnu/libtorch.so | head -1)")
  emit /usr/include "$libdir" "$(has_cuda_lib "$libdir")" 1 "$(version_of /usr/include)" "debian"
  exit 0
fi
cat >&2 <<'MSG'
find-libtorch: no LibTorch found. Install one of:
  - Debian/Ubuntu: apt-get install -y libtorch-dev        (CPU, LibTorch 1.13)
  - a PyTorch wheel with CUDA: pip install torch            (its include/ and lib/ are used)
  - any unpacked LibTorch: make LIBTORCH=/path/to/libtorch
MSG
exit 1
