"""The encoder alone, as `biomtl serve` batches it: milliseconds per sentence at batch 1, 8 and 16, with texts
packed into one row (`PackedEncoder`, what the service runs) and padded to length buckets (`BucketedEncoder`,
the fallback). No HTTP, no heads: the most micro-batching can gain on this machine for one-sentence requests
is the batch-1 time over the batch-8/16 time per sentence.

    python benchmarks/serve_encoder.py --json-out results/serve-encoder.json

Same sentences as ``serve_load.py``, the embedded all-MiniLM-L6-v2, fp32 (``--precision bf16``: bf16 autocast, what
``biomtl serve`` runs on a CPU with native bf16), under MKL's strict mode as
`biomtl serve` runs it. Variants run in rounds (``--rounds``), each timed ``--repeats`` times per round; the
table gives the median over rounds.
"""

from __future__ import annotations

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch first runs, as biomtl serve sets it

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from common import command_line, fmt, machine, machine_line, markdown_table, write_json  # noqa: E402
from serve_load import SENTENCES  # noqa: E402

from biomtl.inference import autocast_dtype, device_compute  # noqa: E402
from biomtl.model import load_encoder  # noqa: E402
from biomtl.packing import PackedEncoder  # noqa: E402
from biomtl.worker import BucketedEncoder, batch_invariant, invariant_linears  # noqa: E402


def ms_per_sentence(encode: Callable[[dict[str, torch.Tensor]], torch.Tensor], batches: list[dict[str, torch.Tensor]],
                    repeats: int, dtype: torch.dtype | None) -> float:
    with torch.inference_mode(), device_compute(torch.device("cpu"), dtype):
        for batch in batches:  # warm-up
            encode(batch)
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                encode(batch)
        seconds = time.perf_counter() - start
    return seconds * 1000 / (repeats * sum(len(b["input_ids"]) for b in batches))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                   help="autocast as `biomtl serve --precision` (default fp32; auto: bf16 on a CPU with native bf16)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core); "
                   "`biomtl serve --model-processes N` gives each copy 1/N of them")
    p.add_argument("--json-out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = autocast_dtype(args.precision, torch.device("cpu"))

    encoder, tokenizer = load_encoder(None, 0.0)
    encoder.eval()
    invariant_linears(encoder)  # as the service computes dense layers (worker.linear_rows)
    plain = lambda batch: encoder(**batch).last_hidden_state  # noqa: E731
    encoders = {
        "packed": PackedEncoder(encoder),
        "buckets": BucketedEncoder(plain, 8, 512, tokenizer.pad_token_id),
    }
    sentences = SENTENCES + SENTENCES[:4]  # 16
    batches = {size: [dict(tokenizer(sentences[i : i + size], padding=True, return_tensors="pt"))
                      for i in range(0, 16, size)] for size in (1, 8, 16)}
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            for size, group in batches.items():
                times.setdefault((name, size), []).append(ms_per_sentence(encode, group, args.repeats, dtype))
    median = {key: statistics.median(values) for key, values in times.items()}
    rows = [[name, fmt(median[(name, 1)]), fmt(median[(name, 8)]), fmt(median[(name, 16)]),
             f"{median[(name, 1)] / median[(name, 8)]:.2f}x", f"{median[(name, 1)] / median[(name, 16)]:.2f}x"]
            for name in encoders]
    info = machine()
    invariant = batch_invariant(torch.device("cpu"), dtype)
    print(f"`{command_line()}`\n\nMachine: {machine_line(info)}; {dtype or 'fp32'}; batch_invariant {invariant}\n")
    print(markdown_table(["encoder", "batch 1 ms/sentence", "batch 8", "batch 16", "1 / 8", "1 / 16"], rows))
    write_json(args.json_out, {"command": command_line(), "machine": info,
                               "precision": args.precision, "ms_per_sentence": {f"{n} {s}": v for (n, s), v in median.items()},
                               "rounds": {f"{n} {s}": v for (n, s), v in times.items()}})


if __name__ == "__main__":
    main()
