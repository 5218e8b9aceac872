"""Every shipped config validates; clinical formats are exercised on small synthetic files."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomtl.config import REPO_CONFIGS
from biomtl.data.readers import read_split, validate_dataset
from biomtl.datadirs import DataDirs
from biomtl.tasks import load_dataset_spec

PUBLIC = sorted(p for p in (REPO_CONFIGS / "datasets").glob("*.yaml"))
CLINICAL = sorted((REPO_CONFIGS / "datasets" / "clinical").glob("*.yaml"))


def test_shipped_dataset_configs_parse():
    assert {p.stem for p in PUBLIC} >= {
        "bc5cdr-chemical", "bc5cdr-disease", "chemprot", "ddi", "biosses", "hoc",
        "bc2gm", "jnlpba", "linnaeus", "s800", "euadr", "pubmedqa", "bioasq",
    }
    for path in PUBLIC + CLINICAL:
        spec = load_dataset_spec(path)
        assert spec.name == path.stem


@pytest.mark.slow
@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: p.stem)
def test_public_configs_validate_against_real_data(path, corpora_dir, prepared_dir):
    spec = load_dataset_spec(path, DataDirs.from_env(corpora_dir, prepared_dir))
    assert validate_dataset(spec) == []


CLINICAL_FILES = {
    "mednli": ("MedNLI/mli_{split}_v1.jsonl",
               '{{"pairID": "{split}1", "sentence1": "Patient has fever.", "sentence2": "Patient is febrile.", "gold_label": "entailment"}}\n'
               '{{"pairID": "{split}2", "sentence1": "No chest pain.", "sentence2": "Chest pain.", "gold_label": "contradiction"}}\n'),
    "medsts": ("MedSTS/{split}.tsv",
               "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
               "0\tc\tf\t2018\t0\ts\ts\tTake one tablet daily.\tTake 1 tablet every day.\t4.5\n"
               "1\tc\tf\t2018\t1\ts\ts\tNo known allergies.\tPatient denies fever.\t0.5\n"),
    "share-clefe": ("ShARe-CLEFE/{split_title}.tsv",
                    "Patient\tO\nhas\tO\nchest\tB\npain\tI\n.\tO\n\nNo\tO\nfever\tB\n\n"),
    "i2b2-2010": ("i2b2-2010/{split}.tsv",
                  "index\tsentence\tlabel\n"
                  "{split}1\tHe was given @treatment$ for @problem$ .\tTrAP\n"
                  "{split}2\t@test$ showed @problem$ .\tTeRP\n"
                  "{split}3\t@problem$ and @problem$ .\tfalse\n"),
}


@pytest.mark.parametrize("path", CLINICAL, ids=lambda p: p.stem)
def test_clinical_formats_on_synthetic_files(path, tmp_path):
    pattern, content = CLINICAL_FILES[path.stem]
    titles = {"train": "Training", "dev": "Development", "test": "Test"}
    for split in ("train", "dev", "test"):
        target = tmp_path / pattern.format(split=split, split_title=titles[split])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.format(split=split) if "{" in content else content)
    spec = load_dataset_spec(path, DataDirs.from_env(corpora=tmp_path))
    assert spec.restricted
    assert validate_dataset(spec) == []
    examples = read_split(spec, "train")
    assert examples and all(ex.label is not None for ex in examples)


def test_clinical_data_is_never_shipped():
    repo = Path(__file__).resolve().parents[1]
    for name in ("MedNLI", "MedSTS", "ShARe-CLEFE", "i2b2-2010", "mli_train_v1.jsonl"):
        assert not list(repo.glob(f"**/{name}")), name


def test_caps_keep_whole_documents(toy_tasks):
    spec = load_dataset_spec(toy_tasks["toy-hoc"])
    full = read_split(spec, "train")
    capped = read_split(spec, "train", limit=7)
    docs = {ex.doc_id for ex in capped}
    assert 7 <= len(capped) < len(full)
    assert sorted(ex.id for ex in capped) == sorted(ex.id for ex in full if ex.doc_id in docs)
    assert read_split(spec, "train", limit=7) == capped  # the same subset every time


def test_relative_corpus_directory_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    pattern, content = CLINICAL_FILES["i2b2-2010"]
    for split in ("train", "dev", "test"):
        target = tmp_path / "corpora" / pattern.format(split=split)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.format(split=split))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIOMTL_CORPORA", "corpora")
    spec = load_dataset_spec(REPO_CONFIGS / "datasets" / "clinical" / "i2b2-2010.yaml")
    assert validate_dataset(spec) == []
