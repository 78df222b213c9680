"""Evaluation shared by the trainer and ``seqvae eval``: the −log p bound on a split.

The bound is reported in nats per example (the paper's "−log p") and in bits per
dimension, with its NLL and KL parts and the head's σ / effective β. Heads in eval mode
use their evaluation state (the optimal-σ head its EMA, App. C). Evaluation runs under a
forked RNG so it never disturbs the training stream (resume stays exact).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.data import Dataset

from seqvae import amp, dist
from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.models.base import SequenceVAE, eval_mode
from seqvae.progress import Bar


def check_batch(model: SequenceVAE, frames: torch.Tensor) -> None:
    """Clear error when data does not match the model's frame shape."""
    spec = model.spec
    expected = (spec.channels, spec.height, spec.width)
    if tuple(frames.shape[2:]) != expected:
        raise ValueError(
            f"the data gives frames of shape {tuple(frames.shape[2:])} (C, H, W) "
            f"but the model was built for {expected}; "
            "use data of that size/channel count (e.g. data.image_size / data.channels) or train a model for it"
        )


@torch.no_grad()
def evaluate_elbo(model: SequenceVAE, dataset: Dataset, batch_size: int, device: torch.device,
                  dtype: torch.dtype | None = None, max_batches: int = 0, seed: int = 1234,
                  window: int = 0, progress: Bar | None = None) -> dict[str, float]:
    """Mean −ELBO (nats), NLL, KL and bits/dim over (at most ``max_batches`` batches of) a split.

    For videos (models whose bound has one term per frame) also ``bpd_per_frame``: the bits
    per dimension of each modelled frame (frames 2…T; frame 1 is given), and with
    ``window`` (e.g. the training batches' length) ``neg_elbo_window`` / ``bpd_window``: the
    bound of the first ``window`` frames of each sequence only. Every term of the bound is
    causal (frame t's terms see frames up to t), so that is the bound a ``window``-frame
    sequence would get: what the trainer puts beside the training batches' bound, which
    covers windows of that length (``window_frames`` says how long). ``progress`` is told of
    every batch (:func:`batches_in`).
    """
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # neg_elbo, nll, kl, bpd, count
    per_frame: torch.Tensor | None = None                      # Σ over sequences of −ELBO_t, nats [T-1]
    frame_dims = 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(model):
        torch.manual_seed(seed + dist.rank())
        for i, batch in enumerate(eval_loader(dataset, batch_size, dist.rank(), dist.world())):
            if max_batches and i >= max_batches:
                break
            batch = batch_to_device(batch, device)
            check_batch(model, batch["frames"])
            with amp.autocast(device, dtype):
                out = model(batch)
            sums += torch.stack([
                out.neg_elbo.sum(), out.nll.sum(), out.kl.sum(), out.bits_per_dim().sum(),
                torch.tensor(float(out.nll.shape[0]), device=device),
            ]).double()
            if out.nll.dim() == 2 and out.nll.shape[1] > 1:    # one term per frame: a video
                terms = (out.nll.float() + out.kl.float()).sum(0).double()
                if per_frame is None:
                    per_frame, frame_dims = terms, out.dims // out.nll.shape[1]
                elif per_frame.shape == terms.shape:
                    per_frame += terms
                else:                                           # sequences of several lengths: no curve
                    per_frame, frame_dims = torch.zeros(0, dtype=torch.float64, device=device), -1
            if progress is not None:
                progress.update(1, **{"-ELBO": float(sums[0] / sums[4])})
    dist.all_reduce_sum(sums)
    if sums[4] == 0:
        raise ValueError("the evaluation split is empty")
    n = sums[4].item()
    result = {
        "neg_elbo": sums[0].item() / n, "nll": sums[1].item() / n, "kl": sums[2].item() / n,
        "bpd": sums[3].item() / n, "examples": int(n), "valid_bound": bool(model.likelihood.valid_bound),
    }
    if per_frame is not None and frame_dims > 0:
        dist.all_reduce_sum(per_frame)
        nats = per_frame / n                                    # mean −ELBO of each frame, nats [T-1]
        result["bpd_per_frame"] = (nats / (frame_dims * math.log(2.0))).tolist()
        if 1 < window <= nats.shape[0] + 1:                      # the first `window` frames: window - 1 terms
            result["neg_elbo_window"] = float(nats[:window - 1].sum())
            result["bpd_window"] = result["neg_elbo_window"] / ((window - 1) * frame_dims * math.log(2.0))
            result["window_frames"] = window
        result["frames"] = nats.shape[0] + 1
    result.update({k: float(v) for k, v in model.scalars().items()})
    if not all(math.isfinite(v) for v in result.values() if isinstance(v, float)):
        result["warning"] = "non-finite values in evaluation"
    return result


def batches_in(dataset: Dataset, batch_size: int, max_batches: int = 0, limit: int | None = None) -> int | None:
    """How many batches of ``batch_size`` an evaluation of ``dataset`` (its first ``limit``
    items) takes, at most ``max_batches`` (0: all); None when the split does not say its size."""
    try:
        size = len(dataset)
    except TypeError:
        return max_batches or None
    size = min(size, limit) if limit is not None else size
    count = -(-size // max(batch_size, 1))
    return min(count, max_batches) if max_batches else count


@torch.no_grad()
def score_batch(model: SequenceVAE, batch: dict[str, torch.Tensor], device: torch.device,
                dtype: torch.dtype | None = None, seed: int = 1234) -> dict[str, float]:
    """The bound of one (training) batch scored as :func:`evaluate_elbo` scores a split: in
    eval mode (running statistics, the head's evaluation σ, e.g. the optimal-σ EMA) under a
    forked RNG. Beside the training step's own figure for the same batch (train mode, the
    batch's own σ*) it separates what evaluation changes from what unseen data change."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(model):
        torch.manual_seed(seed + dist.rank())
        with amp.autocast(device, dtype):
            out = model(batch)
    return {"neg_elbo": float(out.neg_elbo.mean()), "nll": float(out.nll.sum(1).mean()),
            "kl": float(out.kl.sum(1).mean()), "bpd": float(out.bits_per_dim().mean()),
            "examples": int(out.nll.shape[0])}


def calibrate_sigma(model: SequenceVAE, dataset: Dataset, batch_size: int, device: torch.device,
                    dtype: torch.dtype | None = None, max_batches: int = 0, seed: int = 1234) -> float:
    """σ*² = mean squared error of the model's reconstructions on ``dataset`` (e.g. the
    validation split), under the same posterior samples as :func:`evaluate_elbo` draws there:
    the σ² that minimises the bound on that split (paper Eq. 5). Evaluating another split (the
    test split) with it is still a valid bound, since that split is not looked at.

    Only for the optimal-σ head (``optimal_sigma``), whose evaluation σ is otherwise its EMA
    of the training batches' σ* (App. C), which follows the training error and so ends too
    small for held-out data when the model overfits.
    """
    head = model.likelihood
    if not can_calibrate_sigma(model):
        raise ValueError(f"calibrating σ needs the optimal-σ decoder (likelihood.name: optimal_sigma); this model's "
                         f"head is {type(head).__name__}")
    with head.measuring() as totals:
        evaluate_elbo(model, dataset, batch_size, device, dtype, max_batches, seed)
        dist.all_reduce_sum(totals)
        if totals[1] == 0:
            raise ValueError("calibrating σ: the split scored no values")
        sigma2 = float(totals[0] / totals[1])
    return max(sigma2, math.exp(2 * head.min_log_sigma))


def can_calibrate_sigma(model: SequenceVAE) -> bool:
    """Whether the model's evaluation σ is one number that :func:`calibrate_sigma` can set: the
    optimal-σ head (its EMA), not the per-image one (σ from each image) nor a learned or fixed σ."""
    head = model.likelihood
    return hasattr(head, "measuring") and not getattr(head, "per_image", False)


def validation_sigma_bound(model: SequenceVAE, val: Dataset, dataset: Dataset, batch_size: int,
                           device: torch.device, dtype: torch.dtype | None = None,
                           max_batches: int = 0) -> dict[str, float]:
    """The bound on ``dataset`` with σ² = the reconstruction MSE on ``val`` (:func:`calibrate_sigma`)
    in place of the training EMA: ``val_sigma`` and ``val_sigma_{neg_elbo,nll,kl,bpd}``. Scored with
    the same posterior samples as :func:`evaluate_elbo` draws, so only σ differs from its figures."""
    sigma2 = calibrate_sigma(model, val, batch_size, device, dtype, max_batches)
    with evaluation_sigma2(model, sigma2):
        calibrated = evaluate_elbo(model, dataset, batch_size, device, dtype, max_batches)
    return {"val_sigma": sigma2 ** 0.5, **{f"val_sigma_{k}": calibrated[k] for k in ("neg_elbo", "nll", "kl", "bpd")}}


@contextmanager
def evaluation_sigma2(model: SequenceVAE, sigma2: float) -> Iterator[None]:
    """Evaluate ``model`` with its optimal-σ head's σ² set to ``sigma2`` within the block."""
    with model.likelihood.evaluation_sigma2(sigma2):
        yield
