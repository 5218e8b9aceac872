"""Determinism on the CPU: the same seed and config give bit-identical metrics, predictions and weights;
another seed gives other weights. What holds on a GPU is in docs/determinism.md."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from biomtl.train import train


def _outputs(out: Path) -> tuple[list[dict], dict, dict[str, str], dict[str, torch.Tensor]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("elapsed_s", None)  # wall-clock time, the one field allowed to differ
    result = json.loads((out / "result.json").read_text())
    result.pop("output_dir")
    predictions = {p.name: p.read_text() for p in sorted((out / "predictions").iterdir())}
    return rows, result, predictions, load_file(out / "best" / "model.safetensors")


def test_same_seed_same_everything_other_seed_other_weights(run_config, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = run_config(tasks=["toy-ner", "toy-rel", "toy-sts"], seed=seed, output_dir=str(tmp_path / name))
        train(config, progress=False)
        runs[name] = _outputs(tmp_path / name)

    (rows_a, result_a, preds_a, weights_a), (rows_b, result_b, preds_b, weights_b) = runs["a"], runs["b"]
    assert rows_a == rows_b and result_a == result_b and preds_a == preds_b
    assert [r["split"] for r in rows_a] == ["dev", "dev", "dev", "test"] and len(preds_a) == 6  # epochs 0, 1, 2
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    weights_c = runs["c"][3]
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
