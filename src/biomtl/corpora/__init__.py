"""Official corpora → BLUE task files (``biomtl data prepare``).

Each corpus module exposes ``prepare(corpora: Path, out: Path) -> dict`` for each task it produces. ``out`` is
an empty directory for that task; the function writes ``train``/``dev``/``test`` files there and returns the
task-specific part of the manifest (counts, the BLUE reference counts, and every difference explained). The
driver below first checks that the source files are the official ones (:mod:`biomtl.corpora.files`), then adds
file sizes and sha256 values, writes ``manifest.json``, and moves the finished directory into place
atomically, so an interrupted or failed run never leaves a half-written task behind.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from biomtl import __version__
from biomtl.atomic import atomic_dir, check_writable_dir
from biomtl.corpora.files import check_sources, sha256
from biomtl.datadirs import default_prepared_dir, resolve_corpora_dir  # noqa: F401 (re-exported)
from biomtl.errors import BiomtlError, OutputExistsError

log = logging.getLogger(__name__)

# The layout of the task files; a directory of another version is not up to date. 2: TSV fields are written
# literally (1 CSV-quoted fields that hold '"').
FORMAT_VERSION = 2

Preparer = Callable[[Path, Path], dict]


# task → (module, function); modules are imported only when their task is prepared.
PREPARERS: dict[str, tuple[str, str]] = {
    "bc5cdr-chemical": ("bc5cdr", "prepare_chemical"),
    "bc5cdr-disease": ("bc5cdr", "prepare_disease"),
    "chemprot": ("chemprot", "prepare"),
    "ddi": ("ddi", "prepare"),
    "chemprot-spans": ("chemprot", "prepare_spans"),
    "ddi-spans": ("ddi", "prepare_spans"),
    "biosses": ("biosses", "prepare"),
    "hoc": ("hoc", "prepare"),
}


def _preparer(task: str) -> Preparer:
    module, function = PREPARERS[task]
    return getattr(importlib.import_module(f"biomtl.corpora.{module}"), function)


TASKS = ("bc5cdr-chemical", "bc5cdr-disease", "chemprot", "ddi", "biosses", "hoc")


def prepare(
    corpora: Path, out: Path, tasks: list[str] | None = None, overwrite: bool = False, verify: bool = True
) -> dict[str, dict]:
    """Convert the official corpora under ``corpora`` into task directories under ``out``.

    Returns ``{task: manifest}``. An existing task directory is an error unless ``overwrite``. Every source
    file must be the official release's (size and sha256, :func:`official_files`) unless
    ``verify`` is false; the manifest records ``verified``.

    >>> prepare(Path("../shared/data"), Path("/tmp/tasks"), ["biosses"])  # doctest: +SKIP
    """
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in PREPARERS]
    if unknown:
        raise BiomtlError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(PREPARERS)}")
    check_writable_dir(out, "--out")
    for task in tasks:  # before anything is written: a damaged file stops the run, not one task of it
        check_sources(corpora, official_files(task), verify)
    manifests = {}
    if not overwrite:
        # A task prepared from the very same source files by this version is kept as it is (so the quick
        # start can be rerun); anything else in the way needs --overwrite.
        for task in [t for t in tasks if (out / t).exists()]:
            manifest = up_to_date(corpora, out / task, verify)
            if manifest is None:
                raise OutputExistsError(
                    f"{out / task} exists and was not prepared from these corpora by this biomtl version; "
                    "pass --overwrite to replace it"
                )
            log.info("%s: up to date in %s", task, out / task)
            manifests[task] = manifest
    made = [d for d in (out, *out.parents) if not d.exists()]  # removed again if they stay empty
    out.mkdir(parents=True, exist_ok=True)
    try:
        for task in tasks:
            if task in manifests:
                continue
            log.info("preparing %s", task)

            def write(tmp: Path, task: str = task) -> None:
                manifest = _convert(task, corpora, tmp, verify)
                manifest["output_files"] = {
                    p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
                    for p in sorted(tmp.iterdir())
                    if p.is_file()
                }
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                manifests[task] = manifest

            atomic_dir(out / task, write)
    except BaseException:
        for folder in made:  # innermost first
            if not any(folder.iterdir()):
                folder.rmdir()
        raise
    return manifests


def official_files(task: str) -> dict[str, tuple[int | None, str]]:
    """``{path: (bytes, sha256)}`` of the release files ``task`` is prepared from (the download catalogue).

    >>> official_files("biosses")["BIOSSES/blue/dev.tsv"][0]
    5906
    """
    from biomtl.corpora.download import load_catalogue  # it imports this package

    corpora, _ = load_catalogue().select([task])
    return {f.path: (f.bytes, f.sha256) for corpus in corpora for f in corpus.files}


def _convert(task: str, corpora: Path, out: Path, verify: bool) -> dict:
    """Run the task's converter into ``out``; returns the manifest without ``output_files``."""
    part = _preparer(task)(corpora, out)
    mismatches = reference_mismatches(part)
    for mismatch in mismatches:
        log.warning("%s: %s", task, mismatch)
    head = {"task": task, "biomtl_version": __version__, "format_version": FORMAT_VERSION, "verified": verify}
    return {**head, **part, "reference_mismatches": mismatches}


UNITS = ("mentions", "positives", "pairs", "abstracts")  # what the reference counts count, per task


def headline_count(counts: dict) -> tuple[int, str]:
    """The count of a split that its reference gives, and its unit: ``(5203, "mentions")``."""
    unit = next(u for u in UNITS if u in counts)
    return counts[unit], unit


def reference_mismatches(manifest: dict) -> list[str]:
    """One line per split whose count differs from the reference count (BLUE's README).

    >>> reference_mismatches({"counts": {"train": {"mentions": 2323}}, "reference": {"train": 5203}})
    ['train: 2323 mentions, the reference has 5203']
    """
    mismatches = []
    for split, counts in manifest["counts"].items():
        count, unit = headline_count(counts)
        reference = manifest["reference"].get(split)
        if reference is not None and count != reference:
            mismatches.append(f"{split}: {count} {unit}, the reference has {reference}")
    return mismatches


def up_to_date(corpora: Path, task_dir: Path, verify: bool = True) -> dict | None:
    """The task's manifest when it was written by this version, in this file format, from sources with
    unchanged sha256 (verified, if ``verify``) and its output files are intact; ``None`` otherwise."""
    try:
        manifest = json.loads((task_dir / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("biomtl_version") != __version__ or manifest.get("format_version") != FORMAT_VERSION:
            return None
        if verify and manifest.get("verified") is not True:
            return None
        for source in manifest["sources"]:
            if sha256(corpora / source["path"]) != source["sha256"]:
                return None
        for name, info in manifest["output_files"].items():
            if sha256(task_dir / name) != info["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest

