#!/usr/bin/python3
"""Writes golden.json (and the small PyTorch files py_state_*.pt) for the torch package's tests.

Every case builds seeded inputs, runs one op in PyTorch (float32, CPU), and records the inputs
(shape + flat data), the op's parameters, the forward outputs and, for every float input that
requires a gradient, its gradient of loss = sum_i sum(output_i * weight_i) with fixed random
weights (so the gradients are not all ones). Optimizer cases record the parameters after every
step, in-place cases the updated tensors.

Run from the repository root with Debian's Python (PyTorch 1.13):
    /usr/bin/python3 torch/testdata/gen_golden.py
"""
import collections
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
INT64_MAX = 2**63 - 1

gen = torch.Generator().manual_seed(20240611)


def randn(*shape):
    return torch.randn(tuple(shape), generator=gen)


def rand(*shape, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(tuple(shape), generator=gen)


def away_from_zero(*shape, lo=0.5, hi=2.0):
    """Values with |v| in [lo, hi) and a random sign (no ties, no zeros)."""
    mag = rand(*shape, lo=lo, hi=hi)
    sign = torch.where(torch.rand(tuple(shape), generator=gen) < 0.5, -1.0, 1.0)
    return mag * sign


def ints(lo, hi, *shape):
    return torch.randint(lo, hi, shape, generator=gen)


def dtype_name(t):
    return {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64",
            torch.bool: "bool"}[t.dtype]


def flat(t):
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return [1 if v else 0 for v in t.reshape(-1).tolist()]
    if t.dtype == torch.int64:
        return [int(v) for v in t.reshape(-1).tolist()]
    # Shortest decimal that reads back as the same float32.
    return [float(str(v)) for v in t.to(torch.float32).reshape(-1).numpy()]


def enc(t, **extra):
    d = {"shape": list(t.shape), "dtype": dtype_name(t), "data": flat(t)}
    d.update(extra)
    return d


cases = []


def fwd(name, op, params, inputs, fn, nograd=()):
    """A forward/backward case. inputs: list of (name, tensor); float inputs require grad
    unless named in nograd. fn(**inputs) returns a tensor or a tuple of tensors."""
    enc_in, live = [], {}
    for n, t in inputs:
        g = t.is_floating_point() and n not in nograd
        enc_in.append(dict(enc(t), name=n, grad=g))
        live[n] = t.clone().requires_grad_(True) if g else t.clone()
    outs = fn(**live)
    if not isinstance(outs, (tuple, list)):
        outs = (outs,)
    enc_out, loss = [], None
    for o in outs:
        if o.requires_grad:
            w = randn(*o.shape)
            enc_out.append(enc(o, weight=flat(w)))
            term = (o * w).sum()
            loss = term if loss is None else loss + term
        else:
            enc_out.append(enc(o))
    grads = {}
    if loss is not None:
        loss.backward()
        for n, t in live.items():
            if t.requires_grad and t.grad is not None:
                grads[n] = enc(t.grad)
    else:
        for e in enc_in:
            e["grad"] = False
    case = {"name": name, "op": op, "params": params, "inputs": enc_in, "outputs": enc_out,
            "grads": grads}
    return case, live


def add(case):
    cases.append(case)


# ---- conv2d ----------------------------------------------------------------------------------
def conv_case(name, x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    inputs = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    params = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
              "groups": groups}
    c, _ = fwd(name, "conv2d", params, inputs,
               lambda x, w, b=None: F.conv2d(x, w, b, stride, padding, dilation, groups))
    add(c)


conv_case("conv2d_s1_p1_bias", randn(2, 3, 6, 6), randn(4, 3, 3, 3), randn(4), padding=(1, 1))
conv_case("conv2d_s2_p1_nobias", randn(2, 3, 7, 7), randn(5, 3, 3, 3), None, stride=(2, 2),
          padding=(1, 1))
conv_case("conv2d_dil2_p2", randn(2, 3, 8, 8), randn(4, 3, 3, 3), randn(4), padding=(2, 2),
          dilation=(2, 2))
conv_case("conv2d_depthwise", randn(2, 4, 6, 6), randn(4, 1, 3, 3), None, padding=(1, 1),
          groups=4)
# Depthwise 3x3 with dilation 2 (DARTS's dil_conv): the CPU path splits the image into
# interleaved sub-grids; even, odd, small and large sizes, stride 1 and 2.
for h, s, bias in [(12, 1, False), (11, 1, True), (7, 1, False), (8, 2, False), (7, 2, True)]:
    conv_case(f"conv2d_dw3_dil2_s{s}_{h}{'_bias' if bias else ''}", randn(2, 4, h, h),
              randn(4, 1, 3, 3), randn(4) if bias else None, stride=(s, s), padding=(2, 2),
              dilation=(2, 2), groups=4)
conv_case("conv2d_depthwise_s2_dil2_bias", randn(2, 4, 7, 7), randn(4, 1, 5, 5), randn(4),
          stride=(2, 2), padding=(4, 4), dilation=(2, 2), groups=4)
conv_case("conv2d_1x5_p02", randn(2, 3, 5, 6), randn(4, 3, 1, 5), randn(4), padding=(0, 2))
conv_case("conv2d_5x1_p20", randn(2, 3, 6, 5), randn(4, 3, 5, 1), None, padding=(2, 0))
conv_case("conv2d_1x1_s2", randn(2, 4, 6, 6), randn(3, 4, 1, 1), randn(3), stride=(2, 2))

# ---- batch_norm ------------------------------------------------------------------------------
def bn_case(name, training, affine, stats, momentum=0.1, eps=1e-5, shape=(4, 3, 5, 5)):
    C = shape[1]
    inputs = [("x", randn(*shape) * 2 + 0.5)]
    if affine:
        inputs += [("weight", rand(C, lo=0.5, hi=1.5)), ("bias", randn(C))]
    if stats:
        inputs += [("running_mean", randn(C) * 0.3), ("running_var", rand(C, lo=0.5, hi=2.0))]

    def f(x, weight=None, bias=None, running_mean=None, running_var=None):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    c, live = fwd(name, "batch_norm", {"training": training, "momentum": momentum, "eps": eps},
                  inputs, f, nograd=("running_mean", "running_var"))
    if stats:
        c["after"] = {"running_mean": enc(live["running_mean"]),
                      "running_var": enc(live["running_var"])}
    add(c)


bn_case("batch_norm_train_affine", True, True, True)
bn_case("batch_norm_train_noaffine", True, False, True, momentum=0.2)
bn_case("batch_norm_train_noaffine_nostats", True, False, False)
bn_case("batch_norm_train_affine_2d", True, True, True, shape=(6, 4))
bn_case("batch_norm_eval_affine", False, True, True)
bn_case("batch_norm_eval_noaffine", False, False, True, eps=1e-3)

# ---- activations, pooling --------------------------------------------------------------------
add(fwd("relu", "relu", {}, [("x", away_from_zero(2, 3, 4, 4, lo=0.05))], lambda x: F.relu(x))[0])
for k, s, p in [(3, 1, 1), (3, 2, 1), (2, 2, 0)]:
    x = randn(2, 3, 7, 7)
    add(fwd(f"max_pool2d_{k}{s}{p}", "max_pool2d", {"k": k, "s": s, "p": p}, [("x", x)],
            lambda x: F.max_pool2d(x, k, s, p))[0])
# Ties (ReLU zeros, repeated values) and even sizes: the CPU kernel must pick the element
# PyTorch picks, so that the gradient lands on the same input.
for k, s, p in [(3, 1, 1), (3, 2, 1)]:
    x = F.relu(randn(2, 3, 8, 8)).round()
    add(fwd(f"max_pool2d_{k}{s}{p}_ties", "max_pool2d", {"k": k, "s": s, "p": p}, [("x", x)],
            lambda x: F.max_pool2d(x, k, s, p))[0])
# Rows and columns long enough for the CPU kernel's eight-wide passes (stride 1 and 2).
for k, s, p in [(3, 1, 1), (3, 2, 1)]:
    for name, x in [("wide", randn(2, 3, 20, 19)), ("wide_ties", F.relu(randn(2, 3, 21, 21)).round())]:
        add(fwd(f"max_pool2d_{k}{s}{p}_{name}", "max_pool2d", {"k": k, "s": s, "p": p}, [("x", x)],
                lambda x: F.max_pool2d(x, k, s, p))[0])
for k, s, p, cip in [(3, 1, 1, False), (3, 2, 1, False), (3, 2, 1, True)]:
    x = randn(2, 3, 7, 7)
    add(fwd(f"avg_pool2d_{k}{s}{p}_{'incl' if cip else 'excl'}", "avg_pool2d",
            {"k": k, "s": s, "p": p, "count_include_pad": cip}, [("x", x)],
            lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=cip))[0])
for k, s, p, h in [(3, 2, 1, 8), (2, 2, 0, 7), (3, 1, 1, 1)]:
    x = randn(2, 3, h, h)
    add(fwd(f"avg_pool2d_{k}{s}{p}_excl_{h}", "avg_pool2d",
            {"k": k, "s": s, "p": p, "count_include_pad": False}, [("x", x)],
            lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=False))[0])
add(fwd("adaptive_avg_pool2d_1x1", "adaptive_avg_pool2d", {"out": [1, 1]},
        [("x", randn(2, 3, 5, 5))], lambda x: F.adaptive_avg_pool2d(x, (1, 1)))[0])
add(fwd("adaptive_avg_pool2d_2x3", "adaptive_avg_pool2d", {"out": [2, 3]},
        [("x", randn(2, 3, 5, 7))], lambda x: F.adaptive_avg_pool2d(x, (2, 3)))[0])

# ---- linear, softmax, losses -----------------------------------------------------------------
add(fwd("linear_bias", "linear", {}, [("x", randn(4, 5)), ("w", randn(3, 5)), ("b", randn(3))],
        lambda x, w, b: F.linear(x, w, b))[0])
add(fwd("linear_nobias_3d", "linear", {}, [("x", randn(2, 3, 5)), ("w", randn(4, 5))],
        lambda x, w: F.linear(x, w))[0])
add(fwd("softmax_dim1", "softmax", {"dim": 1}, [("x", randn(3, 5) * 2)],
        lambda x: F.softmax(x, 1))[0])
add(fwd("softmax_dim_last_3d", "softmax", {"dim": -1}, [("x", randn(2, 3, 4))],
        lambda x: F.softmax(x, -1))[0])
add(fwd("log_softmax_dim1", "log_softmax", {"dim": 1}, [("x", randn(3, 5) * 2)],
        lambda x: F.log_softmax(x, 1))[0])
add(fwd("log_softmax_dim0_3d", "log_softmax", {"dim": 0}, [("x", randn(3, 2, 4))],
        lambda x: F.log_softmax(x, 0))[0])
add(fwd("cross_entropy", "cross_entropy", {},
        [("logits", randn(6, 5) * 2), ("target", ints(0, 5, 6))],
        lambda logits, target: F.cross_entropy(logits, target))[0])

# ---- shape ops -------------------------------------------------------------------------------
add(fwd("cat_dim1", "cat", {"dim": 1}, [("t0", randn(2, 3, 2, 2)), ("t1", randn(2, 2, 2, 2))],
        lambda t0, t1: torch.cat([t0, t1], 1))[0])
add(fwd("cat_dim0_three", "cat", {"dim": 0},
        [("t0", randn(1, 4)), ("t1", randn(3, 4)), ("t2", randn(2, 4))],
        lambda t0, t1, t2: torch.cat([t0, t1, t2], 0))[0])
add(fwd("stack_dim1", "stack", {"dim": 1}, [("t0", randn(2, 3)), ("t1", randn(2, 3))],
        lambda t0, t1: torch.stack([t0, t1], 1))[0])
add(fwd("slice_hw_from1", "slice", {"slices": [[2, 1, INT64_MAX, 1], [3, 1, INT64_MAX, 1]]},
        [("x", randn(2, 3, 4, 5))], lambda x: x[:, :, 1:, 1:])[0])
add(fwd("slice_step2", "slice", {"slices": [[1, 0, 5, 2]]}, [("x", randn(3, 6))],
        lambda x: x[:, 0:5:2])[0])
add(fwd("narrow", "narrow", {"dim": 1, "start": 1, "length": 2}, [("x", randn(2, 4, 3))],
        lambda x: x.narrow(1, 1, 2))[0])
add(fwd("view", "view", {"shape": [4, 6]}, [("x", randn(2, 3, 4))], lambda x: x.view(4, 6))[0])
add(fwd("reshape_infer", "reshape", {"shape": [3, -1]}, [("x", randn(2, 3, 2))],
        lambda x: x.reshape(3, -1))[0])
add(fwd("flatten_1", "flatten", {"start": 1, "end": -1}, [("x", randn(2, 3, 2, 2))],
        lambda x: x.flatten(1, -1))[0])
add(fwd("permute_contiguous", "permute", {"dims": [0, 2, 1]}, [("x", randn(2, 3, 4))],
        lambda x: x.permute(0, 2, 1).contiguous())[0])
add(fwd("index_select", "index_select", {"dim": 1},
        [("x", randn(3, 5)), ("index", torch.tensor([4, 0, 2, 2]))],
        lambda x, index: x.index_select(1, index))[0])

# ---- arithmetic ------------------------------------------------------------------------------
binops = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "maximum": torch.maximum, "minimum": torch.minimum}
for opn, f in binops.items():
    add(fwd(f"{opn}_same_shape", opn, {}, [("a", randn(2, 3)), ("b", away_from_zero(2, 3))],
            lambda a, b, f=f: f(a, b))[0])
    add(fwd(f"{opn}_broadcast_row", opn, {}, [("a", randn(2, 3, 4)), ("b", away_from_zero(4))],
            lambda a, b, f=f: f(a, b))[0])
    add(fwd(f"{opn}_broadcast_both", opn, {}, [("a", randn(2, 1, 4)), ("b", away_from_zero(3, 1))],
            lambda a, b, f=f: f(a, b))[0])
add(fwd("add_scaled", "add_scaled", {"alpha": -0.75}, [("a", randn(3, 4)), ("b", randn(4))],
        lambda a, b: torch.add(a, b, alpha=-0.75))[0])
scalar_ops = {"add_scalar": (2.5, lambda a, v: a + v), "sub_scalar": (0.75, lambda a, v: a - v),
              "mul_scalar": (-1.5, lambda a, v: a * v), "div_scalar": (4.0, lambda a, v: a / v),
              "clamp_min": (0.1, torch.clamp_min), "clamp_max": (-0.2, torch.clamp_max)}
for opn, (v, f) in scalar_ops.items():
    add(fwd(opn, opn, {"scalar": v}, [("a", randn(3, 4))], lambda a, f=f, v=v: f(a, v))[0])
add(fwd("pow_3", "pow", {"scalar": 3.0}, [("a", randn(3, 4))], lambda a: torch.pow(a, 3.0))[0])
add(fwd("pow_half", "pow", {"scalar": 0.5}, [("a", rand(3, 4, lo=0.2, hi=3))],
        lambda a: torch.pow(a, 0.5))[0])
unary = {"neg": (torch.neg, randn), "exp": (torch.exp, randn),
         "log": (torch.log, lambda *s: rand(*s, lo=0.2, hi=3)),
         "sqrt": (torch.sqrt, lambda *s: rand(*s, lo=0.2, hi=3)),
         "abs": (torch.abs, away_from_zero), "sigmoid": (torch.sigmoid, randn),
         "tanh": (torch.tanh, randn), "square": (torch.square, randn)}
for opn, (f, src) in unary.items():
    add(fwd(opn, opn, {}, [("a", src(3, 4))], lambda a, f=f: f(a))[0])

# ---- comparisons and selection ---------------------------------------------------------------
cmps = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt,
        "ge": torch.ge}
ca = ints(-2, 3, 3, 4).float()  # small integers: ties happen
cb = ints(-2, 3, 4).float()
for opn, f in cmps.items():
    add(fwd(f"compare_{opn}", "compare", {"cmp": opn}, [("a", ca), ("b", cb)],
            lambda a, b, f=f: f(a, b), nograd=("a", "b"))[0])
    add(fwd(f"compare_scalar_{opn}", "compare_scalar", {"cmp": opn, "scalar": 1.0}, [("a", ca)],
            lambda a, f=f: f(a, 1.0), nograd=("a",))[0])
cond = ints(0, 2, 3, 4).bool()
add(fwd("where", "where", {}, [("cond", cond), ("a", randn(3, 4)), ("b", randn(4))],
        lambda cond, a, b: torch.where(cond, a, b))[0])
add(fwd("argmax_dim1", "argmax", {"dim": 1, "keepdim": False}, [("x", randn(4, 6))],
        lambda x: x.argmax(1))[0])
add(fwd("argmax_dim0_keep", "argmax", {"dim": 0, "keepdim": True}, [("x", randn(4, 6))],
        lambda x: x.argmax(0, keepdim=True))[0])
add(fwd("topk_largest", "topk", {"k": 3, "dim": 1, "largest": True}, [("x", randn(4, 7))],
        lambda x: tuple(x.topk(3, 1, True, True)))[0])
add(fwd("topk_smallest_dim0", "topk", {"k": 2, "dim": 0, "largest": False}, [("x", randn(5, 3))],
        lambda x: tuple(x.topk(2, 0, False, True)))[0])

# ---- reductions ------------------------------------------------------------------------------
add(fwd("sum_all", "sum", {}, [("x", randn(3, 4, 2))], lambda x: x.sum())[0])
add(fwd("mean_all", "mean", {}, [("x", randn(3, 4, 2))], lambda x: x.mean())[0])
add(fwd("max_all", "max", {}, [("x", randn(3, 4))], lambda x: x.max())[0])
add(fwd("min_all", "min", {}, [("x", randn(3, 4))], lambda x: x.min())[0])
add(fwd("norm_all", "norm", {}, [("x", randn(3, 4))], lambda x: x.norm())[0])
add(fwd("mean_dims_hw", "mean_dims", {"dims": [2, 3], "keepdim": False},
        [("x", randn(2, 3, 4, 5))], lambda x: x.mean((2, 3)))[0])
add(fwd("mean_dims_keep", "mean_dims", {"dims": [0, 2], "keepdim": True},
        [("x", randn(2, 3, 4))], lambda x: x.mean((0, 2), keepdim=True))[0])
add(fwd("sum_dims_1", "sum_dims", {"dims": [1], "keepdim": False}, [("x", randn(3, 4, 2))],
        lambda x: x.sum(1))[0])
add(fwd("sum_dims_keep", "sum_dims", {"dims": [-1], "keepdim": True}, [("x", randn(3, 4))],
        lambda x: x.sum(-1, keepdim=True))[0])
add(fwd("max_dim1", "max_dim", {"dim": 1, "keepdim": False}, [("x", randn(3, 5))],
        lambda x: x.max(1)[0])[0])

# ---- fused MetaNAS node (mt_mixed_node, no drop-path) --------------------------------------
def mixed_node_case(name, n_in, K, active, inc, shape=(2, 3, 4, 4)):
    """active: (input, op) pairs of the node's active ops; inc: [P][n_in] incidence of the
    active input pairs (None: plain DARTS sum without pair weights)."""
    outs = [("o%d" % m, randn(*shape)) for m in range(len(active))]
    inputs = outs + [("wops", torch.softmax(randn(n_in, K), -1))]
    if inc is not None:
        inputs.append(("wpair", torch.softmax(randn(len(inc)), -1)))
    idx = [i * K + k for i, k in active]
    params = {"n_in": n_in, "idx": idx, "inc": [float(v) for row in (inc or []) for v in row]}

    def f(wops, wpair=None, **o):
        coef = wops
        if wpair is not None:
            c = wpair @ torch.tensor(inc, dtype=torch.float32)  # [n_in]
            coef = wops * c.unsqueeze(1)
        flat_coef = coef.reshape(-1)
        return sum(flat_coef[j] * o["o%d" % m] for m, j in enumerate(idx))

    add(fwd(name, "mixed_node", params, inputs, f)[0])


mixed_node_case("mixed_node_darts", 3, 4, [(0, 1), (1, 3), (2, 0), (0, 2)], None)
mixed_node_case("mixed_node_pairs", 3, 2, [(0, 0), (1, 1), (2, 1)], [[1, 1, 0], [0, 1, 1], [1, 0, 1]])
mixed_node_case("mixed_node_single", 2, 3, [(1, 2)], None)

# ---- gradient clipping -----------------------------------------------------------------------
for max_norm in (1.0, 100.0):
    p0, p1 = randn(3, 4), randn(5)
    g0, g1 = randn(3, 4) * 2, randn(5) * 2
    q0, q1 = p0.clone().requires_grad_(True), p1.clone().requires_grad_(True)
    q0.grad, q1.grad = g0.clone(), g1.clone()
    total = torch.nn.utils.clip_grad_norm_([q0, q1], max_norm)
    add({"name": f"clip_grad_norm_{int(max_norm)}", "op": "clip_grad_norm",
         "params": {"max_norm": max_norm},
         "inputs": [dict(enc(p0), name="p0", grad=True), dict(enc(p1), name="p1", grad=True),
                    dict(enc(g0), name="g0", grad=False), dict(enc(g1), name="g1", grad=False)],
         "outputs": [enc(total)], "grads": {},
         "after": {"p0.grad": enc(q0.grad), "p1.grad": enc(q1.grad)}})

# ---- in-place updates and REPTILE ------------------------------------------------------------
def inplace_case(name, op, params, inputs, fn, after):
    live = {n: t.clone() for n, t in inputs}
    with torch.no_grad():
        fn(live)
    add({"name": name, "op": op, "params": params,
         "inputs": [dict(enc(t), name=n, grad=False) for n, t in inputs], "outputs": [],
         "grads": {}, "after": {n: enc(live[n]) for n in after}})


inplace_case("lerp_", "lerp_", {"weight": 0.3}, [("dst", randn(3, 4)), ("end", randn(3, 4))],
             lambda d: d["dst"].lerp_(d["end"], 0.3), ["dst"])
inplace_case("add_", "add_", {"alpha": -0.5}, [("dst", randn(3, 4)), ("src", randn(3, 4))],
             lambda d: d["dst"].add_(d["src"], alpha=-0.5), ["dst"])
inplace_case("mul_scalar_", "mul_scalar_", {"scalar": 0.25}, [("dst", randn(3, 4))],
             lambda d: d["dst"].mul_(0.25), ["dst"])
inplace_case("fill_", "fill_", {"scalar": -1.25}, [("dst", randn(2, 3))],
             lambda d: d["dst"].fill_(-1.25), ["dst"])
inplace_case("copy_", "copy_", {}, [("dst", randn(2, 3)), ("src", randn(2, 3))],
             lambda d: d["dst"].copy_(d["src"]), ["dst"])
inplace_case("foreach_lerp", "foreach_lerp", {"weight": 0.7},
             [("dst0", randn(3, 4)), ("dst1", randn(5)), ("end0", randn(3, 4)), ("end1", randn(5))],
             lambda d: [d["dst0"].lerp_(d["end0"], 0.7), d["dst1"].lerp_(d["end1"], 0.7)],
             ["dst0", "dst1"])
inplace_case("foreach_add", "foreach_add", {"alpha": 2.0},
             [("dst0", randn(3, 4)), ("dst1", randn(5)), ("src0", randn(3, 4)), ("src1", randn(5))],
             lambda d: [d["dst0"].add_(d["src0"], alpha=2.0), d["dst1"].add_(d["src1"], alpha=2.0)],
             ["dst0", "dst1"])
inplace_case("foreach_mul_scalar", "foreach_mul_scalar", {"scalar": -3.0},
             [("dst0", randn(3, 4)), ("dst1", randn(5))],
             lambda d: [d["dst0"].mul_(-3.0), d["dst1"].mul_(-3.0)], ["dst0", "dst1"])


def reptile(d, ntask, lr):
    # meta + lr * (mean(task) - meta), written out as in the REPTILE paper.
    for i in range(2):
        m = torch.stack([d[f"task{k}_{i}"] for k in range(ntask)]).mean(0)
        d[f"meta{i}"].copy_(d[f"meta{i}"] + lr * (m - d[f"meta{i}"]))


for ntask, lr in [(3, 0.25), (1, 1.0), (4, 0.8)]:
    ins = [("meta0", randn(4, 3, 3, 3)), ("meta1", randn(4))]
    for k in range(ntask):
        ins += [(f"task{k}_0", randn(4, 3, 3, 3)), (f"task{k}_1", randn(4))]
    inplace_case(f"foreach_lerp_mean_{ntask}tasks", "foreach_lerp_mean",
                 {"weight": lr, "ntasks": ntask}, ins,
                 lambda d, ntask=ntask, lr=lr: reptile(d, ntask, lr), ["meta0", "meta1"])

# ---- optimizers ------------------------------------------------------------------------------
def optim_case(name, kind, opts, lrs, none_grads=()):
    """Runs len(lrs) steps; at step i the learning rate is lrs[i]; the parameters' gradients
    are fixed random tensors, except p1's at the steps listed in none_grads (None: skipped)."""
    p0, p1 = randn(3, 4), randn(5)
    q = [p0.clone().requires_grad_(True), p1.clone().requires_grad_(True)]
    if kind == "adam":
        opt = torch.optim.Adam(q, lr=lrs[0], betas=tuple(opts["betas"]), eps=opts["eps"],
                               weight_decay=opts["weight_decay"])
    else:
        opt = torch.optim.SGD(q, lr=lrs[0], momentum=opts["momentum"],
                              dampening=opts["dampening"], weight_decay=opts["weight_decay"],
                              nesterov=opts["nesterov"])
    steps = []
    for i, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        grads = {"p0": randn(3, 4), "p1": None if i in none_grads else randn(5) * 0.1}
        q[0].grad = grads["p0"].clone()
        q[1].grad = None if grads["p1"] is None else grads["p1"].clone()
        opt.step()
        steps.append({"lr": lr, "grads": {k: (None if v is None else enc(v)) for k, v in grads.items()},
                      "params": {"p0": enc(q[0]), "p1": enc(q[1])}})
    state = {}
    for n, p in zip(["p0", "p1"], q):
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.dim() > 0:
                state[f"{n}.{k}"] = enc(v)
    add({"name": name, "op": kind, "params": opts,
         "inputs": [dict(enc(p0), name="p0", grad=True), dict(enc(p1), name="p1", grad=True)],
         "outputs": [], "grads": {}, "steps": steps, "state": state})


lrs = [0.01, 0.01, 0.003, 0.003, 0.003]
optim_case("adam_b0_wd", "adam", {"betas": [0.0, 0.999], "eps": 1e-8, "weight_decay": 0.001}, lrs)
optim_case("adam_b09_wd", "adam", {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.001},
           lrs, none_grads=(2,))
optim_case("adam_b09_nowd", "adam", {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
           [0.1, 0.05, 0.05])
optim_case("sgd_momentum", "sgd", {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.001,
                                   "nesterov": False}, [0.1, 0.1, 0.05, 0.05], none_grads=(1,))
optim_case("sgd_nesterov", "sgd", {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
                                   "nesterov": True}, [0.1, 0.05, 0.05])
optim_case("sgd_plain", "sgd", {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                                "nesterov": False}, [0.5, 0.5])

# Added after the others so that their seeded inputs stay as they were.
# A fused node over samples of 715 values: the CPU kernel's blocks of 256 and lanes of 8 with
# remainders.
mixed_node_case("mixed_node_large", 3, 3, [(0, 0), (1, 2), (2, 1), (0, 2)], [[1, 1, 0], [0, 1, 1]],
                shape=(3, 5, 11, 13))
# Batch norm over planes of 323 values (the CPU kernel's blocks and lanes with remainders).
bn_case("batch_norm_train_affine_large", True, True, True, shape=(5, 6, 17, 19))
bn_case("batch_norm_train_noaffine_large", True, False, True, shape=(3, 4, 16, 16), momentum=0.3)
# Depthwise convolutions without bias (the CPU kernel's cases): stride 2 on odd and even
# sizes, a 5x3 kernel with asymmetric padding, no padding with mixed strides, dilation 3, and
# a 28x28 plane (rows longer than the vector width).
conv_case("conv2d_dw3_s2_p1_7", randn(2, 4, 7, 7), randn(4, 1, 3, 3), None, stride=(2, 2),
          padding=(1, 1), groups=4)
conv_case("conv2d_dw3_s2_p1_8", randn(2, 3, 8, 8), randn(3, 1, 3, 3), None, stride=(2, 2),
          padding=(1, 1), groups=3)
conv_case("conv2d_dw5x3_p21", randn(2, 4, 9, 6), randn(4, 1, 5, 3), None, padding=(2, 1),
          groups=4)
conv_case("conv2d_dw3_p0_s12", randn(3, 2, 7, 9), randn(2, 1, 3, 3), None, stride=(1, 2),
          groups=2)
conv_case("conv2d_dw3_dil3_p3", randn(2, 3, 10, 11), randn(3, 1, 3, 3), None, padding=(3, 3),
          dilation=(3, 3), groups=3)
conv_case("conv2d_dw3_p1_28", randn(2, 3, 28, 28), randn(3, 1, 3, 3), None, padding=(1, 1),
          groups=3)
# Dense stride-1 "same" convolutions without bias (the CPU kernel's cases): output channels
# not a multiple of the kernel's blocks, planes whose positions end in a partial vector,
# 1x5 rows (flat padded rows), a 5x1 on a 28x28 plane, one input channel (the stem), and
# a batch whose weight gradient is summed over several runs of images.
conv_case("conv2d_dense1x1_c5o7", randn(2, 5, 9, 10), randn(7, 5, 1, 1), None)
conv_case("conv2d_dense1x5_p02", randn(3, 6, 8, 14), randn(5, 6, 1, 5), None, padding=(0, 2))
conv_case("conv2d_dense5x1_p20_28", randn(2, 3, 28, 28), randn(4, 3, 5, 1), None, padding=(2, 0))
conv_case("conv2d_dense3x3_p1_c1o6", randn(2, 1, 12, 11), randn(6, 1, 3, 3), None, padding=(1, 1))
conv_case("conv2d_dense3x3_p1_n20", randn(20, 4, 16, 16), randn(5, 4, 3, 3), None, padding=(1, 1))
# Strided 1x1 convolutions without bias (FactorizedReduce): the 1x1 kernel on the sub-grid.
conv_case("conv2d_dense1x1_s2_7", randn(2, 5, 7, 7), randn(3, 5, 1, 1), None, stride=(2, 2))
conv_case("conv2d_dense1x1_s12", randn(2, 4, 6, 9), randn(5, 4, 1, 1), None, stride=(1, 2))

# ---- files written by Python's torch.save ----------------------------------------------------
# Values are simple closed forms the Go test recomputes: w[i] = i*0.5 - 1 (shape 3x4),
# wt = w.t() (saved as a non-contiguous view), steps = arange(5) as int64, flag = bool mask.
w = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1
state = collections.OrderedDict()
state["layer.weight"] = w
state["layer.weight_t"] = w.t()
state["layer.bias"] = torch.arange(4, dtype=torch.float64) / 4
state["steps"] = torch.arange(5)
state["mask"] = torch.arange(6) % 2 == 0
nested = {"model": state, "epoch": 7, "lr": 0.125, "name": "metanas"}
torch.save(state, os.path.join(HERE, "py_state_zip.pt"))
torch.save(state, os.path.join(HERE, "py_state_legacy.pt"), _use_new_zipfile_serialization=False)
torch.save(nested, os.path.join(HERE, "py_nested.pt"))

with open(os.path.join(HERE, "golden.json"), "w") as f:
    json.dump({"generator": "torch/testdata/gen_golden.py", "torch_version": torch.__version__,
               "cases": cases}, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {len(cases)} cases")
