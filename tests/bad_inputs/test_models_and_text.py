"""Hand-edited or damaged model directories, pickled weight files, and text that JSON allows but is not text.

The cases run like those of ``test_bad_inputs.py``: exit status 2, one stderr line asserted verbatim, nothing
written (a pickle that tried to run code would leave a file behind). ``docs/bad-inputs.md`` lists them. The
last test feeds unusual but valid text (NUL, RTL marks, emoji, empty) to every task and expects a result.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_bad_inputs import DOCS, Case, Workspace, _manifest, cli_case, input_case, model_case, trained  # noqa: F401
from test_runs_and_outputs import run_and_check

from biomtl.checkpoint import CHECKPOINT
from biomtl.cli import main


class _Payload:
    """Unpickling this would run code: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _pickle(path: Path, ws: Workspace) -> None:
    path.write_bytes(pickle.dumps({"weight": _Payload(ws.root / "pwned")}))


def _weights(change: Callable[[dict[str, torch.Tensor]], object]) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        path = ws.model / "model.safetensors"
        weights = load_file(path)
        change(weights)
        save_file(weights, path)

    return damage


def _set(key: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(weights: dict[str, torch.Tensor]) -> None:
        weights[key].view(-1)[1] = value

    return change


def _half(weights: dict[str, torch.Tensor]) -> None:
    for key, value in weights.items():
        if value.is_floating_point():
            weights[key] = value.half()


def _pickled_encoder(ws: Workspace) -> list[str]:
    """A copy of the encoder whose weights are a pickle (pytorch_model.bin) that would run code."""
    encoder = ws.root / "encoder"
    shutil.copytree(ws.encoder, encoder)
    (encoder / "model.safetensors").unlink()
    _pickle(encoder / "pytorch_model.bin", ws)
    return ["train", str(ws.write_run(encoder=str(encoder))), "--quiet"]


def _pickled_checkpoint(ws: Workspace) -> list[str]:
    _pickle(ws.resumable / CHECKPOINT / "model.safetensors", ws)
    return ["train", str(ws.resumable / "config.yaml"), "--resume", "--quiet", "--output-dir", str(ws.resumable)]


def _deep_manifest(ws: Workspace) -> None:
    (ws.model / "biomtl.json").write_text('{"format_version": 1, "tasks": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


REL = "aspirin inhibits the receptor"
MANIFEST = "{m}/biomtl.json"

CASES = [
    # --- biomtl.json: format_version ---------------------------------------------------------------------------
    model_case("format-version-a-string", _manifest(lambda d: d.update(format_version="1")),
               f'{MANIFEST}: format_version must be a whole number, got "1"'),
    model_case("format-version-a-fraction", _manifest(lambda d: d.update(format_version=1.5)),
               f"{MANIFEST}: format_version must be a whole number, got 1.5"),
    model_case("format-version-null", _manifest(lambda d: d.update(format_version=None)),
               f"{MANIFEST}: format_version must be a whole number, got null"),
    model_case("format-version-zero", _manifest(lambda d: d.update(format_version=0)),
               f"{MANIFEST}: format_version 0 was never written by biomtl (versions start at 1)"),
    model_case("format-version-far-future", _manifest(lambda d: d.update(format_version=10**30)),
               f"{MANIFEST}: format_version {10**30} is newer than this biomtl supports (1); upgrade biomtl"),
    # --- biomtl.json: shapes and types of hand-edited values ---------------------------------------------------
    model_case("manifest-tasks-a-list", _manifest(lambda d: d.update(tasks=list(d["tasks"]))),
               f"{MANIFEST}: tasks: expected a mapping from task name to its spec"),
    model_case("manifest-no-tasks", _manifest(lambda d: d.update(tasks={})),
               f"{MANIFEST}: tasks: expected a mapping from task name to its spec"),
    model_case("manifest-task-spec-a-string", _manifest(lambda d: d["tasks"].update({"toy-ner": "tagging"})),
               f"{MANIFEST}: tasks.toy-ner: expected a mapping (the task's spec), got str"),
    model_case("manifest-labels-a-string", _manifest(lambda d: d["tasks"]["toy-rel"].update(labels="CPR:3")),
               f"{MANIFEST}: tasks.toy-rel: key 'labels' must be list[str], got str 'CPR:3'"),
    model_case("manifest-task-missing-key", _manifest(lambda d: d["tasks"]["toy-sts"].pop("main_metric")),
               f"{MANIFEST}: tasks.toy-sts: missing required key 'main_metric'"),
    model_case("manifest-dropout-a-string", _manifest(lambda d: d.update(dropout="high")),
               f'{MANIFEST}: dropout: expected a number in [0, 1), got "high"'),
    model_case("manifest-dropout-out-of-range", _manifest(lambda d: d.update(dropout=1.5)),
               f"{MANIFEST}: dropout: expected a number in [0, 1), got 1.5"),
    model_case("manifest-max-length-a-string", _manifest(lambda d: d.update(max_length="128")),
               f'{MANIFEST}: max_length: expected a whole number >= 8, got "128"'),
    model_case("manifest-max-length-above-positions", _manifest(lambda d: d.update(max_length=4096)),
               f"{MANIFEST}: cannot rebuild the model (max_length: 4096 is more than the encoder's "
               "max_position_embeddings (128); set max_length to 128 or less)"),
    model_case("manifest-pooling-unknown", _manifest(lambda d: d.update(pooling="max")),
               f'{MANIFEST}: pooling: unknown value "max" (known: cls, mean)'),
    model_case("manifest-encoder-a-string", _manifest(lambda d: d.update(encoder="bert")),
               MANIFEST + ': encoder: expected {{"name": <encoder name or null>, "dir": "encoder"}}'),
    model_case("manifest-nested-too-deeply", _deep_manifest, "re:{m}/biomtl.json: corrupted \\(maximum recursion depth .*\\)"),
    # --- weights: values and dtype ---------------------------------------------------------------------------------
    model_case("weights-nan", _weights(_set("heads.toy-rel.out.weight", float("nan"))),
               "{m}/model.safetensors: heads.toy-rel.out.weight holds NaN or infinite values (a diverged or damaged "
               "model); it would predict nothing useful"),
    model_case("weights-inf", _weights(_set("encoder.embeddings.word_embeddings.weight", float("-inf"))),
               "{m}/model.safetensors: encoder.embeddings.word_embeddings.weight holds NaN or infinite values (a "
               "diverged or damaged model); it would predict nothing useful"),
    model_case("weights-float16", _weights(_half),
               "{m}/model.safetensors: encoder.embeddings.word_embeddings.weight is float16, but biomtl saves and "
               "loads float32 weights (a converted or damaged file?)"),
    # --- pickles are never loaded ------------------------------------------------------------------------------
    model_case("weights-a-pickle", lambda ws: _pickle(ws.model / "model.safetensors", ws),
               "re:{m}/model.safetensors: corrupted weights file \\(.+\\)"),
    cli_case("encoder-weights-a-pickle", _pickled_encoder,
             "encoder '{w}/encoder': its weights file is a pickle that holds more than tensors; refused (biomtl never "
             "unpickles code; give the encoder as model.safetensors)"),
    cli_case("checkpoint-weights-a-pickle", _pickled_checkpoint,
             "re:{r}/checkpoint/model.safetensors: cannot read the checkpoint \\(.+\\); start again with --overwrite"),
    # --- text that JSON allows but that is not text ------------------------------------------------------------
    input_case("input-unpaired-surrogate", "toy-ner", '{"text": "\\ud800"}\n',
               "{w}/input.jsonl:1: unpaired surrogate U+D800 at character 1 of a string (half of a UTF-16 pair, not text)"),
    input_case("input-unpaired-surrogate-in-id", "toy-ner", '{"id": "a\\udfff", "text": "aspirin"}\n',
               "{w}/input.jsonl:1: unpaired surrogate U+DFFF at character 2 of a string (half of a UTF-16 pair, not text)"),
    input_case("input-unpaired-surrogate-in-text-b", "toy-sts", '{"text": "a"}\n{"text": "the drug", "text_b": "dose \\udbff"}\n',
               "{w}/input.jsonl:2: unpaired surrogate U+DBFF at character 6 of a string (half of a UTF-16 pair, not text)"),
    input_case("input-unpaired-surrogate-in-entity", "toy-rel",
               json.dumps({"text": REL, "entities": [{"start": 0, "end": 7, "type": "x\ud800"}, {"start": 21, "end": 29}]}),
               "{w}/input.jsonl:1: unpaired surrogate U+D800 at character 2 of a string (half of a UTF-16 pair, not text)"),
    input_case("input-nested-too-deeply", "toy-ner", "[" * 100_000 + "]" * 100_000 + "\n",
               "{w}/input.jsonl:1: invalid JSON (nested too deeply)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "command"), [pytest.param(c, cmd, id=f"{c.id}-{cmd}") for c in CASES for cmd in c.commands]
)
def test_model_or_text_input(case: Case, command: str, tmp_path, tiny_encoder, trained, capsys, monkeypatch) -> None:
    ws = Workspace(tmp_path, tiny_encoder, trained)
    run_and_check(case, command, ws, capsys, monkeypatch)
    assert not (tmp_path / "pwned").exists()


def test_every_case_is_documented() -> None:
    doc = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to {DOCS}: {missing}"


ODD_TEXTS = ["", " ", "\x00", "a\x00b", "\u202eevil\u202c", "😀 aspirin 👍🏽", "\u2028", "\ufeff", "\U0010ffff", "عربي aspirin", "\r\n\t"]


@pytest.mark.parametrize("text", ODD_TEXTS, ids=[ascii(t) for t in ODD_TEXTS])
def test_unusual_text_in_every_field_gives_a_result_or_one_line(text, tmp_path, tiny_encoder, trained, capsys) -> None:
    """NUL, RTL overrides, emoji, empty strings: each input gets a prediction, or the command one line."""
    ws = Workspace(tmp_path, tiny_encoder, trained)
    records = {
        "toy-ner": [{"id": text, "text": text}],
        "toy-sts": [{"id": text, "text": text, "text_b": text}, {"text": "the drug", "text_b": text}],
        "toy-rel": [{"id": text, "text": f"@CHEMICAL$ {text} @GENE$"},
                    {"text": f"aspirin{text} x receptor", "entities": [{"start": 0, "end": 7, "type": text}, {"start": 7 + len(text) + 3, "end": 7 + len(text) + 11}]}],
    }
    for task, rows in records.items():
        path = tmp_path / f"{task}.jsonl"
        path.write_text(_jsonl(*rows))
        out = tmp_path / f"{task}.out.jsonl"
        status = main(["predict", str(ws.model), "--task", task, "--input", str(path), "--output", str(out)])
        err = capsys.readouterr().err
        if status == 0:
            assert len(out.read_text().split("\n")) == len(rows) + 1  # JSON lines end in LF (U+2028 may stay raw)
        else:
            assert status == 2 and len(err.splitlines()) == 1 and not out.exists(), err
