"""`biomtl export`: Hugging Face checkpoints per task (loaded by plain transformers, without biomtl) and one ONNX
graph, each with logit parity < 1e-4 on inputs other than the export's own check."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from biomtl.cli import main
from biomtl.data.examples import Example
from biomtl.errors import BiomtlError
from biomtl.export import PARITY_SENTENCES, TOLERANCE, export_model, parity_batch
from biomtl.model import MultiTaskModel
from biomtl.tasks import TASK_TYPES, load_dataset_spec
from biomtl.tasks.base import HeadSettings
from biomtl.tasks.regression import RegressionTask

SENTENCES = [
    "Heparin induced thrombocytopenia in patients with acute renal failure.",
    "The drug was given at a dose of 5 mg/kg.",
    "Lithium",
    "Cocaine binding to the receptor protein increased the effect of the inhibitor in cells of the tumor.",
]


@pytest.fixture(scope="module")
def model_dir(tiny_encoder, toy_tasks, tmp_path_factory) -> Path:
    """Every built-in task type on the tiny encoder; heads with random weights."""
    specs = {name: load_dataset_spec(path) for name, path in toy_tasks.items()}
    torch.manual_seed(3)
    model = MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32)
    model.tasks["toy-hoc"].set_decision({"thresholds": {"cancer": 0.34, "pain": 0.72}})  # as if chosen on dev
    path = tmp_path_factory.mktemp("export-model") / "model"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def mean_model_dir(tiny_encoder, toy_tasks, tmp_path_factory) -> Path:
    """Sentence heads on the mean of the tokens, and the bi-encoder similarity head."""
    specs = {name: load_dataset_spec(toy_tasks[name]) for name in ("toy-rel", "toy-sts", "toy-hoc")}
    torch.manual_seed(4)
    model = MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32, pooling="mean", similarity="biencoder")
    path = tmp_path_factory.mktemp("export-mean-model") / "model"
    model.save(path)
    return path


def _ours(model_dir: Path, sentences: list[str]) -> tuple[MultiTaskModel, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model = MultiTaskModel.load(model_dir).eval()
    batch = parity_batch(model, sentences)
    with torch.inference_mode():
        return model, batch, model.forward_all(batch)


def _logits(model: MultiTaskModel, task: str, examples: list[Example]) -> torch.Tensor:
    """biomtl's outputs for ``examples``, encoded and batched by the task type (as prediction does)."""
    tasktype = model.tasks[task]
    batch = tasktype.collate(tasktype.encode(examples, model.tokenizer, model.max_length), model.tokenizer.pad_token_id)
    with torch.inference_mode():
        return model(task, batch)


# Run in a fresh interpreter that cannot import biomtl: plain transformers (and sentence-transformers, when
# installed) load each exported folder as a user would and compute its outputs on the given inputs.
PLAIN_TRANSFORMERS = r"""
import importlib.abc, json, sys

class NoBiomtl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "biomtl":
            raise ImportError("an exported model must not need biomtl")
        return None

sys.meta_path.insert(0, NoBiomtl())
import torch
from transformers import (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          AutoTokenizer, pipeline)

results = {}
for job in json.loads(sys.argv[1]):
    folder, texts, pairs = job["folder"], job["texts"], job["pairs"]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)

    def tokenize(texts, pairs=None):  # sentence tasks' tokenizers truncate at biomtl's max_length themselves
        return tokenizer(texts, pairs, padding=True, truncation=True, max_length=job.get("max_length"), return_tensors="pt")

    out = {}
    with torch.inference_mode():
        if job["kind"] == "token":
            model = AutoModelForTokenClassification.from_pretrained(folder).eval()
            out["logits"] = model(**tokenize(texts)).logits.tolist()
        elif job["kind"] == "sequence":
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
            out["class"] = type(model).__name__
            out["logits"] = model(**tokenize(texts, pairs)).logits.tolist()
            classifier = pipeline("text-classification", model=folder, trust_remote_code=True)
            inputs = [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)] if pairs else texts
            out["pipeline"] = classifier(inputs, top_k=None, truncation=True)
        else:
            model = AutoModel.from_pretrained(folder, **job["load_kwargs"]).eval()

            def embed(texts):
                enc = tokenize(texts)
                mask = enc["attention_mask"].unsqueeze(-1).float()
                return (model(**enc).last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)

            out["cosines"] = torch.nn.functional.cosine_similarity(embed(texts), embed(pairs)).tolist()
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                pass
            else:
                st = SentenceTransformer(folder, device="cpu")
                a, b = st.encode(texts, convert_to_tensor=True), st.encode(pairs, convert_to_tensor=True)
                out["st_cosines"] = torch.nn.functional.cosine_similarity(a, b).tolist()
    results[job["task"]] = out
print(json.dumps(results))
"""


def _plain_transformers(jobs: list[dict], tmp_path: Path) -> dict[str, dict]:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, json.dumps(jobs)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _inputs(model: MultiTaskModel, task: str) -> list[Example]:
    """Other sentences than the export's parity check, of other lengths and batch sizes, as the task reads them."""
    spec = model.specs[task]
    if spec.markers:
        texts = ["@CHEMICAL$ inhibits @GENE$ .", "Low doses of @CHEMICAL$ increased the binding of @GENE$ in tumor cells."]
        return [Example(id=str(i), text=t) for i, t in enumerate(texts)]
    pair = model.tasks[task].pair_input
    return [Example(id=str(i), text=t, text_b=SENTENCES[i - 1] if pair else None) for i, t in enumerate(SENTENCES)]


@pytest.mark.parametrize("which", ["model_dir", "mean_model_dir"])
def test_hf_exports_every_task_and_plain_transformers_reproduce_biomtl(which, request, tmp_path, capsys):
    """model_dir: [CLS] pooling, cross-encoder similarity, every task type; mean_model_dir: mean pooling and
    the bi-encoder. Each folder, loaded by plain transformers in a process without biomtl, gives biomtl's
    outputs on new inputs; the pipeline works; labels and thresholds are in config.json."""
    source = request.getfixturevalue(which)
    out = tmp_path / "hf"
    assert main(["export", str(source), "--format", "hf", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    model = MultiTaskModel.load(source).eval()
    assert "not exported" not in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", *model.specs])
    index = (out / "README.md").read_text()
    jobs, ours = [], {}
    for task, spec in model.specs.items():
        folder = out / task
        assert f"| `{task}/` | {spec.type} |" in index
        config = json.loads((folder / "config.json").read_text())
        readme = (folder / "README.md").read_text()
        if spec.type == "tagging":
            batch = parity_batch(model, SENTENCES + PARITY_SENTENCES)
            with torch.inference_mode():
                ours[task] = model(task, batch)
            jobs.append({"task": task, "kind": "token", "texts": SENTENCES + PARITY_SENTENCES, "pairs": None})
            assert config["id2label"] == {"0": "O", "1": "B-Chemical", "2": "I-Chemical"}
            continue
        examples = _inputs(model, task)
        ours[task] = _logits(model, task, examples)
        texts, pairs = [ex.text for ex in examples], [ex.text_b for ex in examples]
        if spec.type == "regression" and model.similarity == "biencoder":
            jobs.append({"task": task, "kind": "embedding", "texts": texts, "pairs": pairs, "load_kwargs": {"add_pooling_layer": False}})
            assert not (folder / "modeling_biomtl.py").exists()
            assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
            assert [m["type"] for m in json.loads((folder / "modules.json").read_text())] == [
                "sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
            assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
            assert "AutoModel.from_pretrained" in readme and "cosine_similarity" in readme and "clip(cosine, 0, 1) * (5 - 0)" in readme
            continue
        jobs.append({"task": task, "kind": "sequence", "texts": texts, "pairs": pairs if pairs[0] is not None else None})
        labels = spec.labels or ["score"]
        assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
        assert config["label2id"] == {label: i for i, label in enumerate(labels)}
        assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_biomtl.BiomtlForSequenceClassification"
        assert config["architectures"] == ["BiomtlForSequenceClassification"]
        assert config["pooling"] == model.pooling
        problem = {"classification": "single_label_classification", "multilabel": "multi_label_classification",
                   "regression": "regression"}[spec.type]
        assert config["problem_type"] == problem
        assert config["thresholds"] == (model.tasks[task].decision()["thresholds"] if spec.type == "multilabel" else None)
        assert "import biomtl" not in (folder / "modeling_biomtl.py").read_text()
        assert "trust_remote_code=True" in readme and "## Why `trust_remote_code=True`" in readme
        if spec.markers:
            assert "`@CHEMICAL$` + `@GENE$`" in readme
            assert "becomes `@CHEMICAL$ irreversibly inhibits @GENE$ and modifies" in readme
        if spec.type == "multilabel":
            assert "## Decision thresholds" in readme
    for job in jobs:
        job.update(folder=str(out / job["task"]), **({"max_length": model.max_length} if job["kind"] == "token" else {}))
    theirs = _plain_transformers(jobs, tmp_path)
    mask = parity_batch(model, SENTENCES + PARITY_SENTENCES)["attention_mask"].bool()
    for job in jobs:
        task, got = job["task"], theirs[job["task"]]
        if job["kind"] == "token":
            diff = (ours[task] - torch.tensor(got["logits"])).abs()[mask].max().item()
        elif job["kind"] == "embedding":
            diff = (ours[task].squeeze(-1) - torch.tensor(got["cosines"])).abs().max().item()
            if "st_cosines" in got:  # sentence-transformers reads the same folder as the same model
                assert (ours[task].squeeze(-1) - torch.tensor(got["st_cosines"])).abs().max().item() < TOLERANCE
        else:
            assert got["class"] == "BiomtlForSequenceClassification"
            logits = torch.tensor(got["logits"])
            diff = (ours[task] - logits).abs().max().item()
            problem = json.loads((out / task / "config.json").read_text())["problem_type"]
            scores = {"single_label_classification": logits.softmax(-1), "multi_label_classification": logits.sigmoid(),
                      "regression": logits}[problem]
            labels = model.specs[task].labels or ["score"]
            for row, ranked in zip(scores.tolist(), got["pipeline"], strict=True):
                assert len(ranked) == len(labels)
                for entry in ranked:
                    assert abs(entry["score"] - row[labels.index(entry["label"])]) < TOLERANCE
        assert diff < TOLERANCE, (task, diff)


def test_hf_parity_is_checked_on_the_shipped_modeling_file(model_dir, tmp_path, monkeypatch):
    """The export loads what it wrote: a modeling file that pools another token fails the check, nothing is written."""
    from biomtl import export

    broken = export.modeling_source().replace("return hidden[:, 0]", "return hidden[:, 1]")
    assert broken != export.modeling_source()
    monkeypatch.setattr(export, "modeling_source", lambda: broken)
    with pytest.raises(BiomtlError, match=r"^toy-rel: exported logits differ from PyTorch's by .* \(tolerance 0.0001\); nothing written$"):
        export_model(model_dir, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_onnx_graph_has_every_head_with_dynamic_batch_and_length(model_dir, tmp_path):
    import onnxruntime

    out = tmp_path / "onnx"
    lines = export_model(model_dir, "onnx", out)
    assert [line.split(":")[0] for line in lines] == ["toy-ner", "toy-rel", "toy-sts", "toy-hoc"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["toy-ner", "toy-rel", "toy-sts", "toy-hoc"]
    for sentences in (SENTENCES, SENTENCES[:1], ["@CHEMICAL$ inhibits @GENE$ ."]):  # other batch sizes, lengths
        model, batch, ours = _ours(model_dir, sentences)
        feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
        got = dict(zip(names, session.run(names, feeds), strict=True))
        mask = batch["attention_mask"].bool().numpy()
        for task in names:
            expected = ours[task].numpy()
            diff = np.abs(expected - got[task])
            worst = diff[mask].max() if expected.ndim == 3 else diff.max()
            assert worst < TOLERANCE, (task, worst)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "tokenizer")(SENTENCES[0])["input_ids"] == parity_batch(model, SENTENCES[:1])["input_ids"][0].tolist()
    assert "toy-hoc" in (out / "biomtl-onnx.json").read_text()


class BilinearHead(nn.Module):
    """A head that no Hugging Face class computes (for the refusal test)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.out = nn.Bilinear(hidden_size, hidden_size, 1)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out(hidden[:, 0], hidden[:, -1])


class BilinearTask(RegressionTask):
    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return BilinearHead(hidden_size)


def test_export_refuses_an_existing_directory_and_heads_without_a_hugging_face_form(model_dir, tiny_encoder, toy_tasks, tmp_path, capsys, monkeypatch):
    out = tmp_path / "taken"
    out.mkdir()
    assert main(["export", str(model_dir), "--format", "onnx", "--output", str(out)]) == 2
    assert capsys.readouterr().err == f"biomtl: error: {out} exists; pass --overwrite to replace it\n"
    monkeypatch.setitem(TASK_TYPES, "bilinear", BilinearTask)
    bilinear = dataclasses.replace(load_dataset_spec(toy_tasks["toy-sts"]), name="toy-bilinear", type="bilinear")
    only_bilinear = tmp_path / "bilinear-model"
    MultiTaskModel.from_encoder(tiny_encoder, {"toy-bilinear": bilinear}, max_length=32).save(only_bilinear)
    with pytest.raises(BiomtlError, match=r"^.*bilinear-model: no task can be exported as a Hugging Face checkpoint \(toy-bilinear: biomtl has no Hugging Face form of its BilinearHead\); use --format onnx$"):
        export_model(only_bilinear, "hf", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bilinear-model", "taken"]
    mixed = tmp_path / "mixed-model"
    specs = {"toy-ner": load_dataset_spec(toy_tasks["toy-ner"]), "toy-bilinear": bilinear}
    MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32).save(mixed)
    lines = export_model(mixed, "hf", tmp_path / "hf")
    assert lines[1] == "toy-bilinear: not exported (biomtl has no Hugging Face form of its BilinearHead; use --format onnx)"
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["README.md", "toy-ner"]
    assert "- `toy-bilinear`: biomtl has no Hugging Face form of its BilinearHead." in (tmp_path / "hf" / "README.md").read_text()
