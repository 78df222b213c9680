"""What a model needs to know about its data, and the batch format every loader yields.

A data-set item is a dict::

    {"frames": Tensor[T, C, H, W] uint8,        # 0..255; the trainer makes floats in [0, 1]
     "actions": Tensor[T, A] float32,          # only for action-conditioned data
     ...}                                       # loaders may add more keys (e.g. "endeffector_pos")

and a batch stacks them: ``frames[B, T, C, H, W]``. An image data set is the case T = 1.
``actions[:, t]`` is the action taken *after* observing frame t (it moves the scene from
frame t to frame t + 1).

Data-set factories are registered in ``seqvae.registry.DATASETS`` as
``factory(cfg, split) -> Dataset`` with ``split`` in {"train", "val", "test"}; the
returned data set has a ``spec: DataSpec`` attribute.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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


def batch_to_device(batch: dict[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    """Move a batch to ``device``; uint8 frames become float32 in [0, 1] there."""
    out = {}
    for key, value in batch.items():
        if not isinstance(value, Tensor):
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if key == "frames" and value.dtype == torch.uint8:
            value = value.float().div_(255.0)
        out[key] = value
    return out
