"""Annotating a directory of shards: one output shard per input shard, same name, same format unless told.

Two engines run the same per-shard work (:func:`annotate_shard`: read, :func:`biomtl.annotate.annotate`,
write):

* ``local`` (the default): this process annotates its shards one after the other. ``--shard K/N`` takes
  every N-th shard of the sorted listing from the K-th on (K counts from 0), so N independent jobs (a Slurm
  array) split a directory between them without talking to each other.
* ``ray``: Ray Data reads the shards (``read_binary_files``, one block per shard) and ``map_batches`` hands
  them to a pool of actors, each holding one :class:`~biomtl.predict.Predictor` (:class:`ShardAnnotator`).
  The actors write their outputs themselves, so every node needs the input, output and model directories at
  the same paths (a shared file system).

Each output is written atomically (:mod:`biomtl.atomic`), so a file present in the output directory is a
complete one: a restarted job skips the shards whose output exists and annotates the rest. The output
directory records the settings the shards were annotated with (``biomtl-annotate.json``); a restart with
another model or other options is refused instead of mixing the two.

>>> job = ShardJob(model="runs/chemprot-e2e/best")  # doctest: +SKIP
>>> annotate_directory(Path("pubmed/"), Path("annotated/"), job, engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomtl.atomic import atomic_write_text, check_writable_dir, write_error
from biomtl.errors import BiomtlError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
SETTINGS = "biomtl-annotate.json"
SUFFIXES = {"text": ".txt", "jsonl": ".jsonl", "bioc-xml": ".xml", "bioc-json": ".json", "pubtator": ".pubtator"}


@dataclass(frozen=True)
class ShardJob:
    """The model and the ``biomtl annotate`` options every shard is annotated with."""

    model: str
    input_format: str | None = None
    output_format: str | None = None  # None: each shard's own format
    tasks: tuple[str, ...] | None = None
    keep_input: frozenset[str] = frozenset()
    device: str = "cpu"
    batch_size: int = 64
    precision: str = "auto"

    def settings(self) -> dict[str, Any]:
        """What decides an output shard's content (a restart must not change it)."""
        return {
            "model": str(Path(self.model).absolute()), "input_format": self.input_format,
            "format": self.output_format, "tasks": list(self.tasks) if self.tasks else None,
            "keep_input_entities": sorted(self.keep_input), "precision": self.precision,
        }


@dataclass
class Report:
    """What a run did: shards annotated (with their documents), skipped as finished, and failed (with the
    one-line reason)."""

    annotated: list[str] = field(default_factory=list)
    documents: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def add(self, shard: str, documents: int, error: str) -> None:
        if error:
            self.failed.append((shard, error))
            log.info("%s: failed: %s", shard, error)
        else:
            self.annotated.append(shard)
            self.documents += documents
            log.info("%s: %d documents", shard, documents)

    def check(self) -> None:
        """One line for the failed shards: the first one's reason, and how many more failed."""
        if not self.failed:
            return
        more = len(self.failed) - 1
        names = ", ".join(name for name, _ in self.failed[1:6]) + (", ..." if more > 5 else "")
        tail = f" (and {more} more shard(s) failed: {names})" if more else ""
        raise BiomtlError(
            f"{self.failed[0][1]}{tail}; {len(self.annotated) + len(self.skipped)} shard(s) are done and kept, "
            "run the same command again to annotate the rest"
        )


def parse_shard(value: str) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with ``0 <= K < N``: this job's index (from 0) and the number of jobs.

    >>> parse_shard("1/4")
    (1, 4)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match:
        raise BiomtlError(f"--shard: expected K/N (this job's index from 0 and the number of jobs, e.g. 0/4), got {value!r}")
    k, n = int(match[1]), int(match[2])
    if n < 1 or k >= n:
        raise BiomtlError(f"--shard: K must be at least 0 and below N (0/{max(n, 1)} to {max(n, 1) - 1}/{max(n, 1)}), got {value!r}")
    return k, n


def input_shards(input_dir: Path) -> list[Path]:
    """The files directly in ``input_dir`` (hidden files and a settings record left out), sorted by name."""
    if not input_dir.is_dir():
        raise BiomtlError(f"{input_dir}: input directory not found")
    shards = sorted(
        p for p in input_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != SETTINGS
    )
    if not shards:
        raise BiomtlError(f"{input_dir}: no input shards (files) in this directory")
    return shards


def output_path(shard: Path, out_dir: Path, output_format: str | None) -> Path:
    """The output of ``shard``: the same name, or the output format's suffix when the format is given."""
    name = shard.name if output_format is None else Path(shard.name).with_suffix(SUFFIXES[output_format]).name
    return out_dir / name


def plan_shards(
    input_dir: Path, out_dir: Path, job: ShardJob, shard: tuple[int, int] | None = None, overwrite: bool = False
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """This job's ``(input, output)`` pairs still to annotate, and the inputs whose output is already there
    (annotated again with ``overwrite``)."""
    shards = input_shards(input_dir)
    if out_dir.absolute().resolve() == input_dir.absolute().resolve():
        raise BiomtlError(f"--output-dir: {out_dir} is the input directory; choose another directory")
    outputs: dict[Path, Path] = {}
    for s in shards:
        dst = output_path(s, out_dir, job.output_format)
        if dst in outputs:
            raise BiomtlError(f"{input_dir}: {outputs[dst].name} and {s.name} would both be written to {dst} (--format {job.output_format})")
        outputs[dst] = s
    mine = shards if shard is None else shards[shard[0] :: shard[1]]
    todo, done = [], []
    for s in mine:
        dst = output_path(s, out_dir, job.output_format)
        if dst.is_file() and not overwrite:
            done.append(s)
        else:
            todo.append((s, dst))
    return todo, done


def check_settings(out_dir: Path, job: ShardJob, overwrite: bool) -> None:
    """Refuse an output directory whose shards were annotated with other settings (unless ``overwrite``,
    which annotates every shard again). Writes nothing."""
    check_writable_dir(out_dir, "--output-dir")
    path = out_dir / SETTINGS
    if overwrite or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        saved = {}
    settings = job.settings()
    changed = [k for k in settings if not isinstance(saved, dict) or saved.get(k) != settings[k]]
    if changed:
        before = saved if isinstance(saved, dict) else {}
        diffs = ", ".join(f"{k} {before.get(k)!r} → {settings[k]!r}" for k in changed)
        raise BiomtlError(
            f"{out_dir}: its shards were annotated with other settings ({diffs}); choose another "
            "--output-dir, or pass --overwrite to annotate every shard again"
        )


def record_settings(out_dir: Path, job: ShardJob) -> None:
    """Create ``out_dir`` and record the job's settings there (:func:`check_settings` reads them)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, out_dir) from None
    atomic_write_text(out_dir / SETTINGS, json.dumps(job.settings(), indent=1) + "\n")


def load_predictor(job: ShardJob, threads: int | None = None) -> Any:
    """The job's :class:`~biomtl.predict.Predictor`, its ``--tasks`` checked against the model's heads."""
    from biomtl.annotate import plan_tasks
    from biomtl.predict import Predictor

    if threads:
        import torch

        torch.set_num_threads(threads)
    predictor = Predictor.load(job.model, device=job.device, batch_size=job.batch_size, precision=job.precision)
    plan_tasks(predictor, list(job.tasks) if job.tasks else None, job.keep_input)
    return predictor


def annotate_shard(predictor: Any, job: ShardJob, src: Path, dst: Path, raw: bytes | None = None) -> int:
    """Annotate one shard into ``dst`` (atomically) as ``biomtl annotate SRC --output DST`` does; returns its
    number of documents. ``raw`` gives the shard's bytes when they were read already."""
    from biomtl.annotate import annotate
    from biomtl.formats import read_documents, write_documents

    collection, fmt = read_documents(src, job.input_format, raw)
    annotate(predictor, collection, str(src), list(job.tasks) if job.tasks else None, job.keep_input)
    text = write_documents(collection, job.output_format or fmt)
    for stale in dst.parent.glob(f".{dst.name}.*"):  # a temporary left by a job killed while writing dst
        stale.unlink(missing_ok=True)
    atomic_write_text(dst, text)
    return len(collection.documents)


def annotate_local(predictor: Any, job: ShardJob, todo: list[tuple[Path, Path]], report: Report) -> None:
    """Annotate ``todo`` in this process, one shard after the other."""
    for src, dst in todo:
        try:
            report.add(src.name, annotate_shard(predictor, job, src, dst), "")
        except BiomtlError as e:
            report.add(src.name, 0, str(e))


class ShardAnnotator:
    """The Ray Data actor: one model, loaded once; each call annotates a batch of whole shards and writes
    their outputs. A shard's bad input comes back as its ``error`` (the other shards go on)."""

    def __init__(self, job: ShardJob, out_dir: str, threads: int | None = None) -> None:
        self.job = job
        self.out_dir = Path(out_dir)
        self.predictor = load_predictor(job, threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"shard": [], "documents": [], "error": []}
        for path, raw in zip(batch["path"], batch["bytes"], strict=True):
            src = Path(str(path))
            dst = output_path(src, self.out_dir, self.job.output_format)
            try:
                n, error = annotate_shard(self.predictor, self.job, src, dst, bytes(raw)), ""
            except BiomtlError as e:
                n, error = 0, str(e)
            rows["shard"].append(src.name)
            rows["documents"].append(n)
            rows["error"].append(error)
        return rows


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BiomtlError("--engine ray: Ray is not installed; pip install 'biomtl[ray]'") from None
    return ray


def annotate_ray(
    job: ShardJob, todo: list[tuple[Path, Path]], out_dir: Path, report: Report,
    workers: int | None = None, address: str | None = None,
) -> None:
    """Annotate ``todo`` on a Ray cluster: Ray Data reads the shards, ``workers`` actors (default: one per
    CPU, or per GPU with a CUDA ``device``) annotate them. Connects to ``address`` (else ``RAY_ADDRESS``, a
    cluster started on this machine, or a new local instance); a Ray already initialised here is used."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    # Ray Data logs each plan at INFO and its settings at WARNING; the one summary line is the CLI's.
    quiet = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        gpu = job.device.startswith("cuda")
        resources = ray.cluster_resources()
        available = int(resources.get("GPU" if gpu else "CPU", 0))
        if available < 1:
            raise BiomtlError(f"--engine ray: the Ray cluster has no {'GPU' if gpu else 'CPU'} for a worker")
        size = min(workers or available, len(todo))
        # One block per shard, so that the shards spread over the actors. Reading takes no CPU from the
        # actors' budget (it is I/O; an actor per CPU would otherwise leave none for the reads).
        ds = ray.data.read_binary_files(
            [str(src) for src, _ in todo], include_paths=True, override_num_blocks=len(todo), num_cpus=0
        )
        ds = ds.map_batches(
            ShardAnnotator,
            fn_constructor_kwargs={"job": job, "out_dir": str(out_dir.absolute()), "threads": None if gpu else 1},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            num_gpus=1 if gpu else 0,
        )
        for row in ds.iter_rows():
            report.add(str(row["shard"]), int(row["documents"]), str(row["error"]))
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        if started:
            ray.shutdown()


def annotate_directory(
    input_dir: Path,
    out_dir: Path,
    job: ShardJob,
    engine: str = "local",
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    address: str | None = None,
) -> Report:
    """Annotate every shard of ``input_dir`` (this job's share with ``shard``) into ``out_dir``; shards
    whose output exists are skipped unless ``overwrite``. Raises one line when a shard failed, after the
    others are done."""
    if engine not in ENGINES:
        raise BiomtlError(f"--engine: unknown engine '{engine}'; choose {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise BiomtlError(f"--workers: must be >= 1, got {workers}")
    todo, done = plan_shards(input_dir, out_dir, job, shard, overwrite)
    check_settings(out_dir, job, overwrite)
    report = Report(skipped=[s.name for s in done])
    if done:
        log.info("%d shard(s) already annotated in %s; skipped", len(done), out_dir)
    if not todo:
        return report
    predictor = load_predictor(job)  # a bad model or --tasks is one line here, before anything is written
    record_settings(out_dir, job)
    if engine == "ray":
        del predictor  # each actor loads its own
        annotate_ray(job, todo, out_dir, report, workers, address)
    else:
        annotate_local(predictor, job, todo, report)
    report.check()
    return report
