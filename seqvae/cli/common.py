"""What several commands share: the default device and how a command names its model."""
from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(p) -> None:
    """``CHECKPOINT`` (a .pt file or run folder) or ``--pretrained NAME`` (a shipped model)."""
    p.add_argument("checkpoint", nargs="?", default="", help="checkpoint.pt or a run folder (or use --pretrained)")
    p.add_argument("--pretrained", default="", metavar="NAME",
                   help="a shipped pretrained model instead of a checkpoint (see seqvae.pretrained.available())")


def model_folder(checkpoint: str, pretrained: str) -> Path:
    """Where a command's outputs for this model go by default: the run folder of the
    checkpoint, or ``runs/pretrained_NAME`` for a shipped model."""
    if pretrained:
        return Path("runs") / f"pretrained_{pretrained}"
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def check_device(device: str, flag: str = "--device") -> None:
    """A device this machine has: ``cuda`` without a GPU is a clear error, not a driver traceback."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{flag}={device} is not a device; use cpu or cuda (or cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag}={device} but this machine has no CUDA GPU; use cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{flag}={device} but this machine has {torch.cuda.device_count()} GPU(s)")
