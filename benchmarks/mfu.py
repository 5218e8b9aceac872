"""Model-FLOP utilisation of biomtl's training step on BERT-base shapes or the embedded encoder's (random weights).

The model is a :class:`biomtl.model.MultiTaskModel`: a randomly initialised BERT-base encoder (hidden 768,
12 layers, 12 heads, intermediate 3072, the embedded tokenizer's 30,522-word vocabulary, SDPA attention;
``--shape embedded``: the embedded all-MiniLM-L6-v2's shape, the one the study trains) and one
token-classification head. The step is :func:`biomtl.train.train_step`, the one the training loop
runs: task-homogeneous batches from :class:`~biomtl.data.sampler.TaskBatchSampler` (length-grouped,
dynamically padded), autocast, loss, backward, gradient clipping, AdamW (fused), LR schedule, optional
``torch.compile``.

Batch lengths follow the BLUE length distribution: every train feature of the study's six tasks
(``configs/studies/blue-public.yaml``), encoded by its own task type with the embedded tokenizer at
``--max-length``; token ids and labels are random.

FLOPs are model FLOPs of the real (non-pad) tokens only. For a sequence of L real tokens::

    6 · N · L  +  12 · n_layers · d_model · L²

N = parameters outside the embeddings (encoder layers and head; every weight is used in one multiply-add per
token forward, two backward); the second term is attention scores and weighted sum (QKᵀ and A·V: 2·L²·d
each forward, three times that for forward + backward). Padding, recomputation and the optimizer are not
counted. MFU = achieved FLOP/s ÷ peak FLOP/s; peaks used (dense, no sparsity): H100 SXM 989 TFLOP/s bf16
and 67 TFLOP/s fp32 (TF32 matmuls are off, torch's default); H100 PCIe 756 / 51; H200 as H100 SXM.
``--peak-tflops`` overrides. On the CPU the peak is unknown: achieved GFLOP/s only.

    python benchmarks/mfu.py --bf16 --compile --steps 200        # GPU
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Timer,
    command_line,
    machine,
    machine_line,
    markdown_table,
    peak_memory_mib,
    reset_peak_memory,
    write_json,
)

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "blue-public.yaml"
# Dense peak FLOP/s by GPU name fragment: (bf16, fp32 without TF32).
PEAKS = {"H100 PCIe": (756e12, 51e12), "H100": (989e12, 67e12), "H200": (989e12, 67e12)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=10, help="untimed steps first (compilation, allocator)")
    p.add_argument("--shape", default="bert-base", choices=["bert-base", "embedded"],
                   help="the encoder's shape, random weights: BERT-base (the paper's encoders) or the embedded "
                        "all-MiniLM-L6-v2's (6 layers, hidden 384: the shape the study trains)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast; fp32 otherwise")
    p.add_argument("--compile", action="store_true", help="torch.compile(model, dynamic=True), as RunConfig.compile")
    p.add_argument("--sampling", default="proportional", help="TaskBatchSampler strategy")
    p.add_argument("--max-train-examples", type=int, default=None, help="seeded subset of each task's train")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak of this device and precision")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepared", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="after timing, profile --trace-steps more steps (torch.profiler) and write the operator "
                        "table here: where a step's time goes, on the host and on the device")
    p.add_argument("--trace-steps", type=int, default=5)
    p.add_argument("--sdpa", default="auto", choices=["auto", "torch", "efficient", "cudnn", "math"],
                   help="scaled_dot_product_attention's backends: auto = as biomtl runs models "
                        "(biomtl.inference.CUDA_ATTENTION: all but cuDNN on CUDA), torch = torch's own choice, "
                        "or one backend alone (torch.nn.attention.sdpa_kernel)")
    return p.parse_args(argv)


def blue_lengths(tokenizer: Any, max_length: int, prepared: Path | None, limit: int | None) -> dict[str, list[int]]:
    """Feature lengths (sub-words, with special tokens) of every train feature of the study's tasks."""
    import yaml

    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.tasks import TASK_TYPES, load_dataset_spec

    lengths = {}
    for name in yaml.safe_load(STUDY.read_text())["tasks"]:
        spec = load_dataset_spec(name, DataDirs.from_env(prepared=prepared))
        examples = read_split(spec, "train", limit=limit)
        features = TASK_TYPES[spec.type](spec).encode(examples, tokenizer, max_length)
        lengths[name] = [len(f["input_ids"]) for f in features]
    return lengths


def random_encoder(tokenizer: Any, shape: str) -> torch.nn.Module:
    """A randomly initialised BERT of BERT-base's shape or of the embedded encoder's."""
    from transformers import AutoConfig, AutoModel, BertConfig

    if shape == "embedded":
        from biomtl.model import default_encoder_path

        config = AutoConfig.from_pretrained(default_encoder_path())
    else:
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512,
        )
    return AutoModel.from_config(config, add_pooling_layer=False, attn_implementation="sdpa")


def model_flops(lengths: list[int], n_params: int, n_layers: int, d_model: int) -> float:
    """Training FLOPs of sequences with these real lengths (see the module docstring)."""
    return float(sum(6 * n_params * n + 12 * n_layers * d_model * n * n for n in lengths))


def peak_flops(device: torch.device, bf16: bool, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "unknown (CPU)"
    name = torch.cuda.get_device_name(device)
    for fragment, (bf16_peak, fp32_peak) in PEAKS.items():
        if fragment in name:
            peak = bf16_peak if bf16 else fp32_peak
            return peak, f"{peak / 1e12:g} TFLOP/s ({fragment} {'bf16' if bf16 else 'fp32'} dense)"
    return None, f"unknown for {name} (pass --peak-tflops)"


def sdpa_backend(name: str) -> Any:
    """A context that restricts SDPA to one backend; ``auto`` and ``torch`` change nothing (``run`` lifts
    biomtl's own restriction, :data:`biomtl.inference.CUDA_ATTENTION`, for every choice but ``auto``)."""
    import contextlib

    if name in ("auto", "torch"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel([backend[name]])


def write_trace(path: Path, device: torch.device, step: Any, batches: list[Any]) -> None:
    """Profile ``step`` over ``batches`` and write the operator table, most expensive first, with the host's
    and the device's busy time per step: a step whose host time exceeds its device time is launch-bound."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        with Timer(device) as timer:
            for feats in batches:
                step(feats)
    events = prof.key_averages()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    host_us = sum(e.self_cpu_time_total for e in events)
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    n = max(1, len(batches))
    head = (f"{n} steps, {1000 * timer.seconds / n:.1f} ms per step (wall, under the profiler); busy per step: "
            f"host {host_us / 1000 / n:.1f} ms, device {device_us / 1000 / n:.1f} ms\n\n")
    path.write_text(head + events.table(sort_by=sort, row_limit=40) + "\n")
    print(f"trace: {path} ({head.strip()})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from biomtl import inference
    from biomtl.config import DatasetSpec, MetricSpec, RunConfig
    from biomtl.data.sampler import TaskBatchSampler
    from biomtl.inference import autocast_dtype, resolve_device
    from biomtl.model import MultiTaskModel, default_encoder_path, load_tokenizer
    from biomtl.train import make_optimizer, make_scheduler, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sdpa != "auto":  # the step's kernels are --sdpa's alone, not biomtl's choice inside train_step
        inference.CUDA_ATTENTION = None
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    dtype = autocast_dtype("bf16" if args.bf16 else "fp32", device)
    tokenizer = load_tokenizer(default_encoder_path())
    prepared = Path(args.prepared) if args.prepared else None
    lengths = blue_lengths(tokenizer, args.max_length, prepared, args.max_train_examples)

    spec = DatasetSpec("tagger", "tagging", "conll", {}, MetricSpec("entity_f1"), "f1", labels=["A", "B"])
    model = MultiTaskModel(random_encoder(tokenizer, args.shape), tokenizer, {"tagger": spec}, max_length=args.max_length).to(device)
    task = model.tasks["tagger"]
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder.embeddings."))
    cfg = model.encoder.config

    # The batches of the run: the sampler's schedule over the six tasks' lengths, random ids and tags.
    sampler = TaskBatchSampler(lengths, args.batch_size, args.sampling, args.seed)
    rng = np.random.default_rng(args.seed)
    total = args.warmup_steps + args.steps + (args.trace_steps if args.trace else 0)
    schedule: list[tuple[str, list[int]]] = []
    epoch = 0
    while len(schedule) < total:
        schedule += sampler.epoch(epoch)
        epoch += 1
    batches = []
    for name, idx in schedule[:total]:
        feats = []
        for i in idx:
            n = lengths[name][i]
            ids = rng.integers(1000, len(tokenizer), n)
            ids[0], ids[-1] = tokenizer.cls_token_id, tokenizer.sep_token_id
            feats.append({"input_ids": ids.tolist(), "positions": list(range(1, n - 1)),
                          "word_labels": rng.integers(0, len(task.tags), n - 2).tolist()})
        batches.append(feats)

    config = RunConfig(tasks=["tagger"], output_dir="-")
    optimizer = make_optimizer(model, config, device)
    scheduler = make_scheduler(optimizer, total, 0.1)
    forward = torch.compile(model, dynamic=True) if args.compile else model
    pad_id = tokenizer.pad_token_id
    loss_sum = torch.zeros((), device=device)
    model.train()

    def step(feats: list[dict[str, Any]]) -> None:
        nonlocal loss_sum
        batch = {k: v.to(device, non_blocking=True) for k, v in task.collate(feats, pad_id).items()}
        loss_sum += train_step(model, "tagger", batch, optimizer, scheduler, grad_clip=config.grad_clip, dtype=dtype,
                               forward=forward)

    with sdpa_backend(args.sdpa), Timer(device) as warm:
        for feats in batches[: args.warmup_steps]:
            step(feats)
    reset_peak_memory(device)
    timed = batches[args.warmup_steps : args.warmup_steps + args.steps]
    with sdpa_backend(args.sdpa), Timer(device) as timer:
        for feats in timed:
            step(feats)
    if not torch.isfinite(loss_sum):
        raise RuntimeError("non-finite loss")
    peak_mem, peak_kind = peak_memory_mib(device)
    if args.trace:
        with sdpa_backend(args.sdpa):
            write_trace(Path(args.trace), device, step, batches[args.warmup_steps + args.steps :])

    real = [len(f["input_ids"]) for feats in timed for f in feats]
    padded = sum(len(feats) * max(len(f["input_ids"]) for f in feats) for feats in timed)
    flops = model_flops(real, n_params, cfg.num_hidden_layers, cfg.hidden_size)
    achieved = flops / timer.seconds
    peak, peak_text = peak_flops(device, args.bf16, args.peak_tflops)
    all_lengths = np.concatenate([np.asarray(v) for v in lengths.values()])
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16" if args.bf16 else "fp32",
        "compile": args.compile,
        "sdpa": args.sdpa,
        "shape": args.shape,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "warmup_s": warm.seconds,
        "train_s": timer.seconds,
        "step_ms": 1000 * timer.seconds / max(1, args.steps),
        "params_nonembedding": n_params,
        "real_tokens": sum(real),
        "padded_tokens": padded,
        "padding_efficiency": sum(real) / padded,
        "real_tokens_per_s": sum(real) / timer.seconds,
        "sequences_per_s": len(real) / timer.seconds,
        "model_flops": flops,
        "achieved_tflops": achieved / 1e12,
        "peak": peak_text,
        "mfu": achieved / peak if peak else None,
        "peak_memory_mib": peak_mem,
        "peak_memory_kind": peak_kind,
        "length_distribution": {
            "features": int(all_lengths.size),
            "mean": float(all_lengths.mean()),
            "p50": float(np.percentile(all_lengths, 50)),
            "p90": float(np.percentile(all_lengths, 90)),
            "max": int(all_lengths.max()),
            "per_task_mean": {t: float(np.mean(v)) for t, v in lengths.items()},
        },
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    r = run(args)
    info = machine()
    mfu = f"**{100 * r['mfu']:.1f} %**" if r["mfu"] is not None else "peak unknown"
    tflops = r["achieved_tflops"]
    achieved = f"{tflops:.1f} TFLOP/s" if tflops >= 1 else f"{1000 * tflops:.1f} GFLOP/s"
    print(markdown_table(
        ["device", "shape", "precision", "compile", "sdpa", "batch", "steps", "step ms", "real tokens/s", "padding eff.",
         "achieved", "peak", "MFU (real tokens)", "peak MiB"],
        [[r["device"], r["shape"], r["precision"], r["compile"], r["sdpa"], r["batch_size"], r["steps"], r["step_ms"],
          r["real_tokens_per_s"], r["padding_efficiency"], achieved, r["peak"], mfu,
          r["peak_memory_mib"]]],
    ))
    d = r["length_distribution"]
    print(f"\nBLUE train features: {d['features']:,}, mean length {d['mean']:.1f}, p50 {d['p50']:.0f}, "
          f"p90 {d['p90']:.0f}, max {d['max']}; N (non-embedding) = {r['params_nonembedding']:,}")
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "result": r})


if __name__ == "__main__":
    main()
