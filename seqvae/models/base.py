"""The one model interface: a sequence VAE over frames ``x[B, T, C, H, W]``.

Every model (image VAE, hierarchical VAE, SVG-LP/FP/deterministic) carries a likelihood
head (``self.likelihood``) and implements:

* ``forward(batch) -> ELBO``: the structured bound of :mod:`seqvae.models.output`;
* ``reconstruct(batch) -> [B, T, C, H, W]``: the head's mean given posterior latents;
* ``generate(batch, generator) -> [B, T, C, H, W]``: samples from the prior. An image
  model ignores the batch's content (it uses only its size); a video model takes its
  context frames (and actions) from the batch and predicts the rest.

State that a training step changes outside the optimizer (a buffer such as the optimal-σ
head's EMA) is only *recorded* in ``forward``; the loop calls ``commit_step(accepted)``
after each step, and any submodule that defines ``apply_pending(accepted)`` applies its
pending change only when the update was accepted (never after a skipped, non-finite one).
A hand-written loop calls ``model.commit_step()`` after ``optimizer.step()``.

Batches are dicts as in :mod:`seqvae.data.spec` with float frames in [0, 1] (the trainer
converts). The training loop only ever calls these methods.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from seqvae.likelihoods.base import LikelihoodHead, commit_pending_state
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

    def commit_step(self, accepted: bool = True) -> None:
        """End a training step: every submodule with ``apply_pending`` applies (``accepted``)
        or drops what its forward passes recorded since the last call."""
        commit_pending_state(self, accepted)

    def scalars(self) -> dict[str, Tensor | float]:
        """Scalars for logs: the head's (σ, effective β) by default."""
        return dict(self.likelihood.scalars())
