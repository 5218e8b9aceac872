"""`biomtl serve` as a real process on 127.0.0.1: concurrent requests give what one request at a time gives,
SIGTERM finishes the request in flight, and the page works in headless Chromium (Debian's ``chromium``,
driven by Playwright through ``executable_path``; the test skips, saying why, where either is missing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'biomtl[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'biomtl[serve]'")

from conftest import TOY_CHEMICALS  # noqa: E402
from test_serve import ABSTRACT, serve_model  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, *flags: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``biomtl serve`` on a free loopback port; yields its URL once /health answers, stops it at the end."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MKL_CBWR", None)  # biomtl serve sets it
    cmd = [sys.executable, "-m", "biomtl", "serve", str(model_dir), "--port", str(port), "--precision", "fp32", *flags]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"biomtl serve exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("biomtl serve did not answer /health within 120 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serve_model(tiny_encoder, tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[str]:
    with running_server(model_dir, "--max-wait-ms", "20") as (url, _):
        yield url


def requests_to_send() -> list[tuple[str, dict]]:
    """Texts of many lengths, so that batches mix lengths; annotate, predict and similarity requests."""
    words = "the receptor of patients with cancer in cells was seen with pain".split()
    out: list[tuple[str, dict]] = []
    for i in range(16):
        text = f"{TOY_CHEMICALS[i % 4].capitalize()} inhibits the receptor. " + " ".join(words[: i % 12]) + f" {TOY_CHEMICALS[(i + 1) % 4]} binding the protein."
        out.append(("/annotate", {"text": text}))
    for i in range(8):
        out.append(("/predict/srv-rel", {"inputs": ["@CHEMICAL$ " + " ".join(words[: i + 1]) + " @GENE$ ."]}))
        out.append(("/similarity", {"pairs": [[" ".join(words[: i + 2]), " ".join(words[i:])]]}))
    return out


def test_concurrent_requests_equal_one_at_a_time(server):
    concurrent_equal_alone(server)


def test_concurrent_requests_equal_one_at_a_time_in_bf16(model_dir):
    """On a CPU with native bf16, ``--precision auto`` serves in bf16 autocast: bit-identity must hold there too."""
    import torch

    from biomtl.inference import native_bf16

    if not native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16, so --precision auto serves in fp32 (the test above)")
    with running_server(model_dir, "--max-wait-ms", "20", "--precision", "bf16") as (url, _):
        assert httpx.get(f"{url}/health").json()["precision"] == "bf16"
        concurrent_equal_alone(url)


def test_two_model_processes_equal_one_at_a_time(model_dir):
    """``--model-processes 2``: two copies of the model, each with half the threads (a lone request: all of
    them), take batches in turn; a request's answer does not depend on which copy, batch or thread count
    computed it."""
    with running_server(model_dir, "--max-wait-ms", "20", "--model-processes", "2") as (url, _):
        assert httpx.get(f"{url}/health").json()["model_processes"] == 2
        concurrent_equal_alone(url)
        # The requests sent one at a time ran alone, with both copies' threads (MicroBatcher's lend).
        assert httpx.get(f"{url}/health").json()["model_calls_alone"] >= len(requests_to_send())


def concurrent_equal_alone(server: str) -> None:
    """The requests of :func:`requests_to_send`, sent one at a time and then 16 at once, get the same bytes."""
    health = httpx.get(f"{server}/health").json()
    if not health["batch_invariant"]:
        pytest.skip("this machine's matrix products are not batch-invariant (no MKL strict mode); see docs/serve.md")
    todo = requests_to_send()
    with httpx.Client(base_url=server, timeout=60) as client:
        alone = [client.post(path, json=body) for path, body in todo]
    assert all(r.status_code == 200 for r in alone), [r.text for r in alone if r.status_code != 200]
    calls_before = httpx.get(f"{server}/health").json()["model_calls"]

    together: list = [None] * len(todo)
    start = threading.Barrier(16)

    def worker(k: int) -> None:
        with httpx.Client(base_url=server, timeout=60) as client:
            start.wait()
            for i in range(k, len(todo), 16):
                together[i] = client.post(todo[i][0], json=todo[i][1])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = httpx.get(f"{server}/health").json()["model_calls"] - calls_before
    assert calls < len(todo), "concurrent requests shared model calls"
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert b.status_code == 200, b.text
        assert json.dumps(a.json(), sort_keys=True) == json.dumps(b.json(), sort_keys=True), todo[i]


def test_sigterm_finishes_the_request_in_flight(model_dir):
    # The worker waits 1.5 s for company, so the request is still in flight when SIGTERM comes.
    with running_server(model_dir, "--max-wait-ms", "1500") as (url, proc):
        result: dict = {}

        def send() -> None:
            result["response"] = httpx.post(f"{url}/annotate", json={"text": ABSTRACT}, timeout=60)

        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        thread.join(60)
        # uvicorn stops listening, lets the request finish, then re-raises the signal it caught
        assert proc.wait(30) in (0, -signal.SIGTERM)
        response = result["response"]
        assert response.status_code == 200 and response.json()["documents"][0]["entities"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=5)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("needs Linux's /proc/PID/task/PID/children")
    return [int(c) for c in path.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(condition: Callable[[], bool], seconds: float = 120, what: str = "timed out") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_the_model_process_ends_with_the_server_however_it_ends(model_dir):
    """The model runs in child processes of ``biomtl serve`` (one per copy); killed outright (no shutdown), the
    server leaves no model process behind: each child sees its pipe close and ends."""
    with running_server(model_dir) as (url, proc):
        assert httpx.post(f"{url}/predict/srv-chem", json={"inputs": ["aspirin"]}, timeout=60).status_code == 200
        copies = httpx.get(f"{url}/health").json()["model_processes"]
        children = _children(proc.pid)  # the model's processes and multiprocessing's resource tracker
        models = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert copies >= 1 and len(models) == copies, children
        proc.kill()
        proc.wait(30)
        _wait_for(lambda: not any(_alive(c) for c in children), 30, "a child of the server outlived it")


def test_a_model_process_that_died_is_started_again_and_errors_cross_as_their_line(model_dir):
    """Killed, the model process is started again by itself (``/health`` says so meanwhile with a 503); one
    that ends more often than its restart allowance stays down, and every request gets a 503 with its line."""
    from fastapi.testclient import TestClient

    from biomtl.errors import BiomtlError
    from biomtl.serve import create_app
    from biomtl.worker import LoadSettings, ModelProcess, ModelUnavailable

    with pytest.raises(BiomtlError, match="missing"):
        ModelProcess(LoadSettings(str(model_dir.parent / "missing")))
    model = ModelProcess(LoadSettings(str(model_dir), precision="fp32"), restarts=1)
    try:
        assert sorted(model.view.specs) == ["srv-chem", "srv-doc", "srv-gene", "srv-rel", "srv-sts"]
        [rows, bad] = model(("predict", "srv-rel"), [["@CHEMICAL$ inhibits @GENE$ ."], ["no masks"]])
        assert rows[0]["label"] in ("CPR:3", "CPR:4", "false")
        assert isinstance(bad, BiomtlError) and str(bad).startswith("inputs:1: ")  # a DataError, as its line
        with TestClient(create_app(model)) as client:
            health = client.get("/health").json()
            assert health["encoder_batches"] == "packed" and health["model_restarts"] == 0
            before = client.post("/predict/srv-chem", json={"inputs": ["aspirin"]}).json()
            first = model._process
            first.kill()
            first.join(30)
            health = client.get("/health")  # before any request finds it out
            assert health.status_code == 503
            assert "the model process ended unexpectedly (exit code -9)" in health.json()["error"]
            assert "starting it again" in health.json()["error"]
            _wait_for(lambda: client.get("/health").status_code == 200)
            assert model._process is not first and client.get("/health").json()["model_restarts"] == 1
            assert client.post("/predict/srv-chem", json={"inputs": ["aspirin"]}).json() == before

            model._process.kill()  # a second end within the window: over the allowance of one restart
            model._process.join(30)
            _wait_for(lambda: model.failed is not None)
            health = client.get("/health")
            assert health.status_code == 503 and "not started again: it ended 2 times" in health.json()["error"]
            for _ in range(2):  # a request does not try again
                answer = client.post("/predict/srv-chem", json={"inputs": ["aspirin"]})
                assert answer.status_code == 503 and answer.json()["error"] == health.json()["error"]
        with pytest.raises(ModelUnavailable):
            model(("predict", "srv-chem"), [["aspirin"]])
    finally:
        model.close()


@pytest.mark.slow
def test_with_two_copies_one_that_stays_down_steps_aside_and_the_other_serves(model_dir):
    """Two lending copies; the first one's process killed with no restart allowed: lone requests, which the
    first copy would take, are answered by the second, the same bytes, and ``/health`` says ``degraded``."""
    from fastapi.testclient import TestClient

    from biomtl.serve import create_app
    from biomtl.worker import LoadSettings, ModelProcess

    settings = LoadSettings(str(model_dir), precision="fp32", threads=1, threads_alone=2)
    first, second = ModelProcess(settings, restarts=0), ModelProcess(settings, restarts=0)
    try:
        with TestClient(create_app([first, second])) as client:
            body = {"inputs": ["aspirin", "naloxone reverses the effect"]}
            before = client.post("/predict/srv-chem", json=body).content
            first._process.kill()
            _wait_for(lambda: first.failed is not None)
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded" and health.json()["model_processes_down"] == 1
            assert "not started again" in health.json()["problem"]
            for _ in range(3):
                answer = client.post("/predict/srv-chem", json=body)
                assert answer.status_code == 200 and answer.content == before
            second._process.kill()
            _wait_for(lambda: second.failed is not None)
            assert client.get("/health").status_code == 503
            assert client.post("/predict/srv-chem", json=body).status_code == 503
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_a_call_in_flight_when_the_model_process_dies_gets_unavailable_and_the_next_call_is_answered(model_dir):
    from biomtl.worker import LoadSettings, ModelProcess, ModelUnavailable

    model = ModelProcess(LoadSettings(str(model_dir), precision="fp32"), restarts=100)
    try:
        expected = model(("predict", "srv-chem"), [["aspirin"]])
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                model(("predict", "srv-chem"), [["aspirin inhibits the protein receptor"] * 256])
                outcome.append(None)
            except ModelUnavailable as e:
                outcome.append(e)

        while not outcome or outcome[-1] is None:  # until a kill lands during a call
            _wait_for(lambda: model.problem() is None)
            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.02)
            model._process.kill()
            caller.join(60)
        assert "the model process ended unexpectedly (exit code -9)" in str(outcome[-1])
        assert model(("predict", "srv-chem"), [["aspirin"]]) == expected  # waits for the restart
        assert model.restarts == len(outcome) and model.problem() is None
    finally:
        model.close()


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; .ci/run installs it)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    return sync_playwright


def test_page_highlights_the_api_entities_in_a_browser(server, tmp_path):
    sync_playwright = _playwright()
    api = httpx.post(f"{server}/annotate", json={"text": ABSTRACT}, timeout=60).json()["documents"][0]
    assert api["entities"] and api["relations"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
            page.goto(f"{server}/")
            page.fill("#text", ABSTRACT)
            page.click("#annotate")
            page.wait_for_selector("#status:text('done')", timeout=60_000)
            marks = page.eval_on_selector_all(
                "mark.entity", "els => els.map(e => [Number(e.dataset.start), Number(e.dataset.end), e.dataset.type])"
            )
            legend = page.eval_on_selector_all(".legend-item", "els => els.map(e => e.dataset.type)")
            relations = page.eval_on_selector_all("tr.relation .probability", "els => els.map(e => e.textContent)")
            labels = page.eval_on_selector_all(".label-task", "els => els.map(e => e.dataset.task)")
            page.screenshot(path=str(tmp_path / "serve-page.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(marks) == sorted([e["start"], e["end"], e["type"]] for e in api["entities"])
    assert sorted(legend) == sorted({e["type"] for e in api["entities"]})
    assert relations == [f"{r['probability']:.3f}" for r in api["relations"]]
    assert labels == list(api["labels"])
    assert outside == [], "the page loads nothing from outside the server"
    if artefacts := os.environ.get("BIOMTL_ARTEFACTS"):
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "serve-page.png", Path(artefacts) / "serve-page.png")
