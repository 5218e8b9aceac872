"""A batch's texts packed into one row without padding, for training batches (``pack: true``) and ``biomtl serve``.

A padded batch computes every row to its longest text: random batches of BC5CDR sentences trained 2.5×
slower than length-grouped ones (BENCHMARKS.md, section 3). Packed, the encoder's dense layers read only the
texts' own tokens (the rows of one matrix product), and each text attends to itself alone at its own positions, so a text's states are the ones
it gets in a padded batch, within rounding (:meth:`PackedEncoder.works` checks an encoder against that)::

    lengths 5, 11, 30 → one row of 46 tokens, positions 0-4, 0-10, 0-29 → (3, 30, H), zero past each text
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import AttentionInterface

log = logging.getLogger(__name__)

TRAIN_ROUND_TO = 64
"""Training fills a packed row up to a multiple of this many tokens: in bf16 a dense layer's product with a
row count it has not seen yet is slower and keeps memory, and a packed training row's count changes at nearly
every step (BENCHMARKS.md, "Single-task run configs")."""

CHECK_TEXTS = ("Naloxone reverses the antihypertensive effect of clonidine in rats.", "Aspirin inhibits COX-2.")
"""Texts of two lengths that the startup checks of an encoder run (:meth:`PackedEncoder.works`,
``worker.thread_invariant``)."""

PACKED_ATTENTION = "biomtl_packed"
"""The name under which :func:`packed_attention` is registered with transformers' attention functions."""


def packed_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
    scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Self-attention over one row of packed texts (``(1, heads, tokens, d)``): each text, from
    ``biomtl_offsets[i]`` to ``biomtl_offsets[i + 1]``, attends to itself alone, at its own length. ``dropout``
    is the attention dropout the encoder asks for (0 when it is not training)."""
    offsets = kwargs["biomtl_offsets"]
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], scale=scaling, dropout_p=dropout
        )
        for a, b in itertools.pairwise(offsets)
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)


class PackedEncoder:
    """Runs a batch's texts packed into one row (module docstring). For encoders whose attention goes through
    transformers' attention functions and that take ``position_ids`` as BERT does; :meth:`works` checks an
    encoder against its own padded batches. Gradients flow through it as through the padded encoder."""

    def __init__(self, encoder: torch.nn.Module, round_to: int = 1) -> None:
        self.encoder = encoder
        # The row is filled up to a multiple of ``round_to`` tokens with a text of its own (token id 0, its
        # states dropped): a few row counts instead of a new one at nearly every step (TRAIN_ROUND_TO).
        self.round_to = round_to

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        lengths = [int(n) for n in mask.sum(1).tolist()]
        total = sum(lengths)
        if fill := -total % self.round_to:
            lengths.append(fill)

        def row(values: torch.Tensor) -> torch.Tensor:
            texts = values[mask]
            return (torch.cat([texts, texts.new_zeros(fill)]) if fill else texts).unsqueeze(0)

        inputs = {
            "input_ids": row(batch["input_ids"]),
            "position_ids": torch.cat([torch.arange(n, device=mask.device) for n in lengths]).unsqueeze(0),
        }
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = row(batch["token_type_ids"])
        config: Any = self.encoder.config
        before = config._attn_implementation
        config._attn_implementation = PACKED_ATTENTION
        try:
            states = self.encoder(**inputs, biomtl_offsets=[0, *itertools.accumulate(lengths)]).last_hidden_state[0]
        finally:
            config._attn_implementation = before
        out = states.new_zeros(*mask.shape, states.shape[-1])
        out[mask] = states[:total]
        return out

    def works(self, encode: Callable[[dict[str, torch.Tensor]], torch.Tensor], tokenizer: Any, device: torch.device) -> bool:
        """Whether packed texts get the states that ``encode`` gives them in a padded batch (within rounding),
        for single texts and pairs; ``False`` also where the encoder cannot run packed at all. The encoder is
        checked without dropout and left in the mode it was in."""
        firsts = list(CHECK_TEXTS)
        seconds = ["It is a drug.", "Cyclooxygenase 2 makes prostaglandins in inflamed tissue."]
        training = self.encoder.training
        self.encoder.eval()
        try:
            for pair in (None, seconds):
                batch = {k: v.to(device) for k, v in tokenizer(firsts, pair, padding=True, return_tensors="pt").items()}
                mask = batch["attention_mask"].bool()
                with torch.inference_mode():
                    try:
                        packed = self(batch)
                    except Exception as e:  # noqa: BLE001 - any failure means: not this encoder
                        log.info("the encoder cannot run packed texts (%s: %s)", type(e).__name__, e)
                        return False
                    padded = encode(batch)
                if not torch.allclose(packed[mask].float(), padded[mask].float(), atol=1e-3, rtol=1e-3):
                    log.info("packed texts do not get the encoder's own states")
                    return False
            return True
        finally:
            self.encoder.train(training)
