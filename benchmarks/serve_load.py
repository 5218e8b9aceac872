"""`biomtl serve` under load, on 127.0.0.1 only: 2,000 requests at concurrency 16, one in ten malformed or
oversized, against a server with micro-batching and one without; plus one request at a time as the baseline.

Valid requests are ``POST /annotate {"text": sentence}`` with one biomedical sentence each. Bad ones cycle
through malformed JSON, too many texts, a body over the size limit and an unknown task. The run checks that
no valid request failed and that every bad one got a 4xx, and reports p50/p99 latency, throughput and the
servers' CPU time per request (their HTTP process and the model's process, from ``/proc``). Then the ratio
of batched throughput to one request at a time is measured again in ``--rounds`` short paired rounds with
both servers running (:func:`paired_rounds`).

    python benchmarks/serve_load.py --json-out results/serve-load.json
    python benchmarks/serve_load.py --model-in-thread   # also the model in a thread of the server's process

The model is ``--model DIR``, else the embedded all-MiniLM-L6-v2 with a BC5CDR-chemical head (random head
weights: the compute is a trained model's), written to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import command_line, fmt, machine, machine_line, markdown_table

HOST = "127.0.0.1"  # loopback only
SENTENCES = [
    "Naloxone reverses the antihypertensive effect of clonidine.",
    "Cisplatin-induced nephrotoxicity was reduced by amifostine in patients with ovarian cancer.",
    "Lithium carbonate may cause diabetes insipidus and hypothyroidism during long-term treatment.",
    "The effect of haloperidol on dopamine receptor binding was measured in rat striatum.",
    "Aspirin inhibits cyclooxygenase and reduces the synthesis of prostaglandins.",
    "Heparin-induced thrombocytopenia is an immune-mediated adverse drug reaction.",
    "Treatment with doxorubicin was associated with cardiotoxicity in a dose-dependent manner.",
    "Cocaine increases extracellular dopamine by blocking the dopamine transporter.",
    "Tamoxifen reduced the recurrence of estrogen receptor positive breast cancer.",
    "Amiodarone can cause pulmonary fibrosis, thyroid dysfunction and corneal deposits.",
    "Metformin lowers hepatic glucose production through activation of AMP-activated protein kinase.",
    "Intravenous vancomycin was given for methicillin-resistant Staphylococcus aureus bacteraemia.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def default_model(directory: Path) -> Path:
    from biomtl.model import MultiTaskModel
    from biomtl.tasks import load_dataset_spec

    MultiTaskModel.from_encoder(None, {"bc5cdr-chemical": load_dataset_spec("bc5cdr-chemical")}).save(directory)
    return directory


THREAD_SERVER = """
import sys, uvicorn
from biomtl.predict import Predictor
from biomtl.serve import ServeOptions, create_app
model, host, port, max_texts, max_body = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
options = ServeOptions(max_texts=max_texts, max_body_bytes=max_body)
predictor = Predictor.load(model, precision=sys.argv[6])
uvicorn.run(create_app(predictor, options, model), host=host, port=port, log_level="warning")
"""
"""The service with the model in a thread of the server's process (``create_app(predictor)``), as ``biomtl
serve`` ran it before it gave the model a process of its own."""


def start_server(model: Path, batching: bool, max_texts: int, max_body: int, max_wait_ms: float | None = None,
                 model_in_thread: bool = False, precision: str = "auto",
                 model_processes: int | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "biomtl", "serve", str(model), "--host", HOST, "--port", str(port),
           "--max-texts", str(max_texts), "--max-body-bytes", str(max_body), "--precision", precision]
    if model_in_thread:
        cmd = [sys.executable, "-c", THREAD_SERVER, str(model), HOST, str(port), str(max_texts), str(max_body), precision]
    elif not batching:
        cmd += ["--no-batching", "--model-processes", "1"]  # the baseline: one process with every thread
    else:
        if model_processes is not None:
            cmd += ["--model-processes", str(model_processes)]
        if max_wait_ms is not None:
            cmd += ["--max-wait-ms", str(max_wait_ms)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if model_in_thread:
        env.setdefault("MKL_CBWR", "AUTO,STRICT")  # as biomtl serve sets it
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def request_plan(n: int, bad_every: int, max_texts: int, max_body: int) -> list[tuple[str, str, bytes, dict]]:
    """(kind, path, body, headers) for each request; every ``bad_every``-th one is bad, of four kinds in turn."""
    json_headers = {"content-type": "application/json"}
    bad = [
        ("malformed", "/annotate", b'{"text": "Aspirin', json_headers),
        ("too many texts", "/annotate", json.dumps({"texts": ["Aspirin."] * (max_texts + 1)}).encode(), json_headers),
        ("body too large", "/annotate", json.dumps({"text": "aspirin " * (max_body // 8 + 1)}).encode(), json_headers),
        ("unknown task", "/predict/no-such-task", json.dumps({"inputs": ["Aspirin."]}).encode(), json_headers),
    ]
    plan = []
    for i in range(n):
        if i % bad_every == bad_every - 1:
            plan.append(bad[(i // bad_every) % len(bad)])
        else:
            plan.append(("valid", "/annotate", json.dumps({"text": SENTENCES[i % len(SENTENCES)]}).encode(), json_headers))
    return plan


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand so that the load generator, which shares the
    machine's cores with the server, spends as little CPU as it can per request (``httpx`` costs several times
    more). Reconnects when the server closes (its 413 on an oversized body closes the connection)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\n{head}content-length: {len(body)}\r\n\r\n"
                          .encode() + body)
        try:
            await self.writer.drain()
        except ConnectionError:
            pass  # the server answered (413) and closed before reading the body: its answer is still to read
        status = int((await self.reader.readuntil(b"\r\n")).split()[1])
        fields = {}
        for line in (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip().lower()
        if "content-length" not in fields:  # this client reads no chunked body: say so, not misread the next answer
            raise ValueError("an answer without content-length")
        content = await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("connection") == "close":
            self.close()
        return status, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) used so far by process ``pid``, from ``/proc`` (``None`` where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int | None) -> dict[str, float] | None:
    """CPU seconds so far of a server's process (``http``: the HTTP side) and of its child processes
    (``model``: the model's process under ``biomtl serve``), where ``/proc`` has them."""
    http = None if pid is None else cpu_seconds(pid)
    if http is None:
        return None
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return {"http": http, "model": sum(cpu_seconds(c) or 0.0 for c in children)}


async def run_load(url: str, plan: list[tuple[str, str, bytes, dict]], concurrency: int,
                   server_pid: int | None = None) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    statuses: dict[str, dict[int, int]] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    host, port = url.removeprefix("http://").split(":")

    async def worker() -> None:
        connection = Connection(host, int(port))
        while not queue.empty():
            kind, path, body, headers = queue.get_nowait()
            start = time.perf_counter()
            try:
                status, content = await connection.post(path, body, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                failures.append(f"{kind}: {type(e).__name__}")
                connection.close()
                continue
            elapsed = time.perf_counter() - start
            statuses.setdefault(kind, {}).setdefault(status, 0)
            statuses[kind][status] += 1
            if kind == "valid":
                latencies.append(elapsed)
                if status != 200:
                    failures.append(f"valid: {status} {content[:100]!r}")
            elif not 400 <= status < 500:
                failures.append(f"{kind}: {status} (expected a 4xx)")
        connection.close()

    start, cpu, server = time.perf_counter(), time.process_time(), server_cpu(server_pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    server_after = server_cpu(server_pid)
    per_request = ({k: 1000 * (server_after[k] - server[k]) / len(plan) for k in server}
                   if server and server_after else {})
    latencies.sort()
    return {
        "requests": len(plan), "concurrency": concurrency, "wall_s": wall, "client_cpu_ms_per_request": 1000 * cpu / len(plan),
        "server_cpu_ms_per_request": per_request,
        "valid": len(latencies), "throughput_rps": len(plan) / wall, "valid_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "statuses": {k: {str(s): n for s, n in v.items()} for k, v in statuses.items()},
        "failures": failures,
    }


def server_cpu_cell(per_request: dict[str, float]) -> str:
    if not per_request:
        return "—"
    return " / ".join(fmt(per_request[k]) if k in per_request else "—" for k in ("http", "model"))


def paired_rounds(batching_url: str, baseline_url: str, rounds: int, concurrency: int,
                  plan: list[tuple[str, str, bytes, dict]]) -> list[dict[str, float]]:
    """The throughput ratio measured in ``rounds`` short pairs, both servers running side by side: valid
    requests at ``concurrency`` to the batching server and one at a time to the server without batching,
    back to back, the order alternating from round to round (AB BA AB ...). The host's speed drifts over a
    run (on the development machines by up to a third between runs a minute apart); a ratio of two phases
    seconds apart is less exposed to that drift than one of two phases a minute apart, and the spread of the
    rounds shows how much is left."""
    baseline_n = max(1, len(plan) // 4)
    out = []
    for i in range(rounds):
        phases = [("batched", batching_url, plan, concurrency), ("baseline", baseline_url, plan[:baseline_n], 1)]
        measured = {}
        for name, url, items, c in phases if i % 2 == 0 else phases[::-1]:
            r = asyncio.run(run_load(url, items, c))
            if r["failures"]:
                raise SystemExit(f"paired round {i + 1}, {name}: {r['failures'][0]}")
            measured[name] = r["valid_per_s"]
        out.append({**measured, "ratio": measured["batched"] / measured["baseline"]})
    return out


def model_calls(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """From the server's ``/health`` before and after a phase: its model calls, the requests per call, and the
    share of calls made with every copy's threads (``--model-processes`` > 1)."""
    calls = after["model_calls"] - before["model_calls"]
    alone = after.get("model_calls_alone", 0) - before.get("model_calls_alone", 0)
    return {"calls": calls, "requests_per_call": (after["requests"] - before["requests"]) / max(1, calls),
            "alone_share": alone / max(1, calls)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model directory (default: MiniLM + a BC5CDR-chemical head)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--baseline-requests", type=int, default=300, help="valid requests sent one at a time")
    p.add_argument("--bad-every", type=int, default=10)
    p.add_argument("--max-texts", type=int, default=100)
    p.add_argument("--max-body-bytes", type=int, default=100_000)
    p.add_argument("--max-wait-ms", type=float, default=None, help="the batching server's (default: biomtl serve's)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="every server's --precision (default auto: bf16 on a CPU with native bf16, else fp32)")
    p.add_argument("--model-in-thread", action="store_true",
                   help="also measure a batching server whose model runs in a thread of its process (create_app(predictor))")
    p.add_argument("--model-processes", type=int,
                   help="the batching server's --model-processes (default: biomtl serve's; the server without "
                        "batching runs one process)")
    p.add_argument("--rounds", type=int, default=10,
                   help="paired rounds of the ratio, both servers side by side (0: none)")
    p.add_argument("--round-requests", type=int, default=400,
                   help="valid requests at the concurrency per paired round (a quarter as many one at a time)")
    p.add_argument("--json-out")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else default_model(Path(tmp) / "model")
        plan = request_plan(args.requests, args.bad_every, args.max_texts, args.max_body_bytes)
        baseline_plan = request_plan(args.baseline_requests, args.baseline_requests + 1, args.max_texts, args.max_body_bytes)
        results: dict[str, Any] = {}
        servers = [("batching", True, False), ("no batching", False, False)]
        if args.model_in_thread:
            servers.append(("batching, model in a thread", True, True))
        running: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            for name, batching, in_thread in servers:
                running[name] = start_server(model, batching, args.max_texts, args.max_body_bytes, args.max_wait_ms,
                                             in_thread, args.precision, args.model_processes)
            for name, (proc, url) in running.items():
                asyncio.run(run_load(url, plan[:64], args.concurrency))  # warm-up
                for load, phase_plan, concurrency in (
                    (f"concurrency {args.concurrency}", plan, args.concurrency), ("one at a time", baseline_plan, 1)
                ):
                    before = httpx.get(f"{url}/health").json()
                    results[f"{name}, {load}"] = asyncio.run(run_load(url, phase_plan, concurrency, proc.pid))
                    results[f"{name}, {load}"]["model_calls"] = model_calls(before, httpx.get(f"{url}/health").json())
                health = httpx.get(f"{url}/health").json()
                results[f"{name}, concurrency {args.concurrency}"]["batch_invariant"] = health["batch_invariant"]
                results[f"{name}, concurrency {args.concurrency}"]["precision"] = health["precision"]
                results[f"{name}, concurrency {args.concurrency}"]["model_processes"] = health["model_processes"]
            rounds = paired_rounds(running["batching"][1], running["no batching"][1], args.rounds, args.concurrency,
                                   request_plan(args.round_requests, args.round_requests + 1, args.max_texts,
                                                args.max_body_bytes))
        finally:
            for proc, _ in running.values():
                stop_server(proc)

    header = ["server", "load", "requests (valid)", "errors on valid", "non-4xx on bad", "p50 ms", "p99 ms", "valid req/s",
              "server CPU ms/request: HTTP / model", "client CPU ms/request", "requests per model call (alone)"]
    rows = []
    for name, r in results.items():
        server, load = name.rsplit(", ", 1)
        valid_errors = sum(1 for f in r["failures"] if f.startswith("valid"))
        rows.append([server, load, f"{r['requests']:,} ({r['valid']:,})", valid_errors, len(r["failures"]) - valid_errors,
                     fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r["valid_per_s"]), server_cpu_cell(r["server_cpu_ms_per_request"]),
                     fmt(r["client_cpu_ms_per_request"]),
                     f"{r['model_calls']['requests_per_call']:.2f} ({r['model_calls']['alone_share']:.0%})"])
    info = machine()
    base = results["no batching, one at a time"]["valid_per_s"]
    speedup = results[f"batching, concurrency {args.concurrency}"]["valid_per_s"] / base
    precision = results[f"batching, concurrency {args.concurrency}"]["precision"]
    copies = results[f"batching, concurrency {args.concurrency}"]["model_processes"]
    print(f"`{command_line()}`\n\nMachine: {machine_line(info)}; the servers computed in {precision}; the batching "
          f"server ran {copies} model process(es)\n")
    print(markdown_table(header, rows))
    print(f"\nThroughput with micro-batching at concurrency {args.concurrency}: {speedup:.1f}x one request at a time.")
    if rounds:
        ratios = [r["ratio"] for r in rounds]
        print(f"Paired rounds ({len(rounds)}, {args.round_requests} requests at concurrency {args.concurrency} and "
              f"{max(1, args.round_requests // 4)} one at a time each, alternating): ratio median "
              f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x; batched "
              f"{statistics.median(r['batched'] for r in rounds):.0f} req/s, one at a time "
              f"{statistics.median(r['baseline'] for r in rounds):.0f} req/s (medians).")
    if args.model_in_thread:
        thread = "batching, model in a thread"
        ratios = [results[f"batching, {load}"]["valid_per_s"] / results[f"{thread}, {load}"]["valid_per_s"]
                  for load in (f"concurrency {args.concurrency}", "one at a time")]
        print(f"The model in its own process against in a thread: {ratios[0]:.2f}x the throughput at concurrency "
              f"{args.concurrency}, {ratios[1]:.2f}x one request at a time.")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"command": command_line(), "machine": info, "results": results,
                                                   "speedup": speedup, "paired_rounds": rounds}, indent=1))
    if any(r["failures"] for r in results.values()):
        for name, r in results.items():
            for f in r["failures"][:5]:
                print(f"{name}: {f}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
