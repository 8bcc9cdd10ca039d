# metanas-go: MetaNAS in Go over LibTorch.
#   make train   meta-train the smoke preset on Omniglot (installs what is missing, builds)
#   make test    build everything and run the whole test suite
#   make bench   benchmarks (results go to BENCHMARKS.md by hand)
SHELL  := /bin/bash
NPROC  := $(shell env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 2)
GO     ?= go
BUILD  := build
CONFIG ?= configs/smoke.yaml
TRAIN_ARGS ?=

.PHONY: all native deps test train bench opbench gpu-prepare gpu-check gpu-bench gpu-trace gpu-session compat-check kernel-asan data clean

all: native
	$(GO) build ./...

# Go toolchain and Python parity tools (PyTorch 1.13 from Debian for the tests).
deps:
	@command -v $(GO) >/dev/null || { echo "Go is missing: install Go >= 1.22 (https://go.dev/dl)"; exit 1; }
	@$(GO) mod download
	@# -I: not the current directory, whose torch/ (this repository's Go package) Python
	@# would import as an empty namespace package.
	@if ! /usr/bin/python3 -I -c 'import torch; torch.zeros(1)' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
	    echo "installing python3-torch (PyTorch 1.13, for the parity tests)"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-numpy) >/dev/null; \
	  else echo "warning: /usr/bin/python3 has no torch: the parity tests will be skipped; install python3-torch"; fi; \
	fi

# Locate LibTorch (LIBTORCH=, else a CUDA PyTorch wheel, else Debian's; installs Debian's when
# missing and root), then compile gotorch's cgotorch and our shim in parallel into build/lib.
native:
	@$(GO) mod download
	@mkdir -p $(BUILD)
	@LIBTORCH="$(LIBTORCH)" third_party/find-libtorch.sh > $(BUILD)/libtorch.mk.new
	@if ! cmp -s $(BUILD)/libtorch.mk.new $(BUILD)/libtorch.mk; then \
	  mv $(BUILD)/libtorch.mk.new $(BUILD)/libtorch.mk; touch $(BUILD)/libtorch.stamp; \
	  echo "LibTorch: $$(grep -E 'LT_(SOURCE|VERSION|CUDA)' $(BUILD)/libtorch.mk | tr '\n' ' ')"; \
	else rm -f $(BUILD)/libtorch.mk.new; fi
	@$(MAKE) --no-print-directory -j$(NPROC) -f third_party/native.mk

# One LibTorch thread per test process, no OpenMP spinning: go test runs packages in
# parallel, and oversubscribed spinning threads make small-op workloads many times slower.
# REQUIRE_PYTORCH=1: a parity test that finds no Python with torch fails instead of skipping.
REQUIRE_PYTORCH ?= 1
# The packages that adapt tasks and batches and load data on several goroutines are tested
# under the race detector.
RACE_PKGS := ./metanas/data ./metanas/learn ./metanas/train
TEST_ENV := METANAS_TEST_REQUIRE_PYTORCH=$(REQUIRE_PYTORCH) OMP_NUM_THREADS=1 GOMP_SPINCOUNT=0
test: deps native
	$(GO) vet ./...
	$(TEST_ENV) $(GO) test -count=1 -timeout 40m $$($(GO) list ./... | grep -v -x -e '.*/metanas/data' -e '.*/metanas/learn' -e '.*/metanas/train')
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 40m $(RACE_PKGS)

train: deps native
	$(GO) run ./cmd/train --config $(CONFIG) $(TRAIN_ARGS)

# Meta-epoch costs of the paper presets on synthetic tasks (CPU: 2 tasks of each meta-batch,
# scaled), then the per-op cost of Go vs C++ vs Python. Record results in BENCHMARKS.md.
BENCH_ARGS ?= --tasks 2 --test-steps 10
bench: deps native
	$(GO) run ./cmd/bench $(BENCH_ARGS)
	@$(MAKE) --no-print-directory -f third_party/native.mk $(BUILD)/bin/opchain
	$(GO) run ./cmd/opbench --markdown $(OPBENCH_ARGS)

opbench: deps native
	@$(MAKE) --no-print-directory -f third_party/native.mk $(BUILD)/bin/opchain
	$(GO) run ./cmd/opbench --markdown $(OPBENCH_ARGS)

# Prepare what a CUDA machine without Go needs (binaries, cgotorch sources) in .native-src/.
gpu-prepare: deps native
	bash third_party/gpu-prepare.sh

gpu-check:
	bash third_party/gpu-check.sh

# Compile the shim against the next Debian release's (newer) LibTorch and CUDA headers,
# with and without CUDA, before a GPU lease (fetches about 1 GB once; installs nothing).
compat-check:
	bash third_party/compat-check.sh

# The CUDA kernels' tests through their host emulation under AddressSanitizer.
kernel-asan: deps native
	bash third_party/kernel-asan.sh

gpu-bench:
	bash third_party/gpu-bench.sh

gpu-trace:
	bash third_party/gpu-trace.sh

gpu-session:
	bash third_party/gpu-session.sh

# Omniglot's two canonical archives into ./data/omniglot (needs a network).
OMNIGLOT_URL ?= https://raw.githubusercontent.com/brendenlake/omniglot/master/python
data:
	@mkdir -p data/omniglot
	@for f in images_background.zip images_evaluation.zip; do \
	  [ -f data/omniglot/$$f ] && continue; \
	  echo "downloading $$f"; \
	  curl -fsSL --retry 2 -o data/omniglot/$$f.part $(OMNIGLOT_URL)/$$f && mv data/omniglot/$$f.part data/omniglot/$$f || \
	  { rm -f data/omniglot/$$f.part; echo "could not download $$f: no network? Put images_background.zip and images_evaluation.zip in data/omniglot/ by hand"; exit 1; }; \
	done

clean:
	rm -rf $(BUILD)
