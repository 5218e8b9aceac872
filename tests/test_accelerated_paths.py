"""The training paths that a GPU run takes — bf16 autocast, ``torch.compile``, the batch prefetch thread, CUDA
copies — checked where they can run. bf16 autocast and compile run on the CPU here; the CUDA tests are skipped
on a machine without a GPU (CI never has one) and are run by ``benchmarks/gpu_session.sh check``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from biomtl.model import MultiTaskModel
from biomtl.predict import Predictor
from biomtl.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _dev_rows(config) -> list[dict]:
    return [json.loads(x) for x in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]


def test_bf16_autocast_training_on_cpu(run_config):
    """precision: bf16 trains (fp32 master weights, bf16 matmuls), scores stay finite, the model reloads fp32."""
    config = run_config(device="cpu", precision="bf16", epochs=2)
    result = train(config, progress=False)
    dev = [r for r in _dev_rows(config) if r["split"] == "dev"]
    assert [r["epoch"] for r in dev] == [0, 1, 2] and all(math.isfinite(v) for r in dev for v in r["train_loss"].values())
    model = MultiTaskModel.load(Path(config.output_dir) / "best")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert set(result["test"]) == {"toy-ner", "toy-rel", "toy-sts", "toy-hoc"}


@pytest.mark.parametrize("native", [False, True])
def test_precision_auto_is_one_rule_for_training_and_prediction(monkeypatch, native):
    """``auto`` is bf16 exactly where the device computes bf16 natively, for the loop and the predictor."""
    import biomtl.inference as inference
    from biomtl.predict import inference_dtype

    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native else None
    assert inference.autocast_dtype("auto", cpu) is expected  # what train() uses
    assert inference_dtype("auto", cpu) is expected
    assert inference.autocast_dtype("fp32", cpu) is None and inference.autocast_dtype("bf16", cpu) is torch.bfloat16


def test_precision_auto_is_fp32_on_a_cpu_without_native_bf16():
    from biomtl.inference import autocast_dtype, native_bf16

    cpu = torch.device("cpu")
    if native_bf16(cpu):
        pytest.skip("this CPU computes bf16 natively")
    assert autocast_dtype("auto", cpu) is None


def _same_first_epoch_losses(run_config, tmp_path, a: dict, b: dict, rel: float, tasks: list[str] | None = None) -> None:
    """Two one-epoch runs that differ only by ``a`` / ``b``: their per-task training losses must agree."""
    losses = []
    for name, changes in (("a", a), ("b", b)):
        config = run_config(tasks, epochs=1, output_dir=str(tmp_path / name), **changes)
        train(config, progress=False)
        losses.append(_dev_rows(config)[0]["train_loss"])
    for task in losses[0]:
        assert losses[1][task] == pytest.approx(losses[0][task], rel=rel, abs=1e-4), task


def test_bf16_and_fp32_training_start_from_the_same_losses(run_config, tmp_path):
    """Autocast changes the arithmetic, not the run: the first epoch's losses agree to bf16 precision."""
    _same_first_epoch_losses(run_config, tmp_path, {"device": "cpu", "precision": "fp32"},
                             {"device": "cpu", "precision": "bf16"}, rel=1e-2)


@pytest.mark.slow
def test_compiled_training_matches_eager(run_config, tmp_path):
    """compile: true (torch.compile, dynamic shapes) trains like eager. Dropout is off: compiled dropout draws
    its masks from another random stream, so with dropout the two runs are different samples."""
    eager = {"device": "cpu", "precision": "fp32", "dropout": 0.0}
    _same_first_epoch_losses(run_config, tmp_path, eager, {**eager, "compile": True}, rel=1e-3, tasks=["toy-ner", "toy-rel"])


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_runs_and_reloads(run_config, precision):
    config = run_config(device="cuda", precision=precision, epochs=2)
    result = train(config, progress=False)
    assert set(result["test"]) == {"toy-ner", "toy-rel", "toy-sts", "toy-hoc"}
    model = MultiTaskModel.load(Path(config.output_dir) / "best")  # loads on the CPU
    assert next(model.parameters()).device.type == "cpu"


@cuda
def test_cuda_and_cpu_training_agree(run_config, tmp_path):
    """Same seed, same data: the fp32 GPU run (prefetch thread, pinned copies, fused AdamW) tracks the CPU run."""
    _same_first_epoch_losses(run_config, tmp_path, {"device": "cpu", "precision": "fp32"},
                             {"device": "cuda", "precision": "fp32"}, rel=1e-2)


@cuda
def test_cuda_compiled_bf16_training(run_config):
    config = run_config(device="cuda", precision="bf16", compile=True, epochs=1)
    assert set(train(config, progress=False)["test"]) == {"toy-ner", "toy-rel", "toy-sts", "toy-hoc"}


@cuda
def test_cuda_prediction_matches_cpu(run_config):
    config = run_config(["toy-ner"], device="cpu", epochs=2)
    train(config, progress=False)
    model = MultiTaskModel.load(Path(config.output_dir) / "best")
    texts = ["aspirin and heparin were given", "no chemical here", "lithium " * 40]
    on_cpu = Predictor(model, device="cpu", precision="fp32").predict("toy-ner", texts)
    on_gpu = Predictor(MultiTaskModel.load(Path(config.output_dir) / "best"), device="cuda", precision="fp32").predict("toy-ner", texts)
    assert on_gpu == on_cpu


def _sdpa_flags() -> dict[str, bool]:
    b = torch.backends.cuda
    return {"cudnn": b.cudnn_sdp_enabled(), "flash": b.flash_sdp_enabled(), "efficient": b.mem_efficient_sdp_enabled(),
            "math": b.math_sdp_enabled()}


def test_cuda_models_run_without_the_cudnn_attention_kernel():
    """On CUDA, training and prediction (both through ``device_compute``) leave cuDNN's attention out: it plans
    anew for every padded shape (BENCHMARKS.md, section 4). The CPU's flags stay untouched, and they come back
    afterwards. Flags only: this runs without a GPU."""
    from biomtl.inference import device_compute

    before = _sdpa_flags()
    assert before["cudnn"], "torch's default has cuDNN attention on"
    with device_compute(torch.device("cpu"), None):
        assert _sdpa_flags() == before
    with device_compute(torch.device("cuda"), None):
        assert _sdpa_flags() == {"cudnn": False, "flash": True, "efficient": True, "math": True}
    assert _sdpa_flags() == before


@cuda
def test_cuda_training_and_prediction_call_no_cudnn_attention(run_config):
    """The profiler sees attention run, and no cuDNN attention call, in bf16 training and prediction on the GPU."""
    from torch.profiler import ProfilerActivity, profile

    config = run_config(["toy-ner"], device="cuda", precision="bf16", epochs=1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(config, progress=False)
        model = MultiTaskModel.load(Path(config.output_dir) / "best")
        Predictor(model, device="cuda", precision="bf16").predict("toy-ner", ["aspirin and heparin were given"])
    names = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in names
    assert not [n for n in names if "cudnn_attention" in n]
