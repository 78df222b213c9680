"""What the MPC loop plans with (:class:`PlanningModel`), and the planner for any
action-conditioned video model (:class:`VideoModelPlanner`): it keeps the observed context
and scores candidate action sequences by rolling the model out
(:func:`seqvae.control.rollout.rollout`) and reading a cost off the predicted frames (any
:class:`~seqvae.control.environment.FrameCost`: the world's own, or a goal image)."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from seqvae.control.environment import Environment, FrameCost
from seqvae.control.rollout import rollout, rollout_copy
from seqvae.io import frames_to_float
from seqvae.models.base import VideoPredictor


class PlanningModel(Protocol):
    """A model of the world as the MPC loop uses it."""

    name: str

    def reset(self, env: Environment, seed: int = 0) -> None:
        """Start an episode at ``env``'s current state; ``seed`` seeds the model's own
        randomness (a stochastic model's latents) for the episode."""

    def observe(self, env: Environment, action: Tensor) -> None:
        """``env`` took ``action [A]`` and is now in its new state."""

    def costs(self, actions: Tensor) -> Tensor:
        """Costs ``[K]`` of candidate plans ``[K, horizon, A]`` from the current situation."""

    def preview(self, actions: Tensor) -> Tensor:
        """The future a plan ``[horizon, A]`` is expected to bring, ``[horizon, C, H, W]`` in [0, 1]."""


LATENTS = ("sample", "mean")


class VideoModelPlanner:
    """An action-conditioned video predictor as the planner's model of the world.

    It sees only camera frames (``env.observe()``) and its own actions. It keeps the last
    ``n_past`` frames and the actions between them as context; at the start of an episode
    the first frame is repeated with zero actions (exactly what a still scene looks like).
    A candidate's cost is ``cost`` of its predicted frames, averaged over ``samples``
    futures (common random numbers across candidates, see :mod:`seqvae.control.rollout`);
    with ``latent="mean"`` every latent is its distribution's mean (zero noise: one
    deterministic future per candidate, the most likely one under the prior). With
    ``redraw_latents=False`` the latents are drawn once per situation (after each
    :meth:`observe`) and every scoring call until the next observation uses them: the
    iterations of one plan compare candidates on the same futures, and a candidate scored
    again gets the same cost (what CEM's ``rescore_kept_elites=False`` relies on).
    It plans with :func:`~seqvae.control.rollout.rollout_copy` of ``model`` (BatchNorm
    folded, channels_last: the same predictions for less time), made when it is built.
    """

    name = "learned"

    def __init__(self, model: VideoPredictor, cost: FrameCost, samples: int = 1, seed: int = 0,
                 precision: str = "auto", max_batch: int | None = None, name: str = "learned",
                 latent: str = "sample", redraw_latents: bool = True) -> None:
        if not model.action_dim:
            raise ValueError("planning needs an action-conditioned model (train with model.action_conditioned=true)")
        if samples < 1:
            raise ValueError(f"samples (futures per candidate) must be at least 1, got {samples}")
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {', '.join(LATENTS)}, got {latent!r}")
        if latent == "mean" and samples != 1:
            raise ValueError(f"latent='mean' gives one deterministic future per candidate: samples must be 1, "
                             f"got {samples}")
        self.latent, self.redraw_latents = latent, redraw_latents
        self._latents: Tensor | None = None     # this situation's latents (redraw_latents=False)
        self.model, self.cost, self.samples, self.seed = rollout_copy(model), cost, samples, seed
        self.precision, self.max_batch, self.name = precision, max_batch, name
        self.n_ctx = model.n_past
        self.device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
        self.generator = torch.Generator(device="cpu")          # planning rollouts
        self.preview_generator = torch.Generator(device="cpu")  # previews (do not disturb planning's stream)
        self.frames: list[Tensor] = []
        self.actions: list[Tensor] = []
        self._candidates: Tensor | None = None

    def reset(self, env: Environment, seed: int | None = None) -> None:
        self.generator.manual_seed(self.seed if seed is None else seed)
        self.preview_generator.manual_seed(self.seed if seed is None else seed)
        self.cost.reset(env)
        first = self._camera(env)
        self.frames = [first] * self.n_ctx
        self.actions = [torch.zeros(self.model.action_dim, device=self.device)] * (self.n_ctx - 1)
        self.cost.observe(first)
        self._latents = None

    def observe(self, env: Environment, action: Tensor) -> None:
        frame = self._camera(env)
        self.frames = (self.frames + [frame])[-self.n_ctx:]
        self.actions = (self.actions + [action.to(self.device, torch.float32)])[-(self.n_ctx - 1):] \
            if self.n_ctx > 1 else []
        self.cost.observe(frame)
        self._latents = None

    def _camera(self, env: Environment) -> Tensor:
        return frames_to_float(env.observe().to(self.device))                  # [C, H, W]

    def _context(self) -> tuple[Tensor, Tensor | None]:
        ctx = torch.stack(self.frames)[None]                                    # [1, n_ctx, C, H, W]
        acts = torch.stack(self.actions)[None] if self.actions else None       # [1, n_ctx-1, A]
        return ctx, acts

    def _cost_fn(self, frames: Tensor, index: Tensor) -> Tensor:
        return self.cost(frames, self._candidates[index[:, 1]])

    def costs(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        self._candidates = actions.to(self.device, torch.float32)
        out = rollout(self.model, ctx, actions[None].to(self.device), self.samples, generator=self.generator,
                      context_actions=acts, cost_fn=self._cost_fn, return_frames=False,
                      precision=self.precision, max_batch=self.max_batch, noise=self._noise(ctx, actions.shape[1]))
        return out.costs[0].mean(-1)                                            # (K,)

    def _noise(self, ctx: Tensor, horizon: int, scoring: bool = True) -> Tensor | None:
        """Zero latent noise (each latent its mean) with ``latent="mean"``; for ``scoring``
        with ``redraw_latents=False``, this situation's latents (drawn at its first scoring,
        as :func:`~seqvae.control.rollout.rollout` draws them); else None (drawn by each call;
        previews draw from their own generator, so rendering never changes a plan)."""
        if not self.model.z_dim:
            return None
        shape = (1, self.samples, self.n_ctx - 1 + horizon, self.model.z_dim)
        if self.latent == "mean":
            return ctx.new_zeros(shape)
        if self.redraw_latents or not scoring:
            return None
        if self._latents is None or tuple(self._latents.shape) != shape:
            self._latents = torch.randn(shape, generator=self.generator, device=self.generator.device)
        return self._latents

    def preview(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        noise = self._noise(ctx, actions.shape[0], scoring=False)
        out = rollout(self.model, ctx, actions[None, None].to(self.device), 1, generator=self.preview_generator,
                      context_actions=acts, precision=self.precision, noise=noise)
        return out.frames[0, 0, 0]
