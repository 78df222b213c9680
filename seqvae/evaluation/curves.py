"""Best of N (the SVG protocol's selection rule) and per-timestep metric curves (CSV, PNG)."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor


class BestOfN(NamedTuple):
    curve: Tensor  # [B, T] per-frame metric of the chosen sample
    index: Tensor  # [B] which of the S samples was chosen


def best_of_n(scores: Tensor, higher_is_better: bool) -> BestOfN:
    """The SVG selection rule (Denton & Fergus 2018, §5): best of S samples per sequence.

    ``scores[S, B, T]``: a per-frame metric of every sample (predicted frames only). For
    each sequence the sample with the best mean over T is kept (ties → lowest index); each
    metric selects its own best sample, as in the original protocol. Returns
    ``(curve [B, T], index [B])``.
    """
    if scores.dim() != 3:
        raise ValueError(f"best_of_n: scores must be [S, B, T], got {tuple(scores.shape)}")
    mean = scores.double().mean(2)                                     # [S, B]
    index = (mean if higher_is_better else -mean).argmax(0)            # first maximum on ties
    curve = scores.gather(0, index.view(1, -1, 1).expand(1, *scores.shape[1:])).squeeze(0)
    return BestOfN(curve, index)


def curve_stats(values: Tensor) -> tuple[Tensor, Tensor]:
    """Per-timestep mean and standard error over sequences of ``[B, T]`` → (``[T]``, ``[T]``).

    The standard error is ``std(ddof=1) / sqrt(B)`` (0 when B = 1).
    """
    v = values.detach().double().cpu()
    mean = v.mean(0)
    if v.shape[0] < 2:
        return mean, torch.zeros_like(mean)
    return mean, v.std(0, unbiased=True) / math.sqrt(v.shape[0])


def save_curves(curves: dict[str, Tensor], out_dir: str | os.PathLike, x_offset: int = 0) -> list[Path]:
    """Write per-timestep metric curves: one CSV for all metrics and one PNG per metric.

    ``curves``: name → ``[B, T]`` (all the same T), e.g. the ``curve`` of :func:`best_of_n`.
    ``x_offset``: the time index of column 0 (e.g. the number of context frames, so the
    x axis counts frames of the whole sequence). ``curves.csv`` has a column ``t`` and
    ``<name>_mean``, ``<name>_sem`` (standard error) per metric; ``<name>.png`` plots the
    mean with a ±1 s.e. band (matplotlib's Agg canvas, no display or global backend change).
    Returns the written paths.
    """
    if not curves:
        raise ValueError("save_curves: no curves given")
    lengths = {name: c.shape[-1] for name, c in curves.items()}
    if any(c.dim() != 2 for c in curves.values()) or len(set(lengths.values())) != 1:
        raise ValueError(f"save_curves: every curve must be [B, T] with one T; got "
                         f"{ {n: tuple(c.shape) for n, c in curves.items()} }")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    T = next(iter(lengths.values()))
    steps = [x_offset + t for t in range(T)]
    stats = {name: curve_stats(c) for name, c in curves.items()}

    csv_path = out / "curves.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t"] + [f"{n}_{s}" for n in curves for s in ("mean", "sem")])
        for i, t in enumerate(steps):
            row: list[object] = [t]
            for n in curves:
                row += [f"{float(stats[n][0][i]):.6g}", f"{float(stats[n][1][i]):.6g}"]
            writer.writerow(row)

    paths = [csv_path]
    for name, (mean, sem) in stats.items():
        fig = Figure(figsize=(5, 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        m, s = mean.numpy(), sem.numpy()
        ax.plot(steps, m, marker="o", markersize=3)
        ax.fill_between(steps, m - s, m + s, alpha=0.25)
        ax.set_xlabel("time step")
        ax.set_ylabel(name)
        ax.set_title(f"{name} per time step (n={curves[name].shape[0]}, ±1 s.e.)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png = out / f"{name}.png"
        fig.savefig(png, dpi=120)
        paths.append(png)
    return paths
