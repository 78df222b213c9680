"""Video arrays between the model side (``[T, C, H, W]``, float in [0, 1] or uint8, C = 1
or 3) and the viewer side (numpy ``uint8 [T, H, W, 3]``, channel last)."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from einops import rearrange, repeat

from seqvae.io import to_uint8

ArrayLike = Union[torch.Tensor, np.ndarray]
PathLike = Union[str, os.PathLike]
RGB = tuple[int, int, int]


def to_uint8_frames(frames: ArrayLike) -> np.ndarray:
    """Convert a model-side video ``[T, C, H, W]`` (C = 1 or 3) to numpy ``uint8 [T, H, W, 3]``.

    Floats are taken to lie in [0, 1]: they are clipped, NaNs become 0, then scaled by 255
    and rounded. uint8 passes through. Grey (C = 1) is repeated to three channels.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype == torch.bfloat16 or frames.dtype == torch.float16:
            frames = frames.float()
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"expected frames [T, C, H, W] with C in (1, 3), got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[2] == 0 or frames.shape[3] == 0:
        raise ValueError(f"empty video, shape {tuple(frames.shape)}")
    frames = as_uint8(frames)
    frames = rearrange(frames, "t c h w -> t h w c")
    if frames.shape[-1] == 1:
        frames = repeat(frames, "t h w 1 -> t h w c", c=3)
    return np.ascontiguousarray(frames)


def as_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 unchanged; bool / float in [0, 1] → uint8 (clipped, rounded); anything else rejected."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating):
        return to_uint8(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    raise ValueError(f"expected uint8 or float in [0, 1] pixels, got dtype {x.dtype}")


def as_viewer_video(video: ArrayLike) -> np.ndarray:
    """Normalise a viewer-side video to contiguous ``uint8 [T, H, W, 3]``.

    Accepts ``[T, H, W, 3]`` / ``[T, H, W, 1]`` / ``[T, H, W]`` (uint8 or float in [0, 1]); a
    channel-first ``[T, C, H, W]`` is recognised when the last axis is not 1 or 3.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        if video.dtype in (torch.bfloat16, torch.float16):
            video = video.float()
        video = video.numpy()
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4:
        raise ValueError(f"expected a video [T, H, W, 3], got shape {tuple(video.shape)}")
    if video.shape[-1] not in (1, 3) and video.shape[1] in (1, 3):
        return to_uint8_frames(video)                       # channel-first [T, C, H, W]
    if video.shape[-1] not in (1, 3):
        raise ValueError(f"expected a video [T, H, W, 3] (or 1 channel), got shape {tuple(video.shape)}")
    if min(video.shape[:3]) == 0:
        raise ValueError(f"empty video, shape {tuple(video.shape)}")
    video = as_uint8(video)
    if video.shape[-1] == 1:
        video = repeat(video, "t h w 1 -> t h w c", c=3)
    return np.ascontiguousarray(video)
