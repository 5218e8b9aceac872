"""Shared pieces of the benchmark scripts: machine description, peak memory, Markdown tables, JSON output.

Each script in this folder is run as ``python benchmarks/<name>.py``; this module is imported as a sibling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TASK = "bc5cdr-chemical"


def command_line() -> str:
    """The exact command that is running (for the record in BENCHMARKS.md)."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The flags that ``hf_recipe.py`` and ``biomtl_train.py`` share (same meaning, same defaults)."""
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--max-train-examples", type=int, default=None, help="seeded subset of train (all if unset)")
    p.add_argument("--max-eval-examples", type=int, default=None, help="seeded subset of dev and test (all if unset)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast; fp32 otherwise")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--prepared", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import transformers

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f"GPU {info['gpu']} (CUDA {info.get('cuda')})" if info["gpu"] else "no GPU"
    return (
        f"{info['cpu']}, {info['usable_cores']} usable cores ({info['torch_threads']} torch threads), {gpu}; "
        f"Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}"
    )


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak memory so far and what it measures: CUDA ``max_memory_allocated`` since the last reset on a GPU,
    the process's peak resident set size (``getrusage``, everything since the process started) on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss"  # ru_maxrss is in KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall time of a block, synchronising the GPU on both ends."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def prepared_dir(value: str | None) -> Path | None:
    """``--prepared`` (else ``$BIOMTL_DATA``, else biomtl's default cache), checked to hold the task files."""
    from biomtl.corpora import default_prepared_dir

    path = Path(value) if value else default_prepared_dir()
    if not (path / TASK / "train.conll").is_file():
        sys.exit(
            f"{path / TASK / 'train.conll'} not found: run `BIOMTL_CORPORA=DIR biomtl data prepare --out {path}` "
            "or pass --prepared DIR"
        )
    return path
