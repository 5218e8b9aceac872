"""`biomtl study` and `biomtl pairwise` under torchrun: two CPU processes (gloo) with per-rank batch B give the
results of one process with batch 2B; rank 0 alone writes the study's files; a bad config or a changed run stops
both ranks with one line and exit status 2.

Under torchrun the ranks run this file (``python tests/test_study_ddp.py study STUDY.yaml``): it is the biomtl
CLI with the study's writers (summaries, plots) logging which rank called them, so a write by another rank
than 0 is seen even when it leaves the same bytes behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_ddp import _free_port

WRITES = "BIOMTL_TEST_WRITES"  # a rank appends the files it writes to $BIOMTL_TEST_WRITES.rank<k>
TASKS = ("toy-ner", "toy-rel")


def _study(path: Path, tasks: dict[str, Path], encoder: str, out: Path, batch_size: int) -> Path:
    """ST + MTL + MTL-FT on 2 toy tasks, 1 seed, dropout 0. 9 training examples: a global batch of 4 leaves a
    last batch of one row, which one rank trains on while the other repeats it with weight 0."""
    path.write_text(yaml.safe_dump({
        "tasks": [str(tasks[t]) for t in TASKS], "output_dir": str(out), "seeds": 1,
        "base": {
            "encoder": encoder, "epochs": 1, "batch_size": batch_size, "eval_batch_size": 16, "lr": 1e-3,
            "max_length": 32, "num_threads": 1, "max_train_examples": 9, "max_eval_examples": 8, "dropout": 0.0,
            "save_predictions": False, "log_every": 1000, "device": "cpu",
        },
        "mtl": {"epochs": 2},
    }))
    return path


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def _torchrun(*args: str, writes: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2`` on this file's CLI, which logs each rank's writes under ``writes``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               __file__, *args, "--quiet"]
    return subprocess.run(command, env=_env(**{WRITES: str(writes)}), capture_output=True, text=True, timeout=600)


def _writes(log: Path, rank: int) -> list[str]:
    path = Path(f"{log}.rank{rank}")
    return path.read_text().splitlines() if path.exists() else []


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: str, toy_tasks: dict[str, Path]) -> dict:
    """The study and then the pairwise study (which reuses its ST runs, and trains one pair) in one process
    with batch 4 and under torchrun with 2 × 2."""
    from biomtl.experiments.pairwise import run_pairwise
    from biomtl.experiments.study import run_study

    root = tmp_path_factory.mktemp("study-ddp")
    one = _study(root / "one.yaml", toy_tasks, tiny_encoder, root / "one", batch_size=4)
    run_study(one, profile=None, progress=False)
    run_pairwise(one, profile=None, progress=False)

    two = _study(root / "two.yaml", toy_tasks, tiny_encoder, root / "two", batch_size=2)
    log = root / "writes"
    runs = [_torchrun(command, str(two), "--profile", "", writes=log) for command in ("study", "pairwise")]
    return {"one": root / "one", "two": root / "two", "two.yaml": two, "runs": runs, "writes": log}


@pytest.mark.slow
def test_two_processes_give_the_results_of_one(studies):
    for run in studies["runs"]:
        assert run.returncode == 0, run.stderr
    one, two = studies["one"], studies["two"]
    assert _files(two) == _files(one)  # the same runs and files, and no temporary file left behind
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    for split in ("test", "dev"):
        assert list(b[split]) == [*TASKS, "average"]
        for row in [*TASKS, "average"]:
            for column in ("st", "mtl", "mtl_ft", "delta"):
                assert b[split][row][column]["values"] == pytest.approx(a[split][row][column]["values"], abs=1e-4)
    assert {r: v["best_epoch"] for r, v in b["runs"].items()} == {r: v["best_epoch"] for r, v in a["runs"].items()}
    a, b = (json.loads((d / "pairwise.json").read_text()) for d in (one, two))
    assert b["tasks"] == list(TASKS)
    assert b["mean"] == [[pytest.approx(v, abs=1e-4) for v in row] for row in a["mean"]]
    md = (two / "results.md").read_text()
    assert md.count("| **Average** |") == 2 and md.endswith("`learning_curve.png`.\n")  # test and dev, complete
    assert "| toy-rel |" in (two / "pairwise.md").read_text()


@pytest.mark.slow
def test_rank_zero_alone_writes_the_summaries_and_plots(studies):
    two, log = studies["two"], studies["writes"]
    assert _writes(log, 1) == []
    runs = [f"seed1/{r}" for r in ("st-toy-ner", "st-toy-rel", "mtl", "mtlft-toy-ner", "mtlft-toy-rel",
                                   "pair-toy-ner+toy-rel")]
    expected = ["results.json", "results.md", "pairwise.json", "pairwise.md", "pairwise.png",
                *(f"{r}/learning_curve.png" for r in runs)]
    assert sorted(_writes(log, 0)) == sorted(str(two / name) for name in expected)  # each once


def _two_ranks(*args: str) -> list[subprocess.CompletedProcess]:
    """``python -m biomtl ARGS`` as ranks 0 and 1 of one torchrun job (the environment torchrun gives them),
    each with its own exit status and output."""
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, "-m", "biomtl", *args, "--quiet"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port))
        for rank in range(2)
    ]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)  # a rank left waiting for the other is a failure
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return done


@pytest.mark.slow
def test_a_changed_run_stops_both_ranks_with_one_line(studies):
    """Rank 0 alone looks at the run directories (here: trained with another lr) and stops; rank 1, already in
    the process group, stops with it, silently."""
    two = studies["two"]
    before = (two / "results.json").stat().st_mtime_ns
    rank0, rank1 = _two_ranks("study", str(studies["two.yaml"]), "--profile", "", "lr=0.002")
    assert (rank0.returncode, rank1.returncode) == (2, 2), rank0.stderr + rank1.stderr
    assert rank0.stderr.splitlines() == [
        f"biomtl: error: {two}/seed1/st-toy-ner: this run was trained with lr=0.001 (now 0.002) (and 4 more runs); "
        f"use another output_dir for the new settings, or delete {two}/seed1/st-toy-ner to retrain it"
    ]
    assert (rank1.stdout, rank1.stderr) == ("", "")
    assert (two / "results.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_bad_study_config_stops_both_ranks_with_one_line(tmp_path, toy_tasks):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"tasks": [str(toy_tasks["toy-rel"])], "output_dir": str(tmp_path / "o"),
                                    "base": {"epoch": 1}}))
    rank0, rank1 = _two_ranks("study", str(path), "--profile", "")
    assert (rank0.returncode, rank1.returncode) == (2, 2), rank0.stderr + rank1.stderr
    assert rank0.stderr.splitlines() == [f"biomtl: error: {path}: base: unknown key 'epoch'; did you mean 'epochs'?"]
    assert (rank1.stdout, rank1.stderr) == ("", "")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------------
# A rank under torchrun: the biomtl CLI, with the study's writers logging their calls.


def _log_writes(log: str) -> None:
    from biomtl.experiments import report

    rank = os.environ.get("RANK", "0")

    def logged(write: Callable[..., Any], where: int) -> Callable[..., Any]:
        """``write`` logging its argument ``where`` (the path) first."""

        def call(*args: Any, **kwargs: Any) -> Any:
            with open(f"{log}.rank{rank}", "a") as f:
                f.write(f"{args[where]}\n")
            return write(*args, **kwargs)

        return call

    report.write_json = logged(report.write_json, 0)  # (path, data)
    report.write_text = logged(report.write_text, 0)  # (path, text)
    report._save = logged(report._save, 1)  # (fig, path)

if __name__ == "__main__":
    from biomtl.cli import main

    _log_writes(os.environ[WRITES])
    sys.exit(main(sys.argv[1:]))
