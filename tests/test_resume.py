"""Resume: a run killed mid-epoch and resumed ends bit-identical to an uninterrupted run with the same seed.

The slow test is the real thing: `biomtl train` in a subprocess, ``kill -9`` once a mid-epoch checkpoint
exists, then `biomtl train --resume`. The fast test interrupts in-process (``interruption.interrupted_after``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_toy_tasks
from interruption import interrupted_after
from safetensors.torch import load_file

from biomtl.checkpoint import CHECKPOINT, find_checkpoint
from biomtl.train import train


def _metrics(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field (the only thing allowed to differ)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("elapsed_s", None)
    return rows


def assert_same_run(a: Path, b: Path) -> None:
    """Same metrics (train losses, dev and test scores, LR) and bit-identical best weights."""
    assert _metrics(a) == _metrics(b)
    wa, wb = load_file(a / "best" / "model.safetensors"), load_file(b / "best" / "model.safetensors")
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
    ca, cb = load_file(a / CHECKPOINT / "model.safetensors"), load_file(b / CHECKPOINT / "model.safetensors")
    assert all(torch.equal(ca[k], cb[k]) for k in ca)  # the last weights too, not only the best epoch's
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    ra.pop("output_dir"), rb.pop("output_dir")
    assert ra == rb


@pytest.mark.parametrize("changes", [{}, {"group_by_length": False, "pack": True}, {"geometry_anchor": 5.0},
                                     {"geometry_anchor": 5.0, "anchor_measure": "embeddings"}, "anchor-texts",
                                     "anchor-to-encoder"],
                         ids=["grouped", "random-packed", "geometry-anchor", "embedding-anchor", "anchor-texts",
                              "anchor-to-encoder"])
def test_stopped_run_resumes_identically(run_config, tmp_path, changes, toy_tasks):
    """In-process: stop after 13 steps (checkpoints every 5), resume, compare with a straight run; also with
    random batches packed (the NER run configs), and with each kind of anchor (``anchor-texts``: the anchor's
    reference rows follow the step, so the resumed run reads the same ones; ``anchor-to-encoder``: a fine-tune
    held to the pretrained encoder, which the resumed run loads again)."""
    if changes == "anchor-texts":
        changes = {"geometry_anchor": 5.0, "anchor_texts": str(toy_tasks["toy-sts"])}
    elif changes == "anchor-to-encoder":
        train(run_config(output_dir=str(tmp_path / "start"), epochs=1, save_predictions=False), progress=False)
        changes = {"geometry_anchor": 5.0, "anchor_measure": "embeddings", "anchor_to": "encoder",
                   "init_from": str(tmp_path / "start" / "best")}
    straight = run_config(output_dir=str(tmp_path / "straight"), checkpoint_every=5, **changes)
    train(straight, progress=False)
    config = run_config(output_dir=str(tmp_path / "resumed"), checkpoint_every=5, **changes)
    with interrupted_after(13):
        train(config, progress=False)
    assert not (tmp_path / "resumed" / "result.json").exists()
    state = json.loads((tmp_path / "resumed" / CHECKPOINT / "state.json").read_text())
    assert (state["epoch"], state["global_step"]) == (0, 10)  # resumes mid-epoch, 3 steps are redone
    train(config, progress=False, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def _biomtl(*args: str) -> list[str]:
    return [sys.executable, "-m", "biomtl.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _read_state(out: Path) -> dict | None:
    try:
        return json.loads((out / CHECKPOINT / "state.json").read_text())
    except (OSError, ValueError):  # not written yet, or swapped while we read
        return None


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_bit_identical(tiny_encoder, tmp_path):
    tasks = write_toy_tasks(tmp_path / "data", n_train=48)
    run = {
        "tasks": [str(p) for p in tasks.values()], "encoder": tiny_encoder, "output_dir": str(tmp_path / "unused"),
        "seed": 7, "epochs": 2, "batch_size": 4, "eval_batch_size": 32, "lr": 1e-3, "max_length": 32,
        "checkpoint_every": 4, "log_every": 4, "num_threads": 1, "device": "cpu",
    }
    steps_per_epoch = 4 * 48 // 4  # 4 tasks, 48 examples each, batch 4
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    done = subprocess.run(_biomtl("train", str(path), "--quiet", "--output-dir", str(straight)),
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(_biomtl("train", str(path), "--quiet", "--output-dir", str(killed)),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # kill -9 as soon as the second epoch has a mid-epoch checkpoint
            state = _read_state(killed)
            if state and state["epoch"] == 1 and state["step_in_epoch"] > 0:
                break
            assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    ckpt = find_checkpoint(killed)
    assert ckpt is not None
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < steps_per_epoch, state

    resumed = subprocess.run(_biomtl("train", str(path), "--quiet", "--resume", "--output-dir", str(killed)),
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} at epoch 2 step {state['step_in_epoch']}" in resumed.stderr
    assert_same_run(straight, killed)
    assert [row["split"] for row in _metrics(killed)] == ["dev", "dev", "dev", "test"]  # epochs 0, 1, 2
