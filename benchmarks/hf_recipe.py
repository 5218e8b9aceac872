"""The stock Hugging Face NER recipe on bc5cdr-chemical: the baseline for the training benchmark.

``AutoModelForTokenClassification`` on the embedded encoder, labels on each word's first sub-word (``-100``
elsewhere), ``DataCollatorForTokenClassification`` (dynamic padding, random batches), ``Trainer``. This is
what ``transformers/examples/pytorch/token-classification/run_ner.py`` does, without the ``datasets``
plumbing. The sentences are read with biomtl's reader, so both sides train and test on identical data.

Settings that the stock recipe leaves at other defaults are set to biomtl's (``--warmup 0.1``,
``--weight-decay 0.01``) so that only the implementation differs. Sentences longer than ``--max-length``
sub-words are truncated (stock); a word cut off this way is predicted ``O``. Test F1 is
:func:`biomtl.metrics.entity_f1` on every word of every test sentence, as in biomtl.

    python benchmarks/hf_recipe.py --epochs 1 --max-train-examples 1000 --json-out /tmp/hf.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TASK,
    Timer,
    add_training_args,
    command_line,
    machine,
    machine_line,
    markdown_table,
    peak_memory_mib,
    prepared_dir,
    reset_peak_memory,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(p)
    return p.parse_args(argv)


def align_labels(word_ids: list[int | None], word_tags: list[str], label2id: dict[str, int]) -> list[int]:
    """The stock rule: a word's label on its first sub-word, -100 on the rest and on special tokens."""
    labels, previous = [], None
    for w in word_ids:
        labels.append(-100 if w is None or w == previous else label2id[word_tags[w]])
        previous = w
    return labels


def encode(examples: list[Any], tokenizer: Any, max_length: int, label2id: dict[str, int]) -> list[dict[str, Any]]:
    words = [ex.tokens for ex in examples]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for i, ex in enumerate(examples):
        row = {k: enc[k][i] for k in enc.keys()}
        row["labels"] = align_labels(enc.word_ids(i), ex.label, label2id)
        rows.append(row)
    return rows


def word_predictions(logits: np.ndarray, word_ids: list[list[int | None]], n_words: list[int], tags: list[str]) -> list[list[str]]:
    """Token logits (N, T, C) → one tag per word, read on its first sub-word; truncated words are ``O``."""
    best = logits.argmax(-1)
    out = []
    for i, ids in enumerate(word_ids):
        pred = ["O"] * n_words[i]
        previous = None
        for pos, w in enumerate(ids):
            if w is not None and w != previous:
                pred[w] = tags[int(best[i, pos])]
            previous = w
        out.append(pred)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.metrics import entity_f1
    from biomtl.model import default_encoder_path
    from biomtl.tasks import load_dataset_spec
    from biomtl.tasks.tagging import TaggingTask

    transformers.logging.set_verbosity_error()  # the load report of the new classifier layer
    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = prepared_dir(args.prepared)
    spec = load_dataset_spec(TASK, DataDirs.from_env(prepared=prepared))
    train_ex = read_split(spec, "train", limit=args.max_train_examples)
    test_ex = read_split(spec, "test", limit=args.max_eval_examples)
    tags = TaggingTask(spec).tags
    label2id = {t: i for i, t in enumerate(tags)}

    set_seed(args.seed)
    path = default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(tags), id2label=dict(enumerate(tags)), label2id=label2id
    ).float()  # fp32 weights, as from the embedded checkpoint, also when $BIOMTL_ENCODER holds fp16 ones
    train_rows = encode(train_ex, tokenizer, args.max_length, label2id)
    test_rows = encode(test_ex, tokenizer, args.max_length, label2id)

    with tempfile.TemporaryDirectory(prefix="hf-recipe-") as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.lr,
            warmup_steps=args.warmup,  # a float in [0, 1) is a fraction of the steps
            weight_decay=args.weight_decay,
            bf16=args.bf16,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",  # evaluated once, at the end
            seed=args.seed,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_rows,
            data_collator=DataCollatorForTokenClassification(tokenizer),
        )
        device = training_args.device
        reset_peak_memory(device)
        with Timer(device) as timer:
            trainer.train()
        peak, peak_kind = peak_memory_mib(device)
        with Timer(device) as eval_timer:
            output = trainer.predict(test_rows)

    enc = tokenizer([ex.tokens for ex in test_ex], is_split_into_words=True, truncation=True, max_length=args.max_length)
    pred = word_predictions(output.predictions, [enc.word_ids(i) for i in range(len(test_ex))], [len(ex.tokens) for ex in test_ex], tags)
    f1 = entity_f1([ex.label for ex in test_ex], pred)["f1"]
    real_tokens = sum(len(r["input_ids"]) for r in train_rows) * args.epochs
    examples_seen = len(train_ex) * args.epochs
    return {
        "side": "hf_recipe",
        "device": str(device),
        "precision": "bf16" if args.bf16 else "fp32",
        "train_examples": len(train_ex),
        "test_examples": len(test_ex),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_s": timer.seconds,
        "examples_per_s": examples_seen / timer.seconds,
        "real_tokens_per_s": real_tokens / timer.seconds,
        "peak_memory_mib": peak,
        "peak_memory_kind": peak_kind,
        "test_f1": f1,
        "test_eval_s": eval_timer.seconds,
    }


COLUMNS = [
    ("side", "side"), ("device", "device"), ("precision", "precision"), ("batch_size", "batch"), ("train_examples", "train ex."),
    ("epochs", "epochs"), ("train_s", "train s"), ("examples_per_s", "examples/s"),
    ("real_tokens_per_s", "real tokens/s"), ("peak_memory_mib", "peak MiB"), ("test_f1", "test F1"),
]


def table(results: list[dict[str, Any]]) -> str:
    return markdown_table([h for _, h in COLUMNS], [[r[k] for k, _ in COLUMNS] for r in results])


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
