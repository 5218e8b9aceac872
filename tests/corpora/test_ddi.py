from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from biomtl.corpora import ddi
from biomtl.errors import BiomtlError, DataError

# A tiny document in the official format: a discontinuous mention (e0: "aluminum ... hydroxide") that
# overlaps another (e1: "magnesium hydroxide"), a CR LF inside the text, and a positive pair without type.
DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<document id="DDI-DrugBank.d1">
    <sentence id="DDI-DrugBank.d1.s0" text="Antacids: aluminum and magnesium hydroxide do not affect meclofenamate.&#xd;&#xa;">
        <entity id="DDI-DrugBank.d1.s0.e0" charOffset="10-17;33-41" type="drug" text="aluminum hydroxide"/>
        <entity id="DDI-DrugBank.d1.s0.e1" charOffset="23-41" type="drug" text="magnesium hydroxide"/>
        <entity id="DDI-DrugBank.d1.s0.e2" charOffset="57-69" type="drug" text="meclofenamate"/>
        <pair id="DDI-DrugBank.d1.s0.p0" e1="DDI-DrugBank.d1.s0.e0" e2="DDI-DrugBank.d1.s0.e1" ddi="false"/>
        <pair id="DDI-DrugBank.d1.s0.p1" e1="DDI-DrugBank.d1.s0.e0" e2="DDI-DrugBank.d1.s0.e2" ddi="true" type="mechanism"/>
        <pair id="DDI-DrugBank.d1.s0.p2" e1="DDI-DrugBank.d1.s0.e1" e2="DDI-DrugBank.d1.s0.e2" ddi="false"/>
    </sentence>
    <sentence id="DDI-DrugBank.d1.s1" text="Amphetamines raise corticosteroid levels.">
        <entity id="DDI-DrugBank.d1.s1.e0" charOffset="0-11" type="group" text="Amphetamines"/>
        <entity id="DDI-DrugBank.d1.s1.e1" charOffset="19-32" type="group" text="corticosteroid"/>
        <pair id="DDI-DrugBank.d1.s1.p0" e1="DDI-DrugBank.d1.s1.e0" e2="DDI-DrugBank.d1.s1.e1" ddi="true"/>
    </sentence>
    <sentence id="DDI-DrugBank.d1.s2" text="Aspirin may increase the effect of warfarin.">
        <entity id="DDI-DrugBank.d1.s2.e0" charOffset="0-6" type="drug" text="Aspirin"/>
        <entity id="DDI-DrugBank.d1.s2.e1" charOffset="35-42" type="drug" text="warfarin"/>
        <pair id="DDI-DrugBank.d1.s2.p0" e1="DDI-DrugBank.d1.s2.e0" e2="DDI-DrugBank.d1.s2.e1" ddi="true" type="effect"/>
    </sentence>
</document>
"""

TEST_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<document id="DDI-MedLine.d9">
    <sentence id="DDI-MedLine.d9.s0" text="Cimetidine inhibits the clearance of theophylline. ">
        <entity id="DDI-MedLine.d9.s0.e0" charOffset="0-9" type="drug" text="Cimetidine"/>
        <entity id="DDI-MedLine.d9.s0.e1" charOffset="37-48" type="drug" text="theophylline"/>
        <pair id="DDI-MedLine.d9.s0.p0" e1="DDI-MedLine.d9.s0.e0" e2="DDI-MedLine.d9.s0.e1" ddi="true" type="mechanism"/>
    </sentence>
</document>
"""


def _corpora(root: Path, train_doc: bytes = DOC) -> Path:
    """A corpus directory with a two-document zip and BLUE dev / train-positive files."""
    (root / "DDI/original").mkdir(parents=True)
    (root / "DDI/blue").mkdir()
    with zipfile.ZipFile(root / ddi.ZIP, "w") as z:
        z.writestr("DDICorpus/Train/DrugBank/Antacids_ddi.xml", train_doc)
        z.writestr("DDICorpus/Test/Test for DDI Extraction task/MedLine/1.xml", TEST_DOC)
    masked = "@DRUG$ may increase the effect of @DRUG$."
    (root / ddi.BLUE_DEV).write_text(f"DDI-DrugBank.d1.s2.p0\t{masked}\tDDI-effect\n")
    (root / ddi.BLUE_TRAIN_POSITIVES).write_text(
        "DDI-DrugBank.d1.s0.p1\tAntacids: @DRUG$ do not affect @DRUG$.\tDDI-mechanism\n"
    )
    return root


def _read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))  # the files are not CSV-quoted


def test_parse_document_masks_like_blue() -> None:
    pairs = {p.id: p for p in ddi.parse_document(DOC, "doc.xml")}
    s0 = "DDI-DrugBank.d1.s0"
    # The discontinuous mention covers "aluminum and magnesium hydroxide", so it overlaps e1.
    assert pairs[f"{s0}.p0"].sentence == "Antacids: @DRUG-DRUG$ do not affect meclofenamate."
    assert pairs[f"{s0}.p1"].sentence == "Antacids: @DRUG$ do not affect @DRUG$."
    assert pairs[f"{s0}.p2"].sentence == "Antacids: aluminum and @DRUG$ do not affect @DRUG$."
    assert [pairs[f"{s0}.p{i}"].label for i in range(3)] == ["DDI-false", "DDI-mechanism", "DDI-false"]
    assert pairs["DDI-DrugBank.d1.s1.p0"].label is None
    assert pairs["DDI-DrugBank.d1.s1.p0"].line == 14


def test_entity_span_and_mask() -> None:
    assert ddi.entity_span("3-5") == (3, 6)
    assert ddi.entity_span("10-17;33-41") == (10, 42)
    # Mentions that only touch are merged, as in BLUE's overlap test.
    assert ddi.mask("abcdef", (0, 3), (3, 6)) == "@DRUG-DRUG$"
    assert ddi.mask("a b c", (4, 5), (0, 1)) == "@DRUG$ b @DRUG$"
    with pytest.raises(ValueError, match="bad charOffset '3-'"):
        ddi.entity_span("3-")


def test_parse_document_errors() -> None:
    with pytest.raises(DataError, match=r"^doc\.xml:3: malformed XML: "):
        ddi.parse_document(
            b'<?xml version="1.0"?>\n<document>\n<sentence id="x" text="a></document>', "doc.xml"
        )
    bad = DOC.replace(b'charOffset="0-6"', b'charOffset="0 6"')
    with pytest.raises(
        DataError, match=r"^doc\.xml:17: entity DDI-DrugBank\.d1\.s2\.e0: bad charOffset '0 6'$"
    ):
        ddi.parse_document(bad, "doc.xml")
    bad = DOC.replace(b'charOffset="35-42"', b'charOffset="35-99"')
    with pytest.raises(DataError, match=r"^doc\.xml:18: entity DDI-DrugBank\.d1\.s2\.e1 ends at 100, after"):
        ddi.parse_document(bad, "doc.xml")


def test_prepare_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpora = _corpora(tmp_path / "corpora")
    out = tmp_path / "out"
    out.mkdir()
    manifest = ddi.prepare(corpora, out)
    train, dev, test = (_read(out / f"{split}.tsv") for split in ddi.SPLITS)
    # s1 (the typeless positive) is left out: BLUE has none of its pairs.
    assert [r[0] for r in train[1:]] == [f"DDI-DrugBank.d1.s0.p{i}" for i in range(3)]
    assert dev == [
        ["index", "sentence", "label"],
        ["DDI-DrugBank.d1.s2.p0", "@DRUG$ may increase the effect of @DRUG$.", "DDI-effect"],
    ]
    assert test[1] == ["DDI-MedLine.d9.s0.p0", "@DRUG$ inhibits the clearance of @DRUG$.", "DDI-mechanism"]
    assert manifest["differences"][0]["typeless_positive_pairs"] == ["DDI-DrugBank.d1.s1.p0"]
    assert manifest["blue_agreement"]["dev"]["same_sentence"] == 1
    assert manifest["blue_agreement"]["test"] is None


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(BiomtlError, match=r"^DDI corpus .*DDI/original/DDICorpus-2013\.zip not found"):
        ddi.prepare(tmp_path, tmp_path)
    corpora = _corpora(tmp_path / "broken", train_doc=DOC.replace(b"</document>", b"</sentence>"))
    with pytest.raises(
        DataError, match=r"DDICorpus-2013\.zip:DDICorpus/Train/DrugBank/Antacids_ddi\.xml:\d+: malformed XML"
    ):
        ddi.prepare(corpora, tmp_path)
    # A typeless positive that BLUE's files do not explain cannot be written.
    corpora = _corpora(tmp_path / "typeless")
    (corpora / ddi.BLUE_TRAIN_POSITIVES).write_text(
        "DDI-DrugBank.d1.s0.p1\tAntacids: @DRUG$ do not affect @DRUG$.\tDDI-mechanism\n"
        "DDI-DrugBank.d1.s1.p0\t@DRUG$ raise @DRUG$ levels.\tDDI-None\n"
    )
    with pytest.raises(
        DataError, match=r'Antacids_ddi\.xml:14: pair DDI-DrugBank\.d1\.s1\.p0 has ddi="true" but no type$'
    ):
        ddi.prepare(corpora, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# The real corpus (about 1.5 s)


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ddi")
    return out, ddi.prepare(corpora_dir, out)


def test_positive_counts_match_blue(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    positives = {split: manifest["counts"][split]["positives"] for split in ddi.SPLITS}
    assert positives["test"] == 979
    for split in ("train", "dev"):
        assert abs(positives[split] - ddi.REFERENCE[split]) <= 0.03 * ddi.REFERENCE[split], split


def test_files_are_well_formed(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    seen: set[str] = set()
    for split in ddi.SPLITS:
        rows = _read(out / f"{split}.tsv")
        assert rows[0] == ["index", "sentence", "label"]
        assert len(rows) - 1 == manifest["counts"][split]["rows"]
        for index, sentence, label in rows[1:]:
            assert label in ddi.LABELS, index
            masks = (sentence.count("@DRUG$"), sentence.count("@DRUG-DRUG$"))
            assert masks in ((2, 0), (0, 1)), index
            assert index not in seen
            seen.add(index)


def test_agreement_with_blue(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    dev, test = manifest["blue_agreement"]["dev"], manifest["blue_agreement"]["test"]
    assert dev["shared_ids"] == dev["rows"] == dev["blue_rows"] == dev["same_label"] == 7244
    assert dev["same_sentence"] == 7193  # the rest differ by a double space in BLUE's corpus copy
    assert test["shared_ids"] == test["rows"] == test["same_label"] == test["same_sentence"] == 5716
