"""The untrained model is a candidate in model selection (epoch 0): dev selection never picks a state that is
worse on dev than the starting point."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from conftest import WORDS
from safetensors.torch import load_file

from biomtl.train import train


def _reversed_similarity_task(root: Path) -> Path:
    """Text pairs whose second text repeats the first k of the first's 6 words (k = 0..5). Dev and test score
    them k, training 5 - k: training teaches the opposite of what dev asks, while the untrained bi-encoder's
    cosine already follows the shared words."""
    rng = random.Random(0)
    root.mkdir()
    for split, n, flip in (("train", 64, True), ("dev", 32, False), ("test", 8, False)):
        rows = ["index\tsentence1\tsentence2\tscore"]
        for i in range(n):
            a = [rng.choice(WORDS) for _ in range(6)]
            k = rng.randint(0, 5)
            b = a[:k] + [rng.choice(WORDS) for _ in range(6 - k)]
            rows.append(f"{split}{i}\t{' '.join(a)}\t{' '.join(b)}\t{5 - k if flip else k}")
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    files = "".join(f"  {split}: {root / f'{split}.tsv'}\n" for split in ("train", "dev", "test"))
    (root / "reversed.yaml").write_text(
        f"name: reversed\ntype: regression\nformat: tsv\nfiles:\n{files}"
        "columns: {id: index, text: sentence1, text_b: sentence2, label: score}\nscore_range: [0, 5]\n"
        "metric: {name: pearson}\nmain_metric: pearson\n"
    )
    return root / "reversed.yaml"


def test_training_that_makes_dev_worse_keeps_the_untrained_model(run_config, tiny_encoder, tmp_path):
    task = _reversed_similarity_task(tmp_path / "reversed")
    # Reversed targets at a far too high LR: every epoch ends far below the untrained model on dev (~0.9 → ~0.1).
    config = run_config(tasks=["toy-sts"], similarity="biencoder", epochs=3, lr=0.1, batch_size=8).replace(tasks=[str(task)])
    result = train(config, progress=False)
    out = Path(config.output_dir)
    dev = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"dev"' in x]
    assert [r["epoch"] for r in dev] == [0, 1, 2, 3]
    assert all(r["mean_main"] < dev[0]["mean_main"] for r in dev[1:]), [r["mean_main"] for r in dev]
    assert result["best_epoch"] == 0 and result["dev"] == dev[0]["scores"]
    # best/ holds the encoder as it was before the first step.
    saved = load_file(out / "best" / "model.safetensors")
    pretrained = load_file(Path(tiny_encoder) / "model.safetensors")
    for key, value in pretrained.items():
        assert torch.equal(saved[f"encoder.{key}"], value), key


def test_an_epoch_that_beats_the_untrained_model_replaces_it(run_config):
    config = run_config(tasks=["toy-rel"], epochs=3, lr=3e-3)  # a fresh head: the untrained model is poor
    result = train(config, progress=False)
    dev = [json.loads(x) for x in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines() if '"dev"' in x]
    best = max(dev, key=lambda r: r["mean_main"])  # the first of equals, as the loop keeps the first
    assert dev[0]["epoch"] == 0 and result["best_epoch"] == best["epoch"]
    assert result["dev_mean_main"] >= dev[0]["mean_main"]
