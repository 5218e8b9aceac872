"""``pack: true``: training and evaluation with each batch's texts packed into one row (biomtl.packing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from biomtl.errors import ConfigError
from biomtl.model import build_model
from biomtl.packing import PackedEncoder
from biomtl.train import load_task_data, train


def _loss_and_grads(config, task: str):
    torch.manual_seed(0)
    model = build_model(config)
    data = load_task_data(model, config)
    features = data[task].features["train"][:6]
    batch = model.tasks[task].collate(features, model.tokenizer.pad_token_id)
    model.train()
    loss = model.tasks[task].loss(model(task, batch), batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, loss.item(), grads


@pytest.mark.parametrize("task", ["toy-ner", "toy-rel", "toy-sts", "toy-hoc"])
def test_a_packed_batch_gives_the_padded_loss_and_gradients(run_config, task):
    """Without dropout, a packed batch's loss and every gradient equal the padded batch's within rounding, for
    each task type (tokens, a pair's classes, a bi-encoder's two texts, multi-label documents)."""
    padded_model, padded_loss, padded_grads = _loss_and_grads(run_config(tasks=[task], dropout=0.0), task)
    packed_model, packed_loss, packed_grads = _loss_and_grads(run_config(tasks=[task], dropout=0.0, pack=True), task)
    assert packed_model.packed is not None and padded_model.packed is None
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed_grads.keys() == padded_grads.keys() and len(packed_grads) > 10
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_packed_attention_drops_out_while_training_only(run_config):
    """The encoder's attention dropout applies to packed texts in training (two forward passes differ) and
    not in evaluation (they agree); evaluation batches are not packed (the model's own padded states)."""
    config = run_config(tasks=["toy-ner"], dropout=0.0, pack=True)
    model = build_model(config)
    model.encoder.config.attention_probs_dropout_prob = 0.5
    for layer in model.encoder.encoder.layer:
        layer.attention.self.dropout.p = 0.5
    data = load_task_data(model, config)
    batch = model.tasks["toy-ner"].collate(data["toy-ner"].features["train"][:4], model.tokenizer.pad_token_id)
    model.train()
    assert not torch.equal(model.encode(batch), model.encode(batch))
    model.eval()
    assert model.packed is not None and torch.equal(model.packed(batch), model.packed(batch))
    padded = model.encoder(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch})
    assert torch.equal(model.encode(batch), padded.last_hidden_state)


def test_a_packed_run_trains_selects_and_saves_a_model_that_loads_unpacked(run_config):
    """A packed run goes through epoch 0, training and test like any run, records ``pack`` in its config, and its
    model directory is an ordinary one (packing is how training ran, not part of the model)."""
    from biomtl.config import read_yaml
    from biomtl.model import MultiTaskModel

    config = run_config(tasks=["toy-ner", "toy-rel"], pack=True)
    result = train(config, progress=False)
    out = Path(config.output_dir)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in rows] == [("dev", 0), ("dev", 1), ("dev", 2), ("test", result["best_epoch"])]
    assert read_yaml(out / "config.yaml")["pack"] is True
    assert MultiTaskModel.load(out / "best").packed is None  # packing is how training ran, not part of the model


def test_pack_is_refused_for_an_encoder_that_cannot_read_packed_texts(run_config, monkeypatch):
    monkeypatch.setattr(PackedEncoder, "works", lambda self, *a: False)
    with pytest.raises(ConfigError, match="pack: the encoder .* cannot read packed texts"):
        build_model(run_config(tasks=["toy-ner"], pack=True))


def test_pack_with_compile_is_a_config_error(run_config):
    with pytest.raises(ConfigError, match="pack: .*compile"):
        type(run_config()).from_dict({**run_config().to_dict(), "pack": True, "compile": True})


def test_a_training_row_is_filled_to_a_multiple_of_its_round_and_the_texts_keep_their_states(run_config):
    """Training packs a batch into a row of a multiple of TRAIN_ROUND_TO tokens (a text of its own fills it
    up, its states dropped); the texts get the states they get in a row without the fill, within rounding."""
    from biomtl.packing import TRAIN_ROUND_TO

    config = run_config(tasks=["toy-ner"], dropout=0.0, pack=True)
    model = build_model(config)
    data = load_task_data(model, config)
    batch = model.tasks["toy-ner"].collate(data["toy-ner"].features["train"][:5], model.tokenizer.pad_token_id)
    assert model.packed is not None and model.packed.round_to == TRAIN_ROUND_TO
    assert int(batch["attention_mask"].sum()) % TRAIN_ROUND_TO != 0  # so that the row is filled
    rows: list[int] = []
    hook = model.encoder.embeddings.register_forward_hook(lambda module, args, out: rows.append(out.shape[1]))
    model.eval()  # no dropout: the same states twice
    filled = model.packed(batch)
    unfilled = PackedEncoder(model.encoder)(batch)
    hook.remove()
    assert rows[0] % TRAIN_ROUND_TO == 0 and rows[1] == int(batch["attention_mask"].sum())
    mask = batch["attention_mask"].bool()
    assert torch.allclose(filled[mask], unfilled[mask], atol=1e-5) and not filled[~mask].any()
