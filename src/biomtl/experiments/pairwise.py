"""Pairwise MTL: every unordered pair of a study's tasks trained together, compared with each task alone.

Cell (i, j) of the n×n table is the change of task i's test main metric when it is trained together with
task j (run ``pair-<a>+<b>``) versus its single-task run (``st-<i>``), mean ± sd over seeds; the diagonal is
the single-task score itself. The paper's Figure 2 reads the same way (which tasks help or hurt which).

It uses the study config of :mod:`biomtl.experiments.schema` (pair runs read ``base`` < ``mtl`` <
``pairwise``) and the study's output layout, so with the same config and output directory the ``st-<task>``
runs of a study are reused, and the other way round. Outputs: ``pairwise.json``, ``pairwise.md``,
``pairwise.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from biomtl import distributed
from biomtl.datadirs import DataDirs
from biomtl.errors import ConfigError
from biomtl.experiments import report
from biomtl.experiments.execute import execute_all
from biomtl.experiments.plan import pairwise_runs, plan_runs
from biomtl.experiments.schema import load_study

log = logging.getLogger(__name__)


def run_pairwise(
    config_path: str | Path,
    profile: str | None = "quick",
    seeds: int | None = None,
    output_dir: str | Path | None = None,
    data_dirs: DataDirs | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    plan: bool = False,
) -> dict:
    """Train (or finish) every pair and the ST runs; write ``pairwise.{json,md,png}`` into the output directory.
    ``plan`` prints the runs and their optimizer steps instead.

    >>> run_pairwise("configs/studies/blue-public.yaml", profile="quick", seeds=1)  # doctest: +SKIP
    """
    study = load_study(config_path, profile, overrides, seeds, output_dir, data_dirs)
    if len(study.tasks) < 2:
        raise ConfigError(f"{study.source}: tasks: pairwise needs at least two tasks")
    if plan:
        print(plan_runs(study, pairwise_runs(study)), end="")
        return {}
    results = execute_all(study, pairwise_runs(study), "pairwise", progress)
    summary = report.summarize_pairwise(study, results)
    distributed.main_first(lambda: _write_pairwise(study.output_dir, summary))  # under torchrun rank 0 alone
    return summary


def _write_pairwise(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "pairwise.json", summary)
    report.write_text(out / "pairwise.md", report.pairwise_markdown(summary))
    tasks = summary["tasks"]
    report.plot_pairwise(
        tasks, [[None if i == j else summary["delta"][i][j] for j in tasks] for i in tasks], summary["st"],
        out / "pairwise.png", f"Pairwise MTL, test main metric (seed{'s' if len(summary['seeds']) > 1 else ''} "
        f"{', '.join(map(str, summary['seeds']))})",
    )
    log.info("pairwise table: %s", out / "pairwise.md")
