"""The common prediction figure: ground truth | best sample | the other samples."""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from seqvae.render.arrays import ArrayLike, PathLike
from seqvae.render.panels import Panel, compose
from seqvae.render.writers import write_video


def prediction_panels(truth: ArrayLike, samples: ArrayLike, context: int, best_index: int | None = None,
                      metrics: Mapping[str, ArrayLike] | None = None, max_samples: int | None = None,
                      prefix: str = "", truth_label: str = "ground truth") -> list[Panel]:
    """Panels of one sequence: ground truth, the best sample (when ``best_index`` is given)
    and the other samples (at most ``max_samples`` panels of samples in all).

    Args:
        truth: ``[T, C, H, W]``; its first ``context`` frames are the observed ones.
        samples: ``[S, T', C, H, W]`` predicted videos (their first ``context`` frames are
            taken to be the given context, as in SVG's rollouts).
        best_index: the sample to show first, labelled "best"; ``None`` keeps the order.
        metrics: per-sample, per-frame numbers ``{"PSNR": [S, T']}``; a length of
            ``T' - context`` is aligned to the predicted frames. Shown under each sample.
        prefix: put before the ground truth's label (e.g. ``"seq 3: "``).
        truth_label: the ground truth's label after ``prefix`` (a short one keeps a prefixed
            label inside a small cell: ``"seq 3: truth"``).
    """
    if samples.ndim != 5:
        raise ValueError(f"expected samples [S, T, C, H, W], got shape {tuple(samples.shape)}")
    s, t_samples = samples.shape[:2]
    if best_index is not None and not 0 <= best_index < s:
        raise ValueError(f"best_index {best_index} out of range for {s} samples")

    def sample_metrics(i: int) -> dict[str, list[float]] | None:
        if not metrics:
            return None
        out = {}
        for name, values in metrics.items():
            row = [float(v) for v in np.asarray(torch.as_tensor(values).detach().cpu().float())[i]]
            if len(row) == t_samples - context and context > 0:
                row = [math.nan] * context + row
            out[name] = row
        return out

    order = list(range(s))
    if best_index is not None:
        order.remove(best_index)
        order.insert(0, best_index)
    panels = [Panel(truth, label=f"{prefix}{truth_label}", context=context, ground_truth=True)]
    for i in order[:max_samples]:
        label = f"best of {s} ({i})" if i == best_index else f"sample {i}"
        panels.append(Panel(samples[i], label=label, context=context, metrics=sample_metrics(i)))
    return panels


def render_prediction(
    path: PathLike,
    truth: ArrayLike,
    samples: ArrayLike,
    context: int,
    best_index: int | None = None,
    metrics: Mapping[str, ArrayLike] | None = None,
    scale: int = 2,
    fps: float = 8,
) -> Path:
    """Render ground truth | best sample | the other samples (:func:`prediction_panels`),
    labelled, context marked, to ``.mp4``, ``.gif`` or ``.png`` (a strip of composed frames).
    Returns the path written."""
    panels = prediction_panels(truth, samples, context, best_index, metrics)
    return write_video(path, compose(panels, scale=scale), fps=fps)
