"""``biomtl evaluate``: a model directory's scores on dev/test, an encoder's zero-shot score where one is
defined, and one line with exit status 2 for every bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from biomtl.cli import main
from biomtl.config import REPO_CONFIGS
from biomtl.datadirs import DataDirs
from biomtl.evaluate import evaluate
from biomtl.train import train


@pytest.fixture(scope="module")
def trained(tiny_encoder, toy_tasks, tmp_path_factory):
    from biomtl.config import RunConfig

    config = RunConfig(
        tasks=[str(toy_tasks[t]) for t in ("toy-sts", "toy-rel")], output_dir=str(tmp_path_factory.mktemp("ev") / "run"),
        encoder=tiny_encoder, epochs=1, batch_size=4, lr=1e-3, max_length=32, num_threads=1, device="cpu",
    )
    return Path(config.output_dir) / "best", train(config, progress=False)


def _run(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_a_model_directory_is_scored_as_the_run_scored_it(trained, capsys):
    best, result = trained
    for split in ("dev", "test"):
        code, out, err = _run(["evaluate", str(best), "--split", split], capsys)
        assert code == 0 and not err
        rows = {r["task"]: r for r in map(json.loads, out)}
        assert set(rows) == {"toy-sts", "toy-rel"}
        for task, row in rows.items():
            assert row["split"] == split and row["zero_shot"] is False and row["n_examples"] == 8
            assert row["scores"] == pytest.approx(result[split][task])
    code, out, _ = _run(["evaluate", str(best), "--task", "toy-rel"], capsys)
    assert code == 0 and [json.loads(x)["task"] for x in out] == ["toy-rel"]


def test_an_encoder_is_scored_zero_shot_on_similarity(tiny_encoder, toy_tasks, capsys):
    code, out, err = _run(["evaluate", tiny_encoder, "--task", str(toy_tasks["toy-sts"]), "--split", "test"], capsys)
    assert code == 0 and not err
    (row,) = map(json.loads, out)
    assert row["zero_shot"] is True and row["task"] == "toy-sts" and row["split"] == "test"
    assert math.isfinite(row["scores"]["pearson"])
    (again,) = evaluate(tiny_encoder, str(toy_tasks["toy-sts"]), "test")  # the library call behind it
    assert again.scores == pytest.approx(row["scores"])


def test_zero_shot_takes_a_max_length_and_a_precision(tiny_encoder, long_sts, capsys):
    """What a study's zero-shot column passes: its runs' max length (8 cuts these sentences) and precision."""
    sts = str(long_sts)
    code, out, err = _run(["evaluate", tiny_encoder, "--task", sts, "--split", "test", "--max-length", "8",
                           "--precision", "fp32"], capsys)
    assert code == 0 and not err
    (row,) = map(json.loads, out)
    (short,) = evaluate(tiny_encoder, sts, "test", max_length=8, precision="fp32")
    (default,) = evaluate(tiny_encoder, sts, "test")
    assert row["scores"] == pytest.approx(short.scores) and short.scores["pearson"] != default.scores["pearson"]


@pytest.mark.slow
def test_the_embedded_encoder_zero_shot_on_biosses(prepared_dir):
    """The figure of issue 10: BIOSSES with no training, test Pearson 84.7 and dev 73.0 in fp32 (the default
    precision, ``auto``, is bf16 on a CPU that computes it natively, where test is 84.6)."""
    dirs = DataDirs.from_env(prepared=prepared_dir)
    (test,) = evaluate("default", "biosses", "test", dirs, precision="fp32")
    (dev,) = evaluate("default", "biosses", "dev", dirs, precision="fp32")
    assert round(test.scores["pearson"] * 100, 1) == 84.7
    assert round(dev.scores["pearson"] * 100, 1) == 73.0
    (bf16,) = evaluate("default", "biosses", "test", dirs, precision="bf16")
    assert abs(bf16.scores["pearson"] - test.scores["pearson"]) < 0.005


def test_bad_inputs_give_one_line_and_exit_2(trained, tiny_encoder, toy_tasks, tmp_path, capsys):
    best, _ = trained
    sts, hoc = str(toy_tasks["toy-sts"]), str(toy_tasks["toy-hoc"])
    (tmp_path / "empty").mkdir()
    no_test = tmp_path / "no-test.yaml"
    no_test.write_text(Path(sts).read_text().replace("sts.test.tsv", "missing.test.tsv"))
    cases = [
        (["evaluate", str(best), "--split", "train"], "--split: expected one of dev, test, got 'train'"),
        (["evaluate", str(best), "--task", "toy-ner"], "--task: the model has no task 'toy-ner' (it has toy-sts, toy-rel)"),
        (["evaluate", str(best), "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["evaluate", tiny_encoder, "--task", sts, "--max-length", "4"], "--max-length: must be >= 8, got 4"),
        (["evaluate", str(best), "--max-length", "64"],
         f"--max-length: {best} is a model directory; it keeps the max length it was trained with"),
        (["evaluate", tiny_encoder, "--task", sts, "--precision", "fp8"], None),
        (["evaluate", tiny_encoder], f"--task: {tiny_encoder} is an encoder, not a biomtl model directory; name the task to score it on"),
        (["evaluate", tiny_encoder, "--task", hoc],
         "--task toy-hoc: a multilabel task has no zero-shot score (an untrained head is random); train a model and evaluate its directory"),
        (["evaluate", tiny_encoder, "--task", "biosess"], "tasks: no dataset config found for 'biosess'; did you mean 'biosses'? "
         f"(looked in {REPO_CONFIGS / 'datasets'} (shipped))"),
        (["evaluate", str(tmp_path / "empty"), "--task", sts],
         f"{tmp_path / 'empty'}: neither a biomtl model directory (no biomtl.json) nor an encoder (no config.json)"),
        (["evaluate", "./no/such/dir", "--task", sts],
         "encoder: ./no/such/dir does not exist (give a model directory or a Hugging Face model name)"),
        (["evaluate", tiny_encoder, "--task", str(no_test), "--split", "test"], None),  # the reader names the file
    ]
    for argv, message in cases:
        code, out, err = _run(argv, capsys)
        assert code == 2 and out == [] and len(err) == 1, (argv, err)
        if message is not None:
            assert err[0] == f"biomtl: error: {message}", argv
        else:
            assert "missing.test.tsv" in err[0] or "'fp8'" in err[0], err


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "MODEL_OR_ENCODER" in text and "zero-shot" in text and "--split" in text
