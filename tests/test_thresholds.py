"""Multilabel decision thresholds: one per label, chosen on dev only after each dev evaluation, kept in the
model directory and used by the predictor and the test evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomtl.config import DatasetSpec, MetricSpec
from biomtl.data.examples import Example
from biomtl.errors import ModelDirError
from biomtl.evaluate import evaluate
from biomtl.model import MultiTaskModel
from biomtl.predict import Predictor
from biomtl.tasks.multilabel import LabelSetPrediction, MultilabelTask
from biomtl.train import train


def _task() -> MultilabelTask:
    spec = DatasetSpec("ml", "multilabel", "tsv", {}, MetricSpec("multilabel_f1"), "f1", labels=["a", "b"])
    return MultilabelTask(spec)


def test_thresholds_are_chosen_per_label_to_maximise_the_main_metric():
    task = _task()
    # Label a is present exactly where its probability is >= 0.7; label b where its probability is >= 0.2.
    probs = [(0.9, 0.25), (0.75, 0.1), (0.6, 0.3), (0.3, 0.22), (0.1, 0.05), (0.71, 0.15)]
    examples = [
        Example(id=str(i), label=[n for n, p, t in (("a", pa, 0.7), ("b", pb, 0.2)) if p >= t])
        for i, (pa, pb) in enumerate(probs)
    ]
    predictions = [LabelSetPrediction([n for n, p in (("a", pa), ("b", pb)) if p >= 0.5], {"a": pa, "b": pb}) for pa, pb in probs]
    tuned = task.fit_decision(examples, predictions)
    assert [p.labels for p in tuned] == [ex.label for ex in examples]  # every decision now right
    a, b = task.thresholds
    assert 0.6 < a <= 0.71 and 0.15 < b <= 0.2
    assert task.decision() == {"thresholds": {"a": a, "b": b}}


def test_ties_keep_one_half():
    task = _task()
    examples = [Example(id="1", label=["a"])]
    predictions = [LabelSetPrediction(["a"], {"a": 0.9, "b": 0.1})]
    task.fit_decision(examples, predictions)  # already perfect at 0.5: nothing moves
    assert task.thresholds == [0.5, 0.5]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"thresholds": {"a": 0.3}}, r"thresholds: expected one per label \(a, b\)"),
        ({"thresholds": {"a": 0.3, "b": 1.5}}, r"thresholds.b: expected a number in \[0, 1\], got 1.5"),
        ({"thresholds": {"a": 0.3, "b": True}}, r"thresholds.b: expected a number in \[0, 1\], got True"),
        ({"cutoffs": {}}, r"expected \{'thresholds': \{label: threshold\}\}"),
    ],
)
def test_bad_saved_thresholds_are_refused(rule, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        _task().set_decision(rule)


@pytest.fixture(scope="module")
def hoc_run(tiny_encoder, toy_tasks, tmp_path_factory):
    """A single-task toy-hoc run, recording every example that threshold selection saw."""
    seen: list[str] = []
    real = MultilabelTask.fit_decision

    def spy(self, examples, predictions):
        seen.extend(ex.source for ex in examples)
        return real(self, examples, predictions)

    MultilabelTask.fit_decision = spy
    try:
        from biomtl.config import RunConfig

        config = RunConfig(
            tasks=[str(toy_tasks["toy-hoc"])], output_dir=str(tmp_path_factory.mktemp("hoc") / "run"), encoder=tiny_encoder,
            epochs=2, batch_size=4, lr=1e-3, max_length=32, num_threads=1, device="cpu",
        )
        result = train(config, progress=False)
    finally:
        MultilabelTask.fit_decision = real
    return config, result, seen


def test_thresholds_are_chosen_on_dev_only(hoc_run):
    """Like the selection spy of test_train.py: threshold selection never reads a test (or train) example."""
    _, _, seen = hoc_run
    assert seen and all("hoc.dev.tsv:" in source for source in seen)


def test_thresholds_are_saved_and_used_by_predict_and_test(hoc_run, toy_tasks):
    config, result, _ = hoc_run
    best = Path(config.output_dir) / "best"
    saved = json.loads((best / "biomtl.json").read_text())["decisions"]["toy-hoc"]["thresholds"]
    assert set(saved) == {"cancer", "pain"}
    predictor = Predictor.load(best)
    assert predictor.model.tasks["toy-hoc"].thresholds == [saved["cancer"], saved["pain"]]
    for row in predictor.predict("toy-hoc", ["cancer and pain in the patients", "the dose of aspirin"]):
        assert row["labels"] == [n for n in ("cancer", "pain") if row["probabilities"][n] >= saved[n]]
    # The test scores of the run are those of the saved model with its thresholds, and evaluate agrees.
    (test,) = evaluate(str(best), split="test")
    assert test.scores == pytest.approx(result["test"]["toy-hoc"])
    (dev,) = evaluate(str(best), split="dev")
    assert dev.scores == pytest.approx(result["dev"]["toy-hoc"])


def test_bad_thresholds_in_a_model_directory(hoc_run, tmp_path):
    import shutil

    config, _, _ = hoc_run
    model_dir = tmp_path / "m"
    shutil.copytree(Path(config.output_dir) / "best", model_dir)
    manifest = model_dir / "biomtl.json"
    desc = json.loads(manifest.read_text())
    desc["decisions"]["toy-hoc"]["thresholds"]["pain"] = "high"
    manifest.write_text(json.dumps(desc))
    with pytest.raises(ModelDirError, match=rf"^{manifest}: decisions.toy-hoc: thresholds.pain: expected a number in \[0, 1\], got 'high'$"):
        MultiTaskModel.load(model_dir)
    desc["decisions"] = {"toy-ner": {"thresholds": {}}}
    manifest.write_text(json.dumps(desc))
    with pytest.raises(ModelDirError, match=rf"^{manifest}: decisions.toy-ner: expected the decision rule of one of the model's tasks$"):
        MultiTaskModel.load(model_dir)
