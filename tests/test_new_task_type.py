"""Adding a task type is one class and one registry call: a fifth type, written here and nowhere in biomtl,
is checked in its configs and data files, trains, is saved, loads and predicts through the public API.

The type is *mention counting*: how many chemical mentions a sentence holds (a regression on the count,
predicted as a whole number and scored by accuracy).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import WORDS
from torch import nn
from torch.nn import functional as F

from biomtl.config import DatasetSpec, RunConfig
from biomtl.data.examples import Example
from biomtl.data.readers import read_split
from biomtl.errors import ConfigError, DataError
from biomtl.predict import Predictor
from biomtl.tasks import TASK_TYPES, load_dataset_spec, register_task_type
from biomtl.tasks.base import Batch, Feature, HeadSettings, InvalidLabel, PooledHead, SentenceTask
from biomtl.train import train

CHEMICALS = {"aspirin", "naloxone", "clonidine", "cocaine", "heparin", "lithium"}


@dataclass(frozen=True)
class MentionCount:
    """The predicted number of mentions, and the unrounded score it comes from."""

    count: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "score": self.score}


class MentionCountTask(SentenceTask):
    """Mean squared error on the count of one text; the prediction is the score rounded to a count ≥ 0."""

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        return ["labels: a mention_count task predicts a number; it lists no labels"] if spec.labels else []

    def parse_label(self, raw: Any) -> int:
        text = str(raw).strip()
        if not text.isdigit():
            raise InvalidLabel(f"count {raw!r} is not a whole number >= 0")
        return int(text)

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return PooledHead(hidden_size, 1, settings)

    def target(self, example: Example) -> float:
        return float(example.label) if example.label is not None else 0.0

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[MentionCount]:
        return [MentionCount(max(0, round(v)), v) for v in logits.squeeze(-1).float().tolist()]

    def metric_value(self, prediction: MentionCount) -> int:
        return prediction.count


@pytest.fixture
def mention_count() -> Any:
    register_task_type("mention_count", MentionCountTask)  # the one line that adds the type
    yield
    TASK_TYPES.pop("mention_count")


def write_count_task(root: Path, extra: str = "") -> Path:
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 32), ("dev", 8), ("test", 8)):
        with open(root / f"count.{split}.tsv", "w") as f:
            f.write("index\tsentence\tcount\n")
            for i in range(n):
                words = [rng.choice(WORDS) for _ in range(rng.randint(3, 10))]
                f.write(f"{split}{i}\t{' '.join(words)}\t{sum(w in CHEMICALS for w in words)}\n")
    files = "".join(f"  {split}: {root / f'count.{split}.tsv'}\n" for split in ("train", "dev", "test"))
    path = root / "toy-count.yaml"
    path.write_text(
        f"name: toy-count\ntype: mention_count\nformat: tsv\nfiles:\n{files}"
        "columns: {id: index, text: sentence, label: count}\nmetric: {name: accuracy}\nmain_metric: accuracy\n"
        + extra
    )
    return path


def test_the_type_is_unknown_until_registered(tmp_path):
    path = write_count_task(tmp_path)
    with pytest.raises(ConfigError, match=r"type: unknown task type 'mention_count'"):
        load_dataset_spec(path)


def test_the_type_checks_its_configs_and_labels(mention_count, tmp_path):
    spec = load_dataset_spec(write_count_task(tmp_path))
    assert read_split(spec, "train")[0].label == sum(w in CHEMICALS for w in read_split(spec, "train")[0].text.split())

    with pytest.raises(ConfigError, match="labels: a mention_count task predicts a number; it lists no labels"):
        load_dataset_spec(write_count_task(tmp_path / "labelled", extra="labels: [one, two]\n"))

    bad = tmp_path / "count.dev.tsv"
    bad.write_text("index\tsentence\tcount\nd0\taspirin and heparin\tmany\n")
    with pytest.raises(DataError, match=rf"^{bad}:2: count 'many' is not a whole number >= 0$"):
        read_split(spec, "dev")


def test_the_type_trains_saves_loads_and_predicts(mention_count, tmp_path, tiny_encoder):
    config = RunConfig(
        tasks=[str(write_count_task(tmp_path / "data"))], output_dir=str(tmp_path / "run"), encoder=tiny_encoder,
        epochs=2, batch_size=8, eval_batch_size=16, lr=1e-3, max_length=32, num_threads=1, device="cpu",
        precision="fp32",
    )
    result = train(config, progress=False)
    assert set(result["test"]["toy-count"]) == {"accuracy"}
    assert 0.0 <= result["test_mean_main"] <= 1.0

    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions" / "toy-count.test.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"id", "gold", "count", "score"}

    predictor = Predictor.load(tmp_path / "run" / "best", precision="fp32")
    assert predictor.annotate_tasks() == ["toy-count"]
    test = read_split(predictor.model.specs["toy-count"], "test")
    predicted = predictor.predict("toy-count", [{"id": ex.id, "text": ex.text} for ex in test])
    assert [p["id"] for p in predicted] == [r["id"] for r in rows]
    for p, r in zip(predicted, rows, strict=True):
        assert isinstance(p["count"], int) and p["count"] >= 0
        assert math.isclose(p["score"], r["score"], abs_tol=1e-4)  # the saved run and the loaded model agree

    (annotated,) = predictor.annotate(["aspirin and heparin were given"])
    assert annotated["entities"] == [] and set(annotated["labels"]["toy-count"]) == {"count", "score"}
