"""Training on several processes with PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m biomtl train RUN.yaml`` starts N copies of the same run; ``torchrun`` sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` and :func:`setup` joins them into one process group (gloo on
the CPU, NCCL on GPUs). Without those variables everything here is a no-op and a run is one process.

How the loop uses it (:mod:`biomtl.train`):

* **Sampling.** Every rank builds the same schedule from the shared seed with a global batch of
  N × ``batch_size`` examples, so every rank trains the same task at each step. Each rank collates the whole
  global batch (the padding a single process would use) and keeps its contiguous slice of rows
  (:func:`shard_batch`).
* **Loss.** A rank's loss is weighted by its share of the global batch's loss units (examples; labelled
  tokens for tagging: ``TaskType.loss_units``), times N to undo DDP's gradient average, so the gradient is
  the one of a single process on the global batch, also at the short batches at a task's end. A rank left
  without rows (a global batch smaller than N) repeats a row with weight 0. The loss reported and checked is
  the global one (:func:`global_loss`, one all-reduce of a scalar per step).
* **Writing.** Only rank 0 writes the run directory (:func:`is_main` guards the writers); the others read
  it when resuming, so on several machines ``output_dir`` must be on a shared file system. A study
  (:mod:`biomtl.experiments`) trains each of its runs on every rank; rank 0 alone decides which runs to skip
  or resume and writes the study's files, through :func:`main_first`.
* **Evaluation.** Every rank evaluates the whole dev and test sets with the same weights (no example is
  counted twice or dropped at shard ends, and every rank takes the same selection decisions); the ranks
  other than 0 would wait for rank 0 anyway.

>>> ranks = setup("cpu")  # Ranks(rank=0, world_size=1, local_rank=0) outside torchrun
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from biomtl.errors import BiomtlError

T = TypeVar("T")
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Ranks:
    """Where this process is: its rank among ``world_size`` processes, and its rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Share:
    """A rank's part of a global batch: ``fraction`` of its loss units, and the loss weight that makes DDP's
    gradient average the gradient of the global batch (``world_size × fraction``)."""

    fraction: float = 1.0
    weight: float = 1.0


WHOLE = Share()
ONE = Ranks()


class MainRankFailed(BiomtlError):
    """Raised on the other ranks when rank 0 stopped (rank 0 prints the reason)."""


def from_env() -> Ranks:
    """The ranks ``torchrun`` put in the environment (one process without them)."""
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(name)
        try:
            values[name] = int(raw) if raw is not None else default
        except ValueError:
            raise BiomtlError(f"{name}={raw!r} in the environment is not a whole number (torchrun sets it)") from None
    return Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def setup(device: str) -> Ranks:
    """Join the process group ``torchrun`` started (once per process; later calls return the ranks). On
    CUDA each process takes the GPU ``LOCAL_RANK``."""
    ranks = from_env()
    if ranks.world_size > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return ranks


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 while the others wait; they get its result (pickled) or, when it raised,
    :class:`MainRankFailed`. For what only rank 0 may do (prepare the output directory) or must decide
    alone (whether a run resumes)."""
    if not active():
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as e:
            dist.broadcast_object_list([("error", str(e))], src=0)
            raise
        box = [("ok", result)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise MainRankFailed(f"rank 0 stopped: {value}")
    return value


def shard_batch(batch: Batch, units: Callable[[Batch], int], ranks: Ranks) -> tuple[Batch, Share]:
    """This rank's contiguous slice of rows of a collated global batch, and its :class:`Share` of the
    batch's loss ``units`` (``TaskType.loss_units``)."""
    if ranks.world_size == 1:
        return batch, WHOLE
    n = len(batch["input_ids"])  # every tensor of a batch has a row per feature: (B, ...)
    lo, hi = ranks.rank * n // ranks.world_size, (ranks.rank + 1) * n // ranks.world_size
    if hi == lo:  # fewer rows than ranks: DDP needs a backward on every rank, so repeat a row, weighted 0
        return {k: v[:1] for k, v in batch.items()}, Share(0.0, 0.0)
    part = {k: v[lo:hi] for k, v in batch.items()}
    total = units(batch)
    fraction = units(part) / total if total else (hi - lo) / n
    return part, Share(fraction, ranks.world_size * fraction)


def global_loss(loss: torch.Tensor, share: Share) -> torch.Tensor:
    """The global batch's loss from each rank's ``loss`` and share (one all-reduce; ``loss`` itself
    outside DDP)."""
    if not active():
        return loss
    total = loss * share.fraction
    dist.all_reduce(total)
    return total


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (``model`` itself outside DDP). Each step trains one task's head,
    so the other heads' parameters are unused: ``find_unused_parameters``."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def teardown(synchronize: bool = True) -> None:
    """Leave the process group (at the end of ``biomtl train``/``study`` under torchrun). After a command
    that succeeded, the ranks first meet at a barrier, so that none tears down its connections while another
    still writes its results (gloo then aborted a rank at exit, now and then); after an error each rank leaves
    at once, as a barrier could wait for a rank that never comes."""
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
