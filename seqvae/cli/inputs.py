"""Inputs that several commands read: ``.npz`` arrays of frames and actions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from seqvae.io import frames_to_float


def what_file_is(path: Path) -> str | None:
    """A name for common files that are not an ``.npz`` of arrays (by their first bytes)."""
    import zipfile

    head = path.read_bytes()[:16] if path.stat().st_size else b""
    if not head:
        return "an empty file"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith("data.pkl") for n in names):
            return "a torch checkpoint (a model for seqvae eval / rollout, not input arrays)"
        return None                                    # a zip: perhaps an .npz after all
    if head[4:8] == b"ftyp" or head.startswith((b"\x1aE\xdf\xa3", b"RIFF")):
        return "a video (pass it to seqvae rollout --video, or decode it into an .npz first)"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "an image"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None


FRAMES_NPZ = "an .npz of arrays with 'frames' uint8 [N, T, C, H, W] (as seqvae rollout writes)"
ACTIONS_NPZ = "an .npz of arrays with 'actions' [K, horizon, A] or [horizon, A] (and optionally 'context_actions')"


def load_npz(path: str | Path, expected: str = FRAMES_NPZ, flag: str = "this command") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (never unpickled); a clear error for anything else, saying
    what ``flag`` (e.g. ``--actions``) takes: ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    kind = what_file_is(path)
    if kind is not None:
        raise ValueError(f"{path} is {kind}; {flag} reads {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npz of arrays ({type(err).__name__}); {flag} reads "
                         f"{expected}") from None


def frames_to_model_layout(frames: np.ndarray, chw: tuple[int, int, int], source: str) -> torch.Tensor:
    """``[T, C, H, W]`` or ``[T, H, W, C]`` (uint8, or float in [0, 1]) -> float ``[T, C, H, W]``
    in [0, 1], checked against the model's frame shape ``chw``."""
    arr = np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"{source}: frames must be [T, C, H, W] or [T, H, W, C], got shape {arr.shape}")
    c, h, w = chw
    if tuple(arr.shape[1:]) == (c, h, w):
        pass
    elif tuple(arr.shape[1:]) == (h, w, c):
        arr = rearrange(arr, "t h w c -> t c h w")
    else:
        raise ValueError(f"{source}: frames of shape {arr.shape} do not match the model's {c}×{h}×{w} frames "
                         f"(expected [T, {c}, {h}, {w}] or [T, {h}, {w}, {c}]; resize the video first)")
    if arr.dtype == np.uint8:
        return frames_to_float(torch.from_numpy(np.ascontiguousarray(arr)))
    if np.issubdtype(arr.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).clamp(0, 1)
    raise ValueError(f"{source}: frames must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def load_actions(path: str | Path, action_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``actions`` ``[K, horizon, A]`` or ``[horizon, A]`` (-> K = 1) and the optional
    ``context_actions`` ``[n_ctx - 1, A]`` from an ``.npz``."""
    data = load_npz(path, ACTIONS_NPZ, "--actions")
    if "actions" not in data:
        raise ValueError(f"{path} has no 'actions' array (keys: {', '.join(data) or 'none'}); --actions reads "
                         f"{ACTIONS_NPZ}")
    acts = torch.as_tensor(np.asarray(data["actions"], dtype=np.float32))
    if acts.dim() == 2:
        acts = acts[None]
    if acts.dim() != 3 or acts.shape[1] < 1:
        raise ValueError(f"{path}: actions must be [K, horizon, A] or [horizon, A], "
                         f"got shape {tuple(data['actions'].shape)}")
    if acts.shape[-1] != action_dim:
        raise ValueError(f"{path}: actions have {acts.shape[-1]} dimensions but the model takes {action_dim}")
    ctx_acts = None
    if "context_actions" in data:
        ctx_acts = torch.as_tensor(np.asarray(data["context_actions"], dtype=np.float32))
        if ctx_acts.dim() != 2 or ctx_acts.shape[-1] != action_dim:
            raise ValueError(f"{path}: context_actions must be [n_ctx - 1, {action_dim}], got {tuple(ctx_acts.shape)}")
    return acts, ctx_acts
