"""How far training on each task moves the similarity bi-encoder's embedding space (issue 10, the BIOSSES loss).

The bi-encoder scores a BIOSSES pair by the cosine of the two sentences' mean-pooled embeddings, so any run
that moves the shared encoder changes that score, whatever task it trained. This script takes the **encoder**
of each given model directory (an ST run of another task, an MTL run, ...), puts the weight-free bi-encoder
head on it, and scores BIOSSES dev and test zero-shot, next to the untrained encoder. Nothing is trained or
tuned; a drop says that task's training pulled the embedding space away from what the cosine needs::

    python benchmarks/embedding_drift.py runs/blue-public-cpu-b16/seed1/st-* runs/blue-public-cpu-b16/seed1/mtl \\
        --json-out results/embedding-drift.json

Each row: the directory, the tasks it trained, Pearson ×100 on dev (16 pairs) and test (20 pairs), and three
label-free measures of how far the encoder moved from the untrained one on the split's sentences: the
geometry loss of the anchor (:mod:`biomtl.anchor`: the mean squared change of all pairwise cosines; 0: the
same geometry), the embedding loss (``anchor_measure: embeddings``: the mean of 1 − the cosine of each
sentence's two embeddings) and the agreement (Pearson ×100 of the scored pairs' cosines under this encoder
against under the untrained one: 100, the same ranking of pairs; it needs no gold scores, so the 64 training
pairs can show it too). ``--splits`` names the splits read (``train``, ``dev``, ``test``; default dev,test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

TASK = "biosses"


def drift(model_dirs: list[str], task: str = TASK, data: str | None = None, encoder: str = "default",
          splits: tuple[str, ...] = ("dev", "test")) -> list[dict]:
    """One row per model directory, after the untrained ``encoder`` the runs started from (``default``: the
    embedded one): ``{"model", "trained", split: score, "geometry": {split: loss}}``, the main metric ×100 of
    ``task`` (a task with a weight-free head: similarity) with each directory's encoder, and the label-free
    measures against the untrained encoder (``"embedding"``, ``"agreement"``, like ``"geometry"``: by split)."""
    from biomtl.config import with_files
    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.evaluate import zero_shot_model
    from biomtl.model import MultiTaskModel

    dirs = DataDirs.from_env(prepared=data)
    untrained = zero_shot_model(encoder, task, dirs).eval()
    (name,) = untrained.specs  # the task's name (``task`` may be a config path)
    examples = {split: read_split(with_files(untrained.specs[name], dirs), split) for split in splits}
    start = {split: _pooled(untrained, examples[split]) for split in splits}
    rows = [{"model": f"{encoder} (untrained)", "trained": [], **_scores(untrained, name, examples, start)}]
    for directory in model_dirs:
        trained = MultiTaskModel.load(directory)
        probe = zero_shot_model(encoder, task, dirs, trained.max_length)
        probe.encoder.load_state_dict(trained.encoder.state_dict())  # the trained encoder, the weight-free head
        rows.append({"model": directory, "trained": list(trained.specs), **_scores(probe.eval(), name, examples, start)})
    return rows


def _scores(probe: Any, name: str, examples: dict[str, list], start: dict[str, Any]) -> dict[str, Any]:
    """``{split: main metric ×100, "geometry" / "embedding" / "agreement": {split: measure against ``start``}}``
    for one encoder."""
    import torch

    from biomtl.anchor import embedding_loss, geometry_loss
    from biomtl.evaluate import score
    from biomtl.inference import predict_features

    row: dict[str, Any] = {"geometry": {}, "embedding": {}, "agreement": {}}
    for split, exs in examples.items():
        pooled = _pooled(probe, exs)
        row["geometry"][split] = geometry_loss(pooled, start[split]).item()
        row["embedding"][split] = embedding_loss(pooled, start[split]).item()
        row["agreement"][split] = 100 * _pearson(_pair_cosines(pooled), _pair_cosines(start[split]))
        features = probe.tasks[name].encode(exs, probe.tokenizer, probe.max_length)
        predictions = predict_features(probe, name, features, len(exs), 64, torch.device("cpu"), None)
        row[split] = 100 * score(probe, name, exs, predictions)[probe.specs[name].main_metric]
    return row


def _pair_cosines(pooled: Any) -> Any:
    """The cosine of each pair from :func:`_pooled`'s rows (a pair's two sentences are rows 2i and 2i + 1)."""
    import torch.nn.functional as F

    return F.cosine_similarity(pooled[0::2], pooled[1::2], dim=-1)


def _pearson(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def _pooled(model: Any, examples: list) -> Any:
    """Mean-pooled embeddings (N, H) of every sentence of the pairs, under ``model``'s encoder."""
    import torch

    from biomtl.anchor import mean_pooled

    texts = [t for e in examples for t in (e.text, e.text_b)]
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt")
    with torch.no_grad():
        return mean_pooled(model.encoder, batch)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dirs", nargs="+", help="model directories (a run's best/ or the run directory)")
    p.add_argument("--task", default=TASK, help="a similarity task (its head has no weights); default biosses")
    p.add_argument("--encoder", default="default", help="the encoder the runs started from (default: the embedded one)")
    p.add_argument("--splits", default="dev,test", help="comma-separated, of train, dev, test (default dev,test)")
    p.add_argument("--data", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    splits = tuple(args.splits.split(","))
    if not splits or any(s not in ("train", "dev", "test") for s in splits) or len(set(splits)) < len(splits):
        p.error(f"--splits: one or more of train, dev, test, each once, got '{args.splits}'")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report about the encoder's unused pooler weights, per directory
    hf_logging.disable_progress_bar()
    dirs = [str(Path(d) / "best") if (Path(d) / "best").is_dir() else d for d in args.model_dirs]
    rows = drift(dirs, args.task, args.data, args.encoder, splits)
    measures = (("geometry", "geometry loss", ".3f"), ("embedding", "embedding loss", ".4f"), ("agreement", "agreement", ".1f"))
    header = ["encoder from", "trained on", *[f"{args.task} {s}" for s in splits],
              *[f"{title}, {s}" for _, title, _ in measures for s in splits]]
    print(markdown_table(header, [[r["model"], ", ".join(r["trained"]) or "—", *[f"{r[s]:.1f}" for s in splits],
                                   *[format(r[key][s], f) for key, _, f in measures for s in splits]] for r in rows]))
    print(f"\nmachine: {machine_line(machine())}")
    write_json(args.json_out, {"command": command_line(), "machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
