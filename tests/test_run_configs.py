"""The shipped single-task run configs: one per public task, each valid as `biomtl train` reads it, each saying
how long it took on the 2-core development CPU."""

from __future__ import annotations

import re

import pytest

from biomtl.cli import main
from biomtl.config import REPO_CONFIGS, load_run_config

PUBLIC_TASKS = ["bc5cdr-chemical", "bc5cdr-disease", "chemprot", "ddi", "biosses", "hoc"]
RUNS = REPO_CONFIGS / "runs"


def test_every_public_task_has_a_run_config():
    assert {p.stem for p in RUNS.glob("*.yaml")} >= set(PUBLIC_TASKS)


@pytest.mark.parametrize("task", PUBLIC_TASKS)
def test_run_config_trains_its_task(task, capsys):
    path = RUNS / f"{task}.yaml"
    config = load_run_config(path)
    assert config.tasks == [task] and config.output_dir == f"runs/{task}"
    text = path.read_text()  # a comment gives the wall time measured on the development CPU, or says it is not yet
    assert "wall time" in text and (re.search(r"\d+ min \d+ s", text) or "not yet measured" in text)
    # As `biomtl train` checks it before its first step: `tasks: [hoc]` is the shipped dataset, not this file.
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{path}: ok (run config")
