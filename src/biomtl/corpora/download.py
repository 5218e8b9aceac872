"""``biomtl data download``: fetch the public corpora from their origin repositories.

The catalogue (``sources.json`` beside this module) lists every file that ``data prepare`` and the dataset
configs read: its place under the corpus directory, a raw-file URL pinned to the origin commit, its sha256 and
its size. Each file is streamed into ``<name>.part`` beside its target, resumed with an HTTP ``Range`` request
when a part is there, and renamed into place only once its sha256 matches. A file already in place is kept
when its sha256 matches and refused otherwise: nothing here ever writes over a user's file. Corpora behind a
data-use agreement cannot be fetched; for those the catalogue says where to ask and where to put the files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from biomtl import __version__
from biomtl.corpora.files import sha256
from biomtl.datadirs import CORPORA_ENV, resolve_corpora_dir
from biomtl.errors import BiomtlError, did_you_mean

log = logging.getLogger(__name__)

FORMAT = 1  # of sources.json
CHUNK = 1 << 16
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SourceFile:
    path: str  # where `data prepare` reads it, relative to the corpus directory: "DDI/original/README"
    url: str  # raw file at the origin commit
    sha256: str
    bytes: int | None


@dataclass(frozen=True)
class Corpus:
    name: str
    tasks: tuple[str, ...]
    licence: str
    files: tuple[SourceFile, ...]


@dataclass(frozen=True)
class RestrictedCorpus:
    """A corpus behind a data-use agreement: the user fetches it and places ``files`` themselves."""

    name: str
    tasks: tuple[str, ...]
    where: str
    terms: str
    how: str
    files: tuple[str, ...]

    def instructions(self, corpora: Path) -> str:
        places = ", ".join(str(corpora / f) for f in self.files)
        return (
            f"{self.name} ({', '.join(self.tasks)}) cannot be downloaded: {self.terms}.\n"
            f"  Get it from {self.where}; {self.how}; place the files as {places}"
        )


@dataclass(frozen=True)
class Catalogue:
    corpora: tuple[Corpus, ...]
    restricted: tuple[RestrictedCorpus, ...]

    def tasks(self) -> list[str]:
        """Every task the catalogue knows, public first."""
        known = [t for c in self.corpora for t in c.tasks] + [t for r in self.restricted for t in r.tasks]
        return list(dict.fromkeys(known))

    def select(self, tasks: Sequence[str] | None) -> tuple[list[Corpus], list[RestrictedCorpus]]:
        """The corpora that ``tasks`` need; ``None`` means every public corpus."""
        if tasks is None:
            return list(self.corpora), []
        known = self.tasks()
        for task in tasks:
            if task not in known:
                raise BiomtlError(f"unknown task '{task}'{did_you_mean(task, known, 'tasks')}")
        wanted = set(tasks)
        return (
            [c for c in self.corpora if wanted & set(c.tasks)],
            [r for r in self.restricted if wanted & set(r.tasks)],
        )


@dataclass(frozen=True)
class DownloadReport:
    corpora: Path
    downloaded: list[str]
    present: list[str]
    licences: list[Corpus]
    restricted: list[RestrictedCorpus]
    tasks: list[str]

    def lines(self) -> list[str]:
        """What the CLI prints once every file is in place."""
        total = len(self.downloaded) + len(self.present)
        out = [
            f"{total} files in {self.corpora}: {len(self.downloaded)} downloaded, {len(self.present)} already present"
        ]
        out += [f"licence of {c.name}: {c.licence}" for c in self.licences]
        for r in self.restricted:
            if all((self.corpora / f).is_file() for f in r.files):
                out.append(f"{r.name}: found in {self.corpora}")
            else:
                out.append(r.instructions(self.corpora))
        return out


# ---------------------------------------------------------------------------------------------------------
# The catalogue


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The shipped catalogue, or the JSON file ``path`` in the same format.

    >>> len(load_catalogue().corpora) > 0
    True
    """
    if path is None:
        where = "biomtl/corpora/sources.json"
        text = resources.files("biomtl.corpora").joinpath("sources.json").read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise BiomtlError(f"cannot read catalogue {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BiomtlError(f"{where}:{e.lineno}: not valid JSON: {e.msg}") from None
    return _catalogue(doc, where)


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BiomtlError(f"{where}: missing key '{key}'")
    value = obj[key]
    if kind is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise BiomtlError(f"{where}.{key}: expected a list of strings")
    if kind is not list and not isinstance(value, kind):
        raise BiomtlError(f"{where}.{key}: expected {kind.__name__}")
    return value


def _relative_path(value: str, where: str) -> str:
    # A catalogue names places inside the corpus directory, never outside it.
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise BiomtlError(f"{where}: '{value}' is not a relative path inside the corpus directory")
    return str(path)


def _source_file(obj: Any, where: str) -> SourceFile:
    path = _relative_path(_field(obj, "path", str, where), f"{where}.path")
    url = _field(obj, "url", str, where)
    if urlsplit(url).scheme not in ("http", "https"):
        raise BiomtlError(f"{where}.url: '{url}' is not an http(s) URL")
    digest = _field(obj, "sha256", str, where)
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise BiomtlError(f"{where}.sha256: expected 64 lowercase hex digits")
    size = obj.get("bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise BiomtlError(f"{where}.bytes: expected a byte count")
    return SourceFile(path, url, digest, size)


def _catalogue(doc: Any, where: str) -> Catalogue:
    top = f"{where}: catalogue"
    if _field(doc, "format", int, top) != FORMAT:
        raise BiomtlError(f"{top}.format: {doc['format']} is not supported (expected {FORMAT})")
    corpora = []
    for i, c in enumerate(_items(doc, "corpora", top)):
        at = f"{where}: corpora[{i}]"
        files = tuple(_source_file(f, f"{at}.files[{j}]") for j, f in enumerate(_items(c, "files", at)))
        corpora.append(
            Corpus(
                _field(c, "name", str, at),
                tuple(_field(c, "tasks", list, at)),
                _field(c, "licence", str, at),
                files,
            )
        )
    restricted = []
    for i, r in enumerate(_items(doc, "restricted", top, required=False)):
        at = f"{where}: restricted[{i}]"
        places = tuple(_relative_path(f, f"{at}.files") for f in _field(r, "files", list, at))
        restricted.append(
            RestrictedCorpus(
                _field(r, "name", str, at),
                tuple(_field(r, "tasks", list, at)),
                _field(r, "where", str, at),
                _field(r, "terms", str, at),
                _field(r, "how", str, at),
                places,
            )
        )
    seen: set[str] = set()
    for i, c in enumerate(corpora):
        for f in c.files:
            if f.path in seen:
                raise BiomtlError(f"{where}: corpora[{i}]: {f.path} is listed twice")
            seen.add(f.path)
    return Catalogue(tuple(corpora), tuple(restricted))


def _items(obj: Any, key: str, where: str, required: bool = True) -> list:
    if isinstance(obj, dict) and key not in obj and not required:
        return []
    value = _field(obj, key, object, where)
    if not isinstance(value, list):
        raise BiomtlError(f"{where}.{key}: expected a list")
    return value


# ---------------------------------------------------------------------------------------------------------
# Downloading


def download(
    corpora: str | Path | None,
    tasks: Sequence[str] | None = None,
    catalogue: Catalogue | None = None,
    progress: bool = True,
) -> DownloadReport:
    """Fetch every catalogue file that ``tasks`` need (default: every public task) into ``corpora``.

    ``corpora`` falls back to ``$BIOMTL_CORPORA`` and is created when missing. Files already in place with the
    catalogue's sha256 are kept; a file in place with another sha256 stops the run before any download.

    >>> download("corpora", ["biosses"]).lines()[0]  # doctest: +SKIP
    '3 files in corpora: 3 downloaded, 0 already present'
    """
    catalogue = catalogue or load_catalogue()
    public, restricted = catalogue.select(tasks)
    value = corpora or os.environ.get(CORPORA_ENV)
    if value:
        _make_parents(Path(value))
    root = resolve_corpora_dir(value)

    files = [f for c in public for f in c.files]
    present = [f.path for f in files if _in_place(f, root / f.path)]
    downloaded = []
    for f in files:
        if f.path not in present:
            fetch(f, root / f.path, progress)
            downloaded.append(f.path)
    selected = list(tasks) if tasks is not None else [t for c in public for t in c.tasks]
    return DownloadReport(root, downloaded, present, public, restricted, list(dict.fromkeys(selected)))


def _in_place(source: SourceFile, target: Path) -> bool:
    """Whether ``target`` already holds ``source``; refuses a different file in its place."""
    if not target.exists():
        return False
    if target.is_file() and sha256(target) == source.sha256:
        return True
    raise BiomtlError(
        f"{target} exists but is not the catalogue's file (sha256 {source.sha256[:12]}…); "
        "move it away and rerun, biomtl never overwrites it"
    )


class _Dropped(Exception):
    """The connection ended before the announced length."""


def fetch(source: SourceFile, target: Path, progress: bool = True) -> None:
    """Download ``source`` to ``target`` through ``target.part``; rename only when the sha256 matches.

    A connection lost mid-file is resumed at once while each attempt brings more bytes; otherwise the part
    stays for the next run. A part left by an earlier run that fails the checksum is discarded and the file
    fetched again once. A wrong checksum leaves nothing behind.
    """
    part = target.with_name(target.name + ".part")
    created = _make_parents(target.parent)
    stale = part.is_file() and part.stat().st_size > 0
    while True:
        before = _size(part)
        try:
            _stream(source, part, progress)
        except _Dropped:
            now = _size(part)
            if now > before and (source.bytes is None or now < source.bytes):
                log.info("%s: connection lost at %d bytes; resuming", source.path, now)
                continue
            raise BiomtlError(
                f"{source.path}: connection to {urlsplit(source.url).netloc} lost after {now} bytes; "
                "rerun to resume"
            ) from None
        actual = sha256(part)
        if actual == source.sha256:
            break
        part.unlink()
        if stale:
            log.info(
                "%s: the partial download from an earlier run does not check out; starting again", source.path
            )
            stale = False
            continue
        for folder in reversed(created):
            if not any(folder.iterdir()):
                folder.rmdir()
        raise BiomtlError(
            f"{source.path}: sha256 of {source.url} is {actual}, not the catalogue's {source.sha256}; "
            "nothing was kept"
        )
    os.replace(part, target)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for m in missing:
        try:
            m.mkdir()
        except OSError as e:
            raise BiomtlError(f"cannot create {m}: {e.strerror}") from None
    return missing


def _stream(source: SourceFile, part: Path, progress: bool) -> None:
    """Append the rest of ``source`` to ``part`` (from byte 0 when the server ignores ``Range``)."""
    offset = _size(part)
    headers = {"User-Agent": f"biomtl/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    host = urlsplit(source.url).netloc
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(source.url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return  # the part already holds the whole file (or more): the checksum decides
        raise BiomtlError(f"{source.path}: {source.url} answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = getattr(e.reason, "strerror", None) or e.reason
        raise BiomtlError(f"{source.path}: cannot reach {host} ({reason})") from None
    except (HTTPException, OSError) as e:
        raise BiomtlError(f"{source.path}: cannot reach {host} ({e})") from None
    with response:
        if offset and response.status != 206:
            log.info("%s: %s ignored the Range request; downloading from the start", source.path, host)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        total = offset + expected if expected is not None else source.bytes
        received = 0
        try:
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=source.path,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    disable=not progress,
                    leave=True,
                ) as bar,
            ):
                while chunk := _read(response):
                    f.write(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
        except OSError as e:
            raise BiomtlError(f"cannot write {part}: {e.strerror}") from None
    if expected is not None and received < expected:
        raise _Dropped()


def _read(response: Any) -> bytes:
    try:
        return response.read(CHUNK)
    except (HTTPException, OSError) as e:  # reset, timeout, truncated chunk
        raise _Dropped() from e
