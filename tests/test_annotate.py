"""`biomtl annotate`: documents → entities (every NER head) → relations (every relation head) → labels,
in five formats, on a tiny 3-task model (chemical NER, gene NER, a ChemProt-like relation task)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import (
    toy_ner_yaml,
    train_toy_model,
    write_toy_cue_relations,
    write_toy_entities,
)

from biomtl.annotate import ALL, annotate, candidate_pairs, masked, plan_tasks, split_sentences
from biomtl.cli import main
from biomtl.errors import BiomtlError, ConfigError
from biomtl.formats import PREDICTED, Document, Mention, Passage, read_documents, write_documents
from biomtl.predict import Predictor
from biomtl.tasks import load_dataset_spec

RELATION_YAML = """name: e2e-rel
type: classification
format: tsv
files: {{train: {root}/rel.train.tsv, dev: {root}/rel.dev.tsv, test: {root}/rel.test.tsv}}
columns: {{id: index, text: sentence, label: label}}
labels: ["CPR:3", "CPR:4", "false"]
negative_label: "false"
markers: [["@CHEMICAL$", "@GENE$"], ["@CHEM-GENE$"]]
arguments: [Chemical, Gene]
entity_types: {{Chemical: Chemical, Gene: Gene, GENE-N: Gene}}
metric: {{name: classification_f1, args: {{exclude: ["false"]}}}}
main_metric: micro_f1
"""


def write_e2e_tasks(root: Path) -> dict[str, Path]:
    """Chemical NER, gene NER and a relation task whose label follows a cue word."""
    rng = random.Random(0)
    filler = ["the", "of", "in", "patients", "cells", "was", "with"]
    for split, n in (("train", 40), ("dev", 8), ("test", 8)):
        write_toy_entities(root, rng, split, n, filler)
        write_toy_cue_relations(root, rng, split, n)
    configs = {}
    for name, text in (
        ("e2e-chem", toy_ner_yaml(root, "e2e-chem", "chem", "Chemical")),
        ("e2e-gene", toy_ner_yaml(root, "e2e-gene", "gene", "Gene")),
        ("e2e-rel", RELATION_YAML.format(root=root)),
    ):
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(text)
    return configs


@pytest.fixture(scope="module")
def e2e_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_e2e_tasks(tmp_path_factory.mktemp("e2e-tasks"))


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: str, e2e_tasks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy_model(list(e2e_tasks.values()), tiny_encoder, tmp_path_factory.mktemp("e2e-run") / "run", epochs=6)


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir, precision="fp32")


PUBTATOR = (
    "111|t|Aspirin inhibits the receptor.\n"
    "111|a|Naloxone binding the protein was seen. Heparin and the receptor.\n"
    "111\t0\t7\tAspirin\tChemical\tD001241\n"
    "111\t52\t59\tprotein\tGene\t-\n"
    "111\tCID\tD001241\tD000001\n"
    "\n"
    "222|t|Clonidine in the cells.\n"
    "222|a|The protein of patients.\n"
    "222\t0\t9\tClonidine\tChemical\tD003000\n"
    "\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------------
# Planning, candidates, masks


def test_plan_sorts_heads(predictor):
    plan = plan_tasks(predictor)
    assert plan.ner == ["e2e-chem", "e2e-gene"] and plan.relations == ["e2e-rel"] and plan.documents == []
    assert plan_tasks(predictor, keep_input={ALL}).ner == []
    assert plan_tasks(predictor, keep_input={"Gene"}).ner == ["e2e-chem"]


def _mention(ident: str, start: int, end: int, etype: str) -> Mention:
    return Mention(ident, start, end, etype, "")


def test_candidate_pairs_follow_argument_types():
    ms = [_mention("a", 0, 3, "Chemical"), _mention("b", 5, 8, "Gene"), _mention("c", 10, 12, "Chemical")]
    pairs = candidate_pairs(ms, ["Chemical", "Gene"], {"Chemical": "Chemical", "Gene": "Gene"})
    assert [(a.id, b.id) for a, b in pairs] == [("a", "b"), ("c", "b")]
    drugs = candidate_pairs(ms, ["Drug", "Drug"], {"Chemical": "Drug", "Gene": "Drug"})
    assert [(a.id, b.id) for a, b in drugs] == [("a", "b"), ("a", "c"), ("b", "c")]


def test_masks_as_in_training():
    from biomtl.annotate import Sentence

    s = Sentence(0, 100, "COX-1 is inhibited by aspirin.")
    gene, chem = _mention("g", 100, 105, "Gene"), _mention("c", 122, 129, "Chemical")
    markers = [["@CHEMICAL$", "@GENE$"], ["@CHEM-GENE$"]]
    assert masked(s, chem, gene, markers) == "@GENE$ is inhibited by @CHEMICAL$."
    touching = _mention("t", 105, 108, "Chemical")
    assert masked(s, touching, gene, markers) == "@CHEM-GENE$ inhibited by aspirin."
    assert masked(s, _mention("o", 101, 103, "Chemical"), gene, [["@A$", "@B$"]]) is None


def test_sentences_keep_input_mentions_whole():
    doc = Document("1", [Passage(0, "It binds Na. Cl. here. Then more.")])
    assert [s.text for s in split_sentences(doc, 0)] == ["It binds Na.", "Cl. here.", "Then more."]
    doc.mentions.append(_mention("m", 9, 16, "Chemical"))  # "Na. Cl."
    assert [s.text for s in split_sentences(doc, 0)] == ["It binds Na. Cl. here.", "Then more."]


# ------------------------------------------------------------------------------------------------------
# End to end


def test_annotate_adds_entities_and_relations(predictor, tmp_path):
    collection, fmt = read_documents(_write(tmp_path, "in.txt", "Aspirin inhibits the receptor.\nNaloxone binding the protein.\n"))
    assert fmt == "text"
    annotate(predictor, collection, "in.txt")
    first = collection.documents[0]
    found = {(m.text, m.type, m.source) for m in first.mentions}
    assert {("Aspirin", "Chemical", PREDICTED), ("receptor", "Gene", PREDICTED)} <= found
    assert all(m.task in ("e2e-chem", "e2e-gene") and 0 <= m.score <= 1 for m in first.mentions)
    rel = [r for r in first.relations if r.task == "e2e-rel"]
    assert rel and rel[0].type in ("CPR:3", "CPR:4")
    ids = {m.id: m for m in first.mentions}
    (role1, arg1), (role2, arg2) = rel[0].arguments
    assert (role1, ids[arg1].type, role2, ids[arg2].type) == ("Chemical", "Chemical", "Gene", "Gene")
    assert sum(rel[0].probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_relation_pairs_are_batched(predictor, tmp_path, monkeypatch):
    calls = []
    real = Predictor.predict

    def spy(self, task, inputs, **kwargs):
        calls.append((task, len(inputs)))
        return real(self, task, inputs, **kwargs)

    monkeypatch.setattr(Predictor, "predict", spy)
    collection, _ = read_documents(_write(tmp_path, "in.pubtator", PUBTATOR))
    annotate(predictor, collection, "in.pubtator")
    assert len(calls) == 1 and calls[0][0] == "e2e-rel" and calls[0][1] >= 3


def test_pubtator_round_trip_keeps_input_and_marks_predictions(model_dir, tmp_path):
    src = _write(tmp_path, "in.pubtator", PUBTATOR)
    out = tmp_path / "out.pubtator"
    assert main(["annotate", str(model_dir), str(src), "--output", str(out)]) == 0
    written = out.read_text().splitlines()
    for line in PUBTATOR.splitlines():
        if line:
            assert line in written
    added = [line for line in written if line not in PUBTATOR.splitlines() and line]
    assert added and all(line.split("\t")[-1].startswith("predicted:e2e-") for line in added)
    reread, _ = read_documents(out)
    text = reread.documents[0].text
    for m in reread.documents[0].mentions:
        assert text[m.start : m.end] == m.text


def test_keep_input_entities_uses_input_mentions_only(predictor, tmp_path):
    collection, _ = read_documents(_write(tmp_path, "in.pubtator", PUBTATOR))
    annotate(predictor, collection, "in.pubtator", keep_input={ALL})
    doc = collection.documents[0]
    assert all(m.source != PREDICTED for m in doc.mentions)
    ids = {m.id for m in doc.mentions}
    predicted = [r for r in doc.relations if r.source == PREDICTED]
    assert all(ident in ids for r in predicted for _, ident in r.arguments)
    # Aspirin (title) and protein (abstract) are in different sentences: no candidate
    assert all(r.arguments != [("Chemical", "T1"), ("Gene", "T2")] for r in predicted)


@pytest.mark.parametrize("fmt", ["jsonl", "bioc-xml", "bioc-json", "text", "pubtator"])
def test_every_output_format_reads_back(model_dir, tmp_path, fmt):
    src = _write(tmp_path, "in.pubtator", PUBTATOR)
    out = tmp_path / f"out.{fmt}"
    assert main(["annotate", str(model_dir), str(src), "--format", fmt, "--output", str(out)]) == 0
    if fmt == "text":
        assert out.read_text().startswith("# 111\n")
        return
    reread, _ = read_documents(out, fmt)
    doc = reread.documents[0]
    assert [m.text for m in doc.mentions if m.text == "Aspirin"]
    assert len(doc.mentions) > 2 and doc.text.startswith("Aspirin inhibits")
    if fmt != "pubtator":
        assert any(r.type in ("CPR:3", "CPR:4") for r in doc.relations)


def test_bioc_round_trip_keeps_input_annotations(model_dir, tmp_path):
    src = _write(tmp_path, "in.pubtator", PUBTATOR)
    xml = tmp_path / "in.xml"
    assert main(["annotate", str(model_dir), str(src), "--format", "bioc-xml", "--output", str(xml),
                 "--tasks", "e2e-rel", "--keep-input-entities"]) == 0
    collection, fmt = read_documents(xml)
    assert fmt == "bioc-xml"
    inputs = [m for m in collection.documents[0].mentions if m.source != PREDICTED]
    assert [(m.start, m.end, m.type, m.infons.get("identifier")) for m in inputs] == [
        (0, 7, "Chemical", "D001241"), (52, 59, "Gene", "-")
    ]


def test_document_heads_label_each_document(tiny_encoder, toy_tasks, tmp_path):
    from biomtl.model import MultiTaskModel

    specs = {n: load_dataset_spec(toy_tasks[n]) for n in ("toy-ner", "toy-hoc")}
    p = Predictor(MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32).eval(), precision="fp32")
    collection, _ = read_documents(_write(tmp_path, "in.txt", "Aspirin and cancer. The pain of cells.\nheparin.\n"))
    annotate(p, collection, "in.txt")
    for doc in collection.documents:
        assert set(doc.labels["toy-hoc"]["probabilities"]) == {"cancer", "pain"}
    # the document's probability of a label is its most confident sentence's
    sentences = p.annotate(["Aspirin and cancer.", "The pain of cells."], ["toy-hoc"])
    best = max(s["labels"]["toy-hoc"]["probabilities"]["pain"] for s in sentences)
    assert collection.documents[0].labels["toy-hoc"]["probabilities"]["pain"] == pytest.approx(best, abs=1e-5)


# ------------------------------------------------------------------------------------------------------
# Bad input: one line naming file and line, exit 2, nothing written


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.pubtator", "111|t|Aspirin.\n111|a|More.\n111\t0\t70\tAspirin\tChemical\n",
         r"bad.pubtator:3: mention 'Aspirin': offsets 0-70 are outside the text \(passages 0-8, 9-14\)"),
        ("bad.pubtator", "111|t|Aspirin.\n111|a|More.\n111\t0\t7\tAspirin\n",
         r"bad.pubtator:3: mention offsets '0'-'7' are not whole numbers, or the line has fewer than 5 columns"),
        ("bad.pubtator", "111|t|Aspirin.\n111|a|More.\n112\t0\t7\tAspirin\tChemical\n",
         r"bad.pubtator:3: PMID '112' does not match its document's '111'"),
        ("bad.pubtator", "111|t|Aspirin.\n111|a|More.\n111\t0\t7\tAspirim\tChemical\n",
         r"bad.pubtator:3: mention 'Aspirim': the text at 0-7 is 'Aspirin', not 'Aspirim'"),
        ("bad.pubtator", "111|t|Aspirin.\njunk\n",
         r"bad.pubtator:2: expected 'PMID\|t\|title', 'PMID\|a\|abstract' or a tab-separated annotation line"),
        ("bad.xml", "<collection><source/><date/><key/>\n<document><id>1</id>\n<passage></document></collection>\n",
         r"bad.xml:3: malformed BioC XML \(Opening and ending tag mismatch"),
        ("bad.json", '{"source": "", "date": "", "key": "", "documents": [\n{"id": "1",,}]}',
         r"bad.json:2: malformed BioC JSON"),
        ("bad.jsonl", '{"text": "Aspirin \\ud800."}\n', r"bad.jsonl:1: a string holds an unpaired surrogate"),
        ("bad.jsonl", '{"text": "Aspirin.", "entities": [{"start": 3, "end": 30, "type": "Chemical"}]}\n',
         r"bad.jsonl:1: entities\[0\]: offsets 3-30 are outside the text \(passages 0-8\)"),
    ],
)
def test_bad_documents(model_dir, tmp_path, capsys, name, text, message):
    src = _write(tmp_path, name, text)
    out = tmp_path / "out.txt"
    assert main(["annotate", str(model_dir), str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("biomtl: error: ")
    import re

    assert re.search(message, err), err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_bioc_annotation_outside_its_passage(tmp_path):
    xml = (
        "<collection><source/><date/><key/><document><id>7</id><passage><offset>0</offset><text>Aspirin.</text>"
        '<annotation id="A1"><infon key="type">Chemical</infon><location offset="4" length="20"/><text>x</text>'
        "</annotation></passage></document></collection>"
    )
    with pytest.raises(BiomtlError, match=r"bad.xml: document 7, annotation A1: offsets 4-24 are outside the text"):
        read_documents(_write(tmp_path, "bad.xml", xml))


def test_relation_task_without_a_source_for_an_argument(tiny_encoder, e2e_tasks, tmp_path, capsys):
    from biomtl.model import MultiTaskModel

    specs = {n: load_dataset_spec(e2e_tasks[n]) for n in ("e2e-chem", "e2e-rel")}
    model_dir = tmp_path / "model"
    MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32).save(model_dir)
    src = _write(tmp_path, "in.txt", "Aspirin inhibits the receptor.\n")
    out = tmp_path / "out.jsonl"
    assert main(["annotate", str(model_dir), str(src), "--output", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {src}: relation task e2e-rel has no source for argument type 'Gene': no NER head predicts "
        "Gene, GENE-N and the input has no annotation of those types (see entity_types: of e2e-rel)\n"
    )
    assert not out.exists()
    # with gene mentions in the input, the same model runs
    src = _write(tmp_path, "in.jsonl", json.dumps({"text": "Aspirin inhibits the receptor.", "entities": [
        {"start": 21, "end": 29, "type": "GENE-N"}]}) + "\n")
    assert main(["annotate", str(model_dir), str(src), "--output", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["entities"][0]["source"] == "predicted" or row["entities"][0]["type"] == "GENE-N"


def test_unknown_argument_type_in_the_mapping(e2e_tasks, tmp_path):
    path = tmp_path / "rel.yaml"
    path.write_text(e2e_tasks["e2e-rel"].read_text().replace("GENE-N: Gene", "GENE-N: Gen"))
    with pytest.raises(ConfigError) as e:
        load_dataset_spec(path)
    assert e.value.problems == [f"{path}: entity_types.GENE-N: unknown argument type 'Gen'; did you mean 'Gene'?"]
    path.write_text(e2e_tasks["e2e-rel"].read_text().replace("arguments: [Chemical, Gene]", "arguments: [Chemical]"))
    with pytest.raises(ConfigError, match=r"arguments: 1 argument type\(s\) for the 2 masks"):
        load_dataset_spec(path)


def test_shipped_relation_configs_declare_arguments():
    for name, arguments in (("chemprot", ["Chemical", "Gene"]), ("ddi", ["Drug", "Drug"])):
        spec = load_dataset_spec(name)
        assert spec.arguments == arguments
        assert set(spec.entity_types.values()) == set(arguments)


def test_format_detection(tmp_path):
    from biomtl.formats import detect_format

    assert detect_format(Path("x"), "111|t|Title") == "pubtator"
    assert detect_format(Path("x"), '{"bioctype": "BioCCollection"') == "bioc-json"
    assert detect_format(Path("x"), '{"text": "a"}') == "jsonl"
    assert detect_format(Path("x"), "<?xml version") == "bioc-xml"
    assert detect_format(Path("x"), "Aspirin inhibits COX.") == "text"
    assert write_documents(read_documents(_write(tmp_path, "a.txt", "x\n"))[0], "jsonl").startswith('{"id": "1"')
