from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from biomtl.corpora import chemprot
from biomtl.errors import BiomtlError, DataError

# A tiny abstract in the official format. Sentence 1: Aspirin (T1) with COX-1 (T2, one relation listed twice)
# and COX-2 (T3, two labels). Sentence 2: a theta (folded to "th", which shifts the later offsets) and a
# non-evaluated relation (T4-T5, CPR:2 N). Sentence 3: a chemical inside a gene mention, and a gene before its
# chemical. T1-T5 crosses sentences 1 and 2: it must be lost and reported.
TITLE = "Aspirin inhibits COX-1 and COX-2."
ABSTRACT = "Warfarin (θ-form) does not affect VKORC1 in vitro. GABA receptor binds GABA."
ABSTRACTS = f"123\t{TITLE}\t{ABSTRACT}\n"
ENTITIES = """123\tT1\tCHEMICAL\t0\t7\tAspirin
123\tT2\tGENE-Y\t17\t22\tCOX-1
123\tT3\tGENE-N\t27\t32\tCOX-2
123\tT4\tCHEMICAL\t34\t42\tWarfarin
123\tT5\tGENE-Y\t68\t74\tVKORC1
123\tT6\tCHEMICAL\t85\t89\tGABA
123\tT7\tGENE-N\t85\t98\tGABA receptor
123\tT8\tCHEMICAL\t105\t109\tGABA
"""
RELATIONS = """123\tCPR:4\tY \tINHIBITOR\tArg1:T1\tArg2:T2
123\tCPR:4\tY \tINHIBITOR\tArg1:T1\tArg2:T2
123\tCPR:3\tY \tACTIVATOR\tArg1:T1\tArg2:T3
123\tCPR:9\tY \tSUBSTRATE\tArg1:T1\tArg2:T3
123\tCPR:4\tY \tINHIBITOR\tArg1:T1\tArg2:T5
123\tCPR:2\tN \tDIRECT-REGULATOR\tArg1:T4\tArg2:T5
123\tCPR:9\tY \tSUBSTRATE\tArg1:T8\tArg2:T7
"""


def _zip(path: Path, entities: str = ENTITIES, relations: str = RELATIONS) -> Path:
    """A ChemProt.zip holding the tiny abstract in all three splits; training members sit in a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for split, members in chemprot.MEMBERS.items():
            folder = "chemprot_training/" if split == "train" else ""
            for member, text in zip(members, (ABSTRACTS, entities, relations), strict=True):
                z.writestr(folder + member, text)
        z.writestr("__MACOSX/._chemprot_test_abstracts_gs.tsv", b"\x00\x05")
    return path


def _documents(tmp_path: Path, **files: str) -> list[chemprot.Document]:
    with zipfile.ZipFile(_zip(tmp_path / "ChemProt.zip", **files)) as z:
        return chemprot.read_split(z, chemprot.MEMBERS["dev"], "ChemProt.zip")


def _read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))  # the files are not CSV-quoted


def test_convert_a_tiny_abstract(tmp_path: Path) -> None:
    result = chemprot.convert(_documents(tmp_path))
    assert [(r.index, r.sentence, r.label) for r in result.rows] == [
        ("123.T1.T2", "@CHEMICAL$ inhibits @GENE$ and COX-2.", "CPR:4"),
        ("123.T1.T3", "@CHEMICAL$ inhibits COX-1 and @GENE$.", "CPR:3"),
        ("123.T1.T3", "@CHEMICAL$ inhibits COX-1 and @GENE$.", "CPR:9"),
        ("123.T4.T5", "@CHEMICAL$ (th-form) does not affect @GENE$ in vitro.", "false"),
        ("123.T6.T7", "@CHEM-GENE$ binds GABA.", "false"),
        ("123.T8.T7", "@GENE$ binds @CHEMICAL$.", "CPR:9"),
    ]
    assert result.lost == [
        {
            "pmid": "123",
            "chemical": "T1",
            "gene": "T5",
            "label": "CPR:4",
            "line": 5,
            "reason": "arguments in different sentences",
        }
    ]
    assert [(d["chemical"], d["gene"], d["line"]) for d in result.duplicates] == [("T1", "T2", 2)]
    assert result.joined_for_mentions == 0


def test_sentence_rules() -> None:
    text = "[Effects of drugs in rats]. OBJECTIVE: To test it. We gave 10 mg/kg i.v. Doses were low. 1. The first."
    assert [text[s:e] for s, e in chemprot.sentence_spans(text)] == [
        "[Effects of drugs in rats].",
        "OBJECTIVE: To test it.",
        "We gave 10 mg/kg i.v. Doses were low. 1.",
        "The first.",
    ]
    text = "We used aspirin. Then we stopped. Cells were fixed."
    assert [text[s:e] for s, e in chemprot.sentence_spans(text, [(8, 21)])] == [
        "We used aspirin. Then we stopped.",
        "Cells were fixed.",
    ]


def test_fold_ascii_maps_offsets() -> None:
    text, positions = chemprot.fold_ascii("β-θ\u20095\ue000x")
    assert text == "b-th 5x"  # an unknown character is dropped, as BLUE drops it
    assert positions == [0, 1, 2, 4, 5, 6, 6, 7]


def test_blue_marker_order_and_agreement() -> None:
    assert chemprot.in_blue_marker_order("@GENE$ binds @CHEMICAL$.") == "@CHEMICAL$ binds @GENE$."
    assert chemprot.in_blue_marker_order("@CHEM-GENE$ binds GABA.") == "@CHEM-GENE$ binds GABA."
    rows = [
        chemprot.Row("1", "T1", "T2", "COX binds aspirin.", (10, 17), (0, 3), "GENE-N", "CPR:4"),
        chemprot.Row("1", "T1", "T3", "aspirin binds COX.", (0, 7), (14, 17), "GENE-N", "false"),
    ]
    assert [row.sentence for row in rows] == ["@GENE$ binds @CHEMICAL$.", "@CHEMICAL$ binds @GENE$."]
    blue = {"1.T1.T2": ("@CHEMICAL$ binds @GENE$.", ["CPR:4"]), "1.T4.T2": ("x", ["false"])}
    result = chemprot.agreement(rows, blue)
    assert (result["shared_pairs"], result["only_here"], result["only_blue"]) == (1, 1, 1)
    assert (result["shared_same_label"], result["same_sentence"]) == (1, 0)
    assert result["same_sentence_in_blue_marker_order_rate"] == 1.0


def test_prepare_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpora = tmp_path / "corpora"
    _zip(corpora / chemprot.ZIP)
    out = tmp_path / "out"
    out.mkdir()
    manifest = chemprot.prepare(corpora, out)
    for split in chemprot.SPLITS:
        rows = _read(out / f"{split}.tsv")
        assert rows[0] == ["index", "sentence", "label"]
        assert [r[0] for r in rows[1:]] == [
            "123.T1.T2",
            "123.T1.T3",
            "123.T1.T3",
            "123.T4.T5",
            "123.T6.T7",
            "123.T8.T7",
        ]
        assert manifest["counts"][split]["positives"] == 4
        differences = manifest["differences"][split]
        assert (differences["official_positive_lines"], differences["written_positives"]) == (6, 4)
        assert [d["gene"] for d in differences["lost"]] == ["T5"]
        assert differences["vs_blue"] is None
    assert manifest["blue_dev_agreement"] is None
    assert manifest["sources"][0]["path"] == chemprot.ZIP


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(BiomtlError, match=r"^ChemProt corpus .*ChemProt/original/ChemProt\.zip not found"):
        chemprot.prepare(tmp_path, tmp_path)
    (tmp_path / "ChemProt/original").mkdir(parents=True)
    (tmp_path / chemprot.ZIP).write_text("not a zip")
    with pytest.raises(BiomtlError, match=r"ChemProt\.zip is not a readable zip file"):
        chemprot.prepare(tmp_path, tmp_path)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"entities": ENTITIES.replace("\t0\t7\tAspirin", "\t0\t7")},
            r"^ChemProt\.zip:chemprot_development_entities\.tsv:1: expected 6 tab-separated fields, found 5$",
        ),
        (
            {"entities": ENTITIES.replace("\t17\t22\t", "\t17\t23\t")},
            r"entities\.tsv:2: entity T2 is 'COX-1' but the abstract has 'COX-1 ' there$",
        ),
        (
            {"entities": ENTITIES.replace("GENE-N\t27", "PROTEIN\t27")},
            r"entities\.tsv:3: entity type 'PROTEIN' is not one of CHEMICAL, GENE-Y, GENE-N$",
        ),
        (
            {"relations": RELATIONS.replace("CPR:2\tN", "CPR:2\tY")},
            r"relations\.tsv:6: CPR:2 is flagged Y; only CPR:3, CPR:4, CPR:5, CPR:6, CPR:9 are evaluated \(Y\)$",
        ),
        (
            {"relations": RELATIONS.replace("Arg2:T7", "Arg2:T70")},
            r"relations\.tsv:7: relation names unknown entity T70 of 123$",
        ),
        (
            {"relations": RELATIONS.replace("Arg1:T8\tArg2:T7", "Arg2:T7\tArg1:T8")},
            r"relations\.tsv:7: arguments 'Arg2:T7' 'Arg1:T8' are not Arg1:T<number> Arg2:T<number>$",
        ),
    ],
)
def test_malformed_lines(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        _documents(tmp_path, **files)


# ---------------------------------------------------------------------------------------------------------
# The real corpus (about 5 s)


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("chemprot")
    return out, chemprot.prepare(corpora_dir, out)


@pytest.mark.slow
def test_positive_counts_match_blue(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    for split in chemprot.SPLITS:
        positives = manifest["counts"][split]["positives"]
        assert abs(positives - chemprot.REFERENCE[split]) <= 0.01 * chemprot.REFERENCE[split], split
        differences = manifest["differences"][split]
        # Every official evaluated relation is written, or listed as a duplicate line or as lost.
        assert differences["official_positive_lines"] == (
            positives + len(differences["duplicate_lines"]) + len(differences["lost"])
        )
        assert all(lost["reason"] for lost in differences["lost"])


@pytest.mark.slow
def test_files_are_well_formed(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    for split in chemprot.SPLITS:
        rows = _read(out / f"{split}.tsv")
        assert rows[0] == ["index", "sentence", "label"]
        assert len(rows) - 1 == manifest["counts"][split]["rows"]
        for index, sentence, label in rows[1:]:
            assert label in chemprot.LABELS, index
            masks = tuple(sentence.count(m) for m in ("@CHEMICAL$", "@GENE$", "@CHEM-GENE$"))
            assert masks in ((1, 1, 0), (0, 0, 1)), index
            assert sentence.isascii() and "\t" not in sentence and "\n" not in sentence, index


@pytest.mark.slow
def test_agreement_with_blue(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    dev = manifest["blue_dev_agreement"]
    # Measured: 11,468 of BLUE's 11,816 dev pairs shared, all with the same label; 220 pairs only here,
    # 348 only in BLUE (sentence boundaries where syntok and spaCy differ); 93.8 % of the shared sentences
    # equal BLUE's once the masks are in BLUE's order.
    assert dev["shared_pairs"] >= 0.96 * dev["pairs_blue"]
    assert dev["shared_same_label"] == dev["shared_pairs"]
    assert dev["only_here"] + dev["only_blue"] <= 0.06 * dev["pairs_blue"]
    assert dev["same_sentence_in_blue_marker_order_rate"] >= 0.92
    for split in chemprot.SPLITS:
        positives = manifest["differences"][split]["vs_blue"]["positive_pairs"]
        assert positives["shared_pairs"] >= 0.99 * positives["pairs_blue"], split
        assert positives["same_sentence_in_blue_marker_order_rate"] >= 0.9, split
