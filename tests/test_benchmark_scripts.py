"""Every script in ``benchmarks/`` imports against the library as it is now and answers ``--help``: a benchmark
is run by hand on a quiet machine, so nothing else would notice a script that an API change broke."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


def _load(script: Path, monkeypatch) -> ModuleType:
    """The script as a module: its imports run; its work is under ``if __name__ == "__main__"``."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_and_answers_help(script: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    module = _load(script, monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_the_gpu_kit_encoder_is_still_a_sentence_encoder(tmp_path: Path, monkeypatch) -> None:
    """The kit's fp16 copy of the embedded encoder keeps what makes ``similarity: auto`` choose the bi-encoder:
    without ``modules.json`` the GPU study of 2026-11-30 trained BIOSSES as a cross-encoder."""
    from biomtl.model import resolve_similarity

    _load(BENCHMARKS / "gpu_kit.py", monkeypatch).pack_encoder(tmp_path / "encoder")
    assert resolve_similarity("auto", str(tmp_path / "encoder")) == "biencoder"
    assert (tmp_path / "encoder" / "1_Pooling" / "config.json").is_file()


@pytest.mark.parametrize("task", ["bc5cdr-chemical", "bc5cdr-disease", "chemprot", "hoc"])
def test_the_comparison_gives_biomtl_every_setting_of_the_run_config(task: str, monkeypatch) -> None:
    """Every run config's training settings reach ``biomtl_train.py``'s parser as flags, a setting that is off
    (``group_by_length: false``) too, and the stock recipe gets only the shared ones."""
    from biomtl.config import read_yaml

    compare = _load(BENCHMARKS / "compare_training.py", monkeypatch)
    train_script = _load(BENCHMARKS / "biomtl_train.py", monkeypatch)
    folder = BENCHMARKS.parent / "configs" / "runs"
    shared, biomtl_only = compare.run_config_settings(folder, task)
    args = train_script.parse_args(compare.as_flags({"task": task, **shared, **biomtl_only}))
    for key, value in {**shared, **biomtl_only}.items():
        assert getattr(args, key) == value, key
    config = read_yaml(folder / f"{task}.yaml")
    assert args.group_by_length == config.get("group_by_length", True) and args.pack == config.get("pack", False)


def test_the_biosses_variants_of_the_diagnosis_change_only_biosses_runs(tmp_path: Path, monkeypatch) -> None:
    """``biosses_out`` leaves BIOSSES out of the MTL run but still fine-tunes it from the MTL encoder;
    ``biosses_epochs`` triples BIOSSES's ST and MTL-FT epochs alike; ``bioanchorW`` holds BIOSSES's ST and
    MTL-FT runs to the pretrained encoder; none touches another task's run."""
    import yaml

    from biomtl.experiments.plan import study_runs
    from biomtl.experiments.schema import load_study

    diagnosis = _load(BENCHMARKS / "mtl_diagnosis.py", monkeypatch)
    config = yaml.safe_load(diagnosis.STUDY.read_text())

    def runs(variant: str) -> dict:
        path, _ = diagnosis.write_variant(config, "cpu", variant, tmp_path / variant)
        return {r.name: r for r in study_runs(load_study(path, "cpu", seeds=1))}

    plain, out, epochs = runs("keep_heads"), runs("keep_heads+biosses_out"), runs("keep_heads+biosses_epochs")
    assert "biosses" in plain["mtl"].tasks and out["mtl"].tasks == [t for t in plain["mtl"].tasks if t != "biosses"]
    assert out["mtlft-biosses"].config.init_from == str(tmp_path / "keep_heads+biosses_out" / "seed1" / "mtl" / "best")
    assert (out["mtlft-biosses"].config.keep_heads, out["mtlft-hoc"].config.keep_heads) == (False, True)
    assert (epochs["st-biosses"].config.epochs, epochs["mtlft-biosses"].config.epochs) == (
        3 * plain["st-biosses"].config.epochs, 3 * plain["mtlft-biosses"].config.epochs)
    anchored = runs("keep_heads+bioanchor3")
    for name in ("st-biosses", "mtlft-biosses"):
        held = anchored[name].config
        assert (held.geometry_anchor, held.anchor_measure, held.anchor_to) == (3.0, "embeddings", "encoder"), name
    assert runs("bioanchor")["mtlft-biosses"].config.geometry_anchor == 10.0
    for name, run in plain.items():
        if "biosses" not in name:
            assert anchored[name].config.replace(output_dir="", init_from=None) == run.config.replace(
                output_dir="", init_from=None), name
        if "biosses" not in name and name != "mtl":
            assert epochs[name].config.epochs == run.config.epochs, name
            assert out[name].config.replace(output_dir="", init_from=None) == run.config.replace(
                output_dir="", init_from=None), name


def test_the_mtl_lr_and_anchor_variants_change_the_mtl_run_only(tmp_path: Path, monkeypatch) -> None:
    """``mtl_lr``: the MTL run's encoder LR is half the profile's, its heads keep ``head_lr``; ``anchorW``: the
    MTL run alone has ``geometry_anchor: W`` (the other runs keep the profile's: BIOSSES's hold theirs); ST
    runs are those of the profile, so a study can reuse them."""
    import yaml

    from biomtl.experiments.plan import study_runs
    from biomtl.experiments.schema import load_study

    diagnosis = _load(BENCHMARKS / "mtl_diagnosis.py", monkeypatch)
    config = yaml.safe_load(diagnosis.STUDY.read_text())

    def runs(variant: str) -> dict:
        path, _ = diagnosis.write_variant(config, "cpu-b16", variant, tmp_path / variant, dev_only=False)
        return {r.name: r for r in study_runs(load_study(path, "cpu-b16", seeds=1))}

    plain, slow, anchored = runs("keep_heads"), runs("keep_heads+mtl_lr"), runs("keep_heads+anchor30")
    assert (plain["mtl"].config.geometry_anchor, anchored["mtl"].config.geometry_anchor) == (0.0, 30.0)
    assert all(r.config.geometry_anchor == plain[n].config.geometry_anchor for n, r in anchored.items() if n != "mtl")
    assert (runs("anchor")["mtl"].config.geometry_anchor, runs("anchor0")["mtl"].config.geometry_anchor) == (10.0, 0.0)
    assert anchored["mtl"].config.anchor_measure == "cosines"
    held = runs("keep_heads+embanchor100")
    assert (held["mtl"].config.geometry_anchor, held["mtl"].config.anchor_measure) == (100.0, "embeddings")
    assert all(r.config.anchor_measure == plain[n].config.anchor_measure for n, r in held.items() if n != "mtl")
    assert runs("embanchor")["mtl"].config.geometry_anchor == 10.0
    texts = runs("simanchor3")
    assert (texts["mtl"].config.geometry_anchor, texts["mtl"].config.anchor_texts) == (3.0, "biosses")
    assert texts["mtl"].config.anchor_measure == "embeddings"
    assert all(r.config.anchor_texts == plain[n].config.anchor_texts for n, r in texts.items() if n != "mtl")
    assert slow["mtl"].config.lr == plain["mtl"].config.lr / 2
    assert slow["mtl"].config.head_lr == plain["mtl"].config.head_lr is not None
    for name, run in plain.items():
        if name.startswith("st-"):
            assert slow[name].config.replace(output_dir="") == run.config.replace(output_dir=""), name
        elif name.startswith("mtlft-"):
            assert slow[name].config.lr == run.config.lr, name


def test_embedding_drift_scores_each_directory_s_encoder_with_the_weight_free_head(
    tiny_encoder: str, toy_tasks: dict, tmp_path: Path, monkeypatch
) -> None:
    """A model directory that holds the untrained encoder scores exactly as the encoder zero-shot; one whose
    encoder was trained on another task scores with that encoder, not the untrained one."""
    from conftest import train_toy_model

    from biomtl.model import MultiTaskModel
    from biomtl.tasks import load_dataset_spec

    drift = _load(BENCHMARKS / "embedding_drift.py", monkeypatch)
    untouched = tmp_path / "untouched"
    MultiTaskModel.from_encoder(tiny_encoder, {"toy-rel": load_dataset_spec(toy_tasks["toy-rel"])}, max_length=32).save(untouched)
    trained = train_toy_model([toy_tasks["toy-rel"]], tiny_encoder, tmp_path / "rel", epochs=2)
    rows = drift.drift([str(untouched), str(trained)], str(toy_tasks["toy-sts"]), encoder=tiny_encoder)
    zero, same, moved = rows
    assert same["trained"] == moved["trained"] == ["toy-rel"] and zero["trained"] == []
    assert (same["dev"], same["test"]) == pytest.approx((zero["dev"], zero["test"]))
    assert (moved["dev"], moved["test"]) != pytest.approx((zero["dev"], zero["test"]))
    assert same["geometry"] == pytest.approx({"dev": 0.0, "test": 0.0}, abs=1e-9)
    assert same["embedding"] == pytest.approx({"dev": 0.0, "test": 0.0}, abs=1e-6)
    assert same["agreement"] == pytest.approx({"dev": 100.0, "test": 100.0})
    assert min(moved["geometry"].values()) > 1e-6 and min(moved["embedding"].values()) > 1e-6
    assert max(moved["agreement"].values()) < 100.0
    (no_test,) = drift.drift([str(trained)], str(toy_tasks["toy-sts"]), encoder=tiny_encoder, splits=("train", "dev"))[1:]
    assert "test" not in no_test and no_test["dev"] == pytest.approx(moved["dev"])
    assert set(no_test["agreement"]) == {"train", "dev"}
