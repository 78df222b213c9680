"""The model contracts: every model is a :class:`SequenceVAE` over frames
``x[B, T, C, H, W]``; video models also satisfy :class:`VideoPredictor` (what rollouts,
video evaluation and planning use); image VAEs with one Gaussian latent are
:class:`SingleLatentVAE` (what latent analysis uses). Code asks these contracts, never
probes a model's attributes.

State that a training step changes outside the optimizer (a buffer such as the optimal-σ
head's EMA) is only *recorded* in ``forward``; the loop calls ``commit_step(accepted)``
after each step, and any submodule that defines ``apply_pending(accepted)`` applies its
pending change only when the update was accepted (never after a skipped, non-finite one).
A hand-written loop calls ``model.commit_step()`` after ``optimizer.step()``.

Batches are dicts as in :mod:`seqvae.data.spec` with float frames in [0, 1] (the trainer
converts). The training loop only ever calls ``forward``, ``reconstruct``, ``generate``
and ``scalars``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from seqvae.data.spec import DataSpec
from seqvae.likelihoods.base import LikelihoodHead, commit_pending_state
from seqvae.models.output import ELBO


class SequenceVAE(nn.Module):
    """Base of every model. A subclass sets ``likelihood`` (its head) and ``spec`` (the
    frame shape, sequence length and action size it was built for) in its constructor."""

    likelihood: LikelihoodHead
    spec: DataSpec

    def forward(self, batch: dict[str, Tensor]) -> ELBO:  # pragma: no cover - interface
        """The structured bound of :mod:`seqvae.models.output`."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor]) -> Tensor:  # pragma: no cover - interface
        """The head's mean given posterior latents, ``[B, T, C, H, W]``."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor],
                 generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        """Samples from the prior, ``[B, T, C, H, W]``. An image model uses only the batch's
        size; a video model takes its context frames (and actions) from the batch."""
        raise NotImplementedError

    def commit_step(self, accepted: bool = True) -> None:
        """End a training step: every submodule with ``apply_pending`` applies (``accepted``)
        or drops what its forward passes recorded since the last call."""
        commit_pending_state(self, accepted)

    def scalars(self) -> dict[str, Tensor | float]:
        """Scalars for logs: the head's (σ, effective β) by default."""
        return dict(self.likelihood.scalars())


@runtime_checkable
class VideoPredictor(Protocol):
    """A model that predicts future frames from context frames (and actions).

    ``predict`` takes ``context[B, n_ctx, C, H, W]`` in [0, 1] and returns
    ``[B, n_future, C, H, W]``; ``actions[B, >= n_ctx + n_future - 1, A]`` (``a_t`` moves
    frame ``t`` to ``t + 1``) only when ``action_dim > 0``; the latents come from
    ``generator`` or, when given, ``noise[B, n_ctx - 1 + n_future, z_dim]`` (each row then
    depends on its own noise only). ``rollout_row_bytes(horizon, keep_frames)`` tells
    rollouts how much working memory one predicted sequence takes (they size chunks by it).
    """

    spec: DataSpec     # frame shape the model was built for
    n_past: int        # context frames it was trained with
    n_eval: int        # frames it predicts at evaluation
    z_dim: int         # latent size per frame (0: deterministic)
    action_dim: int    # action size (0: action-free)

    def predict(self, context: Tensor, n_future: int, actions: Tensor | None = None,
                generator: torch.Generator | None = None, sample_pixels: bool = False,
                noise: Tensor | None = None) -> Tensor: ...

    def rollout_row_bytes(self, horizon: int, keep_frames: bool) -> int: ...


@runtime_checkable
class SteppedPredictor(VideoPredictor, Protocol):
    """A :class:`VideoPredictor` whose ``predict(context, ...)`` is ``dream(begin(context,
    ...), ...)``: ``begin(context[B, n_ctx, C, H, W], actions[B, n_ctx - 1, A], generator,
    noise[B, n_ctx - 1, z_dim])`` takes in the context and returns a state with
    ``take(rows[n])`` (the state of those rows, repeated as asked); ``dream(state, n_future,
    actions[B, n_future, A], generator, sample_pixels, noise[B, n_future, z_dim])`` predicts
    from it. Rollouts whose rows share a context take it in once (see
    :func:`seqvae.control.rollout.rollout`)."""

    def begin(self, context: Tensor, actions: Tensor | None = None, generator: torch.Generator | None = None,
              noise: Tensor | None = None) -> Any: ...

    def dream(self, state: Any, n_future: int, actions: Tensor | None = None,
              generator: torch.Generator | None = None, sample_pixels: bool = False,
              noise: Tensor | None = None) -> Tensor: ...


def is_video_model(model: nn.Module) -> bool:
    """Whether ``model`` predicts videos (satisfies :class:`VideoPredictor`)."""
    return isinstance(model, VideoPredictor)


class SingleLatentVAE(SequenceVAE):
    """An image VAE with one Gaussian latent, whose posterior can be read directly."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        """Posterior ``(mu, logvar)``, each ``[B, D]``, of images ``x[B, C, H, W]``."""
        raise NotImplementedError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
