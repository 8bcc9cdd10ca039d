// C interface of metanas-go's own LibTorch shim: the operations gotorch's cgotorch lacks or
// exposes without error handling. Every function that can fail returns NULL on success or a
// malloc'd error message (free it with mt_free_str); results are returned through out
// parameters as new at::Tensor handles (free each with mt_tensor_free). Handles share the
// representation of cgotorch's Tensor type (a pointer to at::Tensor).
#pragma once
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *mt_tensor;  // at::Tensor*
typedef void *mt_optim;   // metanas optimizer (Adam or SGD) with its per-parameter state
typedef void *mt_module;  // torch::jit::Module*
typedef void *mt_generator;  // at::Generator*: a private random stream (NULL: the default)
typedef void *mt_graph;      // a CUDA graph (CUDA builds only)

// Memory and strings.
void mt_free_str(char *s);
void mt_tensor_free(mt_tensor t);
void mt_tensor_free_many(mt_tensor *ts, int64_t n);
int64_t mt_live_tensors(void);

// Runtime: devices, threads, seeds, synchronisation.
bool mt_cuda_available(void);
int64_t mt_cuda_device_count(void);
void mt_manual_seed(uint64_t seed);
char *mt_cuda_manual_seed_all(uint64_t seed);
void mt_set_num_threads(int n);
int mt_get_num_threads(void);
void mt_set_cudnn_benchmark(bool on);
// mt_set_allow_tf32 lets cuDNN convolutions and cuBLAS matrix products on CUDA use TF32 (a
// 10-bit mantissa; LibTorch's default lets convolutions use it, matrix products not).
void mt_set_allow_tf32(bool conv, bool matmul);
// mt_autocast sets the calling thread's autocast on CUDA (cuda) or the CPU: with on, LibTorch
// runs convolutions and matrix products in dtype (bfloat16 or float16), and some ops it
// keeps in float32; cache false recomputes every cast (weights change in place between
// steps and CUDA graph replays). The previous settings come back through prev_*.
char *mt_autocast(bool cuda, bool on, int dtype, bool cache, bool *prev_on, int *prev_dtype, bool *prev_cache);
// mt_trace_start records, with PyTorch's profiler (Kineto), the device's kernels and copies
// (cuda; with host_ops the host's operator calls too) or the host's operator calls (!cuda)
// until mt_trace_stop, which writes them to path as a Chrome trace (JSON). Diagnostics only.
char *mt_trace_start(bool cuda, bool host_ops);
char *mt_trace_stop(const char *path);
char *mt_synchronize(int device_index);
// mt_cuda_empty_cache returns the unused cached blocks of LibTorch's CUDA allocator (those
// of released graph pools included) to the device; it waits for the device. A no-op
// without CUDA.
char *mt_cuda_empty_cache(void);
// mt_cuda_memory reports LibTorch's CUDA allocator on a device, in bytes: out[0] allocated
// now, out[1] its peak, out[2] reserved (allocated plus cached, graph pools included) now,
// out[3] its peak, the peaks since the last reset (reset: set both peaks to now after
// reading). An error without CUDA.
char *mt_cuda_memory(int device_index, bool reset, int64_t *out);
// mt_use_stream makes a stream from LibTorch's pool (pool) or the device's default stream
// the calling OS thread's current stream on the device.
char *mt_use_stream(int device_index, bool pool);
// mt_sync_stream waits for the calling thread's current stream on the device.
char *mt_sync_stream(int device_index);

// Branch streams (an experiment, on with METANAS_BRANCH_STREAMS=N, N >= 2; mt_branch_streams
// reports N, 0 when off). mt_branch_fork, on CUDA with branch streams on, makes the calling
// thread's N branch streams wait for what its current stream (the trunk) has queued and
// reports N in *n (0, and nothing done, when off or without CUDA); mt_branch_use(i) makes
// branch i mod N current (i < 0: the trunk); mt_branch_join makes the trunk current again,
// waiting for every branch, and keeps the memory of outs (tensors made on branches that the
// trunk reads) from reuse before the trunk's reads; the gradients that later reach outs (made
// on the trunk, read on the branches) are kept alike. mt_branch_input, inside a fork, marks
// x (made on the trunk, read on the current branch) as used by the branch and, where x needs
// a gradient, returns an alias of it whose gradient, made on the branch and read on the
// trunk, is kept from reuse before the trunk's reads; elsewhere (and otherwise) x.
int mt_branch_streams(void);
char *mt_branch_fork(int device_index, int64_t *n);
char *mt_branch_use(int64_t i);
char *mt_branch_join(mt_tensor *outs, int64_t n);
char *mt_branch_input(mt_tensor x, mt_tensor *out);

// CUDA graphs. capture_begin registers the private generators gens (drawn from inside the
// capture), takes its memory from the pool of the captured graph share (NULL: a pool of its
// own) and makes a side stream current on the calling thread until capture_end; the kernels
// queued in between are recorded, not run. replay runs them on the thread's current stream.
// Every call fails in a CPU-only build.
char *mt_graph_new(int device_index, mt_graph *out);
char *mt_graph_capture_begin(mt_graph g, mt_generator *gens, int64_t ngens, mt_graph share);
char *mt_graph_capture_end(mt_graph g);
char *mt_graph_replay(mt_graph g);
void mt_graph_free(mt_graph g);
// mt_count_ops starts counting the ATen operator calls of all threads (nested calls and
// those of backward passes included, as PyTorch's profiler lists them); it slows every op
// down, so it is for diagnostics. mt_op_count reads the count.
void mt_count_ops(void);
int64_t mt_op_count(void);
// mt_profile_ops starts timing operator calls (ATen ops and autograd nodes) of all threads by
// self time (nested calls excluded); diagnostics only. mt_op_profile returns the table so far
// as malloc'd text, one "name\tcalls\tself_us" line per operator, largest first, and
// clears it when reset is set.
void mt_profile_ops(void);
char *mt_op_profile(bool reset);
// mt_profile_bytes starts counting, per ATen operator called outside another one (by our
// code or an autograd node), the bytes of the tensors it read and wrote (views none; a
// floor of the memory traffic); diagnostics only. mt_bytes_profile returns the table so
// far as malloc'd text, one "name\tcalls\tbytes" line per operator, most bytes first, and
// clears it when reset is set.
void mt_profile_bytes(void);
char *mt_bytes_profile(bool reset);
// mt_host_heap reports glibc malloc's heap over all arenas: bytes in use (mmapped blocks
// included) and bytes free but kept by malloc. mt_trim_host_heap gives free heap memory
// back to the operating system (malloc_trim).
void mt_host_heap(int64_t *in_use, int64_t *free_kept);
void mt_trim_host_heap(void);
// The CPU tensor pool (cpu_pool.cc): mt_cpu_pool_enable makes it (or LibTorch's own
// allocator) serve new CPU tensors; mt_cpu_pool_trim frees the blocks it holds and returns
// their bytes; mt_cpu_pool_stats reports bytes held free, bytes handed out, and how many
// allocations reused a block (hits) or took a new one (misses).
void mt_cpu_pool_enable(bool on);
bool mt_cpu_pool_enabled(void);
int64_t mt_cpu_pool_trim(void);
void mt_cpu_pool_stats(int64_t *cached, int64_t *in_use, int64_t *hits, int64_t *misses);
// mt_cpu_pool_peak returns the most bytes the pool had handed out at once since the last
// reset (or the start); reset starts the next period at the bytes handed out now.
int64_t mt_cpu_pool_peak(bool reset);
// mt_cpu_pool_selftest checks the size classes and, with the pool on, block alignment and
// reuse; NULL when all hold, else what failed.
char *mt_cpu_pool_selftest(void);
int64_t mt_sync_count(void);
void mt_set_grad_enabled(bool on);
bool mt_is_grad_enabled(void);

// Creation (dtype: 0 float32, 1 float64, 2 int64, 3 uint8, 4 bool, 5 float16, 6 bfloat16;
// dev_type: 0 cpu, 1 cuda).
char *mt_from_data(const void *data, int dtype, const int64_t *shape, int ndim, int dev_type,
                   int dev_index, bool requires_grad, mt_tensor *out);
char *mt_from_u8_images(const uint8_t *data, const int64_t *shape, int ndim, double scale,
                        int dev_type, int dev_index, mt_tensor *out);
char *mt_full(const int64_t *shape, int ndim, double value, int dtype, int dev_type,
              int dev_index, bool requires_grad, mt_tensor *out);
char *mt_randn(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index,
               bool requires_grad, mt_tensor *out);
char *mt_rand(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index,
              mt_tensor *out);
char *mt_bernoulli(const int64_t *shape, int ndim, double p, int dtype, int dev_type,
                   int dev_index, mt_tensor *out);
char *mt_generator_new(uint64_t seed, int dev_type, int dev_index, mt_generator *out);
void mt_generator_seed(mt_generator g, uint64_t seed);
void mt_generator_free(mt_generator g);
char *mt_bernoulli_gen(const int64_t *shape, int ndim, double p, int dtype, int dev_type,
                       int dev_index, mt_generator gen, mt_tensor *out);
char *mt_rand_gen(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index,
                  mt_generator gen, mt_tensor *out);
char *mt_arange(int64_t n, int dtype, int dev_type, int dev_index, mt_tensor *out);

// Introspection and host copies.
char *mt_shape(mt_tensor t, int64_t *dims, int *ndim);
char *mt_info(mt_tensor t, int *dtype, int *dev_type, int *dev_index, bool *requires_grad,
              bool *defined);
char *mt_to_host(mt_tensor t, void *dst, int dtype, int64_t numel);
char *mt_item(mt_tensor t, double *out);
char *mt_to(mt_tensor t, int dtype, int dev_type, int dev_index, bool non_blocking,
            mt_tensor *out);
char *mt_pin_memory(mt_tensor t, mt_tensor *out);
char *mt_to_string(mt_tensor t, char **out);

// Neural-network operations.
// mt_pointwise_matmul reports whether mt_conv2d computes bias-free 1x1 convolutions at
// stride 1 on a device of this kind (cuda or CPU) as batched matrix products
// (METANAS_POINTWISE: matmul always, conv never, unset on CUDA only).
bool mt_pointwise_matmul(bool cuda);
// mt_factorized_reduce_patch reports whether FactorizedReduce on a device of this kind runs
// as mt_factorized_reduce (METANAS_FACTORIZED_REDUCE: patch always, split never, unset on
// CUDA only).
bool mt_factorized_reduce_patch(bool cuda);
// mt_factorized_reduce computes FactorizedReduce's two bias-free 1x1 convolutions at stride
// 2 of x ([N, C, H, W], H and W even), w1 on x and w2 on x shifted by one pixel down and
// right, each [groups*co, ci, 1, 1], as one 2x2 convolution at stride 2 whose kernels hold
// w1 at tap (0, 0) and w2 at tap (1, 1): out [N, groups*2*co, H/2, W/2], each group's w1
// outputs before its w2 outputs (the halves concatenated per group).
char *mt_factorized_reduce(mt_tensor x, mt_tensor w1, mt_tensor w2, int64_t groups, mt_tensor *out);
char *mt_conv2d(mt_tensor x, mt_tensor w, mt_tensor b, int64_t sh, int64_t sw, int64_t ph,
                int64_t pw, int64_t dh, int64_t dw, int64_t groups, mt_tensor *out);
char *mt_batch_norm(mt_tensor x, mt_tensor w, mt_tensor b, mt_tensor rm, mt_tensor rv,
                    bool training, double momentum, double eps, mt_tensor *out);
char *mt_relu(mt_tensor x, mt_tensor *out);
char *mt_max_pool2d(mt_tensor x, int64_t k, int64_t s, int64_t p, mt_tensor *out);
char *mt_avg_pool2d(mt_tensor x, int64_t k, int64_t s, int64_t p, bool count_include_pad,
                    mt_tensor *out);
char *mt_adaptive_avg_pool2d(mt_tensor x, int64_t oh, int64_t ow, mt_tensor *out);
char *mt_linear(mt_tensor x, mt_tensor w, mt_tensor b, mt_tensor *out);
char *mt_softmax(mt_tensor x, int64_t dim, mt_tensor *out);
char *mt_log_softmax(mt_tensor x, int64_t dim, mt_tensor *out);
char *mt_cross_entropy(mt_tensor logits, mt_tensor target, mt_tensor *out);

// Shape operations.
char *mt_cat(mt_tensor *ts, int64_t n, int64_t dim, mt_tensor *out);
// mt_adjacent_cat: the concatenation of ts along dim 0, without a copy where they lie back to
// back in one storage (contiguous, in order); otherwise a copy, as mt_cat.
char *mt_adjacent_cat(mt_tensor *ts, int64_t n, mt_tensor *out);
// mt_adjacent_leaves writes to outs copies of ts (same values and requires_grad, detached)
// that lie back to back in one new storage, for mt_adjacent_cat.
char *mt_adjacent_leaves(mt_tensor *ts, int64_t n, mt_tensor *outs);
char *mt_stack(mt_tensor *ts, int64_t n, int64_t dim, mt_tensor *out);
char *mt_slice(mt_tensor x, int64_t dim, int64_t start, int64_t end, int64_t step,
               mt_tensor *out);
char *mt_narrow(mt_tensor x, int64_t dim, int64_t start, int64_t length, mt_tensor *out);
char *mt_repeat_states(mt_tensor *xs, int64_t n, int64_t r, mt_tensor *out);
// mt_repeat_fan writes to outs k tensors that share one copy of xs (or of their ReLUs where
// relu) each repeated r times (mt_repeat_states' layout; with n and r 1 and no ReLU, xs[0]'s
// memory): one per reader, so that the backward pass sums all the readers' gradients of
// each tensor's copies in one pass (fan.cc) instead of adding them reader by reader. It
// fails where mt_node_norm_sum_on is false (CUDA without the shim's kernels).
char *mt_repeat_fan(mt_tensor *xs, int64_t n, int64_t r, int64_t k, bool relu, mt_tensor *outs);
char *mt_split_channels(mt_tensor x, int64_t parts, int64_t tasks, mt_tensor *outs);
// mt_norm_relu is mt_batch_norm in training (no affine tensors; rm and rv contiguous
// float32 [C], moved) followed by mt_relu, fused (normrelu.cc): no normalised tensor, no
// ReLU pass forward or backward. It fails where mt_node_norm_sum_on is false.
char *mt_norm_relu(mt_tensor x, mt_tensor rm, mt_tensor rv, double momentum, double eps, mt_tensor *out);
// mt_ns_div_check checks the CUDA kernels' index division (nodesum_math.h's Div) by d
// over [n0, n0 + count): the first n it divides wrongly, or -1.
int64_t mt_ns_div_check(uint32_t d, uint32_t n0, uint32_t count);
// mt_set_kernel_emulation, for tests: while on, the fused calls above (node norm sums,
// fans, the batch norm + ReLU) and depthwise convolutions' weight gradients (dwconv.cc)
// run CPU tensors through the CUDA kernels of nodesum.cu
// emulated on the host (cuda_emu.h) instead of their CPU loops. It returns the previous
// setting. mt_ns_emu_launches counts the emulated kernel launches so far.
bool mt_set_kernel_emulation(bool on);
int64_t mt_ns_emu_launches(void);
// mt_set_dw_wgrad turns the shim's depthwise weight gradient on CUDA on or off (initially
// METANAS_DW_WGRAD; dwconv.cc) and returns the previous setting.
int mt_set_dw_wgrad(int on);
char *mt_reshape(mt_tensor x, const int64_t *shape, int ndim, mt_tensor *out);
char *mt_view(mt_tensor x, const int64_t *shape, int ndim, mt_tensor *out);
char *mt_flatten(mt_tensor x, int64_t start, int64_t end, mt_tensor *out);
char *mt_permute(mt_tensor x, const int64_t *dims, int ndim, mt_tensor *out);
char *mt_contiguous(mt_tensor x, mt_tensor *out);
char *mt_index_select(mt_tensor x, int64_t dim, mt_tensor index, mt_tensor *out);

// Arithmetic (binary op codes: 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum).
char *mt_binary(int op, mt_tensor a, mt_tensor b, mt_tensor *out);
char *mt_add_scaled(mt_tensor a, mt_tensor b, double alpha, mt_tensor *out);
char *mt_binary_scalar(int op, mt_tensor a, double s, mt_tensor *out);
// Unary op codes: 0 neg, 1 exp, 2 log, 3 sqrt, 4 abs, 5 sigmoid, 6 tanh, 7 square.
char *mt_unary(int op, mt_tensor a, mt_tensor *out);
// Comparison op codes: 0 eq, 1 ne, 2 lt, 3 le, 4 gt, 5 ge.
char *mt_compare(int op, mt_tensor a, mt_tensor b, mt_tensor *out);
char *mt_compare_scalar(int op, mt_tensor a, double s, mt_tensor *out);
char *mt_where(mt_tensor cond, mt_tensor a, mt_tensor b, mt_tensor *out);
char *mt_clamp(mt_tensor a, double lo, double hi, bool has_lo, bool has_hi, mt_tensor *out);

// Reductions (reduce op codes: 0 sum, 1 mean, 2 max, 3 min).
char *mt_reduce_all(int op, mt_tensor x, mt_tensor *out);
char *mt_reduce_dims(int op, mt_tensor x, const int64_t *dims, int ndims, bool keepdim,
                     mt_tensor *out);
char *mt_argmax(mt_tensor x, int64_t dim, bool keepdim, mt_tensor *out);
char *mt_topk(mt_tensor x, int64_t k, int64_t dim, bool largest, mt_tensor *values,
              mt_tensor *indices);
char *mt_norm(mt_tensor x, mt_tensor *out);

// Autograd.
char *mt_set_requires_grad(mt_tensor t, bool on);
char *mt_backward(mt_tensor t);
char *mt_grad(mt_tensor t, mt_tensor *out);  // *out is NULL when the gradient is undefined
char *mt_set_grad(mt_tensor t, mt_tensor g);
char *mt_detach(mt_tensor t, mt_tensor *out);
char *mt_clone(mt_tensor t, mt_tensor *out);
char *mt_alias(mt_tensor t, mt_tensor *out);  // a second handle to the same tensor
char *mt_clip_grad_norm(mt_tensor *ts, int64_t n, double max_norm, mt_tensor *total_norm);

// In-place updates, single and fused over lists.
char *mt_copy_(mt_tensor dst, mt_tensor src);
char *mt_add_(mt_tensor dst, mt_tensor src, double alpha);
char *mt_mul_scalar_(mt_tensor dst, double s);
char *mt_lerp_(mt_tensor dst, mt_tensor end, double w);
char *mt_fill_(mt_tensor dst, double v);
char *mt_foreach_zero_grad(mt_tensor *ts, int64_t n, bool set_to_none);
char *mt_foreach_copy_(mt_tensor *dst, mt_tensor *src, int64_t n);
char *mt_foreach_add_(mt_tensor *dst, mt_tensor *src, int64_t n, double alpha);
char *mt_foreach_mul_scalar_(mt_tensor *dst, int64_t n, double s);
char *mt_foreach_lerp_(mt_tensor *dst, mt_tensor *end, int64_t n, double w);
// dst[i] += w * (mean_k(src[k*n+i]) - dst[i]) for k < m source lists.
char *mt_foreach_lerp_mean_(mt_tensor *dst, mt_tensor *srcs, int64_t n, int64_t m, double w);

// Optimizers. kind 0 = Adam(lr, b1, b2, eps, wd), 1 = SGD(lr, momentum, dampening, wd,
// nesterov as b1 != 0). The per-parameter state can be reset or kept.
char *mt_optim_new(int kind, mt_tensor *params, int64_t n, double lr, double a, double b,
                   double c, double wd, mt_optim *out);
char *mt_optim_step(mt_optim o);
char *mt_optim_zero_grad(mt_optim o, bool set_to_none);
void mt_optim_set_lr(mt_optim o, double lr);
void mt_optim_reset(mt_optim o);
// mt_optim_set_device_steps switches Adam to one step count kept on the device (for CUDA
// graphs; Reset then zeroes the state in place) or back, starting from a fresh state.
char *mt_optim_set_device_steps(mt_optim o, bool on);
void mt_optim_free(mt_optim o);
// Per-parameter state: for Adam, names "step", "exp_avg", "exp_avg_sq"; for SGD
// "momentum_buffer". *out is NULL when the state does not exist yet.
char *mt_optim_state_get(mt_optim o, int64_t i, const char *name, mt_tensor *out);
char *mt_optim_state_set(mt_optim o, int64_t i, const char *name, mt_tensor v);

// Serialization in PyTorch's file format (torch.save / torch.load).
char *mt_save(const char **names, mt_tensor *ts, int64_t n, const char *path);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
// MetaNAS node of a search cell in one call: outs[m] are the outputs of the active ops
// (input i_m, op k_m) of the node; wops is the node's normalised op-weight matrix
// [n_in, K]; wpair (NULL for the plain DARTS sum) its normalised pair weights [P].
// inc is the host incidence matrix [P x n_in] of the active pairs (1 where input j is in
// active pair p), idx[m] = i_m*K + k_m. The node value is
//   sum_m c_{i_m} * wops[i_m, k_m] * drop_m(outs[m]),  c = wpair @ inc (or 1 without pairs),
// which equals the reference's sum over active pairs of w_pair * (edge_i + edge_j). When
// drop_prob > 0, every output whose droppable flag is set gets a per-sample drop-path mask
// scaled by 1/(1-drop_prob).
char *mt_mixed_node(mt_tensor *outs, int64_t m, mt_tensor wpair, mt_tensor wops,
                    const float *inc, int64_t p, int64_t n_in, const int64_t *idx,
                    const uint8_t *droppable, double drop_prob, mt_generator gen,
                    mt_tensor *out);
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
// A tree of values saved as nested dicts: keys[i] is a path "a/b/c" (nested dict keys;
// a segment of only digits becomes an int key), kinds[i] 0 tensor (ts[i]), 1 string
// (strs[i]), 2 int (ints[i]), 3 float (floats[i]), 4 empty dict.
char *mt_save_tree(const char **keys, const int *kinds, mt_tensor *ts, const char **strs,
                   const int64_t *ints, const double *floats, int64_t n, const char *path);
// Loads a file written by mt_save_tree or mt_save (LibTorch pickles) into a flat list of
// paths and values. Entries of other types are skipped.
typedef void *mt_tree;
char *mt_load_tree(const char *path, mt_tree *out);
int64_t mt_tree_size(mt_tree t);
const char *mt_tree_key(mt_tree t, int64_t i);
int mt_tree_kind(mt_tree t, int64_t i);
mt_tensor mt_tree_tensor(mt_tree t, int64_t i);
const char *mt_tree_str(mt_tree t, int64_t i);
int64_t mt_tree_int(mt_tree t, int64_t i);
double mt_tree_float(mt_tree t, int64_t i);
void mt_tree_free(mt_tree t);
// Batched tasks (tasks.cc): parameters stack the tasks' copies along dimension 0,
// activations their channels side by side.
char *mt_matmul(mt_tensor a, mt_tensor b, mt_tensor *out);
// mt_node_coefs returns the weights [tasks, m] with which a batched network's node sums the
// op columns idx (j*K+k) of its inputs: op weights wops [tasks*n_in, K] times, with pair
// weights wpair [tasks, p] (or NULL), the summed weights of the pairs (incidence inc
// [p, n_in]) holding input j; weights at or below threshold count as zero for their task.
char *mt_node_coefs(mt_tensor wpair, mt_tensor wops, const float *inc, int64_t p, int64_t n_in, const int64_t *idx,
                    int64_t m, double threshold, int64_t tasks, mt_tensor *out);
// mt_mixed_tasks is mt_mixed_node for a batched network: op outputs [N, tasks*C, ...]
// weighted by coefs [tasks, m] (mt_node_coefs); one drop-path mask per sample, task and op.
// stacked (or NULL) holds the first ms of the m columns of coefs and droppable, as
// mt_node_batch_norm returns them ([N, tasks, ms, C, ...]); outs the other m - ms.
// With stats (or NULL: stacked is normalised), stacked holds the members before their
// batch norm and stats [2, tasks*ms*C] its batch mean and invstd (mt_node_batch_norm with
// stats): the sum keeps those for its backward pass instead of the normalised members.
char *mt_mixed_tasks(mt_tensor stacked, mt_tensor stats, mt_tensor *outs, int64_t m, mt_tensor coefs,
                     const uint8_t *droppable, double drop_prob, mt_generator gen, int64_t tasks, mt_tensor *out);
// mt_node_batch_norm stacks the m op outputs outs ([N, tasks*C, ...]) of a batched network's
// node as [N, tasks, m, C, ...] and normalises them with one batch norm without affine
// tensors: each (task, op, channel) over its samples and positions, as the ops' own batch
// norms would. rm and rv are the running statistics of the node's members, contiguous
// blocks [tasks, members, C] updated in training; sel (m rising member indices, or NULL when
// the outputs are the members in order) says whose statistics each output uses.
// With stats (or NULL) in training, it returns the stacked outputs before the norm and in
// *stats their batch mean and invstd [2, tasks*m*C] (running statistics updated alike), for
// mt_mixed_tasks to normalise; otherwise *stats is NULL.
char *mt_node_batch_norm(mt_tensor *outs, int64_t m, mt_tensor rm, mt_tensor rv, const int64_t *sel,
                         int64_t tasks, bool training, double momentum, double eps, mt_tensor *out, mt_tensor *stats);
// mt_node_norm_sum is mt_node_batch_norm in training followed by mt_mixed_tasks, fused: the
// ms members (their running statistics rm, rv and sel as mt_node_batch_norm's) are
// normalised and summed in passes over the members themselves, never a stacked or a
// normalised copy of them (forward or backward); rest holds the other m - ms outputs (the
// node's identities), summed in the same passes as they are. The
// weights, drop-path masks (drawn as mt_mixed_tasks draws them) and the result are
// mt_mixed_tasks's. Members of float32, bfloat16 or float16 (mixed: summed in float32);
// every sum is in float32, the node of the members' type. mt_node_norm_sum_on reports
// whether the shim has its kernels for a device type (CUDA's only where it was built with
// nvcc).
char *mt_node_norm_sum(mt_tensor *members, int64_t ms, mt_tensor rm, mt_tensor rv, const int64_t *sel,
                       double momentum, double eps, mt_tensor *rest, int64_t m, mt_tensor coefs,
                       const uint8_t *droppable, double drop_prob, mt_generator gen, int64_t tasks, mt_tensor *out);
bool mt_node_norm_sum_on(int dev_type);
// mt_clip_grad_norm_tasks clips each task's slice of the gradients to global norm max_norm
// and returns the norms before clipping [tasks].
char *mt_clip_grad_norm_tasks(mt_tensor *ts, int64_t n, int64_t tasks, double max_norm, mt_tensor *norms);
// mt_foreach_copy_tasks_ copies src[i] into every task slice of dst[i] (same sizes: a copy).
char *mt_foreach_copy_tasks_(mt_tensor *dst, mt_tensor *src, int64_t n, int64_t tasks);
// mt_foreach_add_task_sum_ adds the sum over the task slices of src[i] to dst[i].
char *mt_foreach_add_task_sum_(mt_tensor *dst, mt_tensor *src, int64_t n, int64_t tasks);
// Diagnostics of cmd/opbench. mt_diag_chain runs the chain case (steps times
// y = relu(y * w + b), then sum and backward) iters times inside C++, its results as values
// freed as they go (held false) or as shim handles freed at each iteration's end (held true).
// mt_diag_triples issues k (mul, add, relu) triples from y and writes their 3k result handles
// to out.
char *mt_diag_chain(mt_tensor x, mt_tensor w, mt_tensor b, int64_t steps, int64_t iters, bool held);
char *mt_diag_triples(mt_tensor y, mt_tensor w, mt_tensor b, int64_t k, mt_tensor *out);

#ifdef __cplusplus
}
#endif
