"""The ``checkpoint/`` directory of a run: everything ``--resume`` needs to go on bit-identically.

::

    model.safetensors  every weight (encoder and heads)
    optimizer.pt       optimizer and LR-scheduler state and the torch (and CUDA) RNG states; plain tensors,
                       read with ``torch.load(weights_only=True)``
    state.json         the loop's state (epoch, steps, best, history, loss sums) and the Python/NumPy RNGs

It is replaced atomically (:func:`biomtl.atomic.atomic_dir`); a run killed between the two renames of that
swap leaves the previous checkpoint as ``.checkpoint.old``, which :func:`find_checkpoint` also accepts.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from biomtl.atomic import atomic_dir
from biomtl.distributed import is_main
from biomtl.errors import TrainingError

CHECKPOINT = "checkpoint"


def save_checkpoint(
    out: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> None:
    """Write ``out/checkpoint`` (replacing the previous one); ``state`` is the loop's JSON-able state. Under
    DDP only rank 0 writes (every rank holds the same weights and state)."""
    if not is_main():
        return

    def write(tmp: Path) -> None:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tmp / "optimizer.pt")
        np_state: Any = np.random.get_state()  # (name, keys, pos, has_gauss, cached)
        extra = {
            "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        (tmp / "state.json").write_text(json.dumps({**state, **extra}) + "\n")

    atomic_dir(out / CHECKPOINT, write)


def find_checkpoint(out: Path) -> Path | None:
    """The run's checkpoint directory, or ``None`` when it has none."""
    for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
        path = out / name
        if (path / "state.json").is_file():
            return path
    return None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and every RNG from ``path``; returns the loop's state."""
    weights = _read(path / "model.safetensors", load_file)
    blob = _read(path / "optimizer.pt", lambda f: torch.load(f, weights_only=True))
    state = _read(path / "state.json", lambda f: json.loads(f.read_text()))
    try:
        result = model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    except (RuntimeError, ValueError, KeyError):
        result = None
    if result is None or result.missing_keys or result.unexpected_keys:
        raise TrainingError(f"{path}: checkpoint does not match this run's tasks; start again with --overwrite")
    torch.set_rng_state(blob["rng"]["torch"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    np_rng = state.pop("numpy_rng")
    np.random.set_state((np_rng[0], np.asarray(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    return state


def _read(file: Path, read: Callable[[Path], Any]) -> Any:
    """``read(file)``, or a one-line :class:`TrainingError` naming the file."""
    try:
        return read(file)
    except pickle.UnpicklingError:
        reason = "not a plain tensor file; refused by torch.load(weights_only=True)"
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise TrainingError(f"{file}: cannot read the checkpoint ({reason}); start again with --overwrite")
