"""Generic planning costs on predicted frames (world-specific costs live with their world)."""
from __future__ import annotations

from torch import Tensor

from seqvae.io import frames_to_float


def pixel_distance_to_goal(frames: Tensor, goal_image: Tensor, reduce_time: str = "final") -> Tensor:
    """Mean squared pixel distance of predicted frames to a goal image.

    Args:
        frames: ``[..., T, C, H, W]`` in [0, 1].
        goal_image: ``[C, H, W]``, or ``[..., C, H, W]`` with the frames' leading dims
            (broadcastable), in [0, 1] (uint8 is scaled).
        reduce_time: ``final`` (the last frame only) or ``sum`` (summed over the T frames).
    Returns:
        ``[...]`` costs.
    """
    if frames.dim() < 4:
        raise ValueError(f"frames must be [..., T, C, H, W], got {tuple(frames.shape)}")
    goal = frames_to_float(goal_image)
    if goal.shape[-3:] != frames.shape[-3:]:
        raise ValueError(f"goal image {tuple(goal.shape)} does not match frames {tuple(frames.shape[-3:])}")
    per_frame = ((frames.float() - goal.to(frames.device).unsqueeze(-4)) ** 2).mean(dim=(-3, -2, -1))   # (..., T)
    if reduce_time == "final":
        return per_frame[..., -1]
    if reduce_time == "sum":
        return per_frame.sum(-1)
    raise ValueError(f"reduce_time must be 'final' or 'sum', got {reduce_time!r}")
