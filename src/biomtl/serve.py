"""``biomtl serve``: an HTTP service and a web page over one loaded model (a thin layer over :class:`Predictor`).

Endpoints (docs/serve.md has examples): ``POST /annotate`` (plain text, the JSON API, JSONL, BioC XML/JSON or
PubTator, as ``biomtl annotate`` reads and writes them), ``POST /predict/{task}``, ``POST /similarity``,
``GET /tasks``, ``GET /health``, the OpenAPI docs at ``/docs`` (Swagger UI served from the package, no CDN) and
the annotation page at ``/``.

Every error is a JSON body ``{"error": "one line"}`` with a 4xx status: 400 malformed request, 404 unknown
task or path, 405 wrong method, 413 over a limit, 415 unknown media type, 422 input the model cannot read
(a :class:`BiomtlError`). A 500 is a bug.

Micro-batching: a worker thread hands the model its calls. Requests wait in per-kind queues (one per task
for ``/predict``, one per option set for ``/annotate``); when the worker is free it takes the oldest
request's queue, waits at most ``max_wait_ms`` for more of the same kind while requests the server has
received have not queued yet (a lone request runs at once), and runs them all as one predictor call: in
the model's own process under ``biomtl serve`` (:class:`~biomtl.worker.ModelProcess`), in this process for
``create_app(predictor)``. With ``--model-processes N`` there are N copies of the model, each in its own
process with its share of the threads and a worker thread of its own; a free copy takes the next batch.
How a text's numbers are kept independent of its batch: :mod:`biomtl.worker`.

Needs the ``serve`` extra (``pip install 'biomtl[serve]'``): importing this module imports FastAPI.

>>> app = create_app(Predictor.load("runs/mtl/best"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from biomtl.annotate import ALL, split_sentences
from biomtl.errors import BiomtlError
from biomtl.formats import FORMATS, detect_format, read_documents, write_documents
from biomtl.formats.plain import document_row
from biomtl.inference import resolve_device
from biomtl.predict import Predictor
from biomtl.worker import (
    STRICT_MKL,
    AnnotateJob,
    LoadSettings,
    ModelProcess,
    ModelUnavailable,
    ModelView,
    Runner,
    prepare_model,
)

log = logging.getLogger(__name__)

JSON_API = "json"
"""``/annotate``'s own JSON form: ``{"text": ...}``, ``{"texts": [...]}`` or ``{"documents": [...]}``."""

MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "bioc-xml": "application/xml",
    "bioc-json": "application/json",
    "pubtator": "text/plain; charset=utf-8",
    JSON_API: "application/json",
}
INLINE_BODY_BYTES = 20_000
"""``/annotate`` bodies up to this size are read and split into sentences on the event loop; larger ones in a
thread (a few milliseconds of Python would otherwise hold up every other request)."""

_BY_CONTENT_TYPE = {
    "application/json": JSON_API,
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/xml": "bioc-xml",
    "text/xml": "bioc-xml",
}


@dataclass(frozen=True)
class ServeOptions:
    """How the service reads requests and batches them; each field is the ``biomtl serve`` flag of its name."""

    max_body_bytes: int = 1_000_000
    max_texts: int = 100  # texts (documents, inputs, pairs) per request
    max_chars: int = 100_000  # characters of text per request
    batching: bool = True
    max_wait_ms: float = 5.0  # how long a free worker waits for more requests of the same kind
    max_batch_texts: int = 256  # texts in one combined predictor call
    bucket: int = 8  # texts are padded to a multiple of this many tokens
    model_processes: int | None = None  # copies of the model, each in its own process (None: default_copies)

    def problems(self) -> list[str]:
        positive = ("max_body_bytes", "max_texts", "max_chars", "max_batch_texts", "bucket", "model_processes")
        found = [f"--{k.replace('_', '-')}: must be >= 1, got {v}" for k in positive if (v := getattr(self, k)) is not None and v < 1]
        if self.max_wait_ms < 0:
            found.append(f"--max-wait-ms: must be >= 0, got {self.max_wait_ms}")
        return found


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------
# Micro-batching


@dataclass
class _Job:
    key: tuple
    payload: Any
    size: int  # texts in the job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Worker threads run the model calls, one thread per model copy (``runs``: copies that give the same
    results). ``await submit(key, payload, size)`` queues a job; a free worker runs the jobs of one key together
    through its ``run(key, payloads)``, which returns one result (or exception) per payload. With
    ``enabled=False`` each job runs alone, in arrival order.

    ``lend=True`` (copies that share the CPU's threads: :class:`ModelProcess` with ``threads_alone``): workers
    are asked in turn, copy ``i`` taking jobs only while ``i`` others run a batch, so that under light load one
    copy takes every batch; a worker takes a share of the queued texts that leaves some to each idle copy;
    and a batch taken while no other runs and nothing else is queued runs as ``run(key, payloads, True)``,
    with every copy's threads, any other as ``run(key, payloads, False)``, with the copy's share. So a lone
    request is as fast as on one copy that has all the threads, and under load the copies run side by side.

    A copy that cannot run (a run with a ``problem()`` that is not ``None``: :meth:`ModelProcess.problem`, its
    process ended or given up) steps aside while another copy can: its worker takes no jobs and the others take
    its turn and its share. When no copy can run, every worker takes jobs again, so each gets its answer (the
    error)."""

    def __init__(
        self, runs: list[Callable[..., list[Any]]], enabled: bool, max_wait_s: float, max_texts: int,
        lend: bool = False,
    ) -> None:
        self.runs = runs
        self.enabled = enabled
        self.max_wait_s = max_wait_s
        self.max_texts = max_texts
        self.lend = lend
        self.batches = 0  # model calls so far
        self.batches_alone = 0  # of which with every copy's threads (lend=True)
        self.jobs = 0
        self._running = 0  # workers running a batch
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        # Requests received (HTTP) that have neither queued a job nor been answered; ``None`` until
        # :class:`_Arrivals` counts them. The worker waits for more jobs only while some are on their way.
        self._arriving: int | None = None
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, args=(i, r), name=f"biomtl-serve-worker-{i}", daemon=True)
            for i, r in enumerate(self.runs)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish every queued job, then end the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def count_arrivals(self) -> None:
        """From now on the worker waits only while a received request has not queued its job yet."""
        with self._cond:
            self._arriving = 0

    def arrived(self) -> _Arrival:
        with self._cond:
            if self._arriving is not None:
                self._arriving += 1
        arrival = _Arrival()
        _ARRIVAL.set(arrival)
        return arrival

    def settled(self, arrival: _Arrival) -> None:
        """The request of ``arrival`` was answered: it is no longer on its way (if it had not queued a job)."""
        with self._cond:
            self._settle(arrival)
            self._cond.notify_all()

    def _settle(self, arrival: _Arrival) -> None:
        """(Holding the lock.) Count ``arrival`` out of the requests on their way, once."""
        if not arrival.settled and self._arriving is not None:
            self._arriving -= 1
        arrival.settled = True

    async def submit(self, key: tuple, payload: Any, size: int) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(key, payload, size, loop.create_future(), loop)
        arrival = _ARRIVAL.get(None)
        with self._cond:
            if self._stopping:
                raise RequestError(503, "the server is shutting down")
            self._queue.append(job)
            if arrival is not None:
                self._settle(arrival)
            self._cond.notify_all()
        return await job.future

    def _take(self, index: int) -> tuple[list[_Job], bool] | None:
        """The next jobs to run together: the oldest job and, batching, the queued jobs of its key (FIFO, up to
        ``max_texts`` texts; lending, up to this worker's share), after waiting until its wait bound for more
        while requests are on their way (received, not yet queued): a lone request runs at once. Another
        worker may take them meanwhile: then this one starts again from the oldest job left. Also whether
        they run alone, with every copy's threads."""
        with self._cond:
            while True:
                while not self._queue or not (live := self._live())[index] or (
                        self.lend and self._running < sum(live[:index])):
                    if self._stopping and not self._queue:
                        return None
                    self._cond.wait()
                first = self._queue[0]
                if not self.enabled:
                    taken = [self._queue.pop(0)]
                    break
                deadline = first.queued + self.max_wait_s
                while not self._stopping and self._queue and self._queue[0] is first:
                    queued = sum(j.size for j in self._queue if j.key == first.key)
                    left = deadline - time.monotonic()
                    if queued >= self.max_texts or left <= 0 or self._arriving == 0:
                        break
                    self._cond.wait(left)
                if not self._queue or self._queue[0] is not first:
                    continue  # another worker took it
                limit = self.max_texts
                if self.lend:  # leave the idle copies their share
                    queued = sum(j.size for j in self._queue if j.key == first.key)
                    limit = min(limit, -(-queued // max(1, sum(live) - self._running)))
                taken = []
                texts = 0
                for job in list(self._queue):
                    if job.key == first.key and (not taken or texts + job.size <= limit):
                        taken.append(job)
                        texts += job.size
                        self._queue.remove(job)
                break
            alone = self.lend and self._running == 0 and not self._queue
            self._running += 1
            self.batches += 1
            self.batches_alone += alone
            self.jobs += len(taken)
            self._cond.notify_all()  # the next copy may take the rest
            return taken, alone

    def _live(self) -> list[bool]:
        """Per copy, whether its worker takes jobs: the copies that can run, or all of them if none can."""
        checks = [getattr(run, "problem", None) for run in self.runs]
        up = [check is None or check() is None for check in checks]
        return up if any(up) else [True] * len(up)

    def _work(self, index: int, run: Callable[..., list[Any]]) -> None:
        while (taken := self._take(index)) is not None:
            jobs, alone = taken
            try:
                payloads = [j.payload for j in jobs]
                results = run(jobs[0].key, payloads, alone) if self.lend else run(jobs[0].key, payloads)
            except Exception as e:  # a bug: every job of the batch gets it (a 500), the worker goes on
                log.exception("model call failed")
                results = [e] * len(jobs)
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            for job, result in zip(jobs, results, strict=True):
                job.loop.call_soon_threadsafe(_resolve, job.future, result)


@dataclass
class _Arrival:
    settled: bool = False


_ARRIVAL: contextvars.ContextVar[_Arrival] = contextvars.ContextVar("biomtl_serve_arrival")
"""The request being handled (set by :class:`_Arrivals`, read by :meth:`MicroBatcher.submit`)."""


class _Arrivals:
    """ASGI middleware: counts each HTTP request as on its way to the batcher until it queues a job or is
    answered, so that the worker waits for more requests only when some are coming."""

    def __init__(self, app: Any, batcher: MicroBatcher) -> None:
        self.app = app
        self.batcher = batcher
        batcher.count_arrivals()

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = self.batcher.arrived()
        try:
            await self.app(scope, receive, send)
        finally:
            self.batcher.settled(arrival)


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


# ---------------------------------------------------------------------------------------------------------
# Reading requests


def check_limits(options: ServeOptions, texts: int, chars: int) -> None:
    if texts > options.max_texts:
        raise RequestError(413, f"too many texts: {texts} (at most {options.max_texts} per request; --max-texts)")
    if chars > options.max_chars:
        raise RequestError(413, f"too much text: {chars} characters (at most {options.max_chars} per request; --max-chars)")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RequestError(400, f"the body is not valid UTF-8 (byte 0x{body[e.start]:02x} at {e.start})") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def json_api_documents(data: Any) -> bytes:
    """``/annotate``'s JSON form as JSONL lines (read by the JSONL reader): ``{"text": str}``,
    ``{"texts": [str, ...]}`` or ``{"documents": [{"id"?, "text", "entities"?}, ...]}``."""
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        docs: list[Any] = [{"id": "1", "text": data["text"]}]
    elif isinstance(data, dict) and isinstance(data.get("texts"), list):
        if not all(isinstance(t, str) for t in data["texts"]):
            raise RequestError(400, "texts: expected a list of strings")
        docs = [{"id": str(i), "text": t} for i, t in enumerate(data["texts"], start=1)]
    elif isinstance(data, dict) and isinstance(data.get("documents"), list):
        docs = data["documents"]
        for i, doc in enumerate(docs, start=1):
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise RequestError(400, f"documents[{i - 1}]: expected an object with a string field 'text'")
            doc.setdefault("id", str(i))
    else:
        raise RequestError(400, 'expected a JSON object with "text" (a string), "texts" (strings) or "documents"')
    return "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs).encode()


def body_format(query: str | None, content_type: str, body: bytes) -> str:
    """The format of an ``/annotate`` body: ``input_format=``, else its media type, else its content (as
    ``biomtl annotate`` detects a file's)."""
    if query is not None:
        if query not in (*FORMATS, JSON_API):
            raise RequestError(400, f"input_format: unknown format '{query}'; choose {', '.join((*FORMATS, JSON_API))}")
        return query
    media = content_type.split(";")[0].strip().lower()
    if media in _BY_CONTENT_TYPE:
        return _BY_CONTENT_TYPE[media]
    if media in ("", "text/plain", "application/octet-stream"):
        return detect_format(Path("request"), body[:200].decode("utf-8", errors="replace"))
    raise RequestError(415, f"unsupported media type '{media}' (send text/plain, application/json, application/x-ndjson or application/xml, or name input_format=)")


# ---------------------------------------------------------------------------------------------------------
# The application


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets a 413 before the application reads it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable[[dict], Awaitable[None]], size: int) -> None:
        text = json.dumps({"error": f"request body too large: over {self.limit} bytes (--max-body-bytes)"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": text})


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class PredictRequest(BaseModel):
    inputs: list[str | dict[str, Any]]


class SimilarityRequest(BaseModel):
    pairs: list[tuple[str, str]]
    task: str | None = None


def similarity_tasks(view: ModelView) -> list[str]:
    """Tasks that score a pair of texts (their task type says so: ``pair_input``)."""
    return [name for name, task in view.tasks.items() if task.pair_input]


def create_app(
    model: Predictor | ModelProcess | list[ModelProcess], options: ServeOptions | None = None, model_name: str = "",
) -> Any:
    """The FastAPI application over ``model``: a :class:`Predictor` runs in this process (its encoder made
    batch-invariant here), a :class:`ModelProcess` in its own; a list of them are copies of one model, each
    with a worker thread. Starting the application (its lifespan) starts the workers; stopping it finishes
    the queued requests first (the caller closes the model processes)."""
    options = options or ServeOptions()
    if problems := options.problems():
        raise BiomtlError(problems[0])
    processes: list[ModelProcess] = []
    runs: list[Callable[[tuple, list[Any]], list[Any]]]
    if isinstance(model, Predictor):
        view, runs = prepare_model(model, options.bucket), [Runner(model)]
    else:
        processes = model if isinstance(model, list) else [model]
        # Copies of one model: the same view, batch-invariant only if every copy is.
        view = replace(processes[0].view, batch_invariant=all(p.view.batch_invariant for p in processes))
        runs = list(processes)
    lend = len(processes) > 1 and all(p.settings.threads_alone for p in processes)
    if lend and not all(p.view.thread_invariant for p in processes):
        log.info("the model copies do not lend each other their threads: on this machine the encoder's results "
                 "depend on the thread count")
        lend = False
    batcher = MicroBatcher(runs, options.batching, options.max_wait_ms / 1000, options.max_batch_texts, lend)
    if options.batching and not view.batch_invariant:
        log.warning("micro-batched results may differ in the last bits from one request at a time on this machine "
                    "(set MKL_CBWR=%s before starting; docs/serve.md)", STRICT_MKL)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPIOffline(
        title="biomtl", summary="Multi-task biomedical text mining: entities, relations, labels, similarity",
        lifespan=lifespan, redoc_url=None,
    )
    app.state.batcher = batcher
    app.add_middleware(_BodyLimit, limit=options.max_body_bytes)
    app.add_middleware(_Arrivals, batcher=batcher)  # outermost: a request counts from its arrival
    static = resources.files("biomtl") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    add_error_handlers(app)
    app.include_router(info_routes(view, options, batcher, model_name, processes))
    app.include_router(model_routes(view, options, batcher))
    return app


def add_error_handlers(app: Any) -> None:
    """Every error as a JSON body ``{"error": message}``: the request's own errors a 4xx, anything else a 500
    (a bug), logged."""
    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> Response:
        return _error(e.status, str(e))

    @app.exception_handler(BiomtlError)
    async def biomtl_error(request: Request, e: BiomtlError) -> Response:
        return _error(422, str(e))

    @app.exception_handler(ModelUnavailable)
    async def model_unavailable(request: Request, e: ModelUnavailable) -> Response:
        return _error(503, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return _error(400, f"invalid JSON: {errors[0].get('ctx', {}).get('error', errors[0].get('msg'))}")
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
        return _error(500, f"internal error ({type(e).__name__}); this is a bug in biomtl")


def info_routes(
    view: ModelView, options: ServeOptions, batcher: MicroBatcher, model_name: str, processes: list[ModelProcess],
) -> APIRouter:
    """The web page and what the service is: ``/``, ``/health``, ``/tasks``. ``processes``: the model's
    processes, if it runs in its own (``/health`` says when one has ended and how often they were started
    again)."""
    router = APIRouter()
    static = resources.files("biomtl") / "static"

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @router.get("/health", response_model=None)
    async def health() -> dict[str, Any] | Response:
        """Liveness (a 503 while no copy of the model can run; ``degraded`` while some cannot, the others
        serving), and how requests are batched."""
        down = [why for p in processes if (why := p.problem())]
        if down and len(down) == len(processes):
            return _error(503, down[0])
        return {
            "status": "degraded" if down else "ok", **({"problem": down[0]} if down else {}),
            "model_processes_down": len(down), "model": model_name, "tasks": len(view.specs), "batching": options.batching,
            "batch_invariant": view.batch_invariant, "encoder_batches": view.encoder_batches, "precision": view.precision,
            "model_calls": batcher.batches, "model_calls_alone": batcher.batches_alone, "requests": batcher.jobs,
            "model_processes": len(processes), "model_restarts": sum(p.restarts for p in processes),
        }

    @router.get("/tasks")
    async def tasks() -> dict[str, Any]:
        """Every task (head) of the model: its type, labels and what it reads."""
        rows = []
        for name, spec in view.specs.items():
            task = view.tasks[name]
            rows.append({
                "name": name, "type": spec.type, "labels": list(spec.labels), "token_level": task.token_level,
                "annotates_text": task.can_annotate, "arguments": list(spec.arguments),
            })
        return {"tasks": rows, "limits": {"max_texts": options.max_texts, "max_chars": options.max_chars,
                                          "max_body_bytes": options.max_body_bytes}}

    return router


def model_routes(view: ModelView, options: ServeOptions, batcher: MicroBatcher) -> APIRouter:
    """The model's work: ``/predict/{task}``, ``/similarity`` and ``/annotate``, each through ``batcher``."""
    router = APIRouter()

    @router.post("/predict/{task}")
    async def predict(task: str, request: PredictRequest) -> dict[str, Any]:
        """One prediction per input, as ``biomtl predict --task TASK`` gives: a string is raw text; an object
        may carry ``id``, ``text``, ``text_b`` and (relation tasks) ``entities``."""
        if task not in view.specs:
            raise RequestError(404, f"unknown task '{task}' (the model has {', '.join(view.specs)})")
        check_limits(options, len(request.inputs), sum(_chars(item) for item in request.inputs))
        rows = await batcher.submit(("predict", task), request.inputs, len(request.inputs))
        return {"task": task, "predictions": rows}

    @router.post("/similarity")
    async def similarity(request: SimilarityRequest) -> dict[str, Any]:
        """The similarity score of each pair of texts, from a regression task (``task``, else the model's
        only one)."""
        task = similarity_task(view, request.task)
        check_limits(options, len(request.pairs), sum(len(a) + len(b) for a, b in request.pairs))
        inputs = [{"text": a, "text_b": b} for a, b in request.pairs]
        rows = await batcher.submit(("predict", task), inputs, len(inputs))
        return {"task": task, "scores": [row["score"] for row in rows]}

    annotate_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"example": {"text": "Naloxone reverses the antihypertensive effect of clonidine."}},
                "text/plain": {"example": "Naloxone reverses the antihypertensive effect of clonidine."},
                "application/x-ndjson": {"example": '{"id": "1", "text": "Naloxone reverses clonidine."}'},
                "application/xml": {"example": "<collection>...</collection> (BioC XML)"},
            },
        }
    }

    @router.post("/annotate", openapi_extra=annotate_body)
    async def annotate_endpoint(
        request: Request,
        input_format: str | None = None,
        format: str | None = None,
        tasks: str | None = None,
        keep_input_entities: str | None = None,
    ) -> Response:
        """Entities, relations between them and document labels, as ``biomtl annotate``. The body is plain
        text (one document per line), PubTator, BioC XML/JSON or JSONL (``input_format=``, else from the
        media type and content), or JSON: ``{"text": ...}``, ``{"texts": [...]}`` or ``{"documents": [{"id",
        "text", "entities"}]}``. The answer is in ``format=`` (default: the input's)."""
        body = await request.body()
        read = functools.partial(annotate_job, body, request.headers.get("content-type", ""), input_format, format,
                                 tasks, keep_input_entities, view.specs, options)
        # Reading and splitting a large body takes a while: off the event loop, so other requests go on.
        job, out = await run_in_threadpool(read) if len(body) > INLINE_BODY_BYTES else read()
        collection, names, keep = job.collection, job.tasks, job.keep
        docs = collection.documents
        # Requests are combined only when they would be planned alike: same heads, same kept types and the
        # same entity types in the input (relation arguments may come from the input's annotations).
        input_types = frozenset(m.type for d in docs for m in d.mentions)
        key = ("annotate", tuple(names or ()), keep, input_types)
        result = await batcher.submit(key, job, len(docs)) if docs else collection
        if out == JSON_API:  # the rows of JSONL, serialised once
            return JSONResponse({"documents": [document_row(doc) for doc in result.documents]})
        return Response(write_documents(result, out), media_type=MEDIA_TYPES[out])

    return router


def similarity_task(view: ModelView, task: str | None) -> str:
    """The regression task that ``/similarity`` scores with: ``task``, else the model's only one."""
    candidates = similarity_tasks(view)
    if task is None:
        if len(candidates) != 1:
            have = f"it has {', '.join(candidates)}" if candidates else "it has none"
            raise RequestError(404 if not candidates else 400, f"task: name the similarity (regression) task ({have})")
        return candidates[0]
    if task not in candidates:
        raise RequestError(404, f"task: '{task}' is not a similarity (regression) task of the model (it has {', '.join(candidates) or 'none'})")
    return task


def annotate_job(
    body: bytes,
    content_type: str,
    input_format: str | None,
    format: str | None,
    tasks: str | None,
    keep_input_entities: str | None,
    specs: dict[str, Any],
    options: ServeOptions,
) -> tuple[AnnotateJob, str]:
    """An ``/annotate`` request read and checked (format, limits, task names): the job and the answer's format."""
    fmt = body_format(input_format, content_type, body)
    out = format or fmt
    if out not in (*FORMATS, JSON_API):
        raise RequestError(400, f"format: unknown format '{out}'; choose {', '.join((*FORMATS, JSON_API))}")
    raw = json_api_documents(parse_json(body)) if fmt == JSON_API else body
    collection, _ = read_documents(Path("request"), "jsonl" if fmt == JSON_API else fmt, raw)
    docs = collection.documents
    check_limits(options, len(docs), sum(len(p.text) for d in docs for p in d.passages))
    keep = frozenset({ALL} if keep_input_entities == ALL else (t for t in (keep_input_entities or "").split(",") if t))
    names = [t for t in tasks.split(",") if t] if tasks else None
    for name in names or []:
        if name not in specs:
            raise RequestError(404, f"tasks: unknown task '{name}' (the model has {', '.join(specs)})")
    sentences = [split_sentences(doc, 0) for doc in docs]  # here, beside the model's process, not in it
    return AnnotateJob(collection, names, keep, sentences), out


def _chars(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, dict):
        return sum(len(item[k]) for k in ("text", "text_b") if isinstance(item.get(k), str))
    return 0


def default_copies(device: str) -> int:
    """``--model-processes`` by default: two copies on a CPU with two threads or more (they lend each other
    their threads, so a lone request is as fast as on one copy and under load both compute), else one."""
    return 2 if resolve_device(device).type == "cpu" and torch.get_num_threads() >= 2 else 1


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    precision: str = "auto",
) -> None:
    """Load the model once, in a process of its own, then serve it with uvicorn until SIGINT/SIGTERM
    (in-flight requests finish first). A bad model directory raises its :class:`BiomtlError` before anything
    listens."""
    import uvicorn

    options = options or ServeOptions()
    if problems := options.problems():
        raise BiomtlError(problems[0])
    count = options.model_processes or default_copies(device)
    # Copies share the CPU's threads (torch's default: one per core), each at least one; a batch that runs
    # while the other copies are idle has them all (MicroBatcher's lend).
    cores = torch.get_num_threads()
    threads, alone = (max(1, cores // count), cores) if count > 1 else (None, None)
    settings = LoadSettings(str(model_dir), device, batch_size, precision, options.bucket, threads, alone)
    with ThreadPoolExecutor(count) as pool:  # the copies load at the same time
        loading = [pool.submit(ModelProcess, settings) for _ in range(count)]
    models = [f.result() for f in loading if f.exception() is None]
    try:
        if failed := [e for f in loading if (e := f.exception()) is not None]:
            raise failed[0]  # (the loaded copies are closed below)
        app = create_app(models, options, model_name=str(model_dir))
        log.info("serving %s (%s) on http://%s:%d/", model_dir, ", ".join(models[0].view.specs), host, port)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    finally:
        for model in models:
            model.close()
