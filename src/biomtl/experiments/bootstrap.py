"""A 95 % interval for MTL-FT − ST, by bootstrap over test examples and seeds, from the runs' saved test
predictions (``<run>/predictions/<task>.test.jsonl``).

One replicate draws the study's seeds with replacement and, for every task, its test units with replacement:
sentences (NER), examples (relations, BIOSSES pairs), abstracts (HoC, whose sentences are scored per
abstract) — the unit over which the task's metric is additive (:mod:`biomtl.tasks.statistics`). The same draw
of units serves the ST and the MTL-FT predictions of every drawn seed (the comparison is paired: one test set,
two models). Each task's BLUE main metric is recomputed on the resample for both settings; the replicate's
value is the difference MTL-FT − ST averaged over the drawn seeds, then over tasks (each task's own value is
kept too). The interval is the 2.5th and 97.5th percentile of :data:`N_RESAMPLES` replicates (percentile
bootstrap), drawn with ``numpy.random.default_rng(SEED)``, so a study's interval is reproducible.

With one seed only the test examples vary: the interval then says nothing about seed-to-seed variation.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomtl.data.examples import Example
from biomtl.experiments.schema import Study, run_name
from biomtl.rundir import PREDICTIONS
from biomtl.tasks import load_dataset_spec, make_task
from biomtl.tasks.statistics import ScoreStatistics

log = logging.getLogger(__name__)

N_RESAMPLES = 1000  # B: replicates per study
SEED = 0  # numpy's default_rng seed: the same runs give the same interval
LEVEL = 0.95
CHUNK = 100  # replicates drawn at once: memory is CHUNK × (a task's test units) counts
TOLERANCE = 1e-9  # saved predictions must reproduce the run's result.json score to this


class NoInterval(Exception):
    """Why a study has no interval (no saved test predictions, a metric without additive statistics, ...)."""


@dataclass(frozen=True)
class PairedTask:
    """One task's test predictions as statistics, a list over seeds per setting (the same units in each)."""

    st: list[ScoreStatistics]
    mtl_ft: list[ScoreStatistics]


def paired_interval(
    tasks: dict[str, PairedTask], n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> dict[str, Any]:
    """The point estimate and percentile interval of MTL-FT − ST, averaged over seeds and then tasks, and per
    task. Scores in [0, 1] (correlations in [-1, 1]).

    >>> paired_interval({"t": PairedTask([stats], [stats])})["average"]  # doctest: +SKIP
    {'estimate': 0.0, 'low': 0.0, 'high': 0.0}
    """
    rng = np.random.default_rng(seed)
    n_seeds = len(next(iter(tasks.values())).st)
    replicates = {t: np.empty(n_resamples) for t in tasks}
    for start in range(0, n_resamples, CHUNK):
        size = min(CHUNK, n_resamples - start)
        seed_counts = _resample_counts(rng, n_seeds, size)  # (size, seeds): how often each seed is drawn
        for name, paired in tasks.items():
            counts = _resample_counts(rng, len(paired.st[0].units), size)  # (size, units), shared by ST and MTL-FT
            deltas = np.stack(  # (size, seeds): MTL-FT − ST on each replicate's resample
                [ft.score(counts @ ft.units) - st.score(counts @ st.units) for st, ft in zip(paired.st, paired.mtl_ft, strict=True)],
                axis=1,
            )
            replicates[name][start : start + size] = (deltas * seed_counts).sum(axis=1) / n_seeds
    tail = 100 * (1 - level) / 2

    def interval(estimate: float, values: np.ndarray) -> dict[str, float]:
        low, high = np.percentile(values, [tail, 100 - tail])
        return {"estimate": estimate, "low": float(low), "high": float(high)}

    estimates = {
        name: math.fsum(ft.full_score() - st.full_score() for st, ft in zip(p.st, p.mtl_ft, strict=True)) / n_seeds
        for name, p in tasks.items()
    }
    average = np.mean(np.stack(list(replicates.values())), axis=0)
    return {
        "average": interval(math.fsum(estimates.values()) / len(tasks), average),
        "tasks": {name: interval(estimates[name], replicates[name]) for name in tasks},
    }


def _resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` resamples of ``n`` items with replacement, as how often each item is drawn: (size, n) floats."""
    drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]  # row r's draws offset by r·n
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# The study: read each run's saved test predictions


def study_interval(study: Study, results: dict[tuple[int, str], dict]) -> dict[str, Any]:
    """``results.json``'s ``bootstrap``: the settings, each task's resampling unit and the intervals, or
    ``{"skipped": why}`` when the runs cannot give one (the study's tables do not need it)."""
    settings = {"n_resamples": N_RESAMPLES, "seed": SEED, "level": LEVEL, "split": "test"}
    try:
        tasks = {task: paired_task(study, results, task) for task in study.tasks}
    except NoInterval as e:
        log.warning("no bootstrap interval: %s", e)
        return {**settings, "skipped": str(e)}
    return {**settings, "units": {t: p.st[0].unit for t, p in tasks.items()}, **paired_interval(tasks)}


def paired_task(study: Study, results: dict[tuple[int, str], dict], task: str) -> PairedTask:
    """One task's saved test predictions of the study's ST and MTL-FT runs, every seed, as statistics to resample
    (:func:`paired_interval`); :class:`NoInterval` says why they cannot be."""
    task_type = make_task(load_dataset_spec(study.tasks[task], study.data_dirs))
    paired: dict[str, list[ScoreStatistics]] = {"st": [], "mtl_ft": []}
    ids: list[str] | None = None
    for seed in study.seeds:
        for setting, stats in paired.items():
            name = run_name(setting, task)
            path = study.run_dir(seed, name) / PREDICTIONS / f"{task}.test.jsonl"
            if not path.is_file():
                raise NoInterval(
                    f"seed{seed}/{name} saved no test predictions ({path} is missing; a run writes them when "
                    "it scores test, evaluate_test: true, with save_predictions: true, which the quick profile "
                    "turns off); finished runs are reused as they are, so rerun the study into a new "
                    "output_dir with save_predictions=true"
                )
            examples, pred = _read_predictions(path, task_type)
            if ids is None:
                ids = [ex.id for ex in examples]
            elif [ex.id for ex in examples] != ids:
                raise NoInterval(f"{path}: other test examples than seed{study.seeds[0]}/{run_name('st', task)} (not paired)")
            try:
                statistics = task_type.score_statistics(examples, pred)
            except NotImplementedError as e:
                raise NoInterval(f"{task}: {e}") from None
            if statistics is None:
                spec = task_type.spec
                raise NoInterval(f"{task}: main metric '{spec.main_metric}' of metric '{spec.metric.name}' has no "
                                 "additive statistics to resample (biomtl.tasks.statistics)")
            _check_score(statistics, results[(seed, name)], task, path)
            stats.append(statistics)
    return PairedTask(paired["st"], paired["mtl_ft"])


def _read_predictions(path: Path, task_type: Any) -> tuple[list[Example], list[Any]]:
    """A run's saved predictions → the examples as the metric sees them (id, gold label, document) and each
    prediction's metric value."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    examples = [Example(id=str(row["id"]), label=row["gold"], doc_id=row.get("doc_id")) for row in rows]
    return examples, [task_type.saved_metric_value(row) for row in rows]


def _check_score(statistics: ScoreStatistics, result: dict, task: str, path: Path) -> None:
    """The predictions must give the score the run reported, or they are not the run's (stale, edited)."""
    reported = (result.get("test") or {}).get(task, {}).get(result["main_metric"][task])
    if reported is None or abs(statistics.full_score() - reported) > TOLERANCE:
        raise NoInterval(f"{path} scores {statistics.full_score():.6f} but the run's result.json says {reported}")
