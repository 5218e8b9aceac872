"""The files of ``biomtl data prepare``: official inputs checked and decoded, task files written literally.

:func:`check_sources` compares the source files with the release's sizes and sha256 (the download catalogue,
``sources.json``) before any conversion, so a file cut off mid-way or emptied stops the run with a message
naming it, instead of converting to fewer examples; ``--no-verify`` (another release) skips the comparison but
never accepts an empty file. :func:`decode` reads them strictly; :func:`write_tsv` writes task files that a
reader splitting on tabs reads back exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from biomtl.errors import BiomtlError, DataError
from biomtl.lines import split_lines

NO_VERIFY_HINT = "pass --no-verify to convert another release"


def check_sources(corpora: Path, official: dict[str, tuple[int | None, str]], verify: bool = True) -> None:
    """Raise unless every file of ``official`` (``{path: (bytes, sha256)}``) that is present under ``corpora``
    is the official one: same size, then same sha256.

    An empty file is refused even without ``verify``. On a mismatch a text file is also decoded, so that a bad
    byte is reported with its line. Missing files are left to the converter, which knows which it needs.
    """
    for name, (size, digest) in official.items():
        path = corpora / name
        if not path.is_file():
            continue
        found = path.stat().st_size
        if found == 0:
            raise DataError(path, None, "empty file" + (f" (the official file has {size} bytes)" if size else ""))
        same_size = size is None or found == size
        if not verify or (same_size and sha256(path) == digest):
            continue
        if path.suffix != ".zip":
            read_text(path)  # a bad byte, NUL or lone CR: say where
        if not same_size:
            raise DataError(
                path, None, f"{found} bytes, but the official file has {size} (cut off or damaged?); {NO_VERIFY_HINT}"
            )
        raise DataError(
            path, None, f"sha256 differs from the official file's {digest[:16]}… (damaged?); {NO_VERIFY_HINT}"
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_CONTROL = re.compile(r"\x00|\r(?!\n|\Z)")  # a NUL, or a CR that is neither part of a CRLF nor the last character


def line_problem(line: str) -> str | None:
    """What is wrong with one line of a text file (its LF or CRLF ending removed): a NUL byte, or a CR that
    ends no line (old Mac line endings run a whole file into one line); ``None`` when nothing is.

    >>> line_problem("index\\tsentence\\rtrain0\\ta")
    'CR without LF at column 15 (old Mac line endings?); lines must end with LF or CRLF'
    """
    found = re.search(r"[\x00\r]", line)
    if found is None:
        return None
    if found[0] == "\x00":
        return f"NUL byte at column {found.start() + 1} (a binary or damaged file?)"
    return f"CR without LF at column {found.start() + 1} (old Mac line endings?); lines must end with LF or CRLF"


def utf8(raw: bytes, where: str | Path) -> str:
    """``raw`` decoded as UTF-8; a byte that is not raises :class:`DataError` naming ``where:line``.

    >>> utf8(b"ok\\ncaf\\xe9\\n", "x.tsv")
    Traceback (most recent call last):
    biomtl.errors.DataError: x.tsv:2: not valid UTF-8 (byte 0xe9 at column 4)
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = e.start - raw.rfind(b"\n", 0, e.start)
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(where, line, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column})") from None


def decode(raw: bytes, where: str | Path) -> str:
    """``raw`` as UTF-8 text (a leading BOM dropped); a byte that is not UTF-8, a NUL or a CR that is not part
    of a CRLF (:func:`line_problem`) raises :class:`DataError` naming ``where:line``.

    >>> decode(b"a\\r\\nb\\n", "x.tsv")
    'a\\r\\nb\\n'
    >>> decode(b"a\\rb\\rc", "x.tsv")
    Traceback (most recent call last):
    biomtl.errors.DataError: x.tsv:1: CR without LF at column 2 (old Mac line endings?); lines must end with LF or CRLF
    """
    text = utf8(raw, where).removeprefix("\ufeff")
    found = _CONTROL.search(text)
    if found:
        start = text.rfind("\n", 0, found.start()) + 1
        end = text.find("\n", found.start())
        line = text[start : end if end >= 0 else len(text)].removesuffix("\r")
        raise DataError(where, text.count("\n", 0, start) + 1, str(line_problem(line)))
    return text


def read_text(path: Path) -> str:
    """The text of a corpus file, checked by :func:`decode`."""
    return decode(path.read_bytes(), path)


def read_lines(path: Path) -> list[str]:
    """The lines of a corpus file without their LF or CRLF ending (a final line break adds no empty line).

    Only LF breaks lines: ``str.splitlines`` would also break at U+2028, U+0085 and others, which occur inside
    corpus text (HoC's mojibake has U+0085).
    """
    return split_lines(read_text(path))


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Write one JSON object a line, UTF-8 as it is (readers split lines at LF only, :mod:`biomtl.lines`)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


_BREAKS = re.compile(r"[\t\n\r]")


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a TSV literally, one row a line and fields joined by tabs: no CSV quoting, so a reader that splits
    on tabs reads back exactly the text written (a sentence may start with ``"``)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            fields = [str(value) for value in row]
            broken = next((field for field in fields if _BREAKS.search(field)), None)
            if broken is not None:
                raise BiomtlError(f"{path}: cannot write {broken!r}: a field holds a tab or line break")
            f.write("\t".join(fields) + "\n")
