"""In-process end-to-end runs of the command line on the tiny model: train 3 tasks → files, metrics,
reload, raw-text prediction, resume."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from interruption import interrupted_after

from biomtl.cli import main
from biomtl.config import RunConfig
from biomtl.train import train


def _write_run(tmp_path: Path, tiny_encoder: str, toy_tasks: dict, **extra) -> Path:
    config = {
        "tasks": [str(toy_tasks[t]) for t in ("toy-ner", "toy-rel", "toy-sts")],
        "output_dir": str(tmp_path / "run"), "encoder": tiny_encoder, "epochs": 2, "batch_size": 4,
        "max_length": 32, "lr": "1e-3", "num_threads": 1, **extra,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_predict_end_to_end(tmp_path, tiny_encoder, toy_tasks, capsys):
    config = _write_run(tmp_path, tiny_encoder, toy_tasks)
    assert main(["train", str(config), "--quiet", "epochs=1"]) == 0
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "result.json", "best/biomtl.json", "best/model.safetensors"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1  # override applied
    result = json.loads((out / "result.json").read_text())
    assert set(result["test"]["toy-ner"]) >= {"f1", "precision", "recall"}
    assert set(result["test"]["toy-rel"]) >= {"micro_f1", "macro_f1", "accuracy"}
    assert set(result["test"]["toy-sts"]) >= {"pearson"}
    capsys.readouterr()

    text_file = tmp_path / "doc.txt"
    text_file.write_text("Aspirin and naloxone were given.\nThe patients had renal failure.")
    assert main(["predict", str(out / "best"), "--task", "toy-ner", "--input", str(text_file)]) == 0
    (record,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    text = text_file.read_text()
    for ent in record["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"]

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "a", "text": "the drug", "text_b": "the dose"}\n')
    assert main(["predict", str(out / "best"), "--task", "toy-sts", "--input", str(pairs), "--output", str(tmp_path / "p.jsonl")]) == 0
    (pred,) = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert pred["id"] == "a" and isinstance(pred["score"], float)

    rel = tmp_path / "rel.jsonl"
    rel.write_text(json.dumps({"text": "aspirin inhibits the receptor", "entities": [{"start": 0, "end": 7}, {"start": 21, "end": 29}]}) + "\n")
    assert main(["predict", str(out / "best"), "--task", "toy-rel", "--input", str(rel)]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["label"] in ("CPR:3", "CPR:4", "false") and abs(sum(pred["probabilities"].values()) - 1) < 1e-5


def test_interrupted_run_resumes_from_cli(tmp_path, tiny_encoder, toy_tasks):
    path = _write_run(tmp_path, tiny_encoder, toy_tasks, checkpoint_every=3)
    config = RunConfig.from_dict(yaml.safe_load(path.read_text()))
    with interrupted_after(7):
        train(config, progress=False)
    assert not (tmp_path / "run" / "result.json").exists()
    assert main(["train", str(path)]) == 2  # refuses to clobber
    assert main(["train", str(path), "--resume", "--quiet"]) == 0
    assert (tmp_path / "run" / "result.json").is_file()


def test_existing_output_needs_overwrite(tmp_path, tiny_encoder, toy_tasks, capsys):
    path = _write_run(tmp_path, tiny_encoder, toy_tasks, epochs=1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("user data")
    assert main(["train", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"biomtl: error: {tmp_path / 'run'} exists; pass --overwrite to replace it or --resume to continue it"
    assert (tmp_path / "run" / "keep.txt").read_text() == "user data"
