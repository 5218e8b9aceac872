"""biomtl's training loop on one BLUE task (default bc5cdr-chemical), measured like ``hf_recipe.py``.

One single-task :func:`biomtl.train.train` run with the settings of the HF side (epochs, batch size, LR,
warm-up, weight decay, max length, example caps, precision), plus biomtl's own model settings, which the stock
recipe has no counterpart for: ``--head-lr``, ``--pooling`` and ``--similarity`` (as in ``configs/runs/<task>.yaml``).
Only the training steps are timed: ``train()`` logs (DEBUG) each epoch's seconds in training steps
(``record.train_s``, excluding dev evaluation and checkpointing), and they are summed here. Peak memory is read
at the end of each epoch's steps (before that epoch's evaluation). The test score is ``result["test"]``: the
checkpoint with the best main dev metric, epoch 0 (before any step) included, with the decision rules chosen
on dev (HoC's per-label thresholds).

    python benchmarks/biomtl_train.py --epochs 1 --max-train-examples 1000 --json-out /tmp/biomtl.json
    python benchmarks/biomtl_train.py --task hoc --epochs 3 --lr 1e-4 --head-lr 1e-3 --pooling mean --json-out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TASK,
    add_training_args,
    peak_memory_mib,
    prepared_dir,
    reset_peak_memory,
)
from hf_recipe import side_main  # noqa: E402


class EpochTimes(logging.Handler):
    """Collects ``train_s`` (and the peak memory at that moment) from ``biomtl.train``'s end-of-epoch record."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(logging.DEBUG)
        self.device = device
        self.seconds: list[float] = []
        self.peaks: list[float] = []
        self.peak_kind = ""

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "train_s"):
            self.seconds.append(record.train_s)
            peak, self.peak_kind = peak_memory_mib(self.device)
            self.peaks.append(peak)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(p)
    p.add_argument("--task", default=TASK, help=f"a BLUE task (default {TASK})")
    p.add_argument("--head-lr", type=float, default=None, help="RunConfig.head_lr (default: --lr)")
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="RunConfig.pooling")
    p.add_argument("--similarity", default="auto", help="RunConfig.similarity (text-pair tasks)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (RunConfig.compile)")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="RunConfig.group_by_length: batches of similar lengths (default) or random ones")
    p.add_argument("--pack", action="store_true",
                   help="RunConfig.pack: the encoder reads each batch's texts packed into one row, without padding")
    p.add_argument("--chunk-batches", type=int, default=None,
                   help="length grouping sorts within random chunks of this many batches (default: "
                        "biomtl.data.sampler.CHUNK_BATCHES, 50)")
    p.add_argument("--save-model", default=None, help="copy the trained model directory here (for cpu_inference.py)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from biomtl.config import RunConfig
    from biomtl.data import sampler
    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.inference import resolve_device
    from biomtl.model import default_encoder_path, load_tokenizer, resolve_similarity
    from biomtl.rundir import METRICS
    from biomtl.tasks import HeadSettings, load_dataset_spec, make_task
    from biomtl.train import train

    prepared = prepared_dir(args.prepared)
    device = resolve_device("auto")
    if args.chunk_batches is not None:  # an experiment's setting, not a run-config key
        sampler.CHUNK_BATCHES = args.chunk_batches
    with tempfile.TemporaryDirectory(prefix="biomtl-bench-") as tmp:
        config = RunConfig(
            tasks=[args.task],
            output_dir=str(Path(tmp) / "run"),
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size,
            lr=args.lr,
            head_lr=args.head_lr,
            pooling=args.pooling,
            similarity=args.similarity,
            warmup=args.warmup,
            weight_decay=args.weight_decay,
            max_length=args.max_length,
            max_train_examples=args.max_train_examples,
            max_eval_examples=args.max_eval_examples,
            precision="bf16" if args.bf16 else "fp32",
            compile=args.compile,
            group_by_length=args.group_by_length,
            pack=args.pack,
            num_threads=args.threads,
            save_predictions=False,
        )
        handler = EpochTimes(device)
        train_log = logging.getLogger("biomtl.train")
        train_log.addHandler(handler)
        level = train_log.level
        train_log.setLevel(logging.DEBUG)  # the train_s record is logged at DEBUG
        reset_peak_memory(device)
        try:
            result = train(config, DataDirs.from_env(prepared=prepared), progress=False)
        finally:
            train_log.removeHandler(handler)
            train_log.setLevel(level)
        rows = [json.loads(line) for line in (Path(config.output_dir) / METRICS).read_text().splitlines() if line]
        dev_history = [row["mean_main"] for row in rows if row["split"] == "dev"]  # epoch 0, 1, ...
        if args.save_model:
            shutil.rmtree(args.save_model, ignore_errors=True)
            shutil.copytree(Path(config.output_dir) / "best", args.save_model)
    if len(handler.seconds) != args.epochs:
        raise RuntimeError(f"expected {args.epochs} train_s records from biomtl.train, got {len(handler.seconds)}")

    # Real tokens: the features train() trained on (windows of at most max_length sub-words), re-encoded here.
    spec = load_dataset_spec(args.task, DataDirs.from_env(prepared=prepared))
    train_ex = read_split(spec, "train", limit=args.max_train_examples)
    dev_ex = read_split(spec, "dev", limit=args.max_eval_examples)
    test_ex = read_split(spec, "test", limit=args.max_eval_examples)
    settings = HeadSettings(pooling=args.pooling, similarity=resolve_similarity(args.similarity, None))
    features = make_task(spec, settings).encode(train_ex, load_tokenizer(default_encoder_path()), args.max_length)
    # a bi-encoder's feature holds both texts (input_ids, input_ids_b)
    real_tokens = sum(len(v) for f in features for k, v in f.items() if k.startswith("input_ids")) * args.epochs
    train_s = sum(handler.seconds)
    main_metric = spec.main_metric
    return {
        "side": "biomtl" + (" (compiled)" if args.compile else ""),
        "task": spec.name,
        "settings": {"head_lr": args.head_lr, "pooling": args.pooling, "similarity": settings.similarity,
                     "group_by_length": args.group_by_length, "pack": args.pack,
                     "chunk_batches": sampler.CHUNK_BATCHES},
        "device": str(device),
        "precision": config.precision,
        "train_examples": len(train_ex),
        "dev_examples": len(dev_ex),
        "test_examples": len(test_ex),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "select": "best-dev",
        "train_s": train_s,
        "epoch_train_s": handler.seconds,
        "examples_per_s": len(train_ex) * args.epochs / train_s,
        "real_tokens_per_s": real_tokens / train_s,
        "peak_memory_mib": max(handler.peaks),
        "peak_memory_kind": handler.peak_kind,
        "main_metric": main_metric,
        "dev_main": result["dev"][spec.name][main_metric],  # of the tested epoch
        "test_main": result["test"][spec.name][main_metric],
        "test_scores": result["test"][spec.name],
        "dev_history": dev_history,
        "best_epoch": result["best_epoch"],  # 0: the model before any step
    }


def main(argv: list[str] | None = None) -> None:
    side_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
