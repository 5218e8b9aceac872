"""File readers per format: ``conll`` (token/tag columns), ``tsv`` and ``jsonl``.

Readers check everything a dataset config promises: the columns exist, relation sentences carry their entity
masks, ids are unique, the split is not empty; the task type parses and checks each gold label (every label
is declared, scores are finite and in range, ...).
A problem raises :class:`~biomtl.errors.DataError` naming ``file:line``; in collecting mode (``problems``
given) the reader records it and goes on, so ``biomtl validate`` can report every problem at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biomtl.config import DatasetSpec
from biomtl.corpora.files import line_problem
from biomtl.data.examples import Example
from biomtl.errors import BiomtlError, DataError
from biomtl.tasks import TaskType, make_task
from biomtl.tasks.base import InvalidLabel
from biomtl.tasks.masks import mask_problem
from biomtl.tasks.tagging import repair_iob2

log = logging.getLogger(__name__)

MAX_PROBLEMS_PER_FILE = 20


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line, decoding UTF-8 strictly line by line so that a bad byte is
    reported with its line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if number == 1:
                text = text.lstrip("\ufeff")
            yield number, text.rstrip("\r\n")


class _Collector:
    """Raise at once, or collect problems when validating."""

    def __init__(self, problems: list[str] | None) -> None:
        self.problems = problems
        self.count = 0

    def __call__(self, error: DataError) -> None:
        if self.problems is None:
            raise error
        self.count += 1
        if self.count <= MAX_PROBLEMS_PER_FILE:
            self.problems.append(str(error))
        elif self.count == MAX_PROBLEMS_PER_FILE + 1:
            self.problems.append(f"{error.path}: more problems not shown")


def _parse_label(task: TaskType, path: Path, line: int, raw: Any, report: _Collector) -> Any:
    """The task type's reading of a gold label; ``None`` (after reporting why) when it is invalid."""
    try:
        return task.parse_label(raw)
    except InvalidLabel as e:
        report(DataError(path, line, str(e)))
        return None


def _check_markers(spec: DatasetSpec, path: Path, line: int, text: str, report: _Collector) -> bool:
    problem = mask_problem(spec, text)
    if problem:
        report(DataError(path, line, problem))
    return problem is None


def _column(row: Any, key: str | int, header: list[str] | None) -> Any:
    if isinstance(key, int):
        return row[key]
    if isinstance(row, dict):
        return row[key]
    assert header is not None
    return row[header.index(key)]


def _read_tsv(spec: DatasetSpec, path: Path, report: _Collector) -> list[Example]:
    """Each non-blank line after the header is one row, its fields split at every tab, taken literally: corpus
    text is not CSV-quoted, and a ``"`` is a character like any other (a CSV parser would join the lines from
    one ``"`` to the next). A line that gives no example is reported, so no row is ever lost silently."""
    columns = spec.columns
    examples = []
    header: list[str] | None = None
    width: int | None = None
    first = True  # the first data row: the one whose label column says whether columns: fits the file
    try:
        numbered = list(_lines(path))  # all lines first, so that a bad byte is reported before anything else
    except DataError as e:
        report(e)
        return []
    for line, text in numbered:  # the line number doubles as the default id (as the row number did)
        row = text.split("\t")
        if all(not c.strip() for c in row):
            continue
        problem = line_problem(text)
        if problem:
            report(DataError(path, line, problem))
            continue
        if spec.header and header is None:
            header = [c.strip() for c in row]
            width = len(header)
            missing = [str(c) for c in columns.values() if isinstance(c, str) and c not in header]
            if missing:
                report(DataError(path, line, f"missing column(s) {', '.join(missing)} (header has {', '.join(header)}; columns: in {spec.config_path})"))
                return []
            continue
        if width is None:
            width = len(row)
            too_far = [c for c in columns.values() if isinstance(c, int) and c >= width]
            named = [c for c in columns.values() if isinstance(c, str)]
            if named:
                report(DataError(path, line, f"columns {', '.join(named)} are named but the file has no header (set header: true in {spec.config_path})"))
                return []
            if too_far:
                report(DataError(path, line, f"the row has {width} columns where columns: in {spec.config_path} expects "
                                             f"{max(too_far) + 1} (column {too_far[0]} does not exist)"))
                return []
        if len(row) != width:
            separators = sorted({f"U+{ord(c):04X}" for c in text if c in _OTHER_LINE_BREAKS})
            note = f" (only LF ends a line, not {', '.join(separators)})" if separators else ""
            report(DataError(path, line, f"expected {width} tab-separated columns, found {len(row)}{note}"))
            continue
        try:
            example = _example_from_row(spec, path, line, row, header, line, report, first)
        except _WrongLayout as e:
            report(e)
            return []
        first = False
        if example is not None:
            examples.append(example)
    return examples


# Characters that str.splitlines() and some editors take for line breaks; in a data file only LF (or CRLF) ends a
# line, so a file broken by these reads as long lines, which the column count catches.
_OTHER_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class _WrongLayout(DataError):
    """The ``columns:`` mapping does not fit the file: reported once, and the file is not read on."""


def _layout_problem(task: TaskType, spec: DatasetSpec, row: Any, raw: Any) -> str | None:
    """On a file's first row, a label column that holds running text (three words or more, not a label) means
    that ``columns:`` does not fit the file; one line says so instead of an "undeclared label" per row."""
    if not isinstance(raw, str) or len(raw.split()) < 3:
        return None
    try:
        task.parse_label(raw)
        return None
    except InvalidLabel:
        pass
    width = f"{len(row)} {'fields' if isinstance(row, dict) else 'columns'}"
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    return (f"the label column ({spec.columns['label']}) holds text ('{shown}'), not a label; the row has {width}: "
            f"check columns: in {spec.config_path}")


def _example_from_row(
    spec: DatasetSpec, path: Path, line: int, row: Any, header: list[str] | None, index: int, report: _Collector,
    first: bool = False,
) -> Example | None:
    columns = spec.columns
    task = make_task(spec)
    get = {role: _column(row, key, header) for role, key in columns.items()}
    text = get.get("text")
    if text is None or not str(text).strip():
        report(DataError(path, line, "empty text"))
        return None
    problem = task.check_texts(str(text), str(get.get("text_b") or "") if "text_b" in columns else None)
    if problem:
        report(DataError(path, line, problem))
        return None
    if "label" not in get:
        report(DataError(path, line, f"no label column configured (columns.label in {spec.config_path})"))
        return None
    if first and (layout := _layout_problem(task, spec, row, get["label"])):
        raise _WrongLayout(path, line, layout)
    label = _parse_label(task, path, line, get["label"], report)
    if label is None:
        return None
    if not _check_markers(spec, path, line, str(text), report):
        return None
    meta = {}
    if "entities" in columns:
        try:
            meta["entities"] = task.parse_entities(str(text), get["entities"])
        except InvalidLabel as e:
            report(DataError(path, line, str(e)))
            return None
    return Example(
        id=str(get.get("id", index)),
        text=str(text),
        text_b=str(get["text_b"]) if get.get("text_b") is not None else None,
        label=label,
        doc_id=str(get["doc_id"]) if get.get("doc_id") is not None else None,
        source=f"{path}:{line}",
        meta=meta,
    )


def _read_jsonl(spec: DatasetSpec, path: Path, report: _Collector) -> list[Example]:
    examples: list[Example] = []
    first = True
    try:
        for line, text in _lines(path):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                report(DataError(path, line, f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(record, dict):
                report(DataError(path, line, "expected a JSON object"))
                continue
            missing = [str(k) for k in spec.columns.values() if k not in record]
            if missing:
                report(DataError(path, line, f"missing field(s) {', '.join(missing)} (columns: in {spec.config_path})"))
                continue
            try:
                example = _example_from_row(spec, path, line, record, None, len(examples), report, first)
            except _WrongLayout as e:
                report(e)
                return []
            first = False
            if example is not None:
                examples.append(example)
    except DataError as e:
        report(e)
    return examples


def _read_conll(spec: DatasetSpec, path: Path, report: _Collector) -> list[Example]:
    token_col = spec.columns.get("token", 0)
    tag_col = spec.columns.get("tag", -1)
    if not isinstance(token_col, int) or not isinstance(tag_col, int):
        report(DataError(path, None, f"conll columns must be integers (columns: in {spec.config_path})"))
        return []
    task = make_task(spec)
    need = max(2, *(c + 1 if c >= 0 else -c for c in (token_col, tag_col)))
    width: tuple[int, int] | None = None  # (columns, line) of the first token line; every line must match
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    repaired = 0
    bad = False

    def flush() -> None:
        nonlocal tokens, tags, bad, repaired
        # conlleval reads an I- that does not continue an entity as the start of a new one; we store that
        # reading as IOB2 (B-) so training targets and scores agree with it.
        iob2 = repair_iob2(tags)
        repaired += sum(old != new for old, new in zip(tags, iob2, strict=True))
        if tokens and not bad:
            examples.append(Example(id=str(len(examples)), tokens=tokens, label=iob2, source=f"{path}:{start}"))
        tokens, tags, bad = [], [], False

    try:
        for line, text in _lines(path):
            if not text.strip():
                flush()
                continue
            if text.startswith("-DOCSTART-"):
                flush()
                continue
            parts = text.split("\t") if "\t" in text else text.split()
            if len(parts) < 2:
                report(DataError(path, line, f"expected token and tag columns, found {len(parts)} column"))
                bad = True
                continue
            if width is None:
                width = (len(parts), line)
                if len(parts) < need:
                    report(DataError(path, line, f"found {len(parts)} columns, but columns: in {spec.config_path} needs {need}"))
                    return []
            if len(parts) != width[0]:
                report(DataError(path, line, f"expected {width[0]} columns (as on line {width[1]}), found {len(parts)}"))
                bad = True
                continue
            if not tokens:
                start = line
            token, tag = parts[token_col], _parse_label(task, path, line, parts[tag_col], report)
            if tag is None:
                bad = True
                continue
            tokens.append(token)
            tags.append(tag)
        flush()
    except DataError as e:
        report(e)
    if repaired:
        log.warning("%s: %d entities start with I- (read as B-, as conlleval does)", path, repaired)
    return examples


READERS = {"tsv": _read_tsv, "jsonl": _read_jsonl, "conll": _read_conll}


def splits(spec: DatasetSpec) -> list[str]:
    """The splits a task has: its files, plus ``dev`` when it is carved from train."""
    names: list[str] = [s for s in ("train", "dev", "test") if s in spec.files]
    if "dev" not in spec.files and spec.dev_from_train:
        names.insert(1, "dev")
    return names


def _dev_indices(n: int, fraction: float) -> set[int]:
    """The train examples held out as dev when a corpus has no dev file (seeded, the same for every run)."""
    k = min(n, max(1, round(n * fraction)))  # none when train gave no example (its problems are reported)
    return set(random.Random(12345).sample(range(n), k))


def read_split(
    spec: DatasetSpec, split: str, problems: list[str] | None = None, limit: int | None = None, _carve: bool = True
) -> list[Example]:
    """Read and check one split of a task from the file its spec resolved when loaded. ``limit`` keeps a
    seeded random subset (same for every run).

    >>> from biomtl.tasks import load_dataset_spec
    >>> read_split(load_dataset_spec("biosses"), "train")[0].label  # doctest: +SKIP
    2.2
    """
    if split == "dev" and "dev" not in spec.files and spec.dev_from_train:
        train = read_split(spec, "train", problems, _carve=False)
        held = _dev_indices(len(train), spec.dev_from_train)
        examples = [ex for i, ex in enumerate(train) if i in held]
        return _limit(examples, limit)
    file = spec.file(split)
    path = file.path
    assert path is not None  # spec.file raises for a path it could not resolve
    report = _Collector(problems)
    if not path.is_file():
        hint = " (run `biomtl data prepare` first)" if "{prepared}" in file.template else ""
        report(DataError(path, None, f"file not found for split '{split}' of task {spec.name}{hint}"))
        return []
    file_spec = dataclasses.replace(spec, header=file.header, columns=file.columns)
    examples = READERS[spec.format](file_spec, path, report)
    if split == "train" and _carve and "dev" not in spec.files and spec.dev_from_train:
        held = _dev_indices(len(examples), spec.dev_from_train)
        examples = [ex for i, ex in enumerate(examples) if i not in held]
    seen: dict[Any, str] = {}
    for ex in examples:
        if spec.format != "conll" and "id" in spec.columns:
            # With unique_ids: false an id may repeat with another label (BLUE's ChemProt lists a pair once
            # per CPR group), never with the same one.
            key = ex.id if spec.unique_ids else (ex.id, str(ex.label))
            if key in seen:
                line = ex.source.rsplit(":", 1)[1]
                report(DataError(path, int(line), f"duplicate id '{ex.id}' (first at line {seen[key].rsplit(':', 1)[1]})"))
            seen.setdefault(key, ex.source)
    if not examples and report.count == 0:
        report(DataError(path, None, f"split '{split}' of task {spec.name} has no examples"))
    return _limit(examples, limit)


def _limit(examples: list[Example], limit: int | None) -> list[Example]:
    """A seeded subset of about ``limit`` examples (the same for every run). Examples that belong to
    documents are kept or dropped a whole document at a time, so document-level scores stay meaningful."""
    if limit is None or len(examples) <= limit:
        return examples
    rng = random.Random(0)
    if any(ex.doc_id is not None for ex in examples):
        docs = list(dict.fromkeys(ex.doc_id for ex in examples))
        rng.shuffle(docs)
        sizes: dict[str | None, int] = {}
        for ex in examples:
            sizes[ex.doc_id] = sizes.get(ex.doc_id, 0) + 1
        chosen, total = set(), 0
        for doc in docs:
            if total >= limit:
                break
            chosen.add(doc)
            total += sizes[doc]
        return [ex for ex in examples if ex.doc_id in chosen]
    keep = sorted(rng.sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def validate_dataset(spec: DatasetSpec) -> list[str]:
    """Every problem in every split's file, one line each (empty when the dataset is valid)."""
    problems: list[str] = []
    read_dataset(spec, problems)
    return problems


def read_dataset(spec: DatasetSpec, problems: list[str]) -> dict[str, list[Example]]:
    """Every split of a task, each file's problems appended to ``problems``; ``dev`` held out from train (with
    ``dev_from_train``) is there too when train was read without a problem."""
    examples: dict[str, list[Example]] = {}
    for split in splits(spec):
        if split not in spec.files and problems:
            continue
        try:
            examples[split] = read_split(spec, split, problems=problems)
        except BiomtlError as e:
            problems.append(str(e))
    return examples
