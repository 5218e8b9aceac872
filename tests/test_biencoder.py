"""Sentence similarity as a bi-encoder: each text encoded alone, mean-pooled, scored by cosine, trained with
CoSENT; the default for sentence-embedding encoders, the paper's cross-encoder still available by name."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from biomtl.config import RunConfig
from biomtl.data.readers import read_split
from biomtl.errors import ConfigError, ModelDirError
from biomtl.inference import predict_features
from biomtl.model import MultiTaskModel, resolve_similarity
from biomtl.predict import Predictor
from biomtl.tasks import load_dataset_spec
from biomtl.tasks.regression import CosineHead, SimilarityPrediction, cosent_loss
from biomtl.train import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sts_model(tiny_encoder, toy_tasks):
    spec = load_dataset_spec(toy_tasks["toy-sts"])
    return MultiTaskModel.from_encoder(tiny_encoder, {"toy-sts": spec}, max_length=32, similarity="biencoder")


@pytest.fixture(scope="module")
def sentence_encoder(tiny_encoder, tmp_path_factory):
    """The tiny BERT with the files sentence-transformers writes beside a sentence-embedding model."""
    path = tmp_path_factory.mktemp("tiny-sbert") / "encoder"
    shutil.copytree(tiny_encoder, path)
    (path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
    return str(path)


def test_cosent_loss_by_hand():
    # Gold says pair 1 is more similar than pair 0; the cosines say the opposite by 0.8.
    wrong = cosent_loss(torch.tensor([0.9, 0.1]), torch.tensor([0.0, 1.0]))
    right = cosent_loss(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0]))
    assert wrong.item() == pytest.approx(math.log(1 + math.exp(20 * 0.8)))
    assert right.item() == pytest.approx(math.log(1 + math.exp(-20 * 0.8)), abs=1e-7)  # float32
    assert cosent_loss(torch.tensor([0.3, 0.7, 0.5]), torch.tensor([2.0, 2.0, 2.0])).item() == 0.0  # no order to learn


def test_cosine_maps_onto_the_score_range(sts_model):
    task = sts_model.tasks["toy-sts"]  # score_range [0, 5]
    assert [task.cosine_to_score(c) for c in (-0.2, 0.0, 0.5, 1.0)] == [0.0, 0.0, 2.5, 5.0]


def test_auto_is_biencoder_for_sentence_encoders_only(tiny_encoder, sentence_encoder, toy_tasks):
    assert resolve_similarity("auto", tiny_encoder) == "cross"
    assert resolve_similarity("auto", sentence_encoder) == "biencoder"
    assert resolve_similarity("cross", sentence_encoder) == "cross"  # the paper's head, asked for by name
    spec = {"toy-sts": load_dataset_spec(toy_tasks["toy-sts"])}
    assert MultiTaskModel.from_encoder(sentence_encoder, spec, max_length=32).similarity == "biencoder"
    assert MultiTaskModel.from_encoder(tiny_encoder, spec, max_length=32).similarity == "cross"


@pytest.mark.slow
def test_the_embedded_encoder_is_a_sentence_encoder():
    assert resolve_similarity("auto", None) == "biencoder"


def test_a_batch_runs_the_encoder_on_both_texts(sts_model):
    model = copy.deepcopy(sts_model).train()
    task = model.tasks["toy-sts"]
    examples = read_split(model.specs["toy-sts"], "train")[:6]
    features = task.encode(examples, model.tokenizer, model.max_length)
    assert all("token_type_ids" not in f for f in features)  # each text alone
    batch = task.collate(features, model.tokenizer.pad_token_id)
    assert {k: len(v) for k, v in batch.items()} == dict.fromkeys(batch, 6)  # a row per pair: DDP shards by rows
    rows = []
    model.encoder.register_forward_hook(lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    logits = model("toy-sts", batch)
    assert rows == [12] and logits.shape == (6, 1)  # one encoder pass over the 6 first and 6 second texts
    loss = task.loss(logits, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert isinstance(model.heads["toy-sts"], CosineHead) and not list(model.heads["toy-sts"].parameters())


def test_untrained_scores_are_the_cosine_of_mean_pooled_embeddings(sts_model):
    """Zero-shot: the prediction is what the encoder alone gives, computed here by hand."""
    model = copy.deepcopy(sts_model).eval()
    examples = read_split(model.specs["toy-sts"], "dev")
    features = model.tasks["toy-sts"].encode(examples, model.tokenizer, model.max_length)
    preds = predict_features(model, "toy-sts", features, len(examples), 3, CPU)

    def embed(text: str) -> torch.Tensor:
        enc = model.tokenizer(text, return_tensors="pt", truncation=True, max_length=32)
        with torch.no_grad():
            return model.encoder(**enc).last_hidden_state[0].mean(0)  # (H,): no padding in a batch of one

    for ex, pred in zip(examples, preds, strict=True):
        cosine = torch.nn.functional.cosine_similarity(embed(ex.text), embed(ex.text_b), dim=0).item()
        assert isinstance(pred, SimilarityPrediction)
        assert pred.cosine == pytest.approx(cosine, abs=1e-5)
        assert pred.score == pytest.approx(5 * min(max(cosine, 0.0), 1.0), abs=1e-4)


@pytest.mark.parametrize("tasks", [["toy-sts"], ["toy-sts", "toy-ner"]], ids=["single-task", "multi-task"])
def test_biencoder_trains_saves_loads_and_predicts(run_config, tasks):
    config = run_config(tasks=tasks, similarity="biencoder")
    result = train(config, progress=False)
    best = Path(config.output_dir) / "best"
    assert json.loads((best / "biomtl.json").read_text())["similarity"] == "biencoder"
    assert set(result["test"]) == set(tasks) and math.isfinite(result["test"]["toy-sts"]["pearson"])
    predictor = Predictor.load(best)
    assert isinstance(predictor.model.heads["toy-sts"], CosineHead)
    (row,) = predictor.predict("toy-sts", [{"id": "p1", "text": "aspirin inhibits the receptor", "text_b": "aspirin inhibits the gene"}])
    assert set(row) == {"id", "score", "cosine"} and 0 <= row["score"] <= 5
    # The predictor gives what the run scored: same test predictions as the run's own file.
    saved = [json.loads(x) for x in (Path(config.output_dir) / "predictions" / "toy-sts.test.jsonl").read_text().splitlines()]
    spec = predictor.model.specs["toy-sts"]
    again = predictor.predict("toy-sts", [{"id": ex.id, "text": ex.text, "text_b": ex.text_b} for ex in read_split(spec, "test")])
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in saved], abs=1e-5)


def test_cross_encoder_stays_available_by_name(run_config, sentence_encoder):
    config = run_config(tasks=["toy-sts"], encoder=sentence_encoder, similarity="cross", epochs=1)
    train(config, progress=False)
    model = MultiTaskModel.load(Path(config.output_dir) / "best")
    assert model.similarity == "cross" and not isinstance(model.heads["toy-sts"], CosineHead)


def test_similarity_setting_is_checked():
    with pytest.raises(ConfigError, match=r"^run config: similarity: unknown value 'biencodr'; did you mean 'biencoder'\?$"):
        RunConfig.from_dict({"tasks": ["biosses"], "output_dir": "x", "similarity": "biencodr"})


def test_model_directories_without_the_setting_load_as_cross(sts_model, tmp_path):
    cross = MultiTaskModel(sts_model.encoder, sts_model.tokenizer, sts_model.specs, max_length=32)
    cross.save(tmp_path / "m")
    manifest = tmp_path / "m" / "biomtl.json"
    desc = json.loads(manifest.read_text())
    del desc["similarity"]  # as written before bi-encoders existed
    manifest.write_text(json.dumps(desc))
    assert MultiTaskModel.load(tmp_path / "m").similarity == "cross"
    desc["similarity"] = "bi"
    manifest.write_text(json.dumps(desc))
    with pytest.raises(ModelDirError, match=rf"^{manifest}: similarity: unknown strategy 'bi' \(known: cross, biencoder\)$"):
        MultiTaskModel.load(tmp_path / "m")
