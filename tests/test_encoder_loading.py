"""How an encoder is found and loaded: half-precision checkpoints, ``~`` paths, ``$BIOMTL_ENCODER``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from biomtl.errors import BiomtlError
from biomtl.model import MultiTaskModel, default_encoder_path, load_encoder
from biomtl.tasks import load_dataset_spec
from biomtl.train import train


def _half_copy(source: str, dest: Path, dtype: torch.dtype) -> Path:
    shutil.copytree(source, dest)
    state = load_file(dest / "model.safetensors")
    save_file({k: v.to(dtype) for k, v in state.items()}, dest / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dest / "config.json").read_text())  # as save_pretrained writes it for a half model
    config["dtype"] = config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_trains_in_fp32(tiny_encoder, tmp_path, dtype):
    half = _half_copy(tiny_encoder, tmp_path / "half", dtype)
    encoder, _ = load_encoder(str(half))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    reference, _ = load_encoder(tiny_encoder)
    ref = dict(reference.named_parameters())
    for name, p in encoder.named_parameters():  # the stored values, upcast exactly
        assert torch.equal(p, ref[name].to(dtype).float()), name


def test_model_from_a_half_checkpoint_saves_and_reloads_fp32(tiny_encoder, tmp_path):
    half = _half_copy(tiny_encoder, tmp_path / "half", torch.float16)
    model = MultiTaskModel.from_encoder(str(half), {"bc5cdr-chemical": load_dataset_spec("bc5cdr-chemical")})
    model.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "encoder" / "config.json").read_text())["dtype"] == "float32"
    loaded = MultiTaskModel.load(tmp_path / "model")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    batch = loaded.tokenizer(["aspirin and heparin"], return_tensors="pt")
    with torch.inference_mode():
        logits = loaded.eval()("bc5cdr-chemical", dict(batch))
    assert logits.dtype == torch.float32


def test_home_relative_encoder_path(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_encoder, tmp_path / "enc")
    encoder, tokenizer = load_encoder("~/enc")
    assert encoder.config.hidden_size == 32 and tokenizer.tokenize("aspirin")
    with pytest.raises(BiomtlError, match="does not exist"):
        load_encoder("~/missing")


def test_environment_names_the_default_encoder(tiny_encoder, monkeypatch):
    monkeypatch.setenv("BIOMTL_ENCODER", tiny_encoder)
    assert default_encoder_path() == tiny_encoder
    model = MultiTaskModel.from_encoder(None, {"bc5cdr-chemical": load_dataset_spec("bc5cdr-chemical")})
    assert model.encoder.config.hidden_size == 32
    assert model.encoder_name == tiny_encoder  # recorded in biomtl.json, not "the embedded default"


def test_max_length_must_fit_the_encoder(run_config, tmp_path):
    """The tiny BERT has 128 positions; a longer max_length is refused when the model is built, before any
    output is written."""
    config = run_config(["toy-ner"], max_length=129, output_dir=str(tmp_path / "run"))
    with pytest.raises(BiomtlError, match=r"^max_length: 129 is more than the encoder's max_position_embeddings "
                                          r"\(128\); set max_length to 128 or less$"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()
    assert train(run_config(["toy-ner"], max_length=128, epochs=1, output_dir=str(tmp_path / "ok")), progress=False)
