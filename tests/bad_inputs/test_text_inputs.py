"""TSV fields read literally, odd line endings in data files, and YAML keys given twice.

The cases run like those of ``test_bad_inputs.py`` (the same workspace, through ``validate`` and ``train``):
exit status 2, one stderr line asserted verbatim, nothing written. ``docs/bad-inputs.md`` lists them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bad_inputs import DOCS, Case, Workspace, _snapshot, edit, set_line, task_case

from biomtl.cli import main

OK_ROW = "train0\t@CHEMICAL$ binds @GENE$ .\tfalse"


def _cr_line_endings(ws: Workspace) -> None:
    path = ws.file("rel.train.tsv")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))


def _quote_across_rows(ws: Workspace) -> None:
    """Rows 2-4 as a CSV parser would join them (a '"' opens on line 2 and closes on line 4); line 3 has an
    extra column that the joined field used to hide."""
    set_line(ws.file("rel.train.tsv"), 2, 'train0\t" @CHEMICAL$ binds @GENE$ .\tfalse')
    set_line(ws.file("rel.train.tsv"), 3, "train1\t@CHEMICAL$ binds @GENE$ .\tfalse\textra")
    set_line(ws.file("rel.train.tsv"), 4, 'train2\t@CHEMICAL$ binds @GENE$ . "\tfalse')


def _append(name: str, text: str):
    def damage(ws: Workspace) -> None:
        path = ws.tasks[name]
        path.write_text(path.read_text() + text)

    return damage


def _run_with_epochs_twice(ws: Workspace) -> Path:
    run = ws.write_run()  # epochs: 1 on line 5
    run.write_text(run.read_text() + "epochs: 3\n")
    return run


CASES = [
    # --- TSV: literal fields, line endings ---------------------------------------------------------------------
    task_case("tsv-quote-across-rows", "toy-rel", _quote_across_rows,
              "{d}/rel.train.tsv:3: expected 3 tab-separated columns, found 4"),
    task_case("tsv-cr-line-endings", "toy-rel", _cr_line_endings,
              "{d}/rel.train.tsv:1: CR without LF at column 21 (old Mac line endings?); lines must end with LF or CRLF"),
    task_case("tsv-nul-byte", "toy-rel", lambda ws: set_line(ws.file("rel.train.tsv"), 3, "train1\t@CHEMICAL$ \x00binds @GENE$\tfalse"),
              "{d}/rel.train.tsv:3: NUL byte at column 19 (a binary or damaged file?)"),
    task_case("tsv-line-separator-for-line-break", "toy-rel", lambda ws: set_line(ws.file("rel.train.tsv"), 2, f"{OK_ROW}\u2028{OK_ROW}"),
              "{d}/rel.train.tsv:2: expected 3 tab-separated columns, found 5 (only LF ends a line, not U+2028)"),
    task_case("tsv-line-separator-in-label", "toy-rel", lambda ws: set_line(ws.file("rel.train.tsv"), 2, OK_ROW + "\u2028"),
              "{d}/rel.train.tsv:2: undeclared label 'false\\u2028' (add it to labels: in {d}/toy-rel.yaml)"),
    # --- YAML: a key given twice -------------------------------------------------------------------------------
    task_case("dataset-duplicate-key", "toy-rel", _append("toy-rel", 'labels: ["CPR:3", "false"]\n'),
              "{d}/toy-rel.yaml:13: duplicate key 'labels' (first on line 9)"),
    task_case("dataset-duplicate-nested-key", "toy-rel",
              lambda ws: edit(ws.tasks["toy-rel"], "metric: {name: classification_f1,", "metric: {name: micro_f1, name: classification_f1,"),
              "{d}/toy-rel.yaml:11: duplicate key 'name' (first on line 11)"),
    Case("run-duplicate-key", {
        "validate": lambda ws: ["validate", str(_run_with_epochs_twice(ws))],
        "train": lambda ws: ["train", str(_run_with_epochs_twice(ws)), "--quiet"],
    }, "{run}:9: duplicate key 'epochs' (first on line 5)"),
]  # fmt: skip


def _workspace(tmp_path: Path, tiny_encoder: str) -> Workspace:
    return Workspace(tmp_path, tiny_encoder, trained=tmp_path / "no-model")  # no case here loads a model


@pytest.mark.parametrize(
    ("case", "command"), [pytest.param(c, cmd, id=f"{c.id}-{cmd}") for c in CASES for cmd in c.commands]
)
def test_text_input(case: Case, command: str, tmp_path: Path, tiny_encoder: str, capsys) -> None:
    ws = _workspace(tmp_path, tiny_encoder)
    argv = case.commands[command](ws)
    capsys.readouterr()
    before = _snapshot(tmp_path)

    status = main(argv)

    assert status == 2
    assert capsys.readouterr().err == f"biomtl: error: {case.message.format(**ws.names())}\n"
    assert _snapshot(tmp_path) == before


def test_every_case_is_documented() -> None:
    doc = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to {DOCS}: {missing}"


def test_tsv_fields_are_read_literally(tmp_path: Path, tiny_encoder: str, capsys) -> None:
    """A '"' that opens on one row and closes two rows later is text, not CSV quoting: three rows, three
    examples, the quotes kept."""
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    ws = _workspace(tmp_path, tiny_encoder)
    rows = ['" @CHEMICAL$ binds @GENE$ .', '@CHEMICAL$ "binds" @GENE$ .', '@CHEMICAL$ binds @GENE$ . "']
    ws.file("rel.train.tsv").write_text(
        "index\tsentence\tlabel\n" + "".join(f"t{i}\t{text}\tfalse\n" for i, text in enumerate(rows))
    )
    examples = read_split(load_dataset_spec(ws.tasks["toy-rel"]), "train")
    assert [(ex.id, ex.text, ex.source) for ex in examples] == [
        (f"t{i}", text, f"{ws.data}/rel.train.tsv:{i + 2}") for i, text in enumerate(rows)
    ]
    assert main(["validate", str(ws.tasks["toy-rel"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"{ws.tasks['toy-rel']}: ok (classification task toy-rel)", "  train: 3 examples; labels: false 3"]
