"""Times a MetaNAS task step in PyTorch on this machine, the way the reference runs it:
one forward/backward of the one-shot network per support minibatch, Adam on the weights
and (in search steps) on the alphas, with the MixedOp pruning test on the host for every op
(the reference's per-op device synchronisation). The network is tools/pyref's (same ops,
same key names as the reference). Prints one JSON line per case.

    python3 third_party/bench/ref_step.py [--cases og_metanas,in_metanas] [--steps 6] [--threads N] [--count-ops]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "pyref"))
import metanas_ref as R  # noqa: E402

CASES = {
    # batch, ways, in_channels, size, train shots
    "og_metanas": dict(batch=20, ways=20, in_channels=1, size=28, shots=15, lr=0.005),
    "in_metanas": dict(batch=20, ways=5, in_channels=3, size=84, shots=15, lr=0.001),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="og_metanas,in_metanas")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--count-ops", action="store_true",
                    help="also count the ATen operator calls of one step (aten_ops_per_step)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    for name in a.cases.split(","):
        c = CASES[name]
        torch.manual_seed(0)
        model = R.build({"kind": "search", "in_channels": c["in_channels"], "size": c["size"],
                         "classes": c["ways"], "prune_threshold": 0.01, "temperature": 1.0})
        model.train()
        alphas = [p for n, p in model.named_parameters() if n.startswith("alpha")]
        weights = [p for n, p in model.named_parameters() if not n.startswith("alpha")]
        w_opt = torch.optim.Adam(weights, lr=c["lr"], betas=(0.0, 0.999))
        a_opt = torch.optim.Adam(alphas, lr=c["lr"], betas=(0.0, 0.999), weight_decay=0.001)
        x = torch.rand(c["batch"], c["in_channels"], c["size"], c["size"])
        y = torch.randint(0, c["ways"], (c["batch"],))
        out = {"case": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "batch": c["batch"], "steps_per_task": c["ways"] * c["shots"] // c["batch"] * 5}
        for mode in ("warmup", "search"):
            def step():
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits, y)
                w_opt.zero_grad()
                a_opt.zero_grad()
                loss.backward()
                w_opt.step()
                if mode == "search":
                    a_opt.step()
            for p in alphas:
                p.requires_grad_(mode == "search")
            step()  # warm caches
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            ms = (time.perf_counter() - t) / a.steps * 1000
            out[mode + "_step_ms"] = round(ms, 2)
            # 10 tasks x steps_per_task minibatch steps per meta-epoch
            out[mode + "_epoch_s_est"] = round(ms * out["steps_per_task"] * 10 / 1000, 1)
            if a.count_ops:
                # The profiler lists every ATen call (nested ones and the backward pass's
                # included), as cmd/bench --count-ops counts them.
                with torch.autograd.profiler.profile() as prof:
                    step()
                out[mode + "_aten_ops_per_step"] = sum(
                    1 for e in prof.function_events if e.name.startswith("aten::"))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
