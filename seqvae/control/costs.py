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


class GoalImageCost:
    """Distance of the last predicted frame to the environment's goal image: a cost that
    needs no knowledge of the world (:class:`~seqvae.control.environment.FrameCost`).

    ``metric="mse"``: the mean squared pixel difference (:func:`pixel_distance_to_goal`);
    ``metric="ssim"``: ``1 − SSIM`` (pytorch-msssim, 11-pixel Gaussian window), which weighs
    structure over flat colour.
    """

    METRICS = ("mse", "ssim")

    def __init__(self, metric: str = "mse") -> None:
        if metric not in self.METRICS:
            raise ValueError(f"goal-image metric must be one of {', '.join(self.METRICS)}, got {metric!r}")
        self.metric = metric
        self.goal: Tensor | None = None

    def reset(self, env) -> None:
        self.goal = frames_to_float(env.goal_image())

    def observe(self, frame: Tensor) -> None:
        """The goal image does not change with what is observed."""

    def __call__(self, frames: Tensor, actions: Tensor) -> Tensor:
        if self.goal is None:
            raise ValueError("GoalImageCost needs reset(env) before scoring "
                             "(the goal image comes from the environment)")
        if self.metric == "mse":
            return pixel_distance_to_goal(frames, self.goal)
        from pytorch_msssim import ssim

        last = frames[:, -1].float()
        goal = self.goal.to(last.device).expand_as(last)
        return 1.0 - ssim(last, goal, data_range=1.0, size_average=False)
