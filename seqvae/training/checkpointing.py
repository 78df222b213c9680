"""What a training checkpoint holds, both ways: :func:`write_checkpoint` gathers the
session's state (model, optimizer, scaler, update guard, step, every rank's RNG) and rank 0
writes it atomically; :func:`restore` puts a loaded checkpoint back into a new session,
so that a resumed run continues bit for bit."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from seqvae import dist
from seqvae.build import load_weights
from seqvae.checkpoint import save_checkpoint
from seqvae.config import ConfigError, RunConfig
from seqvae.data.spec import DataSpec
from seqvae.training.update_guard import UpdateGuard


def write_checkpoint(run_dir: Path, cfg: RunConfig, model, optimizer, scaler, step: int, spec: DataSpec,
                     guard: UpdateGuard) -> None:
    """Gather every rank's RNG state; rank 0 writes ``run_dir/checkpoint.pt`` atomically."""
    rng = torch.get_rng_state()
    if dist.world() > 1:
        states = [torch.empty_like(rng) for _ in range(dist.world())]
        torch.distributed.all_gather_object(states, rng)
    else:
        states = [rng]
    cuda = [torch.cuda.get_rng_state()] if torch.cuda.is_available() else []
    if dist.is_main():
        save_checkpoint(run_dir / "checkpoint.pt", {
            "config": cfg.to_dict(), "spec": asdict(spec), "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": {"torch": states, "cuda": cuda}, "update_guard": guard.state_dict(),
        })
    dist.barrier()


def restore(payload: dict[str, Any], run_dir: Path, spec: DataSpec, changes: list[str], model, optimizer, scaler,
            guard: UpdateGuard, device: torch.device) -> int:
    """Load a resumed checkpoint into the session's parts; return its step. The data must
    still give the shape it was trained on (a :class:`ConfigError` names the overrides that
    changed it)."""
    if DataSpec(**payload["spec"]) != spec:
        raise ConfigError(
            f"--resume: the data now give {spec} but {run_dir / 'checkpoint.pt'} was trained on "
            f"{DataSpec(**payload['spec'])}" + (f" (changed: {'; '.join(changes)})" if changes else "")
            + "; a resumed run keeps its data shape: drop those overrides or train a new run in another train.out_dir")
    load_weights(model, payload["model"], run_dir / "checkpoint.pt", changes)
    # fused Adam on every device (it takes the update guard's verdict on the device), also for a
    # checkpoint written without it: set before loading, so that torch puts each step count
    # where fused Adam keeps it (a float32 tensor on its parameter's device)
    state = payload["optimizer"]
    optimizer.load_state_dict({**state, "param_groups": [{**g, "fused": True} for g in state["param_groups"]]})
    scaler.load_state_dict(payload["scaler"])
    if "update_guard" in payload:  # absent in checkpoints written before the relative skip rule
        guard.load_state_dict(payload["update_guard"])
    rank, world = dist.rank(), dist.world()
    torch.set_rng_state(payload["rng"]["torch"][rank] if world > 1 and len(payload["rng"]["torch"]) == world
                        else payload["rng"]["torch"][0])
    if device.type == "cuda" and payload["rng"].get("cuda"):
        torch.cuda.set_rng_state(payload["rng"]["cuda"][min(rank, len(payload["rng"]["cuda"]) - 1)])
    return payload["step"]
