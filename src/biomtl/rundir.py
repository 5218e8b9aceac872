"""A training run's output directory: when it may be (re)used, and the files the run writes there.

::

    biomtl-run.json                 written first: marks a directory that biomtl created for a run
    config.yaml                     the resolved run config
    metrics.jsonl                   one row per evaluation (rewritten whole, atomically)
    best/                           the model directory of the best dev epoch
    predictions/<task>.<split>.jsonl
    checkpoint/                     for --resume (biomtl.checkpoint)
    result.json                     written last: its presence marks a finished run

``--overwrite`` replaces a directory only when biomtl wrote it: it holds ``biomtl-run.json`` (or, from before
the marker, ``config.yaml``) and nothing but the entries above (and their ``.<name>.*`` temporaries). Anything
else stops the run with one line naming what is in the way, so a user's own files are never deleted.
``--resume`` continues from the checkpoint; in a run killed before its first checkpoint it starts again from
scratch; with a config that differs from the run's ``config.yaml`` it stops and names the keys.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from biomtl import __version__
from biomtl.atomic import atomic_write_text, check_writable_dir, recover_dir, write_error
from biomtl.checkpoint import CHECKPOINT, find_checkpoint
from biomtl.config import RunConfig, read_yaml
from biomtl.data.examples import Example
from biomtl.distributed import is_main
from biomtl.errors import BiomtlError, OutputExistsError

log = logging.getLogger(__name__)

MARKER = "biomtl-run.json"
CONFIG = "config.yaml"
RESULT = "result.json"
METRICS = "metrics.jsonl"
BEST = "best"
PREDICTIONS = "predictions"
# Everything a run (and a study, which adds its learning curve) writes in its directory.
RUN_ENTRIES = (MARKER, CONFIG, METRICS, BEST, PREDICTIONS, CHECKPOINT, RESULT, "learning_curve.png")
# Keys that change how a run is watched, not what it trains: --resume may change them.
RESUME_MAY_CHANGE = ("output_dir", "num_threads", "log_every", "checkpoint_every")


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Returns True when an interrupted (or finished) run should be resumed from its checkpoint. Changes
    nothing on disk, so a run that fails before training (bad config or data) leaves the output directory as
    it was. Raises when ``out`` cannot be a run directory or may not be replaced."""
    check_writable_dir(out, "output_dir")
    if not (out.exists() and any(out.iterdir())):
        return False
    if resume and (find_checkpoint(out) is not None or (out / RESULT).is_file()):
        return True
    foreign = foreign_entry(out)
    if resume and foreign is None:
        log.info("%s: no checkpoint yet; starting the run again from scratch", out)
        return False
    if resume:
        raise BiomtlError(f"{out}: --resume given but there is no checkpoint to resume from")
    if not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it or --resume to continue it")
    if foreign is not None:
        raise OutputExistsError(
            f"{out}: --overwrite refused: {foreign}; biomtl replaces only directories it wrote "
            "(move your files away or choose another output_dir)"
        )
    return False


def foreign_entry(out: Path) -> str | None:
    """Why ``out`` is not a directory that biomtl wrote for a run, or ``None`` when it is."""
    for entry in sorted(out.iterdir()):
        known = entry.name in RUN_ENTRIES or any(entry.name.startswith(f".{name}.") for name in RUN_ENTRIES)
        if not known:
            return f"{entry.name} was not written by biomtl"
    if not (out / MARKER).is_file() and not (out / CONFIG).is_file():
        return f"no {MARKER} (not a biomtl run directory)"
    return None


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """:func:`check_output_dir`, then (unless resuming) empty the directory biomtl wrote before, create it and
    mark it as a run directory. A directory created here is removed again if it cannot be marked."""
    resuming = check_output_dir(out, resume, overwrite)
    if not resuming:
        made = [d for d in (out, *out.absolute().parents) if not d.exists()]
        try:
            if out.exists() and any(out.iterdir()):  # check_output_dir found only what biomtl wrote
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            marker = {"what": "a biomtl run directory (--overwrite may replace it)", "biomtl_version": __version__}
            atomic_write_text(out / MARKER, json.dumps(marker) + "\n")
        except OSError as e:
            for folder in made:  # innermost first
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise write_error(e, out) from None
    return resuming


def check_resumed_config(out: Path, config: RunConfig) -> None:
    """``--resume`` goes on with the run's own config: a ``config`` that differs from ``out/config.yaml`` in
    any key but :data:`RESUME_MAY_CHANGE` is an error that names the keys."""
    path = out / CONFIG
    if not path.is_file():
        return
    saved = RunConfig.from_dict(read_yaml(path), str(path)).to_dict()
    given = config.to_dict()
    changed = [k for k in given if k not in RESUME_MAY_CHANGE and given[k] != saved.get(k)]
    if changed:
        diffs = ", ".join(f"{k} {saved.get(k)!r} → {given[k]!r}" for k in changed)
        raise BiomtlError(
            f"{out}: --resume with a config that differs from the run's {CONFIG} ({diffs}); "
            "resume without those overrides, or start again with --overwrite"
        )


def recover_interrupted_saves(out: Path) -> None:
    """Undo what a kill while ``best/`` or ``checkpoint/`` was being replaced left behind."""
    for name in (BEST, CHECKPOINT):
        recover_dir(out / name)


def read_result(out: Path) -> dict[str, Any] | None:
    """A finished run's result, or ``None``."""
    path = out / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


# Under DDP only rank 0 writes the run's files (biomtl.distributed): the writers below do nothing elsewhere.


def write_result(out: Path, result: dict[str, Any]) -> None:
    if not is_main():
        return
    atomic_write_text(out / RESULT, json.dumps(result, indent=2) + "\n")


def write_config(out: Path, config: RunConfig) -> None:
    if not is_main():
        return
    atomic_write_text(out / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_metrics(out: Path, rows: list[dict]) -> None:
    if not is_main():
        return
    write_jsonl(out / METRICS, rows)


def save_predictions(
    out: Path, split: str, examples: dict[str, list[Example]], predictions: dict[str, list[Any]]
) -> None:
    """``predictions/<task>.<split>.jsonl``: each example's id, gold label and prediction."""
    if not is_main():
        return
    try:
        (out / PREDICTIONS).mkdir(exist_ok=True)
    except OSError as e:
        raise write_error(e, out / PREDICTIONS) from None
    for name, preds in predictions.items():
        rows = []
        for ex, pred in zip(examples[name], preds, strict=True):
            row = {"id": ex.id, "gold": ex.label, **pred.to_json()}
            if ex.doc_id is not None:
                row["doc_id"] = ex.doc_id
            rows.append(row)
        write_jsonl(out / PREDICTIONS / f"{name}.{split}.jsonl", rows)
