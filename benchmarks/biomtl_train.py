"""biomtl's training loop on bc5cdr-chemical, measured like ``hf_recipe.py``.

One :func:`biomtl.train.train` run with the settings of the HF side (epochs, batch size, LR, warm-up, weight
decay, max length, example caps, precision). Only the training steps are timed: ``train()`` logs (DEBUG) each
epoch's seconds in training steps (``record.train_s``, excluding dev evaluation and checkpointing), and they
are summed here. Peak memory is read at the end of each epoch's steps (before that epoch's evaluation).
Test F1 is ``result["test"]``: the checkpoint with the best dev F1 (the last one when ``--epochs 1``).

    python benchmarks/biomtl_train.py --epochs 1 --max-train-examples 1000 --json-out /tmp/biomtl.json
"""

from __future__ import annotations

import argparse
import logging
import os
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
    command_line,
    machine,
    machine_line,
    peak_memory_mib,
    prepared_dir,
    reset_peak_memory,
    write_json,
)
from hf_recipe import table  # noqa: E402


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
    p.add_argument("--compile", action="store_true", help="torch.compile the model (RunConfig.compile)")
    p.add_argument("--save-model", default=None, help="copy the trained model directory here (for cpu_inference.py)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from biomtl.config import RunConfig
    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.inference import resolve_device
    from biomtl.model import default_encoder_path, load_tokenizer
    from biomtl.tasks import load_dataset_spec
    from biomtl.tasks.tagging import TaggingTask
    from biomtl.train import train

    prepared = prepared_dir(args.prepared)
    device = resolve_device("auto")
    with tempfile.TemporaryDirectory(prefix="biomtl-bench-") as tmp:
        config = RunConfig(
            tasks=[TASK],
            output_dir=str(Path(tmp) / "run"),
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size,
            lr=args.lr,
            warmup=args.warmup,
            weight_decay=args.weight_decay,
            max_length=args.max_length,
            max_train_examples=args.max_train_examples,
            max_eval_examples=args.max_eval_examples,
            precision="bf16" if args.bf16 else "fp32",
            compile=args.compile,
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
        if args.save_model:
            shutil.rmtree(args.save_model, ignore_errors=True)
            shutil.copytree(Path(config.output_dir) / "best", args.save_model)
    if len(handler.seconds) != args.epochs:
        raise RuntimeError(f"expected {args.epochs} train_s records from biomtl.train, got {len(handler.seconds)}")

    # Real tokens: the features train() trained on (windows of at most max_length sub-words), re-encoded here.
    spec = load_dataset_spec(TASK, DataDirs.from_env(prepared=prepared))
    train_ex = read_split(spec, "train", limit=args.max_train_examples)
    test_ex = read_split(spec, "test", limit=args.max_eval_examples)
    features = TaggingTask(spec).encode(train_ex, load_tokenizer(default_encoder_path()), args.max_length)
    real_tokens = sum(len(f["input_ids"]) for f in features) * args.epochs
    train_s = sum(handler.seconds)
    return {
        "side": "biomtl" + (" (compiled)" if args.compile else ""),
        "device": str(device),
        "precision": config.precision,
        "train_examples": len(train_ex),
        "test_examples": len(test_ex),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_s": train_s,
        "epoch_train_s": handler.seconds,
        "examples_per_s": len(train_ex) * args.epochs / train_s,
        "real_tokens_per_s": real_tokens / train_s,
        "peak_memory_mib": max(handler.peaks),
        "peak_memory_kind": handler.peak_kind,
        "test_f1": result["test"][TASK]["f1"],
        "best_epoch": result["best_epoch"],
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    result = run(args)
    info = machine()
    print(table([result]))
    print(f"\nmachine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "result": result})


if __name__ == "__main__":
    main()
