"""The ST / MTL / MTL-FT study of Peng, Chen & Lu (BioNLP 2020), built on :func:`biomtl.train.train`.

For every seed:

* **ST** — one single-task run per task (``st-<task>``), the BERT baseline;
* **MTL** — one multi-task run on all tasks (``mtl``), the paper's MT-BERT-Refinement;
* **MTL-FT** — per task, the MTL run's ``best/`` encoder fine-tuned on that task alone (``mtlft-<task>``),
  the paper's MT-BERT-Fine-Tune; the head starts fresh unless ``keep_heads: true``.

Layout: ``<output_dir>/seed<k>/<run>/`` is each run's :func:`~biomtl.train.train` directory (plus its
``learning_curve.png``); ``<output_dir>/results.{json,md}`` summarise them. Under ``torchrun`` every rank
trains every run and rank 0 alone writes (:mod:`~biomtl.experiments.execute`). Reruns are resumable: a run with
a ``result.json`` is skipped, one with a checkpoint is resumed, and one trained with other settings is an
error rather than silently reused (:mod:`~biomtl.experiments.execute`).

The study config and how a run's settings are layered: :mod:`~biomtl.experiments.schema`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from biomtl import distributed
from biomtl.datadirs import DataDirs
from biomtl.experiments import report
from biomtl.experiments.execute import execute_all
from biomtl.experiments.plan import plan_runs, study_runs
from biomtl.experiments.schema import load_study

log = logging.getLogger(__name__)


def run_study(
    config_path: str | Path,
    profile: str | None = "quick",
    seeds: int | None = None,
    output_dir: str | Path | None = None,
    data_dirs: DataDirs | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    plan: bool = False,
) -> dict:
    """Run (or finish) a study and write ``results.json`` and ``results.md`` into its output directory.
    ``plan`` prints the runs and their optimizer steps instead (:func:`~biomtl.experiments.plan.plan_runs`).

    >>> run_study("configs/studies/blue-public.yaml", profile="quick", seeds=1)  # doctest: +SKIP
    """
    study = load_study(config_path, profile, overrides, seeds, output_dir, data_dirs)
    if plan:
        print(plan_runs(study, study_runs(study)), end="")
        return {}
    results = execute_all(study, study_runs(study), "study", progress)
    # under torchrun rank 0 alone scores the zero-shot encoder, bootstraps and writes; the others get its summary
    return distributed.main_first(lambda: _write_results(study.output_dir, report.summarize_study(study, results)))


def _write_results(out: Path, summary: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "results.json", summary)
    report.write_text(out / "results.md", report.study_markdown(summary))
    log.info("results: %s", out / "results.md")
    return summary
