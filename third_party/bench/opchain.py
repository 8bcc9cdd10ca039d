"""opchain.py: the Python (PyTorch) side of the op-cost benchmark (cmd/opbench).

Issues the same work as third_party/bench/opchain.cc (the C++ floor) and the Go version:

  chain: x (64x28 float32, requires grad); y = x; 200 times y = relu(y*w + b);
         y.sum().backward()                          600 forward ops per iteration
  conv:  conv2d 3x3, padding 1, of x (20x28x28x28) with w (28x28x3x3, requires grad);
         out.sum().backward()                          1 forward op per iteration

Cost per op = wall time of whole iterations (forward, sum, backward, freeing) divided by the
forward ops of an iteration; the CPU time of the process over the same span is reported too
(less sensitive to other load on a shared machine).

Flags as opchain.cc: --case chain|conv|all, --device, --iters (0: per-case default), --trials,
--warmup (-1: iters/5), --threads (0: PyTorch's default) print one JSON line per case with
the per-trial costs; --serve answers "CASE ITERS WARMUP" lines from stdin with one JSON line
each ({"case", "wall_us_per_op", "cpu_us_per_op"}), which is how cmd/opbench interleaves its
trials with the Go and C++ ones.
"""
import argparse
import json
import statistics
import sys
import time

import torch

CHAIN_STEPS = 200


def make_case(name, dev):
    """Returns (step, forward ops per step, default iterations)."""
    if name == "chain":
        x = torch.randn(64, 28, device=dev).requires_grad_(True)
        w = torch.full((64, 28), 0.9, device=dev)
        b = torch.full((64, 28), 0.1, device=dev)

        def step():
            y = x
            for _ in range(CHAIN_STEPS):
                y = torch.relu(y * w + b)
            y.sum().backward()

        return step, 3 * CHAIN_STEPS, 200
    if name == "conv":
        x = torch.randn(20, 28, 28, 28, device=dev)
        w = (torch.randn(28, 28, 3, 3, device=dev) * 0.1).requires_grad_(True)

        def step():
            y = torch.nn.functional.conv2d(x, w, None, 1, 1)
            y.sum().backward()

        return step, 1, 500 if dev.type == "cuda" else 20
    raise ValueError(f"unknown case {name} (chain or conv)")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def warm(step, n, dev):
    for _ in range(n):
        step()
    sync(dev)


def trial(step, ops, iters, dev):
    """Times iters iterations; returns wall and CPU microseconds per op."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    n = iters * ops
    return (time.perf_counter() - t0) * 1e6 / n, (time.process_time() - c0) * 1e6 / n


def standalone(name, args, dev):
    step, ops, default_iters = make_case(name, dev)
    iters = args.iters or default_iters
    warm(step, args.warmup if args.warmup >= 0 else max(1, iters // 5), dev)
    res = [trial(step, ops, iters, dev) for _ in range(args.trials)]
    us = [r[0] for r in res]
    print(json.dumps({
        "impl": "python", "case": name, "device": args.device, "ops_per_iter": ops,
        "iters": iters, "trials": args.trials, "threads": torch.get_num_threads(),
        "libtorch": torch.__version__, "us_per_op": round(statistics.median(us), 4),
        "min_us_per_op": round(min(us), 4), "trial_us_per_op": [round(u, 4) for u in us],
        "trial_cpu_us_per_op": [round(r[1], 4) for r in res],
    }), flush=True)


def serve(dev):
    cases = {}
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            raise SystemExit(f"opchain.py: bad request {line.strip()!r} (want: CASE ITERS WARMUP)")
        name, iters, warmup = parts[0], int(parts[1]), int(parts[2])
        if name not in cases:
            cases[name] = make_case(name, dev)
        step, ops, _ = cases[name]
        warm(step, warmup, dev)
        wall, cpu = trial(step, ops, iters, dev)
        print(json.dumps({"impl": "python", "case": name, "wall_us_per_op": round(wall, 4),
                          "cpu_us_per_op": round(cpu, 4)}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["chain", "conv", "all"], default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=0)
    p.add_argument("--trials", type=int, default=7)
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--serve", action="store_true")
    args = p.parse_args()
    args.trials = max(1, args.trials)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("opchain.py: CUDA is not available to this PyTorch")
    torch.manual_seed(1)
    if args.serve:
        serve(dev)
        return
    if args.case != "conv":
        standalone("chain", args, dev)
    if args.case != "chain":
        standalone("conv", args, dev)


if __name__ == "__main__":
    main()
