"""The ST / MTL / MTL-FT study of Peng, Chen & Lu (BioNLP 2020), built on :func:`biomtl.train.train`.

For every seed:

* **ST** — one single-task run per task (``st-<task>``), the BERT baseline;
* **MTL** — one multi-task run on all tasks (``mtl``), the paper's MT-BERT-Refinement;
* **MTL-FT** — per task, the MTL run's ``best/`` encoder fine-tuned on that task alone (``mtlft-<task>``),
  the paper's MT-BERT-Fine-Tune; the head starts fresh unless ``keep_heads: true``.

Layout: ``<output_dir>/seed<k>/<run>/`` is each run's :func:`~biomtl.train.train` directory (plus its
``learning_curve.png``); ``<output_dir>/results.{json,md}`` summarise them. Reruns are resumable: a run with
a ``result.json`` is skipped, one with a checkpoint is resumed, and one trained with other settings is an
error rather than silently reused.

A study config (see ``configs/studies/blue-public.yaml``)::

    tasks: [bc5cdr-chemical, chemprot]   # dataset config names or paths
    output_dir: runs/blue-public
    seeds: 3                             # 3 → seeds 1, 2, 3; or a list such as [13, 42, 87]
    keep_heads: false                    # MTL-FT: fresh heads (the paper) or the MTL run's heads
    keep_checkpoints: false              # delete a finished run's checkpoint/ (resume state); best/ stays
    base: {max_length: 128}              # RunConfig keys for every run
    st: {epochs: 10}                     # ... for ST runs only; likewise mtl, mtl_ft, pairwise
    task_overrides: {biosses: {st: {epochs: 30}, mtl_ft: {lr: 5.0e-6}}}
    profiles:                            # --profile NAME deep-merges one of these over the file
      quick: {base: {max_train_examples: 200}}

One run's RunConfig is ``base`` < its setting's section < ``task_overrides`` < command-line ``key=value``.
On the command line a RunConfig key (``epochs=1``) applies to every run; a study key (``seeds=2``,
``mtl.epochs=5``) edits the study config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biomtl.config import (
    RunConfig,
    _did_you_mean,
    apply_overrides,
    build,
    read_yaml,
)
from biomtl.errors import BiomtlError, ConfigError
from biomtl.experiments import report
from biomtl.tasks import load_dataset_spec
from biomtl.train import CHECKPOINT, RESULT, find_checkpoint, train

log = logging.getLogger(__name__)

SETTINGS = ("st", "mtl", "mtl_ft")
MTL = "mtl"  # the name of each seed's multi-task run
LABELS = {"st": "ST", "mtl": "MTL", "mtl_ft": "MTL-FT"}
# The config sections a run of each kind reads, in order (later wins); "pair" is a pairwise run.
SECTIONS = {"st": ("st",), "mtl": ("mtl",), "mtl_ft": ("mtl_ft",), "pair": ("mtl", "pairwise")}
TASK_OVERRIDE_SETTINGS = ("st", "mtl_ft")
_SECTION_NAMES = ("base", "st", "mtl", "mtl_ft", "pairwise")
# RunConfig keys that the study sets for each run, and where the user sets them instead.
STUDY_SET = {
    "tasks": "set tasks: at the top level",
    "output_dir": "set output_dir: at the top level",
    "seed": "set seeds: at the top level",
    "keep_heads": "set keep_heads: at the top level",
    "init_from": "MTL-FT runs start from their seed's mtl/best",
}
# Keys that do not change what a run computes: a finished run trained with other values is still reused.
RUNTIME_KEYS = frozenset(
    {"output_dir", "init_from", "device", "num_threads", "log_every", "checkpoint_every", "compile",
     "save_predictions", "eval_batch_size"}
)


class StudyError(BiomtlError):
    """A study cannot go on (an existing run was trained with other settings)."""


@dataclass(frozen=True)
class StudyConfig:
    """A study config as written; a profile is deep-merged into the file before this is built."""

    tasks: list[str]
    output_dir: str
    seeds: int | list[int] = 3
    keep_heads: bool = False
    keep_checkpoints: bool = False
    base: dict[str, Any] = field(default_factory=dict)
    st: dict[str, Any] = field(default_factory=dict)
    mtl: dict[str, Any] = field(default_factory=dict)
    mtl_ft: dict[str, Any] = field(default_factory=dict)
    pairwise: dict[str, Any] = field(default_factory=dict)
    task_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One planned training run of a study."""

    name: str  # st-<task> | mtl | mtlft-<task> | pair-<a>+<b>
    seed: int
    setting: str  # a key of SECTIONS
    tasks: list[str]
    config: RunConfig

    @property
    def label(self) -> str:
        return f"seed{self.seed}/{self.name}"


@dataclass(frozen=True)
class Study:
    """A loaded, validated study: the config after its profile and overrides, with task names resolved."""

    config: StudyConfig
    source: str
    profile: str | None
    tasks: dict[str, str]  # task name → its dataset config as RunConfig.tasks takes it (name or path)
    seeds: list[int]
    run_overrides: dict[str, Any] = field(default_factory=dict)  # command-line RunConfig keys, applied last

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    def run_dir(self, seed: int, name: str) -> Path:
        return self.output_dir / f"seed{seed}" / name

    def run_values(self, setting: str, tasks: list[str], seed: int, name: str) -> dict[str, Any]:
        """The RunConfig mapping of one run, before validation."""
        c = self.config
        values: dict[str, Any] = dict(c.base)
        for section in SECTIONS[setting]:
            values.update(getattr(c, section))
        if setting in TASK_OVERRIDE_SETTINGS:
            values.update(c.task_overrides.get(tasks[0], {}).get(setting, {}))
        values.update(self.run_overrides)
        values.update(tasks=[self.tasks[t] for t in tasks], output_dir=str(self.run_dir(seed, name)), seed=seed)
        if setting == "mtl_ft":
            values.update(init_from=str(self.run_dir(seed, MTL) / "best"), keep_heads=c.keep_heads)
        return values

    def run(self, setting: str, tasks: list[str], seed: int, name: str) -> Run:
        values = self.run_values(setting, tasks, seed, name)
        return Run(name, seed, setting, list(tasks), RunConfig.from_dict(values, f"{self.source}: {name}"))


def st_name(task: str) -> str:
    return f"st-{task}"


def mtl_ft_name(task: str) -> str:
    return f"mtlft-{task}"


def run_name(setting: str, task: str) -> str:
    """The run that holds ``task``'s score for a study setting."""
    return {"st": st_name(task), "mtl": MTL, "mtl_ft": mtl_ft_name(task)}[setting]


# ----------------------------------------------------------------------------------------------------------
# Loading and validation


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``: mappings merge key by key, anything else is replaced.

    >>> deep_merge({"base": {"epochs": 3, "lr": 1e-4}}, {"base": {"epochs": 1}})
    {'base': {'epochs': 1, 'lr': 0.0001}}
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _study_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(StudyConfig)]


def _check_section(values: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """Check one mapping of RunConfig keys (known, not set by the study, of the right type); returns the
    entries that passed, so that the runs' values can still be checked when some did not."""
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping of run settings, got {type(values).__name__}")
        return {}
    known = [f.name for f in dataclasses.fields(RunConfig) if f.name not in STUDY_SET]
    clean = {}
    for key, value in values.items():
        if key in STUDY_SET:
            problems.append(f"{where}: '{key}' is set by the study for each run ({STUDY_SET[key]})")
        elif key not in known:
            problems.append(f"{where}: unknown key '{key}'{_did_you_mean(str(key), known)}")
        else:
            found: list[str] = []
            built = build(RunConfig, {"tasks": ["-"], "output_dir": "-", key: value}, where, found)
            problems.extend(found)
            if built is not None:
                clean[key] = getattr(built, key)
    return clean


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Study keys (``seeds=2``, ``mtl.epochs=5``) versus RunConfig keys for every run (``epochs=1``)."""
    fields = _study_fields()
    study, runs = [], []
    for item in overrides:
        head = item.split("=", 1)[0].strip().split(".")[0]
        (study if head in fields else runs).append(item)
    return study, runs


def load_study(
    path: str | Path,
    profile: str | None = None,
    overrides: list[str] | None = None,
    seeds: int | None = None,
    output_dir: str | Path | None = None,
) -> Study:
    """Load, merge and validate a study config; every problem is reported at once as a ConfigError.

    ``seeds`` (``--seeds N``) keeps the first N of a listed ``seeds:``, or means seeds 1..N for a count.
    Every run's RunConfig is built and validated here, before any work.

    >>> load_study("configs/studies/blue-public.yaml", "full", ["epochs=1"], seeds=2).seeds  # doctest: +SKIP
    [1, 2]
    """
    source = str(path)
    raw = read_yaml(path)
    profile = profile or None
    problems: list[str] = []
    fields = _study_fields()

    profiles = raw.get("profiles", {})
    if not isinstance(profiles, dict):
        profiles = {}  # build() reports the type
    for name, values in profiles.items():
        if not isinstance(values, dict):
            problems.append(f"{source}: profiles.{name}: expected a mapping, got {type(values).__name__}")
            continue
        for key in values:
            if key == "profiles" or key not in fields:
                options = [f for f in fields if f != "profiles"]
                problems.append(f"{source}: profiles.{name}: unknown key '{key}'{_did_you_mean(str(key), options)}")
    data = raw
    where = source
    if profile is not None:
        if not profiles:
            problems.append(f"{source}: no profiles defined, so profile '{profile}' cannot be used; "
                            "pass --profile '' to run the file as it is")
        elif profile not in profiles:
            close = difflib.get_close_matches(profile, list(profiles), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{source}: profiles: no profile '{profile}' (defined: {', '.join(profiles)}){hint}")
        elif isinstance(profiles[profile], dict):  # its unknown keys are reported above
            where = f"{source} (profile {profile})"
            known = {k: v for k, v in profiles[profile].items() if k in fields and k != "profiles"}
            data = deep_merge(raw, known)

    study_overrides, run_items = _split_overrides(list(overrides or []))
    data = apply_overrides(data, study_overrides)
    run_overrides = apply_overrides({}, run_items)
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    config = build(StudyConfig, data, where, problems)
    if config is None:  # go on with the known keys, to report the problems of the sections too
        config = build(StudyConfig, {k: v for k, v in data.items() if k in fields}, where, [])
        if config is None:
            raise ConfigError(problems)
    run_overrides = _check_section(run_overrides, "override", problems)

    sections = {s: _check_section(getattr(config, s), f"{where}: {s}", problems) for s in _SECTION_NAMES}
    names = _resolve_tasks(config.tasks, where, problems)
    task_overrides: dict[str, dict[str, dict[str, Any]]] = {}
    for task, per_setting in config.task_overrides.items():
        if task not in names:
            problems.append(f"{where}: task_overrides: '{task}' is not one of the study's tasks"
                            f"{_did_you_mean(task, list(names))}")
        for setting, values in per_setting.items():
            if setting not in TASK_OVERRIDE_SETTINGS:
                problems.append(f"{where}: task_overrides.{task}: unknown setting '{setting}' "
                                f"(single-task settings: {', '.join(TASK_OVERRIDE_SETTINGS)})")
            else:
                clean = _check_section(values, f"{where}: task_overrides.{task}.{setting}", problems)
                task_overrides.setdefault(task, {})[setting] = clean
    seed_list = _resolve_seeds(config.seeds, seeds, where, problems)

    # Every run's values (from the entries that passed so far), validated together; a problem shared by
    # many runs is reported once.
    checked = Study(dataclasses.replace(config, task_overrides=task_overrides, **sections), source, profile,
                    names, seed_list, run_overrides)
    seen: set[str] = set()
    for run_setting, task_lists in (
        ("st", [[t] for t in names]), ("mtl", [list(names)]), ("mtl_ft", [[t] for t in names]),
        ("pair", [list(names)[:2]] if len(names) > 1 else []),
    ):
        for tasks in task_lists:
            values = checked.run_values(run_setting, tasks, seed_list[0], "-")
            label = f"{run_setting} {tasks[0]}" if run_setting in TASK_OVERRIDE_SETTINGS else run_setting
            run_config = build(RunConfig, values, label, [])
            for message in run_config.validate() if run_config is not None else []:
                if message not in seen:
                    seen.add(message)
                    problems.append(f"{where}: {label} runs: {message}")
    study = Study(config, source, profile, names, seed_list, run_overrides)
    if problems:
        raise ConfigError(problems)
    return study


def _resolve_tasks(entries: list[str], where: str, problems: list[str]) -> dict[str, str]:
    """Task name → dataset config entry; every entry's config is loaded (statically validated)."""
    names: dict[str, str] = {}
    if not entries:
        problems.append(f"{where}: tasks: at least one task is required")
    for entry in entries:
        try:
            spec = load_dataset_spec(entry)
        except ConfigError as e:
            problems.extend(f"{where}: tasks: {p}" for p in e.problems)
            continue
        if spec.name in names:
            problems.append(f"{where}: tasks: '{spec.name}' is listed twice")
        names[spec.name] = entry
    return names


def _resolve_seeds(value: int | list[int], count: int | None, where: str, problems: list[str]) -> list[int]:
    if isinstance(value, int):
        if value < 1:
            problems.append(f"{where}: seeds: a count >= 1 or a list of seeds, got {value}")
        seeds = list(range(1, max(value, 1) + 1))
    else:
        seeds = list(value)
        if not seeds or len(set(seeds)) != len(seeds):
            problems.append(f"{where}: seeds: a non-empty list without repeats, got {value}")
    if count is not None:
        if count < 1:
            problems.append(f"--seeds: must be >= 1, got {count}")
        elif isinstance(value, int):
            seeds = list(range(1, count + 1))
        elif count > len(seeds):
            problems.append(f"--seeds: {count} seeds asked for but {where} lists only {len(seeds)}: {seeds}")
        else:
            seeds = seeds[:count]
    return seeds or [1]


# ----------------------------------------------------------------------------------------------------------
# Planning and running


def study_runs(study: Study) -> list[Run]:
    """Every run of the study in execution order: per seed ST, then MTL, then MTL-FT (needs MTL)."""
    runs = []
    for seed in study.seeds:
        runs += [study.run("st", [t], seed, st_name(t)) for t in study.tasks]
        runs.append(study.run("mtl", list(study.tasks), seed, MTL))
        runs += [study.run("mtl_ft", [t], seed, mtl_ft_name(t)) for t in study.tasks]
    return runs


def check_data(study: Study, corpora: Path | None, prepared: Path | None) -> None:
    """Fail before any training when a task's data files are missing (every task's reported)."""
    from biomtl.data.readers import split_path, splits

    problems: list[str] = []
    for entry in study.tasks.values():
        spec = load_dataset_spec(entry)
        missing: list[Path] = []
        for split in [s for s in splits(spec) if s in spec.files]:
            try:
                path = split_path(spec, split, corpora, prepared)
            except ConfigError as e:
                problems.extend(p for p in e.problems if p not in problems)
                continue
            if not path.is_file():
                missing.append(path)
        if missing:
            prepared_files = any("{prepared}" in str(f) for f in spec.files.values())
            hint = " (run `biomtl data prepare` first)" if prepared_files else ""
            names = ", ".join(p.name for p in missing)
            problems.append(f"{missing[0].parent}: task {spec.name}: data file(s) not found: {names}{hint}")
    if problems:
        raise ConfigError(problems)


def _settings_diff(run: Run) -> list[str]:
    """How a run directory's saved config differs from the run's config (keys that change results only)."""
    saved_path = Path(run.config.output_dir) / "config.yaml"
    if not saved_path.is_file():
        return []
    saved = yaml.safe_load(saved_path.read_text()) or {}
    wanted = run.config.to_dict()
    return [
        f"{key}={saved[key]!r} (now {wanted[key]!r})"
        for key in wanted
        if key not in RUNTIME_KEYS and key in saved and saved[key] != wanted[key]
    ]


def check_settings(runs: list[Run]) -> None:
    """Before any work: an existing run directory trained with other settings must not be reused or resumed."""
    changed = [(run, diff) for run in runs if (diff := _settings_diff(run))]
    if changed:
        run, diff = changed[0]
        more = f" (and {len(changed) - 1} more runs)" if len(changed) > 1 else ""
        raise StudyError(
            f"{run.config.output_dir}: this run was trained with {', '.join(diff)}{more}; use another "
            f"output_dir for the new settings, or delete {run.config.output_dir} to retrain it"
        )


def _main_scores(result: dict, split: str) -> str:
    scores = result.get(split) or {}
    return " ".join(f"{t}={s[result['main_metric'][t]]:.4f}" for t, s in scores.items()) or "—"


def execute(
    run: Run, corpora: Path | None = None, prepared: Path | None = None, progress: bool = True,
    keep_checkpoint: bool = False,
) -> dict:
    """Train one run unless finished (skip) or interrupted (resume); returns its ``result.json``.

    A finished run's ``checkpoint/`` only serves resuming (3× the model's size, with the optimizer state), so
    it is deleted unless ``keep_checkpoint``; ``best/`` stays.
    """
    out = Path(run.config.output_dir)
    check_settings([run])
    if (out / RESULT).is_file():
        result = json.loads((out / RESULT).read_text())
        log.info("%s: finished earlier, skipped", run.label)
    else:
        resume = find_checkpoint(out) is not None
        log.info("%s: %s (%s)", run.label, "resuming" if resume else "training", ", ".join(run.tasks))
        started = time.time()
        result = train(run.config, corpora, prepared, resume=resume, overwrite=not resume, progress=progress)
        log.info("%s: done in %.0f s, best epoch %d; dev %s; test %s", run.label, time.time() - started,
                 result["best_epoch"], _main_scores(result, "dev"), _main_scores(result, "test"))
    if not keep_checkpoint:
        for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    if not (out / report.CURVE).is_file():
        report.plot_learning_curve(out, run.label)
    return result


def main_score(result: dict, split: str, task: str) -> float | None:
    """``task``'s main metric on ``split`` in a run's result (``None`` when that split was not scored)."""
    scores = (result.get(split) or {}).get(task)
    return None if scores is None else float(scores[result["main_metric"][task]])


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type, misc]


def summarize_study(study: Study, results: dict[tuple[int, str], dict]) -> dict:
    """``results.json``: per task and split, mean ± sd over seeds of each setting and of MTL-FT − ST."""
    tasks, seeds = list(study.tasks), study.seeds
    main_metric = {t: results[(seeds[0], st_name(t))]["main_metric"][t] for t in tasks}
    summary: dict[str, Any] = {
        "study": study.source,
        "profile": study.profile,
        "output_dir": str(study.output_dir),
        "seeds": seeds,
        "tasks": tasks,
        "main_metric": main_metric,
        "settings": {s: LABELS[s] for s in SETTINGS},
        "note": "scores in [0, 1]; mean and sample sd (n-1) over seeds; 'values' follow the order of 'seeds'; "
                "delta = MTL-FT - ST per seed; 'average' averages the tasks per seed first",
    }
    for split in ("test", "dev"):
        # per_seed[setting][task] = one value per seed
        per_seed = {
            s: {t: [main_score(results[(seed, run_name(s, t))], split, t) for seed in seeds] for t in tasks}
            for s in SETTINGS
        }
        table: dict[str, dict[str, Any]] = {}
        for t in tasks:
            row: dict[str, Any] = {s: report.summarize(per_seed[s][t]) for s in SETTINGS}
            row["delta"] = report.summarize(
                [_difference(a, b) for a, b in zip(per_seed["mtl_ft"][t], per_seed["st"][t], strict=True)]
            )
            table[t] = row
        averages = {s: [_mean([per_seed[s][t][k] for t in tasks]) for k in range(len(seeds))] for s in SETTINGS}
        table["average"] = {s: report.summarize(averages[s]) for s in SETTINGS}
        table["average"]["delta"] = report.summarize(
            [_difference(a, b) for a, b in zip(averages["mtl_ft"], averages["st"], strict=True)]
        )
        summary[split] = table
    summary["runs"] = {
        f"seed{seed}/{name}": {
            "best_epoch": result["best_epoch"],
            "dev": {t: main_score(result, "dev", t) for t in result["tasks"]},
            "test": {t: main_score(result, "test", t) for t in result["tasks"]},
        }
        for (seed, name), result in results.items()
    }
    return summary


def study_markdown(summary: dict) -> str:
    """``results.md``: a test and a dev table, one row per task plus the average, ×100."""
    seeds = ", ".join(map(str, summary["seeds"]))
    profile = f", profile `{summary['profile']}`" if summary["profile"] else ""
    n = len(summary["seeds"])
    spread = f"mean ± sample sd over seeds {seeds} (n = {n})." if n > 1 else f"seed {seeds} (one seed: no sd)."
    parts = [
        f"# Study `{summary['study']}`{profile}\n",
        f"Main metric per task ×100, {spread} "
        "ST: single-task; MTL: one model on all tasks (MT-BERT-Refinement); MTL-FT: MTL encoder fine-tuned "
        "per task (MT-BERT-Fine-Tune). Δ = MTL-FT − ST, per seed, then mean ± sd. Average: mean over tasks "
        "per seed, then over seeds. Dev scores are at each run's selected (best mean dev) epoch.\n",
    ]
    header = ["Task", "Metric", *[LABELS[s] for s in SETTINGS], "Δ MTL-FT − ST"]
    for split, title in (("test", "Test"), ("dev", "Dev")):
        rows = []
        for key in [*summary["tasks"], "average"]:
            row = summary[split][key]
            name = "**Average**" if key == "average" else key
            metric = "" if key == "average" else summary["main_metric"][key]
            rows.append([name, metric, *[report.format_stat(row[s]) for s in SETTINGS],
                         report.format_stat(row["delta"], signed=True)])
        parts.append(f"## {title}\n\n{report.markdown_table(header, rows, right_from=2)}")
    parts.append(
        f"Runs: `{summary['output_dir']}/seed<k>/{{st-<task>, mtl, mtlft-<task>}}`, each with "
        "`result.json`, `metrics.jsonl` and `learning_curve.png`.\n"
    )
    return "\n".join(parts)


def execute_all(
    study: Any, runs: list[Any], kind: str, corpora: Path | None, prepared: Path | None, progress: bool
) -> dict[tuple[int, str], dict]:
    """Check every run's settings and (when something is left to train) the data, then train, resume or
    skip each run; returns ``{(seed, run name): result}``. Shared by the study and pairwise drivers."""
    check_settings(runs)
    todo = [r for r in runs if not (Path(r.config.output_dir) / RESULT).is_file()]
    log.info("%s %s: %d runs over seeds %s (%d to train) → %s", kind, study.source, len(runs),
             study.seeds, len(todo), study.output_dir)
    if todo:
        check_data(study, corpora, prepared)
    keep = study.config.keep_checkpoints
    return {(r.seed, r.name): execute(r, corpora, prepared, progress, keep) for r in runs}


def plan_runs(study: Any, runs: list[Any], corpora: Path | None = None, prepared: Path | None = None) -> str:
    """A Markdown table of the runs with their settings and optimizer steps (nothing is trained), to size a
    profile before spending a GPU on it. Steps count the training examples after ``max_train_examples``;
    a tagging sentence longer than ``max_length`` adds a window or two on top."""
    from biomtl.data.readers import read_split
    from biomtl.data.sampler import TaskBatchSampler

    check_data(study, corpora, prepared)
    sizes: dict[tuple[str, int | None], int] = {}

    def size(entry: str, cap: int | None) -> int:
        if (entry, cap) not in sizes:
            sizes[(entry, cap)] = len(read_split(load_dataset_spec(entry), "train", corpora, prepared, limit=cap))
        return sizes[(entry, cap)]

    rows, per_seed = [], {}
    for r in runs:
        c = r.config
        n = {t: size(e, c.max_train_examples) for t, e in zip(r.tasks, c.tasks, strict=True)}
        sampler = TaskBatchSampler({t: [1] * k for t, k in n.items()}, c.batch_size, c.sampling, c.seed, c.temperature)
        steps = sampler.steps_per_epoch() * c.epochs
        per_seed[r.seed] = per_seed.get(r.seed, 0) + steps
        rows.append([r.label, ", ".join(f"{t} {k:,}" for t, k in n.items()), str(c.epochs), str(c.batch_size),
                     f"{c.lr:g}", f"{steps:,}"])
    total = sum(per_seed.values())
    rows.append(["**all runs**", "", "", "", "", f"**{total:,}**"])
    table = report.markdown_table(["run", "train examples", "epochs", "batch", "lr", "steps"], rows, right_from=2)
    return f"{table.rstrip()}\n\n{len(runs)} runs, {total:,} optimizer steps ({total // max(1, len(per_seed)):,} per seed).\n"


def run_study(
    config_path: str | Path,
    profile: str | None = "quick",
    seeds: int | None = None,
    output_dir: str | Path | None = None,
    corpora: Path | None = None,
    prepared: Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    plan: bool = False,
) -> dict:
    """Run (or finish) a study and write ``results.json`` and ``results.md`` into its output directory.
    ``plan`` prints the runs and their optimizer steps instead (:func:`plan_runs`).

    >>> run_study("configs/studies/blue-public.yaml", profile="quick", seeds=1)  # doctest: +SKIP
    """
    study = load_study(config_path, profile, overrides, seeds, output_dir)
    if plan:
        print(plan_runs(study, study_runs(study), corpora, prepared), end="")
        return {}
    results = execute_all(study, study_runs(study), "study", corpora, prepared, progress)
    summary = summarize_study(study, results)
    study.output_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(study.output_dir / "results.json", summary)
    report.write_text(study.output_dir / "results.md", study_markdown(summary))
    log.info("results: %s", study.output_dir / "results.md")
    return summary
