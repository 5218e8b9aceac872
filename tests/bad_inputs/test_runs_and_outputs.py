"""Overrides, devices and lengths, output locations, --overwrite and --resume, path placeholders.

The cases run like those of ``test_bad_inputs.py`` (the same workspace and checks): exit status 2, one stderr
line asserted verbatim, nothing written and no temporary left behind. A few cases simulate the machine (a
full or read-only filesystem, a directory this process may not write) with a patch applied just before the
command runs. ``docs/bad-inputs.md`` lists them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_bad_inputs import (  # noqa: F401
    DOCS,
    Case,
    Workspace,
    _predict,
    _snapshot,
    cli_case,
    edit,
    run_case,
    task_case,
    trained,
)

import biomtl.atomic
from biomtl.cli import main
from biomtl.rundir import RESULT

Patch = Callable[[pytest.MonkeyPatch, Workspace], None]


def _train(ws: Workspace, *args: str) -> list[str]:
    return ["train", str(ws.run), *args, "--quiet"]


def _file(ws: Workspace) -> Path:
    path = ws.root / "file.txt"
    path.write_text("a user's file\n")
    return path


def _user_dir(*names: str) -> Callable[[Workspace], list[str]]:
    def argv(ws: Workspace) -> list[str]:
        ws.out.mkdir()
        for name in names:
            (ws.out / name).write_text("the user's own data\n")
        return _train(ws, "--overwrite")

    return argv


def _run_dir_with_user_file(ws: Workspace) -> list[str]:
    (ws.resumable / "notes.txt").write_text("the user's notes\n")
    return ["train", str(ws.resumable / "config.yaml"), "--overwrite", "--quiet", "--output-dir", str(ws.resumable)]


def _resume(finished: bool, *overrides: str) -> Callable[[Workspace], list[str]]:
    def argv(ws: Workspace) -> list[str]:
        run = ws.resumable
        if finished:
            shutil.copy(ws._trained / RESULT, run / RESULT)
        return ["train", str(run / "config.yaml"), *overrides, "--resume", "--quiet", "--output-dir", str(run)]

    return argv


def _failing_write(code: int) -> Patch:
    """Every file write of biomtl.atomic fails as a full (ENOSPC) or read-only (EROFS) filesystem would."""

    def patch(mp: pytest.MonkeyPatch, ws: Workspace) -> None:
        def write(fd: int, data: bytes) -> None:
            os.close(fd)
            raise OSError(code, os.strerror(code))

        mp.setattr(biomtl.atomic, "_write_file", write)

    return patch


def _not_writable(name: str) -> Patch:
    """``ws.root / name`` reads as a directory this process may not write (as a non-root user would see a
    read-only one; the tests may run as root, for whom every directory is writable)."""

    def patch(mp: pytest.MonkeyPatch, ws: Workspace) -> None:
        real = os.access
        mp.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ws.root / name else real(p, mode, **kw))

    return patch


def _read_only_dir(ws: Workspace) -> Path:
    (ws.root / "ro").mkdir()
    return ws.root / "ro"


def _corpora(ws: Workspace) -> str:
    (ws.root / "corpora").mkdir(exist_ok=True)
    return str(ws.root / "corpora")


def _prepare(ws: Workspace, out: Path) -> list[str]:
    return ["data", "prepare", "--corpora", _corpora(ws), "--out", str(out), "--tasks", "biosses"]


def _files(task: str, old: str, new: str) -> Callable[[Workspace], None]:
    """Replace the data file ``old`` by the path ``new`` (both under the data directory) in ``task``'s config."""
    return lambda ws: edit(ws.tasks[task], f"{ws.data}/{old}", f"{ws.data}/{new}")


def run_paths_case(id: str, message: str, values: Callable[[Workspace], dict]) -> Case:
    """A run config whose ``values`` name paths in the workspace, checked by ``validate`` and by ``train``."""
    return Case(id, {
        "validate": lambda ws: ["validate", str(ws.write_run(**values(ws)))],
        "train": lambda ws: ["train", str(ws.write_run(**values(ws))), "--quiet"],
    }, message)


NO_GPU = not torch.cuda.is_available()

CASES = [
    # --- overrides ---------------------------------------------------------------------------------------------
    cli_case("override-nested-in-list", lambda ws: _train(ws, "tasks.x=1"),
             "override 'tasks.x=1': tasks has no keys (list value); set it whole (tasks=...)"),
    cli_case("override-nested-in-number", lambda ws: _train(ws, "epochs.x=2"),
             "override 'epochs.x=2': epochs has no keys (int value); set it whole (epochs=...)"),
    cli_case("override-nested-unknown-key", lambda ws: _train(ws, "foo.bar=1"), "re:{run}: unknown key 'foo'; known keys: .*"),
    cli_case("override-empty-key", lambda ws: _train(ws, "=3"),
             "override '=3': expected key=value (a key such as epochs or loss_weights.bc2gm)"),
    cli_case("override-empty-key-part", lambda ws: _train(ws, "loss_weights..x=1"),
             "override 'loss_weights..x=1': expected key=value (a key such as epochs or loss_weights.bc2gm)"),
    cli_case("override-loss-weight-unknown-task", lambda ws: _train(ws, "loss_weights.toy-chem=2"),
             "{run}: loss_weights: 'toy-chem' is not one of the run's tasks ({d}/toy-ner.yaml)"),
    cli_case("override-wrong-type", lambda ws: _train(ws, "batch_size=[4]"), "{run}: key 'batch_size' must be int, got list [4]"),
    cli_case("validate-override-nested-in-list", lambda ws: ["validate", str(ws.run), "tasks.x=1"],
             "override 'tasks.x=1': tasks has no keys (list value); set it whole (tasks=...)"),
    cli_case("validate-override-unknown-key", lambda ws: ["validate", str(ws.run), "epoch=2"],
             "{run}: unknown key 'epoch'; did you mean 'epochs'?"),
    # --- devices and lengths -----------------------------------------------------------------------------------
    run_case("run-device-unknown", "{run}: device: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps", device="tpu"),
    cli_case("override-device-unknown", lambda ws: _train(ws, "device=gpu"),
             "{run}: device: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
    run_case("run-device-not-available", "device: cuda is not available here (torch finds no CUDA GPU); use device=cpu or auto",
             device="cuda"),
    cli_case("override-device-not-available", lambda ws: _train(ws, "device=cuda:1"),
             "device: cuda:1 is not available here (torch finds no CUDA GPU); use device=cpu or auto"),
    run_case("run-max-length-above-positions",
             "max_length: 512 is more than the encoder's max_position_embeddings (128); set max_length to 128 or less",
             max_length=512),
    cli_case("override-max-length-above-positions", lambda ws: _train(ws, "max_length=4096"),
             "max_length: 4096 is more than the encoder's max_position_embeddings (128); set max_length to 128 or less"),
    run_case("run-pack-with-compile",
             "{run}: pack: packed texts change shape every batch, which compile: true cannot follow; choose one",
             pack=True, compile=True),
    cli_case("override-pack-encoder-cannot", lambda ws: _train(ws, "pack=true"),
             "re:pack: the encoder .* cannot read packed texts \\(it must take position_ids and use transformers' "
             "attention functions\\); use pack: false"),
    cli_case("validate-run-unknown-task", lambda ws: ["validate", str(ws.write_run(tasks=["toy-nr"]))],
             "re:tasks: no dataset config found for 'toy-nr'; known tasks: bc2gm, .*"),
    run_paths_case("run-task-config-missing", "{w}/nope.yaml: config file not found",
                   lambda ws: {"tasks": [str(ws.root / "nope.yaml")]}),
    run_paths_case("run-init-from-missing", "{w}/no-model: model directory not found",
                   lambda ws: {"init_from": str(ws.root / "no-model")}),
    # --- output locations --------------------------------------------------------------------------------------
    cli_case("output-dir-is-a-file", lambda ws: _train(ws, f"output_dir={_file(ws)}"),
             "output_dir: {w}/file.txt is a file, not a directory"),
    cli_case("output-dir-under-a-file", lambda ws: _train(ws, "--output-dir", f"{_file(ws)}/run"),
             "output_dir: {w}/file.txt is a file, so {w}/file.txt/run cannot be created under it"),
    cli_case("output-dir-not-writable", lambda ws: _train(ws, f"output_dir={_read_only_dir(ws)}/run"),
             "output_dir: {w}/ro is not writable"),
    cli_case("train-disk-full", lambda ws: _train(ws), "{out}/biomtl-run.json: cannot write (No space left on device)"),
    cli_case("train-read-only-filesystem", lambda ws: _train(ws), "{out}/biomtl-run.json: cannot write (Read-only file system)"),
    cli_case("predict-output-is-a-directory", lambda ws: [*_predict(ws, "toy-ner", "Aspirin.", "input.txt")[:-1], str(ws.root)],
             "--output: {w} is a directory; name the file to write"),
    cli_case("predict-output-under-a-file", lambda ws: [*_predict(ws, "toy-ner", "Aspirin.", "input.txt")[:-1], f"{_file(ws)}/out.jsonl"],
             "--output: {w}/file.txt is a file, not a directory"),
    cli_case("predict-disk-full", lambda ws: _predict(ws, "toy-ner", "Aspirin.", "input.txt"),
             "{w}/out.jsonl: cannot write (No space left on device)"),
    cli_case("predict-read-only-filesystem", lambda ws: _predict(ws, "toy-ner", "Aspirin.", "input.txt"),
             "{w}/out.jsonl: cannot write (Read-only file system)"),
    cli_case("prepare-out-is-a-file", lambda ws: _prepare(ws, _file(ws)), "--out: {w}/file.txt is a file, not a directory"),
    cli_case("prepare-out-under-a-file", lambda ws: _prepare(ws, _file(ws) / "tasks"),
             "--out: {w}/file.txt is a file, so {w}/file.txt/tasks cannot be created under it"),
    cli_case("prepare-out-not-writable", lambda ws: _prepare(ws, _read_only_dir(ws) / "tasks"), "--out: {w}/ro is not writable"),
    # --- --overwrite and --resume ------------------------------------------------------------------------------
    cli_case("overwrite-user-directory", _user_dir("notes.txt", "data.tsv"),
             "{out}: --overwrite refused: data.tsv was not written by biomtl; biomtl replaces only directories it "
             "wrote (move your files away or choose another output_dir)"),
    cli_case("overwrite-user-directory-with-run-file-names", _user_dir("metrics.jsonl"),
             "{out}: --overwrite refused: no biomtl-run.json (not a biomtl run directory); biomtl replaces only "
             "directories it wrote (move your files away or choose another output_dir)"),
    cli_case("overwrite-run-with-a-user-file", _run_dir_with_user_file,
             "{r}: --overwrite refused: notes.txt was not written by biomtl; biomtl replaces only directories it "
             "wrote (move your files away or choose another output_dir)"),
    cli_case("resume-with-changed-config", _resume(False, "epochs=3", "lr=0.001"),
             "{r}: --resume with a config that differs from the run's config.yaml (epochs 1 → 3, lr 5e-05 → 0.001); "
             "resume without those overrides, or start again with --overwrite"),
    cli_case("resume-finished-with-changed-config", _resume(True, "seed=7"),
             "{r}: --resume with a config that differs from the run's config.yaml (seed 42 → 7); "
             "resume without those overrides, or start again with --overwrite"),
    # --- placeholders in data paths ----------------------------------------------------------------------------
    task_case("files-unknown-placeholder", "toy-ner", _files("toy-ner", "ner.train.conll", "{data}/ner.train.conll"),
              "{d}/toy-ner.yaml: files.train: '{d}/{{data}}/ner.train.conll': unknown placeholder {{data}} "
              "(known: {{corpora}}, {{prepared}})"),
    task_case("files-unbalanced-brace", "toy-ner", _files("toy-ner", "ner.dev.conll", "{corpora/ner.dev.conll"),
              "{d}/toy-ner.yaml: files.dev: '{d}/{{corpora/ner.dev.conll': expected '}}' before end of string "
              "(a {{...}} placeholder is {{corpora}} or {{prepared}})"),
    task_case("files-placeholder-with-format", "toy-ner", _files("toy-ner", "ner.test.conll", "{prepared!r}/ner.test.conll"),
              "{d}/toy-ner.yaml: files.test: '{d}/{{prepared!r}}/ner.test.conll': unknown placeholder {{prepared!r}} "
              "(known: {{corpora}}, {{prepared}})"),
    task_case("files-positional-placeholder", "toy-ner", _files("toy-ner", "ner.train.conll", "{0}.conll"),
              "{d}/toy-ner.yaml: files.train: '{d}/{{0}}.conll': unknown placeholder {{0}} (known: {{corpora}}, {{prepared}})"),
]  # fmt: skip

def _cannot_pack(monkeypatch: pytest.MonkeyPatch, ws: Workspace) -> None:
    """An encoder whose packed states differ from its padded ones (as RoBERTa's: tests/test_serve.py)."""
    from biomtl.packing import PackedEncoder

    monkeypatch.setattr(PackedEncoder, "works", lambda self, *args: False)


PATCHES: dict[str, Patch] = {
    "override-pack-encoder-cannot": _cannot_pack,
    "output-dir-not-writable": _not_writable("ro"),
    "prepare-out-not-writable": _not_writable("ro"),
    "train-disk-full": _failing_write(errno.ENOSPC),
    "train-read-only-filesystem": _failing_write(errno.EROFS),
    "predict-disk-full": _failing_write(errno.ENOSPC),
    "predict-read-only-filesystem": _failing_write(errno.EROFS),
}
NEEDS_NO_GPU = {"run-device-not-available", "override-device-not-available"}


def run_and_check(case: Case, command: str, ws: Workspace, capsys, monkeypatch, patch: Patch | None = None) -> None:
    """The contract of every case: exit 2, one stderr line with the message, nothing changed on disk."""
    argv = case.commands[command](ws)
    capsys.readouterr()
    before = _snapshot(ws.root)
    if patch is not None:
        patch(monkeypatch, ws)

    status = main(argv)

    monkeypatch.undo()
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("biomtl: error: "), err
    got = lines[0].removeprefix("biomtl: error: ")
    names = ws.names()
    if case.message.startswith("re:"):
        pattern = case.message.removeprefix("re:")
        for key, value in names.items():
            pattern = pattern.replace("{" + key + "}", re.escape(value))
        assert re.fullmatch(pattern, got), got
    else:
        assert got == case.message.format(**names)
    assert _snapshot(ws.root) == before  # nothing written, no temporary left behind


@pytest.mark.parametrize(
    ("case", "command"), [pytest.param(c, cmd, id=f"{c.id}-{cmd}") for c in CASES for cmd in c.commands]
)
def test_run_or_output_input(case: Case, command: str, tmp_path, tiny_encoder, trained, capsys, monkeypatch) -> None:
    if case.id in NEEDS_NO_GPU and not NO_GPU:
        pytest.skip("a GPU is available here")
    ws = Workspace(tmp_path, tiny_encoder, trained)
    run_and_check(case, command, ws, capsys, monkeypatch, PATCHES.get(case.id))


def test_every_case_is_documented() -> None:
    doc = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to {DOCS}: {missing}"


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Ctrl-C (KeyboardInterrupt) just before the ``n``-th optimizer step."""
    import biomtl.train as loop

    real, calls = loop.train_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)


@pytest.mark.parametrize("step", [1, 2], ids=["before-the-first-checkpoint", "after-a-checkpoint"])
def test_an_interrupted_train_says_how_to_resume_and_that_command_does(step, tmp_path, tiny_encoder, trained, capsys, monkeypatch):
    """Ctrl-C ends with 130 and the command line that continues the run; that line finishes it, from the
    checkpoint or (killed before the first one) from scratch."""
    ws = Workspace(tmp_path, tiny_encoder, trained)
    _interrupt_at_step(monkeypatch, step)  # one step per epoch (4 examples, batch 4): step 2 follows a checkpoint
    assert main(["train", str(ws.run), "epochs=2", "--quiet"]) == 130
    hint = capsys.readouterr().err.splitlines()[-1]
    assert hint == f"biomtl: interrupted; continue it with: biomtl train {ws.run} epochs=2 --resume"
    assert not (ws.out / RESULT).exists()
    monkeypatch.undo()
    assert main(hint.split(": ", 2)[-1].split()[1:] + ["--quiet"]) == 0
    assert (ws.out / RESULT).is_file()
