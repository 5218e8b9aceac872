"""The stock Hugging Face fine-tuning recipe on one BLUE task: the baseline for the training benchmark.

``Trainer`` on the embedded encoder with the ``AutoModelFor…`` class that fits the task's type:

* **tagging** (bc5cdr-chemical, the default; bc5cdr-disease): ``AutoModelForTokenClassification``, labels on
  each word's first sub-word (``-100`` elsewhere), ``DataCollatorForTokenClassification``. This is what
  ``transformers/examples/pytorch/token-classification/run_ner.py`` does, without the ``datasets`` plumbing.
  A word cut off by truncation is predicted ``O``.
* **classification** (chemprot, ddi): ``AutoModelForSequenceClassification`` on the masked sentence as biomtl
  reads it (``@CHEMICAL$ … @GENE$``, ``@DRUG$ … @DRUG$``), argmax.
* **multilabel** (hoc): the same class with ``problem_type="multi_label_classification"``, a label predicted
  when its sigmoid is ≥ 0.5 (the stock threshold; nothing is tuned).
* **regression** (biosses): the same class with ``num_labels=1`` on the sentence pair (a cross-encoder, MSE).

The other classes run ``run_glue.py``'s recipe: ``DataCollatorWithPadding`` (dynamic padding, random batches),
truncation at ``--max-length``. Examples are read with biomtl's reader (the same seeded subsets), so both
sides train and test on identical data, and every score is biomtl's scorer for the task (the metric its
dataset config names: exact-span entity F1, micro-F1 over the positive classes, BLUE's per-abstract HoC F1,
Pearson) on every example of the split.

Settings that the stock recipe leaves at other defaults are set to biomtl's (``--warmup 0.1``,
``--weight-decay 0.01``) so that only the implementation differs. ``--select last`` (the default) trains
without evaluation and tests the last epoch; ``--select best-dev`` evaluates dev after every epoch and tests
the best one (``load_best_model_at_end`` with the task's main dev metric), as biomtl does.

    python benchmarks/hf_recipe.py --epochs 1 --max-train-examples 1000 --json-out /tmp/hf.json
    python benchmarks/hf_recipe.py --task hoc --epochs 3 --lr 1e-4 --select best-dev --json-out /tmp/hf-hoc.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable
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

SELECT = ("last", "best-dev")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(p)
    p.add_argument("--task", default=TASK, help=f"a BLUE task (default {TASK})")
    p.add_argument("--select", choices=SELECT, default="last",
                   help="the epoch tested: the last, or the best on dev (load_best_model_at_end)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------
# Tagging: run_ner.py


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


class TokenRecipe:
    """``AutoModelForTokenClassification`` + ``DataCollatorForTokenClassification`` (run_ner.py)."""

    def __init__(self, spec: Any) -> None:
        from biomtl.tasks import make_task

        self.tags: list[str] = make_task(spec).tags  # O, B-X, I-X, ...: the tag set biomtl trains on
        self.label2id = {t: i for i, t in enumerate(self.tags)}

    def model(self, path: str) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(
            path, num_labels=len(self.tags), id2label=dict(enumerate(self.tags)), label2id=self.label2id
        )

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def rows(self, examples: list[Any], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
        return encode(examples, tokenizer, max_length, self.label2id)

    def metric_values(self, logits: np.ndarray, examples: list[Any], tokenizer: Any, max_length: int) -> list[list[str]]:
        enc = tokenizer([ex.tokens for ex in examples], is_split_into_words=True, truncation=True, max_length=max_length)
        word_ids = [enc.word_ids(i) for i in range(len(examples))]
        return word_predictions(logits, word_ids, [len(ex.tokens) for ex in examples], self.tags)


# ----------------------------------------------------------------------------------------------------------
# One text or a text pair: run_glue.py


def _argmax_label(labels: list[str], row: np.ndarray) -> str:
    return labels[int(row.argmax())]


def _labels_at_half(labels: list[str], row: np.ndarray) -> list[str]:
    probabilities = 1.0 / (1.0 + np.exp(-row))
    return [label for label, p in zip(labels, probabilities, strict=True) if p >= 0.5]


def _score(labels: list[str], row: np.ndarray) -> float:
    return float(row[0])


# The stock head per biomtl task type: from_pretrained's extra arguments and how a logit row becomes a prediction.
SEQUENCE_HEADS: dict[str, tuple[dict[str, Any], Any]] = {
    "classification": ({}, _argmax_label),
    "multilabel": ({"problem_type": "multi_label_classification"}, _labels_at_half),
    "regression": ({"num_labels": 1, "problem_type": "regression"}, _score),
}


class SequenceRecipe:
    """``AutoModelForSequenceClassification`` + ``DataCollatorWithPadding`` (run_glue.py) on the text, or the
    text pair, as biomtl reads it; the training target is biomtl's (label index, 0/1 per label, score)."""

    def __init__(self, spec: Any) -> None:
        from biomtl.tasks import HeadSettings, make_task

        if spec.type not in SEQUENCE_HEADS:
            raise SystemExit(f"--task {spec.name}: no stock recipe for a {spec.type} task")
        self.labels: list[str] = list(spec.labels or [])
        self.kwargs, self.decide = SEQUENCE_HEADS[spec.type]
        self.task = make_task(spec, HeadSettings(similarity="cross"))  # for its targets only

    def model(self, path: str) -> Any:
        from transformers import AutoModelForSequenceClassification

        kwargs = dict(self.kwargs)
        if "num_labels" not in kwargs:
            kwargs.update(num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
                          label2id={label: i for i, label in enumerate(self.labels)})
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def rows(self, examples: list[Any], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_b for ex in examples] if examples and examples[0].text_b is not None else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        return [{**{k: enc[k][i] for k in enc.keys()}, "labels": self.task.target(ex)} for i, ex in enumerate(examples)]

    def metric_values(self, logits: np.ndarray, examples: list[Any], tokenizer: Any, max_length: int) -> list[Any]:
        return [self.decide(self.labels, row) for row in logits]  # logits: (N, C)


def recipe_for(spec: Any) -> TokenRecipe | SequenceRecipe:
    return TokenRecipe(spec) if spec.type == "tagging" else SequenceRecipe(spec)


def task_scores(spec: Any, examples: list[Any], predictions: list[Any]) -> dict[str, float]:
    """biomtl's scorer for the task (its dataset config's metric) on these predictions: every numeric score."""
    from biomtl import metrics
    from biomtl.tasks import make_task

    task = make_task(spec)
    gold = [task.gold(ex) for ex in examples]
    result = metrics.compute(spec.metric.name, gold, predictions, **task.metric_kwargs(examples))
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------------------------------------


def epoch_clock(device: torch.device) -> Any:
    """A ``TrainerCallback`` that times each epoch's training steps (``on_epoch_begin`` → ``on_epoch_end``, which
    ``Trainer`` calls before that epoch's evaluation and checkpoint) and reads peak memory at each epoch's end."""
    import time

    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.peaks: list[float] = []
            self.peak_kind = ""

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._start)
            peak, self.peak_kind = peak_memory_mib(device)
            self.peaks.append(peak)

    return EpochClock()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    from transformers import AutoTokenizer, EvalPrediction, Trainer, TrainingArguments, set_seed

    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.model import default_encoder_path
    from biomtl.tasks import load_dataset_spec

    transformers.logging.set_verbosity_error()  # the load report of the new classifier layer
    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = prepared_dir(args.prepared)
    spec = load_dataset_spec(args.task, DataDirs.from_env(prepared=prepared))
    train_ex = read_split(spec, "train", limit=args.max_train_examples)
    dev_ex = read_split(spec, "dev", limit=args.max_eval_examples)
    test_ex = read_split(spec, "test", limit=args.max_eval_examples)
    recipe = recipe_for(spec)
    main_metric = spec.main_metric

    set_seed(args.seed)
    path = default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = recipe.model(path).float()  # fp32 weights, as from the embedded checkpoint, also when $BIOMTL_ENCODER holds fp16 ones
    train_rows = recipe.rows(train_ex, tokenizer, args.max_length)
    dev_rows = recipe.rows(dev_ex, tokenizer, args.max_length)
    test_rows = recipe.rows(test_ex, tokenizer, args.max_length)

    def dev_metrics(prediction: EvalPrediction) -> dict[str, float]:
        values = recipe.metric_values(prediction.predictions, dev_ex, tokenizer, args.max_length)
        return {"main": task_scores(spec, dev_ex, values)[main_metric]}

    best_dev = args.select == "best-dev"
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
            # best-dev: evaluate and save after every epoch, then reload the best (main dev metric) for test
            eval_strategy="epoch" if best_dev else "no",
            save_strategy="epoch" if best_dev else "no",
            load_best_model_at_end=best_dev,
            metric_for_best_model="main" if best_dev else None,
            greater_is_better=True if best_dev else None,
            save_only_model=True,
            seed=args.seed,
            disable_tqdm=True,
        )
        device = training_args.device
        clock = epoch_clock(device)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_rows,
            eval_dataset=dev_rows if best_dev else None,
            data_collator=recipe.collator(tokenizer),
            compute_metrics=dev_metrics if best_dev else None,
            callbacks=[clock],
        )
        reset_peak_memory(device)
        with Timer(device) as timer:
            trainer.train()
        dev_history = [e["eval_main"] for e in trainer.state.log_history if "eval_main" in e]
        trainer.compute_metrics = None  # it scores dev; test is scored below
        with Timer(device) as eval_timer:
            test_output = trainer.predict(test_rows)

    test_scores = task_scores(spec, test_ex, recipe.metric_values(test_output.predictions, test_ex, tokenizer, args.max_length))
    train_s = sum(clock.seconds)
    real_tokens = sum(len(r["input_ids"]) for r in train_rows) * args.epochs
    examples_seen = len(train_ex) * args.epochs
    return {
        "side": "hf_recipe",
        "task": spec.name,
        "model_class": type(model).__name__,
        "device": str(device),
        "precision": "bf16" if args.bf16 else "fp32",
        "train_examples": len(train_ex),
        "dev_examples": len(dev_ex),
        "test_examples": len(test_ex),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "select": args.select,
        "train_s": train_s,
        "epoch_train_s": clock.seconds,
        "trainer_train_s": timer.seconds,  # trainer.train(), with any dev evaluation and checkpoints
        "examples_per_s": examples_seen / train_s,
        "real_tokens_per_s": real_tokens / train_s,
        "peak_memory_mib": max(clock.peaks),
        "peak_memory_kind": clock.peak_kind,
        "main_metric": main_metric,
        "dev_main": max(dev_history) if best_dev else None,  # of the tested epoch
        "test_main": test_scores[main_metric],
        "test_scores": test_scores,
        "dev_history": dev_history,  # the main dev metric after each epoch (best-dev only)
        "best_epoch": 1 + dev_history.index(max(dev_history)) if best_dev else args.epochs,
        "test_eval_s": eval_timer.seconds,
    }


COLUMNS = [
    ("side", "side"), ("device", "device"), ("precision", "precision"), ("batch_size", "batch"), ("train_examples", "train ex."),
    ("epochs", "epochs"), ("train_s", "train s"), ("examples_per_s", "examples/s"),
    ("real_tokens_per_s", "real tokens/s"), ("peak_memory_mib", "peak MiB"), ("test_main", "test main"),
]


def table(results: list[dict[str, Any]]) -> str:
    return markdown_table([h for _, h in COLUMNS], [[r[k] for k, _ in COLUMNS] for r in results])


def side_main(
    parse: Callable[[list[str] | None], argparse.Namespace],
    train: Callable[[argparse.Namespace], dict[str, Any]],
    argv: list[str] | None = None,
) -> None:
    """One side's command line (this script's and ``biomtl_train.py``'s): train, print the row and the machine,
    write ``--json-out``."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse(argv)
    result = train(args)
    info = machine()
    print(table([result]))
    print(f"\ntest {result['main_metric']} on {result['test_examples']} {result['task']} test examples")
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "result": result})


def main(argv: list[str] | None = None) -> None:
    side_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
