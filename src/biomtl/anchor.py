"""Keeping the sentence-embedding geometry while other tasks train the encoder (``geometry_anchor``).

A similarity bi-encoder scores a pair by the cosine of the two texts' mean-pooled embeddings, so its score is
the shared encoder's geometry itself, and every other task's training reshapes that geometry: on the
``cpu-b16`` study one NER task alone takes the embedded encoder's BIOSSES test Pearson from 84.7 to 55.7
(BENCHMARKS.md, "Why BIOSSES loses in cpu-b16"). With ``geometry_anchor: w`` every training step adds
``w`` × the mean squared difference between the batch's pairwise cosines under the model's encoder and under
a frozen copy of the encoder the run started from. The space may move and turn and serve the other heads;
which texts are close to which is what the term holds.

``anchor_measure: embeddings`` holds each text's embedding instead: ``w`` × the mean of 1 − the cosine of the
model's and the frozen encoder's embedding of the same text (feature distillation, as in Learning without
Forgetting). It is stricter: every pair's cosine is kept, the close pairs a similarity score ranks as much as
the many unrelated pairs of a batch, which dominate the pairwise measure; the space may not turn.

``anchor_texts: TASK`` measures on that task's training texts instead of on each batch: at step k the anchor
reads the next ``batch_size`` of them (in the split's order, from row k × batch_size, wrapping round), under
the model's encoder, against their embeddings under the starting encoder, computed once. The other tasks'
own texts are then free to move; what is held is the space of the texts the similarity task scores. This
costs one more forward and backward pass of ``batch_size`` texts per step, and needs no frozen copy.

``anchor_to: encoder`` holds a fine-tune (a run with ``init_from``, such as an MTL-FT run) to the run's
``encoder`` as it was pretrained, instead of to the model it starts from: what earlier training moved away
from, the term pulls back while the task trains. The two must read the same tokens (the same vocabulary and
width); for a run without ``init_from`` both are the same encoder.

The anchor trains in one process: under torchrun each rank would measure its own rows only, weighted as its
share of the task's loss, which is not the one-process term, so such a run is refused before it writes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biomtl.data.examples import Example
from biomtl.errors import ConfigError
from biomtl.tasks.base import mean_pool

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def geometry_loss(pooled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the off-diagonal pairwise cosines of ``pooled`` and ``target`` (both (N, H));
    0 for fewer than two rows, and for any rotation or scaling of ``target``."""
    n = pooled.shape[0]
    if n < 2:
        return pooled.sum() * 0.0  # keeps the graph (and the device) of a real loss
    a, b = F.normalize(pooled.float(), dim=-1), F.normalize(target.float(), dim=-1)
    off = ~torch.eye(n, dtype=torch.bool, device=pooled.device)
    return ((a @ a.T - b @ b.T)[off] ** 2).mean()


def embedding_loss(pooled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 1 − the cosine of each row of ``pooled`` with the same row of ``target`` (both (N, H)):
    0 for the same directions, whatever the lengths; not for a rotation."""
    return (1.0 - F.cosine_similarity(pooled.float(), target.float(), dim=-1)).mean()


def mean_pooled(encoder: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean-pooled last states of ``encoder`` (a Hugging Face encoder) on tokenised ``inputs``: (N, H)."""
    hidden = encoder(**{k: inputs[k] for k in ENCODER_INPUTS if k in inputs}).last_hidden_state
    return mean_pool(hidden, inputs["attention_mask"])


class GeometryAnchor:
    """The anchor term of a run: its weight, its measure (the run key ``anchor_measure``, one of
    :data:`biomtl.config.ANCHOR_MEASURES`) and what it compares with: ``held``, the encoder to hold to (a
    frozen copy of the run's start, or the pretrained encoder), read on each batch, or ``held``'s embeddings of
    fixed reference texts (``anchor_texts``), computed now. With no reference texts ``held`` becomes the
    anchor's own and is frozen here."""

    def __init__(self, held: nn.Module, weight: float, measure: str = "cosines",
                 reference: dict[str, torch.Tensor] | None = None, rows: int = 16) -> None:
        self.weight = weight
        self.measure = MEASURES[measure]
        self.reference, self.rows = reference, rows
        if reference is None:
            self.teacher = held.eval().requires_grad_(False)
        else:
            self.device = next(held.parameters()).device  # the texts stay on the host; a step's slice moves
            self.targets = _pooled_in_chunks(held, reference, rows, self.device)

    @classmethod
    def for_run(cls, model: Any, config: Any, train: dict[str, list[Example]]) -> GeometryAnchor | None:
        """The anchor a :class:`~biomtl.config.RunConfig` asks for, on ``model`` (a MultiTaskModel, on its
        device) as it is now; ``train``: each task's training examples, for ``anchor_texts``. ``None`` for
        ``geometry_anchor: 0`` (no term, no frozen copy)."""
        if not config.geometry_anchor > 0:
            return None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # each rank would measure its own rows only (and for anchor_texts run a pass DDP does not see),
            # weighted like its share of the task's loss: not the one-process run's term
            raise ConfigError("geometry_anchor: not supported under torchrun (the anchor's measure is not split "
                              "across processes as the task's loss is); train in one process")
        device = next(model.encoder.parameters()).device
        if config.anchor_to == "encoder" and config.init_from:
            held = _pretrained(model, config).to(device)
        else:  # the start: a frozen copy, or for reference texts the encoder itself (their targets are taken now)
            held = model.encoder if config.anchor_texts else copy.deepcopy(model.encoder)
        if not config.anchor_texts:
            return cls(held, config.geometry_anchor, config.anchor_measure)
        name = list(model.specs)[config.tasks.index(config.anchor_texts)]  # a task given by path: its spec's name
        texts = [t for e in train[name] for t in _texts(e)]
        reference = model.tokenizer(texts, padding=True, truncation=True, max_length=config.max_length,
                                    return_tensors="pt")
        return cls(held, config.geometry_anchor, config.anchor_measure, dict(reference), config.batch_size)

    def loss(self, pooled: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The measure of the model's mean-pooled embeddings of ``inputs`` (the rows the encoder read) against
        the frozen encoder's."""
        with torch.no_grad():
            target = mean_pooled(self.teacher, inputs)
        return self.measure(pooled, target)

    def forward(self, model: Any, run: Callable[..., Any], task: str, batch: dict[str, Any],
                step: int) -> tuple[Any, torch.Tensor]:
        """The task's logits from ``run`` (the model, or its wrapper) on ``batch`` and the anchor's measure at
        optimizer step ``step``: on the batch's own texts, or on the reference texts' rows for that step."""
        if self.reference is None:
            logits, pooled, inputs = run(task, batch, pooled=True)
            return logits, self.loss(pooled, inputs)
        n = self.targets.shape[0]
        rows = torch.arange(step * self.rows, (step + 1) * self.rows) % n
        width = int(self.reference["attention_mask"][rows].sum(1).max())  # the slice's longest text, not the set's
        inputs = {k: v[rows, :width].to(self.device) for k, v in self.reference.items()}
        target = self.targets[rows.to(self.device)]
        return run(task, batch), self.measure(mean_pooled(model.encoder, inputs), target)


def _pretrained(model: Any, config: Any) -> nn.Module:
    """``anchor_to: encoder`` in a fine-tune: the run's ``encoder`` as pretrained, which must read the same
    tokens as ``model``'s (the encoder ``init_from``'s model was trained from)."""
    from biomtl.model import load_encoder

    pretrained, _ = load_encoder(config.encoder)
    ours, theirs = model.encoder.config, pretrained.config
    for key in ("vocab_size", "hidden_size"):
        if getattr(ours, key) != getattr(theirs, key):
            raise ConfigError(
                f"anchor_to: encoder: the encoder '{config.encoder or 'default'}' has {key} {getattr(theirs, key)}, "
                f"the model of init_from ({config.init_from}) {getattr(ours, key)}; set encoder to the one it was "
                "trained from")
    return pretrained


def _texts(example: Example) -> list[str]:
    """The texts of one example: its one or two texts, or its tokens joined."""
    if example.text is None and example.tokens is not None:
        return [" ".join(example.tokens)]
    return [t for t in (example.text, example.text_b) if t is not None]


def _pooled_in_chunks(encoder: nn.Module, inputs: dict[str, torch.Tensor], rows: int,
                      device: torch.device) -> torch.Tensor:
    """:func:`mean_pooled` of every row of ``inputs`` (in eval mode, without gradients), ``rows`` at a time,
    each chunk moved to ``device`` (the encoder's)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        n = inputs["input_ids"].shape[0]
        out = torch.cat([mean_pooled(encoder, {k: v[i : i + rows].to(device) for k, v in inputs.items()})
                         for i in range(0, n, rows)])
    encoder.train(was_training)
    return out.float()


MEASURES = {"cosines": geometry_loss, "embeddings": embedding_loss}  # keys: biomtl.config.ANCHOR_MEASURES
