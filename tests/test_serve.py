"""`biomtl serve`: every endpoint, every 4xx class, the limits, the docs and page assets, micro-batching, on
a tiny 5-head model (chemical NER, gene NER, a relation task with arguments, a document head, similarity).

The tests that need a real server (equal results under concurrency, graceful shutdown) are in
test_serve_server.py (with the browser test), which uses :func:`serve_model` from here."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'biomtl[serve]'")
pytest.importorskip("fastapi_offline", reason="the serve extra is not installed: pip install 'biomtl[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from conftest import (  # noqa: E402
    TOY_CHEMICALS,
    toy_ner_yaml,
    train_toy_model,
    write_toy_cue_relations,
    write_toy_entities,
)
from fastapi.testclient import TestClient  # noqa: E402

from biomtl.cli import main  # noqa: E402
from biomtl.packing import PackedEncoder  # noqa: E402
from biomtl.predict import Predictor  # noqa: E402
from biomtl.serve import ServeOptions, create_app  # noqa: E402
from biomtl.worker import BucketedEncoder  # noqa: E402

FILLER = ["the", "of", "in", "patients", "cells", "was", "with", "cancer", "pain"]

ABSTRACT = (
    "Aspirin inhibits the receptor in patients with cancer. Naloxone binding the protein was seen in cells. "
    "Heparin and clonidine with the receptor of patients in pain."
)

RELATION_YAML = """name: srv-rel
type: classification
format: tsv
files: {{train: {root}/rel.train.tsv, dev: {root}/rel.dev.tsv, test: {root}/rel.test.tsv}}
columns: {{id: index, text: sentence, label: label}}
labels: ["CPR:3", "CPR:4", "false"]
negative_label: "false"
markers: [["@CHEMICAL$", "@GENE$"], ["@CHEM-GENE$"]]
arguments: [Chemical, Gene]
entity_types: {{Chemical: Chemical, Gene: Gene}}
metric: {{name: classification_f1, args: {{exclude: ["false"]}}}}
main_metric: micro_f1
"""


def write_serve_tasks(root: Path) -> list[Path]:
    """Chemical NER, gene NER, a relation task (label from a cue word), a document head (cancer/pain from
    cue words) and a similarity task (shared words)."""
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 8), ("test", 8)):
        write_toy_entities(root, rng, split, n, FILLER)
        write_toy_cue_relations(root, rng, split, n)
        with open(root / f"doc.{split}.tsv", "w") as f:
            f.write("index\tdoc_id\tsentence\tlabels\n")
            for i in range(n):
                words = [rng.choice(FILLER) for _ in range(6)]
                labels = [w for w in ("cancer", "pain") if w in words] or ["cancer"]
                words[0] = labels[0] if "cancer" not in words and "pain" not in words else words[0]
                f.write(f"d{i // 2}_s{i % 2}\td{i // 2}\t{' '.join(words)}\t{','.join(labels)}\n")
        with open(root / f"sts.{split}.tsv", "w") as f:
            f.write("index\tsentence1\tsentence2\tscore\n")
            for i in range(n):
                a = [rng.choice(FILLER) for _ in range(5)]
                k = rng.randint(0, 4)
                b = a[:k] + [rng.choice(FILLER) for _ in range(5 - k)]
                f.write(f"{split}{i}\t{' '.join(a)}\t{' '.join(b)}\t{k}\n")

    def files(prefix: str, ext: str) -> str:
        return "{" + ", ".join(f"{s}: {root}/{prefix}.{s}.{ext}" for s in ("train", "dev", "test")) + "}"

    yamls = {
        "srv-chem": toy_ner_yaml(root, "srv-chem", "chem", "Chemical"),
        "srv-gene": toy_ner_yaml(root, "srv-gene", "gene", "Gene"),
        "srv-rel": RELATION_YAML.format(root=root),
        "srv-doc": f"name: srv-doc\ntype: multilabel\nformat: tsv\nfiles: {files('doc', 'tsv')}\n"
                   "columns: {id: index, doc_id: doc_id, text: sentence, label: labels}\nlabels: [cancer, pain]\n"
                   "metric: {name: hoc_f1}\nmain_metric: f1\n",
        "srv-sts": f"name: srv-sts\ntype: regression\nformat: tsv\nfiles: {files('sts', 'tsv')}\n"
                   "columns: {id: index, text: sentence1, text_b: sentence2, label: score}\nscore_range: [0, 5]\n"
                   "metric: {name: pearson}\nmain_metric: pearson\n",
    }
    paths = []
    for name, text in yamls.items():
        (root / f"{name}.yaml").write_text(text)
        paths.append(root / f"{name}.yaml")
    return paths


_MODELS: dict[str, Path] = {}


def serve_model(tiny_encoder: str, factory: pytest.TempPathFactory) -> Path:
    """The tiny 5-head model, trained once per session (shared by the serve test modules)."""
    if "model" not in _MODELS:
        tasks = write_serve_tasks(factory.mktemp("serve-tasks"))
        _MODELS["model"] = train_toy_model(tasks, tiny_encoder, factory.mktemp("serve-run") / "run", epochs=6)
    return _MODELS["model"]


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serve_model(tiny_encoder, tmp_path_factory)


def make_client(model_dir: Path, **options) -> TestClient:
    predictor = Predictor.load(model_dir, precision="fp32")
    return TestClient(create_app(predictor, ServeOptions(**options), model_name=str(model_dir)), raise_server_exceptions=True)


@pytest.fixture(scope="module")
def client(model_dir: Path):
    with make_client(model_dir, max_texts=8, max_chars=2000, max_body_bytes=20_000) as c:
        yield c


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and "\n" not in body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------------------
# Endpoints


def test_health_and_tasks(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tasks"] == 5 and health["batching"] is True
    assert health["encoder_batches"] == "packed"  # a BERT reads packed texts
    assert health["precision"] == "fp32"
    tasks = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
    assert list(tasks) == ["srv-chem", "srv-gene", "srv-rel", "srv-doc", "srv-sts"]
    assert tasks["srv-chem"] == {"name": "srv-chem", "type": "tagging", "labels": ["Chemical"], "token_level": True,
                                 "annotates_text": True, "arguments": []}
    assert tasks["srv-rel"]["labels"] == ["CPR:3", "CPR:4", "false"] and tasks["srv-rel"]["arguments"] == ["Chemical", "Gene"]
    assert tasks["srv-sts"]["type"] == "regression"


def test_bit_identity_is_checked_in_the_precision_the_model_runs_in(model_dir, monkeypatch):
    """A bf16 model (``--precision auto`` on a CPU with native bf16) is checked for batch invariance under bf16
    autocast, not in fp32, and ``/health`` says bf16."""
    import torch

    import biomtl.worker as worker

    checked = []
    real = worker.batch_invariant
    monkeypatch.setattr(worker, "batch_invariant", lambda device, dtype=None: checked.append(dtype) or real(device, dtype))
    predictor = Predictor.load(model_dir, precision="bf16")
    with TestClient(create_app(predictor, ServeOptions())) as c:
        assert c.get("/health").json()["precision"] == "bf16"
    assert checked == [torch.bfloat16]


def test_thread_counts_are_checked_before_copies_lend_threads(model_dir):
    """The served encoder gives the same bits with one thread and with two (checked at startup before model
    copies lend each other their threads); an encoder whose output depends on the thread count fails the
    check, and torch's thread count is left as it was."""
    import torch

    from biomtl.worker import prepare_model, thread_invariant

    predictor = Predictor.load(model_dir)
    prepare_model(predictor, 8)
    model = predictor.model
    before = torch.get_num_threads()
    assert thread_invariant(model.encode, model.tokenizer, predictor.device, predictor.dtype, (1, 2))

    def by_threads(batch):
        return model.encode(batch) + torch.get_num_threads()

    assert not thread_invariant(by_threads, model.tokenizer, predictor.device, predictor.dtype, (1, 2))
    assert torch.get_num_threads() == before


def test_annotate_json_gives_entities_relations_and_labels(client, model_dir):
    response = client.post("/annotate", json={"text": ABSTRACT})
    assert response.status_code == 200, response.text
    (doc,) = response.json()["documents"]
    assert doc["text"] == ABSTRACT
    found = {(e["text"].lower(), e["type"]) for e in doc["entities"]}
    assert {("aspirin", "Chemical"), ("receptor", "Gene")} <= found
    for e in doc["entities"]:
        assert ABSTRACT[e["start"]:e["end"]] == e["text"] and e["source"] == "predicted" and 0 <= e["score"] <= 1
    assert doc["relations"], "the relation head finds the cue-word relations"
    ids = {e["id"] for e in doc["entities"]}
    for r in doc["relations"]:
        assert r["type"] in ("CPR:3", "CPR:4") and {a[1] for a in r["arguments"]} <= ids and 0 < r["probability"] <= 1
    assert set(doc["labels"]) == {"srv-doc"}
    # the same as `biomtl annotate` on the same text
    from biomtl.annotate import annotate
    from biomtl.formats import Collection, Document, Passage, write_documents

    expected = annotate(Predictor.load(model_dir, precision="fp32"), Collection([Document("1", [Passage(0, ABSTRACT)])]), "x")
    assert [e["text"] for e in doc["entities"]] == [json.loads(write_documents(expected, "jsonl"))["entities"][i]["text"]
                                                   for i in range(len(doc["entities"]))]


def test_annotate_texts_and_documents(client):
    rows = client.post("/annotate", json={"texts": ["Aspirin inhibits the receptor.", "The cells."]}).json()["documents"]
    assert [(r["id"], r["text"]) for r in rows] == [("1", "Aspirin inhibits the receptor."), ("2", "The cells.")]
    given = {"documents": [{"id": "a", "text": "Aspirin inhibits the receptor.", "entities": [{"start": 0, "end": 7, "type": "Chemical"}]}]}
    (doc,) = client.post("/annotate", json=given, params={"keep_input_entities": "Chemical"}).json()["documents"]
    assert doc["id"] == "a"
    assert [(e["text"], e["source"]) for e in doc["entities"] if e["type"] == "Chemical"] == [("Aspirin", "input")]


def test_a_large_body_is_read_off_the_event_loop_with_the_same_answer(client, monkeypatch):
    import biomtl.serve as serve_module

    body = {"texts": ["Aspirin inhibits the receptor.", "Heparin binding the protein."]}
    inline = client.post("/annotate", json=body).json()
    calls = []
    real = serve_module.run_in_threadpool

    async def counting(fn, *args, **kwargs):
        calls.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(serve_module, "run_in_threadpool", counting)
    monkeypatch.setattr(serve_module, "INLINE_BODY_BYTES", 10)  # this body counts as large
    assert client.post("/annotate", json=body).json() == inline and len(calls) == 1


def test_annotate_plain_text_pubtator_and_bioc(client):
    text = client.post("/annotate", content="Aspirin inhibits the receptor.\n", headers={"content-type": "text/plain"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text.startswith("# 1\n") and "\tChemical 0 7\tAspirin\tpredicted srv-chem" in text.text

    pubtator = "111|t|Aspirin inhibits the receptor.\n111|a|Heparin binding the protein.\n111\t0\t7\tAspirin\tChemical\tD001241\n\n"
    out = client.post("/annotate", content=pubtator, headers={"content-type": "text/plain"})
    assert out.status_code == 200, out.text
    assert "111\t0\t7\tAspirin\tChemical\tD001241\n" in out.text  # the input's annotation kept as it was
    assert "predicted:srv-gene" in out.text

    xml = client.post("/annotate", content=pubtator, params={"format": "bioc-xml"}, headers={"content-type": "text/plain"})
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
    back = client.post("/annotate", content=xml.text, headers={"content-type": "application/xml"}, params={"format": "json"})
    assert back.status_code == 200, back.text
    assert any(e["text"] == "Aspirin" and e["source"] == "input" for e in back.json()["documents"][0]["entities"])


def test_predict_each_task_type(client):
    chem = client.post("/predict/srv-chem", json={"inputs": ["Aspirin with the receptor.", {"id": "x", "text": "Heparin."}]})
    assert chem.status_code == 200, chem.text
    rows = chem.json()["predictions"]
    assert chem.json()["task"] == "srv-chem" and [r["id"] for r in rows] == ["1", "x"]
    assert rows[0]["entities"][0]["text"] == "Aspirin"
    rel = client.post("/predict/srv-rel", json={"inputs": ["@CHEMICAL$ inhibits the @GENE$ ."]}).json()["predictions"][0]
    assert rel["label"] == "CPR:4" and set(rel["probabilities"]) == {"CPR:3", "CPR:4", "false"}
    sts = client.post("/predict/srv-sts", json={"inputs": [{"text": "the cells", "text_b": "the cells"}]}).json()
    assert isinstance(sts["predictions"][0]["score"], float)
    assert client.post("/predict/srv-chem", json={"inputs": []}).json()["predictions"] == []


def test_similarity(client):
    out = client.post("/similarity", json={"pairs": [["the cells of patients", "the cells of patients"], ["pain", "cancer cells"]]})
    assert out.status_code == 200, out.text
    assert out.json()["task"] == "srv-sts" and len(out.json()["scores"]) == 2
    assert client.post("/similarity", json={"pairs": [["a", "b"]], "task": "srv-sts"}).status_code == 200
    assert "not a similarity (regression) task" in error_of(client.post("/similarity", json={"pairs": [["a", "b"]], "task": "srv-chem"}), 404)


# ------------------------------------------------------------------------------------------------------
# Every 4xx class has a JSON error body


def test_unknown_task_and_path_and_method(client):
    assert error_of(client.post("/predict/nope", json={"inputs": ["x"]}), 404) == (
        "unknown task 'nope' (the model has srv-chem, srv-gene, srv-rel, srv-doc, srv-sts)"
    )
    assert "tasks: unknown task 'nope'" in error_of(client.post("/annotate", json={"text": "x"}, params={"tasks": "nope"}), 404)
    error_of(client.get("/no/such/path"), 404)
    error_of(client.get("/annotate"), 405)
    error_of(client.put("/predict/srv-chem", json={"inputs": []}), 405)


def test_malformed_requests_are_400(client):
    assert error_of(client.post("/annotate", content=b'{"text": ', headers={"content-type": "application/json"}), 400).startswith("invalid JSON")
    assert error_of(client.post("/annotate", json={"txt": "x"}), 400).startswith('expected a JSON object with "text"')
    assert error_of(client.post("/annotate", json={"texts": ["a", 3]}), 400) == "texts: expected a list of strings"
    assert error_of(client.post("/annotate", content=b"\xff\xfe", headers={"content-type": "text/plain"}), 422) == "request:1: not valid UTF-8 (byte 0xff)"
    assert error_of(client.post("/annotate", content=b"x", params={"input_format": "docx"}), 400).startswith("input_format: unknown format 'docx'")
    assert error_of(client.post("/annotate", json={"text": "x"}, params={"format": "docx"}), 400).startswith("format: unknown format 'docx'")
    assert error_of(client.post("/predict/srv-chem", content=b"{nope", headers={"content-type": "application/json"}), 400).startswith("invalid JSON")
    assert error_of(client.post("/predict/srv-chem", json={"input": ["x"]}), 422) == "inputs: Field required"
    assert error_of(client.post("/similarity", json={"pairs": [["only one"]]}), 422).startswith("pairs.0")


def test_unsupported_media_type_is_415(client):
    assert "unsupported media type 'image/png'" in error_of(client.post("/annotate", content=b"x", headers={"content-type": "image/png"}), 415)


def test_input_the_model_cannot_read_is_422(client):
    # A BiomtlError from the predictor or the document readers: its one line, as the CLI prints it.
    assert error_of(client.post("/predict/srv-rel", json={"inputs": ["no masks here"]}), 422).startswith("inputs:1: ")
    assert error_of(client.post("/predict/srv-sts", json={"inputs": ["one text"]}), 422) == (
        "inputs:1: task srv-sts compares two texts: give 'text' and 'text_b'"
    )
    bad = "111|t|Aspirin.\n111\t0\t99\tAspirin\tChemical\t-\n\n"
    assert "outside the text" in error_of(client.post("/annotate", content=bad, params={"input_format": "pubtator"}), 422)
    outside = {"documents": [{"text": "Aspirin.", "entities": [{"start": 3, "end": 40, "type": "Chemical"}]}]}
    assert error_of(client.post("/annotate", json=outside), 422).startswith("request:1: entities[0]: offsets 3-40 are outside the text")


def test_limits_are_413(client):
    assert error_of(client.post("/predict/srv-chem", json={"inputs": ["a"] * 9}), 413) == "too many texts: 9 (at most 8 per request; --max-texts)"
    assert error_of(client.post("/annotate", json={"texts": ["aspirin"] * 9}), 413).startswith("too many texts: 9")
    assert error_of(client.post("/similarity", json={"pairs": [["a" * 1500, "b" * 501]]}), 413) == (
        "too much text: 2001 characters (at most 2000 per request; --max-chars)"
    )
    assert error_of(client.post("/annotate", content="x" * 2500, headers={"content-type": "text/plain"}), 413).startswith("too much text")
    big = "aspirin " * 3000
    assert error_of(client.post("/annotate", content=big, headers={"content-type": "text/plain"}), 413) == (
        "request body too large: over 20000 bytes (--max-body-bytes)"
    )

    def chunks():  # no content-length: the limit is counted as the body streams in
        for _ in range(30):
            yield b"aspirin " * 100

    assert error_of(client.post("/annotate", content=chunks(), headers={"content-type": "text/plain"}), 413).startswith("request body too large")
    assert client.get("/health").status_code == 200  # the server is fine afterwards


def test_bad_options_and_bad_model_dir(tmp_path, capsys):
    with pytest.raises(Exception, match="--max-texts: must be >= 1, got 0"):
        create_app(Predictor.__new__(Predictor), ServeOptions(max_texts=0))
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("biomtl: error: ") and "missing" in err[0]
    assert main(["serve", str(tmp_path), "--max-wait-ms", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "biomtl: error: --max-wait-ms: must be >= 0, got -1.0"
    assert main(["serve", str(tmp_path), "--model-processes", "0"]) == 2
    assert capsys.readouterr().err.strip() == "biomtl: error: --model-processes: must be >= 1, got 0"


def test_two_model_copies_by_default_on_a_cpu_with_two_cores(monkeypatch):
    import torch

    from biomtl.serve import default_copies

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_copies("cpu") == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert default_copies("cpu") == 1


# ------------------------------------------------------------------------------------------------------
# Docs and page work offline


def _external_urls(text: str) -> list[str]:
    import re

    return [u for u in re.findall(r"""(?:src|href)\s*=\s*["'](https?:[^"']+)""", text) if "127.0.0.1" not in u]


def test_docs_and_page_load_nothing_from_outside(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert _external_urls(docs.text) == []
    import re

    for asset in re.findall(r"""(?:src|href)\s*=\s*["'](/[^"']+)""", docs.text):
        assert client.get(asset).status_code == 200, asset
    spec = client.get("/openapi.json").json()
    assert {"/annotate", "/predict/{task}", "/similarity", "/tasks", "/health"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert _external_urls(page.text) == []
    for asset in ("/static/app.js", "/static/style.css"):
        body = client.get(asset)
        assert body.status_code == 200 and "http://" not in body.text and "https://" not in body.text


# ------------------------------------------------------------------------------------------------------
# Micro-batching


def test_bucketed_encoder_rows_match_the_batch_shape():
    import torch

    seen = []

    def encode(batch):
        seen.append(tuple(batch["input_ids"].shape))
        return batch["input_ids"].float().unsqueeze(-1).repeat(1, 1, 2)

    ids = torch.tensor([[5, 6, 0, 0, 0, 0, 0, 0, 0, 0], [5, 6, 7, 8, 9, 9, 9, 9, 9, 9], [5, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    out = BucketedEncoder(encode, bucket=4, max_length=12, pad_id=0)({"input_ids": ids, "attention_mask": mask})
    assert sorted(seen) == [(1, 12), (2, 4)]  # lengths 2 and 1 → 4; length 10 → 12 (the bucket, within max_length)
    assert out.shape == (3, 10, 2) and torch.equal(out[..., 0], (ids * mask).float())
    assert BucketedEncoder(encode, bucket=8, max_length=30, pad_id=0).bucket_length(29) == 30


def test_served_layers_under_autocast_give_autocasts_bits_from_weights_cast_once():
    """Under bf16 autocast a served wide layer computes from a bf16 copy of its weights made once, and gets
    the bits autocast gets casting them at every call; changed weights are cast again."""
    import torch

    from biomtl.worker import invariant_linears

    layer = torch.nn.Linear(32, 96)
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        expected = layer(x)
        invariant_linears(layer)
        first = layer(x)
        copy = layer.__dict__["_biomtl_cast"][1]
        assert first.dtype == torch.bfloat16 and torch.equal(first, expected)
        assert layer(x) is not None and layer.__dict__["_biomtl_cast"][1] is copy  # kept between calls
    with torch.no_grad():
        layer.weight.mul_(2)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    with torch.inference_mode():
        assert layer(x).dtype == torch.float32  # no autocast: the fp32 weights


def test_served_dense_layers_give_a_row_the_same_result_in_any_batch():
    """A served model's ``nn.Linear`` layers pad products of 1-3 rows with zero rows, and narrow ones (a head
    of one output) sum each row's products (some CPUs take other kernels for such shapes, so a row alone and in
    a batch differed in the last bits): same values and shapes, and a row gets the same bits whatever the row
    count where the machine's matrix products allow it (``MKL_CBWR=AUTO,STRICT``, as ``biomtl serve`` sets)."""
    import torch

    from biomtl.worker import batch_invariant, invariant_linears

    layer = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = [layer(x[:1, :n]) for n in range(6)]
        invariant_linears(layer)
        after = [layer(x[:1, :n]) for n in range(6)]
        assert [a.shape for a in after] == [b.shape for b in before] == [(1, n, 1) for n in range(6)]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after, before, strict=True))
        assert layer(x).shape == (2, 5, 1)
    if batch_invariant(torch.device("cpu")):
        with torch.inference_mode():
            full = layer(x.reshape(10, 8))
            assert all(torch.equal(layer(x.reshape(10, 8)[:n]), full[:n]) for n in range(1, 10))


def _packed_and_padded(encoder_path: str):
    import torch

    from biomtl.model import load_encoder

    encoder, tokenizer = load_encoder(encoder_path, 0.0)
    encoder.eval()
    packed = PackedEncoder(encoder)
    texts = ["aspirin inhibits the receptor .", "naloxone", "the receptor of patients with cancer in cells was seen with pain ."]
    batch = dict(tokenizer(texts, texts[::-1], padding=True, return_tensors="pt"))
    with torch.inference_mode():
        together = packed(batch)
        padded = encoder(**batch).last_hidden_state
        alone = [packed(dict(tokenizer([a], [b], return_tensors="pt")))[0] for a, b in zip(texts, texts[::-1], strict=True)]
    return packed, encoder, tokenizer, batch, together, padded, alone


def test_packed_texts_get_the_states_of_a_padded_batch(tiny_encoder):
    """Texts packed into one row (pairs too: token types follow) get a padded batch's states within rounding,
    and zeros where the batch has padding; the startup check passes for a BERT."""
    import torch

    packed, encoder, tokenizer, batch, together, padded, _ = _packed_and_padded(tiny_encoder)
    mask = batch["attention_mask"].bool()
    assert together.shape == padded.shape and not together[~mask].any()
    assert torch.allclose(together[mask], padded[mask], atol=1e-5)
    assert packed.works(lambda b: encoder(**b).last_hidden_state, tokenizer, torch.device("cpu"))


_PACKED_ALONE = """
import sys, torch
from test_serve import _packed_and_padded
from biomtl.worker import batch_invariant
assert batch_invariant(torch.device("cpu")), "MKL's strict mode is not on"
_, _, _, _, together, _, alone = _packed_and_padded(sys.argv[1])
assert all(torch.equal(together[i, : len(states)], states) for i, states in enumerate(alone)), "not bit for bit"
print("ok")
"""


@pytest.mark.slow
def test_packed_texts_get_their_own_states_alone_and_in_a_batch(tiny_encoder):
    """Each text's states, packed with others, are bit for bit its states packed alone: the dense layers' rows
    do not depend on the row count under MKL's strict mode, which must be set before torch starts (a process
    of its own)."""
    import subprocess
    import sys

    env = {**os.environ, "MKL_CBWR": "AUTO,STRICT", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _PACKED_ALONE, tiny_encoder], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_an_encoder_that_cannot_read_packed_texts_runs_length_buckets(tiny_encoder, tmp_path):
    """RoBERTa numbers positions from its padding index on: packed positions from 0 would change its states,
    which the check at startup sees; the service then pads each text to its length bucket."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from biomtl.config import DatasetSpec, MetricSpec
    from biomtl.model import MultiTaskModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    config = RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    encoder = RobertaModel(config, add_pooling_layer=False).eval()
    assert not PackedEncoder(encoder).works(lambda b: encoder(**b).last_hidden_state, tokenizer, torch.device("cpu"))
    spec = DatasetSpec("toy-doc", "classification", "tsv", {}, MetricSpec("classification_f1"), "f1", labels=["a", "b"])
    MultiTaskModel(encoder, tokenizer, {"toy-doc": spec}, max_length=32).save(tmp_path / "model")
    with TestClient(create_app(Predictor.load(tmp_path / "model", precision="fp32"))) as c:
        assert c.get("/health").json()["encoder_batches"] == "buckets"
        assert c.post("/predict/toy-doc", json={"inputs": ["aspirin inhibits the receptor ."]}).status_code == 200


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(model_dir):
    with make_client(model_dir, max_wait_ms=300) as c:
        texts = [f"{TOY_CHEMICALS[i % 4]} inhibits the receptor of patients {'with pain ' * (i % 3)}." for i in range(8)]
        results: dict[int, object] = {}

        def send(i: int) -> None:
            if i == 3:  # malformed for its task: no masks
                results[i] = c.post("/predict/srv-rel", json={"inputs": ["no masks"]})
            else:
                results[i] = c.post("/predict/srv-rel", json={"inputs": [texts[i].replace(TOY_CHEMICALS[i % 4], "@CHEMICAL$").replace("receptor", "@GENE$")]})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert error_of(results[3], 422).startswith("inputs:1: ")
        assert all(results[i].status_code == 200 for i in range(8) if i != 3)
        health = c.get("/health").json()
        assert health["requests"] == 8 and health["model_calls"] < 8  # shared forward passes


def test_model_copies_run_batches_at_the_same_time():
    """With two model copies (``--model-processes 2``) a second batch runs while the first is still running,
    and each job gets its own result (a batcher with one worker fails: the first call waits for a second that
    never comes)."""
    import asyncio

    from biomtl.serve import MicroBatcher

    both = threading.Barrier(2, timeout=30)
    calls: list[str] = []

    def copy(name: str):
        def run(key, payloads):
            calls.append(name)
            both.wait()  # returns only while the other copy runs a batch too
            return [f"{p} by {name}" for p in payloads]

        return run

    batcher = MicroBatcher([copy("a"), copy("b")], True, 0.0, 100)
    batcher.start()

    async def scenario() -> list[str]:
        first = asyncio.create_task(batcher.submit(("k",), "x", 1))
        while not calls:
            await asyncio.sleep(0.01)
        second = await asyncio.wait_for(batcher.submit(("k",), "y", 1), 60)
        return [await asyncio.wait_for(first, 60), second]

    x, y = asyncio.run(scenario())
    batcher.stop()
    assert x.startswith("x by ") and y.startswith("y by ") and sorted(calls) == ["a", "b"]
    assert {x[-1], y[-1]} == {"a", "b"} and batcher.batches == 2 and batcher.jobs == 2


def test_lent_threads_a_lone_request_runs_alone_on_the_first_copy():
    """Copies that lend their threads (``--model-processes 2``): under light load the first copy takes every
    batch, and a batch taken while nothing else runs or is queued runs alone (with every copy's threads)."""
    import asyncio

    from biomtl.serve import MicroBatcher

    calls: list[tuple[str, list[str], bool]] = []

    def copy(name: str):
        def run(key, payloads, alone):
            calls.append((name, list(payloads), alone))
            return list(payloads)

        return run

    batcher = MicroBatcher([copy("a"), copy("b")], True, 0.0, 100, lend=True)
    batcher.start()

    async def one_at_a_time() -> list[str]:
        return [await asyncio.wait_for(batcher.submit(("k",), p, 1), 60) for p in "xyz"]

    assert asyncio.run(one_at_a_time()) == ["x", "y", "z"]
    batcher.stop()
    assert calls == [("a", ["x"], True), ("a", ["y"], True), ("a", ["z"], True)]
    assert batcher.batches_alone == 3


def test_lent_threads_queued_jobs_are_shared_between_the_copies():
    """Jobs queued together are split between the idle copies, which then run side by side with their own
    share of the threads (each call meets the other at a barrier: with one copy taking them all it fails)."""
    import asyncio

    from biomtl.serve import MicroBatcher

    both = threading.Barrier(2, timeout=30)
    calls: dict[str, tuple[list[str], bool]] = {}

    def copy(name: str):
        def run(key, payloads, alone):
            calls[name] = (list(payloads), alone)
            both.wait()
            return [f"{p} by {name}" for p in payloads]

        return run

    batcher = MicroBatcher([copy("a"), copy("b")], True, 0.0, 100, lend=True)

    async def scenario() -> list[str]:
        jobs = [asyncio.create_task(batcher.submit(("k",), p, 1)) for p in "wxyz"]
        await asyncio.sleep(0.05)  # all four queued before a worker starts
        batcher.start()
        return list(await asyncio.wait_for(asyncio.gather(*jobs), 60))

    results = asyncio.run(scenario())
    batcher.stop()
    assert calls == {"a": (["w", "x"], False), "b": (["y", "z"], False)}
    assert results == ["w by a", "x by a", "y by b", "z by b"] and batcher.batches_alone == 0


class _Copy:
    """A model copy for the batcher: records its calls; ``down`` is what its ``problem()`` says."""

    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls, self.down = name, calls, None

    def problem(self):
        return self.down

    def __call__(self, key, payloads, alone):
        self.calls.append((self.name, list(payloads), alone))
        return [RuntimeError(self.down) if self.down else f"{p} by {self.name}" for p in payloads]


def test_a_copy_that_is_down_steps_aside_and_the_other_serves():
    """Lending copies: when the first copy cannot run (its process ended, being started again or given up),
    lone requests go to the second, with every thread, instead of failing on the first; when it is back it
    takes them again; when no copy can run, each request still gets its answer (the error)."""
    import asyncio

    from biomtl.serve import MicroBatcher

    calls: list = []
    a, b = _Copy("a", calls), _Copy("b", calls)
    batcher = MicroBatcher([a, b], True, 0.0, 100, lend=True)
    batcher.start()

    async def one_at_a_time(payloads: str) -> list:
        answers = []
        for p in payloads:
            try:
                answers.append(await asyncio.wait_for(batcher.submit(("k",), p, 1), 60))
            except RuntimeError as e:  # the copy's error, as the request gets it
                answers.append(e)
        return answers

    a.down = "the model process ended unexpectedly (exit code -9); starting it again"
    assert asyncio.run(one_at_a_time("xy")) == ["x by b", "y by b"]
    a.down = None
    assert asyncio.run(one_at_a_time("z")) == ["z by a"]
    a.down = b.down = "given up"
    assert [str(e) for e in asyncio.run(one_at_a_time("w"))] == ["given up"]
    batcher.stop()
    assert calls[:3] == [("b", ["x"], True), ("b", ["y"], True), ("a", ["z"], True)]
    assert len(calls) == 4


def test_the_worker_waits_only_for_requests_on_their_way():
    """A lone request runs at once, whatever the wait bound; a job waits (up to the bound) while a request
    the server has received has not queued its job yet, and then the two run together."""
    import asyncio

    from biomtl.serve import MicroBatcher

    calls: list[list[str]] = []
    batcher = MicroBatcher([lambda key, payloads: calls.append(list(payloads)) or list(payloads)], True, 3600.0, 100)
    batcher.count_arrivals()
    batcher.start()

    async def scenario() -> None:
        assert await asyncio.wait_for(batcher.submit(("k",), "a", 1), 60) == "a"  # alone: no wait
        go = asyncio.Event()

        async def on_its_way() -> str:
            batcher.arrived()  # received (as the middleware counts it), its job not queued yet
            await go.wait()
            return await batcher.submit(("k",), "c", 1)

        second = asyncio.create_task(on_its_way())
        await asyncio.sleep(0)
        first = asyncio.create_task(batcher.submit(("k",), "b", 1))
        await asyncio.sleep(0.2)
        go.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 60) == ["b", "c"]

    asyncio.run(scenario())
    batcher.stop()
    assert calls == [["a"], ["b", "c"]]
