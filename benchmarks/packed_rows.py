"""Why packed training rows are filled to a multiple of 64 tokens (``biomtl.packing.TRAIN_ROUND_TO``): a bf16
training step of two dense layers (384 -> 1,536 -> 384, as in MiniLM's feed-forward block; forward, backward,
AdamW) with a row count that changes at nearly every step, as a packed batch's token count does, against the
same counts rounded up to a multiple of 64 and against one fixed count.

    python benchmarks/packed_rows.py --json-out results/packed-rows.json

Each variant runs in a process of its own (its peak RSS is its own); milliseconds per step over each block of
``--block`` steps, and the peak RSS at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

import torch
from common import command_line, machine, machine_line, markdown_table, write_json

VARIANTS = ("varying", "rounded to 64", "fixed")


def rows(variant: str, rng: random.Random, low: int, high: int) -> int:
    count = rng.randint(low, high)
    if variant == "rounded to 64":
        return -(-count // 64) * 64
    return (low + high) // 2 if variant == "fixed" else count


def run(variant: str, steps: int, block: int, low: int, high: int) -> dict:
    torch.manual_seed(0)
    rng = random.Random(0)
    layers = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
    optimizer = torch.optim.AdamW(layers.parameters(), lr=1e-4)
    blocks = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = torch.randn(rows(variant, rng, low, high), 384)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layers(x)
        y.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % block == 0:
            now = time.perf_counter()
            blocks.append((now - start) / block * 1000)
            start = now
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "ms_per_step": blocks, "peak_rss_mib": peak_mib}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--block", type=int, default=500)
    p.add_argument("--rows", default="800-1400", help="the range row counts are drawn from")
    p.add_argument("--variant", choices=VARIANTS, help="run this one here (the script runs each in a process)")
    p.add_argument("--json-out")
    args = p.parse_args()
    low, high = (int(v) for v in args.rows.split("-"))
    if args.variant:
        print(json.dumps(run(args.variant, args.steps, args.block, low, high)))
        return
    results = []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--steps", str(args.steps),
                              "--block", str(args.block), "--rows", args.rows],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.splitlines()[-1]))
    table = [[r["variant"], " / ".join(f"{ms:.1f}" for ms in r["ms_per_step"]), f"{r['peak_rss_mib']:,.0f}"]
             for r in results]
    info = machine()
    print(f"`{command_line()}`\n\nMachine: {machine_line(info)}; rows {args.rows}, bf16 autocast\n")
    print(markdown_table(["row counts", f"ms per step, blocks of {args.block} steps", "peak RSS MiB"], table))
    write_json(args.json_out, {"command": command_line(), "machine": info, "results": results})


if __name__ == "__main__":
    main()
