"""Training with DistributedDataParallel (`torchrun --nproc_per_node=N -m biomtl train`): two CPU processes
(gloo) with per-rank batch B match one process with batch 2B, step by step; a killed 2-process run resumes.

The toy tasks have 21 training examples, so each task's last global batch has one row: one rank trains on it,
the other repeats it with weight 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_toy_tasks
from safetensors.torch import load_file

from biomtl import distributed
from biomtl.checkpoint import CHECKPOINT
from biomtl.config import RunConfig
from biomtl.distributed import Ranks, Share, shard_batch

# ------------------------------------------------------------------------------------------------------
# Sharding a batch (no process group needed)


def _batch(rows: int, labelled: list[int]) -> dict[str, torch.Tensor]:
    labels = torch.full((rows, 6), -100)
    for i, n in enumerate(labelled):
        labels[i, :n] = 0
    return {"input_ids": torch.arange(rows * 6).view(rows, 6), "labels": labels}


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"] != -100).sum())


def test_each_rank_takes_a_contiguous_slice_weighted_by_its_loss_units():
    batch = _batch(5, [1, 2, 3, 4, 5])
    parts = [shard_batch(batch, _tokens, Ranks(r, 2, r)) for r in range(2)]
    assert [p["input_ids"][:, 0].tolist() for p, _ in parts] == [[0, 6], [12, 18, 24]]
    assert [s.fraction for _, s in parts] == [3 / 15, 12 / 15]
    assert [s.weight for _, s in parts] == [2 * 3 / 15, 2 * 12 / 15]  # DDP divides by 2 again
    assert sum(s.fraction for _, s in parts) == 1


def test_a_rank_without_rows_repeats_one_with_weight_zero():
    batch = _batch(1, [4])
    assert shard_batch(batch, _tokens, Ranks(0, 2, 0))[1] == Share(0.0, 0.0)
    part, share = shard_batch(batch, _tokens, Ranks(1, 2, 1))
    assert share == Share(1.0, 2.0) and torch.equal(part["input_ids"], batch["input_ids"])


def test_one_process_keeps_the_whole_batch():
    batch = _batch(3, [1, 1, 1])
    part, share = shard_batch(batch, _tokens, Ranks())
    assert part is batch and share == distributed.WHOLE
    assert distributed.is_main() and distributed.main_first(lambda: 7) == 7
    loss = torch.tensor(1.5)
    assert distributed.global_loss(loss, share) is loss


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.from_env() == Ranks(1, 4, 1) and not distributed.from_env().is_main
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(distributed.BiomtlError, match=r"^WORLD_SIZE='four' in the environment is not a whole number"):
        distributed.from_env()


# ------------------------------------------------------------------------------------------------------
# Two processes against one


@pytest.fixture(scope="module")
def ddp_run(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 4-task run with dropout 0, in fp32 (``auto`` is bf16 on a CPU with native bf16, whose rounding depends
    on the batch's shape); ``batch_size`` is per rank."""
    tasks = write_toy_tasks(tmp_path_factory.mktemp("ddp-data"), n_train=21, seed=3)
    return {
        "tasks": [str(p) for p in tasks.values()], "encoder": tiny_encoder, "seed": 5, "epochs": 2,
        "batch_size": 2, "eval_batch_size": 16, "lr": 1e-3, "max_length": 32, "num_threads": 1, "device": "cpu",
        "dropout": 0.0, "log_every": 1, "checkpoint_every": 3, "precision": "fp32",
    }


def _train_recording_losses(values: dict, out: Path, losses_file: Path) -> None:
    """``train`` with every step's (global) loss written to ``losses_file``."""
    from biomtl.train import TrainState, train

    losses: list[list] = []
    real = TrainState.record_step

    def record(self: TrainState, task: str, loss: torch.Tensor) -> None:
        losses.append([task, float(loss)])
        real(self, task, loss)

    TrainState.record_step = record  # type: ignore[method-assign]
    try:
        train(RunConfig(**{**values, "output_dir": str(out)}), progress=False)
    finally:
        TrainState.record_step = real  # type: ignore[method-assign]
    if distributed.is_main():
        losses_file.write_text(json.dumps(losses))


def _rank(rank: int, values: dict, out: str, losses_file: str, port: int) -> None:
    """One spawned rank, with the environment torchrun would give it."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    try:
        _train_recording_losses(values, Path(out), Path(losses_file))
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(ddp_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process with the global batch (2 × 2)."""
    out = tmp_path_factory.mktemp("single") / "run"
    _train_recording_losses({**ddp_run, "batch_size": 4}, out, out.parent / "losses.json")
    return out


def _assert_close_runs(a: Path, b: Path) -> None:
    """Same metrics rows (losses and dev/test scores within float tolerance) and final weights."""
    rows_a, rows_b = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    assert [(r["epoch"], r["split"]) for r in rows_a] == [(r["epoch"], r["split"]) for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["mean_main"] == pytest.approx(rb["mean_main"], abs=1e-4)
        for task, loss in (ra.get("train_loss") or {}).items():
            assert loss == pytest.approx(rb["train_loss"][task], rel=1e-5)
    wa, wb = (load_file(d / CHECKPOINT / "model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-4, worst


@pytest.mark.slow
def test_two_processes_match_one_with_the_global_batch(ddp_run, single, tmp_path):
    out = tmp_path / "ddp"
    torch.multiprocessing.start_processes(
        _rank, args=(ddp_run, str(out), str(tmp_path / "losses.json"), _free_port()), nprocs=2, start_method="spawn"
    )
    one = json.loads((single.parent / "losses.json").read_text())
    two = json.loads((tmp_path / "losses.json").read_text())
    assert len(one) == len(two) == 2 * 4 * 6  # 2 epochs, 4 tasks, ceil(21 / 4) steps each
    assert [t for t, _ in one] == [t for t, _ in two]  # the same task at every step
    assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=1e-5)
    _assert_close_runs(single, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
            "-m", "biomtl", *args]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _kill_9(proc: subprocess.Popen) -> None:
    """``kill -9`` torchrun and every rank at once."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_a_killed_two_process_run_resumes(ddp_run, single, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(ddp_run))
    out = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun("train", str(path), "--quiet", "--output-dir", str(out)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # kill every process as soon as the second epoch has a mid-epoch checkpoint
            try:
                state = json.loads((out / CHECKPOINT / "state.json").read_text())
            except (OSError, ValueError):
                state = None
            if state and state["epoch"] == 1 and state["step_in_epoch"] > 0:
                break
            assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.01)
        _kill_9(proc)
    finally:
        _kill_9(proc)
        proc.wait()
        proc.stderr.close()
    time.sleep(1)
    assert not (out / "result.json").exists()

    resumed = subprocess.run(_torchrun("train", str(path), "--quiet", "--resume", "--output-dir", str(out)),
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at epoch 2 step {state['step_in_epoch']}" in resumed.stderr
    assert resumed.stdout.count("model: ") == 1  # rank 0 alone prints the result
    _assert_close_runs(single, out)
