"""Task types: one module per type behind the :class:`~biomtl.tasks.base.TaskType` protocol, and the
registry that maps a dataset config's ``type:`` to one.

Adding a task type is one module plus one call, ``register_task_type("ranking", RankingTask)``; readers,
sampling, the training loop, saving, the predictor and the CLI do not change. Because the registry knows
every type, a dataset config is loaded and fully checked here (:func:`load_dataset_spec`).
"""

from __future__ import annotations

from pathlib import Path

from biomtl.config import (
    DatasetSpec,
    build,
    check_dataset_spec,
    find_dataset_config,
    labels_as_text,
    read_yaml,
    with_files,
)
from biomtl.datadirs import DataDirs
from biomtl.errors import ConfigError
from biomtl.tasks.base import DEFAULT_SETTINGS, HeadSettings, InvalidLabel, Prediction, TaskType
from biomtl.tasks.classification import ClassificationTask
from biomtl.tasks.multilabel import MultilabelTask
from biomtl.tasks.regression import RegressionTask
from biomtl.tasks.span_relation import SpanRelationTask
from biomtl.tasks.tagging import TaggingTask

TASK_TYPES: dict[str, type[TaskType]] = {
    "regression": RegressionTask,
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "tagging": TaggingTask,
    "span_relation": SpanRelationTask,
}
"""Task type by the name a dataset config gives as ``type:``."""


def register_task_type(name: str, cls: type[TaskType]) -> None:
    """Make ``type: <name>`` in dataset configs (and in saved models) mean ``cls``.

    >>> register_task_type("ranking", RankingTask)  # doctest: +SKIP
    """
    if TASK_TYPES.get(name, cls) is not cls:
        raise ValueError(f"task type '{name}' is already registered ({TASK_TYPES[name].__name__})")
    TASK_TYPES[name] = cls


def make_task(spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> TaskType:
    """The task type named by ``spec.type``, bound to ``spec`` and the model's ``settings``."""
    return TASK_TYPES[spec.type](spec, settings)


def spec_problems(spec: DatasetSpec, where: str) -> list[str]:
    """Every static problem of a spec, one line each: the generic checks and its task type's own."""
    problems = check_dataset_spec(spec, where, list(TASK_TYPES))
    if spec.type in TASK_TYPES:
        problems.extend(f"{where}: {p}" for p in TASK_TYPES[spec.type].spec_problems(spec))
    return problems


def load_dataset_spec(name_or_path: str | Path, data_dirs: DataDirs | None = None) -> DatasetSpec:
    """Load a dataset config (found as :func:`~biomtl.config.find_dataset_config` says) and check it
    statically, every problem at once; its files' paths are resolved against ``data_dirs`` (default: the
    environment's directories), once. The files themselves are checked by
    :func:`biomtl.data.readers.validate_dataset`.

    >>> load_dataset_spec("chemprot").labels  # doctest: +SKIP
    ['CPR:3', 'CPR:4', 'CPR:5', 'CPR:6', 'CPR:9', 'false']
    """
    data_dirs = data_dirs or DataDirs.from_env()
    path = find_dataset_config(str(name_or_path), data_dirs)
    problems: list[str] = []
    spec = build(DatasetSpec, {**labels_as_text(read_yaml(path)), "config_path": str(path)}, str(path), problems)
    if spec is not None:
        problems.extend(spec_problems(spec, str(path)))
    if problems:
        raise ConfigError(problems)
    return with_files(spec, data_dirs)


__all__ = [
    "TASK_TYPES",
    "HeadSettings",
    "InvalidLabel",
    "Prediction",
    "TaskType",
    "load_dataset_spec",
    "make_task",
    "register_task_type",
    "spec_problems",
]
