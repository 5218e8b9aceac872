"""Safety: nothing is unpickled when loading, outputs are never overwritten without --overwrite, and a
non-finite loss (or weight) stops training with the last good checkpoint kept."""

from __future__ import annotations

import ast
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
import yaml
from interruption import interrupted_after
from safetensors.torch import load_file

import biomtl
from biomtl.checkpoint import CHECKPOINT
from biomtl.cli import main
from biomtl.errors import TrainingError
from biomtl.predict import Predictor
from biomtl.tasks.tagging import TaggingTask
from biomtl.train import train

SRC = Path(biomtl.__file__).parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_encoder, toy_tasks) -> Path:
    from biomtl.config import RunConfig

    out = tmp_path_factory.mktemp("safety") / "run"
    config = RunConfig(
        tasks=[str(toy_tasks[t]) for t in ("toy-ner", "toy-rel")], output_dir=str(out), encoder=tiny_encoder,
        epochs=1, batch_size=4, max_length=32, max_train_examples=8, num_threads=1, checkpoint_every=2,
    )
    train(config, progress=False)
    return out


# ----------------------------------------------------------------------------------------------------------
# Loading reads safetensors and JSON only


def test_model_directory_holds_no_pickles(finished_run):
    files = {p.relative_to(finished_run / "best").as_posix() for p in (finished_run / "best").rglob("*") if p.is_file()}
    assert "model.safetensors" in files and "biomtl.json" in files
    assert all(Path(f).suffix in (".safetensors", ".json", ".txt") for f in files), files


def test_loading_a_model_never_unpickles(finished_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle while loading a model")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    predictor = Predictor.load(finished_run / "best")
    (result,) = predictor.predict("toy-ner", ["Aspirin and naloxone."])
    assert result["id"] == "1"


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            out.append((f"{node.func.value.id}.{node.func.attr}", node))
    return out


def test_every_torch_load_in_the_code_is_weights_only():
    """Where a torch file must be read (the optimizer state of a checkpoint) it is read with
    ``weights_only=True``; ``pickle`` itself is never used to load anything."""
    torch_loads = 0
    for path in SRC.rglob("*.py"):
        for name, call in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            assert name not in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"), where
            if name == "torch.load":
                torch_loads += 1
                kwargs = {k.arg: k.value for k in call.keywords}
                assert isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True, where
    assert torch_loads >= 1  # the checkpoint's optimizer.pt


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_checkpoint_with_code_in_it_is_refused_not_run(run_config, tmp_path, capsys):
    config = run_config(tasks=["toy-ner"], checkpoint_every=2)
    with interrupted_after(3):
        train(config, progress=False)
    marker = tmp_path / "pwned"
    optimizer_file = Path(config.output_dir) / CHECKPOINT / "optimizer.pt"
    optimizer_file.write_bytes(pickle.dumps({"optimizer": _Payload(marker)}, protocol=2))
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config.to_dict()))
    capsys.readouterr()

    assert main(["train", str(run_yaml), "--resume", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {optimizer_file}: cannot read the checkpoint (not a plain tensor file; refused by "
        "torch.load(weights_only=True)); start again with --overwrite\n"
    )
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# Outputs are not overwritten without --overwrite


def test_train_refuses_an_existing_output_dir_then_replaces_it_with_overwrite(run_config, tmp_path, capsys):
    config = run_config(tasks=["toy-ner"], epochs=1)
    out = Path(config.output_dir)
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config.to_dict()))

    assert main(["train", str(run_yaml), "--quiet"]) == 2
    assert capsys.readouterr().err == f"biomtl: error: {out} exists; pass --overwrite to replace it or --resume to continue it\n"
    assert (out / "keep.txt").read_text() == "user data"

    # --overwrite replaces only a directory that biomtl wrote: the user's own files survive it
    assert main(["train", str(run_yaml), "--overwrite", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"biomtl: error: {out}: --overwrite refused: keep.txt was not written by biomtl; biomtl replaces only "
        "directories it wrote (move your files away or choose another output_dir)\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "user data"

    run = tmp_path / "run2"
    assert main(["train", str(run_yaml), f"output_dir={run}", "--quiet"]) == 0
    first = (run / "result.json").read_text()
    # --overwrite with data that fails to load: the old directory is still there
    bad = tmp_path / "bad-ner.yaml"
    bad.write_text(Path(config.tasks[0]).read_text().replace("labels: [Chemical]", "labels: [Gene]"))
    assert main(["train", str(run_yaml), f"output_dir={run}", f"tasks=[{bad}]", "--overwrite", "--quiet"]) == 2
    assert "undeclared tag 'B-Chemical'" in capsys.readouterr().err
    assert (run / "result.json").read_text() == first

    (run / "result.json").unlink()  # so that a new result.json shows the replacement
    assert main(["train", str(run_yaml), f"output_dir={run}", "--overwrite", "--quiet"]) == 0
    assert (run / "result.json").is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_outputs_are_as_readable_as_any_file_the_user_writes(finished_run, tmp_path):
    """Written through private temporaries (mkdtemp/mkstemp make them 0o700/0o600), outputs still end up
    with the permissions of the user's umask."""
    umask = _umask()
    for directory in ("best", CHECKPOINT):
        assert stat.S_IMODE((finished_run / directory).stat().st_mode) == 0o777 & ~umask, directory
    for file in ("result.json", "metrics.jsonl"):
        assert stat.S_IMODE((finished_run / file).stat().st_mode) == 0o666 & ~umask, file
    text = tmp_path / "doc.txt"
    text.write_text("Aspirin and naloxone.")
    output = tmp_path / "out.jsonl"
    assert main(["predict", str(finished_run / "best"), "--task", "toy-ner", "--input", str(text), "--output", str(output)]) == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask


def test_predict_refuses_an_existing_output_file_then_replaces_it_with_overwrite(finished_run, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text("Aspirin and naloxone.")
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    argv = ["predict", str(finished_run / "best"), "--task", "toy-ner", "--input", str(text), "--output", str(output)]

    assert main(argv) == 2
    assert capsys.readouterr().err == f"biomtl: error: {output} exists; pass --overwrite to replace it\n"
    assert output.read_text() == "precious\n"

    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(output.read_text())["id"] == "1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


# ----------------------------------------------------------------------------------------------------------
# Non-finite loss or weights


def _break_loss_from(monkeypatch, step: int, value: float) -> None:
    """From the ``step``-th training step on (1-based), the tagging loss is ``value``."""
    original = TaggingTask.loss
    calls = {"n": 0}

    def loss(self, logits, batch):
        if not torch.is_grad_enabled():
            return original(self, logits, batch)
        calls["n"] += 1
        result = original(self, logits, batch)
        return result * value if calls["n"] >= step else result

    monkeypatch.setattr(TaggingTask, "loss", loss)


def _finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(path).values() if t.is_floating_point())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_config, tmp_path, monkeypatch, capsys, value):
    """24 toy sentences, batch 4: 6 steps an epoch. Checkpoints every 2 steps; the loss breaks at step 4 and
    the check at step 4 stops the run and the checkpoint of step 2 is what is left."""
    clean = run_config(tasks=["toy-ner"], checkpoint_every=2, log_every=100, output_dir=str(tmp_path / "clean"))
    with interrupted_after(2):
        train(clean, progress=False)

    config = run_config(tasks=["toy-ner"], checkpoint_every=2, log_every=100)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config.to_dict()))
    _break_loss_from(monkeypatch, 4, value)

    assert main(["train", str(run_yaml), "--quiet"]) == 2
    out = Path(config.output_dir)
    word = "nan" if value != value else "inf"
    assert capsys.readouterr().err == (
        f"biomtl: error: loss became {word} for task toy-ner by step 4; stopping (the last good checkpoint is "
        f"kept in {out / CHECKPOINT}). Lower lr or check the data.\n"
    )
    state = json.loads((out / CHECKPOINT / "state.json").read_text())
    assert (state["epoch"], state["global_step"]) == (0, 2)
    kept, reference = load_file(out / CHECKPOINT / "model.safetensors"), load_file(tmp_path / "clean" / CHECKPOINT / "model.safetensors")
    assert all(torch.equal(kept[k], reference[k]) for k in reference)
    assert not (out / "result.json").exists()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0]  # best/: untrained


def test_non_finite_loss_in_a_later_epoch_leaves_the_best_model_intact(run_config, monkeypatch):
    config = run_config(tasks=["toy-ner"], checkpoint_every=0, log_every=100)
    _break_loss_from(monkeypatch, 8, float("nan"))  # epoch 2
    with pytest.raises(TrainingError, match=r"^loss became nan for task toy-ner by step 12; stopping \(the last good checkpoint is kept in .*/checkpoint\)"):
        train(config, progress=False)
    out = Path(config.output_dir)
    assert json.loads((out / CHECKPOINT / "state.json").read_text())["global_step"] == 6
    assert _finite(out / "best" / "model.safetensors") and _finite(out / CHECKPOINT / "model.safetensors")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # epochs 0 and 1


def test_weights_broken_by_a_step_with_finite_loss_are_not_saved(run_config, monkeypatch):
    """An overflowing gradient can turn weights into inf/nan while that step's loss was finite; the last
    step of the epoch would then save them as best/ and in the checkpoint."""
    config = run_config(tasks=["toy-ner"], checkpoint_every=0, log_every=100)
    clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def break_on_step_6(parameters, *args, **kwargs):
        parameters = list(parameters)
        calls["n"] += 1
        if calls["n"] == 6:  # the last step of epoch 1
            for p in parameters:
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        return clip(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", break_on_step_6)
    with pytest.raises(TrainingError, match=r"^weights became non-finite \(\S+\) by step 6; stopping \(no checkpoint was written\)"):
        train(config, progress=False)
    out = Path(config.output_dir)
    assert not (out / CHECKPOINT).exists()
    assert _finite(out / "best" / "model.safetensors")  # the untrained model, epoch 0: the only candidate so far
