#!/usr/bin/env python3
"""metanas_ref: the project's own small PyTorch implementation of the MetaNAS networks.

It is the parity oracle for the Go port's tests: it builds the one-shot search network
(with its alphas), the discrete network of a genotype and the REPTILE 4-block CNN baseline,
and runs them on tensors written by another program.  Written from the op definitions in
shared/reference/FACTS.md; state_dict key names of the search network reproduce the
reference implementation's (see shared/reference/searchcnn_state_dict_omniglot_20way.tsv).

Usage (see README.md in this folder):
    python3 metanas_ref.py keys     --spec SPEC.json
    python3 metanas_ref.py init     --spec SPEC.json --seed N --out STATE.pt [--alpha-std S] [--bn-random]
    python3 metanas_ref.py forward  --spec SPEC.json --state STATE.pt --input X.pt --out OUT.pt
    python3 metanas_ref.py selfcheck

Needs only torch (1.13 tested) and the Python standard library.
"""

import argparse
import ast
import contextlib
import io
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
TSV_NAME = "searchcnn_state_dict_omniglot_20way.tsv"


def find_ref_tsv(explicit=None):
    """The reference key list: --tsv, $METANAS_REF_DIR, <repo>/shared/reference or
    <repo>/../shared/reference (first that exists)."""
    cands = []
    if explicit:
        cands.append(explicit)
    if os.environ.get("METANAS_REF_DIR"):
        cands.append(os.path.join(os.environ["METANAS_REF_DIR"], TSV_NAME))
    repo = os.path.normpath(os.path.join(HERE, "..", ".."))
    cands.append(os.path.join(repo, "shared", "reference", TSV_NAME))
    cands.append(os.path.join(repo, "..", "shared", "reference", TSV_NAME))
    for p in cands:
        if os.path.exists(p):
            return os.path.normpath(p)
    return None

# ---------------------------------------------------------------------------------------------
# Primitive sets (FACTS.md order; index = column of an alpha row)
# ---------------------------------------------------------------------------------------------

PRIMITIVES = {
    "few_shot": ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1",
                 "conv_3x3", "sep_conv_3x3", "dil_conv_3x3"],
    "darts": ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "none"],
}

# BatchNorm hyper-parameters: PyTorch defaults.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def bn(C, affine):
    return nn.BatchNorm2d(C, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)


# ---------------------------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------------------------

class DropPath(nn.Module):
    """Per-sample drop path: x * Bernoulli(keep) mask / keep, in training mode with p > 0 only."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.training and self.p > 0.0:
            keep = 1.0 - self.p
            mask = torch.empty(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
            return x / keep * mask
        return x


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """DARTS 'none': zeros (x * 0), subsampled by the stride."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x * 0.0
        return x[:, :, ::self.stride, ::self.stride] * 0.0


class PoolBN(nn.Module):
    """MaxPool2d(3, s, 1) or AvgPool2d(3, s, 1, count_include_pad=False), then BN. Keys: bn.*"""

    def __init__(self, kind, C, stride, affine):
        super().__init__()
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride, 1)
        else:
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        self.bn = bn(C, affine)

    def forward(self, x):
        return self.bn(self.pool(x))


class StdConv(nn.Module):
    """ReLU, 1x1 conv (no bias), BN.  Keys: net.1.weight, net.2.*"""

    def __init__(self, C_in, C_out, affine):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(C_in, C_out, 1, 1, 0, bias=False),
            bn(C_out, affine))

    def forward(self, x):
        return self.net(x)


class DilConv(nn.Module):
    """ReLU, depthwise kxk conv (groups=C_in, stride, padding, dilation), pointwise 1x1, BN.
    conv_3x3 = DilConv(3, pad 1, dil 1); dil_conv_3x3 = DilConv(3, pad 2, dil 2);
    dil_conv_5x5 = DilConv(5, pad 4, dil 2).  Keys: net.1.weight, net.2.weight, net.3.*"""

    def __init__(self, C_in, C_out, k, stride, padding, dilation, affine):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(C_in, C_in, k, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, 1, 0, bias=False),
            bn(C_out, affine))

    def forward(self, x):
        return self.net(x)


class SepConv(nn.Module):
    """Two DilConv(dilation 1) blocks, the second at stride 1.  Keys: net.0.net.*, net.1.net.*"""

    def __init__(self, C_in, C_out, k, stride, padding, affine):
        super().__init__()
        self.net = nn.Sequential(
            DilConv(C_in, C_in, k, stride, padding, 1, affine),
            DilConv(C_in, C_out, k, 1, padding, 1, affine))

    def forward(self, x):
        return self.net(x)


class FacConv(nn.Module):
    """ReLU, conv (1,k) stride s pad (0,k//2), conv (k,1) stride 1 pad (k//2,0), BN (no biases).
    Keys: net.1.weight [C,C,1,k], net.2.weight [C,C,k,1], net.3.*"""

    def __init__(self, C_in, C_out, k, stride, padding, affine):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(C_in, C_out, (1, k), stride, (0, padding), bias=False),
            nn.Conv2d(C_out, C_out, (k, 1), 1, (padding, 0), bias=False),
            bn(C_out, affine))

    def forward(self, x):
        return self.net(x)


class FactorizedReduce(nn.Module):
    """ReLU; two 1x1 stride-2 convs with C_out/2 outputs each, the second on x[:, :, 1:, 1:];
    concat on channels; BN.  The one-pixel shift is applied per spatial dimension only where
    that dimension is even (for an odd size the second conv sees the unshifted input, otherwise
    the two halves would differ in size).  Keys: conv1.weight, conv2.weight, bn.*"""

    def __init__(self, C_in, C_out, affine):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even C_out"
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.conv2 = nn.Conv2d(C_in, C_out // 2, 1, 2, 0, bias=False)
        self.bn = bn(C_out, affine)

    def forward(self, x):
        x = self.relu(x)
        dh = 1 if x.size(2) % 2 == 0 else 0
        dw = 1 if x.size(3) % 2 == 0 else 0
        out = torch.cat([self.conv1(x), self.conv2(x[:, :, dh:, dw:])], dim=1)
        return self.bn(out)


def make_op(name, C, stride, affine):
    if name == "max_pool_3x3":
        return PoolBN("max", C, stride, affine)
    if name == "avg_pool_3x3":
        return PoolBN("avg", C, stride, affine)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(C, C, affine)
    if name == "conv_3x3":
        return DilConv(C, C, 3, stride, 1, 1, affine)
    if name == "dil_conv_3x3":
        return DilConv(C, C, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(C, C, 5, stride, 4, 2, affine)
    if name == "sep_conv_3x3":
        return SepConv(C, C, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(C, C, 5, stride, 2, affine)
    if name == "conv_1x5_5x1":
        return FacConv(C, C, 5, stride, 2, affine)
    if name == "none":
        return Zero(stride)
    raise ValueError(f"unknown op {name!r}")


def make_wrapped_op(name, C, stride, affine):
    """Every non-identity op is followed by DropPath: Sequential(op, DropPath) -> keys '0.*'.
    The identity (skip_connect at stride 1) stands alone and has no keys."""
    op = make_op(name, C, stride, affine)
    if isinstance(op, Identity):
        return op
    return nn.Sequential(op, DropPath())


def out_hw(h, w, stride):
    """Spatial size after any op at the given stride (all ops agree: ceil(h / stride))."""
    return (h + stride - 1) // stride, (w + stride - 1) // stride


# ---------------------------------------------------------------------------------------------
# Search (one-shot) network
# ---------------------------------------------------------------------------------------------

class MixedOp(nn.Module):
    """sum over ops (in primitive order) of w_op * op(x), skipping ops with w_op <= threshold."""

    def __init__(self, C, stride, primitives):
        super().__init__()
        self.stride = stride
        self.C = C
        self._ops = nn.ModuleList([make_wrapped_op(p, C, stride, False) for p in primitives])

    def forward(self, x, weights, threshold):
        out = None
        for w, op in zip(weights, self._ops):
            if bool(w > threshold):  # compared in w's dtype, like the reference
                t = w * op(x)
                out = t if out is None else out + t
        if out is None:  # every op pruned: the edge contributes zeros
            h, w_ = out_hw(x.size(2), x.size(3), self.stride)
            out = x.new_zeros(x.size(0), self.C, h, w_)
        return out


PAIR_ORDERS = ("lex", "colex")


def input_pairs(n_inputs, order="lex"):
    """Input pairs (i, j), i < j, in alpha_pw order.
    'lex' (default; the reference's order: outer loop over i, inner over j > i):
        (0,1),(0,2),(0,3),(1,2),(1,3),(2,3),...
    'colex' (outer loop over j, inner over i < j):
        (0,1),(0,2),(1,2),(0,3),(1,3),(2,3),...
    The two agree for nodes with 2 or 3 inputs (nodes 0 and 1) and differ from 4 inputs on."""
    if order == "lex":
        return [(i, j) for i in range(n_inputs) for j in range(i + 1, n_inputs)]
    if order == "colex":
        return [(i, j) for j in range(1, n_inputs) for i in range(j)]
    raise ValueError(f"bad pair order {order!r}")


class SearchCell(nn.Module):
    def __init__(self, n_nodes, C_pp, C_p, C, reduction_p, reduction, primitives, use_pairwise,
                 pair_order="lex"):
        super().__init__()
        self.reduction = reduction
        self.n_nodes = n_nodes
        self.use_pairwise = use_pairwise
        self.pair_order = pair_order
        if reduction_p:
            self.preproc0 = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preproc0 = StdConv(C_pp, C, affine=False)
        self.preproc1 = StdConv(C_p, C, affine=False)
        self.dag = nn.ModuleList()
        for i in range(n_nodes):
            edges = nn.ModuleList()
            for j in range(i + 2):
                stride = 2 if reduction and j < 2 else 1
                edges.append(MixedOp(C, stride, primitives))
            self.dag.append(edges)

    def forward(self, s0, s1, w_ops, w_pw, threshold):
        states = [self.preproc0(s0), self.preproc1(s1)]
        for i, edges in enumerate(self.dag):
            # every edge is computed once, in input order, whether or not its pairs are pruned
            unary = [edges[j](states[j], w_ops[i][j], threshold) for j in range(len(edges))]
            if self.use_pairwise:
                node = None
                pairs = input_pairs(len(unary), self.pair_order)
                assert len(pairs) == w_pw[i].numel()
                for k, (a, b) in enumerate(pairs):
                    wk = w_pw[i][k]
                    if bool(wk > threshold):
                        t = (unary[a] + unary[b]) * wk
                        node = t if node is None else node + t
                if node is None:  # every pair pruned
                    node = torch.zeros_like(unary[0])
            else:
                node = unary[0]
                for u in unary[1:]:
                    node = node + u
            states.append(node)
        return torch.cat(states[2:], dim=1)


def stem_module(C_in, C_stem):
    return nn.Sequential(nn.Conv2d(C_in, C_stem, 3, 1, 1, bias=False), bn(C_stem, True))


class SearchCNN(nn.Module):
    def __init__(self, C_in, C, n_classes, n_layers, n_nodes, reductions, stem_multiplier,
                 primitives, feature_scale_rate, use_pairwise, pair_order="lex"):
        super().__init__()
        C_cur = stem_multiplier * C
        self.stem = stem_module(C_in, C_cur)
        C_pp, C_p, C_cur = C_cur, C_cur, C
        self.cells = nn.ModuleList()
        reduction_p = False
        for i in range(n_layers):
            reduction = i in reductions
            if reduction:
                C_cur *= feature_scale_rate
            cell = SearchCell(n_nodes, C_pp, C_p, C_cur, reduction_p, reduction, primitives,
                              use_pairwise, pair_order)
            self.cells.append(cell)
            reduction_p = reduction
            C_pp, C_p = C_p, C_cur * n_nodes
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(C_p, n_classes)

    def forward(self, x, w_normal, w_reduce, pw_normal, pw_reduce, threshold):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w = w_reduce if cell.reduction else w_normal
            pw = pw_reduce if cell.reduction else pw_normal
            s0, s1 = s1, cell(s0, s1, w, pw, threshold)
        out = self.gap(s1).flatten(1)
        return self.linear(out)


class SearchController(nn.Module):
    """Alphas + the one-shot network under 'net.' (state_dict layout of the reference)."""

    def __init__(self, C_in, C, n_classes, n_layers, n_nodes, reductions, stem_multiplier,
                 primitives, feature_scale_rate, use_pairwise, temperature, prune_threshold,
                 pair_order="lex"):
        super().__init__()
        n_ops = len(primitives)
        self.temperature = temperature
        self.prune_threshold = prune_threshold
        self.use_pairwise = use_pairwise
        self.pair_order = pair_order
        self.alpha_normal = nn.ParameterList(
            [nn.Parameter(1e-3 * torch.randn(i + 2, n_ops)) for i in range(n_nodes)])
        self.alpha_reduce = nn.ParameterList(
            [nn.Parameter(1e-3 * torch.randn(i + 2, n_ops)) for i in range(n_nodes)])
        if use_pairwise:
            self.alpha_pw_normal = nn.ParameterList(
                [nn.Parameter(1e-3 * torch.randn(math.comb(i + 2, 2))) for i in range(n_nodes)])
            self.alpha_pw_reduce = nn.ParameterList(
                [nn.Parameter(1e-3 * torch.randn(math.comb(i + 2, 2))) for i in range(n_nodes)])
        else:
            self.alpha_pw_normal = None
            self.alpha_pw_reduce = None
        self.net = SearchCNN(C_in, C, n_classes, n_layers, n_nodes, reductions, stem_multiplier,
                             primitives, feature_scale_rate, use_pairwise, pair_order)

    def normalize(self, alpha):
        return F.softmax(alpha / self.temperature, dim=-1)

    def named_alphas(self):
        return [(n, p) for n, p in self.named_parameters() if n.startswith("alpha")]

    def named_weights(self):
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("alpha")]

    def forward(self, x):
        w_normal = [self.normalize(a) for a in self.alpha_normal]
        w_reduce = [self.normalize(a) for a in self.alpha_reduce]
        pw_normal = pw_reduce = None
        if self.use_pairwise:
            pw_normal = [self.normalize(a) for a in self.alpha_pw_normal]
            pw_reduce = [self.normalize(a) for a in self.alpha_pw_reduce]
        return self.net(x, w_normal, w_reduce, pw_normal, pw_reduce, self.prune_threshold)


# ---------------------------------------------------------------------------------------------
# Genotypes and the discrete network
# ---------------------------------------------------------------------------------------------

class Genotype:
    def __init__(self, normal, normal_concat, reduce, reduce_concat):
        self.normal = normal
        self.normal_concat = list(normal_concat)
        self.reduce = reduce
        self.reduce_concat = list(reduce_concat)

    def __repr__(self):
        def cell(g):
            return "[" + ", ".join(
                "[" + ", ".join(f"({op!r}, {i})" for op, i in node) + "]" for node in g) + "]"

        def rng(c):
            if c and c == list(range(c[0], c[-1] + 1)):
                return f"range({c[0]}, {c[-1] + 1})"
            return repr(c)
        return (f"Genotype(normal={cell(self.normal)}, normal_concat={rng(self.normal_concat)}, "
                f"reduce={cell(self.reduce)}, reduce_concat={rng(self.reduce_concat)})")


def _lit(node):
    """Restricted literal evaluation: lists, tuples, str, int, range(a[, b[, c]]), list(...)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_lit(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_lit(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [_lit(a) for a in node.args]
        if node.func.id == "range":
            return list(range(*args))
        if node.func.id == "list" and len(args) == 1:
            return list(args[0])
    raise ValueError(f"unsupported genotype syntax: {ast.dump(node)}")


def parse_genotype(text):
    """Parse the reference string format
    Genotype(normal=[[('op', input), ...], ...], normal_concat=range(2, 5), reduce=[...],
             reduce_concat=range(2, 5))
    Edges may be tuples or 2-lists.  Missing concat -> range(2, 2 + number of nodes)."""
    tree = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)
            and tree.func.id == "Genotype"):
        raise ValueError("genotype must be a Genotype(...) call")
    fields = {}
    names = ["normal", "normal_concat", "reduce", "reduce_concat"]
    for i, a in enumerate(tree.args):
        fields[names[i]] = _lit(a)
    for kw in tree.keywords:
        if kw.arg not in names:
            raise ValueError(f"unknown Genotype field {kw.arg!r}")
        fields[kw.arg] = _lit(kw.value)

    def cell(g, what):
        if not isinstance(g, list) or not g:
            raise ValueError(f"{what}: expected a non-empty list of nodes")
        out = []
        for n, node in enumerate(g):
            edges = []
            for e in node:
                if len(e) != 2 or not isinstance(e[0], str) or not isinstance(e[1], int):
                    raise ValueError(f"{what} node {n}: bad edge {e!r}")
                if not 0 <= e[1] < n + 2:
                    raise ValueError(f"{what} node {n}: input {e[1]} out of range")
                edges.append((e[0], e[1]))
            if not edges:
                raise ValueError(f"{what} node {n}: no edges")
            out.append(edges)
        return out

    normal = cell(fields["normal"], "normal")
    reduce = cell(fields["reduce"], "reduce")
    nc = fields.get("normal_concat", list(range(2, 2 + len(normal))))
    rc = fields.get("reduce_concat", list(range(2, 2 + len(reduce))))
    return Genotype(normal, nc, reduce, rc)


GENOTYPES = {
    "metanas_og_v2": "Genotype(normal=[[('dil_conv_3x3', 0), ('sep_conv_3x3', 1)], "
                     "[('avg_pool_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), "
                     "('conv_3x3', 2)]], normal_concat=range(2, 5), reduce=[[('skip_connect', 0), "
                     "('sep_conv_3x3', 1)], [('conv_3x3', 0), ('dil_conv_3x3', 1)], "
                     "[('dil_conv_3x3', 0), ('conv_1x5_5x1', 2)]], reduce_concat=range(2, 5))",
    "metanas_in_v2": "Genotype(normal=[[('conv_1x5_5x1', 0), ('conv_3x3', 1)], [('conv_3x3', 0), "
                     "('sep_conv_3x3', 2)], [('dil_conv_3x3', 1), ('conv_1x5_5x1', 3)]], "
                     "normal_concat=range(2, 5), reduce=[[('sep_conv_3x3', 0), ('conv_3x3', 1)], "
                     "[('conv_3x3', 0), ('sep_conv_3x3', 2)], [('conv_3x3', 0), "
                     "('dil_conv_3x3', 1)]], reduce_concat=range(2, 5))",
    "auto_meta": "Genotype(normal=[[('conv_3x3', 1), ('max_pool_3x3', 1)], [('conv_1x5_5x1', 2), "
                 "('max_pool_3x3', 2)], [('conv_3x3', 2), ('conv_1x5_5x1', 3)], [('conv_3x3', 3), "
                 "('conv_3x3', 3)], [('conv_1x5_5x1', 3), ('conv_3x3', 2)]], "
                 "normal_concat=range(2, 7), reduce=[[('conv_3x3', 1), ('max_pool_3x3', 1)], "
                 "[('conv_1x5_5x1', 2), ('max_pool_3x3', 2)], [('conv_3x3', 2), "
                 "('conv_1x5_5x1', 3)], [('conv_3x3', 3), ('conv_3x3', 3)], "
                 "[('conv_1x5_5x1', 3), ('conv_3x3', 2)]], reduce_concat=range(2, 7))",
}


def resolve_genotype(g):
    if isinstance(g, str) and g in GENOTYPES:
        g = GENOTYPES[g]
    return parse_genotype(g)


class DiscreteCell(nn.Module):
    """Keys: preproc0.*, preproc1.*, dag.{node}.{edge}.0.<op keys>  (edge = position of the
    (op, input) pair in the genotype's node list; identity edges have no keys)."""

    def __init__(self, gene, concat, C_pp, C_p, C, reduction_p, reduction, affine):
        super().__init__()
        self.reduction = reduction
        self.concat = list(concat)
        if reduction_p:
            self.preproc0 = FactorizedReduce(C_pp, C, affine)
        else:
            self.preproc0 = StdConv(C_pp, C, affine)
        self.preproc1 = StdConv(C_p, C, affine)
        self.inputs = []
        self.dag = nn.ModuleList()
        for node in gene:
            edges = nn.ModuleList()
            idx = []
            for op_name, inp in node:
                stride = 2 if reduction and inp < 2 else 1
                edges.append(make_wrapped_op(op_name, C, stride, affine))
                idx.append(inp)
            self.dag.append(edges)
            self.inputs.append(idx)
        n_states = 2 + len(gene)
        for c in self.concat:
            if not 0 <= c < n_states:
                raise ValueError(f"concat index {c} out of range (cell has {n_states} states)")

    def forward(self, s0, s1):
        states = [self.preproc0(s0), self.preproc1(s1)]
        for edges, idx in zip(self.dag, self.inputs):
            node = edges[0](states[idx[0]])
            for op, i in zip(list(edges)[1:], idx[1:]):
                node = node + op(states[i])
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DiscreteCNN(nn.Module):
    """Keys: stem.0.weight, stem.1.*, cells.{c}.<DiscreteCell keys>, linear.weight, linear.bias.
    (No 'net.' prefix and no alphas.)"""

    def __init__(self, C_in, C, n_classes, n_layers, reductions, stem_multiplier, genotype,
                 feature_scale_rate, affine):
        super().__init__()
        C_cur = stem_multiplier * C
        self.stem = stem_module(C_in, C_cur)
        C_pp, C_p, C_cur = C_cur, C_cur, C
        self.cells = nn.ModuleList()
        reduction_p = False
        for i in range(n_layers):
            reduction = i in reductions
            if reduction:
                C_cur *= feature_scale_rate
                gene, concat = genotype.reduce, genotype.reduce_concat
            else:
                gene, concat = genotype.normal, genotype.normal_concat
            cell = DiscreteCell(gene, concat, C_pp, C_p, C_cur, reduction_p, reduction, affine)
            self.cells.append(cell)
            reduction_p = reduction
            C_pp, C_p = C_p, C_cur * len(concat)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(C_p, n_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.linear(self.gap(s1).flatten(1))


# ---------------------------------------------------------------------------------------------
# REPTILE baseline CNN
# ---------------------------------------------------------------------------------------------

class ReptileCNN(nn.Module):
    """4 x [conv3x3 pad 1 (with bias), BN (affine), ReLU, MaxPool2d(2, 2)], flatten, linear.
    Keys: conv{1..4}.0.{weight,bias}, conv{1..4}.1.{weight,bias,running_mean,running_var,
    num_batches_tracked}, logits.{weight,bias}."""

    def __init__(self, C_in, channels, n_classes, size):
        super().__init__()

        def block(cin):
            return nn.Sequential(nn.Conv2d(cin, channels, 3, 1, 1, bias=True), bn(channels, True),
                                 nn.ReLU(), nn.MaxPool2d(2, 2))
        self.conv1 = block(C_in)
        self.conv2 = block(channels)
        self.conv3 = block(channels)
        self.conv4 = block(channels)
        s = size
        for _ in range(4):
            s //= 2
        if s < 1:
            raise ValueError(f"input size {size} too small for 4 max-pools")
        self.final_size = s
        self.logits = nn.Linear(channels * s * s, n_classes)

    def forward(self, x):
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.logits(x.flatten(1))  # (N, C*H*W), channel-major as x.view(N, -1)


# ---------------------------------------------------------------------------------------------
# Spec handling
# ---------------------------------------------------------------------------------------------

DEFAULT_SPEC = {
    "kind": "search",
    "in_channels": 1,
    "size": 28,
    "classes": 20,
    "channels": 28,
    "layers": 4,
    "nodes": 3,
    "reductions": [1, 3],
    "stem_multiplier": 3,
    "feature_scale_rate": 1,
    "primitives": "few_shot",
    "use_pairwise": True,
    "pair_order": "lex",
    "temperature": 1.0,
    "prune_threshold": 0.01,
    "genotype": "metanas_og_v2",
    "affine": None,        # None: False for kind=search (not used there), True for kind=discrete
    "bn": "eval",
    "cnn_channels": 64,
}


def full_spec(spec):
    unknown = set(spec) - set(DEFAULT_SPEC)
    if unknown:
        raise ValueError(f"unknown spec fields: {sorted(unknown)}")
    s = dict(DEFAULT_SPEC)
    s.update(spec)
    if s["reductions"] is None:
        s["reductions"] = [s["layers"] // 3, (2 * s["layers"]) // 3]
    if s["kind"] not in ("search", "discrete", "cnn"):
        raise ValueError(f"bad kind {s['kind']!r}")
    if s["pair_order"] not in PAIR_ORDERS:
        raise ValueError(f"bad pair_order {s['pair_order']!r}")
    if s["bn"] not in ("eval", "train"):
        raise ValueError(f"bad bn mode {s['bn']!r}")
    if isinstance(s["primitives"], str):
        if s["primitives"] not in PRIMITIVES:
            raise ValueError(f"bad primitives {s['primitives']!r}")
    if s["affine"] is None:
        s["affine"] = s["kind"] == "discrete"
    if s["kind"] == "search" and s["affine"]:
        raise ValueError("search cells always use affine=False BN; drop 'affine' from the spec")
    return s


def primitive_list(s):
    p = s["primitives"]
    return list(PRIMITIVES[p]) if isinstance(p, str) else list(p)


def build(spec):
    s = full_spec(spec)
    if s["kind"] == "search":
        return SearchController(s["in_channels"], s["channels"], s["classes"], s["layers"],
                                s["nodes"], list(s["reductions"]), s["stem_multiplier"],
                                primitive_list(s), s["feature_scale_rate"], bool(s["use_pairwise"]),
                                float(s["temperature"]), float(s["prune_threshold"]),
                                s["pair_order"])
    if s["kind"] == "discrete":
        return DiscreteCNN(s["in_channels"], s["channels"], s["classes"], s["layers"],
                           list(s["reductions"]), s["stem_multiplier"],
                           resolve_genotype(s["genotype"]), s["feature_scale_rate"],
                           bool(s["affine"]))
    return ReptileCNN(s["in_channels"], s["cnn_channels"], s["classes"], s["size"])


def counts(model):
    alphas = sum(p.numel() for n, p in model.named_parameters() if n.startswith("alpha"))
    weights = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("alpha"))
    buffers = sum(b.numel() for b in model.buffers())
    return weights, alphas, buffers


def set_mode(model, bn_mode):
    """'eval': model.eval().  'train': training-mode BN (batch statistics, running stats
    updated) with drop path off (p = 0)."""
    for m in model.modules():
        if isinstance(m, DropPath):
            m.p = 0.0
    if bn_mode == "eval":
        model.eval()
    else:
        model.train()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def load_spec(path):
    with open(path) as f:
        return json.load(f)


def tensor_dict(obj, what):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SystemExit(f"{what}: expected a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise SystemExit(f"{what}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out


def save(obj, path, legacy):
    if legacy:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)


def check_and_load(model, state):
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [(k, list(state[k].shape), list(own[k].shape))
                 for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        msg = ["state does not match the network:"]
        if missing:
            msg.append(f"  missing keys ({len(missing)}):")
            msg += [f"    {k} {list(own[k].shape)}" for k in missing]
        if unexpected:
            msg.append(f"  unexpected keys ({len(unexpected)}):")
            msg += [f"    {k} {list(state[k].shape)}" for k in unexpected]
        if bad_shape:
            msg.append(f"  shape mismatches ({len(bad_shape)}): key, given, expected")
            msg += [f"    {k} {g} {e}" for k, g, e in bad_shape]
        print("\n".join(msg), file=sys.stderr)
        raise SystemExit(2)
    model.load_state_dict(state, strict=True)


def cmd_keys(args):
    spec = load_spec(args.spec)
    model = build(spec)
    w, a, b = counts(model)
    sd = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    print(json.dumps({"weights": w, "alphas": a, "buffers": b, "state_dict": sd}))


def cmd_init(args):
    spec = load_spec(args.spec)
    torch.manual_seed(args.seed)
    model = build(spec)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("alpha"):
                p.copy_(torch.randn(p.shape, generator=g) * args.alpha_std)
        if args.bn_random:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                    if m.affine:
                        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save(state, args.out, args.legacy)


def cmd_forward(args):
    spec = load_spec(args.spec)
    s = full_spec(spec)
    model = build(spec)
    xin = tensor_dict(torch.load(args.input, map_location="cpu"), args.input)
    if "x" not in xin:
        raise SystemExit(f"{args.input}: no 'x' entry")
    x = xin["x"]
    if x.dtype == torch.float64:
        model = model.double()
    else:
        x = x.float()
    state = tensor_dict(torch.load(args.state, map_location="cpu"), args.state)
    check_and_load(model, state)
    set_mode(model, s["bn"])
    with torch.no_grad():
        logits = model(x)
    save({"logits": logits.detach().contiguous()}, args.out, args.legacy)
    if args.state_out:
        save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
             args.state_out, args.legacy)


# ---------------------------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------------------------

def read_tsv(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            k, shape = line.split("\t")
            rows.append((k, json.loads(shape)))
    return rows


class Checker:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            self.failed += 1


def naive_search_forward(ctrl, x):
    """Independent re-statement of the search forward (eval mode) for the self-check: node =
    sum over pairs of w_pair * (edge_i(s_i) + edge_j(s_j)), each edge recomputed per pair."""
    T, thr = ctrl.temperature, ctrl.prune_threshold
    net = ctrl.net
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        al = ctrl.alpha_reduce if cell.reduction else ctrl.alpha_normal
        ap = ctrl.alpha_pw_reduce if cell.reduction else ctrl.alpha_pw_normal
        st = [cell.preproc0(s0), cell.preproc1(s1)]
        for i, edges in enumerate(cell.dag):
            w = torch.softmax(al[i] / T, -1)
            wp = torch.softmax(ap[i] / T, -1)

            def edge(j):
                terms = [w[j][k] * op(st[j]) for k, op in enumerate(edges[j]._ops)
                         if w[j][k] > thr]
                return sum(terms)
            if ctrl.pair_order == "lex":
                pairs = [(a, b) for a in range(i + 2) for b in range(a + 1, i + 2)]
            else:
                pairs = [(a, b) for b in range(i + 2) for a in range(b)]
            node = 0
            for k, (a, b) in enumerate(pairs):
                if wp[k] > thr:
                    node = node + wp[k] * (edge(a) + edge(b))
            st.append(node)
        s0, s1 = s1, torch.cat(st[2:], 1)
    return net.linear(net.gap(s1).flatten(1))


def selfcheck(args):
    torch.set_num_threads(1)
    c = Checker()

    # 1. reference key set / shapes / order
    og20 = {}
    m = build(og20)
    sd = [(k, list(v.shape)) for k, v in m.state_dict().items()]
    tsv = find_ref_tsv(args.tsv)
    if tsv:
        ref = read_tsv(tsv)
        c.check(len(ref) == 1229, f"reference TSV has {len(ref)} entries (expect 1229)")
        c.check(set((k, tuple(s)) for k, s in sd) == set((k, tuple(s)) for k, s in ref),
                f"search state_dict key/shape set equals the reference TSV ({len(sd)} entries)")
        c.check([k for k, _ in sd] == [k for k, _ in ref], "search state_dict key order equals TSV")
        mine = dict((k, tuple(s)) for k, s in sd)
        theirs = dict((k, tuple(s)) for k, s in ref)
        for k in sorted(set(mine) ^ set(theirs))[:20]:
            print(f"      diff key: {k} mine={mine.get(k)} ref={theirs.get(k)}")
        for k in sorted(set(mine) & set(theirs)):
            if mine[k] != theirs[k]:
                print(f"      diff shape: {k} mine={mine[k]} ref={theirs[k]}")
    else:
        c.check(False, f"reference TSV {TSV_NAME} not found (use --tsv or $METANAS_REF_DIR)")

    # 2. counts
    w, a, b = counts(m)
    c.check((w, a) == (462272, 146), f"Omniglot 20-way search: {w} weights + {a} alphas "
                                      f"(expect 462272 + 146); {b} buffer elements")
    w5, _, _ = counts(build({"classes": 5}))
    c.check(w5 == 460997, f"Omniglot 5-way search: {w5} weights (expect 460997)")
    wi, _, _ = counts(build({"classes": 5, "in_channels": 3, "size": 84}))
    c.check(wi == 462509, f"MiniImagenet 5-way search: {wi} weights (expect 462509)")
    cnn = build({"kind": "cnn"})
    wc, ac, _ = counts(cnn)
    c.check(wc == 113236, f"REPTILE CNN Omniglot 20-way: {wc} weights (expect 113236 = 113256 "
                          f"reference count - 20 dummy alpha parameters of its model)")
    wci, _, _ = counts(build({"kind": "cnn", "in_channels": 3, "size": 84, "classes": 5}))
    print(f"info  REPTILE CNN MiniImagenet 5-way: {wci} weights (final layer 1600 inputs)")
    for name in GENOTYPES:
        spec = {"kind": "discrete", "genotype": name}
        if name == "metanas_in_v2":
            spec.update({"in_channels": 3, "size": 84, "classes": 5})
        wd, _, _ = counts(build(spec))
        print(f"info  discrete {name} ({spec.get('classes', 20)}-way, C=28): {wd} weights")
    wu, _, _ = counts(build({"kind": "discrete", "channels": 96, "layers": 5}))
    print(f"info  upscaled discrete metanas_og_v2, C=96, 5 cells: {wu} weights")

    # 3. genotype round trip
    for name, text in GENOTYPES.items():
        g = parse_genotype(text)
        c.check(repr(g) == text, f"genotype {name} parses and prints back identically")

    # 4. forward passes, shapes and semantics
    torch.manual_seed(0)
    x = torch.randn(3, 1, 28, 28)
    m = build({"temperature": 0.7})
    with torch.no_grad():
        for n, p in m.named_alphas():
            p.copy_(torch.randn(p.shape) * 2.0)
    m.eval()
    with torch.no_grad():
        y = m(x)
        yn = naive_search_forward(m, x)
    c.check(tuple(y.shape) == (3, 20), f"search forward shape {tuple(y.shape)}")
    n_pruned = sum(int((torch.softmax(p / 0.7, -1) <= 0.01).sum()) for _, p in m.named_alphas())
    c.check(torch.allclose(y, yn, atol=1e-5, rtol=1e-4) and n_pruned > 0,
            f"search forward equals per-pair restatement with {n_pruned} pruned ops/pairs "
            f"(max diff {float((y - yn).abs().max()):.2e})")
    c.check(input_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] and
            input_pairs(4, "colex") == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)],
            "pair orders: lex (reference, default) and colex")
    mc = build({"temperature": 0.7, "pair_order": "colex"})
    mc.load_state_dict(m.state_dict())
    mc.eval()
    with torch.no_grad():
        yc_ = mc(x)
        ycn = naive_search_forward(mc, x)
    c.check(torch.allclose(yc_, ycn, atol=1e-5, rtol=1e-4) and
            not torch.allclose(yc_, y, atol=1e-4, rtol=1e-3),
            "pair_order colex matches its restatement and differs from lex")
    md = build({"use_pairwise": False})
    md.eval()
    with torch.no_grad():
        yd = md(x)
    c.check(tuple(yd.shape) == (3, 20) and "alpha_pw_normal.0" not in md.state_dict(),
            "DARTS-sum search network (use_pairwise false) runs, has no pairwise alphas")
    mdarts = build({"primitives": "darts"})
    mdarts.eval()
    with torch.no_grad():
        ydarts = mdarts(x)
    c.check(tuple(ydarts.shape) == (3, 20) and
            tuple(mdarts.state_dict()["alpha_normal.0"].shape) == (2, 8),
            "DARTS-primitive search network runs (alpha rows of 8)")
    mi = build({"classes": 5, "in_channels": 3})
    mi.eval()
    with torch.no_grad():
        yi = mi(torch.randn(1, 3, 84, 84))  # 84 -> 42 -> 21 (odd size in the second reduction)
    c.check(tuple(yi.shape) == (1, 5), "MiniImagenet search network runs on 3x84x84 (odd 21x21)")
    fr = FactorizedReduce(4, 4, False)
    c.check(tuple(fr(torch.randn(1, 4, 21, 21)).shape) == (1, 4, 11, 11) and
            tuple(fr(torch.randn(1, 4, 28, 28)).shape) == (1, 4, 14, 14),
            "FactorizedReduce: 28->14 (shifted), 21->11 (unshifted)")
    for name in GENOTYPES:
        dm = build({"kind": "discrete", "genotype": name})
        dm.eval()
        with torch.no_grad():
            yy = dm(x)
        c.check(tuple(yy.shape) == (3, 20), f"discrete {name} forward shape {tuple(yy.shape)}")
    cnn.eval()
    with torch.no_grad():
        yc = cnn(x)
    c.check(tuple(yc.shape) == (3, 20), f"REPTILE CNN forward shape {tuple(yc.shape)}")

    # 5. DropPath
    dp = DropPath(0.5)
    xx = torch.ones(2000, 1, 1, 1)
    dp.train()
    yy = dp(xx)
    vals = set(yy.flatten().tolist())
    c.check(vals <= {0.0, 2.0} and abs(float(yy.mean()) - 1.0) < 0.15,
            "DropPath(0.5) in training: per-sample values in {0, 2}, mean ~1")
    dp.eval()
    c.check(torch.equal(dp(xx), xx), "DropPath in eval mode is the identity")

    # 6. CLI round trip: init -> forward (strict load) -> same logits as direct call
    with tempfile.TemporaryDirectory() as d:
        specs = {
            "search": {"temperature": 0.5, "bn": "train"},
            "discrete": {"kind": "discrete", "bn": "eval"},
            "cnn": {"kind": "cnn", "bn": "train"},
        }
        for name, spec in specs.items():
            sp = os.path.join(d, name + ".json")
            with open(sp, "w") as f:
                json.dump(spec, f)
            st, xi, out = (os.path.join(d, name + s) for s in ("_state.pt", "_x.pt", "_out.pt"))
            cmd_init(argparse.Namespace(spec=sp, seed=7, out=st, alpha_std=1.0, bn_random=True,
                                        legacy=False))
            torch.save({"x": torch.randn(4, 1, 28, 28)}, xi)
            cmd_forward(argparse.Namespace(spec=sp, state=st, input=xi, out=out, state_out=None,
                                           legacy=False))
            got = torch.load(out)["logits"]
            mm = build(spec)
            mm.load_state_dict(torch.load(st))
            set_mode(mm, full_spec(spec)["bn"])
            with torch.no_grad():
                want = mm(torch.load(xi)["x"])
            c.check(torch.equal(got, want), f"CLI init/forward round trip ({name}, bn {spec['bn']})")
        # a state with a wrong key must be refused with exit status 2
        bad = torch.load(os.path.join(d, "cnn_state.pt"))
        bad["extra.weight"] = torch.zeros(1)
        del bad["logits.bias"]
        torch.save(bad, os.path.join(d, "bad.pt"))
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                cmd_forward(argparse.Namespace(spec=os.path.join(d, "cnn.json"),
                                               state=os.path.join(d, "bad.pt"),
                                               input=os.path.join(d, "cnn_x.pt"),
                                               out=os.path.join(d, "o.pt"), state_out=None,
                                               legacy=False))
            c.check(False, "bad state refused")
        except SystemExit as e:
            c.check(e.code == 2 and "missing keys (1)" in err.getvalue()
                    and "unexpected keys (1)" in err.getvalue(),
                    "bad state (missing + unexpected key) refused with exit status 2 and a report")

        # float64 input runs the network in double precision
        torch.save({"x": torch.randn(2, 1, 28, 28, dtype=torch.float64)},
                   os.path.join(d, "x64.pt"))
        cmd_forward(argparse.Namespace(spec=os.path.join(d, "discrete.json"),
                                       state=os.path.join(d, "discrete_state.pt"),
                                       input=os.path.join(d, "x64.pt"),
                                       out=os.path.join(d, "o64.pt"), state_out=None,
                                       legacy=True))
        y64 = torch.load(os.path.join(d, "o64.pt"))["logits"]
        c.check(y64.dtype == torch.float64 and tuple(y64.shape) == (2, 20),
                "float64 input -> float64 logits (legacy save format)")
        # keys command
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cmd_keys(argparse.Namespace(spec=os.path.join(d, "search.json")))
        j = json.loads(out.getvalue())
        c.check(j["weights"] == 462272 and j["alphas"] == 146 and len(j["state_dict"]) == 1229,
                "keys command: 462272 weights, 146 alphas, 1229 state_dict entries")

    # 7. discrete network naming (mirrors the search network, without 'net.' and '_ops.{k}')
    dk = build({"kind": "discrete"}).state_dict()
    want = {
        "stem.0.weight": [84, 1, 3, 3], "stem.1.bias": [84],
        "cells.0.preproc0.net.1.weight": [28, 84, 1, 1], "cells.0.preproc0.net.2.weight": [28],
        "cells.0.dag.0.0.0.net.1.weight": [28, 1, 3, 3],        # dil_conv_3x3 depthwise
        "cells.0.dag.0.1.0.net.1.net.2.weight": [28, 28, 1, 1],  # sep_conv_3x3 2nd pointwise
        "cells.0.dag.1.0.0.bn.running_var": [28],                 # avg_pool_3x3 BN
        "cells.0.dag.2.0.0.net.2.weight": [28, 28, 5, 1],         # conv_1x5_5x1
        "cells.1.dag.0.0.0.conv2.weight": [14, 28, 1, 1],         # skip_connect, stride 2
        "cells.2.preproc0.conv1.weight": [14, 84, 1, 1],          # FactorizedReduce preproc
        "linear.weight": [20, 84],
    }
    c.check(all(k in dk and list(dk[k].shape) == v for k, v in want.items()),
            f"discrete metanas_og_v2 key names ({len(dk)} entries)")

    print(f"selfcheck: {'FAILED (' + str(c.failed) + ')' if c.failed else 'all passed'}")
    return 1 if c.failed else 0


def main(argv=None):
    threads = os.environ.get("PYREF_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keys", help="print weight/alpha/buffer counts and state_dict keys")
    p.add_argument("--spec", required=True)
    p = sub.add_parser("init", help="write a randomly initialised state_dict")
    p.add_argument("--spec", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--alpha-std", type=float, default=1e-3,
                   help="alphas = alpha_std * N(0,1) (reference init: 1e-3)")
    p.add_argument("--bn-random", action="store_true",
                   help="randomise BN running stats (and affine weight/bias), for eval-mode tests")
    p.add_argument("--legacy", action="store_true", help="legacy (non-zip) torch.save format")
    p = sub.add_parser("forward", help="run the network on X.pt and write its logits")
    p.add_argument("--spec", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--state-out", default=None,
                   help="also write the state_dict after the pass (running stats, bn=train)")
    p.add_argument("--legacy", action="store_true", help="legacy (non-zip) torch.save format")
    p = sub.add_parser("selfcheck", help="check key names, shapes, counts and the CLI")
    p.add_argument("--tsv", default=None, help="path of " + TSV_NAME)
    args = ap.parse_args(argv)
    if args.cmd == "keys":
        cmd_keys(args)
    elif args.cmd == "init":
        cmd_init(args)
    elif args.cmd == "forward":
        cmd_forward(args)
    else:
        return selfcheck(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
