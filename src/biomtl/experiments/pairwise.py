"""Pairwise MTL: every unordered pair of a study's tasks trained together, compared with each task alone.

Cell (i, j) of the n×n table is the change of task i's test main metric when it is trained together with
task j (run ``pair-<a>+<b>``) versus its single-task run (``st-<i>``), mean ± sd over seeds; the diagonal is
the single-task score itself. The paper's Figure 2 reads the same way (which tasks help or hurt which).

It uses the study config of :mod:`biomtl.experiments.study` (pair runs read ``base`` < ``mtl`` <
``pairwise``) and its output layout, so with the same config and output directory the ``st-<task>`` runs of
a study are reused, and the other way round. Outputs: ``pairwise.json``, ``pairwise.md``, ``pairwise.png``.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from biomtl.errors import ConfigError
from biomtl.experiments import report
from biomtl.experiments.study import (
    Run,
    Study,
    execute_all,
    load_study,
    main_score,
    plan_runs,
    st_name,
)

log = logging.getLogger(__name__)


def pair_name(a: str, b: str) -> str:
    return f"pair-{a}+{b}"


def pairwise_runs(study: Study) -> list[Run]:
    """Per seed: the ST runs, then one MTL run per unordered pair (in the study's task order)."""
    runs = []
    for seed in study.seeds:
        runs += [study.run("st", [t], seed, st_name(t)) for t in study.tasks]
        runs += [study.run("pair", [a, b], seed, pair_name(a, b)) for a, b in itertools.combinations(study.tasks, 2)]
    return runs


def summarize_pairwise(study: Study, results: dict[tuple[int, str], dict]) -> dict:
    """``pairwise.json``: ST scores, pair scores and their differences per seed, plus n×n mean/sd matrices."""
    tasks, seeds = list(study.tasks), study.seeds
    order = {t: k for k, t in enumerate(tasks)}
    st_values = {t: [main_score(results[(seed, st_name(t))], "test", t) for seed in seeds] for t in tasks}
    st = {t: report.summarize(st_values[t]) for t in tasks}
    pair: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    delta: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for i, j in itertools.permutations(tasks, 2):
        a, b = sorted((i, j), key=order.__getitem__)
        values = [main_score(results[(seed, pair_name(a, b))], "test", i) for seed in seeds]
        pair[i][j] = report.summarize(values)
        delta[i][j] = report.summarize(
            [None if v is None or s is None else v - s for v, s in zip(values, st_values[i], strict=True)]
        )

    def cell(i: str, j: str, key: str) -> float | None:
        stat = st[i] if i == j else delta[i][j]
        return None if stat is None else stat[key]

    return {
        "study": study.source,
        "profile": study.profile,
        "output_dir": str(study.output_dir),
        "seeds": seeds,
        "tasks": tasks,
        "main_metric": {t: results[(seeds[0], st_name(t))]["main_metric"][t] for t in tasks},
        "split": "test",
        "note": "scores in [0, 1]; mean[i][j] (i != j) = task i trained with task j minus task i alone, "
                "mean over seeds; mean[i][i] = task i alone; sd = sample sd (n-1) over seeds",
        "mean": [[cell(i, j, "mean") for j in tasks] for i in tasks],
        "sd": [[cell(i, j, "sd") for j in tasks] for i in tasks],
        "st": st,
        "pair": pair,
        "delta": delta,
    }


def pairwise_markdown(summary: dict) -> str:
    """``pairwise.md``: the n×n table, ×100."""
    tasks = summary["tasks"]
    rows = []
    for i in tasks:
        cells = [f"**{report.format_stat(summary['st'][i])}**" if i == j
                 else report.format_stat(summary["delta"][i][j], signed=True) for j in tasks]
        rows.append([i, *cells])
    profile = f", profile `{summary['profile']}`" if summary["profile"] else ""
    seeds = ", ".join(map(str, summary["seeds"]))
    spread = f"mean ± sample sd over seeds {seeds}" if len(summary["seeds"]) > 1 else f"seed {seeds}, no sd"
    return (
        f"# Pairwise MTL `{summary['study']}`{profile}\n\n"
        f"Row i, column j: change of task i's test main metric ×100 when trained together with task j, versus "
        f"task i alone ({spread}). Diagonal (bold): "
        "the single-task score. Heatmap: `pairwise.png`.\n\n"
        + report.markdown_table(["task i \\ with j", *tasks], rows)
    )


def run_pairwise(
    config_path: str | Path,
    profile: str | None = "quick",
    seeds: int | None = None,
    output_dir: str | Path | None = None,
    corpora: Path | None = None,
    prepared: Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    plan: bool = False,
) -> dict:
    """Train (or finish) every pair and the ST runs; write ``pairwise.{json,md,png}`` into the output directory.
    ``plan`` prints the runs and their optimizer steps instead.

    >>> run_pairwise("configs/studies/blue-public.yaml", profile="quick", seeds=1)  # doctest: +SKIP
    """
    study = load_study(config_path, profile, overrides, seeds, output_dir)
    if len(study.tasks) < 2:
        raise ConfigError(f"{study.source}: tasks: pairwise needs at least two tasks")
    if plan:
        print(plan_runs(study, pairwise_runs(study), corpora, prepared), end="")
        return {}
    results = execute_all(study, pairwise_runs(study), "pairwise", corpora, prepared, progress)
    summary = summarize_pairwise(study, results)
    out = study.output_dir
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "pairwise.json", summary)
    report.write_text(out / "pairwise.md", pairwise_markdown(summary))
    tasks = summary["tasks"]
    report.plot_pairwise(
        tasks, [[None if i == j else summary["delta"][i][j] for j in tasks] for i in tasks], summary["st"],
        out / "pairwise.png", f"Pairwise MTL, test main metric (seed{'s' if len(summary['seeds']) > 1 else ''} "
        f"{', '.join(map(str, summary['seeds']))})",
    )
    log.info("pairwise table: %s", out / "pairwise.md")
    return summary
