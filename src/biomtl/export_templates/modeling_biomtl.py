"""A biomtl sentence head as a Hugging Face model: an encoder, then dropout + linear on the [CLS] state or on
the mean of the token states, with no pooler in between.

``biomtl export --format hf`` ships this file beside the weights of every sentence-level task (relation /
classification, multilabel, cross-encoder regression); ``config.json`` points to it (``auto_map``), so plain
``transformers`` loads the folder with ``trust_remote_code=True``::

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained("chemprot", trust_remote_code=True)

Custom code is needed because every stock ``…ForSequenceClassification`` of a BERT-family encoder puts a pooler
(dense + tanh) or a dense layer between the encoder and the classifier, which biomtl's heads do not have. The
file imports only torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING = ("cls", "mean")


def _encoder(encoder_config: Any) -> nn.Module:
    """The encoder without a pooler (BERT-family encoders build one by default; the heads do not use it)."""
    try:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(encoder_config)


def _sentence_vector(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) → (B, H): the mean of the real tokens' states (padding excluded), or the [CLS] state."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden[:, 0]


class BiomtlSequenceClassifierConfig(PretrainedConfig):
    """The encoder's own config (``encoder_config``, any ``AutoModel`` type), the sentence vector (``pooling``:
    ``cls`` or ``mean``), the head's dropout; for multilabel tasks the decision threshold of each label
    (``thresholds``, chosen on dev by biomtl: a label is predicted when its sigmoid reaches it), for relation
    tasks the argument masks their inputs carry (``entity_markers``, alternative combinations)."""

    model_type = "biomtl-sequence-classifier"

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict[str, Any] | None = None,
        pooling: str = "cls",
        classifier_dropout: float = 0.1,
        thresholds: dict[str, float] | None = None,
        entity_markers: list[list[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder_config, dict):  # as read from config.json
            encoder_config = AutoConfig.for_model(**encoder_config)
        if pooling not in POOLING:
            raise ValueError(f"pooling: expected one of {', '.join(POOLING)}, got {pooling!r}")
        self.encoder_config = encoder_config
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.thresholds = thresholds
        self.entity_markers = entity_markers
        super().__init__(**kwargs)


class BiomtlForSequenceClassification(PreTrainedModel):
    """``encoder → pooled sentence vector (B, H) → dropout → linear → logits (B, num_labels)``; with ``labels``
    also the loss of ``config.problem_type`` (cross-entropy, binary cross-entropy per label, or mean squared
    error)."""

    config_class = BiomtlSequenceClassifierConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: BiomtlSequenceClassifierConfig) -> None:
        super().__init__(config)
        encoder_config: Any = config.encoder_config
        self.encoder = _encoder(encoder_config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, int(config.num_labels or 0))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("give input_ids (and attention_mask)")
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        kwargs.pop("return_dict", None)
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state  # (B, T, H)
        pooled = _sentence_vector(hidden, attention_mask, self.config.pooling)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
            elif self.config.problem_type == "multi_label_classification":
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float().view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


class BiomtlForSpanRelation(PreTrainedModel):
    """A biomtl ``span_relation`` head: ``encoder → [sentence vector; a; b; a * b] → dropout → dense → tanh →
    dropout → linear → logits (B, num_labels)``, where ``a`` and ``b`` are the means of each argument's sub-word
    states, given by ``spans`` ``(B, 2, 2)``: per row the ``[start, end)`` sub-word positions of its two
    arguments (one candidate pair per row). Loaded with ``AutoModel.from_pretrained(folder,
    trust_remote_code=True)``; with ``labels`` also the cross-entropy loss."""

    config_class = BiomtlSequenceClassifierConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: BiomtlSequenceClassifierConfig) -> None:
        super().__init__(config)
        encoder_config: Any = config.encoder_config
        self.encoder = _encoder(encoder_config)
        hidden = encoder_config.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.dense = nn.Linear(4 * hidden, hidden)
        self.classifier = nn.Linear(hidden, int(config.num_labels or 0))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        spans: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if input_ids is None or spans is None:
            raise ValueError("give input_ids, attention_mask and spans (B, 2, 2)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        kwargs.pop("return_dict", None)
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state  # (B, T, H)
        sentence = _sentence_vector(hidden, attention_mask, self.config.pooling)
        position = torch.arange(hidden.shape[1], device=hidden.device)
        inside = ((position >= spans[..., :1]) & (position < spans[..., 1:])).to(hidden.dtype)  # (B, 2, T)
        pooled = torch.einsum("bat,bth->bah", inside, hidden) / inside.sum(-1, keepdim=True).clamp(min=1.0)
        a, b = pooled[:, 0], pooled[:, 1]
        features = torch.cat([sentence, a, b, a * b], dim=-1)
        logits = self.classifier(self.dropout(torch.tanh(self.dense(self.dropout(features)))))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )
