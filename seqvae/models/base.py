"""The one model interface: a sequence VAE over frames ``x[B, T, C, H, W]``.

Every model (image VAE, hierarchical VAE, SVG-LP/FP/deterministic) carries a likelihood
head (``self.likelihood``) and implements:

* ``forward(batch) -> ELBO``: the structured bound of :mod:`seqvae.models.output`;
* ``reconstruct(batch) -> [B, T, C, H, W]``: the head's mean given posterior latents;
* ``generate(batch, generator) -> [B, T, C, H, W]``: samples from the prior. An image
  model ignores the batch's content (it uses only its size); a video model takes its
  context frames (and actions) from the batch and predicts the rest.

Batches are dicts as in :mod:`seqvae.data.spec` with float frames in [0, 1] (the trainer
converts). The training loop only ever calls these methods.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from seqvae.likelihoods.base import LikelihoodHead
from seqvae.models.output import ELBO


class SequenceVAE(nn.Module):
    likelihood: LikelihoodHead

    def forward(self, batch: dict[str, Tensor]) -> ELBO:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def scalars(self) -> dict[str, Tensor | float]:
        """Scalars for logs: the head's (σ, effective β) by default."""
        return dict(self.likelihood.scalars())
