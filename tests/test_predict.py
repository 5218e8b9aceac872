from __future__ import annotations

import copy

import pytest
import torch

from biomtl.model import MultiTaskModel
from biomtl.predict import Predictor, words_with_offsets
from biomtl.tasks import load_dataset_spec


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


def test_inference_precision_choices():
    from biomtl.errors import BiomtlError
    from biomtl.predict import inference_dtype

    cpu = torch.device("cpu")
    assert inference_dtype("fp32", cpu) is None
    assert inference_dtype("bf16", cpu) is torch.bfloat16
    assert inference_dtype("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(BiomtlError, match="--precision: unknown value 'fp8'; choose auto, fp32 or bf16"):
        inference_dtype("fp8", cpu)


def test_bf16_prediction_keeps_offsets(predictor):
    bf16 = Predictor(predictor.model, precision="bf16")
    text = "aspirin and heparin induced renal failure"
    (out,) = bf16.predict("toy-ner", [text])
    for ent in out["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"]
