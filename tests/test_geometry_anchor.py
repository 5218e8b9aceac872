"""``geometry_anchor``: a term that holds the pairwise cosines of mean-pooled embeddings to those of the
encoder the run started from (:mod:`biomtl.anchor`), so that other tasks' training moves a bi-encoder's
space less."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biomtl.anchor import MEASURES, embedding_loss, geometry_loss, mean_pooled
from biomtl.checkpoint import CHECKPOINT
from biomtl.config import ANCHOR_MEASURES, RunConfig
from biomtl.errors import ConfigError
from biomtl.model import MultiTaskModel, load_encoder
from biomtl.train import train

TEXTS = ["aspirin lowers the risk", "heparin is given daily", "the cells were lysed", "no change was seen",
         "lithium and naloxone", "a dose of clonidine", "cocaine use was reported", "patients were followed"]


def test_the_loss_is_zero_for_the_same_geometry_and_grows_with_a_change() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert geometry_loss(x, x).item() == pytest.approx(0.0, abs=1e-10)
    assert geometry_loss(3.0 * x @ rotation, x).item() == pytest.approx(0.0, abs=1e-10)  # turned and scaled
    assert geometry_loss(x + 0.5 * torch.randn(6, 16), x).item() > 1e-3
    assert geometry_loss(x[:1], x[:1]).item() == 0.0  # one row has no pairs


def test_the_embedding_measure_is_zero_for_the_same_directions_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert embedding_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_loss(3.0 * x, x).item() == pytest.approx(0.0, abs=1e-6)  # scaled: the same directions
    assert embedding_loss(x @ rotation, x).item() > 0.5  # turned: the pairwise measure is 0 here, this is not
    small, large = (embedding_loss(x + s * torch.randn(6, 16), x).item() for s in (0.1, 1.0))
    assert 0 < small < large


def test_the_config_s_measures_are_the_anchor_s() -> None:
    assert tuple(MEASURES) == ANCHOR_MEASURES


def test_an_unknown_measure_is_named(tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="anchor_measure: unknown value 'embedding'"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "anchor_measure": "embedding"})


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_weight_is_named(value: float, tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="geometry_anchor: must be a number >= 0"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "geometry_anchor": value})


def _pooled(encoder: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return mean_pooled(encoder.eval(), tokenizer(texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("measure", ["cosines", "embeddings"])
def test_the_anchor_keeps_what_it_measures_that_training_on_other_tasks_moves(run_config, tiny_encoder: str,
                                                                             tmp_path: Path, measure: str) -> None:
    """The same NER + relation run, with and without the anchor: the anchored encoder's embeddings of texts it
    never trained on stay closer to the untrained encoder's, by the anchor's own measure."""
    start, tokenizer = load_encoder(tiny_encoder, 0.0)
    before = _pooled(start, tokenizer, TEXTS)
    drift = {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"anchor-{weight}"
        train(run_config(["toy-ner", "toy-rel"], output_dir=str(out), lr=1e-2, epochs=2, geometry_anchor=weight,
                         anchor_measure=measure, save_predictions=False), progress=False)
        model = MultiTaskModel.load(out / "best")
        model.load_state_dict(load_file(out / CHECKPOINT / "model.safetensors"))  # the last weights, not best/'s
        drift[weight] = MEASURES[measure](_pooled(model.encoder, tokenizer, TEXTS), before).item()
    assert drift[0.0] > 1e-3  # the unanchored run moved the embeddings ...
    assert drift[50.0] < 0.5 * drift[0.0]  # ... the anchored one much less
