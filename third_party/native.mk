# Builds the native libraries under build/: gotorch's cgotorch (compiled from the Go module
# cache, never copied into the repository) and our own shim (torch/shim), against the LibTorch
# that find-libtorch.sh chose. Invoked by the top-level Makefile with -j.
BUILD      := build
GOTORCH    := $(shell go list -m -f '{{.Dir}}' github.com/wangkuiyi/gotorch)
include $(BUILD)/libtorch.mk

# LibTorch 2.12 and later need C++20 for their headers; older ones build with C++17.
LT_STD   := $(shell echo '$(LT_VERSION)' | awk -F. '{ print ($$1 > 2 || ($$1 == 2 && $$2 + 0 >= 12)) ? "c++20" : "c++17" }')
CXX      ?= g++
# -DNDEBUG as LibTorch's release builds: some of its classes have debug-only members
# (RecordFunction's inputs_valid_), so without it our inline reads of them are misplaced.
CXXFLAGS := -std=$(LT_STD) -fPIC -O2 -g0 -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI=$(LT_ABI) $(LT_INC) -I$(BUILD)/include -Wno-deprecated-declarations
LDLIBS   := -L$(LT_LIBDIR) -Wl,-rpath,$(LT_LIBDIR) -ltorch -ltorch_cpu -lc10
TORCH_LIBS := libtorch.so libtorch_cpu.so libc10.so
ifeq ($(LT_CUDA),1)
# LibTorch's CUDA headers include the CUDA runtime's: take them from CUDA_HOME, the usual
# toolkit folder, or the NVIDIA wheels beside a PyTorch wheel.
CUDA_RT_H := $(firstword $(wildcard $(if $(CUDA_HOME),$(CUDA_HOME)/include/cuda_runtime_api.h) \
  /usr/local/cuda/include/cuda_runtime_api.h \
  $(LT_LIBDIR)/../../nvidia/cu13/include/cuda_runtime_api.h \
  $(LT_LIBDIR)/../../nvidia/cuda_runtime/include/cuda_runtime_api.h))
CXXFLAGS += -DWITH_CUDA $(if $(CUDA_RT_H),-isystem $(dir $(CUDA_RT_H)))
LDLIBS   += -ltorch_cuda -lc10_cuda
TORCH_LIBS += libtorch_cuda.so libc10_cuda.so
# The shim's own CUDA kernels (torch/shim/*.cu) need nvcc: NVCC=..., else nvcc on the PATH,
# in CUDA_HOME or the usual toolkit folder. Without one the shim builds without them (its
# fused node sum then reports that it has no CUDA kernels). They link the CUDA runtime
# beside the runtime headers (the wheel's, which LibTorch loads), by its soname.
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard $(if $(CUDA_HOME),$(CUDA_HOME)/bin/nvcc) /usr/local/cuda/bin/nvcc))
CUDART_SO := $(firstword $(wildcard $(if $(CUDA_RT_H),$(dir $(CUDA_RT_H))../lib/libcudart.so.* $(dir $(CUDA_RT_H))../lib64/libcudart.so.*)))
# H100/H200 code, and PTX for other GPUs from Turing (sm_75) on, compiled by the driver.
NVCC_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_75,code=compute_75
ifneq ($(and $(NVCC),$(CUDART_SO)),)
CU_SRCS := $(wildcard torch/shim/*.cu)
CU_OBJS := $(patsubst torch/shim/%.cu,$(BUILD)/obj/shim/%_cu.o,$(CU_SRCS))
CXXFLAGS += -DMT_CUDA_KERNELS
SH_LDLIBS := $(CUDART_SO)
CUDART_LINK := $(BUILD)/lib/$(notdir $(CUDART_SO))
endif
endif

CG_SRCS := $(wildcard $(GOTORCH)/cgotorch/*.cc)
CG_HDRS := $(patsubst $(GOTORCH)/cgotorch/%,$(BUILD)/include/cgotorch/%,$(wildcard $(GOTORCH)/cgotorch/*.h))
CG_OBJS := $(patsubst $(GOTORCH)/cgotorch/%.cc,$(BUILD)/obj/cgotorch/%.o,$(CG_SRCS))
SH_SRCS := $(wildcard torch/shim/*.cc)
SH_HDRS := $(wildcard torch/shim/*.h)
SH_OBJS := $(patsubst torch/shim/%.cc,$(BUILD)/obj/shim/%.o,$(SH_SRCS))
# The CUDA kernels compiled as C++ for their host emulation (cuda_emu.h), in every build
# (nvcc's #pragma unroll means nothing to the host compiler).
EMU_OBJS := $(patsubst torch/shim/%.cu,$(BUILD)/obj/shim/%_emu.o,$(wildcard torch/shim/*.cu))
EMU_ASAN_OBJS := $(EMU_OBJS:_emu.o=_emu_asan.o)
LINKS   := $(addprefix $(BUILD)/lib/,$(TORCH_LIBS))

all: $(BUILD)/lib/libcgotorch.so $(BUILD)/lib/libmetanas_shim.so $(LINKS) $(CUDART_LINK)

# gotorch's headers are included as "cgotorch/x.h"; expose them under build/include.
$(BUILD)/include/cgotorch/%.h: $(GOTORCH)/cgotorch/%.h
	@mkdir -p $(dir $@)
	cp $< $@ && chmod u+w $@

$(BUILD)/obj/cgotorch/%.o: $(GOTORCH)/cgotorch/%.cc $(CG_HDRS) $(BUILD)/libtorch.stamp third_party/native.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/shim/%.o: torch/shim/%.cc $(SH_HDRS) $(BUILD)/libtorch.stamp third_party/native.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -Wall -c $< -o $@

$(BUILD)/obj/shim/%_emu.o: torch/shim/%.cu $(SH_HDRS) $(BUILD)/libtorch.stamp third_party/native.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -Wall -Wno-unknown-pragmas -DMT_CUDA_EMU -x c++ -c $< -o $@

# The shim with the emulated kernels under AddressSanitizer (third_party/kernel-asan.sh):
# every load and store of the kernels' code checked against the tensors' allocations.
$(BUILD)/obj/shim/%_emu_asan.o: torch/shim/%.cu $(SH_HDRS) $(BUILD)/libtorch.stamp third_party/native.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -Wall -Wno-unknown-pragmas -DMT_CUDA_EMU -fsanitize=address -fno-omit-frame-pointer -x c++ -c $< -o $@

$(BUILD)/asan/libmetanas_shim.so: $(SH_OBJS) $(EMU_ASAN_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) -shared -fsanitize=address -o $@ $^ $(SH_LDLIBS) $(LDLIBS)

# -Xcompiler passes the shim's position-independent code and ABI to the host compiler; the
# kernels include no LibTorch header.
$(BUILD)/obj/shim/%_cu.o: torch/shim/%.cu $(SH_HDRS) $(BUILD)/libtorch.stamp third_party/native.mk
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O3 $(NVCC_ARCH) -Xcompiler -fPIC,-D_GLIBCXX_USE_CXX11_ABI=$(LT_ABI) -c $< -o $@

$(BUILD)/lib/libcgotorch.so: $(CG_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/lib/libmetanas_shim.so: $(SH_OBJS) $(EMU_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) -shared -o $@ $^ $(SH_LDLIBS) $(LDLIBS)

ifneq ($(CUDART_LINK),)
# The CUDA runtime under its soname, which the shim's kernels need at run time.
$(CUDART_LINK): $(BUILD)/libtorch.stamp
	@mkdir -p $(dir $@)
	ln -sf $(CUDART_SO) $@
endif

# Links to the chosen LibTorch's libraries, so that Go's link (-L build/lib) and the
# run-time search (rpath build/lib) find them wherever that LibTorch lives.
$(BUILD)/lib/%.so: $(BUILD)/libtorch.stamp
	@mkdir -p $(dir $@)
	ln -sf $(LT_LIBDIR)/$*.so $@

.PHONY: all
.SECONDARY:

# The C++ floor of the op-cost benchmark (cmd/opbench), a stand-alone program with the shim's
# flags and LibTorch; never part of a library that Go links. --no-as-needed keeps
# libtorch_cuda loaded (its CUDA kernels register at load time). Built on demand:
#   make -f third_party/native.mk build/bin/opchain
$(BUILD)/bin/opchain: third_party/bench/opchain.cc $(BUILD)/libtorch.stamp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -Wall -o $@ $< -Wl,--no-as-needed $(LDLIBS)

.PHONY: opchain
opchain: $(BUILD)/bin/opchain
