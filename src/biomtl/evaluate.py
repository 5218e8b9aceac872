"""Scores on a task's dev or test split: of a saved model directory, or of a pretrained encoder with no training
(zero-shot) where a task type defines one (``biomtl evaluate``).

Zero-shot is defined where the task's head has no weights of its own, so that nothing random decides the
score: sentence similarity as a bi-encoder (the cosine of the two texts' mean-pooled embeddings). Every other
head would start from random weights; evaluating it untrained says nothing, and is refused.

>>> evaluate("default", task="biosses", split="test")[0].scores["pearson"]  # doctest: +SKIP
0.8468...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomtl import metrics
from biomtl.config import DEFAULT_MAX_LENGTH, DatasetSpec, with_files
from biomtl.data.examples import Example
from biomtl.data.readers import read_split, splits
from biomtl.datadirs import DataDirs
from biomtl.errors import BiomtlError
from biomtl.inference import autocast_dtype, predict_features, resolve_device
from biomtl.model import MANIFEST, MultiTaskModel
from biomtl.tasks import HeadSettings, load_dataset_spec, make_task

EVAL_SPLITS = ("dev", "test")
ZERO_SHOT = HeadSettings(similarity="biencoder")  # the settings an untrained encoder is scored with


@dataclass(frozen=True)
class Evaluation:
    """One task's scores on one split (metric values in [0, 1]; correlations in [-1, 1])."""

    task: str
    split: str
    source: str
    zero_shot: bool
    n_examples: int
    scores: dict[str, float]
    main_metric: str

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task, "split": self.split, "source": self.source, "zero_shot": self.zero_shot,
            "n_examples": self.n_examples, "main_metric": self.main_metric, "scores": self.scores,
        }


def score(model: MultiTaskModel, task_name: str, examples: list[Example], predictions: list[Any]) -> dict[str, float]:
    """The task's metric on ``predictions`` of ``examples`` (every numeric score it gives)."""
    task = model.tasks[task_name]
    spec = model.specs[task_name]
    gold = [task.gold(ex) for ex in examples]
    pred = [task.metric_value(p) for p in predictions]
    result = metrics.compute(spec.metric.name, gold, pred, **task.metric_kwargs(examples))
    flat = {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}
    if spec.main_metric not in flat:
        raise BiomtlError(
            f"{spec.config_path}: main_metric: '{spec.main_metric}' is not produced by metric "
            f"'{spec.metric.name}' (it gives {', '.join(flat)})"
        )
    return flat


def is_model_dir(source: str) -> bool:
    return (Path(source) / MANIFEST).is_file()


def has_zero_shot(spec: DatasetSpec) -> bool:
    """Whether a task has a zero-shot score: its head, built with :data:`ZERO_SHOT`, has no weights."""
    return not any(True for _ in make_task(spec, ZERO_SHOT).build_head(8, ZERO_SHOT).parameters())


def zero_shot_model(
    encoder: str, task: str, data_dirs: DataDirs | None = None, max_length: int = DEFAULT_MAX_LENGTH
) -> MultiTaskModel:
    """``encoder`` (a HF name or path; ``default``: the embedded one) with the head of ``task`` that has no
    weights; a one-line error where the task's type has none."""
    spec = load_dataset_spec(task, data_dirs)
    if not has_zero_shot(spec):
        raise BiomtlError(
            f"--task {spec.name}: a {spec.type} task has no zero-shot score (an untrained head is random); "
            "train a model and evaluate its directory"
        )
    path = Path(encoder).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise BiomtlError(f"{encoder}: neither a biomtl model directory (no {MANIFEST}) nor an encoder (no config.json)")
    return MultiTaskModel.from_encoder(
        None if encoder == "default" else encoder, {spec.name: spec}, similarity=ZERO_SHOT.similarity,
        max_length=max_length,
    )


def evaluate(
    source: str,
    task: str | None = None,
    split: str = "dev",
    data_dirs: DataDirs | None = None,
    batch_size: int = 128,
    device: str = "cpu",
    limit: int | None = None,
    precision: str = "auto",
    max_length: int | None = None,
) -> list[Evaluation]:
    """Scores of a model directory's tasks (``task``: only that one), or of an encoder zero-shot on ``task``.

    A model directory is scored with the decision rules it stores (e.g. thresholds chosen on dev); nothing is
    tuned here. ``data_dirs`` says where the tasks' files are (default: the environment's directories).
    ``limit`` scores the seeded subset of that many examples that a run capped by ``max_eval_examples`` scores.
    ``precision`` is a run's (``auto``: bf16 where the device computes it natively); ``max_length`` truncates
    an encoder's inputs (default 128); a model directory keeps the max length it was trained with.
    """
    data_dirs = data_dirs or DataDirs.from_env()
    if split not in EVAL_SPLITS:
        raise BiomtlError(f"--split: expected one of {', '.join(EVAL_SPLITS)}, got '{split}'")
    if batch_size < 1:
        raise BiomtlError(f"--batch-size: must be >= 1, got {batch_size}")
    if max_length is not None and max_length < 8:
        raise BiomtlError(f"--max-length: must be >= 8, got {max_length}")
    zero_shot = not is_model_dir(source)
    if zero_shot:
        if task is None:
            raise BiomtlError(f"--task: {source} is an encoder, not a biomtl model directory; name the task to score it on")
        model = zero_shot_model(source, task, data_dirs, max_length or DEFAULT_MAX_LENGTH)
        tasks = list(model.specs)
    else:
        if max_length is not None:
            raise BiomtlError(f"--max-length: {source} is a model directory; it keeps the max length it was trained with")
        model = MultiTaskModel.load(source)
        if task is not None and task not in model.specs:
            raise BiomtlError(f"--task: the model has no task '{task}' (it has {', '.join(model.specs)})")
        tasks = [task] if task else list(model.specs)
    for name in tasks:
        if split not in splits(model.specs[name]):
            raise BiomtlError(f"--split: task {name} has no {split} split")
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    dtype = autocast_dtype(precision, torch_device)
    results = []
    for name in tasks:
        examples = read_split(with_files(model.specs[name], data_dirs), split, limit=limit)
        features = model.tasks[name].encode(examples, model.tokenizer, model.max_length)
        predictions = predict_features(model, name, features, len(examples), batch_size, torch_device, dtype)
        results.append(Evaluation(name, split, source, zero_shot, len(examples), score(model, name, examples, predictions),
                                  model.specs[name].main_metric))
    return results
