"""A tiny distributed helper: one code path for plain ``python`` and ``torchrun``.

``torchrun --nproc_per_node=N -m seqvae.cli train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
:func:`init` then starts a process group (NCCL on GPU, gloo on CPU). Without them it is
a no-op and everything runs as rank 0 of a world of one.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> torch.device:
    """Start the process group if launched by torchrun; return this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def launched_rank() -> int:
    """This process's rank, also before :func:`init` (from torchrun's ``RANK``; 0 otherwise)."""
    return rank() if is_initialized() else int(os.environ.get("RANK", "0"))


def world() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place) and return it; identity on one process."""
    if is_initialized():
        dist.all_reduce(tensor)
    return tensor


def cleanup() -> None:
    """Tear the process group down once every rank is done with it: a rank that destroyed
    its gloo group and exited while another still tore its own down has aborted the latter
    ("terminate called without an active exception", SIGABRT), hence the barrier first."""
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()
