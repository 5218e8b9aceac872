"""The study's results table: additive metric statistics, the paired bootstrap interval of MTL-FT − ST, the
zero-shot score and the per-seed differences, on synthetic predictions and tiny fake run directories."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from biomtl import metrics
from biomtl.data.readers import read_split
from biomtl.evaluate import evaluate
from biomtl.experiments.bootstrap import PairedTask, paired_interval
from biomtl.experiments.report import study_markdown, summarize_study
from biomtl.experiments.schema import load_study, run_name
from biomtl.rundir import save_predictions
from biomtl.tasks import load_dataset_spec, make_task
from biomtl.tasks.multilabel import LabelSetPrediction
from biomtl.tasks.regression import ScorePrediction
from biomtl.tasks.statistics import ScoreStatistics, score_statistics
from biomtl.tasks.tagging import TaggedWords

TAGS = ["O", "B-Chem", "I-Chem", "B-Dis", "I-Dis"]
LABELS = ["CPR:3", "CPR:4", "false"]
HALLMARKS = ["a", "b", "c", "d"]


def _tagging(rng: random.Random, n: int) -> tuple[list, list]:
    gold = [[rng.choice(TAGS) for _ in range(rng.randint(0, 12))] for _ in range(n)]
    return gold, [[t if rng.random() < 0.7 else rng.choice(TAGS) for t in g] for g in gold]


def _labels(rng: random.Random, n: int) -> tuple[list, list]:
    gold = [rng.choice(LABELS) for _ in range(n)]
    return gold, [g if rng.random() < 0.6 else rng.choice(LABELS) for g in gold]


def _label_sets(rng: random.Random, n: int) -> tuple[list, list]:
    gold = [rng.sample(HALLMARKS, rng.randint(0, 2)) for _ in range(n)]
    return gold, [rng.sample(HALLMARKS, rng.randint(0, 2)) for _ in range(n)]


def _scores(rng: random.Random, n: int) -> tuple[list, list]:
    gold = [rng.uniform(0, 4) for _ in range(n)]
    return gold, [g + rng.gauss(0, 1.5) for g in gold]


# metric, its arguments, the main-metric keys, synthetic data; count-based metrics must match bit for bit
CASES = [
    ("entity_f1", {}, ("f1", "precision", "recall"), _tagging, True),
    ("micro_f1", {"exclude": ["false"]}, ("f1", "precision", "recall"), _labels, True),
    ("classification_f1", {"exclude": ["false"]}, ("micro_f1", "micro_precision", "micro_recall", "accuracy"), _labels, True),
    ("accuracy", {}, ("accuracy",), _labels, True),
    ("multilabel_f1", {}, ("f1", "precision", "recall"), _label_sets, True),
    ("pearson", {}, ("pearson",), _scores, False),
]


@pytest.mark.parametrize(("metric", "arguments", "keys", "make", "exact"), CASES, ids=[c[0] for c in CASES])
def test_statistics_reproduce_each_metric(metric, arguments, keys, make, exact):
    gold, pred = make(random.Random(0), 300)
    expected = metrics.compute(metric, gold, pred, **arguments)
    for key in keys:
        value = score_statistics(metric, key, gold, pred, **arguments).full_score()
        assert value == expected[key] if exact else value == pytest.approx(expected[key], abs=1e-12)


def test_hoc_statistics_are_per_abstract():
    rng = random.Random(1)
    gold, pred = _label_sets(rng, 240)
    gold = [g or ["a"] for g in gold]  # every abstract has a gold label (BLUE's HoC does)
    doc_ids = [f"d{i // 6}" for i in range(240)]  # 6 sentences per abstract
    stats = score_statistics("hoc_f1", "f1", gold, pred, doc_ids=doc_ids)
    assert stats.unit == "abstract" and stats.units.shape == (40, 3)
    expected = metrics.hoc_f1(gold, pred, doc_ids=doc_ids)
    for key in ("f1", "precision", "recall"):
        value = score_statistics("hoc_f1", key, gold, pred, doc_ids=doc_ids).full_score()
        assert value == pytest.approx(expected[key], abs=1e-12)


def test_degenerate_and_non_additive_scores():
    assert score_statistics("pearson", "pearson", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]).full_score() == 0.0  # as metrics
    assert score_statistics("pearson", "spearman", [1.0, 2.0], [1.0, 2.0]) is None  # ranks are not additive
    assert score_statistics("classification_f1", "macro_f1", ["a"], ["a"]) is None
    assert score_statistics("no_such_metric", "f1", ["a"], ["a"]) is None


# ----------------------------------------------------------------------------------------------------------
# The interval


def _classifier_stats(rng: np.random.Generator, gold: list[str], accuracy: float) -> ScoreStatistics:
    pred = [g if rng.random() < accuracy else str(rng.choice(LABELS)) for g in gold]
    stats = score_statistics("micro_f1", "f1", gold, pred, exclude=["false"])
    assert stats is not None
    return stats


def _study_case(n: int, seeds: int = 3, seed: int = 0) -> dict[str, PairedTask]:
    """Two tasks on which MTL-FT is a little better than ST, ``n`` test examples each."""
    rng = np.random.default_rng(seed)
    tasks = {}
    for name in ("rel", "ddi"):
        gold = [str(g) for g in rng.choice(LABELS, size=n)]
        st = [_classifier_stats(rng, gold, 0.60 + 0.02 * k) for k in range(seeds)]
        ft = [_classifier_stats(rng, gold, 0.65 + 0.02 * k) for k in range(seeds)]
        tasks[name] = PairedTask(st, ft)
    return tasks


def test_interval_is_deterministic_and_holds_the_estimate():
    tasks = _study_case(400)
    first = paired_interval(tasks)
    assert paired_interval(tasks) == first
    assert paired_interval(tasks, seed=1) != first
    average = first["average"]
    assert average["low"] <= average["estimate"] <= average["high"] and average["low"] < average["high"]
    for name, paired in tasks.items():
        estimate = np.mean([f.full_score() - s.full_score() for s, f in zip(paired.st, paired.mtl_ft, strict=True)])
        assert first["tasks"][name]["estimate"] == pytest.approx(estimate)
        assert first["tasks"][name]["low"] <= estimate <= first["tasks"][name]["high"]
    assert average["estimate"] == pytest.approx(np.mean([first["tasks"][t]["estimate"] for t in tasks]))


def test_interval_narrows_with_more_examples():
    small, large = (paired_interval(_study_case(n, seeds=2), n_resamples=200)["average"] for n in (100, 2000))
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 2


def test_identical_predictions_give_exactly_zero():
    """ST and MTL-FT predict the same on every example but differ across seeds: paired resamples cancel
    exactly, whatever the seeds drawn."""
    rng = np.random.default_rng(3)
    gold = [str(g) for g in rng.choice(LABELS, size=200)]
    same = [_classifier_stats(rng, gold, a) for a in (0.5, 0.7, 0.9)]
    result = paired_interval({"rel": PairedTask(same, list(same))})
    assert result["average"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


# ----------------------------------------------------------------------------------------------------------
# The study's tables, from fake run directories


def _predict(task: str, examples: list, rng: random.Random, skill: float) -> list:
    """Typed predictions of one fake run: each gold value kept with probability ``skill``."""
    if task == "toy-sts":
        return [ScorePrediction(ex.label + rng.gauss(0, 2 * (1 - skill))) for ex in examples]
    if task == "toy-hoc":
        return [LabelSetPrediction(ex.label if rng.random() < skill else ["pain"], {}) for ex in examples]
    tags = [[t if rng.random() < skill else "O" for t in ex.label] for ex in examples]
    return [TaggedWords(t, [1.0] * len(t)) for t in tags]


def _fake_study(root: Path, toy_tasks: dict[str, Path], encoder: str, tasks: list[str], predictions: bool,
                max_length: int = 32):
    """A 2-seed study whose runs exist only as ``result.json`` (and test predictions): no training."""
    config = root / "study.yaml"
    config.write_text(yaml.safe_dump({
        "tasks": [str(toy_tasks[t]) for t in tasks], "output_dir": str(root / "out"), "seeds": 2,
        "base": {"encoder": encoder, "device": "cpu", "eval_batch_size": 32, "max_length": max_length,
                 "precision": "fp32"},
    }))
    study = load_study(config)
    rng = random.Random(0)
    results = {}
    for seed in study.seeds:
        for setting, skill in (("st", 0.6), ("mtl", 0.7), ("mtl_ft", 0.8)):
            runs = {t: run_name(setting, t) for t in tasks}
            for name in set(runs.values()):
                covered = [t for t in tasks if runs[t] == name]
                out = study.run_dir(seed, name)
                out.mkdir(parents=True)
                scores, preds, examples = {}, {}, {}
                for t in covered:
                    spec = load_dataset_spec(study.tasks[t])
                    task = make_task(spec)
                    examples[t] = read_split(spec, "test")
                    preds[t] = _predict(t, examples[t], rng, skill)
                    scores[t] = metrics.compute(spec.metric.name, [task.gold(ex) for ex in examples[t]],
                                                [task.metric_value(p) for p in preds[t]], **task.metric_kwargs(examples[t]))
                main = {t: load_dataset_spec(study.tasks[t]).main_metric for t in covered}
                if predictions:
                    save_predictions(out, "test", examples, preds)
                result = {"tasks": covered, "best_epoch": 1, "main_metric": main, "test": scores, "dev": scores}
                (out / "result.json").write_text(json.dumps(result))
                results[(seed, name)] = result
    return study, results


def test_table_has_zero_shot_per_seed_deltas_and_interval(tmp_path, toy_tasks, tiny_encoder):
    study, results = _fake_study(tmp_path, toy_tasks, tiny_encoder, ["toy-sts", "toy-hoc", "toy-ner"], True)
    summary = summarize_study(study, results)
    assert list(summary["zero_shot"]) == ["toy-sts"]  # similarity only: the other heads would be random
    assert -1.0 <= summary["zero_shot"]["toy-sts"] <= 1.0
    boot = summary["bootstrap"]
    assert boot["units"] == {"toy-sts": "pair", "toy-hoc": "abstract", "toy-ner": "sentence"}
    assert boot["average"]["estimate"] == pytest.approx(summary["test"]["average"]["delta"]["mean"])
    assert summarize_study(study, results)["bootstrap"] == boot  # deterministic

    md = study_markdown(json.loads(json.dumps(summary)))
    header = ("| Task | Metric | Zero-shot | ST | MTL | MTL-FT | Δ MTL-FT − ST | Δ seed 1 | Δ seed 2 "
              "| 95 % interval |")
    assert header in md
    row = next(line for line in md.splitlines() if line.startswith("| toy-hoc |"))
    deltas = summary["test"]["toy-hoc"]["delta"]["values"]
    assert f"| — | {summary['test']['toy-hoc']['st']['mean'] * 100:.1f} ±" in row  # no zero-shot for HoC
    assert " | ".join(f"{v * 100:+.1f}" for v in deltas) in row
    average = next(line for line in md.splitlines() if line.startswith("| **Average** |"))
    assert average.endswith(f"[{boot['average']['low'] * 100:+.1f}, {boot['average']['high'] * 100:+.1f}] |")
    assert "toy-hoc: abstracts" in md and "1000 replicates" in md
    assert md.count("| **Average** |") == 2
    assert "Every run selected a trained epoch (none kept epoch 0)." in md

    summary["runs"]["seed2/st-toy-hoc"]["best_epoch"] = 0  # nothing beat the untrained head on dev
    md = study_markdown(summary)
    assert f"1 of {len(summary['runs'])} runs kept epoch 0, the state before their first training step" in md
    assert "on dev: seed2/st-toy-hoc. A fresh head is random there" in md


def test_zero_shot_scores_inputs_as_the_study_does(tmp_path, toy_tasks, long_sts, tiny_encoder):
    """The zero-shot column truncates at the study's max_length (here 8 sub-words, which cuts these
    sentences) in the study's precision, as its runs do: not at `biomtl evaluate`'s defaults."""
    tasks = {**toy_tasks, "toy-sts": long_sts}
    study, results = _fake_study(tmp_path, tasks, tiny_encoder, ["toy-sts"], False, max_length=8)
    zero_shot = summarize_study(study, results)["zero_shot"]["toy-sts"]
    sts = str(long_sts)
    (same,) = evaluate(tiny_encoder, sts, "test", max_length=8, precision="fp32")
    (default,) = evaluate(tiny_encoder, sts, "test")
    assert zero_shot == same.scores["pearson"] != default.scores["pearson"]


def test_without_predictions_or_similarity_the_table_says_so(tmp_path, toy_tasks, tiny_encoder):
    study, results = _fake_study(tmp_path, toy_tasks, tiny_encoder, ["toy-ner", "toy-hoc"], False)
    summary = summarize_study(study, results)
    assert summary["zero_shot"] == {}
    assert "evaluate_test: true, with save_predictions: true, which the quick profile turns off" in summary["bootstrap"]["skipped"]
    md = study_markdown(summary)
    assert "Zero-shot |" not in md and "| Task | Metric | ST | MTL | MTL-FT | Δ MTL-FT − ST | Δ seed 1 |" in md
    assert "No 95 % interval: seed1/st-toy-ner saved no test predictions" in md
