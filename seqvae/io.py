"""Small file and pixel helpers shared by every writer: atomic writes (a reader never sees
a half-written file) and the one float ↔ uint8 pixel conversion."""
from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success move it over ``path``.

    The temporary file (``.{stem}.{random}.tmp{suffix}``: it keeps the suffix, so encoders
    that look at it still work) is created exclusively with the usual ``0o666 & ~umask``
    permissions; after the block it is fsynced and ``os.replace``-d over the destination.
    On any error it is removed and the destination is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # the usual permissions, even if a writer recreated the file
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_atomic_temporary(path: str | os.PathLike, target: str | None = None) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path` (left behind
    only when the process was killed mid-write); with ``target`` (a file name), one of
    that file's."""
    match = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp(\.[^.]+)?", Path(path).name)
    if match is None:
        return False
    return target is None or (match.group(1), match.group(2) or "") == (Path(target).stem, Path(target).suffix)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_uint8(x: Tensor) -> Tensor:
    """Pixels in [0, 1] (any float dtype) → uint8: clipped, NaN → 0, scaled by 255 and
    rounded. uint8 passes through."""
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.bool:
        return x.to(torch.uint8) * 255
    x = torch.nan_to_num(x.detach().float(), nan=0.0, posinf=1.0, neginf=0.0)
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def frames_to_float(x: Tensor) -> Tensor:
    """uint8 pixels → float32 in [0, 1]; float pixels → float32 unchanged."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def plain(x):
    """Nested tuples → lists (dicts and lists kept), e.g. a config's ``asdict`` made fit for
    JSON or YAML."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def new_folder(parent: Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-2``, ``name-3`` … : never an existing folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ValueError(f"{parent} already holds 10 000 evaluations named {name}")
