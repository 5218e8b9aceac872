from __future__ import annotations

import re
from pathlib import Path

import pytest

from biomtl.corpora import bc5cdr
from biomtl.errors import BiomtlError, DataError

# One document: mentions at the very start and end of the title and of a sentence, a mention that ends inside
# a word ("5-HT" of "5-HT6"), one that the splitter would break ("St. Anthony's fire"), a composite mention,
# and a CID relation line.
TITLE = "Naloxone reverses St. Anthony's fire."
ABSTRACT = (
    "Rats got 5 mg i.v. clonidine. The 5-HT6 receptor was blocked (n = 3. A) by naloxone. "
    "Renal and hepatic failure followed clonidine"
)
TEXT = f"{TITLE} {ABSTRACT}"


def _span(mention: str, nth: int = 0) -> tuple[int, int]:
    start = [m.start() for m in re.finditer(re.escape(mention), TEXT)][nth]
    return start, start + len(mention)


def _pubtator() -> str:
    lines = [f"1|t|{TITLE}", f"1|a|{ABSTRACT}"]
    for mention, nth, kind, extra in [
        ("Naloxone", 0, "Chemical", ""),
        ("St. Anthony's fire", 0, "Disease", ""),
        ("clonidine", 0, "Chemical", ""),
        ("5-HT", 0, "Chemical", ""),
        ("naloxone", 0, "Chemical", ""),
        ("Renal and hepatic failure", 0, "Disease", "\tRenal failure|hepatic failure"),
        ("clonidine", 1, "Chemical", ""),
    ]:
        start, end = _span(mention, nth)
        lines.append(f"1\t{start}\t{end}\t{mention}\t{kind}\tD0{extra}")
    lines.append("1\tCID\tD0\tD1")
    return "\n".join(lines) + "\n\n"


def _corpora(root: Path, text: str | None = None) -> Path:
    (root / bc5cdr.ORIGINAL).mkdir(parents=True)
    for name in bc5cdr.SPLIT_FILES.values():
        (root / bc5cdr.ORIGINAL / name).write_text(text or _pubtator(), encoding="utf-8")
    return root


def _read_conll(path: Path) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line:
            token, tag = line.split("\t")
            current.append((token, tag))
        elif current:
            sentences.append(current)
            current = []
    assert not current, "the file must end with a blank line"
    return sentences


def _mentions(sentences: list[list[tuple[str, str]]]) -> list[str]:
    mentions = []
    for sentence in sentences:
        for token, tag in sentence:
            if tag.startswith("B-"):
                mentions.append([token])
            elif tag.startswith("I-"):
                mentions[-1].append(token)
    return [" ".join(m) for m in mentions]


def test_tokenize_splits_punctuation_and_cuts_at_mention_boundaries() -> None:
    text = "Ca2+-induced (5-HT6) injury"
    assert [text[s:e] for s, e in bc5cdr.tokenize(text, 0, len(text), [])] == [
        "Ca2", "+", "-", "induced", "(", "5", "-", "HT6", ")", "injury",
    ]  # fmt: skip
    assert [text[s:e] for s, e in bc5cdr.tokenize(text, 0, len(text), [2, 18])] == [
        "Ca", "2", "+", "-", "induced", "(", "5", "-", "HT", "6", ")", "injury",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("It rose. It fell.", ["It rose.", "It fell."]),
        ("Given 5 mg i.v. Then none.", ["Given 5 mg i.v. Then none."]),
        ("Mice (n = 3. A) died. Rats lived.", ["Mice (n = 3. A) died.", "Rats lived."]),
        ("Dose in mg. and then more.", ["Dose in mg. and then more."]),
        ("Seen in S. cerevisiae cells.", ["Seen in S. cerevisiae cells."]),
        ("Done in CT. . CIN is rare.", ["Done in CT. .", "CIN is rare."]),
        ("Why? Because. 6 patients died.", ["Why?", "Because.", "6 patients died."]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert [text[s:e] for s, e in bc5cdr.split_sentences(text, 0, len(text), [])] == sentences


def test_split_sentences_never_breaks_inside_a_protected_span() -> None:
    text = "Danger of St. Anthony's fire. Gone."
    protected = [(10, 28)]
    assert [text[s:e] for s, e in bc5cdr.split_sentences(text, 0, len(text), protected)] == [
        "Danger of St. Anthony's fire.",
        "Gone.",
    ]


def test_convert_tags_mentions_at_sentence_edges_and_keeps_official_spans(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text(_pubtator(), encoding="utf-8")
    docs = bc5cdr.read_pubtator(tmp_path / "doc.txt")
    converted, notes = bc5cdr.convert(docs, "Chemical")
    doc, sentences, tags = converted[0]
    words = [[doc.text[s:e] for s, e in sent] for sent in sentences]
    assert [" ".join(w) for w in words] == [
        "Naloxone reverses St . Anthony ' s fire .",
        "Rats got 5 mg i . v . clonidine .",
        "The 5 - HT 6 receptor was blocked ( n = 3 . A ) by naloxone .",
        "Renal and hepatic failure followed clonidine",
    ]
    assert tags[0][0] == "B-Chemical"  # first token of the document
    assert tags[1][-2:] == ["B-Chemical", "O"]  # last word before the full stop
    assert tags[2][1:5] == ["B-Chemical", "I-Chemical", "I-Chemical", "O"]  # 5 - HT | 6
    assert tags[3][-1] == "B-Chemical"  # very last token, no full stop after it
    assert any("'5-HT'" in note and "'HT6'" in note for note in notes)
    assert any("St. Anthony's fire" in note and "sentence break" in note for note in notes)

    _, _, disease_tags = bc5cdr.convert(docs, "Disease")[0][0]
    assert disease_tags[0][2:8] == ["B-Disease"] + ["I-Disease"] * 5  # one mention across "St. | Anthony"
    assert disease_tags[3][:4] == ["B-Disease"] + ["I-Disease"] * 3  # the composite stays one mention


def test_prepare_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpora = _corpora(tmp_path / "corpora")
    out = tmp_path / "out"
    out.mkdir()
    manifest = bc5cdr.prepare_disease(corpora, out)
    sentences = _read_conll(out / "train.conll")
    assert _mentions(sentences) == ["St . Anthony ' s fire", "Renal and hepatic failure"]
    assert manifest["counts"]["test"] == {"documents": 1, "sentences": 4, "tokens": 43, "mentions": 2}
    assert manifest["agreement_with_iob"]["train"] is None  # no IOB files in this corpus directory
    assert any("composite Disease" in d for d in manifest["differences"])
    assert [s["path"] for s in manifest["sources"]] == [
        f"{bc5cdr.ORIGINAL}/{name}" for name in bc5cdr.SPLIT_FILES.values()
    ]


# The tiny document as the IOB files of Crichton et al. would have it: "5-HT6" is one token and the sentence
# splitter breaks "St. | Anthony's fire" in two. Documents are found by their characters, not by order.
IOB_SENTENCES = [  # (tokens, tags: B/I of Disease or O)
    ("Naloxone reverses St .", "O O B I"),
    ("Anthony ' s fire .", "B I I I O"),
    ("Rats got 5 mg i . v . clonidine .", "O O O O O O O O O O"),
    ("The 5 - HT6 receptor was blocked ( n = 3 . A ) by naloxone .", " ".join("O" * 17)),
    ("Renal and hepatic failure followed clonidine", "B I I I O O"),
]
IOB = "".join(
    "".join(
        f"{token}\t{tag}-Disease\n" if tag != "O" else f"{token}\tO\n"
        for token, tag in zip(t.split(), g.split(), strict=True)
    )
    + "\n"
    for t, g in IOB_SENTENCES
)


def test_prepare_reports_agreement_with_the_iob_files(tmp_path: Path) -> None:
    corpora = _corpora(tmp_path / "corpora")
    (corpora / "BC5CDR-disease").mkdir()
    for name in bc5cdr.IOB_FILES.values():
        (corpora / "BC5CDR-disease" / name).write_text(IOB, encoding="utf-8")
    manifest = bc5cdr.prepare_disease(corpora, tmp_path)
    assert manifest["agreement_with_iob"]["dev"] == {
        "sentences": {"ours": 4, "iob": 5, "same": 3},
        "tokens": {"ours": 43, "iob": 42, "same": 41, "same_tag_on_same_token": 40},
        "mentions": {"ours": 2, "iob": 3, "same": 1},
        "token_agreement": round(41 / 43, 5),
        "tag_agreement": round(40 / 41, 5),
    }
    notes = [d for d in manifest["differences"] if d.startswith("dev: IOB file:")]
    assert notes == [
        "dev: IOB file: PMID 1: only the IOB file breaks before offset 22: 'Naloxone reverses St. ' | "
        '"Anthony\'s fire. Rats got "',
        'dev: IOB file: PMID 1: official mention "St. Anthony\'s fire" (18-36) is tagged as '
        "'St.' (18-21) + \"Anthony's fire\" (22-36)",
    ]


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(BiomtlError, match=r"BC5CDR file .*CDR_TrainingSet.PubTator.txt not found"):
        bc5cdr.prepare_chemical(tmp_path, tmp_path)

    bad_offsets = _pubtator().replace("1\t0\t8\tNaloxone", "1\t1\t9\tNaloxone")
    with pytest.raises(DataError, match=r"CDR_TrainingSet.PubTator.txt:3: mention 'Naloxone' does not match"):
        bc5cdr.prepare_chemical(_corpora(tmp_path / "a", bad_offsets), tmp_path)

    no_abstract = "1|t|Title.\n1\t0\t5\tTitle\tChemical\tD0\n\n"
    with pytest.raises(DataError, match=r"\.txt:1: expected 'PMID\|t\|title' then 'PMID\|a\|abstract'"):
        bc5cdr.prepare_chemical(_corpora(tmp_path / "b", no_abstract), tmp_path)

    short_line = _pubtator().replace("\tDisease\tD0\tRenal failure|hepatic failure", "")
    with pytest.raises(DataError, match=r"\.txt:8: expected 'PMID<TAB>start<TAB>end<TAB>mention"):
        bc5cdr.prepare_chemical(_corpora(tmp_path / "c", short_line), tmp_path)


# ---------------------------------------------------------------------------------------------------------
# The real corpus (about 2.5 s per task)


@pytest.fixture(scope="module")
def prepared(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    result = {}
    for entity, prepare in (("Chemical", bc5cdr.prepare_chemical), ("Disease", bc5cdr.prepare_disease)):
        out = tmp_path_factory.mktemp(entity)
        result[entity] = (out, prepare(corpora_dir, out))
    return result


@pytest.mark.slow
@pytest.mark.parametrize("entity", ["Chemical", "Disease"])
def test_mention_counts_match_blue(prepared: dict[str, tuple[Path, dict]], entity: str) -> None:
    out, manifest = prepared[entity]
    for split, reference in bc5cdr.REFERENCE[entity].items():
        assert manifest["counts"][split]["mentions"] == reference  # exact, well within the 0.5 % allowed
        sentences = _read_conll(out / f"{split}.conll")
        assert len(sentences) == manifest["counts"][split]["sentences"]
        assert len(_mentions(sentences)) == reference


@pytest.mark.slow
@pytest.mark.parametrize("entity", ["Chemical", "Disease"])
def test_files_are_valid_iob2(prepared: dict[str, tuple[Path, dict]], entity: str) -> None:
    out, _ = prepared[entity]
    for split in ("train", "dev", "test"):
        for sentence in _read_conll(out / f"{split}.conll"):
            previous = "O"
            for token, tag in sentence:
                assert tag in ("O", f"B-{entity}", f"I-{entity}")
                assert token and not any(c.isspace() for c in token)
                assert not (tag.startswith("I-") and previous == "O")
                previous = tag


@pytest.mark.slow
def test_both_tasks_share_tokens_and_sentences(prepared: dict[str, tuple[Path, dict]]) -> None:
    for split in ("train", "dev", "test"):
        chemical = _read_conll(prepared["Chemical"][0] / f"{split}.conll")
        disease = _read_conll(prepared["Disease"][0] / f"{split}.conll")
        assert [[t for t, _ in s] for s in chemical] == [[t for t, _ in s] for s in disease]


@pytest.mark.slow
@pytest.mark.parametrize("entity", ["Chemical", "Disease"])
def test_agreement_with_the_iob_files(prepared: dict[str, tuple[Path, dict]], entity: str) -> None:
    agreement = prepared[entity][1]["agreement_with_iob"]
    assert agreement["train"]["token_agreement"] == agreement["train"]["tag_agreement"] == 1.0
    for split in ("dev", "test"):
        assert agreement[split]["token_agreement"] > 0.9998
        assert agreement[split]["tag_agreement"] > 0.9999
        assert agreement[split]["sentences"]["ours"] - agreement[split]["sentences"]["same"] <= 3


@pytest.mark.slow
def test_differences_explain_the_iob_files(prepared: dict[str, tuple[Path, dict]]) -> None:
    disease = prepared["Disease"][1]
    assert disease["agreement_with_iob"]["dev"]["mentions"] == {"ours": 4244, "iob": 4246, "same": 4242}
    split_mentions = [d for d in disease["differences"] if "is tagged as 'St.'" in d]
    assert (
        len(split_mentions) == 2
    )  # PMID 3300918, title and abstract: the 2 extra B- tags of the IOB dev file

    chemical = prepared["Chemical"][1]
    widened = [d for d in chemical["differences"] if "IOB file: PMID" in d and "is tagged as" in d]
    assert len(widened) == 15  # 10 dev + 5 test mentions that end inside a word, e.g. 5-HT in 5-HT6
    assert chemical["agreement_with_iob"]["dev"]["mentions"]["same"] == 5347 - 10
