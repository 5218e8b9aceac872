"""The study config: its typed record, how a profile and ``key=value`` overrides apply, and its validation.

A study config (see ``configs/studies/blue-public.yaml``)::

    tasks: [bc5cdr-chemical, chemprot]   # dataset config names or paths
    output_dir: runs/blue-public
    seeds: 3                             # 3 → seeds 1, 2, 3; or a list such as [13, 42, 87]
    keep_heads: false                    # MTL-FT: fresh heads (the paper) or the MTL run's heads
    mtl_tasks: [bc5cdr-chemical]         # the MTL run's tasks (default: all); the others are fine-tuned
                                         # from its encoder all the same, each with a fresh head
    keep_checkpoints: false              # delete a finished run's checkpoint/ (resume state); best/ stays
    base: {max_length: 128}              # RunConfig keys for every run
    st: {epochs: 10}                     # ... for ST runs only; likewise mtl, mtl_ft, pairwise
    task_overrides: {biosses: {st: {epochs: 30}, mtl_ft: {lr: 5.0e-6}}}
    profiles:                            # --profile NAME deep-merges one of these over the file
      quick: {base: {max_train_examples: 200}}

One run's RunConfig is ``base`` < its setting's section < ``task_overrides`` < command-line ``key=value``.
On the command line a RunConfig key (``epochs=1``) applies to every run; a study key (``seeds=2``,
``mtl.epochs=5``) edits the study config.

Each value is validated once: a section's keys against RunConfig's field names and types when the file is
loaded, then the RunConfig of each kind of run (``st`` of one task, ``mtl``, ...) when it is first built.
Runs of the same kind differ only in seed and output directory.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomtl.config import RunConfig, apply_overrides, build, read_yaml
from biomtl.datadirs import DataDirs
from biomtl.errors import ConfigError, did_you_mean
from biomtl.tasks import load_dataset_spec

SETTINGS = ("st", "mtl", "mtl_ft")
MTL = "mtl"  # the name of each seed's multi-task run
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


@dataclass(frozen=True)
class StudyConfig:
    """A study config as written; a profile is deep-merged into the file before this is built."""

    tasks: list[str]
    output_dir: str
    seeds: int | list[int] = 3
    keep_heads: bool = False
    # The tasks the MTL run trains on (default: all). A task left out still has its MTL-FT run, from the MTL
    # encoder with a fresh head: the MTL encoder as a starting point for a task that MTL would pull elsewhere.
    mtl_tasks: list[str] | None = None
    keep_checkpoints: bool = False
    base: dict[str, Any] = field(default_factory=dict)
    st: dict[str, Any] = field(default_factory=dict)
    mtl: dict[str, Any] = field(default_factory=dict)
    mtl_ft: dict[str, Any] = field(default_factory=dict)
    pairwise: dict[str, Any] = field(default_factory=dict)
    task_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


def _run_settings() -> type:
    """The RunConfig fields that a section may set, each optional: a section's keys are checked against it."""
    hints = typing.get_type_hints(RunConfig)
    fields = [(f.name, hints[f.name], field(default=None))
              for f in dataclasses.fields(RunConfig) if f.name not in STUDY_SET]
    return dataclasses.make_dataclass("RunSettings", fields, frozen=True)


RunSettings = _run_settings()
_SETTABLE = frozenset(f.name for f in dataclasses.fields(RunSettings))


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


def st_name(task: str) -> str:
    return f"st-{task}"


def mtl_ft_name(task: str) -> str:
    return f"mtlft-{task}"


def pair_name(a: str, b: str) -> str:
    return f"pair-{a}+{b}"


def run_name(setting: str, task: str) -> str:
    """The run that holds ``task``'s score for a study setting."""
    return {"st": st_name(task), "mtl": MTL, "mtl_ft": mtl_ft_name(task)}[setting]


RunKind = tuple[str, tuple[str, ...]]  # (setting, tasks): runs of one kind differ only in seed and output_dir


@dataclass(frozen=True)
class Study:
    """A loaded, validated study: the config after its profile and overrides, with task names resolved."""

    config: StudyConfig
    source: str
    profile: str | None
    tasks: dict[str, str]  # task name → its dataset config as RunConfig.tasks takes it (name or path)
    seeds: list[int]
    run_overrides: dict[str, Any] = field(default_factory=dict)  # command-line RunConfig keys, applied last
    # Where the tasks' configs and files are: the command line's directories, tasks named beside the study file.
    data_dirs: DataDirs | None = None
    # The validated RunConfig of each kind of run, built once (by load_study, or by run() on first use).
    configs: dict[RunKind, RunConfig] = field(default_factory=dict, repr=False, compare=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def mtl_tasks(self) -> list[str]:
        """The MTL run's tasks, in the study's order (``mtl_tasks:``, else every task)."""
        chosen = self.config.mtl_tasks
        return [t for t in self.tasks if chosen is None or t in chosen]

    def run_dir(self, seed: int, name: str) -> Path:
        return self.output_dir / f"seed{seed}" / name

    def _per_run(self, setting: str, seed: int, name: str) -> dict[str, Any]:
        """The RunConfig values that the study sets for each run: where it writes, its seed, its start."""
        values: dict[str, Any] = {"output_dir": str(self.run_dir(seed, name)), "seed": seed}
        if setting == "mtl_ft":
            values["init_from"] = str(self.run_dir(seed, MTL) / "best")
        return values

    def run_values(self, setting: str, tasks: list[str], seed: int, name: str) -> dict[str, Any]:
        """The RunConfig mapping of one run, before validation."""
        c = self.config
        values: dict[str, Any] = dict(c.base)
        for section in SECTIONS[setting]:
            values.update(getattr(c, section))
        if setting in TASK_OVERRIDE_SETTINGS:
            values.update(c.task_overrides.get(tasks[0], {}).get(setting, {}))
        values.update(self.run_overrides)
        values.update(tasks=[self.tasks[t] for t in tasks], **self._per_run(setting, seed, name))
        if setting == "mtl_ft":  # a task the MTL run did not train has no head there to keep
            values["keep_heads"] = c.keep_heads and tasks[0] in self.mtl_tasks
        return values

    def run(self, setting: str, tasks: list[str], seed: int, name: str) -> Run:
        """One run; its kind's RunConfig is validated on first use unless load_study did so already."""
        kind = (setting, tuple(tasks))
        if kind not in self.configs:
            values = self.run_values(setting, tasks, seed, name)
            self.configs[kind] = RunConfig.from_dict(values, f"{self.source}: {name}")
        config = self.configs[kind].replace(**self._per_run(setting, seed, name))
        return Run(name, seed, setting, list(tasks), config)


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


def is_study_config(data: dict) -> bool:
    """Whether a parsed YAML mapping is a study config (it has a key that only study configs have)."""
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    return any(key in data for key in _study_fields() if key not in run_keys)


def load_study(
    path: str | Path,
    profile: str | None = None,
    overrides: list[str] | None = None,
    seeds: int | None = None,
    output_dir: str | Path | None = None,
    data_dirs: DataDirs | None = None,
) -> Study:
    """Load, merge and validate a study config; every problem is reported at once as a ConfigError. Its tasks
    are looked up beside it first (:func:`biomtl.config.find_dataset_config`) with ``data_dirs`` (default: the
    environment's directories).

    ``seeds`` (``--seeds N``) keeps the first N of a listed ``seeds:``, or means seeds 1..N for a count.
    The RunConfig of every kind of run is built and validated here, before any work.

    >>> load_study("configs/studies/blue-public.yaml", "full", ["epochs=1"], seeds=2).seeds  # doctest: +SKIP
    [1, 2]
    """
    source = str(path)
    data_dirs = (data_dirs or DataDirs.from_env()).beside(path)
    problems: list[str] = []
    data, where = _apply_profile(read_yaml(path), profile or None, source, problems)
    study_overrides, run_items = _split_overrides(list(overrides or []))
    data = apply_overrides(data, study_overrides)
    run_values = apply_overrides({}, run_items)
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    config = build(StudyConfig, data, where, problems)
    if config is None:  # go on with the known keys, to report the problems of the sections too
        config = build(StudyConfig, {k: v for k, v in data.items() if k in _study_fields()}, where, [])
        if config is None:
            raise ConfigError(problems)
    run_overrides = _check_section(run_values, "override", problems)
    sections = {s: _check_section(getattr(config, s), f"{where}: {s}", problems) for s in _SECTION_NAMES}
    names = _resolve_tasks(config.tasks, data_dirs, where, problems)
    task_overrides = _check_task_overrides(config.task_overrides, names, where, problems)
    _check_mtl_tasks(config.mtl_tasks, names, where, problems)
    seed_list = _resolve_seeds(config.seeds, seeds, where, problems)
    # Built from the entries that passed so far, so that the runs' values are checked even when some did not.
    checked = dataclasses.replace(config, task_overrides=task_overrides, **sections)
    study = Study(checked, source, profile or None, names, seed_list, run_overrides, data_dirs)
    _build_run_configs(study, where, problems)
    if problems:
        raise ConfigError(problems)
    return study


def _apply_profile(raw: dict, profile: str | None, source: str, problems: list[str]) -> tuple[dict, str]:
    """The file with ``profile`` deep-merged over it, and the name its problems are reported under; checks
    every profile's keys."""
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
                problems.append(f"{source}: profiles.{name}: unknown key '{key}'{did_you_mean(str(key), options)}")
    if profile is None:
        return raw, source
    if not profiles:
        problems.append(f"{source}: no profiles defined, so profile '{profile}' cannot be used; "
                        "pass --profile '' to run the file as it is")
    elif profile not in profiles:
        hint = did_you_mean(profile, profiles, None)
        problems.append(f"{source}: profiles: no profile '{profile}' (defined: {', '.join(profiles)}){hint}")
    elif isinstance(profiles[profile], dict):  # its unknown keys are reported above
        known = {k: v for k, v in profiles[profile].items() if k in fields and k != "profiles"}
        return deep_merge(raw, known), f"{source} (profile {profile})"
    return raw, source


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Study keys (``seeds=2``, ``mtl.epochs=5``) versus RunConfig keys for every run (``epochs=1``)."""
    fields = _study_fields()
    study: list[str] = []
    runs: list[str] = []
    for item in overrides:
        head = item.split("=", 1)[0].strip().split(".")[0]
        (study if head in fields else runs).append(item)
    return study, runs


def _check_section(values: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """Check one mapping of RunConfig keys (known, not set by the study, of the right type); returns the
    entries that passed, as RunConfig will hold them (``1e-3`` as a float)."""
    if not isinstance(values, dict):
        problems.append(f"{where}: expected a mapping of run settings, got {type(values).__name__}")
        return {}
    clean = {}
    for key, value in values.items():
        if key in STUDY_SET:
            problems.append(f"{where}: '{key}' is set by the study for each run ({STUDY_SET[key]})")
            continue
        checked = build(RunSettings, {key: value}, where, problems)  # reports an unknown key or a wrong type
        if checked is not None and key in _SETTABLE:
            clean[key] = getattr(checked, key)
    return clean


def _check_task_overrides(
    overrides: dict[str, dict[str, dict[str, Any]]], names: dict[str, str], where: str, problems: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``task_overrides``: known tasks, single-task settings, checked RunConfig keys; returns what passed."""
    clean: dict[str, dict[str, dict[str, Any]]] = {}
    for task, per_setting in overrides.items():
        if task not in names:
            problems.append(f"{where}: task_overrides: '{task}' is not one of the study's tasks"
                            f"{did_you_mean(task, list(names))}")
        for setting, values in per_setting.items():
            if setting not in TASK_OVERRIDE_SETTINGS:
                problems.append(f"{where}: task_overrides.{task}: unknown setting '{setting}' "
                                f"(single-task settings: {', '.join(TASK_OVERRIDE_SETTINGS)})")
            else:
                section = _check_section(values, f"{where}: task_overrides.{task}.{setting}", problems)
                clean.setdefault(task, {})[setting] = section
    return clean


def _check_mtl_tasks(chosen: list[str] | None, names: dict[str, str], where: str, problems: list[str]) -> None:
    """``mtl_tasks``: a non-empty list of the study's tasks (by name), each once."""
    if chosen is None:
        return
    if not chosen:
        problems.append(f"{where}: mtl_tasks: at least one task is required (leave it out for all of them)")
    for task in chosen:
        if task not in names:
            problems.append(f"{where}: mtl_tasks: '{task}' is not one of the study's tasks"
                            f"{did_you_mean(str(task), list(names))}")
    if len(set(chosen)) != len(chosen):
        problems.append(f"{where}: mtl_tasks: a task is listed twice: {chosen}")


def _resolve_tasks(entries: list[str], data_dirs: DataDirs, where: str, problems: list[str]) -> dict[str, str]:
    """Task name → dataset config entry; every entry's config is loaded (statically validated)."""
    names: dict[str, str] = {}
    if not entries:
        problems.append(f"{where}: tasks: at least one task is required")
    for entry in entries:
        try:
            spec = load_dataset_spec(entry, data_dirs)
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


def _build_run_configs(study: Study, where: str, problems: list[str]) -> None:
    """Build and validate the RunConfig of each kind of run into ``study.configs``: ST, MTL and MTL-FT of
    every task, and the pair of the first two tasks (the other pairs differ only in their tasks). A
    problem shared by several kinds is reported once."""
    names = list(study.tasks)
    kinds = [("st", [t]) for t in names] + [("mtl", study.mtl_tasks)] + [("mtl_ft", [t]) for t in names]
    kinds += [("pair", names[:2])] if len(names) > 1 else []
    seen: set[str] = set()
    for setting, tasks in kinds:
        label = f"{setting} {tasks[0]}" if setting in TASK_OVERRIDE_SETTINGS else setting
        values = study.run_values(setting, tasks, study.seeds[0], "-")
        config = build(RunConfig, values, label, [])  # the entries' types were checked above
        found = config.validate() if config is not None else []
        for message in found:
            if message not in seen:
                seen.add(message)
                problems.append(f"{where}: {label} runs: {message}")
        if config is not None and not found:
            study.configs[(setting, tuple(tasks))] = config
