"""The bad-input suite: malformed data files, dataset and run configs, model directories and prediction
inputs, each run through the command line in-process.

Every case must end with exit status 2, exactly one stderr line ``biomtl: error: <message>`` that names the
file and line (or the config key), no traceback, and nothing written: the workspace is byte-for-byte as it
was before the command. Each case builds a fresh workspace (toy tasks, a run config, a copy of a saved
model), damages one thing and states the message verbatim. ``docs/bad-inputs.md`` lists the cases.

Data and config cases run through ``biomtl validate`` and ``biomtl train``; model-directory and input cases
through ``biomtl predict``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import write_toy_tasks
from safetensors.torch import load_file, save_file

from biomtl.checkpoint import CHECKPOINT
from biomtl.cli import main
from biomtl.config import RunConfig
from biomtl.rundir import RESULT
from biomtl.train import train

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bad-inputs.md"


# ----------------------------------------------------------------------------------------------------------
# Workspace


@pytest.fixture(scope="module")
def trained(tiny_encoder: str, toy_tasks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run (3 tasks, 1 epoch, a few steps): ``best/`` is the valid model directory."""
    out = tmp_path_factory.mktemp("bad-inputs-run") / "run"
    config = RunConfig(
        tasks=[str(toy_tasks[t]) for t in ("toy-ner", "toy-rel", "toy-sts")], output_dir=str(out),
        encoder=tiny_encoder, epochs=1, batch_size=4, max_length=32, max_train_examples=4, max_eval_examples=4,
        num_threads=1, checkpoint_every=2, save_predictions=False, evaluate_test=False,
    )
    train(config, progress=False)
    return out


class Workspace:
    """A tmp directory with ``data/`` (toy tasks), ``run.yaml`` and, on demand, ``model/`` and ``run/``."""

    def __init__(self, root: Path, tiny_encoder: str, trained: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.tasks = write_toy_tasks(self.data, n_train=4)
        self.tasks["toy-pairs"] = _write_jsonl_task(self.data)
        self.run = root / "run.yaml"
        self.out = root / "out"
        self.encoder = tiny_encoder
        self._trained = trained
        self.write_run()

    def write_run(self, **values: object) -> Path:
        run = {"tasks": [str(self.tasks["toy-ner"])], "output_dir": str(self.out), "encoder": self.encoder,
               "epochs": 1, "batch_size": 4, "max_length": 32, "num_threads": 1, **values}
        self.run.write_text(yaml.safe_dump(run, sort_keys=False))
        return self.run

    @property
    def model(self) -> Path:
        path = self.root / "model"
        if not path.exists():
            shutil.copytree(self._trained / "best", path)
        return path

    @property
    def resumable(self) -> Path:
        """A copy of the finished run without ``result.json``, so ``--resume`` loads its checkpoint."""
        path = self.root / "run"
        if not path.exists():
            shutil.copytree(self._trained, path)
            (path / RESULT).unlink()
        return path

    def file(self, name: str) -> Path:
        return self.data / name

    def names(self) -> dict[str, str]:
        return {"w": str(self.root), "d": str(self.data), "m": str(self.root / "model"), "out": str(self.out),
                "run": str(self.run), "r": str(self.root / "run")}


def _write_jsonl_task(data: Path) -> Path:
    rows = [{"id": f"p{i}", "text": "the drug dose", "text_b": "the drug effect", "score": i % 5} for i in range(4)]
    for split in ("train", "dev"):
        (data / f"pairs.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = data / "toy-pairs.yaml"
    path.write_text(
        f"name: toy-pairs\ntype: regression\nformat: jsonl\nfiles:\n  train: {data / 'pairs.train.jsonl'}\n"
        f"  dev: {data / 'pairs.dev.jsonl'}\ncolumns: {{id: id, text: text, text_b: text_b, label: score}}\n"
        "score_range: [0, 5]\nmetric: {name: pearson}\nmain_metric: pearson\n"
    )
    return path


def set_line(path: Path, number: int, text: str | bytes) -> None:
    """Replace line ``number`` (1-based) of a file; ``bytes`` go in as they are (bad encodings)."""
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(b"\n".join(lines))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (directories map to "")."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


# ----------------------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One malformed input. ``commands`` maps a command name to a function that damages a fresh workspace and
    returns the command line. ``message`` is the exact text after ``biomtl: error: `` (``{d}`` the data dir,
    ``{m}`` the model dir, ...), or, with a ``re:`` prefix, a regex for messages that quote a library."""

    id: str
    commands: dict[str, Callable[[Workspace], list[str]]]
    message: str


def task_case(
    id: str, task: str, damage: Callable[[Workspace], object], message: str, via: tuple[str, ...] = ("validate", "train")
) -> Case:
    """A broken data file or dataset config of ``task``, checked by ``validate`` and by ``train``."""

    def validate(ws: Workspace) -> list[str]:
        damage(ws)
        return ["validate", str(ws.tasks[task])]

    def train(ws: Workspace) -> list[str]:
        damage(ws)
        return ["train", str(ws.write_run(tasks=[str(ws.tasks[task])])), "--quiet"]

    commands = {"validate": validate, "train": train}
    return Case(id, {name: commands[name] for name in via}, message)


def run_case(id: str, message: str, **values: object) -> Case:
    """A run config with ``values``, checked by ``validate`` and by ``train``."""
    return Case(id, {
        "validate": lambda ws: ["validate", str(ws.write_run(**values))],
        "train": lambda ws: ["train", str(ws.write_run(**values)), "--quiet"],
    }, message)


def cli_case(id: str, argv: Callable[[Workspace], list[str]], message: str) -> Case:
    """Any command line; ``argv`` damages the workspace and returns it."""
    return Case(id, {"cli": argv}, message)


def model_case(id: str, damage: Callable[[Workspace], object], message: str) -> Case:
    """A damaged copy of a valid model directory, loaded by ``predict``."""

    def argv(ws: Workspace) -> list[str]:
        damage(ws)
        return _predict(ws, "toy-ner", "Aspirin.", "input.txt")

    return Case(id, {"predict": argv}, message)


def input_case(id: str, task: str, text: str | bytes, message: str, name: str = "input.jsonl") -> Case:
    """A malformed prediction input for ``task`` of a valid model."""
    return Case(id, {"predict": lambda ws: _predict(ws, task, text, name)}, message)


def _predict(ws: Workspace, task: str, text: str | bytes, name: str = "input.jsonl", *extra: str) -> list[str]:
    """Arguments for ``biomtl predict`` on a fresh copy of the model, with an --output that must not appear."""
    path = ws.root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return ["predict", str(ws.model), "--task", task, "--input", str(path), "--output", str(ws.root / "out.jsonl"), *extra]


def _rel(text: str, *entities: tuple[int, int]) -> str:
    return json.dumps({"text": text, "entities": [{"start": s, "end": e} for s, e in entities]}) + "\n"


def _manifest(change: Callable[[dict], object]) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        path = ws.model / "biomtl.json"
        desc = json.loads(path.read_text())
        change(desc)
        path.write_text(json.dumps(desc))

    return damage


def _truncate(ws: Workspace) -> None:
    path = ws.model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def _drop_head(ws: Workspace) -> None:
    path = ws.model / "model.safetensors"
    weights = {k: v for k, v in load_file(path).items() if not k.startswith("heads.toy-sts.")}
    save_file(weights, path)


def _delete(*names: str) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        for name in names:
            (ws.model / name).unlink()

    return damage


def _resume_without_checkpoint(ws: Workspace) -> list[str]:
    ws.out.mkdir()
    (ws.out / "notes.txt").write_text("an unrelated file")
    return ["train", str(ws.run), "--resume", "--quiet"]


def _resume_corrupted_checkpoint(ws: Workspace) -> list[str]:
    (ws.resumable / CHECKPOINT / "optimizer.pt").write_bytes(b"not a torch file")
    return ["train", str(ws.resumable / "config.yaml"), "--resume", "--quiet", "--output-dir", str(ws.resumable)]


REL = "aspirin inhibits the receptor"  # aspirin 0-7, inhibits 8-16, the 17-20, receptor 21-29

CASES = [
    # --- data files: encoding, columns, labels -----------------------------------------------------------
    task_case("conll-not-utf8", "toy-ner", lambda ws: set_line(ws.file("ner.train.conll"), 2, b"aspirin\xff\tO"),
              "{d}/ner.train.conll:2: not valid UTF-8 (byte 0xff at column 8)"),
    task_case("tsv-not-utf8", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 3, b"train1\t@CHEMICAL$ caf\xe9 @GENE$ .\tfalse"),
              "{d}/rel.train.tsv:3: not valid UTF-8 (byte 0xe9 at column 22)"),
    task_case("jsonl-not-utf8", "toy-pairs", lambda ws: set_line(ws.file("pairs.train.jsonl"), 2, b'{"id": "\x80"}'),
              "{d}/pairs.train.jsonl:2: not valid UTF-8 (byte 0x80 at column 9)"),
    task_case("conll-extra-column", "toy-ner", lambda ws: set_line(ws.file("ner.train.conll"), 2, "aspirin\tB-Chemical\tNN"),
              "{d}/ner.train.conll:2: expected 2 columns (as on line 1), found 3"),
    task_case("conll-one-column", "toy-ner", lambda ws: set_line(ws.file("ner.train.conll"), 3, "aspirin"),
              "{d}/ner.train.conll:3: expected token and tag columns, found 1 column"),
    task_case("conll-fewer-columns-than-config", "toy-ner",
              lambda ws: edit(ws.tasks["toy-ner"], "columns: {token: 0, tag: 1}", "columns: {token: 0, tag: 2}"),
              "{d}/ner.train.conll:1: found 2 columns, but columns: in {d}/toy-ner.yaml needs 3",
              via=("train",)),  # validate says so for each of the 3 files
    task_case("tsv-wrong-column-count", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 3, "train1\t@CHEMICAL$ binds @GENE$ .\tfalse\textra"),
              "{d}/rel.train.tsv:3: expected 3 tab-separated columns, found 4"),
    task_case("tsv-missing-column", "toy-rel", lambda ws: set_line(ws.file("rel.train.tsv"), 1, "index\tsentence\tclass"),
              "{d}/rel.train.tsv:1: missing column(s) label (header has index, sentence, class; columns: in {d}/toy-rel.yaml)"),
    task_case("conll-undeclared-tag", "toy-ner", lambda ws: set_line(ws.file("ner.train.conll"), 2, "p53\tB-Gene"),
              "{d}/ner.train.conll:2: undeclared tag 'B-Gene' (entity types are listed under labels: in {d}/toy-ner.yaml)"),
    task_case("tsv-undeclared-label", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 2, "train0\t@CHEMICAL$ binds @GENE$ .\tCPR:9"),
              "{d}/rel.train.tsv:2: undeclared label 'CPR:9' (add it to labels: in {d}/toy-rel.yaml)"),
    task_case("multilabel-undeclared-label", "toy-hoc",
              lambda ws: set_line(ws.file("hoc.train.tsv"), 4, "d1_s0\td1\tcancer and pain\tcancer,fever"),
              "{d}/hoc.train.tsv:4: undeclared label 'fever' (add it to labels: in {d}/toy-hoc.yaml)"),
    task_case("empty-text", "toy-rel", lambda ws: set_line(ws.file("rel.train.tsv"), 2, "train0\t \tfalse"),
              "{d}/rel.train.tsv:2: empty text"),
    # --- splits and ids -------------------------------------------------------------------------------------
    task_case("empty-split-tsv", "toy-rel", lambda ws: ws.file("rel.train.tsv").write_text("index\tsentence\tlabel\n"),
              "{d}/rel.train.tsv: split 'train' of task toy-rel has no examples"),
    task_case("empty-split-conll", "toy-ner", lambda ws: ws.file("ner.dev.conll").write_text("\n\n"),
              "{d}/ner.dev.conll: split 'dev' of task toy-ner has no examples"),
    task_case("missing-file", "toy-sts", lambda ws: ws.file("sts.dev.tsv").unlink(),
              "{d}/sts.dev.tsv: file not found for split 'dev' of task toy-sts"),
    task_case("duplicate-id", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 4, "train0\t@CHEMICAL$ binds @GENE$ .\tfalse"),
              "{d}/rel.train.tsv:4: duplicate id 'train0' (first at line 2)"),
    # --- scores ---------------------------------------------------------------------------------------------
    task_case("score-nan", "toy-sts", lambda ws: set_line(ws.file("sts.train.tsv"), 3, "train1\tthe drug\tthe dose\tnan"),
              "{d}/sts.train.tsv:3: score 'nan' is not finite"),
    task_case("score-out-of-range", "toy-sts", lambda ws: set_line(ws.file("sts.train.tsv"), 3, "train1\tthe drug\tthe dose\t7"),
              "{d}/sts.train.tsv:3: score 7.0 is outside score_range [0, 5] declared in {d}/toy-sts.yaml"),
    task_case("score-not-a-number", "toy-sts", lambda ws: set_line(ws.file("sts.train.tsv"), 2, "train0\tthe drug\tthe dose\thigh"),
              "{d}/sts.train.tsv:2: score 'high' is not a number"),
    task_case("jsonl-score-nan", "toy-pairs",
              lambda ws: set_line(ws.file("pairs.train.jsonl"), 3, '{"id": "p1", "text": "a", "text_b": "b", "score": NaN}'),
              "{d}/pairs.train.jsonl:3: score nan is not finite"),
    # --- relation masks -------------------------------------------------------------------------------------
    task_case("relation-mask-missing", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 2, "train0\t@CHEMICAL$ binds the receptor .\tfalse"),
              "{d}/rel.train.tsv:2: entity masks do not match (expected @CHEMICAL$+@GENE$; found @CHEMICAL$×1)"),
    task_case("relation-mask-twice", "toy-rel",
              lambda ws: set_line(ws.file("rel.train.tsv"), 2, "train0\t@CHEMICAL$ binds @CHEMICAL$ @GENE$\tfalse"),
              "{d}/rel.train.tsv:2: entity masks do not match (expected @CHEMICAL$+@GENE$; found @CHEMICAL$×2, @GENE$×1)"),
    # --- JSON lines -------------------------------------------------------------------------------------------
    task_case("jsonl-invalid-json", "toy-pairs", lambda ws: set_line(ws.file("pairs.train.jsonl"), 2, '{"id": "p1", "text": }'),
              "{d}/pairs.train.jsonl:2: invalid JSON (Expecting value at column 22)"),
    task_case("jsonl-not-an-object", "toy-pairs", lambda ws: set_line(ws.file("pairs.train.jsonl"), 1, "[1, 2]"),
              "{d}/pairs.train.jsonl:1: expected a JSON object"),
    task_case("jsonl-missing-field", "toy-pairs",
              lambda ws: set_line(ws.file("pairs.train.jsonl"), 4, '{"id": "p3", "text": "a", "text_b": "b"}'),
              "{d}/pairs.train.jsonl:4: missing field(s) score (columns: in {d}/toy-pairs.yaml)"),
    # --- dataset configs ------------------------------------------------------------------------------------
    task_case("dataset-unknown-key", "toy-ner", lambda ws: edit(ws.tasks["toy-ner"], "labels:", "descripton: NER\nlabels:"),
              "{d}/toy-ner.yaml: unknown key 'descripton'; did you mean 'description'?"),
    task_case("dataset-wrong-type", "toy-ner", lambda ws: edit(ws.tasks["toy-ner"], "labels: [Chemical]", "labels: Chemical"),
              "{d}/toy-ner.yaml: key 'labels' must be list[str], got str 'Chemical'"),
    task_case("dataset-unknown-task-type", "toy-ner", lambda ws: edit(ws.tasks["toy-ner"], "type: tagging", "type: taging"),
              "{d}/toy-ner.yaml: type: unknown task type 'taging'; did you mean 'tagging'?"),
    task_case("dataset-unknown-format", "toy-rel", lambda ws: edit(ws.tasks["toy-rel"], "format: tsv", "format: csv"),
              "{d}/toy-rel.yaml: format: unknown format 'csv'; did you mean 'tsv'?"),
    task_case("dataset-unknown-metric", "toy-rel", lambda ws: edit(ws.tasks["toy-rel"], "name: classification_f1", "name: micro_f"),
              "{d}/toy-rel.yaml: metric.name: unknown metric 'micro_f'; did you mean 'micro_f1'?"),
    task_case("dataset-missing-key", "toy-sts", lambda ws: edit(ws.tasks["toy-sts"], "main_metric: pearson\n", ""),
              "{d}/toy-sts.yaml: missing required key 'main_metric'"),
    task_case("dataset-invalid-yaml", "toy-ner", lambda ws: edit(ws.tasks["toy-ner"], "labels: [Chemical]", "labels: [Chemical"),
              "{d}/toy-ner.yaml:10: expected ',' or ']', but got ':'"),
    task_case("dataset-not-utf8", "toy-ner", lambda ws: ws.tasks["toy-ner"].write_bytes(ws.tasks["toy-ner"].read_bytes() + b"# caf\xe9\n"),
              "{d}/toy-ner.yaml:12: not valid UTF-8 (byte 0xe9)"),
    # --- run configs ----------------------------------------------------------------------------------------
    run_case("run-unknown-key", "{run}: unknown key 'epoch'; did you mean 'epochs'?", epoch=2),
    run_case("run-wrong-type", "{run}: key 'epochs' must be int, got str 'three'", epochs="three"),
    run_case("run-invalid-value", "{run}: lr: must be a positive number, got -1", lr=-1),
    run_case("run-unknown-sampling", "{run}: sampling: unknown value 'round-robin'; did you mean 'round_robin'?", sampling="round-robin"),
    cli_case("run-unknown-task", lambda ws: ["train", str(ws.write_run(tasks=["toy-nr"]))],
             "re:tasks: no dataset config found for 'toy-nr'; known tasks: bc2gm, .*"),
    cli_case("run-config-missing", lambda ws: ["train", str(ws.root / "nope.yaml")], "{w}/nope.yaml: config file not found"),
    cli_case("run-override-unknown-key", lambda ws: ["train", str(ws.run), "epoch=2"], "{run}: unknown key 'epoch'; did you mean 'epochs'?"),
    cli_case("run-override-not-key-value", lambda ws: ["train", str(ws.run), "epochs"], "override 'epochs': expected key=value"),
    cli_case("run-encoder-missing", lambda ws: ["train", str(ws.write_run(encoder=str(ws.root / "no-encoder")))],
             "encoder: {w}/no-encoder does not exist (give a model directory or a Hugging Face model name)"),
    cli_case("resume-without-checkpoint", _resume_without_checkpoint,
             "{out}: --resume given but there is no checkpoint to resume from"),
    cli_case("checkpoint-corrupted", _resume_corrupted_checkpoint,
             "{r}/checkpoint/optimizer.pt: cannot read the checkpoint "
             "(not a plain tensor file; refused by torch.load(weights_only=True)); start again with --overwrite"),
    # --- model directories ----------------------------------------------------------------------------------
    cli_case("model-dir-missing", lambda ws: ["predict", str(ws.root / "nope"), "--input", str(ws.run)],
             "{w}/nope: model directory not found"),
    model_case("manifest-missing", _delete("biomtl.json"), "{m}/biomtl.json: missing; {m} is not a biomtl model directory"),
    model_case("manifest-corrupted", lambda ws: (ws.model / "biomtl.json").write_text('{"format_version": 1, "tas'),
               "{m}/biomtl.json: corrupted (Unterminated string starting at: line 1 column 23 (char 22))"),
    model_case("format-version-newer", _manifest(lambda d: d.update(format_version=2)),
               "{m}/biomtl.json: format_version 2 is newer than this biomtl supports (1); upgrade biomtl"),
    model_case("manifest-unknown-task-type", _manifest(lambda d: d["tasks"]["toy-sts"].update(type="ranking")),
               "{m}/biomtl.json: tasks.toy-sts.type: unknown task type 'ranking'"),
    model_case("manifest-labels-do-not-fit-weights", _manifest(lambda d: d["tasks"]["toy-rel"]["labels"].append("CPR:9")),
               "{m}/model.safetensors: weights do not match biomtl.json "
               "(heads.toy-rel.out.weight has shape [3, 32], biomtl.json needs [4, 32])"),
    model_case("weights-missing", _delete("model.safetensors"), "{m}/model.safetensors: missing from the model directory"),
    model_case("weights-truncated", _truncate, "re:{m}/model.safetensors: corrupted weights file \\(.+\\)"),
    model_case("weights-missing-a-head", _drop_head,
               "{m}/model.safetensors: weights do not match biomtl.json (missing 2, unexpected 0, e.g. heads.toy-sts.out.weight)"),
    model_case("encoder-config-missing", _delete("encoder/config.json"), "{m}/encoder/config.json: missing from the model directory"),
    model_case("encoder-config-corrupted", lambda ws: (ws.model / "encoder" / "config.json").write_text("{"),
               "re:{m}/biomtl.json: cannot rebuild the model \\(.+\\)"),
    model_case("tokenizer-missing", _delete("encoder/tokenizer.json"),
               "{m}/encoder: the tokenizer's vocabulary (tokenizer.json) is missing"),
    # --- prediction inputs ------------------------------------------------------------------------------------
    cli_case("input-missing", lambda ws: ["predict", str(ws.model), "--task", "toy-ner", "--input", str(ws.root / "nope.txt")],
             "{w}/nope.txt: input file not found"),
    input_case("input-not-utf8", "toy-ner", b"Aspirin.\nNaloxone \xff.\n", "{w}/input.txt:2: not valid UTF-8 (byte 0xff)", "input.txt"),
    input_case("input-invalid-json", "toy-sts", '{"text": "a", "text_b": "b"}\n{"text": \n',
               "{w}/input.jsonl:2: invalid JSON (Expecting value)"),
    input_case("input-not-an-object", "toy-sts", '{"text": "a", "text_b": "b"}\n\n42\n',
               "{w}/input.jsonl:3: expected a JSON object with a string field 'text'"),
    input_case("input-pair-missing-text-b", "toy-sts", '{"text": "the drug"}\n',
               "{w}/input.jsonl:1: task toy-sts compares two texts: give 'text' and 'text_b'"),
    input_case("input-unknown-task", "toy-chem", "Aspirin.", "--task: the model has no task 'toy-chem' (it has toy-ner, toy-rel, toy-sts)"),
    input_case("entity-offset-outside-text", "toy-rel", _rel(REL, (0, 7), (21, 40)),
               "{w}/input.jsonl:1: entities[1]: offsets 21-40 are outside the text (length 29)"),
    input_case("entities-overlap", "toy-rel", _rel(REL, (0, 16), (8, 16)), "{w}/input.jsonl:1: entities overlap or cross (0-16 and 8-16)"),
    input_case("entities-cross", "toy-rel", _rel(REL, (17, 29), (0, 20)), "{w}/input.jsonl:1: entities overlap or cross (0-20 and 17-29)"),
    input_case("entities-same-mask", "toy-rel", json.dumps({"text": REL, "entities": [
                   {"start": 0, "end": 7, "mask": "@GENE$"}, {"start": 21, "end": 29, "mask": "@GENE$"}]}),
               "{w}/input.jsonl:1: entity masks do not match (expected @CHEMICAL$+@GENE$; found @GENE$×2)"),
    input_case("entities-one-span", "toy-rel", _rel(REL, (0, 7)), "{w}/input.jsonl:1: 'entities' must list exactly two argument spans"),
    input_case("relation-text-without-masks", "toy-rel", "@CHEMICAL$ binds @GENE$\n\naspirin inhibits the receptor\n",
               "{w}/input.txt:3: entity masks do not match (expected @CHEMICAL$+@GENE$; found none)", "input.txt"),
    input_case("entities-on-tagging-task", "toy-ner", _rel(REL, (0, 7), (21, 29)),
               "{w}/input.jsonl:1: task toy-ner takes no entities (it is not a relation task)"),
    cli_case("output-dir-missing", lambda ws: _predict(ws, "toy-ner", "Aspirin.", "input.txt")[:-1] + [str(ws.root / "no" / "out.jsonl")],
             "--output: {w}/no does not exist"),
    cli_case("batch-size-zero", lambda ws: _predict(ws, "toy-ner", "Aspirin.", "input.txt", "--batch-size", "0"),
             "--batch-size: must be >= 1, got 0"),
]

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


@pytest.mark.parametrize(
    ("case", "command"), [pytest.param(c, cmd, id=f"{c.id}-{cmd}") for c in CASES for cmd in c.commands]
)
def test_bad_input(case: Case, command: str, tmp_path: Path, tiny_encoder: str, trained: Path, capsys) -> None:
    ws = Workspace(tmp_path, tiny_encoder, trained)
    argv = case.commands[command](ws)
    capsys.readouterr()
    before = _snapshot(tmp_path)

    status = main(argv)  # an unexpected exception (a traceback for the user) fails the test here

    err = capsys.readouterr().err
    assert status == 2
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
    assert _snapshot(tmp_path) == before  # nothing written, nothing left behind


def test_tag_sequence_starting_with_I_is_read_as_B_with_a_warning(tmp_path, tiny_encoder, trained, capsys, caplog):
    """conlleval's reading: an I- that does not continue an entity starts one. Accepted, stored as B-,
    and reported once per file as a warning."""
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    ws = Workspace(tmp_path, tiny_encoder, trained)
    path = ws.file("ner.train.conll")
    path.write_text("aspirin\tI-Chemical\nlithium\tI-Chemical\nand\tO\nheparin\tI-Chemical\n\nthe\tO\ncocaine\tI-Chemical\n")
    with caplog.at_level(logging.WARNING, logger="biomtl.data.readers"):
        examples = read_split(load_dataset_spec(ws.tasks["toy-ner"]), "train")
    assert [ex.label for ex in examples] == [["B-Chemical", "I-Chemical", "O", "B-Chemical"], ["O", "B-Chemical"]]
    assert [r.getMessage() for r in caplog.records] == [f"{path}: 3 entities start with I- (read as B-, as conlleval does)"]

    capsys.readouterr()
    assert main(["validate", str(ws.tasks["toy-ner"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"{ws.tasks['toy-ner']}: ok (tagging task toy-ner)", "  train: 2 examples; labels: B-Chemical 3, I-Chemical 1, O 2"]


def test_validate_reports_every_problem_at_once(tmp_path, tiny_encoder, trained, capsys):
    ws = Workspace(tmp_path, tiny_encoder, trained)
    set_line(ws.file("rel.train.tsv"), 2, "train0\t@CHEMICAL$ binds @GENE$ .\tCPR:9")
    set_line(ws.file("rel.train.tsv"), 4, "train2\t@CHEMICAL$ binds .\tfalse")
    ws.file("rel.test.tsv").unlink()
    assert main(["validate", str(ws.tasks["toy-rel"])]) == 2
    d = ws.data
    assert capsys.readouterr().err.splitlines() == [
        f"biomtl: error: {d}/rel.train.tsv:2: undeclared label 'CPR:9' (add it to labels: in {d}/toy-rel.yaml)",
        f"biomtl: error: {d}/rel.train.tsv:4: entity masks do not match (expected @CHEMICAL$+@GENE$; found @CHEMICAL$×1)",
        f"biomtl: error: {d}/rel.test.tsv: file not found for split 'test' of task toy-rel",
    ]


def test_there_are_at_least_30_cases_and_all_are_documented():
    assert len(CASES) >= 30
    doc = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to {DOCS}: {missing}"


def test_console_script_prints_one_line_and_no_traceback(tmp_path, tiny_encoder, trained):
    """The same contract from a real process, where logging and progress bars go to stderr too."""
    ws = Workspace(tmp_path, tiny_encoder, trained)
    set_line(ws.file("ner.train.conll"), 2, "p53\tB-Gene")
    argv = ["train", str(ws.run)]
    before = _snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "biomtl.cli", *argv], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"biomtl: error: {ws.data}/ner.train.conll:2: undeclared tag 'B-Gene' "
        f"(entity types are listed under labels: in {ws.data}/toy-ner.yaml)\n"
    )
    assert _snapshot(tmp_path) == before
