"""One contract test for every task type: encode → forward → finite loss → backward → decode → save/load
gives identical outputs."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import write_toy_span_relation

from biomtl.data.readers import read_split
from biomtl.inference import predict_features
from biomtl.model import MultiTaskModel
from biomtl.tasks import TASK_TYPES, load_dataset_spec


@pytest.fixture(scope="module")
def toy_model(tiny_encoder, toy_tasks, tmp_path_factory):
    span = write_toy_span_relation(tmp_path_factory.mktemp("toy-span"), "toy-span", ["aspirin", "heparin"],
                                   ["receptor", "protein"], ["the", "of", "cells"])
    specs = {name: load_dataset_spec(path) for name, path in {**toy_tasks, "toy-span": span}.items()}
    torch.manual_seed(0)
    return MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32)


def test_every_task_type_has_a_toy_task(toy_model):
    assert {s.type for s in toy_model.specs.values()} == set(TASK_TYPES)


@pytest.mark.parametrize("task", ["toy-ner", "toy-rel", "toy-sts", "toy-hoc", "toy-span"])
def test_task_type_contract(toy_model, task, tmp_path):
    model = copy.deepcopy(toy_model).train()
    spec = model.specs[task]
    tt = model.tasks[task]
    examples = read_split(spec, "train")[:6]
    features = tt.encode(examples, model.tokenizer, model.max_length)
    assert {f["example_index"] for f in features} == set(range(len(examples)))
    batch = tt.collate(features, model.tokenizer.pad_token_id)
    logits = model(task, batch)
    loss = tt.loss(logits, batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.heads[task].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    enc_grad = model.encoder.embeddings.word_embeddings.weight.grad
    assert enc_grad is not None and enc_grad.abs().sum() > 0

    model.eval()
    before = predict_features(model, task, features, len(examples), 4, torch.device("cpu"))
    assert len(before) == len(examples)
    gold = [tt.gold(ex) for ex in examples]
    values = [tt.metric_value(p) for p in before]
    if spec.type == "tagging":
        assert [len(v) for v in values] == [len(g) for g in gold]
    model.save(tmp_path / "m")
    loaded = MultiTaskModel.load(tmp_path / "m")
    after = predict_features(loaded, task, features, len(examples), 4, torch.device("cpu"))
    assert after == before


def test_forward_all_runs_encoder_once(toy_model):
    model = copy.deepcopy(toy_model).eval()
    calls = []
    model.encoder.register_forward_hook(lambda *a: calls.append(1))
    spec = model.specs["toy-hoc"]
    feats = model.tasks["toy-hoc"].encode(read_split(spec, "dev")[:3], model.tokenizer, 32)
    batch = model.tasks["toy-hoc"].collate(feats, model.tokenizer.pad_token_id)
    with torch.no_grad():
        out = model.forward_all(batch)
    assert set(out) == set(model.heads) - {"toy-span"} and len(calls) == 1  # a span head also needs spans
    with torch.no_grad():
        single = model("toy-hoc", batch)
    assert torch.allclose(out["toy-hoc"], single)


def test_padding_does_not_change_predictions(toy_model):
    """Dynamic padding and length-sorted batches give the same predictions as one example at a time."""
    model = copy.deepcopy(toy_model).eval()
    for task in model.specs:
        tt = model.tasks[task]
        examples = read_split(model.specs[task], "dev")
        feats = tt.encode(examples, model.tokenizer, 32)
        batched = predict_features(model, task, feats, len(examples), 8, torch.device("cpu"))
        single = predict_features(model, task, feats, len(examples), 1, torch.device("cpu"))
        for a, b in zip(batched, single, strict=True):
            assert type(a) is type(b)
            fields_a, fields_b = dataclasses.asdict(a), dataclasses.asdict(b)
            for key in fields_a:
                if key in ("probabilities", "score", "probability", "probs"):
                    assert fields_a[key] == pytest.approx(fields_b[key], abs=1e-5)
                else:
                    assert fields_a[key] == fields_b[key]
