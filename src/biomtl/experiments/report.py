"""Tables and figures from finished runs: mean ± sd over seeds, markdown, learning curves, heatmaps.

Scores stay in [0, 1] everywhere in JSON (as in each run's ``result.json``); tables and figures show them
×100 with one decimal, as papers do. ``sd`` is the sample standard deviation over seeds (n − 1 in the
denominator); with one seed there is none and only the mean is shown.

* a study (ST / MTL / MTL-FT) → ``results.json`` (:func:`summarize_study`), ``results.md``;
* a pairwise study → ``pairwise.json`` (:func:`summarize_pairwise`), ``pairwise.md``, ``pairwise.png``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any

from biomtl.data.readers import splits
from biomtl.evaluate import evaluate, has_zero_shot
from biomtl.experiments.bootstrap import study_interval
from biomtl.experiments.schema import SETTINGS, Study, pair_name, run_name, st_name
from biomtl.lines import numbered_lines
from biomtl.tasks import load_dataset_spec

log = logging.getLogger(__name__)

SCALE = 100.0
CURVE = "learning_curve.png"
LABELS = {"st": "ST", "mtl": "MTL", "mtl_ft": "MTL-FT"}


def summarize(values: list[float | None]) -> dict[str, Any] | None:
    """``{"mean", "sd", "n", "values"}`` of per-seed values; ``None`` when a seed has no value.

    >>> summarize([0.5, 0.7])["mean"]
    0.6
    """
    if not values or any(v is None for v in values):
        return None
    n = len(values)
    mean = math.fsum(values) / n  # type: ignore[arg-type]
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None  # type: ignore[operator]
    return {"mean": mean, "sd": sd, "n": n, "values": list(values)}


def format_stat(stat: dict[str, Any] | None, signed: bool = False) -> str:
    """``85.3 ± 0.4`` (×100); ``+1.2 ± 0.3`` when ``signed``; ``—`` when missing.

    >>> format_stat({"mean": 0.8531, "sd": 0.0042, "n": 3})
    '85.3 ± 0.4'
    """
    if stat is None:
        return "—"
    text = f"{stat['mean'] * SCALE:{'+' if signed else ''}.1f}"
    if stat.get("sd") is not None:
        text += f" ± {stat['sd'] * SCALE:.1f}"
    return text


def markdown_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    """A GitHub markdown table; columns from ``right_from`` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main_score(result: dict, split: str, task: str) -> float | None:
    """``task``'s main metric on ``split`` in a run's result (``None`` when that split was not scored)."""
    scores = (result.get(split) or {}).get(task)
    return None if scores is None else float(scores[result["main_metric"][task]])


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# The study: ST / MTL / MTL-FT per task


def summarize_study(study: Study, results: dict[tuple[int, str], dict]) -> dict:
    """``results.json``: per task and split, mean ± sd over seeds of each setting and of MTL-FT − ST (its
    per-seed values included); the untrained encoder's test score where a task has one (``zero_shot``); the
    bootstrap interval of MTL-FT − ST on test (``bootstrap``, :mod:`~biomtl.experiments.bootstrap`)."""
    tasks, seeds = list(study.tasks), study.seeds
    main_metric = {t: results[(seeds[0], st_name(t))]["main_metric"][t] for t in tasks}
    summary: dict[str, Any] = {
        "study": study.source,
        "profile": study.profile,
        "output_dir": str(study.output_dir),
        "seeds": seeds,
        "tasks": tasks,
        "main_metric": main_metric,
        "settings": {s: LABELS[s] for s in SETTINGS},
        "note": "scores in [0, 1]; mean and sample sd (n-1) over seeds; 'values' follow the order of 'seeds'; "
                "delta = MTL-FT - ST per seed; 'average' averages the tasks per seed first; zero_shot: the "
                "untrained encoder's test score, for tasks that have one; bootstrap: percentile interval of "
                "delta on test, resampling seeds and test units (paired)",
    }
    for split in ("test", "dev"):
        summary[split] = _study_table(results, tasks, seeds, split)
    summary["zero_shot"] = zero_shot_scores(study)
    summary["bootstrap"] = study_interval(study, results)
    summary["runs"] = {
        f"seed{seed}/{name}": {
            "best_epoch": result["best_epoch"],
            "dev": {t: main_score(result, "dev", t) for t in result["tasks"]},
            "test": {t: main_score(result, "test", t) for t in result["tasks"]},
        }
        for (seed, name), result in results.items()
    }
    return summary


def zero_shot_scores(study: Study) -> dict[str, float]:
    """The test main metric of the study's encoder, untrained, on each task that has a zero-shot score
    (sentence similarity: :func:`biomtl.evaluate.evaluate`), on the test examples its ST runs score, with
    their max length and precision. It needs no seed: computed once per study."""
    scores = {}
    for task, entry in study.tasks.items():
        spec = load_dataset_spec(entry, study.data_dirs)
        if not has_zero_shot(spec) or "test" not in splits(spec):
            continue
        config = study.run("st", [task], study.seeds[0], st_name(task)).config
        (result,) = evaluate(
            config.encoder or "default", entry, "test", study.data_dirs, config.eval_batch_size, config.device,
            limit=config.max_eval_examples if config.cap_test else None, precision=config.precision,
            max_length=config.max_length,
        )
        scores[task] = result.scores[result.main_metric]
    return scores


def _study_table(results: dict[tuple[int, str], dict], tasks: list[str], seeds: list[int], split: str) -> dict:
    """One split of ``results.json``: a row per task and the average, each setting's and Δ's statistics."""
    # per_seed[setting][task] = one value per seed
    per_seed = {
        s: {t: [main_score(results[(seed, run_name(s, t))], split, t) for seed in seeds] for t in tasks}
        for s in SETTINGS
    }
    table: dict[str, dict[str, Any]] = {}
    for t in tasks:
        row: dict[str, Any] = {s: summarize(per_seed[s][t]) for s in SETTINGS}
        row["delta"] = summarize(
            [_difference(a, b) for a, b in zip(per_seed["mtl_ft"][t], per_seed["st"][t], strict=True)]
        )
        table[t] = row
    averages = {s: [_mean([per_seed[s][t][k] for t in tasks]) for k in range(len(seeds))] for s in SETTINGS}
    table["average"] = {s: summarize(averages[s]) for s in SETTINGS}
    table["average"]["delta"] = summarize(
        [_difference(a, b) for a, b in zip(averages["mtl_ft"], averages["st"], strict=True)]
    )
    return table


def study_markdown(summary: dict) -> str:
    """``results.md``: a test and a dev table, one row per task plus the average, ×100: each setting's mean ±
    sd, Δ MTL-FT − ST (mean ± sd and per seed); on test also the zero-shot score where a task has one and the
    bootstrap interval of Δ."""
    seeds = ", ".join(map(str, summary["seeds"]))
    profile = f", profile `{summary['profile']}`" if summary["profile"] else ""
    n = len(summary["seeds"])
    spread = f"mean ± sample sd over seeds {seeds} (n = {n})." if n > 1 else f"seed {seeds} (one seed: no sd)."
    parts = [
        f"# Study `{summary['study']}`{profile}\n",
        f"Main metric per task ×100, {spread} "
        "ST: single-task; MTL: one model on all tasks (MT-BERT-Refinement); MTL-FT: MTL encoder fine-tuned "
        "per task (MT-BERT-Fine-Tune). Δ = MTL-FT − ST, per seed, then mean ± sd. Average: mean over tasks "
        "per seed, then over seeds. Δ seed k: the paired difference of seed k's runs. Dev scores are at each "
        "run's selected (best mean dev) epoch. Zero-shot (test): the untrained encoder, where a task has one "
        "(sentence similarity). 95 % interval (test): bootstrap over seeds and test examples, below.\n",
    ]
    zero_shot = summary["zero_shot"]
    for split, title in (("test", "Test"), ("dev", "Dev")):
        test = split == "test"
        header = ["Task", "Metric", *(["Zero-shot"] if test and zero_shot else []), *[LABELS[s] for s in SETTINGS],
                  "Δ MTL-FT − ST", *[f"Δ seed {seed}" for seed in summary["seeds"]], *(["95 % interval"] if test else [])]
        rows = []
        for key in [*summary["tasks"], "average"]:
            row = summary[split][key]
            name = "**Average**" if key == "average" else key
            metric = "" if key == "average" else summary["main_metric"][key]
            cells = [name, metric]
            if test and zero_shot:
                cells.append("—" if key not in zero_shot else f"{zero_shot[key] * SCALE:.1f}")
            cells += [*[format_stat(row[s]) for s in SETTINGS], format_stat(row["delta"], signed=True)]
            per_seed = row["delta"]["values"] if row["delta"] else [None] * n
            cells += ["—" if v is None else f"{v * SCALE:+.1f}" for v in per_seed]
            if test:
                cells.append(_interval_cell(summary["bootstrap"], key))
            rows.append(cells)
        parts.append(f"## {title}\n\n{markdown_table(header, rows, right_from=2)}")
        if test:
            parts.append(_bootstrap_note(summary["bootstrap"]))
    parts.append(_epoch0_note(summary["runs"]))
    parts.append(
        f"Runs: `{summary['output_dir']}/seed<k>/{{st-<task>, mtl, mtlft-<task>}}`, each with "
        "`result.json`, `metrics.jsonl` and `learning_curve.png`.\n"
    )
    return "\n".join(parts)


def _epoch0_note(runs: dict[str, dict]) -> str:
    """The runs whose dev selection kept epoch 0: their scores are the starting point's, not something learnt."""
    kept = [name for name, run in runs.items() if run["best_epoch"] == 0]
    if not kept:
        return "Every run selected a trained epoch (none kept epoch 0).\n"
    return (
        f"{len(kept)} of {len(runs)} runs kept epoch 0, the state before their first training step, because no "
        f"epoch beat it on dev: {', '.join(kept)}. A fresh head is random there (the similarity bi-encoder "
        "needs none: it is the encoder's cosine; with keep_heads an MTL-FT run starts from the MTL heads), so such a "
        "score says that training did not improve on the start in that run.\n"
    )


def _interval_cell(bootstrap: dict, key: str) -> str:
    if "skipped" in bootstrap:
        return "—"
    interval = bootstrap["average"] if key == "average" else bootstrap["tasks"][key]
    return f"[{interval['low'] * SCALE:+.1f}, {interval['high'] * SCALE:+.1f}]"


def _bootstrap_note(bootstrap: dict) -> str:
    if "skipped" in bootstrap:
        return f"No 95 % interval: {bootstrap['skipped']}.\n"
    units = ", ".join(f"{task}: {unit}s" for task, unit in bootstrap["units"].items())
    return (
        f"95 % interval: percentile bootstrap of Δ MTL-FT − ST, {bootstrap['n_resamples']} replicates "
        f"(numpy seed {bootstrap['seed']}). Each replicate draws the seeds and each task's test units ({units}) "
        "with replacement, the same units for ST and MTL-FT (paired), recomputes each task's main metric, and "
        "averages Δ over the drawn seeds, then (Average) over tasks.\n"
    )


# ----------------------------------------------------------------------------------------------------------
# Pairwise MTL: task i trained with task j, versus task i alone


def summarize_pairwise(study: Study, results: dict[tuple[int, str], dict]) -> dict:
    """``pairwise.json``: ST scores, pair scores and their differences per seed, plus n×n mean/sd matrices."""
    tasks, seeds = list(study.tasks), study.seeds
    order = {t: k for k, t in enumerate(tasks)}
    st_values = {t: [main_score(results[(seed, st_name(t))], "test", t) for seed in seeds] for t in tasks}
    st = {t: summarize(st_values[t]) for t in tasks}
    pair: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    delta: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for i, j in itertools.permutations(tasks, 2):
        a, b = sorted((i, j), key=order.__getitem__)
        values = [main_score(results[(seed, pair_name(a, b))], "test", i) for seed in seeds]
        pair[i][j] = summarize(values)
        delta[i][j] = summarize(
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
        cells = [f"**{format_stat(summary['st'][i])}**" if i == j
                 else format_stat(summary["delta"][i][j], signed=True) for j in tasks]
        rows.append([i, *cells])
    profile = f", profile `{summary['profile']}`" if summary["profile"] else ""
    seeds = ", ".join(map(str, summary["seeds"]))
    spread = f"mean ± sample sd over seeds {seeds}" if len(summary["seeds"]) > 1 else f"seed {seeds}, no sd"
    return (
        f"# Pairwise MTL `{summary['study']}`{profile}\n\n"
        f"Row i, column j: change of task i's test main metric ×100 when trained together with task j, versus "
        f"task i alone ({spread}). Diagonal (bold): "
        "the single-task score. Heatmap: `pairwise.png`.\n\n"
        + markdown_table(["task i \\ with j", *tasks], rows)
    )


# ----------------------------------------------------------------------------------------------------------
# Figures (Agg canvas on a bare Figure: no pyplot state, no global backend switch)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def plot_learning_curve(run_dir: Path, title: str | None = None) -> Path:
    """``<run>/learning_curve.png``: dev main metric and train loss per task vs epoch, from ``metrics.jsonl``."""
    from matplotlib.ticker import MaxNLocator

    result = json.loads((run_dir / "result.json").read_text())
    rows = [json.loads(line) for _, line in numbered_lines((run_dir / "metrics.jsonl").read_text())]
    dev = [r for r in rows if r.get("split") == "dev"]
    fig = _figure(10, 3.6)
    ax_dev, ax_loss = fig.subplots(1, 2)
    for task, key in result["main_metric"].items():
        epochs = [r["epoch"] for r in dev if task in r["scores"]]
        ax_dev.plot(epochs, [r["scores"][task][key] * SCALE for r in dev if task in r["scores"]],
                    marker="o", label=f"{task} ({key})")
        epochs = [r["epoch"] for r in dev if task in r.get("train_loss", {})]
        ax_loss.plot(epochs, [r["train_loss"][task] for r in dev if task in r.get("train_loss", {})],
                     marker="o", label=task)
    for ax in (ax_dev, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axvline(result["best_epoch"], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_dev.set_ylabel("dev main metric ×100")
    ax_loss.set_ylabel("mean train loss")
    ax_dev.legend(fontsize="small")
    ax_loss.legend(fontsize="small")
    fig.suptitle(f"{title or run_dir.name} (best epoch {result['best_epoch']}, dotted)")
    path = run_dir / CURVE
    _save(fig, path)
    return path


def plot_pairwise(
    tasks: list[str], delta: list[list[dict | None]], st: dict[str, dict | None], path: Path, title: str
) -> Path:
    """Heatmap of ``delta[i][j]`` (task i trained with task j, minus task i alone), ×100.

    Diverging colours centred at 0 (blue = helped, red = hurt); each cell is annotated with mean and ± sd.
    The diagonal is grey and shows the single-task score instead.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    n = len(tasks)
    grid = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j and delta[i][j] is not None:
                grid[i, j] = delta[i][j]["mean"] * SCALE  # type: ignore[index]
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    limit = max(limit, 0.1)
    cmap = colormaps["RdBu"].with_extremes(bad="#d9d9d9")
    size = 1.2 + 1.1 * n
    fig = _figure(size + 1.5, size)
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=TwoSlopeNorm(0.0, -limit, limit))
    for i in range(n):
        for j in range(n):
            if i == j:
                text = f"ST\n{format_stat(st[tasks[i]])}".replace(" ± ", "\n±")
            else:
                text = format_stat(delta[i][j], signed=True).replace(" ± ", "\n±")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(n), tasks, rotation=35, ha="right")
    ax.set_yticks(range(n), tasks)
    ax.set_xlabel("trained together with (task j)")
    ax.set_ylabel("evaluated task (i)")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="Δ test main metric ×100 (pair − ST)")
    _save(fig, path)
    return path
