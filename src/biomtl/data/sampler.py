"""Task-homogeneous batch schedules for multi-task training.

Every task is cut into mini-batches of its own examples; a strategy decides the order in which the batches of
all tasks are visited in one epoch. Strategies are named:

* ``proportional`` — MT-DNN: all batches of all tasks are shuffled together, so a task is sampled in
  proportion to its number of batches and every example is seen once per epoch.
* ``temperature`` — the same number of steps, but each step draws its task with p ∝ n^(1/T) (T=1 is
  proportional, large T approaches uniform); a task's batches are reused (reshuffled) when they run out.
* ``round_robin`` — tasks take turns, one batch each, until the smallest task runs out of batches
  (as sentence-transformers' ``RoundRobinBatchSampler``).

A schedule is a pure function of ``(seed, epoch)``, so a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import numpy as np

Schedule = list[tuple[str, list[int]]]

CHUNK_BATCHES = 50  # length grouping sorts within chunks of this many batches, keeping batches random


class TaskBatchSampler:
    """Batches for every task, ordered by a named strategy.

    ``lengths[task][i]`` is the token length of feature ``i``; with ``group_by_length`` similar lengths are
    batched together (less padding), within random chunks so the order stays random.

    >>> s = TaskBatchSampler({"a": [5] * 6, "b": [5] * 2}, batch_size=2, strategy="proportional", seed=1)
    >>> sorted(task for task, _ in s.epoch(0))
    ['a', 'a', 'a', 'b']
    """

    def __init__(
        self,
        lengths: dict[str, list[int]],
        batch_size: int,
        strategy: str = "proportional",
        seed: int = 0,
        temperature: float = 2.0,
        group_by_length: bool = True,
    ) -> None:
        if strategy not in ("proportional", "temperature", "round_robin"):
            raise ValueError(f"unknown sampling strategy '{strategy}'")
        empty = [t for t, n in lengths.items() if not n]
        if empty:
            raise ValueError(f"task(s) without training features: {', '.join(empty)}")
        self.lengths = {t: np.asarray(v) for t, v in lengths.items()}
        self.tasks = list(lengths)
        self.batch_size = batch_size
        self.strategy = strategy
        self.seed = seed
        self.temperature = temperature
        self.group_by_length = group_by_length

    def task_batches(self, task: str, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(len(self.lengths[task]))
        size = self.batch_size
        if self.group_by_length:
            chunk = size * CHUNK_BATCHES
            pieces = []
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                pieces.append(part[np.argsort(self.lengths[task][part], kind="stable")])
            order = np.concatenate(pieces)
        batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
        rng.shuffle(batches)
        return batches

    def steps_per_epoch(self) -> int:
        n = {t: -(-len(v) // self.batch_size) for t, v in self.lengths.items()}
        if self.strategy == "round_robin":
            return min(n.values()) * len(n)
        return sum(n.values())

    def epoch(self, epoch: int) -> Schedule:
        """The batches of one epoch as ``(task, feature indices)`` pairs."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = {t: self.task_batches(t, rng) for t in self.tasks}
        if self.strategy == "proportional":
            schedule = [(t, b) for t in self.tasks for b in batches[t]]
            order = rng.permutation(len(schedule))
            return [schedule[i] for i in order]
        if self.strategy == "round_robin":
            rounds = min(len(b) for b in batches.values())
            return [(t, batches[t][r]) for r in range(rounds) for t in self.tasks]
        # temperature
        sizes = np.array([len(self.lengths[t]) for t in self.tasks], dtype=float)
        p = sizes ** (1.0 / self.temperature)
        p /= p.sum()
        draws = rng.choice(len(self.tasks), size=self.steps_per_epoch(), p=p)
        cursor = dict.fromkeys(self.tasks, 0)
        schedule = []
        for k in draws:
            t = self.tasks[k]
            if cursor[t] == len(batches[t]):
                batches[t] = self.task_batches(t, rng)
                cursor[t] = 0
            schedule.append((t, batches[t][cursor[t]]))
            cursor[t] += 1
        return schedule
