from __future__ import annotations

import csv
from pathlib import Path

import pytest

from biomtl.corpora import hoc
from biomtl.errors import BiomtlError, DataError

SENTENCES = {
    "train": [
        ("11_s0", '" Reactive " stroma drives TNF-Î± signalling .', "tumor promoting inflammation"),
        ("11_s1", "Nothing here .", ""),
        ("12_s0", "Cells evade death .", "resisting cell death,evading growth suppressors"),
    ],
    "dev": [("21_s0", "Vessels grow .", "inducing angiogenesis")],
    "test": [("31_s0", "Telomeres stay long .", "enabling replicative immortality")],
}
DOC_IDS = {"train": ["11", "12"], "dev": ["21"], "test": ["31"]}


def _corpora(root: Path, sentences: dict = SENTENCES, doc_ids: dict = DOC_IDS) -> Path:
    folder = root / hoc.FOLDER
    folder.mkdir(parents=True)
    for split in hoc.SPLITS:
        lines = ["index\tsentence\tlabels"] + ["\t".join(row) for row in sentences[split]]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / f"{split}_docid.txt").write_text("\n".join(doc_ids[split]) + "\n", encoding="utf-8")
    return root


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))  # the files are not CSV-quoted


def test_prepare_on_a_tiny_corpus(tmp_path: Path) -> None:
    manifest = hoc.prepare(_corpora(tmp_path / "corpora"), tmp_path)
    rows = _read(tmp_path / "train.tsv")
    assert rows[0] == {
        "index": "11_s0",
        "doc_id": "11",
        "sentence": '" Reactive " stroma drives TNF-α signalling .',  # quotes kept, mojibake repaired
        "labels": "tumor promoting inflammation",
    }
    assert rows[2]["labels"] == "evading growth suppressors,resisting cell death"  # sorted
    assert rows[1]["labels"] == ""
    counts = manifest["counts"]["train"]
    assert (counts["sentences"], counts["abstracts"], counts["sentences_with_labels"]) == (3, 2, 2)
    assert counts["abstracts_per_label"]["resisting cell death"] == 1


def test_doc_id_mismatch_raises(tmp_path: Path) -> None:
    missing = {**DOC_IDS, "train": ["11", "12", "13"]}
    with pytest.raises(
        DataError, match=r"train.tsv: 1 PMID\(s\) of train_docid.txt have no sentences: \['13'\]"
    ):
        hoc.prepare(_corpora(tmp_path / "a", doc_ids=missing), tmp_path)

    extra = {**DOC_IDS, "train": ["11"]}
    with pytest.raises(DataError, match=r"train.tsv: 1 PMID\(s\) are not in train_docid.txt: \['12'\]"):
        hoc.prepare(_corpora(tmp_path / "b", doc_ids=extra), tmp_path)

    both = {**SENTENCES, "test": [("21_s0", "Vessels grow .", "")]}
    with pytest.raises(DataError, match=r"test.tsv: PMID 21 is in both dev and test"):
        hoc.prepare(_corpora(tmp_path / "c", sentences=both, doc_ids={**DOC_IDS, "test": ["21"]}), tmp_path)


def test_malformed_rows_raise(tmp_path: Path) -> None:
    with pytest.raises(BiomtlError, match=r"HoC file .*train.tsv not found"):
        hoc.prepare(tmp_path, tmp_path)

    unknown = {**SENTENCES, "dev": [("21_s0", "Vessels grow .", "angiogenesis")]}
    with pytest.raises(DataError, match=r"dev.tsv:2: unknown hallmark\(s\) \['angiogenesis'\]"):
        hoc.prepare(_corpora(tmp_path / "a", sentences=unknown), tmp_path)

    bad_index = {**SENTENCES, "dev": [("21-0", "Vessels grow .", "")]}
    with pytest.raises(DataError, match=r"dev.tsv:2: index '21-0' is not '<PMID>_s<number>'"):
        hoc.prepare(_corpora(tmp_path / "b", sentences=bad_index), tmp_path)


def test_repair_mojibake_keeps_genuine_latin1() -> None:
    assert hoc.repair_mojibake("IC\u00e2\u0082\u0085\u00e2\u0082\u0080 of 5 \u00ce\u00bcg/ml at 37 °C") == (
        "IC₅₀ of 5 μg/ml at 37 °C"
    )
    assert hoc.repair_mojibake("café ± 2") == "café ± 2"


# ---------------------------------------------------------------------------------------------------------
# The real corpus


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hoc")
    return out, hoc.prepare(corpora_dir, out)


def test_counts_match_blue(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    expected = {"train": (10527, 1108), "dev": (1496, 157), "test": (2896, 315)}
    for split, (sentences, abstracts) in expected.items():
        rows = _read(out / f"{split}.tsv")
        assert len(rows) == manifest["counts"][split]["sentences"] == sentences
        assert len({r["doc_id"] for r in rows}) == manifest["counts"][split]["abstracts"] == abstracts
        assert abstracts == hoc.REFERENCE[split]
        assert manifest["counts"][split]["abstracts_with_labels"] == abstracts  # every BLUE abstract has one


def test_every_listed_abstract_is_present(prepared: tuple[Path, dict], corpora_dir: Path) -> None:
    out, _ = prepared
    for split in hoc.SPLITS:
        listed = (corpora_dir / hoc.FOLDER / f"{split}_docid.txt").read_text().split()
        rows = _read(out / f"{split}.tsv")
        assert sorted({r["doc_id"] for r in rows}) == sorted(listed)
        assert all(r["index"].startswith(r["doc_id"] + "_s") for r in rows)


def test_labels_and_text_are_clean(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    rows = _read(out / "train.tsv")
    assert all(label in hoc.LABELS for r in rows for label in filter(None, r["labels"].split(",")))
    assert not [r for r in rows if any("\u0080" <= c <= "\u009f" for c in r["sentence"])]
    quoted = next(r for r in rows if r["index"] == "20332242_s0")
    assert quoted["sentence"].startswith('" Reactive " or activated stroma')
    assert manifest["counts"]["train"]["abstracts_per_label"]["resisting cell death"] == 302
