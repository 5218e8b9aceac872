"""Where a run's data comes from, resolved once: the corpus directory (``{corpora}`` in a dataset config's
``files``), the prepared task files (``{prepared}``) and where dataset configs are looked up by name.

The command line builds one :class:`DataDirs` from its flags, else the environment; a dataset config loaded
with it (:func:`biomtl.tasks.load_dataset_spec`) carries absolute file paths, so nothing below asks again.
This module imports only :mod:`biomtl.errors`: the corpus driver and the config loader both read it.

>>> DataDirs.from_env(corpora="/data/corpora").corpora
PosixPath('/data/corpora')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from biomtl.errors import BiomtlError

CORPORA_ENV = "BIOMTL_CORPORA"  # the official corpora, unless --corpora
PREPARED_ENV = "BIOMTL_DATA"  # prepared task files, unless --data/--out
DATASETS_ENV = "BIOMTL_DATASETS"  # directories of dataset configs to look names up in (os.pathsep-separated)


def default_prepared_dir() -> Path:
    """Where prepared task files live unless ``--out``/``BIOMTL_DATA`` says otherwise."""
    if os.environ.get(PREPARED_ENV):
        return Path(os.environ[PREPARED_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "biomtl" / "tasks"


def resolve_corpora_dir(corpora: str | Path | None) -> Path:
    """The corpus directory from the flag, else ``BIOMTL_CORPORA``; fails with a clear message."""
    value = corpora or os.environ.get(CORPORA_ENV)
    if not value:
        raise BiomtlError(f"no corpus directory: pass --corpora DIR or set {CORPORA_ENV}")
    path = Path(value)
    if not path.is_dir():
        raise BiomtlError(f"corpus directory {path} does not exist")
    return path


@dataclass(frozen=True)
class DataDirs:
    """The directories that dataset configs refer to, absolute.

    A dataset named in a run or study config (``tasks: [my-ner]``) is looked up beside that file (``base``),
    then in ``datasets`` (``BIOMTL_DATASETS``), then among the shipped configs; a relative path there
    resolves against ``base``.
    """

    corpora: Path | None  # None when neither --corpora nor BIOMTL_CORPORA is given
    prepared: Path
    datasets: tuple[Path, ...] = ()
    base: Path | None = None  # the directory of the file that names the tasks (None: the working directory)

    @classmethod
    def from_env(cls, corpora: str | Path | None = None, prepared: str | Path | None = None) -> DataDirs:
        """The flags' directories, else the environment's; relative ones against the working directory."""
        corpora = corpora or os.environ.get(CORPORA_ENV) or None
        datasets = os.environ.get(DATASETS_ENV, "")
        return cls(
            Path(corpora).absolute() if corpora else None,
            Path(prepared or default_prepared_dir()).absolute(),
            tuple(Path(d).absolute() for d in datasets.split(os.pathsep) if d),
        )

    def beside(self, config_file: str | Path) -> DataDirs:
        """The same directories for the tasks that ``config_file`` (a run or study config) names."""
        return replace(self, base=Path(config_file).absolute().parent)
