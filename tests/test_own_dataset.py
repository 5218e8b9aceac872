"""A user's own datasets, added by YAML only (issue 15): each test builds a folder as a user would (dataset
YAMLs, their files, a run YAML) and drives it through the command line in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from biomtl.cli import main

NER_ROWS = [
    [("Aspirin", "O"), ("causes", "O"), ("renal", "B-Disease"), ("failure", "I-Disease"), (".", "O")],
    [("Pain", "B-Disease"), ("was", "O"), ("reduced", "O"), (".", "O")],
    [("The", "O"), ("tumor", "B-Disease"), ("grew", "O"), ("fast", "O"), ("again", "O"), (".", "O")],
]
REL_ROWS = [
    ("r1", "@GENE$ mutations cause @DISEASE$ in patients .", "1"),
    ("r2", "@GENE$ was not linked to @DISEASE$ .", "0"),
    ("r3", "The @GENE$ variant raises @DISEASE$ risk .", "1"),
    ("r4", "No link between @GENE$ and @DISEASE$ was found .", "0"),
    ("r5", "@GENE$ loss leads to @DISEASE$ .", "1"),
]


def write_ner(folder: Path, name: str = "my-ner") -> Path:
    """``<name>.yaml`` with train/dev/test CoNLL files beside it, named by relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"ner.{split}.conll").write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in NER_ROWS))
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntype: tagging\nformat: conll\n"
        "files: {train: ner.train.conll, dev: ner.dev.conll, test: ner.test.conll}\n"
        "columns: {token: 0, tag: 1}\nlabels: [Disease]\nmetric: {name: entity_f1}\nmain_metric: f1\n"
    )
    return path


def write_rel(folder: Path, rows: list[tuple[str, str, str]] = REL_ROWS, labels: str = '["0", "1"]',
              columns: str = "{id: 0, text: 1, label: 2}") -> Path:
    """A gene–disease relation set without a dev file (dev_from_train), masks declared."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rel.train.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    (folder / "rel.test.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    path = folder / "my-rel.yaml"
    path.write_text(
        "name: my-rel\ntype: classification\nformat: tsv\nheader: false\n"
        "files: {train: rel.train.tsv, test: rel.test.tsv}\ndev_from_train: 0.2\n"
        f"columns: {columns}\nlabels: {labels}\nmarkers: [['@GENE$', '@DISEASE$']]\n"
        "metric: {name: classification_f1, args: {exclude: ['0']}}\nmain_metric: micro_f1\n"
    )
    return path


def write_run(folder: Path, encoder: str, tasks: list[str], **values: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    run = {"tasks": tasks, "encoder": encoder, "epochs": 1, "batch_size": 4, "max_length": 32, "num_threads": 1,
           "device": "cpu", **values}
    path = folder / "run.yaml"
    path.write_text(json.dumps(run))  # JSON is YAML
    return path


def errors(capsys: pytest.CaptureFixture) -> list[str]:
    return capsys.readouterr().err.splitlines()


# 1. Naming rule ---------------------------------------------------------------------------------------------


def test_a_run_names_a_dataset_beside_it(tmp_path, tiny_encoder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the run's folder: names and paths resolve against the run file
    write_ner(tmp_path / "work")
    run = write_run(tmp_path / "work", tiny_encoder, ["my-ner"])
    assert main(["validate", str(run)]) == 0
    assert main(["train", str(run), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    assert json.loads((tmp_path / "out" / "result.json").read_text())["test"]["my-ner"]


def test_relative_dataset_paths_resolve_against_the_run_file(tmp_path, tiny_encoder, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_ner(tmp_path / "work" / "datasets")
    run = write_run(tmp_path / "work", tiny_encoder, ["datasets/my-ner.yaml"])
    assert main(["validate", str(run)]) == 0, errors(capsys)


def test_names_are_looked_up_in_biomtl_datasets(tmp_path, tiny_encoder, capsys, monkeypatch):
    write_ner(tmp_path / "shared", "lab-ner")
    monkeypatch.setenv("BIOMTL_DATASETS", str(tmp_path / "elsewhere") + ":" + str(tmp_path / "shared"))
    run = write_run(tmp_path / "work", tiny_encoder, ["lab-ner"])
    assert main(["validate", str(run)]) == 0, errors(capsys)


def test_a_dataset_beside_the_run_comes_before_a_shipped_one(tmp_path, tiny_encoder, capsys):
    write_ner(tmp_path, "bc2gm")  # same name as a shipped config, but no {corpora} needed
    run = write_run(tmp_path, tiny_encoder, ["bc2gm"])
    assert main(["validate", str(run)]) == 0, errors(capsys)


def test_an_unknown_name_lists_where_it_looked(tmp_path, tiny_encoder, capsys, monkeypatch):
    write_ner(tmp_path / "work")
    monkeypatch.setenv("BIOMTL_DATASETS", str(tmp_path / "shared"))
    run = write_run(tmp_path / "work", tiny_encoder, ["my-nr"])
    assert main(["train", str(run), "--output-dir", str(tmp_path / "out")]) == 2
    from biomtl.config import SHIPPED_DATASETS

    assert errors(capsys) == [
        f"biomtl: error: tasks: no dataset config found for 'my-nr'; did you mean 'my-ner'? (looked in "
        f"{tmp_path / 'work'} (beside the config), {tmp_path / 'shared'} (BIOMTL_DATASETS), {SHIPPED_DATASETS} (shipped))"
    ]


# 2, 3. validate: no crash, and what was checked ---------------------------------------------------------------


def test_validate_with_dev_from_train_and_wrong_markers_is_one_line_per_row(tmp_path, capsys):
    rows = [(i, text.replace("@DISEASE$", "@DIS$"), label) for i, text, label in REL_ROWS]
    path = write_rel(tmp_path, rows)
    assert main(["validate", str(path)]) == 2
    lines = errors(capsys)
    assert lines[0].startswith(f"biomtl: error: {tmp_path / 'rel.train.tsv'}:1: ")
    assert "Sample larger than population" not in "\n".join(lines)
    assert len(lines) == 2 * len(REL_ROWS)  # each row of train and of test, once


def test_validate_says_what_it_read(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIOMTL_ENCODER", raising=False)
    path = write_rel(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        f"{path}: ok (classification task my-rel)",
        "  train: 4 examples; labels: 0 1, 1 3",
        "  dev: 1 examples (held out from train by dev_from_train); labels: 0 1",
        "  test: 5 examples; labels: 0 2, 1 3",
    ]
    assert out[4] == "  markers: @GENE$ + @DISEASE$ in 10 examples"
    assert re.fullmatch(
        rf"  longest example: \d+ tokens of the default encoder's tokenizer, {re.escape(str(tmp_path))}/rel\.\w+\.tsv:\d; "
        r"max_length 128 \(the default; a run sets its own\): every example fits", out[5]
    ), out[5]


def test_validate_counts_words_without_a_tokenizer(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIOMTL_ENCODER", str(tmp_path / "no-such-encoder"))
    path = write_ner(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  train: 3 examples; labels: B-Disease 3, I-Disease 1, O 11"
    assert out[-1] == (f"  longest example: 6 words (a word count: no tokenizer at hand), {tmp_path / 'ner.train.conll'}:12; "
                       "max_length 128 (the default; a run sets its own): every example fits")


# 4. A column layout that does not fit the file ------------------------------------------------------------------


def test_a_label_column_that_holds_text_is_one_line(tmp_path, capsys):
    path = write_rel(tmp_path, columns="{id: 0, text: 2, label: 1}")  # text and label swapped
    assert main(["validate", str(path)]) == 2
    assert errors(capsys) == [
        f"biomtl: error: {tmp_path / f'rel.{split}.tsv'}:1: the label column (1) holds text ('@GENE$ mutations cause "
        f"@DISEASE$ in pati…'), not a label; the row has 3 columns: check columns: in {path}"
        for split in ("train", "test")
    ]


def test_a_row_with_fewer_columns_than_the_config_expects_is_one_line(tmp_path, capsys):
    path = write_rel(tmp_path, columns="{id: 0, text: 1, label: 3}")
    assert main(["validate", str(path)]) == 2
    assert errors(capsys) == [
        f"biomtl: error: {tmp_path / f'rel.{split}.tsv'}:1: the row has 3 columns where columns: in {path} expects 4 "
        "(column 3 does not exist)"
        for split in ("train", "test")
    ]


# 6. output_dir from the command line ----------------------------------------------------------------------------


def test_output_dir_may_come_from_the_command_line_only(tmp_path, tiny_encoder, capsys):
    write_ner(tmp_path)
    run = write_run(tmp_path, tiny_encoder, ["my-ner"])
    assert "output_dir" not in run.read_text()
    assert main(["validate", str(run)]) == 0, errors(capsys)
    assert main(["train", str(run), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0, errors(capsys)
    assert (tmp_path / "out" / "best").is_dir()
    assert main(["train", str(run)]) == 2
    assert errors(capsys) == [f"biomtl: error: {run}: output_dir: give it in the run config or as --output-dir"]


# 7. predict: plain text is one document, --lines makes each line a record ----------------------------------------


def test_predict_plain_text_is_one_document_unless_lines(tmp_path, tiny_encoder, capsys):
    write_ner(tmp_path)
    run = write_run(tmp_path, tiny_encoder, ["my-ner"])
    assert main(["train", str(run), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    text = tmp_path / "in.txt"
    text.write_text("Renal failure was seen .\n\nPain was reduced .\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "out" / "best"), "--input", str(text)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["predict", str(tmp_path / "out" / "best"), "--input", str(text), "--lines"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == ["1", "3"]
    for record, line in zip(records, ("Renal failure was seen .", "Pain was reduced ."), strict=True):
        assert all(line[e["start"]:e["end"]] == e["text"] for e in record["entities"])


def test_predict_help_says_how_plain_text_is_read(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the whole input is ONE document" in help_text
    assert "--lines" in help_text


# 8. Labels that YAML reads as numbers or booleans ----------------------------------------------------------------


def test_integer_labels_are_their_string_form(tmp_path, capsys):
    path = write_rel(tmp_path, labels="[0, 1]")
    assert main(["validate", str(path)]) == 0, errors(capsys)


def test_boolean_labels_are_refused_with_how_to_write_them(tmp_path, capsys):
    rows = [(i, text, "true" if label == "1" else "false") for i, text, label in REL_ROWS]
    path = write_rel(tmp_path, rows, labels="[true, false]")
    path.write_text(path.read_text().replace("exclude: ['0']", "exclude: ['false']"))
    assert main(["validate", str(path)]) == 2
    assert errors(capsys) == [
        f"biomtl: error: {path}: key 'labels' must be list[str], got list [True, False] "
        "(quote yes/no/true/false to keep them as text)"
    ]


def test_a_run_config_named_like_its_task_is_not_taken_for_the_dataset(capsys):
    """configs/runs/bc5cdr-chemical.yaml names `tasks: [bc5cdr-chemical]`: the lookup beside the run file passes
    over the run config itself (it names tasks and has no type) and finds the shipped dataset config."""
    run = Path(__file__).resolve().parents[1] / "configs" / "runs" / "bc5cdr-chemical.yaml"
    assert main(["validate", str(run)]) == 0, capsys.readouterr().err
