#!/usr/bin/env python3
"""Predicted LLaMA decode throughput on GroqChip v1: the table in README-groq.md.

Usage: targets/groq-sweep.py [path/to/release/lpuc] [--context N] [--profile v1]

For every model and weight format it compiles at the capacity minimum (`--chips auto`)
and at larger chip budgets up to 576 and beyond, each at batch 1 (per-user rate) and at
the batches that fit (aggregate rate), then prints one markdown row per chip budget.
Every number comes from `lpuc sim --json` on a checked schedule; nothing is fitted.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["llama3-70b", "llama2-70b", "llama3-8b", "llama2-7b"]
BUDGETS = {"70b": [576, 648], "8b": [64, 128, 576], "7b": [64, 128, 576]}
BATCHES = [1, 8, 16, 32, 64]


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def main():
    argv = sys.argv[1:]
    lpuc = argv[0] if argv and not argv[0].startswith("--") else "target/release/lpuc"
    context = 2048
    profile = "v1"
    if "--context" in argv:
        context = int(argv[argv.index("--context") + 1])
    if "--profile" in argv:
        profile = argv[argv.index("--profile") + 1]
    tmp = Path(tempfile.mkdtemp())
    rows = []
    slowest = 0.0
    for model in MODELS:
        ir = tmp / f"{model}.ir"
        r = run([lpuc, "build", "--preset", model, "-o", str(ir)])
        if r.returncode:
            sys.exit(r.stderr)
        size = model.split("-")[-1]
        for w in ["int4", "int8", "auto"]:
            budgets = ["auto"] + [str(b) for b in BUDGETS[size]]
            if w == "auto":
                budgets = ["576"]
            seen = set()
            for chips in budgets:
                best = None
                user1 = None
                for b in BATCHES:
                    out = tmp / "m.lpu"
                    t0 = time.time()
                    r = run([lpuc, "compile", str(ir), "--target", "groq", "--profile", profile,
                             "--weights", w, "--chips", chips, "--batch", str(b),
                             "--context", str(context), "-o", str(out)])
                    dt = time.time() - t0
                    slowest = max(slowest, dt)
                    if r.returncode:
                        if b == 1:
                            print(f"{model} {w} chips={chips}: {r.stderr.strip()}", file=sys.stderr)
                        break
                    s = run([lpuc, "sim", str(out), "--json"])
                    if s.returncode:
                        sys.exit(s.stderr)
                    rep = json.loads(s.stdout)
                    rep["compile_s"] = dt
                    if b == 1:
                        user1 = rep
                    if best is None or rep["tokens_per_s_aggregate"] > best["tokens_per_s_aggregate"]:
                        best = rep
                if user1 is None:
                    continue
                key = (user1["chips"], user1["tensor_parallel"], user1["stages"])
                if key in seen:
                    continue
                seen.add(key)
                rows.append((model, w, chips, user1, best))
                print(f"done {model} {w} {chips}", file=sys.stderr)
    print(f"Machine model `{profile}` (profile status: published), context {context} tokens "
          f"(decode timed with a full KV cache), prompt 128 tokens for TTFT. "
          f"Slowest compile in this sweep: {slowest:.1f} s.\n")
    print("| model | weights | chip budget | chips used (TP × stages) | tok/s per user (B=1) | µs/token (B=1) | lower bound µs (eff.) | best aggregate tok/s (B, per user) | TTFT ms | SRAM/chip MB (B=1 → best B) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, w, chips, u, b in rows:
        print(f"| {model} | {w} | {chips} | {u['chips']} ({u['tensor_parallel']} × {u['stages']}) "
              f"| {u['tokens_per_s_per_user']:.0f} | {u['us_per_token']:.0f} "
              f"| {u['lower_bound_us_per_token']:.0f} ({100 * u['schedule_efficiency']:.0f} %) "
              f"| {b['tokens_per_s_aggregate']:.0f} (B={b['batch']} on {b['chips']} chips, {b['tokens_per_s_per_user']:.0f}) "
              f"| {u['ttft_us'] / 1000:.1f} "
              f"| {u['sram_bytes_per_chip_max'] / 1e6:.0f} → {b['sram_bytes_per_chip_max'] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
