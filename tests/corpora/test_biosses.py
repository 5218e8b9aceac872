from __future__ import annotations

import csv
from pathlib import Path

import pytest

from biomtl.corpora import biosses
from biomtl.errors import BiomtlError, DataError


def _pairs_file(root: Path, rows: list[str] | None = None) -> Path:
    """A 100-pair annotation file: pair i has sentences 'first i' / 'second i' and scores i % 5, ..."""
    if rows is None:
        rows = [
            f"{i}\tfirst  {i} \tsecond\u00a0{i}\t{i % 5}\t{(i + 1) % 5}\t{(i + 2) % 5}\t{i % 5}\t{i % 5}"
            for i in range(1, 101)
        ]
    path = root / biosses.PAIRS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("\t".join(biosses.HEADER) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))  # the files are not CSV-quoted


def test_split_ids_are_a_partition_of_the_100_pairs() -> None:
    ids = [i for split in biosses.SPLIT_IDS.values() for i in split]
    assert sorted(ids) == list(range(1, 101))
    assert {k: len(v) for k, v in biosses.SPLIT_IDS.items()} == biosses.REFERENCE == {
        "train": 64, "dev": 16, "test": 20,
    }  # fmt: skip


def test_prepare_on_a_synthetic_file(tmp_path: Path) -> None:
    corpora = _pairs_file(tmp_path / "corpora")
    manifest = biosses.prepare(corpora, tmp_path)
    rows = _read(tmp_path / "test.tsv")
    assert list(rows[0]) == ["index", "sentence1", "sentence2", "score"]
    assert [int(r["index"]) for r in rows] == list(biosses.SPLIT_IDS["test"])
    first = rows[0]  # sentence_id 59: scores 4, 0, 1, 4, 4
    assert first == {"index": "59", "sentence1": "first 59", "sentence2": "second 59", "score": "2.6"}
    assert manifest["counts"]["test"]["pairs"] == 20
    assert manifest["verification_against_blue"] == {}
    assert any("200 of the 200 sentences" in d for d in manifest["differences"])


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(BiomtlError, match=r"BIOSSES file .*annotation_pairs_scores.tsv not found"):
        biosses.prepare(tmp_path, tmp_path)

    rows = [f"{i}\ta\tb\t1\t2\t3\t4\t0" for i in range(1, 100)]  # id 100 (dev) is missing
    with pytest.raises(DataError, match=r"annotation_pairs_scores.tsv: sentence_id\(s\) \[100\] of the BLUE"):
        biosses.prepare(_pairs_file(tmp_path / "a", rows), tmp_path)

    rows[2] = "3\ta\tb\t1\t2\tthree\t4\t0"
    with pytest.raises(
        DataError, match=r"annotation_pairs_scores.tsv:4: annotator scores .* are not integers"
    ):
        biosses.prepare(_pairs_file(tmp_path / "b", rows), tmp_path)

    rows[2] = "3\ta\tb\t1\t2\t3\t4"
    with pytest.raises(DataError, match=r"annotation_pairs_scores.tsv:4: expected 8 tab-separated fields"):
        biosses.prepare(_pairs_file(tmp_path / "c", rows), tmp_path)


# ---------------------------------------------------------------------------------------------------------
# The real corpus


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("biosses")
    return out, biosses.prepare(corpora_dir, out)


def test_split_sizes_match_blue(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    for split, reference in biosses.REFERENCE.items():
        rows = _read(out / f"{split}.tsv")
        assert len(rows) == manifest["counts"][split]["pairs"] == reference
        assert all(r["sentence1"] and r["sentence2"] and "\t" not in r["sentence2"] for r in rows)


def test_score_is_the_annotator_mean(prepared: tuple[Path, dict], corpora_dir: Path) -> None:
    original = {r["sentence_id"]: r for r in _read(corpora_dir / biosses.PAIRS_FILE)}
    out, _ = prepared
    for split in ("train", "dev", "test"):
        for row in _read(out / f"{split}.tsv"):
            scores = [int(original[row["index"]][a]) for a in biosses.ANNOTATORS]
            assert float(row["score"]) == pytest.approx(sum(scores) / 5)
            assert row["sentence1"] == " ".join(original[row["index"]]["sentence_1"].split())


def test_train_and_dev_agree_with_blue(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    assert manifest["verification_against_blue"] == {
        "train": {"blue_pairs": 64, "same_pairs": 64, "same_scores": 64, "same_order": 64},
        "dev": {"blue_pairs": 16, "same_pairs": 16, "same_scores": 16, "same_order": 16},
    }
    assert not [d for d in manifest["differences"] if d.startswith(("train:", "dev:"))]
