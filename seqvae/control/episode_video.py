"""An MP4 of closed-loop episodes: one row per planning method, the episode's view (the
goal as the world draws it) with the distance to the goal, and the futures the executed
plan predicted."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqvae import render
from seqvae.control.mpc import EpisodeRecord


def render_episode(path: str | Path, records: dict[str, EpisodeRecord], threshold: float,
                   title: str = "", scale: int = 3, fps: float = 6, offsets: Sequence[int] = (1, 5, 10)) -> Path:
    """One MP4 of an episode under several methods, one row per method: the episode's view
    (the distance to the goal under it) and, for planning methods, the
    future the plan being executed predicts ``offsets`` steps ahead of the current step."""
    rows = []
    ordered = [(name, records[name]) for name in row_order(records)]
    for i, (name, rec) in enumerate(ordered):
        dist = [float(d) for d in rec.distances]
        verdict = "reached" if dist[-1] < threshold else "missed"
        panels = [render.Panel(rec.frames, label=f"{name}: {verdict}", metrics={"d": dist})]
        if rec.plan_frames:
            horizon = rec.plan_frames[0].shape[0]
            panels += [render.Panel(_plan_view(rec, off), label=f"plan +{off}", context=0)
                       for off in offsets if off <= horizon]
        rows.append(render.compose(panels, scale=scale, title=title if i == 0 else None, frame_counter=i == 0))
    width = max(r.shape[2] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, 0), (0, width - r.shape[2]), (0, 0)), constant_values=255) for r in rows]
    return render.write_video(path, np.concatenate(rows, axis=1), fps=fps)


def row_order(records: dict[str, EpisodeRecord]) -> list[str]:
    """The methods in the order of :func:`render_episode`'s rows, top to bottom: planning
    methods first (their rows are the widest and carry the title), each group in the order
    given; what a page describing the video must say."""
    return sorted(records, key=lambda name: not records[name].plan_frames)


def _plan_view(rec: EpisodeRecord, offset: int) -> Tensor:
    """Per step ``t``: frame ``t + offset`` as predicted by the latest plan, ``[steps + 1, 3, H, W]``."""
    steps = rec.frames.shape[0]
    out = []
    for t in range(steps):
        j = max(i for i, s in enumerate(rec.plan_steps) if s <= t) if any(s <= t for s in rec.plan_steps) else 0
        plan = rec.plan_frames[j]
        k = min(t - rec.plan_steps[j] + offset - 1, plan.shape[0] - 1)
        out.append(plan[max(k, 0)])
    return torch.stack(out)
