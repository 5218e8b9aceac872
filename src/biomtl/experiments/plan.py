"""Which runs a study trains, in which order, and what they cost (``--plan``), before anything is trained.

Both drivers share one output layout, ``<output_dir>/seed<k>/<run>/``: the ``st-<task>`` runs of a study and
of a pairwise study with the same config and output directory are the same runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from biomtl.config import read_yaml
from biomtl.errors import ConfigError
from biomtl.experiments import report
from biomtl.experiments.schema import MTL, Run, Study, load_study, mtl_ft_name, pair_name, st_name
from biomtl.tasks import load_dataset_spec


def study_runs(study: Study) -> list[Run]:
    """Every run of the study in execution order: per seed ST, then MTL, then MTL-FT (needs MTL)."""
    runs = []
    for seed in study.seeds:
        runs += [study.run("st", [t], seed, st_name(t)) for t in study.tasks]
        runs.append(study.run("mtl", study.mtl_tasks, seed, MTL))
        runs += [study.run("mtl_ft", [t], seed, mtl_ft_name(t)) for t in study.tasks]
    return runs


def pairwise_runs(study: Study) -> list[Run]:
    """Per seed: the ST runs, then one MTL run per unordered pair (in the study's task order)."""
    runs = []
    for seed in study.seeds:
        runs += [study.run("st", [t], seed, st_name(t)) for t in study.tasks]
        runs += [study.run("pair", [a, b], seed, pair_name(a, b)) for a, b in itertools.combinations(study.tasks, 2)]
    return runs


def check_data(study: Study) -> None:
    """Fail before any training when a task's data files are missing (every task's reported)."""
    from biomtl.data.readers import splits

    problems: list[str] = []
    for entry in study.tasks.values():
        spec = load_dataset_spec(entry, study.data_dirs)
        missing: list[Path] = []
        for split in [s for s in splits(spec) if s in spec.files]:
            try:
                path = spec.file(split).path
            except ConfigError as e:
                problems.extend(p for p in e.problems if p not in problems)
                continue
            if path is not None and not path.is_file():
                missing.append(path)
        if missing:
            prepared_files = any("{prepared}" in str(f) for f in spec.files.values())
            hint = " (run `biomtl data prepare` first)" if prepared_files else ""
            names = ", ".join(p.name for p in missing)
            problems.append(f"{missing[0].parent}: task {spec.name}: data file(s) not found: {names}{hint}")
    if problems:
        raise ConfigError(problems)


def plan_runs(study: Study, runs: list[Run]) -> str:
    """A Markdown table of the runs with their settings and optimizer steps (nothing is trained), to size a
    profile before spending a GPU on it. Steps count the training examples after ``max_train_examples``;
    a tagging sentence longer than ``max_length`` adds a window or two on top."""
    from biomtl.data.readers import read_split
    from biomtl.data.sampler import TaskBatchSampler

    check_data(study)
    sizes: dict[tuple[str, int | None], int] = {}

    def size(entry: str, cap: int | None) -> int:
        if (entry, cap) not in sizes:
            sizes[(entry, cap)] = len(read_split(load_dataset_spec(entry, study.data_dirs), "train", limit=cap))
        return sizes[(entry, cap)]

    rows: list[list[str]] = []
    per_seed: dict[int, int] = {}
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


def validate_study(path: str | Path) -> str:
    """``biomtl validate`` for a study config: load it under each of its profiles (or as it is, when it has
    none) and build every run of the study and of its pairwise study, without reading data. Raises one
    ConfigError with every distinct problem; returns a summary such as ``13 runs per seed; profiles quick
    1 seed, full 3 seeds``."""
    profiles = read_yaml(path).get("profiles")
    names: list[str | None] = list(profiles) if isinstance(profiles, dict) and profiles else [None]
    problems: list[str] = []
    seen: set[str] = set()  # a problem of the file itself is reported once, not once per profile
    sizes: dict[str | None, tuple[int, int]] = {}  # profile → (runs per seed, seeds)
    for name in names:
        try:
            sizes[name] = _build_every_run(load_study(path, name))
        except ConfigError as e:
            for p in e.problems:
                key = p.replace(f"{path} (profile {name})", str(path), 1)
                if key not in seen:
                    seen.add(key)
                    problems.append(p)
    if problems:
        raise ConfigError(problems)

    def seeds(n: int) -> str:
        return f"{n} seed{'s' if n > 1 else ''}"

    if None in sizes:
        return f"{sizes[None][0]} runs per seed, {seeds(sizes[None][1])}"
    if len({runs for runs, _ in sizes.values()}) == 1:
        runs = next(iter(sizes.values()))[0]
        return f"{runs} runs per seed; profiles " + ", ".join(f"{p} {seeds(n)}" for p, (_, n) in sizes.items())
    return "profiles " + ", ".join(f"{p} {runs} runs per seed × {seeds(n)}" for p, (runs, n) in sizes.items())


def _build_every_run(study: Study) -> tuple[int, int]:
    """Build every run of the study and every pair of its pairwise study (each pair's problems reported);
    returns the study's runs per seed and its number of seeds."""
    per_seed = len(study_runs(study)) // len(study.seeds)
    problems: list[str] = []
    for a, b in itertools.combinations(study.tasks, 2):
        try:
            study.run("pair", [a, b], study.seeds[0], pair_name(a, b))
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return per_seed, len(study.seeds)
