#!/usr/bin/env python3
"""Summarise the device side of a Chrome trace written by PyTorch's profiler (bench's
--kernel-trace, or torch.profiler's export_chrome_trace): prints one JSON object with the
number of kernels, their summed and merged (busy) time, the span from the first kernel's
start to the last one's end, and the costliest kernel names with count, total and mean time.

    python3 third_party/bench/trace_kernels.py TRACE.json [--top N] [--steps S] [--extra JSON]

--steps S also reports each figure per step, for a trace of S training steps; --extra adds
the keys of a JSON object (e.g. the run's settings) to the output.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--extra", default="")
    a = ap.parse_args()
    try:
        extra = json.loads(a.extra) if a.extra else {}
        if not isinstance(extra, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        print("trace_kernels: --extra: %s" % e, file=sys.stderr)
        return 2
    try:
        with open(a.trace) as f:
            events = json.load(f).get("traceEvents", [])
    except (OSError, ValueError) as e:
        print(json.dumps({"trace": a.trace, "error": str(e)}))
        return 2
    kernels, copies, launches = [], 0, {}
    for e in events:
        cat = e.get("cat", "")
        if e.get("ph") != "X":
            continue
        if cat == "kernel":
            kernels.append((float(e["ts"]), float(e.get("dur", 0)), e.get("name", "?")))
        elif cat in ("gpu_memcpy", "gpu_memset"):
            copies += 1
        elif cat in ("cuda_runtime", "cuda_driver"):
            n = e.get("name", "?")
            launches[n] = launches.get(n, 0) + 1
    kernels.sort()
    busy, end = 0.0, None
    for ts, dur, _ in kernels:
        if end is None or ts >= end:
            busy += dur
            end = ts + dur
        elif ts + dur > end:
            busy += ts + dur - end
            end = ts + dur
    span = (max(ts + d for ts, d, _ in kernels) - kernels[0][0]) if kernels else 0.0
    by = {}
    for _, dur, name in kernels:
        c = by.setdefault(name, [0, 0.0])
        c[0] += 1
        c[1] += dur
    total = sum(c[1] for c in by.values())
    top = sorted(by.items(), key=lambda kv: -kv[1][1])[: a.top]
    out = dict(extra)
    out.update({
        "trace": a.trace,
        "kernels": len(kernels),
        "kernel_ms": round(total / 1e3, 3),
        "busy_ms": round(busy / 1e3, 3),
        "span_ms": round(span / 1e3, 3),
        "copies_and_sets": copies,
        "host_calls": dict(sorted(launches.items(), key=lambda kv: -kv[1])[:8]),
        "top": [
            {"name": n[:160], "count": c, "total_ms": round(t / 1e3, 3), "mean_us": round(t / c, 2), "share": round(t / total, 4) if total else 0}
            for n, (c, t) in top
        ],
    })
    if a.steps > 0:
        out["per_step"] = {k: round(out[k] / a.steps, 3) for k in ("kernels", "kernel_ms", "busy_ms", "span_ms")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
