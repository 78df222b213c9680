"""Bitwise-categorical decoder: 8 independent Bernoulli bits per 8-bit value (paper App. D).

A level ``v = Σ_b 2^b·bit_b`` gets ``log p(v) = Σ_b log Bernoulli(bit_b; σ(λ_b))``: the
binary cross-entropy of the image's bits (exact bits, so the BCE is a true binary
log-likelihood). That is a categorical over the 256 levels with only 8 parameters
instead of 256 (App. D: the full categorical needs 256 values per pixel and channel).

Layout: ``8·C`` decoder channels as ``n (c b) h w``; bit ``b = 0`` is the least
significant (weight ``2^b``). :meth:`BitwiseCategorical.log_probs_256` spells out the
implied 256-way categorical.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from seqvae.likelihoods.base import LikelihoodHead, rand, to_uint8_levels
from seqvae.likelihoods.categorical import LEVELS, DiscreteHead
from seqvae.registry import LIKELIHOODS, ComponentConfig

BITS = 8


def bit_weights(like: Tensor) -> Tensor:
    """``[2^0, …, 2^7]`` as floats on ``like``'s device."""
    return 2.0 ** torch.arange(BITS, device=like.device, dtype=torch.float32)


def to_bits(levels: Tensor) -> Tensor:
    """Integer levels ``[...]`` -> their bits ``[..., 8]`` as floats, LSB first."""
    shifts = torch.arange(BITS, device=levels.device)
    return ((levels.unsqueeze(-1) >> shifts) & 1).float()


class BitwiseCategorical(DiscreteHead):
    """8 Bernoulli bits per pixel and channel (paper App. D)."""

    def num_params(self, data_channels: int) -> int:
        return BITS * data_channels

    @staticmethod
    def _logits(params: Tensor) -> Tensor:
        return rearrange(params, "n (c b) h w -> n c b h w", b=BITS)

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self._logits(params)
        bits = rearrange(to_bits(to_uint8_levels(x)), "n c h w b -> n c b h w")
        bce = F.binary_cross_entropy_with_logits(logits, bits, reduction="none")
        return reduce(bce, "n c b h w -> n", "sum")

    def _log_probs_256(self, params: Tensor) -> Tensor:
        logits = self._logits(params)
        table = to_bits(torch.arange(LEVELS, device=params.device))  # [256, 8]
        log_one, log_zero = F.logsigmoid(logits), F.logsigmoid(-logits)
        return (torch.einsum("vb,ncbhw->ncvhw", table, log_one)
                + torch.einsum("vb,ncbhw->ncvhw", 1.0 - table, log_zero))

    def _mean(self, params: Tensor) -> Tensor:
        # E[v] = Σ_b 2^b·P(bit_b = 1): the implied categorical's mean, by linearity.
        probs = torch.sigmoid(self._logits(params))
        return torch.einsum("ncbhw,b->nchw", probs, bit_weights(params)) / 255.0

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = torch.sigmoid(self._logits(params))
        bits = (rand(probs.shape, probs, generator) < probs).float()
        return torch.einsum("ncbhw,b->nchw", bits, bit_weights(params)) / 255.0


@dataclass
class BitwiseCategoricalConfig(ComponentConfig):
    name: str = "bitwise_categorical"


@LIKELIHOODS.register("bitwise_categorical", BitwiseCategoricalConfig)
def build_bitwise_categorical(cfg: BitwiseCategoricalConfig) -> LikelihoodHead:
    return BitwiseCategorical()
