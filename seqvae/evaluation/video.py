"""Video evaluation in the SVG protocol (Denton & Fergus 2018, §4): for each test sequence
draw N futures given the context frames, keep for each metric the sample whose mean over
the predicted frames is best, and report per-frame curves of PSNR, SSIM and (optionally)
LPIPS of those best samples next to the "copy the last context frame" baseline.

Futures are drawn once per batch through :func:`seqvae.control.rollout.rollout` and handed
to every metric — the frame metrics, FVD, FID and those a data set registers
(:func:`seqvae.registry.video_metrics_for`) — in chunks of samples, so that memory does not
grow with the number of samples: each metric is a :class:`VideoMetric` that sees a batch's
sequences (``start_batch``), then its samples chunk by chunk (``update``), then
``end_batch``, and keeps only running figures (running best of N, sums). The latent noise
of all N samples of a batch is drawn up front, so the futures do not depend on the chunk size.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.control.rollout import rollout
from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.evaluation.curves import save_curves
from seqvae.evaluation.metrics import psnr, ssim
from seqvae.io import to_uint8
from seqvae.models.base import VideoPredictor, eval_mode
from seqvae.progress import Bar
from seqvae.threads import governed, loop_governor

MAX_DB = 100.0                     # PSNR of (near-)identical frames is capped so that means stay finite
SAMPLE_CHUNK_BYTES = 128 << 20     # predicted frames handed to the metrics at once (float32)
ROLLOUT_BUDGET_BYTES = 512 << 20   # the model's working memory while drawing them


class VideoMetric:
    """A metric fed the drawn futures batch by batch, in chunks of samples.

    For every batch: ``start_batch(batch, n_ctx, n_future)`` (frames float in [0, 1],
    ``[b, T, C, H, W]``), then ``update(samples, first)`` for consecutive chunks
    ``samples[s, b, n_future, C, H, W]`` in [0, 1] holding samples ``first … first + s − 1``,
    then ``end_batch()``. ``summary()`` gives JSON-safe figures, ``report()`` lines to print.
    """

    name: str = "metric"

    def start_batch(self, batch: dict[str, Tensor], n_ctx: int, n_future: int) -> None:
        pass

    def update(self, samples: Tensor, first: int) -> None:
        pass

    def end_batch(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def report(self) -> list[str]:
        return []


def _check_horizon(model: VideoPredictor, n_ctx: int | None, n_future: int | None) -> tuple[int, int]:
    n_ctx = model.n_past if n_ctx is None else n_ctx
    n_future = model.n_eval if n_future is None else n_future
    if n_ctx < 1 or n_future < 1:
        raise ValueError(f"need at least one context and one predicted frame, got {n_ctx} and {n_future}")
    return n_ctx, n_future


def eval_batches(model: VideoPredictor, dataset: Dataset, n_sequences: int, batch_size: int, device: torch.device,
                 n_ctx: int | None = None, n_future: int | None = None, exact: bool = False
                 ) -> Iterator[tuple[dict[str, Tensor], int]]:
    """Yield ``(batch, n_future)`` for the first ``n_sequences`` sequences of an evaluation
    split: the batch on ``device`` (frames float in [0, 1]), every tensor cut to the
    sequences still wanted; ``n_future`` = frames to predict after the ``n_ctx`` context
    frames (default: the model's ``n_past``; at most ``n_future``, default ``model.n_eval``).
    With ``exact`` the sequences must hold ``n_ctx + n_future`` frames (a fixed protocol)."""
    n_ctx, wanted = _check_horizon(model, n_ctx, n_future)
    seen = 0
    for batch in eval_loader(dataset, batch_size):
        if seen >= n_sequences:
            return
        batch = {k: v[: n_sequences - seen] if isinstance(v, Tensor) else v
                 for k, v in batch_to_device(batch, device).items()}
        length = batch["frames"].shape[1]
        if exact and length < n_ctx + wanted:
            raise ValueError(f"this evaluation needs test sequences of {n_ctx + wanted} frames ({n_ctx} context + "
                             f"{wanted} predicted); the split's have {length} (longer test sequences may be "
                             f"available, e.g. data.eval_seq_len={n_ctx + wanted})")
        n_future = min(wanted, length - n_ctx)
        if n_future < 1:
            raise ValueError(f"test sequences have {length} frames; need more than the {n_ctx} context frames")
        yield batch, n_future
        seen += batch["frames"].shape[0]
    if seen == 0:
        raise ValueError("the evaluation split is empty")


def _context(model: VideoPredictor, batch: dict[str, Tensor], n_ctx: int, n_future: int
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    frames = batch["frames"]
    actions = context_actions = None
    if model.action_dim:
        recorded = batch["actions"]
        context_actions = recorded[:, : n_ctx - 1]
        actions = rearrange(recorded[:, n_ctx - 1: n_ctx - 1 + n_future], "b t a -> b 1 t a")
    return frames[:, :n_ctx], actions, context_actions


def future_chunks(model: VideoPredictor, batch: dict[str, Tensor], n_future: int, n_samples: int,
                  generator: torch.Generator, precision: str = "auto", n_ctx: int | None = None,
                  chunk: int | None = None) -> Iterator[tuple[int, Tensor]]:
    """``n_samples`` futures of every sequence of ``batch`` after its first ``n_ctx`` frames
    (default ``model.n_past``; under the recorded actions for an action-conditioned model),
    yielded as ``(first, samples[s, B, n_future, C, H, W])`` float in [0, 1], ``chunk``
    samples at a time (default: about :data:`SAMPLE_CHUNK_BYTES`). The latent noise of all
    samples is drawn from ``generator`` first, so the samples do not depend on ``chunk``."""
    n_ctx = model.n_past if n_ctx is None else n_ctx
    context, actions, context_actions = _context(model, batch, n_ctx, n_future)
    b = context.shape[0]
    if chunk is None:
        per_sample = b * n_future * math.prod(context.shape[2:]) * 4
        chunk = max(1, SAMPLE_CHUNK_BYTES // per_sample)
    noise = None
    if model.z_dim:
        gen_device = generator.device if generator is not None else context.device
        noise = torch.randn(b, n_samples, n_ctx - 1 + n_future, model.z_dim, generator=generator,
                            device=gen_device).to(context.device)
    for first in range(0, n_samples, chunk):
        s = min(chunk, n_samples - first)
        out = rollout(model, context, actions, s, generator=generator, noise=None if noise is None else
                      noise[:, first:first + s], horizon=None if actions is not None else n_future,
                      context_actions=context_actions, precision=precision, memory_budget=ROLLOUT_BUDGET_BYTES)
        yield first, rearrange(out.frames, "b 1 s t c h w -> s b t c h w")


def draw_futures(model: VideoPredictor, batch: dict[str, Tensor], n_future: int, n_samples: int,
                 generator: torch.Generator, precision: str = "auto", n_ctx: int | None = None) -> Tensor:
    """All ``n_samples`` futures at once, ``[S, B, n_future, C, H, W]`` (for a few sequences, e.g.
    to render them; evaluation streams them with :func:`future_chunks`)."""
    return torch.cat([c for _, c in future_chunks(model, batch, n_future, n_samples, generator, precision, n_ctx)])


@torch.no_grad()
def run_video_metrics(model: VideoPredictor, dataset: Dataset, metrics: Sequence[VideoMetric], *, n_samples: int,
                      n_sequences: int, batch_size: int = 8, device: torch.device, precision: str = "auto",
                      seed: int = 0, n_ctx: int | None = None, n_future: int | None = None, exact: bool = False,
                      chunk: int | None = None, progress: Bar | None = None) -> dict[str, int]:
    """Draw ``n_samples`` futures of each of the first ``n_sequences`` sequences once and feed
    every metric (see :class:`VideoMetric`); one generator seeded with ``seed`` serves every
    batch. Returns what was run: sequences, samples, context and predicted frames.
    ``progress`` is told of every batch, with the sequences done and what metrics count of
    their own work (``progress_figures(total_sequences)``, e.g. the clips I3D embedded for FVD)."""
    if n_samples < 1 or n_sequences < 1:
        raise ValueError(f"need at least one sample and one sequence, got {n_samples} samples, {n_sequences} sequences")
    n_ctx, _ = _check_horizon(model, n_ctx, n_future)
    generator = torch.Generator(device=device).manual_seed(seed)
    governor = loop_governor(device)   # CPU threads chosen from batch times (seqvae.threads)
    seen, horizon = 0, 0
    with eval_mode(model):
        for batch, horizon in eval_batches(model, dataset, n_sequences, batch_size, device, n_ctx, n_future, exact):
            with governed(governor):
                for metric in metrics:
                    metric.start_batch(batch, n_ctx, horizon)
                for first, samples in future_chunks(model, batch, horizon, n_samples, generator, precision, n_ctx,
                                                    chunk):
                    for metric in metrics:
                        metric.update(samples, first)
                for metric in metrics:
                    metric.end_batch()
            seen += batch["frames"].shape[0]
            if progress is not None:
                figures: dict[str, Any] = {"sequences": f"{seen}/{n_sequences}"}
                for metric in metrics:
                    counted = getattr(metric, "progress_figures", None)
                    if counted is not None:
                        figures.update(counted(n_sequences))
                progress.update(1, **figures)
    return {"sequences": seen, "samples": n_samples, "context_frames": n_ctx, "predicted_frames": horizon}


# ---------------------------------------------------------------------------------------------
# Best-of-N frame metrics
# ---------------------------------------------------------------------------------------------


class _RunningBest:
    """Best of N per sequence over chunks of samples (ties → the lowest sample index), and the
    per-timestep mean and spread of every sample."""

    def __init__(self, higher_is_better: bool) -> None:
        self.higher = higher_is_better
        self.curves: list[Tensor] = []
        self.indices: list[Tensor] = []
        self.total = self.total_sq = None
        self.count = 0

    def start(self) -> None:
        self.best_score = self.best_curve = self.best_index = None

    def update(self, values: Tensor, first: int) -> None:
        """``values[s, b, T]`` of samples ``first …``."""
        values = values.float().cpu()
        mean = values.double().mean(2)                                       # [s, b]
        score = mean if self.higher else -mean
        top, idx = score.max(0)                                              # first maximum on ties
        curve = values.gather(0, idx.view(1, -1, 1).expand(1, *values.shape[1:])).squeeze(0)
        if self.best_score is None:
            self.best_score, self.best_curve, self.best_index = top, curve, idx + first
        else:
            better = top > self.best_score                                   # strictly: earlier samples win ties
            self.best_score = torch.where(better, top, self.best_score)
            self.best_curve = torch.where(better[:, None], curve, self.best_curve)
            self.best_index = torch.where(better, idx + first, self.best_index)
        v = values.double()
        s = v.sum((0, 1))
        q = (v * v).sum((0, 1))
        self.total = s if self.total is None else self.total + s
        self.total_sq = q if self.total_sq is None else self.total_sq + q
        self.count += values.shape[0] * values.shape[1]

    def end(self) -> None:
        self.curves.append(self.best_curve)
        self.indices.append(self.best_index)

    def spread(self) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation over every sample of every sequence, per time step."""
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0)
        return mean, var.sqrt()


class FrameMetrics(VideoMetric):
    """Best-of-N PSNR, SSIM (and LPIPS) per predicted frame, each metric choosing its own best
    sample by its mean over the predicted frames (SVG protocol), the copy-last-frame baseline
    and the spread of all samples. Streaming: memory does not grow with the number of samples."""

    name = "frames"

    def __init__(self, lpips=None) -> None:
        self.fns = {"psnr": (lambda p, t: psnr(p, t, max_db=MAX_DB), True), "ssim": (ssim, True)}
        if lpips is not None:
            self.fns["lpips"] = (lpips, False)
        self.best = {name: _RunningBest(higher) for name, (_, higher) in self.fns.items()}
        self.copy_last: dict[str, list[Tensor]] = {name: [] for name in self.fns}

    def start_batch(self, batch: dict[str, Tensor], n_ctx: int, n_future: int) -> None:
        frames = batch["frames"]
        self.truth = frames[:, n_ctx:n_ctx + n_future]
        last = repeat(frames[:, n_ctx - 1], "b c h w -> b t c h w", t=n_future)
        for name, (fn, _) in self.fns.items():
            self.copy_last[name].append(fn(last, self.truth).float().cpu())
            self.best[name].start()

    def update(self, samples: Tensor, first: int) -> None:
        target = self.truth.expand(samples.shape[0], *self.truth.shape)
        for name, (fn, _) in self.fns.items():
            self.best[name].update(fn(samples, target), first)

    def end_batch(self) -> None:
        for best in self.best.values():
            best.end()

    def curves(self) -> dict[str, Tensor]:
        """name → ``[N, T]``: best-of-N curves and ``copy_last_<name>``."""
        out = {name: torch.cat(best.curves) for name, best in self.best.items()}
        out.update({f"copy_last_{name}": torch.cat(c) for name, c in self.copy_last.items()})
        return out

    def spreads(self) -> dict[str, tuple[Tensor, Tensor]]:
        return {name: best.spread() for name, best in self.best.items()}

    def best_index(self, name: str = "psnr") -> Tensor:
        return torch.cat(self.best[name].indices)

    def summary(self) -> dict[str, float]:
        out = {f"{name}_mean": float(c.mean()) for name, c in self.curves().items()}
        out.update({f"{name}_all_samples_mean": float(mean.mean()) for name, (mean, _) in self.spreads().items()})
        return out


class FrameFID(VideoMetric):
    """Per-frame FID (the σ-VAE paper's BAIR column): every predicted frame of the first (a
    random) sample of each sequence against the true frames at the same time steps."""

    name = "fid"

    def __init__(self, extractor: torch.nn.Module, device: torch.device, batch_size: int = 50) -> None:
        self.extractor, self.device, self.batch_size = extractor, device, batch_size
        self.fake: list[Tensor] = []
        self.real: list[Tensor] = []

    def _features(self, frames: Tensor) -> Tensor:
        from seqvae.evaluation.fid import inception_features

        flat = to_uint8(rearrange(frames, "b t c h w -> (b t) c h w")).cpu()
        return inception_features(flat, self.extractor, self.batch_size, self.device).float()

    def start_batch(self, batch: dict[str, Tensor], n_ctx: int, n_future: int) -> None:
        self.real.append(self._features(batch["frames"][:, n_ctx:n_ctx + n_future]))

    def update(self, samples: Tensor, first: int) -> None:
        if first == 0:
            self.fake.append(self._features(samples[0]))

    def summary(self) -> dict[str, float]:
        from seqvae.evaluation.fid import frechet_distance_features

        return {"fid": frechet_distance_features(torch.cat(self.fake), torch.cat(self.real)),
                "fid_frames": int(sum(f.shape[0] for f in self.fake))}


@dataclass
class VideoResult:
    curves: dict[str, Tensor] = field(default_factory=dict)   # name -> [num_sequences, n_future]
    best_psnr_index: Tensor | None = None                     # [num_sequences]
    extra: dict[str, Any] = field(default_factory=dict)       # the other metrics' summaries, by name
    spread: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # name -> per-step mean, std of all samples
    counts: dict[str, int] = field(default_factory=dict)      # sequences, samples, context/predicted frames

    def summary(self) -> dict[str, float]:
        return {f"{name}_mean": float(curve.mean()) for name, curve in self.curves.items()}


@torch.no_grad()
def evaluate_video(model: VideoPredictor, dataset: Dataset, *, n_samples: int = 100, n_sequences: int = 256,
                   batch_size: int = 8, device: torch.device, precision: str = "auto", lpips=None,
                   metrics: Sequence[VideoMetric] = (), out_dir: str | Path | None = None, seed: int = 0,
                   n_ctx: int | None = None, n_future: int | None = None, exact: bool = False,
                   frame_metrics: bool = True, chunk: int | None = None, progress: Bar | None = None) -> VideoResult:
    """Best-of-N PSNR/SSIM(/LPIPS) curves over the first ``n_sequences`` test sequences, the
    copy-last-frame baseline, and ``metrics`` (FVD, FID, a data set's own) on the same samples.
    ``n_ctx``/``n_future`` default to the model's ``n_past``/``n_eval``; ``out_dir`` receives
    ``curves.csv`` and one plot per metric (model and baseline together)."""
    frames = FrameMetrics(lpips) if frame_metrics else None
    everything = ([frames] if frames is not None else []) + list(metrics)
    counts = run_video_metrics(model, dataset, everything, n_samples=n_samples, n_sequences=n_sequences,
                               batch_size=batch_size, device=device, precision=precision, seed=seed, n_ctx=n_ctx,
                               n_future=n_future, exact=exact, chunk=chunk, progress=progress)
    result = VideoResult(extra={m.name: m.summary() for m in metrics}, counts=counts)
    if frames is not None:
        result.curves, result.best_psnr_index, result.spread = frames.curves(), frames.best_index(), frames.spreads()
        if out_dir is not None:
            save_curves(result.curves, out_dir, first_frame=counts["context_frames"] + 1, spread=result.spread,
                        samples=n_samples)
    return result
