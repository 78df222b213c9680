"""Video evaluation in the SVG protocol (Denton & Fergus 2018, §4): for each test sequence
draw N futures given the context frames, keep for each metric the sample whose mean over
the predicted frames is best, and report per-frame curves of PSNR, SSIM and (optionally)
LPIPS of those best samples next to the "copy the last context frame" baseline.

Futures are drawn once per batch (:func:`sampled_batches`, through
:func:`seqvae.control.rollout.rollout`) and handed to every metric, including those a
data set registers (:func:`seqvae.registry.video_metrics_for`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from einops import rearrange, repeat
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.control.rollout import rollout
from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.evaluation.curves import best_of_n, save_curves
from seqvae.evaluation.metrics import psnr, ssim
from seqvae.io import to_uint8
from seqvae.models.base import VideoPredictor, eval_mode

MAX_DB = 100.0  # PSNR of (near-)identical frames is capped so that means stay finite


class VideoMetric(Protocol):
    """A metric fed the drawn futures batch by batch."""

    name: str  # prefix of its figures in JSON output

    def update(self, batch: dict[str, Tensor], samples: Tensor, n_ctx: int, n_future: int) -> None:
        """``samples[S, B, n_future, C, H, W]`` in [0, 1] for the batch's sequences."""

    def summary(self) -> dict[str, Any]:
        """JSON-safe figures over every batch seen."""

    def report(self) -> list[str]:
        """The figures as lines for a person to read."""


def draw_futures(model: VideoPredictor, batch: dict[str, Tensor], n_future: int, n_samples: int,
                 generator: torch.Generator, precision: str = "auto") -> Tensor:
    """``n_samples`` futures of every sequence of ``batch`` after its first ``model.n_past``
    frames (under the recorded actions for an action-conditioned model):
    ``[S, B, n_future, C, H, W]`` float in [0, 1]."""
    n_ctx = model.n_past
    frames = batch["frames"]
    actions = context_actions = None
    if model.action_dim:
        recorded = batch["actions"]
        context_actions = recorded[:, : n_ctx - 1]
        actions = rearrange(recorded[:, n_ctx - 1: n_ctx - 1 + n_future], "b t a -> b 1 t a")
    out = rollout(model, frames[:, :n_ctx], actions, n_samples, generator=generator,
                  horizon=None if actions is not None else n_future, context_actions=context_actions,
                  precision=precision)
    return rearrange(out.frames, "b 1 s t c h w -> s b t c h w")


def eval_batches(model: VideoPredictor, dataset: Dataset, n_sequences: int, batch_size: int,
                 device: torch.device) -> Iterator[tuple[dict[str, Tensor], int]]:
    """Yield ``(batch, n_future)`` for the first ``n_sequences`` sequences of an evaluation
    split: the batch on ``device`` (frames float in [0, 1]), every tensor cut to the
    sequences still wanted; ``n_future`` = frames to predict after the context."""
    n_ctx = model.n_past
    seen = 0
    for batch in eval_loader(dataset, batch_size):
        if seen >= n_sequences:
            return
        batch = {k: v[: n_sequences - seen] if isinstance(v, Tensor) else v
                 for k, v in batch_to_device(batch, device).items()}
        n_future = min(model.n_eval, batch["frames"].shape[1] - n_ctx)
        if n_future < 1:
            raise ValueError(f"test sequences have {batch['frames'].shape[1]} frames; "
                             f"need more than the {n_ctx} context frames")
        yield batch, n_future
        seen += batch["frames"].shape[0]
    if seen == 0:
        raise ValueError("the evaluation split is empty")


def sampled_batches(model: VideoPredictor, dataset: Dataset, *, n_samples: int, n_sequences: int, batch_size: int,
                    device: torch.device, precision: str = "auto", seed: int = 0
                    ) -> Iterator[tuple[dict[str, Tensor], Tensor, int]]:
    """Yield ``(batch, samples [S, b, n_future, C, H, W], n_future)`` over the first
    ``n_sequences`` sequences; one generator seeded with ``seed`` serves every batch."""
    if n_samples < 1 or n_sequences < 1:
        raise ValueError(f"need at least one sample and one sequence, got {n_samples} samples, {n_sequences} sequences")
    generator = torch.Generator(device=device).manual_seed(seed)
    for batch, n_future in eval_batches(model, dataset, n_sequences, batch_size, device):
        yield batch, draw_futures(model, batch, n_future, n_samples, generator, precision), n_future


@dataclass
class VideoResult:
    curves: dict[str, Tensor] = field(default_factory=dict)   # name -> [num_sequences, n_future]
    best_psnr_index: Tensor | None = None                     # [num_sequences]
    extra: dict[str, Any] = field(default_factory=dict)       # the data set's own metrics' summaries

    def summary(self) -> dict[str, float]:
        return {f"{name}_mean": float(curve.mean()) for name, curve in self.curves.items()}


@torch.no_grad()
def evaluate_video(model: VideoPredictor, dataset: Dataset, *, n_samples: int = 100, n_sequences: int = 256,
                   batch_size: int = 8, device: torch.device, precision: str = "auto", lpips=None,
                   metrics: Sequence[VideoMetric] = (), out_dir: str | Path | None = None,
                   seed: int = 0) -> VideoResult:
    """Best-of-N PSNR/SSIM(/LPIPS) curves over the first ``n_sequences`` test sequences,
    the copy-last-frame baseline, and ``metrics`` (e.g. a data set's own) on the same samples."""
    n_ctx = model.n_past
    collected: dict[str, list[Tensor]] = {}
    best_index = []
    with eval_mode(model):
        for batch, samples, n_future in sampled_batches(model, dataset, n_samples=n_samples, n_sequences=n_sequences,
                                                        batch_size=batch_size, device=device, precision=precision,
                                                        seed=seed):
            frames = batch["frames"]
            truth = frames[:, n_ctx:n_ctx + n_future]
            target = repeat(truth, "b t c h w -> s b t c h w", s=n_samples)
            per_metric = {"psnr": (psnr(samples, target, max_db=MAX_DB), True), "ssim": (ssim(samples, target), True)}
            if lpips is not None:
                per_metric["lpips"] = (lpips(samples, target), False)
            for name, (values, higher) in per_metric.items():
                curve, index = best_of_n(values, higher)
                collected.setdefault(name, []).append(curve.cpu())
                if name == "psnr":
                    best_index.append(index.cpu())
            last = repeat(frames[:, n_ctx - 1], "b c h w -> b t c h w", t=n_future)
            collected.setdefault("copy_last_psnr", []).append(psnr(last, truth, max_db=MAX_DB).cpu())
            collected.setdefault("copy_last_ssim", []).append(ssim(last, truth).cpu())
            for metric in metrics:
                metric.update(batch, samples, n_ctx, n_future)
    result = VideoResult({k: torch.cat(v) for k, v in collected.items()}, torch.cat(best_index),
                         {m.name: m.summary() for m in metrics})
    if out_dir is not None:
        save_curves(result.curves, out_dir, x_offset=n_ctx)
    return result


@torch.no_grad()
def video_fid(model: VideoPredictor, dataset: Dataset, *, n_sequences: int = 256, batch_size: int = 8,
              device: torch.device, precision: str = "auto", weights_path: str | None = None, seed: int = 0) -> float:
    """Per-frame FID (the paper's BAIR column): every predicted frame of one prior sample
    per test sequence against the true frames at the same time steps."""
    from seqvae.evaluation.fid import compute_fid

    fake, real = [], []
    n_ctx = model.n_past
    for batch, samples, n_future in sampled_batches(model, dataset, n_samples=1, n_sequences=n_sequences,
                                                    batch_size=batch_size, device=device, precision=precision,
                                                    seed=seed):
        fake.append(to_uint8(rearrange(samples[0], "b t c h w -> (b t) c h w")).cpu())
        real.append(to_uint8(rearrange(batch["frames"][:, n_ctx:n_ctx + n_future], "b t c h w -> (b t) c h w")).cpu())
    return compute_fid(torch.cat(fake), torch.cat(real), weights_path=weights_path, device=device)
