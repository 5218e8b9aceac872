"""Running a model: device, precision, length-sorted batches, predictions for whole examples.

Training (its dev and test evaluations) and :class:`biomtl.predict.Predictor` both run models through this
module, so a run's saved predictions and the predictor's agree on the same machine.

>>> device = resolve_device("auto")
>>> dtype = autocast_dtype("auto", device)  # None (fp32) unless the hardware computes bf16 natively
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from biomtl.errors import BiomtlError
from biomtl.model import MultiTaskModel
from biomtl.tasks.base import Feature

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; any other name is passed to torch and must be
    available here (one line naming ``device:`` otherwise)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BiomtlError(f"device: unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BiomtlError(f"device: {name} is not available here (torch finds no CUDA GPU); use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BiomtlError(f"device: {name} is not available here ({torch.cuda.device_count()} CUDA GPU(s))")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BiomtlError(f"device: {name} is not available here (no Apple GPU); use device=cpu or auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively (AVX512-BF16/AMX on a CPU, Ampere or newer on a GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype that autocast computes in for ``precision`` on ``device``; ``None`` is fp32 (no autocast).

    ``auto`` means bf16 where the device computes bf16 natively (:func:`native_bf16`), fp32 elsewhere: the
    one rule for training and prediction. Weights stay fp32 either way. ``fp16`` is only used when asked
    for (it needs loss scaling, which the loop does not do).
    """
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if precision not in _DTYPES:
        raise BiomtlError(f"precision: unknown value '{precision}'; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[precision]


# The attention kernels a CUDA model may use (torch.nn.attention.sdpa_kernel): every backend but cuDNN's, which
# torch tries first on Hopper GPUs. cuDNN builds a plan for every new (batch, length) shape, and biomtl's
# batches are dynamically padded: on an H200 that cost 3-6 ms of host time per attention call, and a
# BERT-base training step took 175 ms with torch's choice against 47 ms with the memory-efficient kernel
# (BENCHMARKS.md, section 4). ``None`` leaves the choice to torch (benchmarks/mfu.py --sdpa).
CUDA_ATTENTION: list[str] | None = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]


def device_compute(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Where a model runs on ``device``: ``torch.autocast`` in ``dtype`` (nothing for fp32), and on CUDA the
    attention kernels of :data:`CUDA_ATTENTION`.

    >>> with device_compute(torch.device("cpu"), torch.bfloat16):
    ...     torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    stack = contextlib.ExitStack()
    if dtype is not None:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    if device.type == "cuda" and CUDA_ATTENTION is not None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel([getattr(SDPBackend, name) for name in CUDA_ATTENTION]))
    return stack


def iterate_batches(
    features: list[Feature], batch_size: int, task: Any, pad_id: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches sorted by length (least padding); yields the feature indices and the collated batch."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, task.collate([features[i] for i in idx], pad_id)


@torch.inference_mode()
def predict_features(
    model: MultiTaskModel,
    task_name: str,
    features: list[Feature],
    n_examples: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> list[Any]:
    """Predictions for whole examples from their features (windows merged)."""
    task = model.tasks[task_name]
    preds: list[Any] = [None] * len(features)
    was_training = model.training
    model.eval()
    for idx, batch in iterate_batches(features, batch_size, task, model.tokenizer.pad_token_id):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with device_compute(device, dtype):
            logits = model(task_name, batch)
        for i, p in zip(idx, task.decode(logits.float().cpu(), [features[i] for i in idx]), strict=True):
            preds[i] = p
    model.train(was_training)
    return list(task.merge(preds, features, n_examples))
