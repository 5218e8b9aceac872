"""Atomic writes: a file or a whole directory appears complete or not at all.

Each write goes to a temporary sibling (``.<name>.<random>``) that is renamed over the target, so a reader,
or a run killed half-way, never sees a half-written file or directory. A write that fails (a full disk, a
read-only directory) removes its temporary and raises :class:`~biomtl.errors.WriteError`, one line naming
the file. Temporaries are created with the
permissions any new file gets (``0o666``/``0o777`` less the umask), not the private ``0o600``/``0o700`` of
:mod:`tempfile`, so the result is as readable as a file the user wrote by hand.

>>> atomic_write_text(Path("/tmp/hello.txt"), "hello\\n")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from biomtl.errors import WriteError

T = TypeVar("T")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp, fd = _new_sibling(path, lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        _write_file(fd, data)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(e, path, tmp) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _write_file(fd: int, data: bytes) -> None:
    """Write ``data`` to the open file ``fd`` and close it (the one place a file's bytes are written)."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Replace the directory ``target`` by what ``write(tmp)`` puts into a fresh temporary sibling.

    The previous version is renamed to ``.<name>.old`` for the moment between the two renames; a run killed
    exactly then finds it there (:func:`recover_dir`). The parent directory must exist.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        tmp, _ = _new_sibling(target, lambda p: os.mkdir(p, 0o777))
        write(tmp)
        old = _old(target)
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except WriteError:
        raise
    except OSError as e:
        raise write_error(e, target, tmp) from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


def write_error(error: OSError, target: Path, tmp: Path | None = None) -> WriteError:
    """``error`` as one line naming the file (``target`` for a path inside the temporary ``tmp``) and the
    system's reason: ``run/best/model.safetensors: cannot write (No space left on device)``."""
    if isinstance(error, WriteError):
        return error
    name = str(error.filename) if error.filename else str(target)
    if tmp is not None and name.startswith(str(tmp)):
        name = str(target) + name[len(str(tmp)):]
    elif Path(name).parent == target.parent and Path(name).name.startswith(f".{target.name}."):
        name = str(target)  # the temporary could not be created
    reason = error.strerror or str(error) or type(error).__name__
    return WriteError(f"{name}: cannot write ({reason})")


def check_writable_dir(path: Path, key: str) -> None:
    """A one-line error, naming ``key`` (``output_dir``, ``--out``), when ``path`` cannot be a directory
    that this process writes: it is a file, lies under a file, or its nearest existing directory is
    read-only. Checked before any work; a write that fails later still raises :class:`WriteError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{key}: {path} is a file, not a directory")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise WriteError(f"{key}: {existing} is a file, so {path} cannot be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"{key}: {existing} is not writable")


def recover_dir(target: Path) -> None:
    """Tidy up after a process killed inside :func:`atomic_dir` for ``target``: put the previous version back
    when the swap was cut between its two renames, and remove half-written temporaries. An ``.old`` copy
    beside a complete ``target`` stays (the next swap removes it)."""
    target = Path(target)
    old = _old(target)
    if old.is_dir() and not target.exists():
        os.replace(old, target)
    for stale in target.parent.glob(f".{target.name}.*"):
        if stale.is_dir() and stale != old:
            shutil.rmtree(stale)


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _new_sibling(target: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """``create(path)`` for an unused ``.<name>.<random>`` beside ``target``. ``create`` must fail with
    :class:`FileExistsError` when the path exists (``O_EXCL``, ``mkdir``); the kernel applies the umask."""
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            return path, create(path)
        except FileExistsError:
            continue
