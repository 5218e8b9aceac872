from __future__ import annotations

import copy

import pytest
import torch

from biomtl.config import load_dataset_spec
from biomtl.model import MultiTaskModel
from biomtl.predict import Predictor, words_with_offsets


@pytest.fixture(scope="module")
def predictor(tiny_encoder, toy_tasks):
    specs = {name: load_dataset_spec(path) for name, path in toy_tasks.items()}
    torch.manual_seed(1)
    return Predictor(MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32).eval())


def test_words_with_offsets_cover_text():
    text = "Cisplatin-induced\tnephrotoxicity (CIN), 5 mg/kg."
    for word, s, e in words_with_offsets(text):
        assert text[s:e] == word


def test_annotate_matches_single_head_predictions(predictor):
    texts = ["aspirin and the cancer patients", "heparin induced pain in renal failure " * 12, ""]
    annotated = predictor.annotate(texts, ["toy-ner", "toy-hoc"])
    ner = predictor.predict("toy-ner", texts)
    hoc = predictor.predict("toy-hoc", texts[:1])
    for a, n in zip(annotated, ner, strict=True):
        assert [(e["start"], e["end"], e["type"]) for e in a["entities"]] == [
            (e["start"], e["end"], e["type"]) for e in n["entities"]
        ]
    assert annotated[0]["labels"]["toy-hoc"]["labels"] == hoc[0]["labels"]
    assert annotated[0]["labels"]["toy-hoc"]["probabilities"] == pytest.approx(hoc[0]["probabilities"], abs=1e-5)


def test_annotate_runs_the_encoder_once_per_batch(predictor):
    p = copy.deepcopy(predictor)
    calls = []
    p.model.encoder.register_forward_hook(lambda *a: calls.append(1))
    p.annotate(["aspirin and cancer"], ["toy-ner", "toy-hoc"])
    assert len(calls) == 1


def test_annotate_refuses_pair_tasks(predictor):
    from biomtl.errors import BiomtlError

    with pytest.raises(BiomtlError, match="toy-sts, toy-rel cannot annotate plain text|toy-rel, toy-sts cannot annotate"):
        predictor.annotate(["x"], ["toy-rel", "toy-sts"])
