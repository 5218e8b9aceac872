"""Study drivers end to end on the tiny encoder and toy tasks: ST / MTL / MTL-FT, resumability, pairwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from biomtl.errors import ConfigError
from biomtl.experiments import execute as study_mod  # where the study calls train
from biomtl.experiments.execute import StudyError
from biomtl.experiments.pairwise import run_pairwise
from biomtl.experiments.plan import study_runs
from biomtl.experiments.schema import load_study
from biomtl.experiments.study import run_study
from biomtl.model import MultiTaskModel, build_model

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "studies" / "blue-public.yaml"
SETTINGS = ("st", "mtl", "mtl_ft")


def write_study(path: Path, tasks: list[Path], encoder: str, output_dir: Path, **extra: object) -> Path:
    data = {
        "tasks": [str(t) for t in tasks],
        "output_dir": str(output_dir),
        "seeds": 2,
        "base": {
            "encoder": encoder, "epochs": 1, "batch_size": 8, "eval_batch_size": 32, "lr": 1e-3,
            "max_length": 32, "num_threads": 1, "max_train_examples": 16, "max_eval_examples": 8,
            "save_predictions": False, "log_every": 1000, "device": "cpu",
        },
        "mtl": {"epochs": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: str, toy_tasks: dict[str, Path]):
    """One study (2 seeds × toy-ner, toy-rel) run once for the tests of this module."""
    root = tmp_path_factory.mktemp("study")
    config = write_study(root / "study.yaml", [toy_tasks["toy-ner"], toy_tasks["toy-rel"]], tiny_encoder, root / "out")
    summary = run_study(config, profile=None, progress=False)
    return config, summary, root / "out"


def _result(out: Path, seed: int, run: str) -> dict:
    return json.loads((out / f"seed{seed}" / run / "result.json").read_text())


def test_results_match_each_runs_result_json(finished_study):
    _, summary, out = finished_study
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    tasks = ["toy-ner", "toy-rel"]
    assert saved["seeds"] == [1, 2] and saved["tasks"] == tasks
    for split in ("test", "dev"):
        assert set(saved[split]) == {*tasks, "average"}
        for task in tasks:
            key = saved["main_metric"][task]
            runs = {"st": f"st-{task}", "mtl": "mtl", "mtl_ft": f"mtlft-{task}"}
            for setting, run in runs.items():
                expected = [_result(out, seed, run)[split][task][key] for seed in (1, 2)]
                assert saved[split][task][setting]["values"] == expected
                assert saved[split][task][setting]["mean"] == pytest.approx(sum(expected) / 2)
            delta = [a - b for a, b in zip(saved[split][task]["mtl_ft"]["values"],
                                           saved[split][task]["st"]["values"], strict=True)]
            assert saved[split][task]["delta"]["values"] == pytest.approx(delta)
        for setting in SETTINGS:
            per_seed = [sum(saved[split][t][setting]["values"][k] for t in tasks) / 2 for k in range(2)]
            assert saved[split]["average"][setting]["values"] == pytest.approx(per_seed)

    md = (out / "results.md").read_text()
    assert "| Task | Metric | ST | MTL | MTL-FT | Δ MTL-FT − ST |" in md
    stat = saved["test"]["toy-rel"]["st"]
    row = next(line for line in md.splitlines() if line.startswith("| toy-rel |"))
    assert f"{stat['mean'] * 100:.1f} ± {stat['sd'] * 100:.1f}" in row
    assert any(line.startswith("| **Average** |") for line in md.splitlines())
    for seed in (1, 2):
        for run in ("st-toy-ner", "st-toy-rel", "mtl", "mtlft-toy-ner", "mtlft-toy-rel"):
            assert (out / f"seed{seed}" / run / "learning_curve.png").stat().st_size > 0
            assert (out / f"seed{seed}" / run / "best").is_dir()
            assert not (out / f"seed{seed}" / run / "checkpoint").exists()  # deleted once finished


def test_rerun_trains_nothing(finished_study, monkeypatch):
    config, summary, out = finished_study
    mtime = (out / "seed1" / "mtl" / "result.json").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: calls.append(a))
    again = run_study(config, profile=None, progress=False)
    assert calls == []
    assert again["test"] == summary["test"]
    assert (out / "seed1" / "mtl" / "result.json").stat().st_mtime_ns == mtime


def test_changed_settings_are_not_reused(finished_study, monkeypatch):
    config, _, _ = finished_study
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(StudyError, match=r"seed1/st-toy-ner: this run was trained with lr=0\.001 \(now 0\.002\) \(and 9 more runs\)"):
        run_study(config, profile=None, overrides=["lr=0.002"], progress=False)


def test_interrupted_run_is_resumed(tmp_path, tiny_encoder, toy_tasks, monkeypatch):
    config = write_study(tmp_path / "s.yaml", [toy_tasks["toy-sts"]], tiny_encoder, tmp_path / "out", seeds=1)
    run = study_runs(load_study(config))[0]
    (Path(run.config.output_dir) / "checkpoint").mkdir(parents=True)
    (Path(run.config.output_dir) / "checkpoint" / "state.json").write_text("{}")
    seen = {}

    def fake_train(cfg, data_dirs, resume, overwrite, progress):
        seen.update(resume=resume, overwrite=overwrite)
        raise KeyboardInterrupt  # stop the study here

    monkeypatch.setattr(study_mod, "train", fake_train)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, profile=None, progress=False)
    assert seen == {"resume": True, "overwrite": False}


def test_missing_data_fails_before_any_training(tmp_path, tiny_encoder, toy_tasks, monkeypatch):
    task = tmp_path / "gone.yaml"
    task.write_text(toy_tasks["toy-sts"].read_text().replace("name: toy-sts", "name: gone")
                    .replace(str(toy_tasks["toy-sts"].parent / "sts.test.tsv"), str(tmp_path / "nope.tsv")))
    config = write_study(tmp_path / "s.yaml", [toy_tasks["toy-rel"], task], tiny_encoder, tmp_path / "out")
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ConfigError, match=f"^{tmp_path}: task gone: data file\\(s\\) not found: nope.tsv$"):
        run_study(config, profile=None, progress=False)


def test_plan_counts_steps_and_trains_nothing(tmp_path, tiny_encoder, toy_tasks, monkeypatch, capsys):
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    tasks = [toy_tasks["toy-ner"], toy_tasks["toy-rel"]]
    config = write_study(tmp_path / "s.yaml", tasks, tiny_encoder, tmp_path / "out")
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: pytest.fail("must not train"))
    assert run_study(config, profile=None, plan=True) == {}
    out = capsys.readouterr().out
    batches = sum(-(-len(read_split(load_dataset_spec(str(t)), "train", limit=16)) // 8) for t in tasks)
    per_seed = batches * (1 + 2 + 1)  # ST 1 epoch each, MTL 2 epochs over both, MTL-FT 1 epoch each
    assert f"10 runs, {2 * per_seed:,} optimizer steps ({per_seed:,} per seed)." in out
    assert "| seed2/mtl | toy-ner 16, toy-rel 16 | 2 | 8 | 0.001 |" in out
    assert not (tmp_path / "out").exists()


def test_mtl_ft_starts_from_the_mtl_encoder(finished_study):
    config, _, out = finished_study
    run = next(r for r in study_runs(load_study(config)) if r.label == "seed1/mtlft-toy-rel")
    assert run.config.init_from == str(out / "seed1" / "mtl" / "best")
    mtl = MultiTaskModel.load(out / "seed1" / "mtl" / "best")
    for keep_heads in (False, True):
        model = build_model(run.config.replace(keep_heads=keep_heads))
        assert list(model.heads) == ["toy-rel"]
        source = mtl.encoder.state_dict()
        for name, tensor in model.encoder.state_dict().items():
            assert torch.equal(tensor, source[name]), name
        head, mtl_head = model.heads["toy-rel"].state_dict(), mtl.heads["toy-rel"].state_dict()
        same = all(torch.equal(head[k], mtl_head[k]) for k in head)
        assert same is keep_heads


def test_a_task_left_out_of_mtl_is_fine_tuned_from_its_encoder(tmp_path, tiny_encoder, toy_tasks):
    tasks = [toy_tasks["toy-ner"], toy_tasks["toy-rel"], toy_tasks["toy-sts"]]
    config = write_study(tmp_path / "s.yaml", tasks, tiny_encoder, tmp_path / "out", seeds=1, keep_heads=True,
                         mtl_tasks=["toy-ner", "toy-rel"])
    summary = run_study(config, profile=None, progress=False)
    out = tmp_path / "out" / "seed1"
    assert _result(out.parent, 1, "mtl")["tasks"] == ["toy-ner", "toy-rel"]
    runs = {r.name: r for r in study_runs(load_study(config))}
    assert runs["mtlft-toy-sts"].config.init_from == str(out / "mtl" / "best")
    assert (runs["mtlft-toy-sts"].config.keep_heads, runs["mtlft-toy-rel"].config.keep_heads) == (False, True)
    mtl = MultiTaskModel.load(out / "mtl" / "best")
    assert "toy-sts" not in mtl.heads
    # toy-sts's MTL-FT run starts from the MTL encoder: its epoch 0 is the MTL encoder's score
    start = json.loads((out / "mtlft-toy-sts" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["epoch"] == 0
    table = summary["test"]
    assert table["toy-sts"]["mtl"] is None and table["average"]["mtl"] is None
    assert table["toy-sts"]["mtl_ft"] is not None and table["toy-ner"]["mtl"] is not None
    assert "| toy-sts | pearson | " in (tmp_path / "out" / "results.md").read_text()


def test_mtl_tasks_must_be_the_studys_own(tmp_path, tiny_encoder, toy_tasks):
    config = write_study(tmp_path / "s.yaml", [toy_tasks["toy-ner"], toy_tasks["toy-rel"]], tiny_encoder,
                         tmp_path / "out", mtl_tasks=["toy-ner", "toy-rell", "toy-ner"])
    with pytest.raises(ConfigError) as e:
        load_study(config)
    assert "mtl_tasks: 'toy-rell' is not one of the study's tasks; did you mean 'toy-rel'?" in str(e.value)
    assert "mtl_tasks: a task is listed twice" in str(e.value)


def test_pairwise_reuses_st_runs(finished_study, toy_tasks, tiny_encoder, tmp_path, monkeypatch):
    _, _, out = finished_study
    tasks = [toy_tasks["toy-ner"], toy_tasks["toy-rel"], toy_tasks["toy-sts"]]
    config = write_study(tmp_path / "pairs.yaml", tasks, tiny_encoder, out)
    trained = []
    real_train = study_mod.train
    monkeypatch.setattr(study_mod, "train", lambda cfg, *a, **k: trained.append(cfg.output_dir) or real_train(cfg, *a, **k))
    summary = run_pairwise(config, profile=None, seeds=1, progress=False)
    # The study's st-toy-ner and st-toy-rel runs of seed 1 are reused: only st-toy-sts and the pairs train.
    assert sorted(Path(d).name for d in trained) == [
        "pair-toy-ner+toy-rel", "pair-toy-ner+toy-sts", "pair-toy-rel+toy-sts", "st-toy-sts"]
    saved = json.loads((out / "pairwise.json").read_text())
    names = ["toy-ner", "toy-rel", "toy-sts"]
    assert saved["tasks"] == names and saved == json.loads(json.dumps(summary))
    assert len(saved["mean"]) == 3 and all(len(row) == 3 for row in saved["mean"])
    for i, ti in enumerate(names):
        st = _result(out, 1, f"st-{ti}")["test"][ti][saved["main_metric"][ti]]
        assert saved["mean"][i][i] == st
        for j, tj in enumerate(names):
            if i != j:
                pair = "pair-" + "+".join(sorted((ti, tj), key=names.index))
                assert saved["mean"][i][j] == pytest.approx(_result(out, 1, pair)["test"][ti][saved["main_metric"][ti]] - st)
    assert (out / "pairwise.png").stat().st_size > 0
    assert "| toy-sts |" in (out / "pairwise.md").read_text()


@pytest.mark.parametrize("profile", ["quick", "full", "paper"])
def test_shipped_study_config_validates(profile):
    study = load_study(SHIPPED, profile)
    assert list(study.tasks) == ["bc5cdr-chemical", "bc5cdr-disease", "chemprot", "ddi", "biosses", "hoc"]
    runs = study_runs(study)
    assert len(runs) == 13 * len(study.seeds)
    assert {r.name for r in runs if r.seed == study.seeds[0]} >= {"mtl", "st-hoc", "mtlft-biosses"}
    if profile == "quick":
        assert study.seeds == [1]
        assert all(r.config.max_train_examples and r.config.max_length <= 128 and r.config.epochs <= 5 for r in runs)
    else:  # the scripts' MTL-FT values for BIOSSES; `full` doubles the LRs for MiniLM
        ft = next(r for r in runs if r.name == "mtlft-biosses")
        lr = 5e-6 if profile == "paper" else 1e-5
        assert (ft.config.lr, ft.config.epochs, ft.config.batch_size, ft.config.keep_heads) == (lr, 20, 8, False)


def test_every_config_problem_is_reported_at_once(tmp_path, toy_tasks):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "tasks": [str(toy_tasks["toy-rel"])], "output_dir": str(tmp_path / "o"), "seed": 2,
        "base": {"epoch": 1, "lr": "fast"}, "st": {"seed": 3}, "mtl": {"epochs": 0},
        "task_overrides": {"toy-rell": {"st": {}}},
        "profiles": {"quick": {"bse": {}}},
    }))
    with pytest.raises(ConfigError) as info:
        load_study(path, "quick", overrides=["max_lenght=64"])
    where = f"{path} (profile quick)"
    assert info.value.problems == [
        f"{path}: profiles.quick: unknown key 'bse'; did you mean 'base'?",
        f"{where}: unknown key 'seed'; did you mean 'seeds'?",
        "override: unknown key 'max_lenght'; did you mean 'max_length'?",
        f"{where}: base: unknown key 'epoch'; did you mean 'epochs'?",
        f"{where}: base: key 'lr' must be float, got str 'fast'",
        f"{where}: st: 'seed' is set by the study for each run (set seeds: at the top level)",
        f"{where}: task_overrides: 'toy-rell' is not one of the study's tasks; did you mean 'toy-rel'?",
        f"{where}: mtl runs: epochs: must be >= 1, got 0",
    ]
    with pytest.raises(ConfigError, match=r"profiles: no profile 'quik' \(defined: quick\); did you mean 'quick'\?"):
        load_study(path, "quik")
