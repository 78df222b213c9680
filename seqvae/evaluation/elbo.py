"""Evaluation shared by the trainer and ``seqvae eval``: the −log p bound on a split.

The bound is reported in nats per example (the paper's "−log p") and in bits per
dimension, with its NLL and KL parts and the head's σ / effective β. Heads in eval mode
use their evaluation state (the optimal-σ head its EMA, App. C). Evaluation runs under a
forked RNG so it never disturbs the training stream (resume stays exact).
"""
from __future__ import annotations

import math

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
            f"the data gives frames of shape {tuple(frames.shape[2:])} (C, H, W) but the model was built for {expected}; "
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
