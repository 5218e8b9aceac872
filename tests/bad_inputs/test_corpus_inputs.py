"""Damaged corpora handed to ``biomtl data prepare``: cut off, emptied, altered, not UTF-8, odd line endings.

Each case copies the corpus folders of one task into a tmp corpus directory, damages one file and runs
``data prepare`` in-process. It must end with exit status 2 and one stderr line ``biomtl: error: <message>``
(asserted verbatim), and leave nothing behind: neither the output directory nor any temporary. Cases marked
``--no-verify`` stand for a user with another release, whose files are not compared with the official ones but
must still read cleanly. ``docs/bad-inputs.md`` lists the cases.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_bad_inputs import DOCS, _snapshot

from biomtl.cli import main
from biomtl.corpora import official_files

PUBTATOR_TRAIN = "BC5CDR-original/CDR_TrainingSet.PubTator.txt"
BIOSSES_PAIRS = "BIOSSES/original/annotation_pairs_scores.tsv"
HOC_DEV_DOCIDS = "HoC/blue/dev_docid.txt"


def copy_corpus(corpora_dir: Path, task: str, to: Path) -> Path:
    """A writable copy of the corpus folders that ``task`` is prepared from."""
    for folder in sorted({name.split("/")[0] for name in official_files(task)}):
        shutil.copytree(corpora_dir / folder, to / folder)
    for path in to.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return to


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    def damage(corpora: Path) -> None:
        data = (corpora / name).read_bytes()
        (corpora / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _drop_last_line(name: str) -> Callable[[Path], None]:
    def damage(corpora: Path) -> None:
        lines = (corpora / name).read_bytes().splitlines(keepends=True)
        (corpora / name).write_bytes(b"".join(lines[:-1]))

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda corpora: (corpora / name).write_bytes(data)


def _replace(name: str, old: bytes, new: bytes) -> Callable[[Path], None]:
    def damage(corpora: Path) -> None:
        data = (corpora / name).read_bytes()
        assert old in data, f"{old!r} not in {name}"
        (corpora / name).write_bytes(data.replace(old, new, 1))

    return damage


def _line_endings(name: str, ending: bytes) -> Callable[[Path], None]:
    return lambda corpora: (corpora / name).write_bytes((corpora / name).read_bytes().replace(b"\n", ending))


@dataclass(frozen=True)
class Case:
    """``damage`` breaks the copy of ``task``'s corpus; ``message`` follows ``biomtl: error: `` with ``{c}`` for
    the corpus copy."""

    id: str
    task: str
    damage: Callable[[Path], object]
    message: str
    no_verify: bool = False


CASES = [
    # --- the official files, verified by size and sha256 -----------------------------------------------------
    Case("prepare-file-cut-off", "bc5cdr-chemical", _cut(PUBTATOR_TRAIN, 0.5),
         f"{{c}}/{PUBTATOR_TRAIN}: 564999 bytes, but the official file has 1129998 (cut off or damaged?); "
         "pass --no-verify to convert another release"),
    Case("prepare-file-empty", "bc5cdr-chemical", _write(PUBTATOR_TRAIN, b""),
         f"{{c}}/{PUBTATOR_TRAIN}: empty file (the official file has 1129998 bytes)"),
    Case("prepare-file-altered", "bc5cdr-chemical", _replace(PUBTATOR_TRAIN, b"Naloxone", b"Nalaxone"),
         f"{{c}}/{PUBTATOR_TRAIN}: sha256 differs from the official file's 7afcec134e3d4871… (damaged?); "
         "pass --no-verify to convert another release"),
    Case("prepare-comparison-file-cut-off", "biosses", _cut("BIOSSES/blue/dev.tsv", 0.9),
         "{c}/BIOSSES/blue/dev.tsv: 5315 bytes, but the official file has 5906 (cut off or damaged?); "
         "pass --no-verify to convert another release"),
    Case("prepare-zip-cut-off", "chemprot", _cut("ChemProt/original/ChemProt.zip", 0.5),
         "{c}/ChemProt/original/ChemProt.zip: 1070105 bytes, but the official file has 2140210 (cut off or damaged?); "
         "pass --no-verify to convert another release"),
    Case("prepare-not-utf8", "biosses", _replace(BIOSSES_PAIRS, b"\xe2\x80\x94", b"\x97"),
         f"{{c}}/{BIOSSES_PAIRS}:10: not valid UTF-8 (byte 0x97 at column 398)"),
    Case("prepare-cr-line-endings", "hoc", _line_endings(HOC_DEV_DOCIDS, b"\r"),
         f"{{c}}/{HOC_DEV_DOCIDS}:1: CR without LF at column 9 (old Mac line endings?); lines must end with LF or CRLF"),
    Case("prepare-nul-byte", "biosses", _replace(BIOSSES_PAIRS, b"Craf", b"Cr\x00f"),
         f"{{c}}/{BIOSSES_PAIRS}:2: NUL byte at column 37 (a binary or damaged file?)"),
    # --- another release (--no-verify): not compared, but read strictly ----------------------------------------
    Case("prepare-no-verify-file-empty", "bc5cdr-chemical", _write(PUBTATOR_TRAIN, b""),
         f"{{c}}/{PUBTATOR_TRAIN}: empty file (the official file has 1129998 bytes)", no_verify=True),
    Case("prepare-no-verify-no-documents", "bc5cdr-chemical", _write(PUBTATOR_TRAIN, b"\n\n"),
         f"{{c}}/{PUBTATOR_TRAIN}: no documents", no_verify=True),
    Case("prepare-no-verify-cut-mid-line", "bc5cdr-chemical", _cut(PUBTATOR_TRAIN, 0.5),
         f"{{c}}/{PUBTATOR_TRAIN}:6073: expected 'PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>id'", no_verify=True),
    Case("prepare-no-verify-not-utf8", "biosses", _replace(BIOSSES_PAIRS, b"\xe2\x80\x94", b"\x97"),
         f"{{c}}/{BIOSSES_PAIRS}:10: not valid UTF-8 (byte 0x97 at column 398)", no_verify=True),
    Case("prepare-no-verify-cr-line-endings", "biosses", _line_endings(BIOSSES_PAIRS, b"\r"),
         f"{{c}}/{BIOSSES_PAIRS}:1: CR without LF at column 94 (old Mac line endings?); lines must end with LF or CRLF",
         no_verify=True),
    Case("prepare-no-verify-cut-at-a-line", "biosses", _drop_last_line(BIOSSES_PAIRS),
         f"{{c}}/{BIOSSES_PAIRS}: sentence_id(s) [100] of the BLUE split are missing", no_verify=True),
    Case("prepare-no-verify-zip-cut-off", "chemprot", _cut("ChemProt/original/ChemProt.zip", 0.5),
         "{c}/ChemProt/original/ChemProt.zip is not a readable zip file: File is not a zip file", no_verify=True),
    Case("prepare-no-verify-ddi-zip-cut-off", "ddi", _cut("DDI/original/DDICorpus-2013.zip", 0.5),
         "{c}/DDI/original/DDICorpus-2013.zip is not a readable zip file: File is not a zip file", no_verify=True),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_damaged_corpus(case: Case, corpora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpora = copy_corpus(corpora_dir, case.task, tmp_path / "corpora")
    case.damage(corpora)
    before = _snapshot(tmp_path)
    argv = ["data", "prepare", "--corpora", str(corpora), "--out", str(tmp_path / "out" / "tasks"), "--tasks", case.task]
    capsys.readouterr()

    status = main([*argv, "--no-verify"] if case.no_verify else argv)

    assert status == 2
    assert capsys.readouterr().err == f"biomtl: error: {case.message.format(c=corpora)}\n"
    assert _snapshot(tmp_path) == before  # no output directory, no temporary


def test_every_case_is_documented() -> None:
    doc = DOCS.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to {DOCS}: {missing}"


def test_official_files_cover_every_file_a_converter_reads() -> None:
    from biomtl.corpora import bc5cdr, biosses, chemprot, ddi, hoc

    reads = {
        "bc5cdr-chemical": [f"{bc5cdr.ORIGINAL}/{n}" for n in bc5cdr.SPLIT_FILES.values()]
        + [f"{bc5cdr.IOB_DIRS['Chemical']}/{n}" for n in bc5cdr.IOB_FILES.values()],
        "bc5cdr-disease": [f"{bc5cdr.ORIGINAL}/{n}" for n in bc5cdr.SPLIT_FILES.values()]
        + [f"{bc5cdr.IOB_DIRS['Disease']}/{n}" for n in bc5cdr.IOB_FILES.values()],
        "chemprot": [chemprot.ZIP, *chemprot.BLUE_FILES.values()],
        "ddi": [ddi.ZIP, ddi.BLUE_DEV, ddi.BLUE_TRAIN_POSITIVES, ddi.BLUE_TEST],
        "biosses": [biosses.PAIRS_FILE, *biosses.BLUE_FILES.values()],
        "hoc": [f"{hoc.FOLDER}/{s}{suffix}" for s in hoc.SPLITS for suffix in (".tsv", "_docid.txt")],
    }
    for task, names in reads.items():
        assert set(names) <= set(official_files(task)), task


def test_a_verified_manifest_and_no_verify_after_it(corpora_dir: Path, tmp_path: Path, capsys) -> None:
    """The manifest says whether the sources were verified; a task prepared without verification is not taken
    as up to date by a verifying run."""
    corpora = copy_corpus(corpora_dir, "biosses", tmp_path / "corpora")
    out = tmp_path / "tasks"
    assert main(["data", "prepare", "--corpora", str(corpora), "--out", str(out), "--tasks", "biosses", "--no-verify"]) == 0
    manifest = json.loads((out / "biosses" / "manifest.json").read_text())
    assert (manifest["verified"], manifest["format_version"], manifest["reference_mismatches"]) == (False, 2, [])
    assert capsys.readouterr().out.endswith("(sources not verified)\n")

    assert main(["data", "prepare", "--corpora", str(corpora), "--out", str(out), "--tasks", "biosses"]) == 2
    assert "exists and was not prepared from these corpora" in capsys.readouterr().err
    assert main(["data", "prepare", "--corpora", str(corpora), "--out", str(out), "--tasks", "biosses", "--overwrite"]) == 0
    assert json.loads((out / "biosses" / "manifest.json").read_text())["verified"] is True
    assert "not verified" not in capsys.readouterr().out


@pytest.mark.slow
def test_no_verify_converts_a_shorter_release_and_says_so(corpora_dir: Path, tmp_path: Path, capsys, caplog) -> None:
    """A train file that ends after its 230th document (another release, say) converts with --no-verify; the
    manifest and a warning say how far the counts are from the reference."""
    corpora = copy_corpus(corpora_dir, "bc5cdr-chemical", tmp_path / "corpora")
    path = corpora / PUBTATOR_TRAIN
    documents = path.read_text(encoding="utf-8").split("\n\n")
    path.write_text("\n\n".join(documents[:230]) + "\n\n", encoding="utf-8")
    argv = ["data", "prepare", "--corpora", str(corpora), "--out", str(tmp_path / "tasks"), "--tasks", "bc5cdr-chemical"]

    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {path}: 497540 bytes, but the official file has 1129998 (cut off or damaged?); "
        "pass --no-verify to convert another release\n"
    )
    with caplog.at_level(logging.WARNING, logger="biomtl.corpora"):
        assert main([*argv, "--no-verify"]) == 0
    assert [r.getMessage() for r in caplog.records] == ["bc5cdr-chemical: train: 2320 mentions, the reference has 5203"]
    assert capsys.readouterr().out == (
        "bc5cdr-chemical: train 2320 mentions, dev 5347 mentions, test 5385 mentions  "
        f"→ {tmp_path / 'tasks' / 'bc5cdr-chemical'}  (sources not verified)\n"
    )
    manifest = json.loads((tmp_path / "tasks" / "bc5cdr-chemical" / "manifest.json").read_text())
    assert manifest["verified"] is False
    assert manifest["reference_mismatches"] == ["train: 2320 mentions, the reference has 5203"]
    assert manifest["counts"]["train"]["documents"] == 230
