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


UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS (lower is better)"}
BASELINE = "copy_last_"


def save_curves(curves: dict[str, Tensor], out_dir: str | os.PathLike, first_frame: int = 1,
                spread: dict[str, tuple[Tensor, Tensor]] | None = None, samples: int | None = None) -> list[Path]:
    """Write per-timestep metric curves: one CSV for all of them and one PNG per metric.

    ``curves``: name → ``[B, T]`` (all the same T), e.g. the ``curve`` of :func:`best_of_n`;
    a curve ``copy_last_<name>`` is the baseline of ``<name>`` and is drawn in the same plot.
    ``first_frame``: the frame number of column 0, counted from 1 over the whole sequence as
    the rendered videos count frames (2 context frames → the first predicted frame is 3).
    ``spread``: name → per-step (mean, std) over every sample, drawn as a light band behind the
    best-of-N curve; ``samples``: N, for the legend.

    ``curves.csv`` has a column ``frame`` and ``<name>_mean``, ``<name>_sem`` (standard error
    over sequences) per curve, plus ``<name>_samples_mean``, ``<name>_samples_std``;
    ``<name>.png`` plots, with ±1 s.e. bands, the model's best of N and the baseline, on
    integer frame numbers with the metric's unit (matplotlib's Agg canvas, no global state).
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
    from matplotlib.ticker import MaxNLocator

    spread = spread or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    T = next(iter(lengths.values()))
    frames = [first_frame + t for t in range(T)]
    stats = {name: curve_stats(c) for name, c in curves.items()}

    csv_path = out / "curves.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame"] + [f"{n}_{s}" for n in curves for s in ("mean", "sem")]
                        + [f"{n}_samples_{s}" for n in spread for s in ("mean", "std")])
        for i, frame in enumerate(frames):
            row: list[object] = [frame]
            for n in curves:
                row += [f"{float(stats[n][0][i]):.6g}", f"{float(stats[n][1][i]):.6g}"]
            for n, (mean, std) in spread.items():
                row += [f"{float(mean[i]):.6g}", f"{float(std[i]):.6g}"]
            writer.writerow(row)

    paths = [csv_path]
    best_label = f"model, best of {samples}" if samples else "model"
    for name in [n for n in curves if not n.startswith(BASELINE)]:
        fig = Figure(figsize=(6, 3.8))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if name in spread:
            mean, std = (x.double().cpu().numpy() for x in spread[name])
            ax.fill_between(frames, mean - std, mean + std, color="tab:blue", alpha=0.12, linewidth=0,
                            label=f"all {samples or ''} samples: mean ± 1 s.d.".replace("  ", " "))
        for key, label, color in ((name, best_label, "tab:blue"), (BASELINE + name, "copy last context frame",
                                                                    "tab:orange")):
            if key not in stats:
                continue
            m, s = (x.numpy() for x in stats[key])
            ax.plot(frames, m, marker="o", markersize=3, color=color, label=f"{label} (±1 s.e.)")
            ax.fill_between(frames, m - s, m + s, color=color, alpha=0.3, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("frame (numbered as in the video; context frames come first)")
        ax.set_ylabel(UNITS.get(name, name))
        ax.set_title(f"{UNITS.get(name, name).split(' (')[0]} per predicted frame, {curves[name].shape[0]} sequences")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        png = out / f"{name}.png"
        fig.savefig(png, dpi=120)
        paths.append(png)
    return paths
