"""What a model needs to know about its data, and the batch format every loader yields.

A batch is a dict::

    {"frames": Tensor[B, T, C, H, W] float32 in [0, 1],
     "actions": Tensor[B, T, A] float32            # only for action-conditioned data
     ...}                                           # loaders may add more keys (e.g. "endeffector_pos")

An image data set is the case T = 1. ``actions[:, t]`` is the action taken *after*
observing frame t (so it moves the scene from frame t to frame t + 1).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    channels: int
    height: int
    width: int
    seq_len: int = 1          # frames per training example (1 for images)
    action_dim: int = 0       # 0: no actions

    @property
    def frame_dims(self) -> int:
        return self.channels * self.height * self.width
