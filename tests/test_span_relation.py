"""The ``span_relation`` task type: relations read from one encoding of the plain sentence (argument spans,
no masks), trained like any task, predicted from JSON, and scored by ``biomtl annotate`` from the encoder
states its NER heads already computed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import (
    TOY_CHEMICALS,
    TOY_GENES,
    toy_ner_yaml,
    train_toy_model,
    write_toy_entities,
    write_toy_span_relation,
)

from biomtl.annotate import ALL, annotate, plan_tasks, split_sentences
from biomtl.cli import main
from biomtl.errors import ConfigError, DataError
from biomtl.formats import PREDICTED, read_documents
from biomtl.model import load_tokenizer
from biomtl.predict import Predictor, WindowStates
from biomtl.tasks import load_dataset_spec, make_task
from biomtl.tasks.base import HeadSettings, InvalidLabel
from biomtl.tasks.span_relation import SpanPairHead, parse_spans

FILLER = ["the", "of", "in", "patients", "cells", "was", "with"]


def write_span_tasks(root: Path) -> dict[str, Path]:
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 12), ("test", 12)):
        write_toy_entities(root, rng, split, n, FILLER)
    configs = {
        "span-chem": root / "span-chem.yaml",
        "span-gene": root / "span-gene.yaml",
        "span-rel": write_toy_span_relation(root, "span-rel", TOY_CHEMICALS, TOY_GENES, FILLER),
    }
    configs["span-chem"].write_text(toy_ner_yaml(root, "span-chem", "chem", "Chemical"))
    configs["span-gene"].write_text(toy_ner_yaml(root, "span-gene", "gene", "Gene"))
    return configs


@pytest.fixture(scope="module")
def span_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_span_tasks(tmp_path_factory.mktemp("span-tasks"))


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: str, span_tasks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy_model(list(span_tasks.values()), tiny_encoder, tmp_path_factory.mktemp("span-run") / "run", epochs=8)


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir, precision="fp32")


# ------------------------------------------------------------------------------------------------------
# The type on its own


def test_parse_spans_names_what_is_wrong():
    assert parse_spans("aspirin inhibits COX", [{"start": 0, "end": 7}, {"start": 17, "end": 20}]) == ((0, 7), (17, 20))
    for raw, message in (
        ([{"start": 0, "end": 7}], "exactly two"),
        ([{"start": 0, "end": 7}, {"start": 17, "end": 99}], "outside the text"),
        ([{"start": 0, "end": 7}, {"start": "17", "end": 20}], "integer"),
        ([{"start": 7, "end": 8}, {"start": 17, "end": 20}], "cover no word"),
    ):
        with pytest.raises(InvalidLabel, match=message):
            parse_spans("aspirin inhibits COX", raw)


def test_encode_points_the_spans_at_the_arguments_sub_words(span_tasks, tiny_encoder):
    task = make_task(load_dataset_spec(span_tasks["span-rel"]))
    tokenizer = load_tokenizer(tiny_encoder)
    from biomtl.data.examples import Example

    text = "the aspirin inhibits the receptor ."
    ex = Example(id="1", text=text, label="CPR:4", meta={"entities": ((4, 11), (25, 33))})
    (feature,) = task.encode([ex], tokenizer, 32)
    ids = feature["input_ids"]
    (a0, a1), (b0, b1) = feature["spans"]
    assert tokenizer.decode(ids[a0:a1]).replace(" ", "") == "aspirin"
    assert tokenizer.decode(ids[b0:b1]).replace(" ", "") == "receptor"
    # a sentence longer than the window: the window that holds both arguments, else one of their own
    long = " ".join(["the"] * 40) + " aspirin inhibits the receptor ."
    start = long.index("aspirin")
    ex = Example(id="2", text=long, label="CPR:4", meta={"entities": ((start, start + 7), (start + 21, start + 29))})
    (feature,) = task.encode([ex], tokenizer, 16)
    (a0, a1), (b0, b1) = feature["spans"]
    assert len(feature["input_ids"]) <= 16
    assert tokenizer.decode(feature["input_ids"][a0:a1]).replace(" ", "") == "aspirin"
    assert tokenizer.decode(feature["input_ids"][b0:b1]).replace(" ", "") == "receptor"


def test_head_reads_only_the_argument_spans():
    torch.manual_seed(0)
    head = SpanPairHead(8, 3, HeadSettings(dropout=0.0, pooling="cls")).eval()
    hidden = torch.randn(1, 6, 8)
    mask = torch.ones(1, 6, dtype=torch.long)
    spans = torch.tensor([[[1, 2], [3, 5]]])
    base = head(hidden, mask, spans)
    changed = hidden.clone()
    changed[0, 2] += 1.0  # a token of no argument; [CLS] (position 0) unchanged
    assert torch.allclose(head(changed, mask, spans), base)
    changed[0, 4] += 1.0  # inside the second argument
    assert not torch.allclose(head(changed, mask, spans), base)


def test_config_checks(tmp_path, span_tasks):
    text = span_tasks["span-rel"].read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("columns: {id: id, text: text, entities: entities, label: label}",
                                "columns: {id: id, text: text, label: label}\nmarkers: [[\"@A$\", \"@B$\"]]"))
    with pytest.raises(ConfigError) as e:
        load_dataset_spec(bad)
    assert "reads plain sentences" in str(e.value) and "columns.entities" in str(e.value)


def test_bad_rows_name_file_and_line(tmp_path, span_tasks, capsys):
    root = span_tasks["span-rel"].parent
    rows = (root / "span-rel.train.jsonl").read_text().splitlines()
    row = json.loads(rows[2])
    row["entities"][1]["end"] = 999
    (tmp_path / "span-rel.train.jsonl").write_text("\n".join([*rows[:2], json.dumps(row), *rows[3:]]) + "\n")
    config = tmp_path / "span-rel.yaml"
    config.write_text(span_tasks["span-rel"].read_text().replace(f"{root}/span-rel.train.jsonl", f"{tmp_path}/span-rel.train.jsonl"))
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/span-rel.train.jsonl:3" in err and "outside the text" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------
# Trained: predict and annotate


def test_span_head_learns_the_cue(predictor, span_tasks):
    rows = [json.loads(line) for line in (span_tasks["span-rel"].parent / "span-rel.test.jsonl").read_text().splitlines()]
    out = predictor.predict("span-rel", rows, source="test")
    accuracy = sum(o["label"] == r["label"] for o, r in zip(out, rows, strict=True)) / len(rows)
    assert accuracy >= 0.75, out


def test_predict_refuses_input_without_spans(predictor):
    with pytest.raises(DataError, match="two 'entities' spans"):
        predictor.predict("span-rel", ["aspirin inhibits the receptor ."], source="in.txt")
    with pytest.raises(DataError, match="in.jsonl:1: entities\\[1\\]: offsets 8-99"):
        predictor.predict("span-rel", [{"text": "aspirin inhibits", "entities": [{"start": 0, "end": 7},
                                                                                 {"start": 8, "end": 99}]}], source="in.jsonl")


PUBTATOR = (
    "111|t|Aspirin inhibits the receptor.\n"
    "111|a|Naloxone binding the protein was seen. Heparin and the receptor in cells.\n"
    "\n"
    "222|t|Clonidine inhibits the protein of patients.\n"
    "222|a|The receptor of patients.\n"
    "\n"
)


def _annotated(predictor: Predictor, tmp_path: Path):
    path = tmp_path / "in.pubtator"
    path.write_text(PUBTATOR)
    collection, _ = read_documents(path)
    return annotate(predictor, collection, str(path))


def _count_encoder_calls(predictor: Predictor, monkeypatch) -> list:
    """The input shape of every encoder call from now on (until ``monkeypatch`` is undone)."""
    calls = []
    forward = predictor.model.encoder.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(predictor.model.encoder, "forward", counting)
    return calls


def test_annotate_scores_pairs_from_the_ner_pass(predictor, tmp_path, monkeypatch):
    assert plan_tasks(predictor).relations == ["span-rel"]
    calls = _count_encoder_calls(predictor, monkeypatch)
    collection = _annotated(predictor, tmp_path)
    relations = [r for doc in collection.documents for r in doc.relations]
    assert relations and all(r.source == PREDICTED and r.task == "span-rel" for r in relations)
    # one encoder pass for every sentence (one batch here), none for the pairs
    assert len(calls) == 1, calls
    # the same pairs through `predict` (their own encoding of their sentence, as in training): same probabilities
    rows, pairs = [], []
    for i, doc in enumerate(collection.documents):
        mentions = {m.id: m for m in doc.mentions}
        for r in doc.relations:
            a, b = (mentions[m] for _, m in r.arguments)
            sentence = next(s for s in split_sentences(doc, i) if s.start <= a.start and b.end <= s.end)
            spans = [{"start": m.start - sentence.start, "end": m.end - sentence.start} for m in (a, b)]
            rows.append(r)
            pairs.append({"text": sentence.text, "entities": spans})
    alone = predictor.predict("span-rel", pairs, source="pairs")
    for r, out in zip(rows, alone, strict=True):
        assert out["label"] == r.type
        for label, p in (r.probabilities or {}).items():
            assert abs(out["probabilities"][label] - p) < 1e-5


def test_annotate_groups_reads_each_text_as_one_sentence(predictor):
    """annotate's sentences are read as they are (a second split would leave a span head's pairs that cross it
    without a window of the NER pass)."""
    states = WindowStates()
    text = "Aspirin binds the receptor. Heparin binds it."
    predictor.annotate_groups([text], [0], ["span-chem"], states)
    assert [piece for _, _, piece in states.pieces] == [text]
    assert states.windows_of(0) is not None


def test_pairs_no_window_holds_share_a_window_of_their_own(predictor, monkeypatch):
    """In a sentence longer than the window, a pair that no window of the NER pass holds whole is read from
    the window that starts at its first argument (as in training): encoded once for all pairs that start
    there, with the probabilities the pair's own encoding gives."""
    text = "aspirin binding the receptor of cells " + "with patients " * 12 + "heparin inhibits the protein and receptor ."

    def span(word: str, last: bool = False) -> tuple[int, int]:
        start = text.rindex(word) if last else text.index(word)
        return start, start + len(word)

    pairs = [
        (0, span("aspirin"), span("receptor")),  # in the first window
        (0, span("heparin"), span("protein")),  # in the last window
        (0, span("aspirin"), span("protein")),  # in none: the window from "aspirin" ...
        (0, span("aspirin"), span("receptor", last=True)),  # ... shared
        (0, span("heparin"), span("receptor")),  # in none: the window from the first "receptor"
    ]
    states = WindowStates()
    predictor.annotate_groups([text], [0], ["span-chem"], states)
    assert len(states.features) > 1  # the sentence is read in several windows
    calls = _count_encoder_calls(predictor, monkeypatch)
    rows = predictor.score_spans("span-rel", [text], pairs, states)
    assert [shape[0] for shape in calls] == [2], calls  # one pass, two windows for the three pairs no window holds
    monkeypatch.undo()
    alone = predictor.predict("span-rel", [{"text": text, "entities": [{"start": s, "end": e} for s, e in (a, b)]}
                                           for _, a, b in pairs], source="pairs")
    for row, out in zip(rows, alone, strict=True):
        assert row["label"] == out["label"]
        assert max(abs(row["probabilities"][k] - p) for k, p in out["probabilities"].items()) < 1e-5


GOLD = (
    "111|t|Aspirin inhibits the receptor.\n"
    "111|a|Naloxone binding the protein was seen. Heparin and the receptor in cells.\n"
    "111\t0\t7\tAspirin\tChemical\t-\n"
    "111\t21\t29\treceptor\tGene\t-\n"
    "111\t31\t39\tNaloxone\tChemical\t-\n"
    "111\t52\t59\tprotein\tGene\t-\n"
    "111\t70\t77\tHeparin\tChemical\t-\n"
    "111\t86\t94\treceptor\tGene\t-\n"
    "\n"
)


def test_annotate_relations_of_input_mentions_follow_the_cue(predictor, tmp_path):
    path = tmp_path / "gold.pubtator"
    path.write_text(GOLD)
    collection, _ = read_documents(path)
    annotate(predictor, collection, str(path), keep_input={ALL})  # no NER head runs: the encoder runs for the pairs
    (doc,) = collection.documents
    mentions = {m.id: m for m in doc.mentions}
    assert all(m.source != PREDICTED for m in doc.mentions)
    found = {tuple(mentions[i].text.lower() for _, i in r.arguments): r.type for r in doc.relations}
    assert found == {("aspirin", "receptor"): "CPR:4", ("naloxone", "protein"): "CPR:3"}  # "and" is negative


def test_export_hf_and_onnx_of_the_span_head(model_dir, predictor, tmp_path):
    from biomtl.export import export_model

    lines = export_model(model_dir, "hf", tmp_path / "hf")
    assert any(line.startswith("span-rel: span-rel/ (AutoModel, trust_remote_code=True") for line in lines), lines
    # the folder's README code, run as a user would (in the folder), gives biomtl's logits for its pair
    readme = (tmp_path / "hf" / "span-rel" / "README.md").read_text()
    code = readme.split("```python\n")[1].split("```")[0].replace('"span-rel"', repr(str(tmp_path / "hf" / "span-rel")))
    code = code.replace('"Aspirin irreversibly inhibits COX-1."', '"aspirin inhibits the receptor ."')
    code = code.replace("[(0, 7), (30, 35)]", "[(0, 7), (21, 29)]")
    scope: dict = {}
    exec(code, scope)
    from biomtl.data.examples import Example

    task = predictor.model.tasks["span-rel"]
    ex = Example(id="1", text="aspirin inhibits the receptor .", meta={"entities": ((0, 7), (21, 29))})
    batch = task.collate(task.encode([ex], predictor.model.tokenizer, 32), 0)
    with torch.inference_mode():
        ours = predictor.model("span-rel", batch)
    assert float((scope["logits"].detach() - ours).abs().max()) < 1e-4
    onnxruntime = pytest.importorskip("onnxruntime")
    lines = export_model(model_dir, "onnx", tmp_path / "onnx")
    assert any(line.startswith("span-rel: output 'span-rel' (batch, 3)") for line in lines), lines
    # the graph on real pairs, as biomtl encodes them (other batch sizes and lengths than the export's)
    task = predictor.model.tasks["span-rel"]
    from biomtl.data.examples import Example

    pairs = [("aspirin inhibits the receptor .", (0, 7), (21, 29)),
             ("patients with heparin binding the protein of cells .", (14, 21), (34, 41))]
    examples = [Example(id=str(i), text=t, meta={"entities": (a, b)}) for i, (t, a, b) in enumerate(pairs)]
    batch = task.collate(task.encode(examples, predictor.model.tokenizer, 32), 0)
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert "spans" in names
    batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))  # BERT's default where biomtl gives none
    got = session.run(["span-rel"], {n: batch[n].numpy() for n in names})[0]
    with torch.inference_mode():
        ours = predictor.model("span-rel", batch)
    assert float((torch.from_numpy(got) - ours).abs().max()) < 1e-4
    assert "`spans` input" in (tmp_path / "onnx" / "README.md").read_text()


def test_annotate_in_parts_gives_the_same_annotations(predictor, tmp_path, monkeypatch):
    """Span heads keep the encoder states of a bounded part of the documents at a time; the parts change nothing."""
    import biomtl.annotate as annotate_module

    whole = _annotated(predictor, tmp_path)
    monkeypatch.setattr(annotate_module, "STATES_SENTENCES", 1)  # every document its own part
    parts = _annotated(predictor, tmp_path)
    assert _summary(parts) == _summary(whole)
    assert any(d.relations for d in whole.documents)


def _summary(collection) -> list:
    """Each document's mentions and relations by span and type, probabilities to 4 places (batches differ)."""
    out = []
    for d in collection.documents:
        spans = {m.id: (m.start, m.end) for m in d.mentions}
        out.append((sorted((m.start, m.end, m.type, round(m.score or 0, 4)) for m in d.mentions),
                    sorted((r.type, *(spans[i] for _, i in r.arguments), round(r.probability or 0, 4)) for r in d.relations)))
    return out


def test_predict_command_reads_jsonl_pairs(model_dir, tmp_path, capsys):
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"id": "a", "text": "aspirin inhibits the receptor .",
                                "entities": [{"start": 0, "end": 7}, {"start": 21, "end": 29}]}) + "\n")
    assert main(["predict", str(model_dir), "--task", "span-rel", "--input", str(good), "--precision", "fp32"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["id"] == "a" and row["label"] in ("CPR:3", "CPR:4", "false") and set(row["probabilities"]) == {"CPR:3", "CPR:4", "false"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + json.dumps({"text": "aspirin inhibits", "entities": [{"start": 0, "end": 7}]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(model_dir), "--task", "span-rel", "--input", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: 'entities' must list exactly two argument spans" in err and not out.exists()
