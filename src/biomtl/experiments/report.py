"""Tables and figures from finished runs: mean ± sd over seeds, markdown, learning curves, heatmaps.

Scores stay in [0, 1] everywhere in JSON (as in each run's ``result.json``); tables and figures show them
×100 with one decimal, as papers do. ``sd`` is the sample standard deviation over seeds (n − 1 in the
denominator); with one seed there is none and only the mean is shown.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCALE = 100.0
CURVE = "learning_curve.png"


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
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
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
