"""Discretized logistic mixture decoder, without autoregressive channels (paper App. D).

Salimans et al. (2017, PixelCNN++) model a pixel as a mixture of K discretized
logistics whose K weights are shared by the pixel's channels; their decoder also shifts
the green and blue means by linear functions of the red (and green) values. App. D drops
those mean-adjusting coefficients: channels would otherwise carry colour information past
the latent variable. What remains, per pixel::

    p(x) = Σ_k π_k · Π_c DiscLogistic(x_c; μ_ck, s_ck)

with the 256 bins and the (−∞, ½/255] / [254.5/255, ∞) edge bins of
:mod:`seqvae.likelihoods.discretized` (bin math shared with the single-component heads).

Decoder channels: ``K·(1 + 2C)`` laid out as ``[K mixture logits | C·K means | C·K log
scales]``, the last two ``n (c k) h w``. Means pass through ``mean_activation``
(``sigmoid`` by default, like the Gaussian heads); log-scales are clamped below at
``min_log_scale`` (PixelCNN++ clamps at −7). ``log_probs_256`` gives each channel's
*marginal* over the 256 levels; the NLL uses the joint (channels share the component).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from seqvae.likelihoods.base import LikelihoodHead, rand, to_uint8_levels
from seqvae.likelihoods.categorical import LEVELS, DiscreteHead, gumbel_argmax
from seqvae.likelihoods.discretized import check_activation, expected_level, logistic_log_mass
from seqvae.likelihoods.gaussian import mean_activation
from seqvae.registry import LIKELIHOODS, ComponentConfig


class DiscretizedLogisticMixture(DiscreteHead):
    """K-component discretized logistic mixture shared across channels (App. D)."""

    def __init__(self, components: int = 10, min_log_scale: float = -7.0,
                 mean_activation: str = "sigmoid") -> None:
        super().__init__()
        if not isinstance(components, int) or components < 1:
            raise ValueError(f"likelihood.components must be a positive integer, got {components!r}")
        check_activation(mean_activation)
        self.components = components
        self.min_log_scale = min_log_scale
        self.mean_activation = mean_activation
        self._last_log_scale: Tensor | None = None

    def num_params(self, data_channels: int) -> int:
        return self.components * (1 + 2 * data_channels)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log π [N, K, H, W]``, ``μ [N, C, K, H, W]``, ``log s [N, C, K, H, W]``."""
        k = self.components
        log_pi = F.log_softmax(params[:, :k], dim=1)
        means, log_scales = params[:, k:].chunk(2, dim=1)
        mu = rearrange(mean_activation(means, self.mean_activation), "n (c k) h w -> n c k h w", k=k)
        log_s = rearrange(log_scales, "n (c k) h w -> n c k h w", k=k).clamp_min(self.min_log_scale)
        self._last_log_scale = log_s.detach()
        return log_pi, mu, log_s

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        log_pi, mu, log_s = self.split(params)
        levels = rearrange(to_uint8_levels(x), "n c h w -> n c 1 h w")
        log_mass = logistic_log_mass(levels, mu, log_s)                       # [N, C, K, H, W]
        joint = reduce(log_mass, "n c k h w -> n k h w", "sum") + log_pi
        return -reduce(torch.logsumexp(joint, dim=1), "n h w -> n", "sum")

    def _log_probs_256(self, params: Tensor) -> Tensor:
        log_pi, mu, log_s = self.split(params)
        levels = rearrange(torch.arange(LEVELS, device=params.device), "v -> 1 1 1 v 1 1")
        log_mass = logistic_log_mass(levels, mu.unsqueeze(3), log_s.unsqueeze(3))  # [N, C, K, 256, H, W]
        return torch.logsumexp(log_mass + rearrange(log_pi, "n k h w -> n 1 k 1 h w"), dim=2)

    def _mean(self, params: Tensor) -> Tensor:
        log_pi, mu, log_s = self.split(params)
        pi, inv_s = rearrange(log_pi.exp(), "n k h w -> n 1 k h w"), torch.exp(-log_s)

        def survival(t: Tensor) -> Tensor:  # Σ_k π_k P_k(X > t): [m, N, C, H, W]
            tail = torch.sigmoid((mu - rearrange(t, "m -> m 1 1 1 1 1")) * inv_s)
            return reduce(tail * pi, "m n c k h w -> m n c h w", "sum")

        return expected_level(survival, params, chunk=8) / 255.0

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        log_pi, mu, log_s = self.split(params)
        k = gumbel_argmax(log_pi, 1, generator)                               # [N, H, W]
        index = rearrange(k, "n h w -> n 1 1 h w").expand(-1, mu.shape[1], 1, -1, -1)
        mu_k = mu.gather(2, index).squeeze(2)
        s_k = log_s.gather(2, index).squeeze(2).exp()
        eps = torch.finfo(mu.dtype).eps
        u = rand(mu_k.shape, mu_k, generator).clamp(eps, 1 - eps)
        return to_uint8_levels(mu_k + s_k * (torch.log(u) - torch.log1p(-u))).float() / 255.0

    def scalars(self) -> dict[str, Tensor]:
        if self._last_log_scale is None:
            return {}
        return {"log_scale_mean": self._last_log_scale.mean()}


@dataclass
class LogisticMixtureConfig(ComponentConfig):
    name: str = "logistic_mixture"
    components: int = 10            # K mixture components per pixel (shared by its channels)
    min_log_scale: float = -7.0     # clamp on each component's log s (PixelCNN++)
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("logistic_mixture", LogisticMixtureConfig)
def build_logistic_mixture(cfg: LogisticMixtureConfig) -> LikelihoodHead:
    return DiscretizedLogisticMixture(cfg.components, cfg.min_log_scale, cfg.mean_activation)
