"""Lines of text as files have them: only LF (or CRLF) ends a line.

``str.splitlines`` also breaks at U+2028, U+2029, U+0085, form feeds and other separators, which occur inside
real text (PubMed abstracts carry U+2028; HoC's mojibake U+0085) and which ``json.dumps(...,
ensure_ascii=False)`` writes raw inside a JSON string. Every reader of line-based input uses these instead.

>>> split_lines("a\\u2028b\\r\\nc\\n")
['a\\u2028b', 'c']
>>> numbered_lines("x\\n\\n  \\ny\\n")
[(1, 'x'), (4, 'y')]
"""

from __future__ import annotations


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` without their LF or CRLF ending; a final line break adds no empty line."""
    text = text.removesuffix("\n")
    return [line.removesuffix("\r") for line in text.split("\n")] if text else []


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of each line that is not blank, numbered from 1 as an editor numbers them."""
    return [(n, line) for n, line in enumerate(split_lines(text), start=1) if line.strip()]
