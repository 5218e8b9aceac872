"""``chemprot-spans`` and ``ddi-spans``: the BLUE relation tasks unmasked, with the two arguments as spans.

The key check: masking a spans row's text at its two spans gives exactly the masked task's sentence, row by row
(same order, ids and labels), so both files describe the same pairs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from biomtl.corpora import chemprot, ddi, official_files, prepare
from biomtl.errors import DataError

MASK = {"chemprot": chemprot.mask, "ddi": ddi.mask}
TYPES = {"chemprot": ((chemprot.CHEMICAL,), chemprot.GENES), "ddi": (ddi.ENTITY_TYPES, ddi.ENTITY_TYPES)}


def _tsv(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").removesuffix("\n").split("\n")
    assert lines[0] == "index\tsentence\tlabel"
    return [line.split("\t") for line in lines[1:]]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").removesuffix("\n").split("\n")]


# ---------------------------------------------------------------------------------------------------------
# No corpora needed

DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<document id="DDI-DrugBank.d1">
    <sentence id="DDI-DrugBank.d1.s0" text=" Antacids: aluminum and magnesium&#xd;&#xa;hydroxide do not affect meclofenamate. ">
        <entity id="DDI-DrugBank.d1.s0.e0" charOffset="11-18;35-43" type="drug" text="aluminum hydroxide"/>
        <entity id="DDI-DrugBank.d1.s0.e1" charOffset="24-43" type="group" text="magnesium hydroxide"/>
        <entity id="DDI-DrugBank.d1.s0.e2" charOffset="59-71" type="brand" text="meclofenamate"/>
        <pair id="DDI-DrugBank.d1.s0.p0" e1="DDI-DrugBank.d1.s0.e0" e2="DDI-DrugBank.d1.s0.e1" ddi="false"/>
        <pair id="DDI-DrugBank.d1.s0.p1" e1="DDI-DrugBank.d1.s0.e2" e2="DDI-DrugBank.d1.s0.e1" ddi="true" type="effect"/>
    </sentence>
</document>
"""


def test_ddi_record_offsets_survive_cleaning() -> None:
    """The leading space goes and CR LF become two spaces: the spans move with the text."""
    p0, p1 = ddi.parse_document(DOC, "doc.xml")
    text = "Antacids: aluminum and magnesium  hydroxide do not affect meclofenamate."
    assert p1.record() == {
        "id": "DDI-DrugBank.d1.s0.p1",
        "text": text,
        "entities": [{"start": 58, "end": 71, "type": "brand"}, {"start": 23, "end": 43, "type": "group"}],
        "label": "DDI-effect",
    }
    assert [text[s:e] for s, e in (p1.first, p1.second)] == ["meclofenamate", "magnesium  hydroxide"]
    assert text[slice(*p0.first)] == "aluminum and magnesium  hydroxide"  # a discontinuous mention's whole stretch
    assert (p0.sentence, p1.sentence) == ("Antacids: @DRUG-DRUG$ do not affect meclofenamate.",
                                          "Antacids: aluminum and @DRUG$ do not affect @DRUG$.")


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ('charOffset="59-71"', 'charOffset="72-73"', r"doc\.xml:6: entity DDI-DrugBank\.d1\.s0\.e2 lies in the space around the sentence$"),
        ('type="brand"', 'type="food"', r"doc\.xml:6: entity DDI-DrugBank\.d1\.s0\.e2 has type 'food'; expected one of drug, brand, group, drug_n$"),
    ],
)
def test_ddi_bad_entities(before: str, after: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ddi.parse_document(DOC.replace(before.encode(), after.encode()), "doc.xml")


def test_chemprot_record_names_chemical_then_gene() -> None:
    row = chemprot.Row("1", "T1", "T2", "COX-1 is inhibited by aspirin.", (22, 29), (0, 5), "GENE-Y", "CPR:4")
    assert row.sentence == "@GENE$ is inhibited by @CHEMICAL$."
    assert row.record() == {
        "id": "1.T1.T2",
        "text": "COX-1 is inhibited by aspirin.",
        "entities": [{"start": 22, "end": 29, "type": "CHEMICAL"}, {"start": 0, "end": 5, "type": "GENE-Y"}],
        "label": "CPR:4",
    }


def test_spans_tasks_read_their_corpus_files() -> None:
    assert official_files("chemprot-spans") == official_files("chemprot")
    assert official_files("ddi-spans") == official_files("ddi")


# ---------------------------------------------------------------------------------------------------------
# The real corpora (about 20 s to prepare the four tasks)


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("spans")
    return out, prepare(corpora_dir, out, ["chemprot", "chemprot-spans", "ddi", "ddi-spans"])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["chemprot", "ddi"])
def test_spans_rows_are_the_masked_rows(prepared: tuple[Path, dict], task: str) -> None:
    out, manifests = prepared
    assert manifests[f"{task}-spans"]["counts"] == manifests[task]["counts"]
    assert manifests[f"{task}-spans"]["reference_mismatches"] == []
    first_types, second_types = TYPES[task]
    for split in ("train", "dev", "test"):
        masked, spans = _tsv(out / task / f"{split}.tsv"), _jsonl(out / f"{task}-spans" / f"{split}.jsonl")
        assert [(r["id"], r["label"]) for r in spans] == [(index, label) for index, _, label in masked], split
        for record, (index, sentence, _) in zip(spans, masked, strict=True):
            text, (first, second) = record["text"], record["entities"]
            for entity in (first, second):
                assert 0 <= entity["start"] < entity["end"] <= len(text), index
            assert first["type"] in first_types and second["type"] in second_types, index
            spans_of = (first["start"], first["end"]), (second["start"], second["end"])
            assert MASK[task](text, *spans_of) == sentence, index
            assert text == text.strip() and not set(text) & set("\t\r\n"), index


@pytest.mark.slow
def test_chemprot_spans_are_the_official_mentions(prepared: tuple[Path, dict], corpora_dir: Path) -> None:
    out, _ = prepared
    with zipfile.ZipFile(corpora_dir / chemprot.ZIP) as archive:
        for split in chemprot.SPLITS:
            docs = {d.pmid: d for d in chemprot.read_split(archive, chemprot.MEMBERS[split], "ChemProt.zip")}
            for record in _jsonl(out / "chemprot-spans" / f"{split}.jsonl"):
                pmid, *idents = record["id"].split(".")
                doc = docs[pmid]
                assert record["text"] in chemprot.fold_ascii(doc.text)[0], record["id"]
                for ident, entity in zip(idents, record["entities"], strict=True):
                    mention = doc.mentions[ident]
                    official = chemprot.fold_ascii(doc.text[mention.start : mention.end])[0]
                    assert record["text"][entity["start"] : entity["end"]] == official, record["id"]
                    assert entity["type"] == mention.type, record["id"]


@pytest.mark.slow
def test_ddi_spans_are_the_official_mentions(prepared: tuple[Path, dict], corpora_dir: Path) -> None:
    """A mention is the official sentence's text at its charOffset (inclusive; a discontinuous one from its
    first to its last character), CR/LF/tab as spaces; a contiguous one equals the official mention text."""
    out, _ = prepared
    sentences: dict[str, str] = {}
    entities: dict[str, ET.Element] = {}
    pairs: dict[str, tuple[str, str, str]] = {}  # pair id → (sentence id, e1, e2)
    with zipfile.ZipFile(corpora_dir / ddi.ZIP) as archive:
        for name in (n for n in archive.namelist() if n.endswith(".xml")):
            for sentence in ET.fromstring(archive.read(name)).iter("sentence"):
                sentences[sentence.get("id")] = sentence.get("text")
                entities |= {e.get("id"): e for e in sentence.iter("entity")}
                pairs |= {p.get("id"): (sentence.get("id"), p.get("e1"), p.get("e2")) for p in sentence.iter("pair")}
    one_line = {ord("\r"): " ", ord("\n"): " ", ord("\t"): " "}
    for split in ddi.SPLITS:
        for record in _jsonl(out / "ddi-spans" / f"{split}.jsonl"):
            sentence_id, *ids = pairs[record["id"]]
            original = sentences[sentence_id]
            assert record["text"] == original.translate(one_line).strip(), record["id"]
            for entity_id, entity in zip(ids, record["entities"], strict=True):
                element = entities[entity_id]
                bounds = [int(x) for part in element.get("charOffset").split(";") for x in part.split("-")]
                expected = original[min(bounds) : max(bounds) + 1].translate(one_line)
                found = record["text"][entity["start"] : entity["end"]]
                assert found == expected, record["id"]
                if ";" not in element.get("charOffset"):
                    assert found == element.get("text").translate(one_line), record["id"]
                assert entity["type"] == element.get("type"), record["id"]
