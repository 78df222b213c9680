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
                  dtype: torch.dtype | None = None, max_batches: int = 0, seed: int = 1234) -> dict[str, float]:
    """Mean −ELBO (nats), NLL, KL and bits/dim over (at most ``max_batches`` batches of) a split."""
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # neg_elbo, nll, kl, bpd, count
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
    dist.all_reduce_sum(sums)
    if sums[4] == 0:
        raise ValueError("the evaluation split is empty")
    n = sums[4].item()
    result = {
        "neg_elbo": sums[0].item() / n, "nll": sums[1].item() / n, "kl": sums[2].item() / n,
        "bpd": sums[3].item() / n, "examples": int(n), "valid_bound": bool(model.likelihood.valid_bound),
    }
    result.update({k: float(v) for k, v in model.scalars().items()})
    if not all(math.isfinite(v) for v in result.values() if isinstance(v, float)):
        result["warning"] = "non-finite values in evaluation"
    return result


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
    if not hasattr(head, "measuring") or getattr(head, "per_image", False):
        raise ValueError(f"calibrating σ needs the optimal-σ decoder (likelihood.name: optimal_sigma); this model's "
                         f"head is {type(head).__name__}")
    with head.measuring() as totals:
        evaluate_elbo(model, dataset, batch_size, device, dtype, max_batches, seed)
        dist.all_reduce_sum(totals)
        if totals[1] == 0:
            raise ValueError("calibrating σ: the split scored no values")
        sigma2 = float(totals[0] / totals[1])
    return max(sigma2, math.exp(2 * head.min_log_sigma))


@contextmanager
def evaluation_sigma2(model: SequenceVAE, sigma2: float) -> Iterator[None]:
    """Evaluate ``model`` with its optimal-σ head's σ² set to ``sigma2`` within the block."""
    with model.likelihood.evaluation_sigma2(sigma2):
        yield
