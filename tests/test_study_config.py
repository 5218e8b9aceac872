"""The study config schema: `biomtl validate` on study configs, and each value validated once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from biomtl.cli import main
from biomtl.config import RunConfig
from biomtl.errors import ConfigError
from biomtl.experiments import schema
from biomtl.experiments.plan import pairwise_runs, study_runs
from biomtl.experiments.schema import load_study

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "studies" / "blue-public.yaml"


def write_study(path: Path, toy_tasks: dict[str, Path], names: list[str], **extra: object) -> Path:
    data = {"tasks": [str(toy_tasks[n]) for n in names], "output_dir": str(path.parent / "out"), "seeds": 2,
            "base": {"epochs": 1, "lr": "1e-3"}, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_validate_accepts_the_shipped_study_config(capsys):
    assert validate(SHIPPED, capsys) == (
        0, f"{SHIPPED}: ok (study config, 13 runs per seed; profiles quick 1 seed, cpu 3 seeds, cpu-b16 3 seeds, full 3 seeds, paper 3 seeds)\n", []
    )


def test_validate_accepts_a_study_config_without_profiles(tmp_path, toy_tasks, capsys):
    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-ner", "toy-rel"])
    assert validate(path, capsys) == (0, f"{path}: ok (study config, 5 runs per seed, 2 seeds)\n", [])


def test_validate_names_an_unknown_study_key_with_did_you_mean(tmp_path, toy_tasks, capsys):
    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-rel"], base={"epoch": 1}, mtl_fT={"lr": 1e-4})
    assert validate(path, capsys) == (2, "", [
        f"biomtl: error: {path}: unknown key 'mtl_fT'; did you mean 'mtl_ft'?",
        f"biomtl: error: {path}: base: unknown key 'epoch'; did you mean 'epochs'?",
    ])


def test_validate_reports_a_bad_value_in_one_profile_once(tmp_path, toy_tasks, capsys):
    # A problem of the file itself is reported once, not once per profile; a profile's own names the profile.
    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-ner", "toy-rel"], st={"warmup": 1.5}, profiles={
        "quick": {"seeds": 1, "mtl": {"lr": -1.0}},
        "full": {"base": {"max_length": "long"}},
    })
    assert validate(path, capsys) == (2, "", [
        f"biomtl: error: {path} (profile quick): st toy-ner runs: warmup: a fraction of the steps in [0, 1), got 1.5",
        f"biomtl: error: {path} (profile quick): mtl runs: lr: must be a positive number, got -1.0",
        f"biomtl: error: {path} (profile full): base: key 'max_length' must be int, got str 'long'",
    ])


def test_validate_builds_every_pair(tmp_path, toy_tasks, capsys):
    # Pair runs read mtl; loss weights that fit the MTL run (and the first pair) do not fit the other pairs.
    ner, rel, sts = (str(toy_tasks[n]) for n in ("toy-ner", "toy-rel", "toy-sts"))
    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-ner", "toy-rel", "toy-sts"],
                       mtl={"loss_weights": {ner: 1.0, rel: 2.0}})
    load_study(path)  # the study itself is fine
    assert validate(path, capsys) == (2, "", [
        f"biomtl: error: {path}: pair-toy-ner+toy-sts: loss_weights: '{rel}' is not one of the run's tasks "
        f"({ner}, {sts})",
        f"biomtl: error: {path}: pair-toy-rel+toy-sts: loss_weights: '{ner}' is not one of the run's tasks "
        f"({rel}, {sts})",
    ])


def test_each_kind_of_run_is_validated_once(tmp_path, toy_tasks, monkeypatch):
    built: Counter[str] = Counter()
    real_build, real_validate = schema.build, RunConfig.validate
    monkeypatch.setattr(schema, "build", lambda cls, *a: built.update([cls.__name__]) or real_build(cls, *a))
    validated: list[tuple[str, ...]] = []
    monkeypatch.setattr(RunConfig, "validate", lambda self: validated.append(tuple(self.tasks)) or real_validate(self))

    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-ner", "toy-rel", "toy-sts"], seeds=3,
                       base={"epochs": 1, "lr": "1e-3", "batch_size": 4}, mtl={"epochs": 2})
    study = load_study(path)
    ner, rel, sts = (str(toy_tasks[n]) for n in ("toy-ner", "toy-rel", "toy-sts"))
    # Each section key checked once (base's 3, mtl's 1), then one RunConfig for each kind of run: st and
    # mtl_ft per task, mtl, and the first pair.
    assert built["RunSettings"] == 4 and built["RunConfig"] == 8
    assert sorted(validated) == sorted([(ner,), (rel,), (sts,)] * 2 + [(ner, rel, sts), (ner, rel)])

    runs = study_runs(study)
    assert len(runs) == 3 * 7 and len(validated) == 8  # the runs of a kind differ in seed and directory only
    assert {(r.config.seed, r.config.output_dir) for r in runs} == {
        (r.seed, str(tmp_path / "out" / f"seed{r.seed}" / r.name)) for r in runs}
    pairs = [r for r in pairwise_runs(study) if r.setting == "pair"]
    assert len(pairs) == 3 * 3 and len(validated) == 10  # the two other pairs, once each over the seeds
    ft = next(r for r in runs if r.label == "seed3/mtlft-toy-rel")
    assert ft.config == RunConfig.from_dict(study.run_values("mtl_ft", ["toy-rel"], 3, "mtlft-toy-rel"))
    assert ft.config.init_from == str(tmp_path / "out" / "seed3" / "mtl" / "best")


def test_a_bad_pair_is_reported_when_its_run_is_built(tmp_path, toy_tasks):
    ner, rel = str(toy_tasks["toy-ner"]), str(toy_tasks["toy-rel"])
    path = write_study(tmp_path / "s.yaml", toy_tasks, ["toy-ner", "toy-rel", "toy-sts"],
                       pairwise={"loss_weights": {ner: 1.0, rel: 2.0}})
    study = load_study(path)
    with pytest.raises(ConfigError, match=rf"^{path}: pair-toy-ner\+toy-sts: loss_weights: '{rel}' is not"):
        pairwise_runs(study)
