"""Bernoulli decoder: intensities in [0, 1] treated as probabilities (paper Table 2, [1]).

The decoder emits one logit ``λ`` per pixel and channel; the loss is the binary
cross-entropy ``−[x·log σ(λ) + (1−x)·log(1−σ(λ))]`` summed over every dimension, as in
Gregor et al. (2015) — *not* the continuous Bernoulli, which adds the normalizer.

For binary ``x`` this is a true log-likelihood. For gray levels ``x ∈ (0, 1)`` it is not
the log of any normalized density over x (the paper's point, §3 and Table 2, why the
Bernoulli VAE does poorly on natural images), so the ELBO it yields bounds nothing:
``valid_bound`` is False and Table 2 reports no likelihood for it. ``mean`` is σ(λ);
``sample`` is a Bernoulli draw, a binary image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor

from seqvae.likelihoods.base import LikelihoodHead, rand
from seqvae.registry import LIKELIHOODS, ComponentConfig


class BernoulliHead(LikelihoodHead):
    """Per-pixel Bernoulli with logits; cross-entropy against (possibly gray) targets."""

    discrete = False
    valid_bound = False  # not a normalized likelihood of gray-level images

    def num_params(self, data_channels: int) -> int:
        return data_channels

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return reduce(bce, "n c h w -> n", "sum")

    def _mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = torch.sigmoid(params)
        return (rand(probs.shape, probs, generator) < probs).float()


@dataclass
class BernoulliConfig(ComponentConfig):
    name: str = "bernoulli"


@LIKELIHOODS.register("bernoulli", BernoulliConfig)
def build_bernoulli(cfg: BernoulliConfig) -> LikelihoodHead:
    return BernoulliHead()
