"""Raw text (or documents) → typed predictions with character offsets.

``Predictor.load(model_dir)`` needs only the saved model directory. Each task's type reads its inputs and
writes its outputs (``read_input``/``output_row``); for the built-in types:

* tagging: raw text of any length → ``entities`` with ``start``/``end`` offsets into that text. The text is
  split into sentences first (:func:`sentence_pieces`), so a sentence reads the same inside a document as on
  its own; only a sentence longer than the encoder window is cut into windows;
* classification: a text (or ``text``/``text_b`` pair). For relation tasks the text carries the entity
  masks (``@CHEMICAL$ ... @GENE$``), or plain text plus two ``entities`` (offsets and type) that the
  predictor masks itself → ``label`` with every label's probability;
* regression: a ``text``/``text_b`` pair → ``score``;
* multilabel: a text → ``labels`` with probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from biomtl.data.examples import Example
from biomtl.errors import BiomtlError
from biomtl.inference import autocast_dtype, device_compute, predict_features
from biomtl.model import MultiTaskModel
from biomtl.sentences import sentence_spans
from biomtl.tasks.base import Feature, pad_inputs
from biomtl.tasks.tagging import window_features, word_pieces, words_with_offsets


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The predictor's ``--precision`` (auto, fp32 or bf16) as :func:`biomtl.inference.autocast_dtype` resolves
    it; ``auto`` is bf16 where the hardware computes it natively (2x faster on a 2-core AVX512-BF16 CPU with
    identical BC5CDR entities; BENCHMARKS.md), fp32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise BiomtlError(f"--precision: unknown value '{precision}'; choose auto, fp32 or bf16")
    return autocast_dtype(precision, device)


def check_unicode(item: Any, where: str) -> None:
    """Refuse, in one line, a string (anywhere in ``item``) that JSON allows but that is not text: an unpaired
    surrogate such as ``"\\ud800"``. No tokenizer reads it and no UTF-8 output file can hold it."""
    stack = [item]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise BiomtlError(
                    f"{where}: unpaired surrogate U+{ord(value[e.start]):04X} at character {e.start + 1} of a "
                    "string (half of a UTF-16 pair, not text)"
                ) from None


def sentence_pieces(text: str) -> list[tuple[int, str]]:
    """``text`` cut where each of its sentences starts (:func:`biomtl.sentences.sentence_spans`, the splitter
    of the corpora), as ``(start, piece)``: the pieces cover every character, so no word is lost, and a text
    without sentences is one piece.

    >>> sentence_pieces("Aspirin helps.  It is cheap.")
    [(0, 'Aspirin helps.  '), (16, 'It is cheap.')]
    """
    starts = [s for s, _ in sentence_spans(text)][1:]
    return [(s, text[s:e]) for s, e in zip([0, *starts], [*starts, len(text)], strict=True)]


@dataclass
class WindowStates:
    """What one pass of :meth:`Predictor.annotate_groups` read, kept for the span relation heads that score
    pairs of mentions from the same encoding: each sentence piece ``(text, start, piece)``, its window
    features and their encoder states ``(length, H)``."""

    pieces: list[tuple[int, int, str]] = field(default_factory=list)
    features: list[Feature] = field(default_factory=list)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    _by_text: dict[int, tuple[int, list[int]]] | None = field(default=None, repr=False)

    def windows_of(self, text: int) -> tuple[str, list[tuple[int, Feature]]] | None:
        """The windows (feature index, feature) of ``text`` when it was read as one sentence piece."""
        if self._by_text is None:
            pieces: dict[int, list[int]] = {}
            for k, (i, _, _) in enumerate(self.pieces):
                pieces.setdefault(i, []).append(k)
            windows: dict[int, list[int]] = {}
            for f, feature in enumerate(self.features):
                windows.setdefault(feature["example_index"], []).append(f)
            self._by_text = {i: (ks[0], windows.get(ks[0], [])) for i, ks in pieces.items() if len(ks) == 1}
        found = self._by_text.get(text)
        if found is None:
            return None
        k, fs = found
        return self.pieces[k][2], [(f, self.features[f]) for f in fs]


class Predictor:
    """Predictions from a saved model directory.

    >>> p = Predictor.load("runs/bc5cdr-chemical/best")  # doctest: +SKIP
    >>> p.predict("bc5cdr-chemical", ["Naloxone reverses the effect of clonidine."])[0]["entities"][0]  # doctest: +SKIP
    {'start': 0, 'end': 8, 'text': 'Naloxone', 'type': 'Chemical', 'score': 0.99}
    """

    def __init__(
        self, model: MultiTaskModel, device: str | torch.device = "cpu", batch_size: int = 64, precision: str = "auto"
    ) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dtype = inference_dtype(precision, self.device)

    @classmethod
    def load(
        cls, directory: str | Path, device: str = "cpu", batch_size: int = 64, precision: str = "auto"
    ) -> Predictor:
        return cls(MultiTaskModel.load(directory, device=device), device, batch_size, precision)

    @property
    def tasks(self) -> list[str]:
        return list(self.model.specs)

    def _check_task(self, task: str) -> None:
        if task not in self.model.specs:
            raise BiomtlError(f"--task: the model has no task '{task}' (it has {', '.join(self.model.specs)})")

    def predict(
        self, task: str, inputs: list[str | dict[str, Any]], source: str = "input", lines: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """One prediction per input: a ``str`` is raw text; a ``dict`` may carry ``id``, ``text``, ``text_b``
        and (relations) ``entities``, as the task's type reads them. ``source`` and ``lines`` (each input's
        line, default its position) name an input in error messages."""
        self._check_task(task)
        task_type = self.model.tasks[task]
        lines = lines or list(range(1, len(inputs) + 1))
        for item, line in zip(inputs, lines, strict=True):
            check_unicode(item, f"{source}:{line}")
        examples = [task_type.read_input(item, source, line) for item, line in zip(inputs, lines, strict=True)]
        if task_type.token_level:  # sentence by sentence, as annotate reads texts
            found, _ = self._read_windows([ex.text or "" for ex in examples], [task])
            return [{"id": ex.id, "entities": found_in} for ex, found_in in zip(examples, found[task], strict=True)]
        features = task_type.encode(examples, self.model.tokenizer, self.model.max_length)
        preds = predict_features(self.model, task, features, len(examples), self.batch_size, self.device, self.dtype)
        return [{"id": ex.id, **task_type.output_row(ex, p)} for ex, p in zip(examples, preds, strict=True)]

    def annotate_tasks(self) -> list[str]:
        """Tasks that can annotate plain text (tagging, multilabel and single-text classification)."""
        return [name for name, task in self.model.tasks.items() if task.can_annotate]

    @torch.inference_mode()
    def annotate(self, texts: list[str], tasks: list[str] | None = None) -> list[dict[str, Any]]:
        """Annotate raw texts with several heads at once: the encoder runs once per window, and every
        head reads the same states. Token-level heads give ``entities``; sentence heads give their labels
        (probabilities averaged over the windows of the text's sentences).

        >>> Predictor.load("runs/mtl/best").annotate(["Cisplatin-induced nephrotoxicity."])  # doctest: +SKIP
        """
        for i, text in enumerate(texts, start=1):
            check_unicode(text, f"text {i}")
        tasks = tasks or self.annotate_tasks()
        bad = [t for t in tasks if t not in self.annotate_tasks()]
        if bad:
            raise BiomtlError(f"--task: {', '.join(bad)} cannot annotate plain text (pairs or relation masks needed)")
        examples = [Example(id=str(i), text=t) for i, t in enumerate(texts, start=1)]
        found, logits = self._read_windows(texts, tasks)
        results: list[dict[str, Any]] = [
            {"id": ex.id, "entities": found_in, "labels": {}}
            for ex, found_in in zip(examples, _by_text(found, len(texts)), strict=True)
        ]
        for t, per_text in logits.items():
            for i, logit in enumerate(per_text):
                results[i]["labels"][t] = self._decode_sentence(t, examples[i], logit)
        return results

    @torch.inference_mode()
    def annotate_groups(
        self, texts: list[str], groups: list[int], tasks: list[str], states: WindowStates | None = None
    ) -> tuple[list[list[dict[str, Any]]], list[dict[str, dict[str, Any]]]]:
        """Texts (sentences, each read as it is: not split again) that belong to groups (documents), annotated
        in one encoder pass per window:
        each text's ``entities`` from the token-level heads, and each group's prediction from every sentence
        head, decoded from the element-wise maximum over the group's texts of their logits. A label that any
        sentence has is the document's label (how HoC is scored); its probability is that sentence's.

        ``states``, when given, keeps the encoder states of every window for :meth:`score_spans`.

        >>> p.annotate_groups(["Aspirin.", "Cancer grows."], [0, 0], ["bc5cdr-chemical", "hoc"])  # doctest: +SKIP
        """
        found, logits = self._read_windows(texts, tasks, states, split=False)
        n_groups = max(groups, default=-1) + 1
        labels: list[dict[str, dict[str, Any]]] = [{} for _ in range(n_groups)]
        for t, per_text in logits.items():
            members: dict[int, list[torch.Tensor]] = {}
            for g, logit in zip(groups, per_text, strict=True):
                members.setdefault(g, []).append(logit)
            for g, group_logits in members.items():
                labels[g][t] = self._decode_sentence(t, Example(id=str(g)), torch.stack(group_logits).amax(0))
        return _by_text(found, len(texts)), labels

    def _decode_sentence(self, task: str, example: Example, logit: torch.Tensor) -> dict[str, Any]:
        """A sentence head's output row for one text from its (pooled) logits ``(n_out,)``."""
        (pred,) = self.model.tasks[task].decode(logit.unsqueeze(0), [{"input_ids": [], "example_index": 0}])
        return self.model.tasks[task].output_row(example, pred)

    @torch.inference_mode()
    def score_spans(
        self, task: str, texts: list[str], pairs: list[tuple[int, tuple[int, int], tuple[int, int]]], states: WindowStates
    ) -> list[dict[str, Any]]:
        """A span relation head's prediction for each pair ``(text, span, span)`` of argument spans of
        ``texts[text]``, read from the encoder states of the window :meth:`encode <biomtl.tasks.span_relation.
        SpanRelationTask.encode>` gives the pair in training: one of the sentence's windows kept in ``states``
        (no encoder pass), else a window of the pair's own, encoded once for all the pairs that read it."""
        task_type = self.model.tasks[task]
        features: list[Feature] = []
        hidden: list[torch.Tensor | None] = []  # per pair: the states of its window (``None``: not encoded yet)
        fresh: list[int] = []
        for p, (i, a, b) in enumerate(pairs):
            found = states.windows_of(i)
            feature = None
            if found is not None:
                piece, windows = found
                feature = task_type.pair_in_windows([window for _, window in windows], piece, (a, b))
            if feature is None:
                fresh.append(p)
                hidden.append(None)
            else:
                hidden.append(states.hidden[windows[feature["window"]][0]])
            features.append(feature or {})
        examples = [Example(id=str(p), text=texts[pairs[p][0]], meta={"entities": pairs[p][1:]}) for p in fresh]
        for p, feature in zip(fresh, task_type.encode(examples, self.model.tokenizer, self.model.max_length), strict=True):
            features[p] = feature
        for k, states_of in self._encode_windows([features[p] for p in fresh]).items():
            hidden[fresh[k]] = states_of
        assert all(h is not None for h in hidden), "every pair's window is encoded"
        return self._span_head(task, features, cast(list[torch.Tensor], hidden))

    def _encode_windows(self, features: list[Feature]) -> dict[int, torch.Tensor]:
        """The encoder states ``(length, H)`` of each feature's ``input_ids``; a window that several features
        share is encoded once."""
        by_ids: dict[tuple[int, ...], list[int]] = {}
        for k, feature in enumerate(features):
            by_ids.setdefault(tuple(feature["input_ids"]), []).append(k)
        windows = sorted(by_ids, key=len)
        out: dict[int, torch.Tensor] = {}
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            batch = pad_inputs([{"input_ids": list(ids)} for ids in chunk], self.model.tokenizer.pad_token_id)
            with device_compute(self.device, self.dtype):
                encoded = self.model.encode({k: v.to(self.device) for k, v in batch.items()})
            for row, ids in enumerate(chunk):
                window = encoded[row, : len(ids)].cpu()
                for k in by_ids[ids]:
                    out[k] = window
        return out

    def _span_head(self, task: str, features: list[Feature], hidden: list[torch.Tensor]) -> list[dict[str, Any]]:
        """Each pair's output row from its feature (``spans``) and its window's encoder states; the pairs that
        read one window (the same tensor) share its states in the head's batch, not a copy each."""
        task_type = self.model.tasks[task]
        head = self.model.heads[task]
        windows: list[torch.Tensor] = []
        pairs_of: dict[int, list[int]] = {}  # id of a window's tensor -> its pairs
        for p, states_of in enumerate(hidden):
            if id(states_of) not in pairs_of:
                windows.append(states_of)
            pairs_of.setdefault(id(states_of), []).append(p)
        windows.sort(key=len)
        rows: list[dict[str, Any]] = [{} for _ in features]
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            members = [(r, p) for r, states_of in enumerate(chunk) for p in pairs_of[id(states_of)]]
            feats = [features[p] for _, p in members]
            padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            lengths = torch.tensor([len(states_of) for states_of in chunk])
            mask = (torch.arange(padded.shape[1]) < lengths.unsqueeze(1)).long()
            inputs = task_type.head_inputs(task_type.collate(feats, self.model.tokenizer.pad_token_id))
            window = torch.tensor([r for r, _ in members])
            with device_compute(self.device, self.dtype):
                logits = head(padded.to(self.device), mask.to(self.device), window=window.to(self.device),
                              **{k: v.to(self.device) for k, v in inputs.items()})
            for (_, p), pred in zip(members, task_type.decode(logits.float().cpu(), feats), strict=True):
                rows[p] = task_type.output_row(Example(id=str(p)), pred)
        return rows

    @torch.inference_mode()
    def _read_windows(
        self, texts: list[str], tasks: list[str], states: WindowStates | None = None, split: bool = True
    ) -> tuple[dict[str, list[list[dict[str, Any]]]], dict[str, list[torch.Tensor]]]:
        """Run ``tasks`` over the sentences of ``texts`` (:func:`sentence_pieces`; with ``split=False`` each
        text is one sentence already), each sentence in its own word windows (the encoder once per window,
        every head on the same states). Returns, per token-level head, each text's entities with offsets into
        the text; per sentence head, each text's logits averaged over the windows of its sentences."""
        # (text, start, sentence); a sentence is one example of the heads, its windows its features
        pieces = [
            (i, start, piece)
            for i, text in enumerate(texts)
            for start, piece in (sentence_pieces(text) if split else [(0, text)])
        ]
        # Word windows as token-level heads see them (a text without words reads as "."); sentence heads
        # read the [CLS] of the same windows.
        words = [[w for w, _, _ in words_with_offsets(piece)] or ["."] for _, _, piece in pieces]
        tokenizer = self.model.tokenizer
        features = [
            feature
            for k, ids in enumerate(word_pieces(words, tokenizer))
            for feature in window_features(ids, self.model.max_length, tokenizer.cls_token_id, tokenizer.sep_token_id, k)
        ]
        if states is not None:
            states.pieces, states.features = pieces, features
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        window_preds: dict[str, list[Any]] = {t: [None] * len(features) for t in tasks}
        pooled: dict[str, list[tuple[int, torch.Tensor]]] = {t: [] for t in tasks}  # (feature, logits)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            feats = [features[i] for i in idx]
            batch = {k: v.to(self.device) for k, v in pad_inputs(feats, tokenizer.pad_token_id).items()}
            with device_compute(self.device, self.dtype):
                hidden = self.model.encode(batch)
                outputs = self.model.run_heads(hidden, batch, tasks)
            if states is not None:
                for r, i in enumerate(idx):
                    states.hidden[i] = hidden[r, : len(features[i]["input_ids"])].cpu()
            for t in tasks:
                logits = outputs[t].float().cpu()
                if self.model.tasks[t].token_level:
                    for i, p in zip(idx, self.model.tasks[t].decode(logits, feats), strict=True):
                        window_preds[t][i] = p
                else:
                    pooled[t].extend(zip(idx, logits, strict=True))
        entities: dict[str, list[list[dict[str, Any]]]] = {}
        sentence_logits: dict[str, list[torch.Tensor]] = {}
        for t in tasks:
            task = self.model.tasks[t]
            if task.token_level:
                entities[t] = [[] for _ in texts]
                merged = task.merge(window_preds[t], features, len(pieces))
                for (i, offset, piece), pred in zip(pieces, merged, strict=True):
                    row = task.output_row(Example(id=str(i + 1), text=piece), pred)
                    shifted = ({**e, "start": e["start"] + offset, "end": e["end"] + offset} for e in row["entities"])
                    entities[t][i].extend(shifted)
                continue
            by_text: dict[int, list[torch.Tensor]] = {}
            for f, logit in sorted(pooled[t], key=lambda item: item[0]):
                by_text.setdefault(pieces[features[f]["example_index"]][0], []).append(logit)
            sentence_logits[t] = [torch.stack(by_text[i]).mean(0) for i in range(len(texts))]
        return entities, sentence_logits


def _by_text(entities: dict[str, list[list[dict[str, Any]]]], n_texts: int) -> list[list[dict[str, Any]]]:
    """Each text's entities from every token-level head (``task`` names the head), sorted by offset."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(n_texts)]
    for t, per_text in entities.items():
        for found, more in zip(out, per_text, strict=True):
            found.extend({**e, "task": t} for e in more)
    for found in out:
        found.sort(key=lambda e: (e["start"], e["end"]))
    return out
