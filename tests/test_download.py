"""``biomtl data download`` against a local HTTP server on 127.0.0.1; no test contacts another host."""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from biomtl.cli import main
from biomtl.corpora import PREPARERS
from biomtl.corpora.download import load_catalogue

REPO = Path(__file__).resolve().parents[1]


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless the path is in ``server.ignore_range``.

    ``server.drops[path]`` lists byte counts after which successive responses for that path are cut off.
    """

    server: FixtureServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and self.path not in self.server.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        drops = self.server.drops.get(self.path)
        cut = drops.pop(0) if drops else None
        self.wfile.write(body[start:] if cut is None else body[start : start + cut])
        # HTTP/1.0: the connection closes when the handler returns, mid-body when cut.

    def log_message(self, *args: object) -> None:
        pass


class FixtureServer(ThreadingHTTPServer):
    files: dict[str, bytes]
    requests: list[tuple[str, str | None]]
    drops: dict[str, list[int]]
    ignore_range: set[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    httpd = FixtureServer(("127.0.0.1", 0), Handler)  # port 0: a free port
    httpd.files, httpd.requests, httpd.drops, httpd.ignore_range = {}, [], {}, set()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _catalogue(path: Path, entries: list[dict], restricted: list[dict] | None = None) -> Path:
    doc = {
        "format": 1,
        "corpora": [{"name": "Toy", "tasks": ["toy"], "licence": "CC0 (test fixture)", "files": entries}],
        "restricted": restricted or [],
    }
    path.write_text(json.dumps(doc))
    return path


def _serve(server: FixtureServer, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """Serve ``files`` (corpus path → bytes) and write a catalogue for them; returns the catalogue path."""
    entries = []
    for rel, data in files.items():
        server.files[f"/{rel}"] = data
        entries.append(
            {
                "path": rel,
                "url": server.url(f"/{rel}"),
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
        )
    return _catalogue(tmp_path / "catalogue.json", entries)


def _run(corpora: Path, catalogue: Path, *extra: str) -> int:
    return main(
        ["data", "download", "--corpora", str(corpora), "--catalogue", str(catalogue), "--quiet", *extra]
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


A, B = _blob(200_000, 1), _blob(3_000, 2)


def test_downloads_checks_and_then_skips_files_in_place(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A, "Toy/sub/b.txt": B})
    corpora = tmp_path / "corpora"  # created by the command
    assert main(["data", "download", "--corpora", str(corpora), "--catalogue", str(catalogue)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"2 files in {corpora}: 2 downloaded, 0 already present",
        "licence of Toy: CC0 (test fixture)",
    ]
    assert "Toy/a.bin: 100%" in err  # the progress bar names the file
    assert (corpora / "Toy/a.bin").read_bytes() == A and (corpora / "Toy/sub/b.txt").read_bytes() == B
    assert _files(corpora) == ["Toy/a.bin", "Toy/sub/b.txt"]

    server.requests.clear()
    assert _run(corpora, catalogue) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"2 files in {corpora}: 0 downloaded, 2 already present"
    assert server.requests == []


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A})
    server.drops["/Toy/a.bin"] = [50_000]  # the first response stops after 50,000 bytes
    assert _run(tmp_path / "c", catalogue) == 0
    assert server.requests == [("/Toy/a.bin", None), ("/Toy/a.bin", "bytes=50000-")]
    assert (tmp_path / "c/Toy/a.bin").read_bytes() == A
    assert _files(tmp_path / "c") == ["Toy/a.bin"]


def test_connection_lost_without_progress_keeps_the_part_for_the_next_run(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A})
    server.drops["/Toy/a.bin"] = [50_000, 0]  # the retry brings nothing: give up, keep the part
    corpora = tmp_path / "c"
    assert _run(corpora, catalogue) == 2
    port = server.server_address[1]
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"biomtl: error: Toy/a.bin: connection to 127.0.0.1:{port} lost after 50000 bytes; rerun to resume"
    )
    assert _files(corpora) == ["Toy/a.bin.part"]

    server.requests.clear()
    assert _run(corpora, catalogue) == 0  # the next run resumes where the part ends
    assert server.requests == [("/Toy/a.bin", "bytes=50000-")]
    assert (corpora / "Toy/a.bin").read_bytes() == A
    assert _files(corpora) == ["Toy/a.bin"]


def test_server_that_ignores_range_is_read_from_the_start(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A})
    server.ignore_range.add("/Toy/a.bin")
    (tmp_path / "c/Toy").mkdir(parents=True)
    (tmp_path / "c/Toy/a.bin.part").write_bytes(A[:1000])
    assert _run(tmp_path / "c", catalogue) == 0
    assert server.requests == [("/Toy/a.bin", "bytes=1000-")]  # answered 200 with the whole file
    assert (tmp_path / "c/Toy/a.bin").read_bytes() == A  # not the first 1000 bytes twice
    assert _files(tmp_path / "c") == ["Toy/a.bin"]


def test_stale_part_that_fails_the_checksum_is_fetched_again(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A})
    (tmp_path / "c/Toy").mkdir(parents=True)
    (tmp_path / "c/Toy/a.bin.part").write_bytes(b"x" * 1000)  # left by a download of something else
    assert _run(tmp_path / "c", catalogue) == 0
    assert server.requests == [("/Toy/a.bin", "bytes=1000-"), ("/Toy/a.bin", None)]
    assert (tmp_path / "c/Toy/a.bin").read_bytes() == A


def test_wrong_checksum_is_refused_and_nothing_is_left_behind(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/deep/a.bin": A})
    server.files["/Toy/deep/a.bin"] = A[:-1] + b"!"  # the server's copy differs from the catalogue's
    corpora = tmp_path / "c"
    corpora.mkdir()
    assert _run(corpora, catalogue) == 2
    actual, expected = hashlib.sha256(A[:-1] + b"!").hexdigest(), hashlib.sha256(A).hexdigest()
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"biomtl: error: Toy/deep/a.bin: sha256 of {server.url('/Toy/deep/a.bin')} is {actual}, "
        f"not the catalogue's {expected}; nothing was kept"
    )
    assert list(corpora.rglob("*")) == []  # no target, no .part, not even the folders it made


def test_missing_file_is_one_line_and_exit_2(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A})
    del server.files["/Toy/a.bin"]
    assert _run(tmp_path / "c", catalogue) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"biomtl: error: Toy/a.bin: {server.url('/Toy/a.bin')} answered HTTP 404 Not Found"
    )
    assert _files(tmp_path / "c") == []


def test_unreachable_host_is_one_line_and_exit_2(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = {"path": "Toy/a.bin", "url": f"http://127.0.0.1:{port}/a.bin", "sha256": "0" * 64}
    assert _run(tmp_path / "c", _catalogue(tmp_path / "cat.json", [entry])) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"biomtl: error: Toy/a.bin: cannot reach 127.0.0.1:{port} (Connection refused)"
    )
    assert _files(tmp_path / "c") == []


def test_a_different_file_in_place_is_refused_before_any_download(server, tmp_path, capsys):
    catalogue = _serve(server, tmp_path, {"Toy/a.bin": A, "Toy/b.txt": B})
    (tmp_path / "c/Toy").mkdir(parents=True)
    (tmp_path / "c/Toy/b.txt").write_text("my own notes\n")
    assert _run(tmp_path / "c", catalogue) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"biomtl: error: {tmp_path / 'c/Toy/b.txt'} exists but is not the catalogue's file "
        f"(sha256 {hashlib.sha256(B).hexdigest()[:12]}…); move it away and rerun, biomtl never overwrites it"
    )
    assert (tmp_path / "c/Toy/b.txt").read_text() == "my own notes\n"
    assert server.requests == [] and _files(tmp_path / "c") == ["Toy/b.txt"]


def test_task_selection_and_restricted_corpora(server, tmp_path, capsys):
    restricted = [
        {"name": "Clinic", "tasks": ["clinic"], "where": "https://example.org/clinic", "terms": "a data use agreement",
         "how": "unzip the release", "files": ["Clinic/train.jsonl"]}
    ]  # fmt: skip
    entries = [{"path": "Toy/a.bin", "url": server.url("/a"), "sha256": "0" * 64}]
    catalogue = _catalogue(tmp_path / "cat.json", entries, restricted)
    corpora = tmp_path / "c"
    assert _run(corpora, catalogue, "--tasks", "clinc") == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == "biomtl: error: unknown task 'clinc'; did you mean 'clinic'?"
    )

    assert _run(corpora, catalogue, "--tasks", "clinic") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"0 files in {corpora}: 0 downloaded, 0 already present",
        "Clinic (clinic) cannot be downloaded: a data use agreement.",
        f"  Get it from https://example.org/clinic; unzip the release; place the files as {corpora / 'Clinic/train.jsonl'}",
    ]
    assert server.requests == []  # the public task was not asked for

    (corpora / "Clinic").mkdir()
    (corpora / "Clinic/train.jsonl").write_text("{}\n")
    assert _run(corpora, catalogue, "--tasks", "clinic") == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Clinic: found in {corpora}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["corpora"][0]["files"][0].update(path="../outside.txt"),
         "corpora[0].files[0].path: '../outside.txt' is not a relative path inside the corpus directory"),
        (lambda d: d["corpora"][0]["files"][0].update(sha256="abc"),
         "corpora[0].files[0].sha256: expected 64 lowercase hex digits"),
        (lambda d: d["corpora"][0]["files"][0].update(url="file:///etc/passwd"),
         "corpora[0].files[0].url: 'file:///etc/passwd' is not an http(s) URL"),
        (lambda d: d["corpora"][0].pop("licence"), "corpora[0]: missing key 'licence'"),
        (lambda d: d.update(format=2), "catalogue.format: 2 is not supported (expected 1)"),
        (lambda d: d["corpora"][0]["files"].append(d["corpora"][0]["files"][0]),
         "corpora[0]: Toy/a.bin is listed twice"),
    ],
)  # fmt: skip
def test_bad_catalogue_is_refused_naming_the_key(tmp_path, capsys, change, message):
    entry = {"path": "Toy/a.bin", "url": "http://127.0.0.1:9/a", "sha256": "0" * 64}
    path = _catalogue(tmp_path / "cat.json", [entry])
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    assert _run(tmp_path / "c", path) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"biomtl: error: {path}: {message}"
    assert not (tmp_path / "c").exists()


def test_catalogue_that_is_not_json_names_the_line(tmp_path, capsys):
    path = tmp_path / "cat.json"
    path.write_text('{\n "format": 1,\n "corpora": [,]\n}\n')
    assert _run(tmp_path / "c", path) == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"biomtl: error: {path}:3: not valid JSON: Expecting value"
    )


# ----------------------------------------------------------------------------------------------------------
# The shipped catalogue


def test_shipped_catalogue_matches_the_reference_corpora(corpora_dir):
    """Every file's sha256 and size equal the local reference copy, so the catalogue cannot drift from it."""
    catalogue = load_catalogue()
    for corpus in catalogue.corpora:
        for f in corpus.files:
            data = (corpora_dir / f.path).read_bytes()
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (f.sha256, f.bytes), f.path
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/.+", f.url), (
                f.url
            )


def test_shipped_catalogue_covers_every_task_and_config_file():
    catalogue = load_catalogue()
    public = {f.path for c in catalogue.corpora for f in c.files}
    restricted = {f for r in catalogue.restricted for f in r.files}
    assert set(PREPARERS) <= {t for c in catalogue.corpora for t in c.tasks}
    configs = sorted((REPO / "configs" / "datasets").rglob("*.yaml"))
    assert configs
    names = set()
    for path in configs:
        spec = yaml.safe_load(path.read_text())
        names.add(spec["name"])
        for value in spec["files"].values():
            template = value["path"] if isinstance(value, dict) else value
            if template.startswith("{prepared}/"):  # written by `data prepare` from the catalogue's files
                assert spec["name"] in PREPARERS, path.name
                continue
            rel = template.removeprefix("{corpora}/")
            assert rel in (restricted if spec.get("restricted") else public), f"{path.name}: {rel}"
    assert set(catalogue.tasks()) <= names | set(PREPARERS)


def test_downloaded_corpora_feed_data_prepare(server, corpora_dir, tmp_path, capsys):
    """The real catalogue, served from the reference copy: the files land where ``data prepare`` reads them."""
    doc = json.loads((REPO / "src/biomtl/corpora/sources.json").read_text())
    for corpus in doc["corpora"]:
        for f in corpus["files"]:
            server.files[f"/{f['path']}"] = (corpora_dir / f["path"]).read_bytes()
            f["url"] = server.url(f"/{f['path']}")
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps(doc))
    corpora, out = tmp_path / "corpora", tmp_path / "tasks"
    assert _run(corpora, catalogue, "--tasks", "biosses,hoc", "--prepare", "--out", str(out)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"9 files in {corpora}: 9 downloaded, 0 already present"
    assert lines[-2:] == [f"biosses: prepared in {out / 'biosses'}", f"hoc: prepared in {out / 'hoc'}"]
    for task in ("biosses", "hoc"):
        sources = {s["path"] for s in json.loads((out / task / "manifest.json").read_text())["sources"]}
        assert sources and sources <= set(_files(corpora)), task
