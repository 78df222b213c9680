"""The learning rate of each training step (``train.lr_schedule``).

``constant``: ``train.lr`` throughout. ``cosine``: half a cosine from ``train.lr`` down to
``train.lr * train.lr_final_fraction`` at ``train.steps``. Either starts with
``train.lr_warmup_steps`` steps of linear warm-up from ``lr / lr_warmup_steps`` (useful when
a run starts from trained weights with a fresh Adam, ``train.init_from``).

The rate is a pure function of the step, so a resumed run continues the schedule exactly.
"""
from __future__ import annotations

import math

from seqvae.config import LR_SCHEDULES as SCHEDULES


def learning_rate(step: int, lr: float, steps: int, schedule: str = "constant", warmup_steps: int = 0,
                  final_fraction: float = 0.1) -> float:
    """The rate for the update that takes the run from ``step`` to ``step + 1``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress)))
