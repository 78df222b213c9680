"""Checkpoints: ``state_dict``s plus the resolved config, written atomically and read
with ``torch.load(weights_only=True)``.

A checkpoint is a dict::

    {"format": "seqvae", "version": 1, "config": <RunConfig as a dict>, "step": int,
     "model": state_dict, "optimizer": state_dict, "scaler": state_dict,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}, "data_epoch": int}

Writing goes to a temporary file in the same folder (``.checkpoint.pt.XXXXXXXX.tmp``), is
flushed to disk, then renamed over the target (``os.replace``), so a crash never leaves a
half-written checkpoint where a good one was (only the temporary file, which
:func:`is_temporary` recognises and the trainer removes on its next start).

Reading never runs code stored in a file: a checkpoint that holds pickled code objects
(globals other than tensors and plain data) is refused with a message that says so.
"""
from __future__ import annotations

import errno
import os
import pickletools
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "seqvae"
VERSION = 1
REQUIRED = ("format", "version", "config", "step", "model")


class CheckpointError(RuntimeError):
    """A file is not a usable seqvae checkpoint; the message says why and what to do."""


def is_temporary(path: str | Path, target: str = "checkpoint.pt") -> bool:
    """Whether ``path`` is a temporary file :func:`save_checkpoint` made for ``target`` (it
    stays behind only when the process was killed while writing)."""
    return re.fullmatch(rf"\.{re.escape(target)}\.[a-z0-9_]{{8}}\.tmp", Path(path).name) is not None


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
    except BaseException as err:
        cause = write_failure(err, path.parent)   # before the temporary file is gone: it fills the disk
        if os.path.exists(tmp):
            os.unlink(tmp)
        if cause is not None:
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err   # e.g. the disk is full
        raise
    return path


LOW_SPACE = 1 << 20   # bytes free below which a failed write is taken for a full disk


def write_failure(err: BaseException, folder: Path) -> OSError | None:
    """The system error behind a failed checkpoint write, or None (not a file system failure).

    ``torch.save`` reports a failed write into a file as its own ``RuntimeError`` ("[enforce
    fail at inline_container.cc] unexpected pos ..."), which hides the ``OSError`` (e.g.
    ``ENOSPC``) that the file's ``write`` raised; that error is still its ``__context__``. When
    torch's error carries none, a disk with (almost) no space left says what happened."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, RuntimeError) and "inline_container" in str(err):
        try:
            if shutil.disk_usage(folder).free < LOW_SPACE:
                return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            return None
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (a run folder holds checkpoint.pt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint: a copy or write of it never finished. "
                              "Nothing was changed; use another checkpoint of the run, or train again.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, pickled code objects ...
        code = _pickled_code(path, err)
        if code:
            raise CheckpointError(
                f"{path} holds pickled code objects ({', '.join(code)}) and was refused: seqvae reads checkpoints as "
                "tensors and plain data only and never runs code stored in a file. Nothing was executed and nothing "
                "was changed. Use a checkpoint written by seqvae train; do not load this file."
            ) from None
        raise CheckpointError(
            f"{path} is not a readable seqvae checkpoint ({_reason(err)}). "
            "It may be truncated or corrupt; nothing was changed. Use another checkpoint of the run."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a seqvae checkpoint (no 'format': 'seqvae' entry)")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it cannot be loaded")
    if payload["version"] > VERSION:
        raise CheckpointError(f"{path} was written by a newer seqvae "
                              f"(format version {payload['version']} > {VERSION}); upgrade seqvae")
    return payload


# globals that a tensors-and-plain-data checkpoint legitimately names
_SAFE_GLOBALS = re.compile(r"(torch|collections|numpy)(\.|$)|"
                           r"builtins\.(set|frozenset|bytearray|slice|complex|int|float)$")


def _pickled_code(path: Path, err: Exception) -> list[str]:
    """The globals (``module.name``) a file's pickle would import, when ``torch.load`` refused
    it for holding them: from torch's message, or by listing the pickle's opcodes (never
    executing them). Empty when the file is just unreadable."""
    named = re.findall(r"GLOBAL ([\w.]+)", str(err))
    if named:
        return list(dict.fromkeys(named))
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
        else:
            data = path.read_bytes()
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle at all: corrupt, not code
        return []
    return list(dict.fromkeys(name for name in found if not _SAFE_GLOBALS.match(name)))


def _reason(err: Exception) -> str:
    """What torch's loader said, without its advice (never "set weights_only=False")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = [line for line in lines if line.startswith(("Unsupported", "Trying to load", "WeightsUnpickler"))]
    text = (detail or lines or [""])[0]
    if text.startswith("Weights only load failed"):
        text = ""
    text = text.split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
