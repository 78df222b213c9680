"""256-way categorical decoder: a softmax over the 8-bit intensities (paper §3.2, Table 2/4).

For a true pixel of intensity ``i`` the log-likelihood is ``log softmax(λ)_i`` — the
per-pixel "classifier" cross-entropy of §3.2. Every pixel and channel has its own 256
logits, so the decoder emits ``256·C`` channels laid out as ``n (c k) h w`` (channel
major, the 256 levels minor). It is the most flexible discrete decoder and the heaviest
one (App. D: 256 values per pixel and channel).

This module also holds :class:`DiscreteHead`, the small base shared by every head over
the 256 levels (categorical, bitwise, discretized, logistic mixture): it adds
``log_probs_256(params) -> [N, C, 256, H, W]``, the per-channel distribution over the
levels, computed in float32 with autocast off like the rest of the public API.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from seqvae.likelihoods.base import LikelihoodHead, rand, to_uint8_levels
from seqvae.registry import LIKELIHOODS, ComponentConfig

LEVELS = 256


class DiscreteHead(LikelihoodHead):
    """A head over the 256 levels ``round(255·x)``; its NLL is the 8-bit data's."""

    discrete = True

    def log_probs_256(self, params: Tensor) -> Tensor:
        """Per-channel log-probabilities of the 256 levels: ``[N, C, 256, H, W]``.

        For heads that factorize over channels this is the whole distribution; for the
        logistic mixture (components shared across channels) it is each channel's marginal.
        """
        with torch.autocast(device_type=params.device.type, enabled=False):
            return self._log_probs_256(params.float())

    def _log_probs_256(self, params: Tensor) -> Tensor:
        raise NotImplementedError


def level_values(like: Tensor) -> Tensor:
    """The 256 level values 0..255 as floats on ``like``'s device."""
    return torch.arange(LEVELS, device=like.device, dtype=torch.float32)


def gumbel_argmax(logits: Tensor, dim: int, generator: torch.Generator | None) -> Tensor:
    """A draw from ``Categorical(logits)`` along ``dim`` by the Gumbel-max trick (long)."""
    tiny = torch.finfo(logits.dtype).tiny
    u = rand(logits.shape, logits, generator).clamp_min(tiny)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=dim)


class Categorical256(DiscreteHead):
    """Independent 256-way softmax per pixel and channel (paper §3.2)."""

    def num_params(self, data_channels: int) -> int:
        return LEVELS * data_channels

    def _log_probs_256(self, params: Tensor) -> Tensor:
        logits = rearrange(params, "n (c k) h w -> n c k h w", k=LEVELS)
        return F.log_softmax(logits, dim=2)

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        log_probs = self._log_probs_256(params)
        levels = rearrange(to_uint8_levels(x), "n c h w -> n c 1 h w")
        return -reduce(log_probs.gather(2, levels), "n c 1 h w -> n", "sum")

    def _mean(self, params: Tensor) -> Tensor:
        probs = self._log_probs_256(params).exp()
        return torch.einsum("nckhw,k->nchw", probs, level_values(params)) / 255.0

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        logits = rearrange(params, "n (c k) h w -> n c k h w", k=LEVELS)
        return gumbel_argmax(logits, 2, generator).float() / 255.0


@dataclass
class CategoricalConfig(ComponentConfig):
    name: str = "categorical"


@LIKELIHOODS.register("categorical", CategoricalConfig)
def build_categorical(cfg: CategoricalConfig) -> LikelihoodHead:
    return Categorical256()
