"""The one training loop. Single-task, multi-task and fine-tune runs are the same loop with other configs.

Per epoch: the sampler yields task-homogeneous batches; each step trains the shared encoder and that task's
head on one batch (:func:`train_step`). Every task is evaluated on dev before the first step (epoch 0: the
untrained model is a candidate too) and after each epoch; a task type with a decision rule (multilabel
thresholds) chooses it on that dev evaluation. The state with the best mean of the tasks' main dev metrics is
kept, so the selected model is never worse on dev than the starting point. Test is evaluated once, on that
state, after training.

Outputs in ``output_dir`` are listed in :mod:`biomtl.rundir`; ``checkpoint/`` (for ``--resume``) in
:mod:`biomtl.checkpoint`.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from biomtl import distributed
from biomtl.anchor import GeometryAnchor
from biomtl.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from biomtl.config import DatasetSpec, RunConfig
from biomtl.data.cache import FEATURES, FeatureCache, split_key
from biomtl.data.examples import Example
from biomtl.data.readers import read_split, splits
from biomtl.data.sampler import TaskBatchSampler
from biomtl.datadirs import DataDirs
from biomtl.errors import ConfigError, TrainingError
from biomtl.evaluate import score
from biomtl.inference import autocast_dtype, device_compute, predict_features, resolve_device
from biomtl.model import MultiTaskModel, build_model
from biomtl.rundir import (
    BEST,
    check_output_dir,
    check_resumed_config,
    prepare_output_dir,
    read_result,
    recover_interrupted_saves,
    save_predictions,
    write_config,
    write_metrics,
    write_result,
)
from biomtl.tasks.base import Feature

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Pure helpers


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prefetch(items: list[Any], make: Callable[[Any], Any], depth: int = 4) -> Iterator[Any]:
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
# Data and evaluation


@dataclass
class TaskData:
    """One task's examples and features per split."""

    spec: DatasetSpec
    examples: dict[str, list[Example]]
    features: dict[str, list[Feature]]


def load_task_data(model: MultiTaskModel, config: RunConfig, cache: FeatureCache = FEATURES) -> dict[str, TaskData]:
    """Every split of every task, read from the files its spec resolved and tokenised (or taken from ``cache``,
    shared by a study's runs)."""
    data = {}
    for name, spec in model.specs.items():
        task = model.tasks[name]
        examples, features = {}, {}
        for split in splits(spec):
            limit = {"train": config.max_train_examples, "test": config.max_eval_examples if config.cap_test else None}.get(
                split, config.max_eval_examples)
            # The model's settings (e.g. a bi-encoder's separate texts) also decide how a task encodes.
            key = (*split_key(spec, split, limit, model.tokenizer, config.max_length), task.settings)

            def read_and_encode(spec: DatasetSpec = spec, split: str = split, limit: int | None = limit,
                                task: Any = task) -> tuple[list[Example], list[Feature]]:
                exs = read_split(spec, split, limit=limit)
                return exs, task.encode(exs, model.tokenizer, config.max_length)

            examples[split], features[split] = cache.get(key, read_and_encode)
        data[name] = TaskData(spec, examples, features)
    return data


def evaluate(
    model: MultiTaskModel, data: dict[str, TaskData], split: str, config: RunConfig, device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[Any]]]:
    """Every task's scores and predictions on ``split``. On dev, a task type with a decision rule (multilabel
    thresholds) first chooses it on these dev predictions; on test the rule in the model is used as it is."""
    scores, predictions = {}, {}
    for name, td in data.items():
        if split not in td.examples:
            continue
        preds = predict_features(
            model, name, td.features[split], len(td.examples[split]), config.eval_batch_size, device, dtype
        )
        if split == "dev":
            preds = list(model.tasks[name].fit_decision(td.examples[split], preds))
        scores[name] = score(model, name, td.examples[split], preds)
        predictions[name] = preds
    return scores, predictions


def mean_main(scores: dict[str, dict[str, float]], specs: dict[str, DatasetSpec]) -> float:
    return float(np.mean([scores[t][specs[t].main_metric] for t in scores]))


def examples_of(data: dict[str, TaskData], split: str) -> dict[str, list[Example]]:
    return {name: td.examples[split] for name, td in data.items() if split in td.examples}


# ----------------------------------------------------------------------------------------------------------
# One step, and the state of a run


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


def make_sampler(data: dict[str, TaskData], config: RunConfig, world_size: int = 1) -> TaskBatchSampler:
    """Task-homogeneous batches over every task's train features (:mod:`biomtl.data.sampler`); under DDP
    a global batch of ``world_size`` × ``batch_size``, which the ranks share (:mod:`biomtl.distributed`)."""
    lengths = {t: [len(f["input_ids"]) for f in td.features["train"]] for t, td in data.items()}
    return TaskBatchSampler(
        lengths, config.batch_size * world_size, config.sampling, config.seed, config.temperature, config.group_by_length
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`lr_factor` per step; ``warmup`` is a fraction of ``total_steps``."""
    warmup_steps = int(warmup * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))


def train_step(
    model: MultiTaskModel,
    task: str,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    grad_clip: float,
    dtype: torch.dtype | None = None,
    loss_weight: float = 1.0,
    forward: Callable[..., Any] | None = None,
    anchor: GeometryAnchor | None = None,
) -> torch.Tensor:
    """One optimizer step on one task's batch (already on the model's device): forward under autocast in
    ``dtype`` and the device's attention kernels (:func:`biomtl.inference.device_compute`), loss ×
    ``loss_weight``, backward, gradient clipping, optimizer and LR-schedule step.

    ``forward`` is the model's ``torch.compile`` wrapper when there is one; ``anchor`` adds the geometry term
    (:mod:`biomtl.anchor`), weighted like the task's loss. Returns the unweighted loss of the task alone,
    detached and still on the device (reading it would make the host wait for the step).
    """
    run = model if forward is None else forward
    with device_compute(batch["input_ids"].device, dtype):
        if anchor is None:
            logits = run(task, batch)
        else:  # the step's index picks the anchor's reference rows, the same after a resume
            logits, geometry = anchor.forward(model, run, task, batch, scheduler.last_epoch)
    loss = model.tasks[task].loss(logits, batch)
    total = loss if anchor is None else loss + anchor.weight * geometry
    (total * loss_weight).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@dataclass
class TrainState:
    """Where a run is. Saved with every checkpoint (``state.json``); a resumed run goes on from it."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    global_step: int = 0
    best: dict[str, Any] | None = None  # the best dev epoch so far: epoch, mean_main, scores
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of metrics.jsonl
    # This epoch's training loss per task: sums stay on the device (no host sync per step).
    loss_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_n: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, tasks: list[str], device: torch.device) -> TrainState:
        state = cls()
        state.reset_losses(tasks, device)
        return state

    def reset_losses(self, tasks: list[str], device: torch.device, saved: dict[str, list] | None = None) -> None:
        saved = saved or {}
        self.loss_sum = {t: torch.tensor(saved.get(t, [0.0, 0])[0], device=device) for t in tasks}
        self.loss_n = {t: int(saved.get(t, [0.0, 0])[1]) for t in tasks}

    def record_step(self, task: str, loss: torch.Tensor) -> None:
        self.loss_sum[task] += loss
        self.loss_n[task] += 1
        self.step_in_epoch += 1
        self.global_step += 1

    def mean_losses(self) -> dict[str, float]:
        """Mean loss per task so far this epoch (one host sync)."""
        return {t: (self.loss_sum[t] / self.loss_n[t]).item() for t in self.loss_sum if self.loss_n[t]}

    def end_epoch(self, device: torch.device) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.reset_losses(list(self.loss_sum), device)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best": self.best, "history": self.history,
            "loss": {t: [self.loss_sum[t].item(), self.loss_n[t]] for t in self.loss_sum},
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any], tasks: list[str], device: torch.device) -> TrainState:
        state = cls(saved["epoch"], saved["step_in_epoch"], saved["global_step"], saved["best"], saved["history"])
        state.reset_losses(tasks, device, saved.get("loss"))
        return state


# ----------------------------------------------------------------------------------------------------------
# The loop


def train(
    config: RunConfig,
    data_dirs: DataDirs | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one run and return its result (also written to ``output_dir/result.json``). ``data_dirs`` says where the
    tasks' dataset configs and files are (default: the environment's directories).

    >>> train(RunConfig(tasks=["biosses"], output_dir="runs/biosses", epochs=1))  # doctest: +SKIP
    """
    if not config.output_dir:
        raise ConfigError("output_dir: give it in the run config or as --output-dir")
    out = Path(config.output_dir)
    ranks = distributed.setup(config.device)  # one process unless started by torchrun
    resuming = distributed.main_first(lambda: check_output_dir(out, resume, overwrite))
    if resuming:
        distributed.main_first(lambda: check_resumed_config(out, config))
    if resuming and (finished := read_result(out)) is not None:
        log.info("%s: already finished", out)
        return finished
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    seed_everything(config.seed)

    model = build_model(config, data_dirs)
    data = load_task_data(model, config)
    model.to(device)
    anchor = GeometryAnchor.for_run(model, config, examples_of(data, "train"))  # may refuse the run; before any resume
    distributed.main_first(lambda: prepare_output_dir(out, resume, overwrite))  # only now: a run that fails to start leaves nothing behind

    sampler = make_sampler(data, config, ranks.world_size)
    optimizer = make_optimizer(model, config, device)
    scheduler = make_scheduler(optimizer, sampler.steps_per_epoch() * config.epochs, config.warmup)
    wrapped = distributed.wrap(model, device)
    forward = torch.compile(wrapped, dynamic=True) if config.compile else wrapped
    state = _resume(out, model, optimizer, scheduler, device) if resuming else TrainState.start(list(data), device)
    write_config(out, config)
    write_metrics(out, state.history)

    started = time.time()
    if state.best is None:  # epoch 0: the model before any step is the first candidate (in every checkpoint's state)
        _select_on_dev(model, data, config, state, out, device, dtype, train_loss={}, lr=float(scheduler.get_last_lr()[0]),
                       elapsed_s=0.0)
        write_metrics(out, state.history)
    model.train()
    while state.epoch < config.epochs:
        schedule = sampler.epoch(state.epoch)
        epoch_started = time.time()  # for train_s: this epoch's training steps only, without evaluation
        bar = tqdm(total=len(schedule), initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{config.epochs}",
                   disable=not progress or not ranks.is_main, dynamic_ncols=True, leave=False)
        for task, batch, share in _batches(model, data, schedule[state.step_in_epoch :], device, ranks):
            loss = train_step(model, task, batch, optimizer, scheduler, grad_clip=config.grad_clip, dtype=dtype, anchor=anchor,
                              loss_weight=config.loss_weights.get(task, 1.0) * share.weight, forward=forward)
            state.record_step(task, distributed.global_loss(loss, share))
            bar.update(1)
            if state.global_step % config.log_every == 0:
                bar.set_postfix({t: f"{v:.3f}" for t, v in _check_losses(state, out).items()})
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                _check_losses(state, out)
                _check_weights(model, state.global_step, out)
                save_checkpoint(out, model, optimizer, scheduler, state.to_json())
        bar.close()
        train_loss = _check_losses(state, out)  # syncs the device
        _check_weights(model, state.global_step, out)  # before best/ and the checkpoint are written
        train_s = time.time() - epoch_started
        # benchmarks/biomtl_train.py reads record.train_s; kept out of metrics.jsonl, whose rows must not
        # depend on wall time (a resumed run reproduces them exactly).
        log.debug("epoch %d: %.2f s in training steps", state.epoch + 1, train_s, extra={"train_s": train_s})

        state.end_epoch(device)
        _select_on_dev(model, data, config, state, out, device, dtype, train_loss=train_loss,
                       lr=float(scheduler.get_last_lr()[0]), elapsed_s=time.time() - started)
        write_metrics(out, state.history)
        save_checkpoint(out, model, optimizer, scheduler, state.to_json())

    return _finish(out, config, state, data, device, dtype)


def _select_on_dev(
    model: MultiTaskModel, data: dict[str, TaskData], config: RunConfig, state: TrainState, out: Path,
    device: torch.device, dtype: torch.dtype | None, *, train_loss: dict[str, float], lr: float, elapsed_s: float,
) -> None:
    """Model selection after ``state.epoch`` epochs (0: before the first step): dev scores go to the history,
    and the model replaces ``best/`` when its mean main dev metric beats every earlier one. Test is never
    looked at here."""
    dev_scores, dev_preds = evaluate(model, data, "dev", config, device, dtype)
    main = mean_main(dev_scores, model.specs)
    state.history.append({
        "epoch": state.epoch, "global_step": state.global_step, "split": "dev", "mean_main": main,
        "scores": dev_scores, "train_loss": train_loss, "lr": lr, "elapsed_s": round(elapsed_s, 2),
    })
    log.info("epoch %d dev %s", state.epoch, {t: round(s[model.specs[t].main_metric], 4) for t, s in dev_scores.items()})
    if state.best is None or main > state.best["mean_main"]:
        state.best = {"epoch": state.epoch, "mean_main": main, "scores": dev_scores}
        if distributed.is_main():
            model.save(out / BEST)  # with the decision rules just chosen on dev
        if config.save_predictions:
            save_predictions(out, "dev", examples_of(data, "dev"), dev_preds)


def _resume(out: Path, model: MultiTaskModel, optimizer: Any, scheduler: Any, device: torch.device) -> TrainState:
    """The state of an interrupted run, with weights, optimizer, scheduler and RNGs restored."""
    distributed.main_first(lambda: recover_interrupted_saves(out))
    ckpt = find_checkpoint(out)
    assert ckpt is not None  # check_output_dir found it
    state = TrainState.from_json(load_checkpoint(ckpt, model, optimizer, scheduler), list(model.specs), device)
    log.info("resuming %s at epoch %d step %d", out, state.epoch + 1, state.step_in_epoch)
    return state


def _batches(
    model: MultiTaskModel, data: dict[str, TaskData], schedule: list[tuple[str, list[int]]], device: torch.device,
    ranks: distributed.Ranks = distributed.ONE,
) -> Iterator[tuple[str, Batch, distributed.Share]]:
    """The collated batches of ``schedule``, on ``device``, each with this rank's share of it (the whole
    batch outside DDP). On a GPU they are collated and copied (from pinned memory) by a background thread a
    few steps ahead."""
    pad_id = model.tokenizer.pad_token_id

    def make_batch(item: tuple[str, list[int]]) -> tuple[str, Batch, distributed.Share]:
        task, idx = item
        batch = model.tasks[task].collate([data[task].features["train"][i] for i in idx], pad_id)
        batch, share = distributed.shard_batch(batch, model.tasks[task].loss_units, ranks)
        if device.type == "cuda":
            return task, {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}, share
        return task, batch, share

    return prefetch(schedule, make_batch) if device.type == "cuda" else map(make_batch, schedule)


def _check_losses(state: TrainState, out: Path) -> dict[str, float]:
    """:meth:`TrainState.mean_losses`; stops on a non-finite loss."""
    losses = state.mean_losses()
    bad = [t for t, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(
            f"loss became {losses[bad[0]]} for task {bad[0]} by step {state.global_step}; stopping ({_kept(out)}). "
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


def _finish(
    out: Path, config: RunConfig, state: TrainState, data: dict[str, TaskData], device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, Any]:
    """Evaluate test once on the selected checkpoint and write ``result.json``."""
    distributed.barrier()  # under DDP: rank 0 has written best/
    assert state.best is not None  # every epoch sets or keeps it
    best = MultiTaskModel.load(out / BEST, device=device)
    result: dict[str, Any] = {
        "output_dir": str(out),
        "tasks": list(data),
        "best_epoch": state.best["epoch"],
        "dev": state.best["scores"],
        "dev_mean_main": state.best["mean_main"],
        "main_metric": {t: td.spec.main_metric for t, td in data.items()},
    }
    if config.evaluate_test and all("test" in td.examples for td in data.values()):
        test_scores, test_preds = evaluate(best, data, "test", config, device, dtype)
        result["test"] = test_scores
        result["test_mean_main"] = mean_main(test_scores, best.specs)
        state.history.append({"epoch": state.best["epoch"], "split": "test", "mean_main": result["test_mean_main"], "scores": test_scores})
        write_metrics(out, state.history)
        if config.save_predictions:
            save_predictions(out, "test", examples_of(data, "test"), test_preds)
    write_result(out, result)
    return result
