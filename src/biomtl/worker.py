"""The model side of ``biomtl serve``: batch-invariant encoders, the model calls of each endpoint
(:class:`Runner`) and the process they run in (:class:`ModelProcess`). Nothing here speaks HTTP.

A text's numbers must not depend on what it is batched with. The encoder runs a batch's texts packed into
one row without padding, each text attending to itself alone (:class:`biomtl.packing.PackedEncoder`; an
encoder that cannot read packed texts runs each text padded to its own length bucket,
:class:`BucketedEncoder`), and on a CPU
``biomtl serve`` asks MKL for strict conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``), under
which a matrix product's rows do not depend on how many rows it has (:func:`batch_invariant` checks it).

``biomtl serve`` runs the model in a process of its own (:class:`ModelProcess`), so that the model's
threads never wait on the HTTP server's Python (they share no interpreter lock); ``create_app(predictor)``
runs it in a thread of the calling process.

>>> model = ModelProcess(LoadSettings("runs/mtl/best"))  # doctest: +SKIP
>>> model(("predict", "bc5cdr-chemical"), [["Aspirin inhibits COX-2."]])  # one result per request  # doctest: +SKIP
>>> model.close()  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from biomtl.annotate import Sentence, annotate
from biomtl.config import DatasetSpec
from biomtl.errors import BiomtlError
from biomtl.formats import Collection
from biomtl.inference import device_compute
from biomtl.model import read_manifest
from biomtl.packing import CHECK_TEXTS, PackedEncoder
from biomtl.predict import Predictor

log = logging.getLogger(__name__)

STRICT_MKL = "AUTO,STRICT"
"""``MKL_CBWR`` value under which MKL's matrix products give every row the same bits whatever the row count."""


# ---------------------------------------------------------------------------------------------------------
# Batch invariance


MIN_ROWS = 4
"""The fewest rows a served model's wide dense layers compute at once. On some CPUs a product of 1-3 rows takes
another kernel even in MKL's strict mode, so a row alone and the same row in a batch differ in the last bits
(AMD EPYC with AVX-512, torch 2.13.0: 1-3 rows differ, 4 and more agree); :func:`invariant_linears`."""

NARROW = 64
"""Dense layers with fewer outputs than this (the task heads: a regression's 1, a tagger's few tags) are
computed as a product and a sum per row: MKL's kernels for such shapes (matrix-vector for one output) give a
row other bits in products of other row counts even in strict mode, on the same CPUs."""


def linear_rows(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed so that a row's result does not depend on how many rows ``x`` has: a narrow layer
    (:data:`NARROW`) as each row's products summed, a wide one on at least :data:`MIN_ROWS` rows (zero rows
    appended, their outputs dropped)."""
    if layer.out_features < NARROW:
        y = (x.unsqueeze(-2) * layer.weight).sum(-1)
        return y if layer.bias is None else y + layer.bias
    weight, bias = autocast_weights(layer, x.device)
    rows = x.numel() // x.shape[-1]
    if rows >= MIN_ROWS:
        return torch.nn.functional.linear(x, weight, bias)
    flat = torch.cat([x.reshape(rows, x.shape[-1]), x.new_zeros(MIN_ROWS - rows, x.shape[-1])])
    return torch.nn.functional.linear(flat, weight, bias)[:rows].reshape(*x.shape[:-1], layer.out_features)


def autocast_weights(layer: torch.nn.Linear, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight and bias in the dtype autocast computes ``device``'s products in, cast once and kept
    (until the weights change): autocast casts them again at every call under ``torch.inference_mode``
    (BENCHMARKS.md, "`biomtl serve` under load", has what it cost). The product is the one autocast computes
    (the same casts of the same values), so the results are the same bits."""
    if not torch.is_autocast_enabled(device.type):
        return layer.weight, layer.bias
    dtype = torch.get_autocast_dtype(device.type)
    key = (dtype, layer.weight.data_ptr(), layer.weight._version)
    cached = layer.__dict__.get("_biomtl_cast")
    if cached is None or cached[0] != key:
        bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        cached = (key, layer.weight.detach().to(dtype), bias)
        layer.__dict__["_biomtl_cast"] = cached
    return cached[1], cached[2]


def invariant_linears(model: torch.nn.Module) -> None:
    """Every ``nn.Linear`` in ``model`` computes through :func:`linear_rows` from now on (same results, up to
    the kernels' rounding; a text's rows then get the same bits alone and in any batch)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = functools.partial(linear_rows, module)  # type: ignore[method-assign]


class BucketedEncoder:
    """Runs ``model.encode`` so that a text's hidden states do not depend on the other texts in its batch.

    Each text is padded to its own bucket length (its token count rounded up to a multiple of ``bucket``,
    at most the model's ``max_length``), the batch's rows are encoded bucket by bucket, and the states are
    put back in the batch's shape (positions past a text's bucket, all padding, are zero)::

        lengths 5, 11, 30 (bucket 8) → rows {5} at T=8, {11} at T=16, {30} at T=32 → (3, 30, H)
    """

    def __init__(self, encode: Callable[[dict[str, torch.Tensor]], torch.Tensor], bucket: int, max_length: int, pad_id: int) -> None:
        self.encode = encode
        self.bucket = bucket
        self.max_length = max_length
        self.pad_id = pad_id

    def bucket_length(self, length: int) -> int:
        rounded = -(-length // self.bucket) * self.bucket
        return max(length, min(rounded, self.max_length))

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        width = mask.shape[1]
        lengths = [int(n) for n in mask.sum(1).tolist()]
        groups: dict[int, list[int]] = {}
        for row, n in enumerate(lengths):
            groups.setdefault(self.bucket_length(n), []).append(row)
        out: torch.Tensor | None = None
        for length, rows in sorted(groups.items()):
            index = torch.tensor(rows, device=mask.device)
            keep = min(length, width)
            sub: dict[str, torch.Tensor] = {}
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in batch:
                    part = batch[key].index_select(0, index)[:, :keep]
                    fill = self.pad_id if key == "input_ids" else 0
                    sub[key] = torch.nn.functional.pad(part, (0, length - keep), value=fill)
            hidden = self.encode(sub)  # (rows, length, H)
            if out is None:
                out = hidden.new_zeros(mask.shape[0], width, hidden.shape[-1])
            out[index, :keep] = hidden[:, :keep]
        assert out is not None  # a batch has at least one row
        return out


def batch_invariant(device: torch.device, dtype: torch.dtype | None = None) -> bool:
    """Whether a dense layer's row comes out the same alone and among others on ``device``, in the precision a
    served model computes in (autocast in ``dtype``; ``None``: fp32), for a wide and a one-output layer computed
    as a served model computes them (:func:`invariant_linears`; on a CPU it also needs MKL's strict
    reproducibility mode, without which some row counts take other kernels)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 384, generator=generator).to(device)
    for width in (1536, 1):  # an encoder's layer and a regression head, as a served model computes them
        layer = torch.nn.Linear(384, width).to(device)
        invariant_linears(layer)
        with torch.inference_mode(), device_compute(device, dtype):
            full = layer(x)
            if not all(torch.equal(layer(x[:n]), full[:n]) for n in (1, 2, 3, 5, 17)):
                return False
    return True


def thread_invariant(
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor], tokenizer: Any, device: torch.device,
    dtype: torch.dtype | None, threads: tuple[int, ...],
) -> bool:
    """Whether ``encode`` gives texts the same bits with each of torch's thread counts in ``threads`` (model
    copies that lend each other their threads compute a lone batch with all of them, others with a share);
    torch's thread count is left as it was."""
    batch = {k: v.to(device) for k, v in tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="pt").items()}
    before = torch.get_num_threads()
    states = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            with torch.inference_mode(), device_compute(device, dtype):
                states.append(encode(batch))
    finally:
        torch.set_num_threads(before)
    return all(torch.equal(states[0], other) for other in states[1:])


# ---------------------------------------------------------------------------------------------------------
# What the worker runs


@dataclass(frozen=True)
class AnnotateJob:
    collection: Collection
    tasks: list[str] | None
    keep: frozenset[str]
    sentences: list[list[Sentence]]  # each document's, split by the HTTP side (the model's process need not)


class Runner:
    """The model calls of each endpoint, for one job alone or for several combined. A combined call that
    raises a :class:`BiomtlError` is run again job by job, so that only the bad request gets the error."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def __call__(self, key: tuple, payloads: list[Any]) -> list[Any]:
        run = self.annotate if key[0] == "annotate" else self.predict
        try:
            return run(key, payloads)
        except BiomtlError as e:
            if len(payloads) == 1:
                return [e]
        out: list[Any] = []
        for payload in payloads:
            try:
                out.extend(run(key, [payload]))
            except BiomtlError as e:
                out.append(e)
        return out

    def predict(self, key: tuple, payloads: list[list[Any]]) -> list[Any]:
        task = key[1]
        inputs = [item for items in payloads for item in items]
        lines = [i for items in payloads for i in range(1, len(items) + 1)]  # each item's place in its request
        rows = self.predictor.predict(task, inputs, source="inputs", lines=lines) if inputs else []
        out, start = [], 0
        for items in payloads:
            out.append(rows[start : start + len(items)])
            start += len(items)
        return out

    def annotate(self, key: tuple, payloads: list[AnnotateJob]) -> list[Any]:
        # annotate() adds to the documents: a combined call works on copies, so that the job-by-job rerun after
        # a failure starts afresh; a job alone is never rerun.
        collections = [copy.deepcopy(job.collection) if len(payloads) > 1 else job.collection for job in payloads]
        combined = Collection([doc for collection in collections for doc in collection.documents])
        sentences = [doc_sentences for job in payloads for doc_sentences in job.sentences]
        annotate(self.predictor, combined, "request", payloads[0].tasks, payloads[0].keep, sentences)
        return collections


@dataclass(frozen=True)
class TaskInfo:
    """What the service tells and checks of one head."""

    token_level: bool
    can_annotate: bool
    pair_input: bool


@dataclass(frozen=True)
class ModelView:
    """What the HTTP side knows of the model, which may run in another process: its tasks and how it batches."""

    specs: dict[str, DatasetSpec]
    tasks: dict[str, TaskInfo]
    batch_invariant: bool  # whether matrix products give a row the same bits whatever the row count
    encoder_batches: str  # "packed" (PackedEncoder) or "buckets" (BucketedEncoder)
    precision: str  # what the model computes in: "fp32", or "bf16" autocast (--precision auto on a bf16 CPU)
    thread_invariant: bool = True  # the same bits with LoadSettings.threads as with threads_alone


def prepare_model(predictor: Predictor, bucket: int) -> ModelView:
    """Make ``predictor``'s model batch-invariant (dense layers through :func:`linear_rows`; packed texts where
    the encoder passes the check, else length buckets of ``bucket`` tokens) and describe the model."""
    model = predictor.model
    invariant_linears(model)
    if not isinstance(model.encode, (PackedEncoder, BucketedEncoder)):
        packed = PackedEncoder(model.encoder)
        if packed.works(model.encode, model.tokenizer, predictor.device):
            model.encode = packed  # type: ignore[method-assign]
        else:
            log.info("using length buckets")
            model.encode = BucketedEncoder(model.encode, bucket, model.max_length, model.tokenizer.pad_token_id)  # type: ignore[method-assign]
    tasks = {name: TaskInfo(t.token_level, t.can_annotate, t.pair_input) for name, t in model.tasks.items()}
    encoder_batches = "packed" if isinstance(model.encode, PackedEncoder) else "buckets"
    precision = {None: "fp32", torch.bfloat16: "bf16"}.get(predictor.dtype, str(predictor.dtype))
    return ModelView(dict(model.specs), tasks, batch_invariant(predictor.device, predictor.dtype), encoder_batches, precision)


# ---------------------------------------------------------------------------------------------------------
# The model's own process


@dataclass(frozen=True)
class LoadSettings:
    """How :class:`ModelProcess` loads the model (``Predictor.load``'s arguments) and batches its encoder."""

    model_dir: str
    device: str = "cpu"
    batch_size: int = 64
    precision: str = "auto"
    bucket: int = 8
    threads: int | None = None  # torch's threads in the model's process (None: torch's default, one per core)
    threads_alone: int | None = None  # ... for a call made with alone=True (None: as threads)


class ModelUnavailable(RuntimeError):
    """The model's process has ended: the call cannot run (the service answers 503)."""


RESTARTS = 3
"""A model process that ends unexpectedly is started again, at most this many times in :data:`RESTART_WINDOW_S`
(a crash loop, such as a request that kills it every time it is sent again, is not restarted for ever)."""
RESTART_WINDOW_S = 600.0


class ModelProcess:
    """The model loaded and run in a child process: calling it runs :class:`Runner` there. Starting it waits
    until the model is loaded and raises the child's :class:`BiomtlError` (one line) if it could not be.

    The child ignores SIGINT and SIGTERM (the server decides when it ends, after the requests in flight) and
    ends when told to (:meth:`close`) or when the server's end of the pipe closes, however the server ended.
    If it ends unexpectedly (killed, out of memory), the call in flight raises :class:`ModelUnavailable` and a
    watcher thread starts the model again at once; calls made meanwhile wait for it. After ``restarts``
    restarts within :data:`RESTART_WINDOW_S`, or if loading fails, it stays down and every call raises.
    """

    def __init__(self, settings: LoadSettings, restarts: int = RESTARTS) -> None:
        read_manifest(Path(settings.model_dir))  # the usual mistakes (no such directory, not a model's) at once
        self.settings = settings
        self.max_restarts = restarts
        self.restarts = 0  # how many times the model process was started again
        self.failed: str | None = None  # why no call can run any more
        self._restarting: str | None = None  # why the model process is being started again
        self._ends: list[float] = []  # when it ended unexpectedly (monotonic), within the restart window
        self._closing = False
        self._lock = threading.Lock()  # one call, restart or close at a time
        self.view: ModelView = self._start()
        self._watcher = threading.Thread(target=self._watch, name="biomtl-model-watcher", daemon=True)
        self._watcher.start()

    def _start(self) -> ModelView:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_model_process, args=(child, self.settings), name="biomtl-model",
                                        daemon=True)
        self._process.start()
        child.close()
        status, value = self._receive()
        if status != "ready":
            self._process.join()
            raise BiomtlError(value if status == "error" else f"{self.settings.model_dir}: {value} while loading the model")
        return value

    def __call__(self, key: tuple, payloads: list[Any], alone: bool = False) -> list[Any]:
        """Run ``payloads`` in the model's process; ``alone``: with ``threads_alone`` threads."""
        threads = (self.settings.threads_alone if alone else None) or self.settings.threads
        with self._lock:  # waits while the model is started again
            if not (self.failed or self._closing or self._process.is_alive()):
                self._recover()  # ended since the watcher last looked
            if self.failed or self._closing:
                raise ModelUnavailable(self.failed or "the service is shutting down")
            try:
                self._conn.send((key, payloads, threads))
            except OSError:
                pass  # the process is gone: receiving says so
            status, value = self._receive()
        if status == "failed":  # it ended during this call: the watcher starts it again
            raise ModelUnavailable(value)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def problem(self) -> str | None:
        """Why no call can run now (the model process has ended, or is being started again), else ``None``."""
        if self.failed:
            return self.failed
        if self._restarting:
            return f"{self._restarting}; starting it again"
        if not self._process.is_alive() and not self._closing:
            return f"{self._ended()}; starting it again"
        return None

    def _ended(self) -> str:
        return f"the model process ended unexpectedly (exit code {self._process.exitcode})"

    def _receive(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            return "failed", self._ended()

    def _watch(self) -> None:
        """Start the model again as soon as its process ends unexpectedly (the watcher thread's loop)."""
        while True:
            multiprocessing.connection.wait([self._process.sentinel])
            with self._lock:
                if self._closing or self.failed:
                    return
                if not self._process.is_alive():
                    self._recover()

    def _recover(self) -> None:
        """The model process has ended unexpectedly (the lock is held): start it again, or give up."""
        why = self._ended()
        self._process.join()
        self._conn.close()
        now = time.monotonic()
        self._ends = [t for t in self._ends if now - t < RESTART_WINDOW_S] + [now]
        if len(self._ends) > self.max_restarts:
            self.failed = (f"{why}; not started again: it ended {len(self._ends)} times within "
                           f"{RESTART_WINDOW_S:.0f} s (restart the server)")
            log.error("%s", self.failed)
            return
        log.error("%s; starting it again", why)
        self._restarting = why
        try:
            self.view = self._start()
            self.restarts += 1
        except BiomtlError as e:
            self.failed = f"{why}; starting it again failed: {e}"
            log.error("%s", self.failed)
        finally:
            self._restarting = None

    def close(self) -> None:
        """Tell the model process to end (after the call in flight, if that ends within a minute), and wait for
        it."""
        self._closing = True
        locked = self._lock.acquire(timeout=60)
        try:
            if self._process.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._process.join(30 if locked else 0)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()
            self._conn.close()
        finally:
            if locked:
                self._lock.release()


def _model_process(conn: Any, settings: LoadSettings) -> None:
    """The child's loop: load the model, say so, then answer ``(key, payloads, threads)`` calls until told to
    end (``threads``: torch's threads for the call, ``None``: as they are)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        predictor = Predictor.load(settings.model_dir, device=settings.device, batch_size=settings.batch_size,
                                   precision=settings.precision)
        view = prepare_model(predictor, settings.bucket)
    except BiomtlError as e:
        conn.send(("error", str(e)))
        return
    if settings.threads and settings.threads_alone and settings.threads != settings.threads_alone:
        model = predictor.model
        same = thread_invariant(model.encode, model.tokenizer, predictor.device, predictor.dtype,
                                (settings.threads, settings.threads_alone))
        view = replace(view, thread_invariant=same)
    run = Runner(predictor)
    conn.send(("ready", view))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if message is None:
            return
        key, payloads, threads = message
        if threads and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        try:
            # A BiomtlError subclass may take other arguments than its message: it crosses as its message.
            results = [BiomtlError(str(r)) if isinstance(r, BiomtlError) else r for r in run(key, payloads)]
            conn.send(("ok", results))
        except Exception as e:  # a bug (BiomtlError comes back as a result): the batch's requests get a 500
            log.exception("model call failed")
            conn.send(("bug", f"{type(e).__name__}: {e}"))
