"""Texts longer than the encoder window: overlapping windows must neither lose nor double an entity, and
offsets must index the original text exactly.

To know the right answer in advance, the encoder is replaced by a stand-in whose state for a token says
whether it is the B- or the I- keyword, and the tagging head is set to read that. Like a real encoder it is
unreliable without context: within ``EDGE`` sub-words of a window's edge it sees no keyword at all. So an
entity is found only if its words are read from the window where they have the most context; a merge that
took another window's reading would lose or split entities on the seams. Entity words are built to have
exactly as many sub-words as the filler words they replace, so the windows are known before planting.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from biomtl.data.examples import Example
from biomtl.model import MultiTaskModel, load_encoder
from biomtl.predict import Predictor, sentence_pieces
from biomtl.tasks import load_dataset_spec
from biomtl.tasks.tagging import TaggingTask, WindowTags, make_windows, owners

B_WORD, I_WORD = "aspirin", "lithium"  # single word-pieces of the tiny vocabulary
SEPARATORS = [" ", " ", " ", "  ", "\n", " \t ", "\n\n"]
EDGE = 2  # sub-words of context the stand-in encoder needs on both sides


class KeywordEncoder(nn.Module):
    """Stands in for BERT: a token's state is (is B keyword, is I keyword, 1, 0), but (0, 0, 1, 0) within
    ``EDGE`` sub-words of either end of its window."""

    def __init__(self, b_id: int, i_id: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=4)
        self.b_id, self.i_id = b_id, i_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        hidden = torch.zeros(*input_ids.shape, 4)  # (B, T, 4)
        position = torch.arange(input_ids.shape[1])  # [CLS] is 0, the window's sub-words 1 .. n
        n = attention_mask.sum(1, keepdim=True) - 2
        context = torch.minimum(position - 1, n - position)  # (B, T): sub-words before / after, the fewer
        sure = (context >= EDGE).float()
        hidden[..., 0] = (input_ids == self.b_id).float() * sure
        hidden[..., 1] = (input_ids == self.i_id).float() * sure
        hidden[..., 2] = 1.0
        return SimpleNamespace(last_hidden_state=hidden)


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: str):
    """The tiny word-piece vocabulary. Built from vocab.txt here: with transformers 5 the conftest's
    ``BertTokenizerFast(vocab_file=...)`` ignores the file and saves a tokenizer that knows only the special
    tokens."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(str(Path(tiny_encoder) / "vocab.txt"), do_lower_case=True)
    assert tokenizer.tokenize("Aspirin qq aspirinxx") == ["aspirin", "q", "##q", "aspirin", "##x", "##x"]
    return tokenizer


def rigged_predictor(tokenizer, toy_tasks, max_length: int) -> Predictor:
    """A model whose ``toy-ner`` head tags the B keyword ``B-Chemical``, the I keyword ``I-Chemical``, and
    everything else ``O``."""
    spec = load_dataset_spec(toy_tasks["toy-ner"])
    b_id, i_id = tokenizer.convert_tokens_to_ids([B_WORD, I_WORD])
    model = MultiTaskModel(KeywordEncoder(b_id, i_id), tokenizer, {spec.name: spec}, max_length=max_length)
    tags = model.tasks[spec.name].tags
    assert tags == ["O", "B-Chemical", "I-Chemical"]
    with torch.no_grad():
        out = model.heads[spec.name].out
        out.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0], [10.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]]))
        out.bias.zero_()
    return Predictor(model)


def filler(rng: random.Random, pieces: int) -> str:
    """A non-entity word of exactly ``pieces`` word-pieces (``q ##q ##q``; ``cells`` for one)."""
    return rng.choice(["the", "cells", "Dose", "renal", "9"]) if pieces == 1 else "q" * pieces


def keyword(base: str, pieces: int, rng: random.Random) -> str:
    """``aspirin`` + ``x`` * (pieces - 1): the keyword first, then ``##x`` pieces; sometimes capitalised."""
    word = base + "x" * (pieces - 1)
    return word.capitalize() if rng.random() < 0.3 else word


def build_document(rng: random.Random, lengths: list[int], plan: dict[int, str]) -> tuple[str, list[str], list[dict]]:
    """Text of ``len(lengths)`` words where word ``j`` has ``lengths[j]`` pieces and ``plan[j]`` is its tag
    (``B``/``I``; others ``O``). Returns the text, its words and the entities expected, with offsets."""
    words, offsets, parts, pos = [], [], [], 0
    for j, n in enumerate(lengths):
        tag = plan.get(j, "O")
        word = keyword(B_WORD, n, rng) if tag == "B" else keyword(I_WORD, n, rng) if tag == "I" else filler(rng, n)
        sep = "" if j == 0 else rng.choice(SEPARATORS)
        pos += len(sep)
        parts.extend([sep, word])
        words.append(word)
        offsets.append((pos, pos + len(word)))
        pos += len(word)
    text = "".join(parts) + rng.choice(["", ".", "\n"])
    expected = []
    for j in sorted(plan):
        if plan[j] == "B":
            end = j + 1
            while plan.get(end) == "I":
                end += 1
            start_char, end_char = offsets[j][0], offsets[end - 1][1]
            expected.append({"start": start_char, "end": end_char, "text": text[start_char:end_char], "type": "Chemical"})
    return text, words, expected


def contexts(windows: list[tuple[int, int]], lengths: list[int]) -> list[list[int]]:
    """For each word, its context (sub-words to the nearer window edge) in every window that holds it."""
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    found: list[list[int]] = [[] for _ in lengths]
    for s, e in windows:
        for i in range(s, e):
            found[i].append(min(offsets[i] - offsets[s], offsets[e] - offsets[i + 1]))
    return found


def seam_plan(windows: list[tuple[int, int]], owner: list[int], lengths: list[int]) -> dict[int, str]:
    """Entities on every seam: a B-I pair across each change of owning window, a B-I-I across each window
    end, and one-word entities on the first and last word of every window — wherever some window gives
    the words enough context (not at the ends of the document)."""
    plan: dict[int, str] = {}
    n = len(owner)
    best = [max(c) for c in contexts(windows, lengths)]

    def place(start: int, length: int) -> None:
        span = range(start, start + length)
        if start >= 0 and start + length <= n and not any(j in plan or best[j] < EDGE for j in span):
            plan.update({j: "B" if j == start else "I" for j in span})

    for j in range(1, n):
        if owner[j] != owner[j - 1]:
            place(j - 1, 2)
    for _, e in windows[:-1]:
        place(e - 2, 3)
    for s, e in windows:
        place(s, 1)
        place(e - 1, 1)
    return plan


def strip_scores(entities: list[dict]) -> list[dict]:
    for ent in entities:
        assert 0 < ent.pop("score") <= 1
    return entities


def windows_of(predictor: Predictor, words: list[str]) -> list[tuple[int, int]]:
    task = predictor.model.tasks["toy-ner"]
    features = task.encode([Example(id="0", tokens=words)], predictor.model.tokenizer, predictor.model.max_length)
    return [(f["word_index"][0], f["word_index"][-1] + 1) for f in features]


@pytest.mark.parametrize("seed", range(4))
def test_entities_on_window_seams_are_found_once_with_exact_offsets(tokenizer, toy_tasks, seed):
    max_length = 16
    predictor = rigged_predictor(tokenizer, toy_tasks, max_length)
    rng = random.Random(seed)
    lengths = [rng.choice([1, 1, 1, 2, 3]) for _ in range(150)]
    windows = make_windows(lengths, max_length - 2)
    owner = owners(windows, lengths)
    plan = seam_plan(windows, owner, lengths)
    text, words, expected = build_document(rng, lengths, plan)

    assert windows_of(predictor, words) == windows  # the planted words kept the windows where planned
    assert len(windows) > 15 and len(expected) > 30
    # Most planted words sit where another window than their owner reads them wrongly.
    trapped = [j for j in plan if min(contexts(windows, lengths)[j]) < EDGE]
    assert len(trapped) > len(plan) / 2
    (result,) = predictor.predict("toy-ner", [text])
    assert strip_scores(result["entities"]) == expected


def test_a_20000_word_document(tokenizer, toy_tasks):
    predictor = rigged_predictor(tokenizer, toy_tasks, max_length=64)
    rng = random.Random(7)
    n = 20_000
    lengths = [rng.choice([1, 1, 1, 1, 2, 3, 5]) for _ in range(n)]
    best = [max(c) for c in contexts(make_windows(lengths, 62), lengths)]
    plan: dict[int, str] = {}
    j = 0
    while j < n:  # an entity of 1-3 words every ~10 words, sometimes touching the previous one
        j += rng.choice([0, 1, 4, 9, 15])
        size = rng.choice([1, 1, 2, 3])
        if j + size <= n and all(best[k] >= EDGE for k in range(j, j + size)):
            plan.update({k: "B" if k == j else "I" for k in range(j, j + size)})
        j += size
    text, words, expected = build_document(rng, lengths, plan)
    assert len(words) == n and len(expected) > 1500
    assert len(windows_of(predictor, words)) > 500

    (result,) = predictor.predict("toy-ner", [text])
    assert strip_scores(result["entities"]) == expected

    # The all-heads path (one encoder pass for every head) windows the text the same way.
    (annotated,) = predictor.annotate([text])
    assert [{k: v for k, v in e.items() if k not in ("score", "task")} for e in annotated["entities"]] == expected


def test_real_encoder_gives_every_word_one_tag_on_a_long_text(tiny_encoder, tokenizer, toy_tasks):
    """With the real (random) tiny BERT, whatever it predicts, every word is tagged once and every entity
    is a clean slice of the text."""
    spec = load_dataset_spec(toy_tasks["toy-ner"])
    torch.manual_seed(0)
    encoder, _ = load_encoder(tiny_encoder)
    model = MultiTaskModel(encoder, tokenizer, {spec.name: spec}, max_length=16)
    predictor = Predictor(model)
    rng = random.Random(3)
    text = " ".join(rng.choice(["aspirin", "the", "cells", "qqq", "renal", "failure", "IL-2", "(", "5%", "naloxone"]) for _ in range(600))
    (result,) = predictor.predict("toy-ner", [text])
    ends = [0]
    for ent in result["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"] and ent["text"] == ent["text"].strip()
        assert ent["start"] >= ends[-1]  # sorted, never overlapping
        ends.append(ent["end"])


@pytest.mark.parametrize("capacity", [3, 6, 14, 30])
def test_training_windows_give_every_word_exactly_one_tag(tokenizer, toy_tasks, capacity):
    """``TaggingTask.encode`` + ``merge`` on long gold sentences: every word is owned by exactly one window,
    its label travels with it, and a perfect per-window prediction merges back to the gold tags."""
    task = TaggingTask(load_dataset_spec(toy_tasks["toy-ner"]))
    rng = random.Random(capacity)
    examples = []
    for i in range(5):
        n = rng.randint(1, 200)
        lengths = [rng.choice([1, 1, 2, 3, 40]) for _ in range(n)]  # 40 pieces: longer than any window
        tokens = [filler(rng, k) for k in lengths]
        tags, prev = [], "O"
        for _ in range(n):
            prev = rng.choice(["O", "B-Chemical"] + (["I-Chemical"] * 2 if prev != "O" else []))
            tags.append(prev)
        examples.append(Example(id=str(i), tokens=tokens, label=tags))
    features = task.encode(examples, tokenizer, capacity + 2)

    owned: dict[tuple[int, int], int] = {}
    for f in features:
        assert len(f["input_ids"]) <= capacity + 2
        gold = examples[f["example_index"]].label
        assert [task.tags[t] for t in f["word_labels"]] == [gold[j] for j in f["word_index"]]
        for j, own in zip(f["word_index"], f["owned"], strict=True):
            owned[(f["example_index"], j)] = owned.get((f["example_index"], j), 0) + own
    assert owned == {(i, j): 1 for i, ex in enumerate(examples) for j in range(len(ex.tokens))}

    perfect = [WindowTags([task.tags[t] for t in f["word_labels"]], [1.0] * len(f["word_index"])) for f in features]
    merged = task.merge(perfect, features, len(examples))
    assert [m.tags for m in merged] == [ex.label for ex in examples]


# ----------------------------------------------------------------------------------------------------------
# Documents read sentence by sentence: a sentence's entities do not depend on where it falls in a document.


def tiny_predictor(tiny_encoder: str, tokenizer, toy_tasks, max_length: int) -> Predictor:
    """The real (random) tiny BERT with the toy NER head, and a head that tags something on most texts."""
    spec = load_dataset_spec(toy_tasks["toy-ner"])
    torch.manual_seed(0)
    encoder, _ = load_encoder(tiny_encoder)
    model = MultiTaskModel(encoder, tokenizer, {spec.name: spec}, max_length=max_length)
    with torch.no_grad():
        model.heads[spec.name].out.bias.copy_(torch.tensor([0.0, 0.3, 0.3]))  # O, B-Chemical, I-Chemical
    return Predictor(model, precision="fp32")


def fits_one_window(predictor: Predictor, sentence: str) -> bool:
    task = predictor.model.tasks["toy-ner"]
    example = task.read_input(sentence, "test", 1)
    return len(task.encode([example], predictor.model.tokenizer, predictor.model.max_length)) == 1


def assert_document_reads_like_its_sentences(predictor: Predictor, sentences: list[str], separator: str = " ") -> int:
    """Annotate the sentences joined into one document and each on its own: for every sentence that the
    splitter finds again and that fits in one window, the document's entities inside it are the sentence's
    own entities, shifted. Returns how many sentences were compared."""
    document = separator.join(sentences)
    starts, pos = [], 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + len(separator)
    found_again = {start for start, _ in sentence_pieces(document)}
    (in_document,) = predictor.predict("toy-ner", [document])
    (annotated,) = predictor.annotate([document])
    alone = predictor.predict("toy-ner", sentences)
    compared = 0
    for start, sentence, own in zip(starts, sentences, alone, strict=True):
        if start not in found_again or start + len(sentence) + len(separator) not in found_again | {pos}:
            continue
        if not fits_one_window(predictor, sentence):
            continue
        end = start + len(sentence)
        shifted = [{**e, "start": e["start"] + start, "end": e["end"] + start} for e in own["entities"]]
        for found in (in_document["entities"], annotated["entities"]):
            inside = [e for e in found if start <= e["start"] and e["end"] <= end]
            assert without_scores(inside) == without_scores(shifted), sentence
            # padding to other lengths in a batch moves a probability in its last digits only
            assert [e["score"] for e in inside] == pytest.approx([e["score"] for e in shifted], abs=1e-3)
        compared += 1
    return compared


def without_scores(entities: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("score", "task")} for e in entities]


def test_sentence_pieces_cover_the_text_and_start_at_sentences():
    text = "  Aspirin helps. It is cheap.\n\nIts dose is 10 mg i.v. daily. 2. Naloxone (NLX) works.  "
    pieces = sentence_pieces(text)
    assert "".join(p for _, p in pieces) == text
    assert all(text[s : s + len(p)] == p for s, p in pieces)
    assert [p.strip() for _, p in pieces] == [
        "Aspirin helps.", "It is cheap.", "Its dose is 10 mg i.v. daily. 2.", "Naloxone (NLX) works."
    ]
    assert sentence_pieces("") == [(0, "")]
    assert sentence_pieces("   ") == [(0, "   ")]


def test_a_documents_entities_are_its_sentences_entities(tiny_encoder, tokenizer, toy_tasks):
    """Toy sentences of 3-25 words (window 24 sub-words: some sentences need several windows) joined into one
    document. Before sentences were split first, windows cut across sentences and this failed."""
    predictor = tiny_predictor(tiny_encoder, tokenizer, toy_tasks, max_length=24)
    rng = random.Random(5)
    words = ["aspirin", "heparin", "the", "cells", "renal", "failure", "induced", "lithium", "dose", "of", "and", "qqq"]
    sentences = [
        " ".join([rng.choice(words).capitalize()] + [rng.choice(words) for _ in range(rng.randint(2, 24))]) + "."
        for _ in range(60)
    ]
    compared = assert_document_reads_like_its_sentences(predictor, sentences)
    assert compared > 25
    # The test can fail: the entities are many, and the document is many windows long.
    (result,) = predictor.predict("toy-ner", [" ".join(sentences)])
    assert len(result["entities"]) > 100


@pytest.mark.slow
def test_real_bc5cdr_sentences_read_the_same_in_a_document(corpora_dir, tiny_encoder, tokenizer, toy_tasks):
    """Real BC5CDR test sentences (the BLUE file), 400 of them on one line, with the tiny BERT."""
    sentences, words = [], []
    for line in (corpora_dir / "BC5CDR-chemical" / "test.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            words.append(line.split("\t")[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
        if len(sentences) == 400:
            break
    # The tiny vocabulary spells most words letter by letter: 278 of the 400 sentences fit in 128 sub-words.
    predictor = tiny_predictor(tiny_encoder, tokenizer, toy_tasks, max_length=128)
    compared = assert_document_reads_like_its_sentences(predictor, sentences)
    assert compared > 250  # the splitter finds 384 of the 400 corpus sentences again
