"""Mixed precision set up in one place: which autocast dtype, and whether a grad scaler.

``auto``: bf16 on a GPU that supports it, else fp16 with a grad scaler; on a CPU bf16
where it computes bf16 natively (AVX512-BF16/AMX: ≈ 2× faster convolutions), else fp32.
``bf16`` on any CPU is allowed; fp16 on CPU is not.
Likelihoods and KLs compute in float32 whatever is chosen.
"""
from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")   # the one list: train.precision, --precision choices, resolve


def check_precision(precision: str, setting: str = "train.precision") -> None:
    """Raise ``ValueError`` naming ``setting`` and the valid choices unless ``precision`` is one of
    :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (one of :data:`PRECISIONS`) on ``device`` (None: plain fp32)."""
    check_precision(precision)
    if precision == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_supports_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def follow_run(requested: str | None, run_precision: str, device: torch.device) -> tuple[str, str]:
    """The precision an evaluation of a run computes in, and why: ``requested`` (a command's
    ``--precision``) when given, else the run's own ``train.precision``, so that a run trained
    in fp32 is scored in fp32 (bf16 moves the bound of a sharp decoder by tens of nats). A run
    trained in fp16, which needs a GPU, is scored in fp32 elsewhere."""
    if requested is not None:
        check_precision(requested, "--precision")
        if requested == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        return requested, "--precision"
    check_precision(run_precision)
    if run_precision == "fp16" and device.type != "cuda":
        return "fp32", "the run's train.precision is fp16, which needs a GPU: fp32 here"
    return run_precision, "the run's train.precision"


def describe(dtype: torch.dtype | None) -> str:
    """``bf16`` / ``fp16`` autocast or plain ``fp32``, for records and messages."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_backends(device: torch.device) -> None:
    """TF32 matmuls/convs on GPU (free speed on Ampere+)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
