"""`biomtl annotate MODEL INPUT_DIR --output-dir OUT`: one output shard per input shard, on this process
(`--shard K/N` for Slurm arrays) or on Ray Data (`--engine ray`); a restarted job skips finished shards.

Every output is compared with what the single-file command (`biomtl annotate FILE --output F`) writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_annotate import PUBTATOR, write_e2e_tasks

import biomtl.scale as scale
from biomtl.cli import main
from biomtl.config import RunConfig
from biomtl.errors import BiomtlError
from biomtl.scale import SETTINGS, parse_shard

JSONL = "".join(
    json.dumps({"id": f"j{i}", "text": text}) + "\n"
    for i, text in enumerate(["Aspirin inhibits the receptor.", "Heparin binding the protein in cells.",
                              "The patients with clonidine and the receptor."])
)
BIOC = (
    "<collection><source>t</source><date/><key/><document><id>b1</id><passage><offset>0</offset>"
    "<text>Naloxone binding the receptor was seen.</text></passage></document></collection>"
)
SHARDS = {"a.pubtator": PUBTATOR, "b.jsonl": JSONL, "c.xml": BIOC, "d.txt": "Heparin inhibits the protein.\nNo entity here.\n"}


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from biomtl.train import train

    root = tmp_path_factory.mktemp("scale-tasks")
    tasks = write_e2e_tasks(root)
    out = tmp_path_factory.mktemp("scale-run") / "run"
    config = RunConfig(
        tasks=[str(p) for p in tasks.values()], output_dir=str(out), encoder=tiny_encoder, epochs=4,
        batch_size=8, lr=3e-3, max_length=32, num_threads=1, device="cpu", save_predictions=False,
    )
    train(config, progress=False)
    return out / "best"


def _shards(root: Path, shards: dict[str, str] = SHARDS) -> Path:
    root.mkdir()
    for name, text in shards.items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def expected(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each shard annotated alone by the single-file command."""
    inputs = _shards(tmp_path_factory.mktemp("single") / "in")
    out = {}
    for name in SHARDS:
        dst = inputs.parent / f"out-{name}"
        assert main(["annotate", str(model_dir), str(inputs / name), "--output", str(dst), "--precision", "fp32"]) == 0
        out[name] = dst.read_text()
    assert any("predicted" in text for text in out.values())  # the model does annotate something
    return out


def _outputs(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.iterdir()) if p.name != SETTINGS}


def _annotate_dir(model_dir: Path, inputs: Path, out: Path, *flags: str) -> int:
    return main(["annotate", str(model_dir), str(inputs), "--output-dir", str(out), "--precision", "fp32", *flags])


# ------------------------------------------------------------------------------------------------------
# --shard K/N


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4) and parse_shard(" 1 / 2 ") == (1, 2)
    for bad, message in (
        ("3", "--shard: expected K/N (this job's index from 0 and the number of jobs, e.g. 0/4), got '3'"),
        ("a/b", "--shard: expected K/N (this job's index from 0 and the number of jobs, e.g. 0/4), got 'a/b'"),
        ("-1/4", "--shard: expected K/N (this job's index from 0 and the number of jobs, e.g. 0/4), got '-1/4'"),
        ("4/4", "--shard: K must be at least 0 and below N (0/4 to 3/4), got '4/4'"),
        ("0/0", "--shard: K must be at least 0 and below N (0/1 to 0/1), got '0/0'"),
    ):
        with pytest.raises(BiomtlError) as e:
            parse_shard(bad)
        assert str(e.value) == message


@pytest.mark.parametrize(("flags", "message"), [
    (["--shard", "4/4"], "--shard: K must be at least 0 and below N (0/4 to 3/4), got '4/4'"),
    (["--shard", "1-4"], "--shard: expected K/N (this job's index from 0 and the number of jobs, e.g. 0/4), got '1-4'"),
    (["--workers", "2"], "--workers: only with --engine ray"),
    (["--engine", "ray", "--workers", "0"], "--workers: must be >= 1, got 0"),
])
def test_bad_flags_are_one_line(model_dir, tmp_path, capsys, flags, message):
    inputs = _shards(tmp_path / "in")
    assert _annotate_dir(model_dir, inputs, tmp_path / "out", *flags) == 2
    assert capsys.readouterr().err == f"biomtl: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_directory_flags_need_a_directory(model_dir, tmp_path, capsys):
    inputs = _shards(tmp_path / "in")
    cases = [
        (["annotate", str(model_dir), str(inputs)], f"{inputs} is a directory: name the directory for the output shards with --output-dir"),
        (["annotate", str(model_dir), str(inputs / "b.jsonl"), "--shard", "0/2"], "--shard needs a directory of shards as INPUT and --output-dir"),
        (["annotate", str(model_dir), str(inputs / "b.jsonl"), "--engine", "ray"], "--engine needs a directory of shards as INPUT and --output-dir"),
        (["annotate", str(model_dir), str(inputs / "b.jsonl"), "--output-dir", str(tmp_path / "out")],
         f"--output-dir: INPUT must be a directory of shards; {inputs / 'b.jsonl'} is not a directory"),
        (["annotate", str(model_dir), str(inputs), "--output-dir", str(inputs)], f"--output-dir: {inputs} is the input directory; choose another directory"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"biomtl: error: {message}\n"
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in inputs.iterdir()) == sorted(SHARDS)


def test_shards_split_the_directory_and_match_the_single_file_command(model_dir, expected, tmp_path, capsys):
    inputs = _shards(tmp_path / "in")
    out = tmp_path / "out"
    assert _annotate_dir(model_dir, inputs, out, "--shard", "0/2") == 0
    assert sorted(_outputs(out)) == ["a.pubtator", "c.xml"]  # every 2nd shard of the sorted listing
    assert capsys.readouterr().out == f"shard 0/2: 2 shard(s) annotated (3 documents), 0 already done → {out}\n"
    assert _annotate_dir(model_dir, inputs, out, "--shard", "1/2") == 0
    assert _outputs(out) == expected
    settings = json.loads((out / SETTINGS).read_text())
    assert settings["model"] == str(model_dir.absolute()) and settings["format"] is None


def test_output_format_changes_the_suffix(model_dir, tmp_path):
    inputs = _shards(tmp_path / "in", {"a.pubtator": PUBTATOR, "b.txt": "Aspirin inhibits the receptor.\n"})
    out = tmp_path / "out"
    assert _annotate_dir(model_dir, inputs, out, "--format", "jsonl") == 0
    assert sorted(_outputs(out)) == ["a.jsonl", "b.jsonl"]
    assert json.loads(_outputs(out)["a.jsonl"].splitlines()[0])["id"] == "111"
    clash = _shards(tmp_path / "clash", {"a.pubtator": PUBTATOR, "a.txt": "Aspirin.\n"})
    with pytest.raises(BiomtlError, match=r"a.pubtator and a.txt would both be written to .*a.jsonl \(--format jsonl\)"):
        scale.plan_shards(clash, tmp_path / "out2", scale.ShardJob(str(model_dir), output_format="jsonl"))


# ------------------------------------------------------------------------------------------------------
# Restart


def test_a_restarted_job_annotates_only_the_unfinished_shards(model_dir, expected, tmp_path, monkeypatch, capsys):
    inputs = _shards(tmp_path / "in")
    out = tmp_path / "out"
    real = scale.annotate_shard
    calls: list[str] = []

    def killed_on_the_third(predictor, job, src, dst, raw=None):
        calls.append(src.name)
        if len(calls) == 3:
            dst.with_name(f".{dst.name}.dead").write_text("half")  # what a kill -9 in the write leaves
            raise KeyboardInterrupt
        return real(predictor, job, src, dst, raw)

    monkeypatch.setattr(scale, "annotate_shard", killed_on_the_third)
    assert _annotate_dir(model_dir, inputs, out) == 130
    assert sorted(_outputs(out)) == [".c.xml.dead", "a.pubtator", "b.jsonl"]

    calls.clear()
    monkeypatch.setattr(scale, "annotate_shard", lambda *a, **k: (calls.append(a[2].name), real(*a, **k))[1])
    capsys.readouterr()
    assert _annotate_dir(model_dir, inputs, out) == 0
    assert calls == ["c.xml", "d.txt"]
    assert capsys.readouterr().out == f"2 shard(s) annotated (3 documents), 2 already done → {out}\n"
    assert _outputs(out) == expected  # the stale temporary is gone

    calls.clear()
    assert _annotate_dir(model_dir, inputs, out) == 0 and calls == []  # all done: nothing to do
    assert _annotate_dir(model_dir, inputs, out, "--overwrite") == 0 and calls == sorted(SHARDS)


def test_a_restart_with_other_settings_is_refused(model_dir, tmp_path, capsys):
    inputs = _shards(tmp_path / "in", {"b.jsonl": JSONL})
    out = tmp_path / "out"
    assert _annotate_dir(model_dir, inputs, out) == 0
    (inputs / "e.jsonl").write_text(JSONL)
    capsys.readouterr()
    assert _annotate_dir(model_dir, inputs, out, "--tasks", "e2e-chem") == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {out}: its shards were annotated with other settings (tasks None → ['e2e-chem']); "
        "choose another --output-dir, or pass --overwrite to annotate every shard again\n"
    )
    assert sorted(_outputs(out)) == ["b.jsonl"]


def test_a_bad_shard_fails_alone_and_is_named(model_dir, expected, tmp_path, capsys):
    shards = {**SHARDS, "bad.jsonl": '{"text": "ok"}\nnot json\n'}
    inputs = _shards(tmp_path / "in", shards)
    out = tmp_path / "out"
    assert _annotate_dir(model_dir, inputs, out) == 2
    err = capsys.readouterr().err
    assert err == (
        f"biomtl: error: {inputs / 'bad.jsonl'}:2: invalid JSON (Expecting value); 4 shard(s) are done and kept, "
        "run the same command again to annotate the rest\n"
    )
    assert _outputs(out) == expected
    (inputs / "bad.jsonl").write_text('{"text": "ok"}\n')
    assert _annotate_dir(model_dir, inputs, out) == 0
    assert capsys.readouterr().out.startswith("1 shard(s) annotated (1 documents), 4 already done")


def test_a_model_that_cannot_load_writes_nothing(tmp_path, capsys):
    inputs = _shards(tmp_path / "in", {"b.jsonl": JSONL})
    assert _annotate_dir(tmp_path / "no-model", inputs, tmp_path / "out") == 2
    assert capsys.readouterr().err.startswith(f"biomtl: error: {tmp_path / 'no-model'}")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------------
# Ray Data


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with two CPUs (the two workers), no dashboard."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'biomtl[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_with_two_workers_matches_the_single_process_command(local_ray, model_dir, expected, tmp_path, capsys):
    inputs = _shards(tmp_path / "in", {**SHARDS, "bad.jsonl": "not json\n"})
    out = tmp_path / "out"
    assert _annotate_dir(model_dir, inputs, out, "--engine", "ray", "--workers", "2") == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {inputs / 'bad.jsonl'}:1: invalid JSON (Expecting value); 4 shard(s) are done and kept, "
        "run the same command again to annotate the rest\n"
    )
    assert _outputs(out) == expected
    assert local_ray.is_initialized()  # a Ray started by the caller is left running

    # restart: only the fixed shard and a lost output are annotated
    (inputs / "bad.jsonl").write_text(JSONL)
    (out / "c.xml").unlink()
    kept = (out / "a.pubtator").stat().st_mtime_ns
    assert _annotate_dir(model_dir, inputs, out, "--engine", "ray", "--workers", "2") == 0
    assert capsys.readouterr().out == f"2 shard(s) annotated (4 documents), 3 already done → {out}\n"
    assert (out / "a.pubtator").stat().st_mtime_ns == kept
    assert _outputs(out) == {**expected, "bad.jsonl": expected["b.jsonl"]}
