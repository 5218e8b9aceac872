"""Training a study's runs: each run is trained, resumed or skipped, and never reused with other settings.

A run with a ``result.json`` is finished and skipped; one with a checkpoint is resumed; one whose saved
``config.yaml`` differs from the run's config in a key that changes results is an error, before any work.

Under ``torchrun`` (:mod:`biomtl.distributed`) every rank trains every run, as one DDP training. Rank 0 alone
looks at the run directories and decides (skip, resume or train; a problem), and alone writes outside
:func:`~biomtl.train.train` (learning curves, deleted checkpoints); the other ranks take its decisions and
wait for its writes (:func:`~biomtl.distributed.main_first`), so no rank races another on a directory, and
a problem found by rank 0 stops every rank.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import yaml

from biomtl import distributed
from biomtl.checkpoint import CHECKPOINT, find_checkpoint
from biomtl.datadirs import DataDirs
from biomtl.errors import BiomtlError
from biomtl.experiments import report
from biomtl.experiments.plan import check_data
from biomtl.experiments.schema import Run, Study
from biomtl.rundir import RESULT
from biomtl.train import train

log = logging.getLogger(__name__)

# Keys that do not change what a run computes: a finished run trained with other values is still reused.
RUNTIME_KEYS = frozenset(
    {"output_dir", "init_from", "device", "num_threads", "log_every", "checkpoint_every", "compile",
     "save_predictions", "eval_batch_size"}
)


class StudyError(BiomtlError):
    """A study cannot go on (an existing run was trained with other settings)."""


def _settings_diff(run: Run) -> list[str]:
    """How a run directory's saved config differs from the run's config (keys that change results only)."""
    saved_path = Path(run.config.output_dir) / "config.yaml"
    if not saved_path.is_file():
        return []
    saved = yaml.safe_load(saved_path.read_text()) or {}
    wanted = run.config.to_dict()
    return [
        f"{key}={saved[key]!r} (now {wanted[key]!r})"
        for key in wanted
        if key not in RUNTIME_KEYS and key in saved and saved[key] != wanted[key]
    ]


def check_settings(runs: list[Run]) -> None:
    """Before any work: an existing run directory trained with other settings must not be reused or resumed."""
    changed = [(run, diff) for run in runs if (diff := _settings_diff(run))]
    if changed:
        run, diff = changed[0]
        more = f" (and {len(changed) - 1} more runs)" if len(changed) > 1 else ""
        raise StudyError(
            f"{run.config.output_dir}: this run was trained with {', '.join(diff)}{more}; use another "
            f"output_dir for the new settings, or delete {run.config.output_dir} to retrain it"
        )


def _main_scores(result: dict, split: str) -> str:
    scores = result.get(split) or {}
    return " ".join(f"{t}={s[result['main_metric'][t]]:.4f}" for t, s in scores.items()) or "—"


def execute(
    run: Run, data_dirs: DataDirs | None = None, progress: bool = True, keep_checkpoint: bool = False,
) -> dict:
    """Train one run unless finished (skip) or interrupted (resume); returns its ``result.json``.

    A finished run's ``checkpoint/`` only serves resuming (3× the model's size, with the optimizer state), so
    it is deleted unless ``keep_checkpoint``; ``best/`` stays.
    """
    out = Path(run.config.output_dir)
    distributed.setup(run.config.device)  # under torchrun: join the ranks before rank 0 looks at `out`
    finished, resume = distributed.main_first(lambda: _run_state(run))
    if finished is not None:
        result = finished
        log.info("%s: finished earlier, skipped", run.label)
    else:
        log.info("%s: %s (%s)", run.label, "resuming" if resume else "training", ", ".join(run.tasks))
        started = time.time()
        result = train(run.config, data_dirs, resume=resume, overwrite=not resume, progress=progress)
        log.info("%s: done in %.0f s, best epoch %d; dev %s; test %s", run.label, time.time() - started,
                 result["best_epoch"], _main_scores(result, "dev"), _main_scores(result, "test"))
    distributed.main_first(lambda: _tidy(out, run.label, keep_checkpoint))
    return result


def _run_state(run: Run) -> tuple[dict | None, bool]:
    """A run directory as rank 0 finds it: ``(its result, False)`` when finished, else ``(None, whether it
    resumes)``. Refuses one trained with other settings."""
    out = Path(run.config.output_dir)
    check_settings([run])
    if (out / RESULT).is_file():
        return json.loads((out / RESULT).read_text()), False
    return None, find_checkpoint(out) is not None


def _tidy(out: Path, label: str, keep_checkpoint: bool) -> None:
    """A finished run's directory: its resume state deleted (unless ``keep_checkpoint``), its learning curve
    plotted."""
    if not keep_checkpoint:
        for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    if not (out / report.CURVE).is_file():
        report.plot_learning_curve(out, label)


def execute_all(
    study: Study, runs: list[Run], kind: str, progress: bool
) -> dict[tuple[int, str], dict]:
    """Check every run's settings and (when something is left to train) the data, then train, resume or
    skip each run; returns ``{(seed, run name): result}``. Shared by the study and pairwise drivers."""
    distributed.setup(runs[0].config.device)  # under torchrun: rank 0 alone checks, the others take its answer
    todo = distributed.main_first(lambda: _check_all(study, runs))
    log.info("%s %s: %d runs over seeds %s (%d to train) → %s", kind, study.source, len(runs),
             study.seeds, todo, study.output_dir)
    keep = study.config.keep_checkpoints
    return {(r.seed, r.name): execute(r, study.data_dirs, progress, keep) for r in runs}


def _check_all(study: Study, runs: list[Run]) -> int:
    """Every run's settings, and the data when something is left to train; returns how many runs are."""
    check_settings(runs)
    todo = sum(not (Path(r.config.output_dir) / RESULT).is_file() for r in runs)
    if todo:
        check_data(study)
    return todo
