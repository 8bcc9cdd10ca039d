#!/usr/bin/env python3
"""Writes a reference-style MetaNAS checkpoint for the Go interoperability tests.

The reference implementation saves its meta state as

    torch.save({"meta_model": model.state_dict(),          # an OrderedDict
                "w_meta_optim": ..., "a_meta_optim": ...,   # torch.optim state_dicts
                "w_task_optim": ..., "a_task_optim": ...}, path)

This script builds the network of SPEC.json with tools/pyref (the project's own PyTorch
implementation, whose state_dict keys are the reference's), initialised like
`metanas_ref.py init --seed N --alpha-std S --bn-random`, and writes

  * CKPT: the dict above. The task optimizers are Adam (betas (0.0, 0.999), weight decay 0 on
    the weights and 1e-3 on the alphas) over the network's weights and alphas in registration
    order, with state from two steps on random gradients taken on a copy of the network (so
    meta_model keeps the initial values); every fifth parameter gets no gradient and so no
    state, as a parameter that never received one in the reference. The meta optimizers are
    plain SGD (no state). A network without alphas (the CNN) gets the four dummy [1, 5]
    alphas (alpha_normal.{0,1}, alpha_reduce.{0,1}) the reference's CNN and discrete models
    carry in their state_dict.
  * STATE (--state-out): the same meta_model as a plain state_dict file, for
    `metanas_ref.py forward --state`.

It prints one JSON line describing the optimizer state for the test to check:
{"w_params": n, "a_params": n, "w_state": {id: [step, sum(exp_avg), sum(exp_avg_sq)]}, "a_state": {...}}.

Usage: reference_checkpoint.py --spec SPEC.json --seed N --out CKPT [--state-out STATE]
                               [--alpha-std S] [--legacy] [--int-step]
                               [--forward FWD_SPEC.json --size S --input-out X.pt --logits-out Y.pt]
--legacy writes PyTorch's legacy (non-zip) format; --int-step stores Adam's step as a Python
int, as PyTorch before 1.12 (the reference pinned 1.2) did. --shift-ids N adds N to the
task optimizers' parameter ids (in "state" and param_groups' "params"). --forward (needs --state-out)
also writes a random input {"x": [3, in_channels, S, S]} and runs `metanas_ref.py forward`
(its cmd_forward, in this process to save a Python start) with FWD_SPEC.json on STATE and it.
"""

import argparse
import copy
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..", "..", "tools", "pyref")))
import metanas_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--state-out")
    ap.add_argument("--alpha-std", type=float, default=2.0)
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--int-step", action="store_true")
    ap.add_argument("--shift-ids", type=int, default=0)
    ap.add_argument("--forward")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--input-out")
    ap.add_argument("--logits-out")
    args = ap.parse_args()
    torch.set_num_threads(1)

    # The network, initialised exactly as `metanas_ref.py init` does.
    tmp = args.out + ".init.pt"
    metanas_ref.cmd_init(argparse.Namespace(spec=args.spec, seed=args.seed, out=tmp,
                                            alpha_std=args.alpha_std, bn_random=True, legacy=False))
    spec = metanas_ref.load_spec(args.spec)
    model = metanas_ref.build(spec)
    model.load_state_dict(torch.load(tmp))
    os.remove(tmp)
    if args.state_out:
        metanas_ref.save({k: v.clone() for k, v in model.state_dict().items()}, args.state_out, args.legacy)

    # Optimizers over a copy, in the reference's parameter order.
    work = copy.deepcopy(model)
    if hasattr(work, "named_weights"):
        weights = [p for _, p in work.named_weights()]
        alphas = [p for _, p in work.named_alphas()]
    else:
        weights, alphas = list(work.parameters()), []
    w_task = torch.optim.Adam(weights, lr=0.005, betas=(0.0, 0.999), weight_decay=0.0)
    a_task = torch.optim.Adam(alphas if alphas else [torch.nn.Parameter(torch.zeros(1, 5))],
                              lr=0.005, betas=(0.0, 0.999), weight_decay=1e-3)
    meta_weights = ([p for _, p in model.named_weights()] if hasattr(model, "named_weights")
                    else list(model.parameters()))
    w_meta = torch.optim.SGD(meta_weights, lr=1.0)
    a_meta = torch.optim.SGD(alphas if alphas else [torch.nn.Parameter(torch.zeros(1, 5))], lr=0.6)
    g = torch.Generator().manual_seed(args.seed + 7)
    for _ in range(2):
        for opt in (w_task, a_task):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                p.grad = None if i % 5 == 4 else torch.randn(p.shape, generator=g)
            opt.step()

    def describe(opt):
        out = {}
        for k, st in opt.state_dict()["state"].items():
            out[str(k)] = [float(st["step"]), float(st["exp_avg"].double().sum()),
                           float(st["exp_avg_sq"].double().sum())]
        return out

    w_sd, a_sd = w_task.state_dict(), a_task.state_dict()
    if args.int_step:
        for sd in (w_sd, a_sd):
            for st in sd["state"].values():
                st["step"] = int(st["step"])
    meta_model = model.state_dict()
    if not alphas:
        # The reference's CNN and discrete models carry four dummy [1, 5] alphas.
        for k in ("alpha_normal.0", "alpha_normal.1", "alpha_reduce.0", "alpha_reduce.1"):
            meta_model[k] = torch.zeros(1, 5)
    if args.shift_ids:
        # Parameter ids are only names: what counts is their position in param_groups.
        for sd in (w_sd, a_sd):
            for pg in sd["param_groups"]:
                pg["params"] = [i + args.shift_ids for i in pg["params"]]
            sd["state"] = {k + args.shift_ids: v for k, v in sd["state"].items()}
    ckpt = {
        "meta_model": meta_model,
        "w_meta_optim": w_meta.state_dict(),
        "a_meta_optim": a_meta.state_dict(),
        "w_task_optim": w_sd,
        "a_task_optim": a_sd,
    }
    if args.legacy:
        torch.save(ckpt, args.out, _use_new_zipfile_serialization=False)
    else:
        torch.save(ckpt, args.out)
    if args.forward:
        fspec = metanas_ref.full_spec(metanas_ref.load_spec(args.forward))
        x = torch.randn(3, fspec["in_channels"], args.size, args.size,
                        generator=torch.Generator().manual_seed(args.seed + 11))
        torch.save({"x": x}, args.input_out)
        metanas_ref.cmd_forward(argparse.Namespace(spec=args.forward, state=args.state_out,
                                                   input=args.input_out, out=args.logits_out,
                                                   state_out=None, legacy=False))
    print(json.dumps({"w_params": len(weights), "a_params": len(alphas),
                      "w_state": describe(w_task), "a_state": describe(a_task)}))


if __name__ == "__main__":
    main()
