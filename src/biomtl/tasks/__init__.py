"""Task types: one module per type behind the :class:`~biomtl.tasks.base.TaskType` protocol.

Adding a task type is one module plus one line in ``TASK_TYPES``; sampling, the training loop, saving and
the CLI do not change.
"""

from __future__ import annotations

from biomtl.tasks.base import TaskType
from biomtl.tasks.classification import ClassificationTask
from biomtl.tasks.multilabel import MultilabelTask
from biomtl.tasks.regression import RegressionTask
from biomtl.tasks.tagging import TaggingTask

TASK_TYPES: dict[str, type[TaskType]] = {
    "regression": RegressionTask,
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "tagging": TaggingTask,
}


def task_type(name: str) -> type[TaskType]:
    return TASK_TYPES[name]


__all__ = ["TASK_TYPES", "TaskType", "task_type"]
