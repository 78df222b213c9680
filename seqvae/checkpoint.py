"""Checkpoints: ``state_dict``s plus the resolved config, written atomically and read
with ``torch.load(weights_only=True)``.

A checkpoint is a dict::

    {"format": "seqvae", "version": 1, "config": <RunConfig as a dict>, "step": int,
     "model": state_dict, "optimizer": state_dict, "scaler": state_dict,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}, "data_epoch": int}

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed
over the target (``os.replace``), so a crash never leaves a half-written checkpoint
where a good one was.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "seqvae"
VERSION = 1
REQUIRED = ("format", "version", "config", "step", "model")


class CheckpointError(RuntimeError):
    """A file is not a usable seqvae checkpoint; the message says why and what to do."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (a run folder holds checkpoint.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, unsafe globals ...
        raise CheckpointError(
            f"{path} is not a readable seqvae checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "It may be truncated or corrupt; nothing was changed. Use another checkpoint of the run."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a seqvae checkpoint (no 'format': 'seqvae' entry)")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it cannot be loaded")
    if payload["version"] > VERSION:
        raise CheckpointError(f"{path} was written by a newer seqvae (format version {payload['version']} > {VERSION}); upgrade seqvae")
    return payload
