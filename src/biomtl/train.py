"""The one training loop. Single-task, multi-task and fine-tune runs are the same loop with other configs.

Per epoch: the sampler yields task-homogeneous batches; each step trains the shared encoder and that task's
head on one batch. After each epoch every task is evaluated on dev; the checkpoint with the best mean of the
tasks' main dev metrics is kept. Test is evaluated once, on that checkpoint, after training.

Outputs in ``output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per evaluation),
``best/`` (model directory), ``predictions/<task>.<split>.jsonl``, ``checkpoint/`` (for ``--resume``) and
``result.json`` (written last: its presence marks a finished run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import queue
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from biomtl import metrics
from biomtl.config import DatasetSpec, RunConfig
from biomtl.data.examples import Example
from biomtl.data.readers import read_split, splits
from biomtl.data.sampler import TaskBatchSampler
from biomtl.errors import BiomtlError, OutputExistsError
from biomtl.model import MultiTaskModel
from biomtl.tasks import load_dataset_spec
from biomtl.tasks.base import Feature

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
RESULT = "result.json"


class TrainingError(BiomtlError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the config)."""


# ----------------------------------------------------------------------------------------------------------
# Pure helpers


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``None`` means fp32. ``auto`` is bf16 on a GPU that has it, fp32 otherwise."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# Data


@dataclass
class TaskData:
    """One task's examples and features per split."""

    spec: DatasetSpec
    examples: dict[str, list[Example]]
    features: dict[str, list[Feature]]


def load_task_data(
    model: MultiTaskModel,
    config: RunConfig,
    corpora: Path | None,
    prepared: Path | None,
) -> dict[str, TaskData]:
    data = {}
    for name, spec in model.specs.items():
        task = model.tasks[name]
        examples, features = {}, {}
        for split in splits(spec):
            limit = config.max_train_examples if split == "train" else config.max_eval_examples
            key = _cache_key(spec, split, limit, corpora, prepared, model.tokenizer, config.max_length)
            if key not in _FEATURES:
                exs = read_split(spec, split, corpora, prepared, limit=limit)
                _FEATURES[key] = (exs, task.encode(exs, model.tokenizer, config.max_length))
                while len(_FEATURES) > _FEATURES_MAX:
                    _FEATURES.pop(next(iter(_FEATURES)))
            examples[split], features[split] = _FEATURES[key]
        data[name] = TaskData(spec, examples, features)
    return data


# Tokenised features per (task, split, cap, files, tokenizer, max_length), shared by the runs of one process
# (a study trains every task many times); features are never mutated after encoding.
_FEATURES: dict[tuple, tuple[list[Example], list[Feature]]] = {}
_FEATURES_MAX = 64


def _cache_key(spec: DatasetSpec, split: str, limit: int | None, corpora: Path | None, prepared: Path | None,
               tokenizer: Any, max_length: int) -> tuple:
    from biomtl.data.readers import split_path

    try:
        path = split_path(spec, split if split in spec.files else "train", corpora, prepared)
        stamp = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    except (OSError, BiomtlError):
        stamp = ("missing", split)
    vocab = (tokenizer.name_or_path, len(tokenizer), type(tokenizer).__name__)
    return (json.dumps(spec.to_dict(), sort_keys=True, default=str), split, limit, stamp, vocab, max_length)


def iterate_batches(
    features: list[Feature], batch_size: int, task: Any, pad_id: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Evaluation batches sorted by length (least padding); yields the feature indices and the batch."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, task.collate([features[i] for i in idx], pad_id)


@torch.inference_mode()
def predict_features(
    model: MultiTaskModel,
    task_name: str,
    features: list[Feature],
    n_examples: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> list[Any]:
    """Predictions for whole examples from their features (windows merged)."""
    task = model.tasks[task_name]
    preds: list[Any] = [None] * len(features)
    was_training = model.training
    model.eval()
    for idx, batch in iterate_batches(features, batch_size, task, model.tokenizer.pad_token_id):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, dtype):
            logits = model(task_name, batch)
        for i, p in zip(idx, task.decode(logits.float().cpu(), [features[i] for i in idx]), strict=True):
            preds[i] = p
    model.train(was_training)
    return task.merge(preds, features, n_examples)


def score(model: MultiTaskModel, task_name: str, examples: list[Example], predictions: list[Any]) -> dict[str, float]:
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


def evaluate(
    model: MultiTaskModel, data: dict[str, TaskData], split: str, config: RunConfig, device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[Any]]]:
    scores, predictions = {}, {}
    for name, td in data.items():
        if split not in td.examples:
            continue
        preds = predict_features(
            model, name, td.features[split], len(td.examples[split]), config.eval_batch_size, device, dtype
        )
        scores[name] = score(model, name, td.examples[split], preds)
        predictions[name] = preds
    return scores, predictions


def mean_main(scores: dict[str, dict[str, float]], specs: dict[str, DatasetSpec]) -> float:
    return float(np.mean([scores[t][specs[t].main_metric] for t in scores]))


def prefetch(items: list[Any], make: Any, depth: int = 4) -> Iterator[Any]:
    """``map(make, items)`` computed by a background thread up to ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def worker() -> None:
        try:
            for item in items:
                q.put(make(item))
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)
        q.put(done)

    threading.Thread(target=worker, daemon=True).start()
    while (value := q.get()) is not done:
        if isinstance(value, BaseException):
            raise value
        yield value


# ----------------------------------------------------------------------------------------------------------
# Model construction


def build_model(config: RunConfig) -> MultiTaskModel:
    specs = {}
    for entry in config.tasks:
        spec = load_dataset_spec(entry)
        specs[spec.name] = spec
    if not config.init_from:
        return MultiTaskModel.from_encoder(
            config.encoder, specs, dropout=config.dropout, pooling=config.pooling, max_length=config.max_length
        )
    # Fine-tune stage: the encoder (and, with keep_heads, the heads) of an earlier run's model.
    source = MultiTaskModel.load(config.init_from)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(source.encoder.config, key):
            setattr(source.encoder.config, key, config.dropout)
    for module in source.encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = config.dropout
    model = MultiTaskModel(
        source.encoder, source.tokenizer, specs, dropout=config.dropout, pooling=config.pooling,
        max_length=config.max_length, encoder_name=source.encoder_name,
    )
    if config.keep_heads:
        missing = [t for t in specs if t not in source.heads]
        if missing:
            raise BiomtlError(f"keep_heads: {config.init_from} has no head for {', '.join(missing)}")
        for t in specs:
            model.heads[t].load_state_dict(source.heads[t].state_dict())
    return model


def make_optimizer(model: MultiTaskModel, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm weights; heads may have their own LR."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or param.ndim == 1
        lr = config.head_lr if (config.head_lr and name.startswith("heads.")) else config.lr
        groups.setdefault((lr, 0.0 if no_decay else config.weight_decay), []).append(param)
    param_groups = [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    # The fused kernel exists for CUDA and (since torch 2.4) the CPU; it is an order of magnitude faster
    # than the per-tensor loop on the CPU.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups, lr=config.lr, fused=fused)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints (atomic directory swap)


def _atomic_dir(target: Path, write: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_checkpoint(out: Path, model: MultiTaskModel, optimizer: Any, scheduler: Any, state: dict) -> None:
    def write(tmp: Path) -> None:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tmp / "optimizer.pt")
        np_state = np.random.get_state()
        extra = {
            "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        (tmp / "state.json").write_text(json.dumps({**state, **extra}) + "\n")

    _atomic_dir(out / CHECKPOINT, write)


def find_checkpoint(out: Path) -> Path | None:
    for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
        path = out / name
        if (path / "state.json").is_file():
            return path
    return None


def _read_checkpoint_file(file: Path, read: Any) -> Any:
    """``read(file)``, or a one-line :class:`TrainingError` naming the file."""
    try:
        return read(file)
    except pickle.UnpicklingError:
        reason = "not a plain tensor file; refused by torch.load(weights_only=True)"
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise TrainingError(f"{file}: cannot read the checkpoint ({reason}); start again with --overwrite")


def load_checkpoint(path: Path, model: MultiTaskModel, optimizer: Any, scheduler: Any) -> dict:
    weights = _read_checkpoint_file(path / "model.safetensors", load_file)
    blob = _read_checkpoint_file(path / "optimizer.pt", lambda f: torch.load(f, weights_only=True))
    state = _read_checkpoint_file(path / "state.json", lambda f: json.loads(f.read_text()))
    try:
        result = model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    except (RuntimeError, ValueError, KeyError):
        result = None
    if result is None or result.missing_keys or result.unexpected_keys:
        raise TrainingError(f"{path}: checkpoint does not match this run's tasks; start again with --overwrite")
    torch.set_rng_state(blob["rng"]["torch"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    np_rng = state.pop("numpy_rng")
    np.random.set_state((np_rng[0], np.asarray(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    return state


# ----------------------------------------------------------------------------------------------------------
# Output directory


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Returns True when an interrupted run should be resumed from its checkpoint. Changes nothing on disk, so
    a run that fails before training (bad config or data) leaves the output directory as it was."""
    if out.exists() and any(out.iterdir()):
        if resume and find_checkpoint(out) is not None:
            return True
        if resume and (out / RESULT).is_file():
            return True
        if resume and not overwrite:
            raise BiomtlError(f"{out}: --resume given but there is no checkpoint to resume from")
        if not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it or --resume to continue it")
    return False


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """:func:`check_output_dir`, then empty (``overwrite``) and create the directory."""
    resuming = check_output_dir(out, resume, overwrite)
    if not resuming:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    return resuming


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def save_predictions(out: Path, split: str, data: dict[str, TaskData], predictions: dict[str, list[Any]]) -> None:
    (out / "predictions").mkdir(exist_ok=True)
    for name, preds in predictions.items():
        rows = []
        for ex, pred in zip(data[name].examples[split], preds, strict=True):
            row = {"id": ex.id, "gold": ex.label, **pred.to_json()}
            if ex.doc_id is not None:
                row["doc_id"] = ex.doc_id
            rows.append(row)
        write_jsonl(out / "predictions" / f"{name}.{split}.jsonl", rows)


# ----------------------------------------------------------------------------------------------------------
# The loop


def train(
    config: RunConfig,
    corpora: Path | None = None,
    prepared: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Train one run and return its result (also written to ``output_dir/result.json``).

    ``stop_after_steps`` ends the loop early after that many optimizer steps (tests use it to simulate an
    interruption; the run is left resumable).

    >>> train(RunConfig(tasks=["biosses"], output_dir="runs/biosses", epochs=1))  # doctest: +SKIP
    """
    out = Path(config.output_dir)
    resuming = check_output_dir(out, resume, overwrite)
    if resuming and (out / RESULT).is_file():
        log.info("%s: already finished", out)
        return json.loads((out / RESULT).read_text())
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    seed_everything(config.seed)

    model = build_model(config)
    data = load_task_data(model, config, corpora, prepared)
    prepare_output_dir(out, resume, overwrite)  # only now: a run that fails to start leaves nothing behind
    model.to(device)

    sampler = TaskBatchSampler(
        {t: [len(f["input_ids"]) for f in td.features["train"]] for t, td in data.items()},
        config.batch_size,
        config.sampling,
        config.seed,
        config.temperature,
        config.group_by_length,
    )
    steps_per_epoch = sampler.steps_per_epoch()
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup * total_steps)
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup))
    forward = torch.compile(model, dynamic=True) if config.compile else model
    weights = {t: config.loss_weights.get(t, 1.0) for t in data}
    pad_id = model.tokenizer.pad_token_id

    state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "history": []}
    if resuming:
        ckpt = find_checkpoint(out)
        assert ckpt is not None
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        log.info("resuming %s at epoch %d step %d", out, state["epoch"] + 1, state["step_in_epoch"])
        # Half-written temporaries of a run killed while saving (the .old fallback is not one of them).
        if (out / ".best.old").is_dir() and not (out / "best").exists():
            os.replace(out / ".best.old", out / "best")  # killed between the two renames of a best-model swap
        for stale in [*out.glob(f".{CHECKPOINT}.*"), *out.glob(".best.*")]:
            if stale.is_dir() and stale.name != f".{CHECKPOINT}.old" and stale != ckpt:
                shutil.rmtree(stale)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_jsonl(out / "metrics.jsonl", state["history"])

    model.train()
    started = time.time()
    steps_done_now = 0
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        schedule = sampler.epoch(epoch)
        # Per-task loss sums of this epoch; restored on resume so that logged losses match too.
        saved = state.pop("loss", None) or {}
        loss_sum = {t: torch.tensor(saved.get(t, [0.0, 0])[0], device=device) for t in data}
        loss_n = {t: int(saved.get(t, [0.0, 0])[1]) for t in data}
        epoch_started = time.time()  # for train_s: this epoch's training steps only, without evaluation
        bar = tqdm(
            total=len(schedule), initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress, dynamic_ncols=True, leave=False,
        )
        def make_batch(item: tuple[str, list[int]]) -> tuple[str, dict[str, torch.Tensor]]:
            task, idx = item
            batch = model.tasks[task].collate([data[task].features["train"][i] for i in idx], pad_id)
            if device.type == "cuda":
                return task, {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
            return task, batch

        remaining = schedule[state["step_in_epoch"] :]
        # On a GPU, batches are collated and copied in a background thread a few steps ahead.
        batches = prefetch(remaining, make_batch) if device.type == "cuda" else map(make_batch, remaining)
        for task, batch in batches:
            with autocast(device, dtype):
                logits = forward(task, batch)
            loss = model.tasks[task].loss(logits, batch)
            (loss * weights[task]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum[task] += loss.detach()  # stays on the device: no sync per step
            loss_n[task] += 1
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            steps_done_now += 1
            bar.update(1)
            if state["global_step"] % config.log_every == 0:
                losses = _check_losses(loss_sum, loss_n, state["global_step"], out)
                bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                _check_losses(loss_sum, loss_n, state["global_step"], out)
                _check_weights(model, state["global_step"], out)
                state["loss"] = {t: [loss_sum[t].item(), loss_n[t]] for t in data}
                save_checkpoint(out, model, optimizer, scheduler, state)
                state.pop("loss")
            if stop_after_steps is not None and steps_done_now >= stop_after_steps:
                bar.close()
                return {"interrupted": True, "global_step": state["global_step"]}
        bar.close()
        train_loss = _check_losses(loss_sum, loss_n, state["global_step"], out)  # syncs the device
        _check_weights(model, state["global_step"], out)  # before best/ and the checkpoint are written
        train_s = time.time() - epoch_started
        # benchmarks/biomtl_train.py reads record.train_s; kept out of metrics.jsonl, whose rows must not
        # depend on wall time (a resumed run reproduces them exactly).
        log.debug("epoch %d: %.2f s in training steps", epoch + 1, train_s, extra={"train_s": train_s})

        # End of epoch: dev evaluation and model selection (test is never looked at here).
        dev_scores, dev_preds = evaluate(model, data, "dev", config, device, dtype)
        main = mean_main(dev_scores, model.specs)
        row = {
            "epoch": epoch + 1, "global_step": state["global_step"], "split": "dev", "mean_main": main,
            "scores": dev_scores, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
            "elapsed_s": round(time.time() - started, 2),
        }
        state["history"].append(row)
        log.info("epoch %d dev %s", epoch + 1, {t: round(s[model.specs[t].main_metric], 4) for t, s in dev_scores.items()})
        if state["best"] is None or main > state["best"]["mean_main"]:
            state["best"] = {"epoch": epoch + 1, "mean_main": main, "scores": dev_scores}
            model.save(out / "best")
            if config.save_predictions:
                save_predictions(out, "dev", data, dev_preds)
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        write_jsonl(out / "metrics.jsonl", state["history"])
        save_checkpoint(out, model, optimizer, scheduler, state)

    return _finish(out, config, state, data, device, dtype)


def _check_losses(loss_sum: dict, loss_n: dict, step: int, out: Path) -> dict[str, float]:
    """Mean loss per task so far this epoch (one host sync); stops on a non-finite loss."""
    losses = {t: (loss_sum[t] / loss_n[t]).item() for t in loss_sum if loss_n[t]}
    bad = [t for t, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(
            f"loss became {losses[bad[0]]} for task {bad[0]} by step {step}; stopping ({_kept(out)}). "
            "Lower lr or check the data."
        )
    return losses


def _check_weights(model: MultiTaskModel, step: int, out: Path) -> None:
    """Stops before non-finite weights are saved: a step with a finite loss can still break them (an
    overflowing gradient), and the loss shows it only one step later."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):  # one host sync
        return
    name = next(n for n, p in model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all())
    raise TrainingError(
        f"weights became non-finite ({name}) by step {step}; stopping ({_kept(out)}). Lower lr or check the data."
    )


def _kept(out: Path) -> str:
    ckpt = find_checkpoint(out)
    return f"the last good checkpoint is kept in {ckpt}" if ckpt else "no checkpoint was written"


def _finish(out: Path, config: RunConfig, state: dict, data: dict[str, TaskData], device: torch.device, dtype: Any) -> dict:
    """Evaluate test once on the selected checkpoint and write ``result.json``."""
    best = MultiTaskModel.load(out / "best", device=device)
    result: dict[str, Any] = {
        "output_dir": str(out),
        "tasks": list(data),
        "best_epoch": state["best"]["epoch"],
        "dev": state["best"]["scores"],
        "dev_mean_main": state["best"]["mean_main"],
        "main_metric": {t: td.spec.main_metric for t, td in data.items()},
    }
    if config.evaluate_test and all("test" in td.examples for td in data.values()):
        test_scores, test_preds = evaluate(best, data, "test", config, device, dtype)
        result["test"] = test_scores
        result["test_mean_main"] = mean_main(test_scores, best.specs)
        state["history"].append({"epoch": state["best"]["epoch"], "split": "test", "mean_main": result["test_mean_main"], "scores": test_scores})
        write_jsonl(out / "metrics.jsonl", state["history"])
        if config.save_predictions:
            save_predictions(out, "test", data, test_preds)
    tmp = out / f".{RESULT}.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out / RESULT)
    return result
