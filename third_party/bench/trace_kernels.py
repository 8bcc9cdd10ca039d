#!/usr/bin/env python3
"""Summarise the device side of a Chrome trace written by PyTorch's profiler (bench's
--kernel-trace, or torch.profiler's export_chrome_trace): prints one JSON object with the
number of kernels, their summed and merged (busy) time, the span from the first kernel's
start to the last one's end, and the costliest kernel names with count, total and mean time,
each with its origins: which host operators launched it (for eagerly launched kernels; a
replayed CUDA graph's kernels all come from cudaGraphLaunch), as the outermost operator
around the launch and the two innermost, e.g. "autograd::engine::evaluate_function:
CatBackward0 > aten::contiguous > aten::copy_", counted.

    python3 third_party/bench/trace_kernels.py TRACE.json [--top N] [--steps S] [--extra JSON]

--steps S also reports each figure per step, for a trace of S training steps; --extra adds
the keys of a JSON object (e.g. the run's settings) to the output.
"""
import argparse
import json
import sys


def launch_origins(host):
    """Maps each launch's correlation id to the host operators around it on its thread:
    the outermost and the two innermost names, joined by " > " ("none" outside any)."""
    out = {}
    for evs in host.values():
        evs.sort(key=lambda e: (e[0], e[1], -e[2]))  # operators before launches at a time; outer first
        stack = []  # open operators: (end, name)
        for ts, kind, dur, name, corr in evs:
            while stack and stack[-1][0] < ts:
                stack.pop()
            if kind == 0:
                stack.append((ts + dur, name))
            elif corr is not None:
                names = [n for _, n in stack]
                if len(names) > 3:
                    names = [names[0]] + names[-2:]
                out[corr] = " > ".join(names) if names else "none"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--extra", default="")
    ap.add_argument("--origins", type=int, default=4, help="origins listed per kernel name")
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
    host = {}  # (pid, tid) -> [(ts, kind, dur, name, correlation)]: operators and launches
    for e in events:
        cat = e.get("cat", "")
        if e.get("ph") != "X":
            continue
        corr = (e.get("args") or {}).get("correlation")
        if cat == "kernel":
            kernels.append((float(e["ts"]), float(e.get("dur", 0)), e.get("name", "?"), corr))
        elif cat in ("gpu_memcpy", "gpu_memset"):
            copies += 1
        elif cat in ("cuda_runtime", "cuda_driver"):
            n = e.get("name", "?")
            launches[n] = launches.get(n, 0) + 1
            host.setdefault((e.get("pid"), e.get("tid")), []).append((float(e["ts"]), 1, 0.0, n, corr))
        elif cat in ("cpu_op", "operator", "user_annotation"):
            host.setdefault((e.get("pid"), e.get("tid")), []).append(
                (float(e["ts"]), 0, float(e.get("dur", 0)), e.get("name", "?"), None))
    origin = launch_origins(host)
    kernels.sort(key=lambda k: (k[0], k[1]))
    busy, end = 0.0, None
    for ts, dur, _, _ in kernels:
        if end is None or ts >= end:
            busy += dur
            end = ts + dur
        elif ts + dur > end:
            busy += ts + dur - end
            end = ts + dur
    span = (max(ts + d for ts, d, _, _ in kernels) - kernels[0][0]) if kernels else 0.0
    by, origins = {}, {}
    for _, dur, name, corr in kernels:
        c = by.setdefault(name, [0, 0.0])
        c[0] += 1
        c[1] += dur
        o = origins.setdefault(name, {})
        k = origin.get(corr, "unknown")
        o[k] = o.get(k, 0) + 1
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
            {"name": n[:160], "count": c, "total_ms": round(t / 1e3, 3), "mean_us": round(t / c, 2), "share": round(t / total, 4) if total else 0,
             "origins": dict(sorted(origins[n].items(), key=lambda kv: -kv[1])[:a.origins])}
            for n, (c, t) in top
        ],
    })
    if a.steps > 0:
        out["per_step"] = {k: round(out[k] / a.steps, 3) for k in ("kernels", "kernel_ms", "busy_ms", "span_ms")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
