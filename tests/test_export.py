"""`biomtl export`: Hugging Face checkpoints per task and one ONNX graph, each with logit parity < 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biomtl.cli import main
from biomtl.errors import BiomtlError
from biomtl.export import PARITY_SENTENCES, TOLERANCE, export_model, parity_batch
from biomtl.model import MultiTaskModel
from biomtl.tasks import load_dataset_spec

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
    path = tmp_path_factory.mktemp("export-model") / "model"
    model.save(path)
    return path


def _ours(model_dir: Path, sentences: list[str]) -> tuple[MultiTaskModel, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model = MultiTaskModel.load(model_dir).eval()
    batch = parity_batch(model, sentences)
    with torch.inference_mode():
        return model, batch, model.forward_all(batch)


def test_hf_exports_ner_heads_exactly_and_refuses_sentence_heads(model_dir, tmp_path, capsys):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    out = tmp_path / "hf"
    assert main(["export", str(model_dir), "--format", "hf", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "toy-ner"]
    for task in ("toy-rel", "toy-sts", "toy-hoc"):
        assert f"{task}: not exported (no stock AutoModelFor… class computes its " in printed
        assert f"- `{task}`:" in (out / "README.md").read_text()
    hf = AutoModelForTokenClassification.from_pretrained(out / "toy-ner").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "toy-ner")
    assert hf.config.id2label == {0: "O", 1: "B-Chemical", 2: "I-Chemical"}
    assert hf.config.label2id == {"O": 0, "B-Chemical": 1, "I-Chemical": 2}
    assert (out / "toy-ner" / "README.md").read_text().startswith("# toy-ner: token classification")
    model, batch, ours = _ours(model_dir, SENTENCES + PARITY_SENTENCES)
    enc = tokenizer(SENTENCES + PARITY_SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert torch.equal(enc["input_ids"], batch["input_ids"])
    with torch.inference_mode():
        theirs = hf(**enc).logits
    mask = batch["attention_mask"].bool()
    diff = (ours["toy-ner"] - theirs).abs()[mask].max().item()
    assert diff < TOLERANCE


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


def test_export_refuses_an_existing_directory_and_a_model_without_ner_for_hf(model_dir, tiny_encoder, toy_tasks, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    assert main(["export", str(model_dir), "--format", "onnx", "--output", str(out)]) == 2
    assert capsys.readouterr().err == f"biomtl: error: {out} exists; pass --overwrite to replace it\n"
    specs = {"toy-hoc": load_dataset_spec(toy_tasks["toy-hoc"])}
    only_sentences = tmp_path / "hoc-model"
    MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32).save(only_sentences)
    with pytest.raises(BiomtlError, match=r"no task has an exact stock Hugging Face equivalent \(toy-hoc\); use --format onnx"):
        export_model(only_sentences, "hf", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hoc-model", "taken"]
