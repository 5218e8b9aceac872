"""A training run's output directory: when it may be (re)used, and the files the run writes there.

::

    config.yaml                     the resolved run config
    metrics.jsonl                   one row per evaluation (rewritten whole, atomically)
    best/                           the model directory of the best dev epoch
    predictions/<task>.<split>.jsonl
    checkpoint/                     for --resume (biomtl.checkpoint)
    result.json                     written last: its presence marks a finished run
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from biomtl.atomic import atomic_write_text, recover_dir
from biomtl.checkpoint import CHECKPOINT, find_checkpoint
from biomtl.config import RunConfig
from biomtl.data.examples import Example
from biomtl.errors import BiomtlError, OutputExistsError

RESULT = "result.json"
METRICS = "metrics.jsonl"
BEST = "best"


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Returns True when an interrupted run should be resumed from its checkpoint. Changes nothing on disk, so
    a run that fails before training (bad config or data) leaves the output directory as it was."""
    if out.exists() and any(out.iterdir()):
        if resume and find_checkpoint(out) is not None:
            return True
        if resume and (out / RESULT).is_file():
            return True
        if resume and not overwrite:
            raise BiomtlError(f"{out}: --resume given but there is no checkpoint to resume from")
        if not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it or --resume to continue it")
    return False


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """:func:`check_output_dir`, then empty (``overwrite``) and create the directory."""
    resuming = check_output_dir(out, resume, overwrite)
    if not resuming:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    return resuming


def recover_interrupted_saves(out: Path) -> None:
    """Undo what a kill while ``best/`` or ``checkpoint/`` was being replaced left behind."""
    for name in (BEST, CHECKPOINT):
        recover_dir(out / name)


def read_result(out: Path) -> dict[str, Any] | None:
    """A finished run's result, or ``None``."""
    path = out / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(out: Path, result: dict[str, Any]) -> None:
    atomic_write_text(out / RESULT, json.dumps(result, indent=2) + "\n")


def write_config(out: Path, config: RunConfig) -> None:
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_metrics(out: Path, rows: list[dict]) -> None:
    write_jsonl(out / METRICS, rows)


def save_predictions(
    out: Path, split: str, examples: dict[str, list[Example]], predictions: dict[str, list[Any]]
) -> None:
    """``predictions/<task>.<split>.jsonl``: each example's id, gold label and prediction."""
    (out / "predictions").mkdir(exist_ok=True)
    for name, preds in predictions.items():
        rows = []
        for ex, pred in zip(examples[name], preds, strict=True):
            row = {"id": ex.id, "gold": ex.label, **pred.to_json()}
            if ex.doc_id is not None:
                row["doc_id"] = ex.doc_id
            rows.append(row)
        write_jsonl(out / "predictions" / f"{name}.{split}.jsonl", rows)
