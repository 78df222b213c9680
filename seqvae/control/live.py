"""A person drives an environment and a video model predicts, live, what each action does
(:class:`LiveSession`, what ``seqvae play`` serves).

Each :meth:`LiveSession.step` applies one action to the true environment and asks the model
for the next frame under the same action — one frame per step, the model's recurrent state
kept between steps (:meth:`seqvae.models.svg.SVG.step`), never a re-run of the context. Two
modes:

* **following** (the default): the model takes in every true frame as context, so each
  prediction is one step ahead of the truth;
* **dreaming** (:meth:`LiveSession.dream`): from the current frame on, the model rolls
  forward on its own predictions while the environment goes on with the same actions, so
  the two drift apart; waking up (``dream(False)``) resynchronises the model: it takes in
  the true frames it missed, one step each, from where it fell asleep.

How far the prediction is from the truth is the world's to say: a :class:`PredictionCheck`
(the pushing world locates each object by its colour in the predicted frame and measures
its distance to the simulator's position).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from seqvae.control.environment import Environment
from seqvae.io import frames_to_float


@runtime_checkable
class PredictionCheck(Protocol):
    """How far a predicted frame is from the environment's true state (a world provides it)."""

    def reset(self, env: Environment) -> None:
        """A new episode, or the model resynchronised on the truth (the trackers start from it)."""

    def __call__(self, env: Environment, predicted: Tensor, following: bool) -> dict[str, Any]:
        """Figures of ``predicted`` (float ``[C, H, W]`` in [0, 1], the model's frame for the
        environment's current state), JSON-safe; ``error`` is the headline number."""


@dataclass
class LiveFrame:
    """What one step shows: the true frame, the model's frame for it, and the figures."""

    step: int
    truth: Tensor                   # uint8 [C, H, W]: env.observe()
    predicted: Tensor               # uint8 [C, H, W]: the model's frame for the same step
    dreaming: bool
    dream_steps: int                # steps predicted on the model's own frames since the last true one
    check: dict[str, Any] = field(default_factory=dict)
    model_seconds: float = 0.0      # the model's step: the prediction and, when following, taking in the truth


class LiveSession:
    """One episode driven step by step, the model predicting each frame (see the module).

    Args:
        env: the true environment (reset here).
        model: a video model with ``begin`` / ``step`` (:class:`seqvae.models.svg.SVG`).
        check: the world's :class:`PredictionCheck` (None: no figures).
        seed: the first episode's seed; latents come from a generator seeded with it.
    """

    def __init__(self, env: Environment, model: Any, check: PredictionCheck | None = None, seed: int = 0) -> None:
        if not getattr(model, "action_dim", 0) or not hasattr(model, "step"):
            raise ValueError("a live session needs an action-conditioned video model that predicts frame by frame "
                             "(an SVG trained with model.action_conditioned=true)")
        if model.action_dim != env.action_dim:
            raise ValueError(f"the model takes {model.action_dim}-dimensional actions, the environment "
                             f"{env.action_dim}-dimensional ones")
        self.env, self.model, self.check = env, model.eval(), check
        self.device = next(model.parameters()).device
        self.dreaming = False
        self.awake, self.missed = None, []
        self.reset(seed)

    def _frame(self) -> Tensor:
        return frames_to_float(self.env.observe()).to(self.device)[None]           # [1, C, H, W]

    def reset(self, seed: int) -> LiveFrame:
        """Start episode ``seed``: the model's context is the first ``n_past`` frames with the
        gripper held still (an action of zeros), as an episode's recorded start would be."""
        self.seed, self.steps, self.dreaming, self.dream_steps, self.missed = seed, 0, False, 0, []
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.env.reset(seed)
        still = torch.zeros(self.env.action_dim)
        frames = [self._frame()]
        for _ in range(self.model.n_past - 1):
            self.env.step(still)
            frames.append(self._frame())
        context = torch.stack(frames, 1)                                             # [1, n_past, C, H, W]
        actions = still.to(self.device).expand(1, self.model.n_past, -1)
        self.state = self.model.begin(context, actions, generator=self.generator)
        if self.check is not None:
            self.check.reset(self.env)
        self.last = LiveFrame(0, self.env.observe(), self.env.observe(), False, 0,
                              self.check(self.env, frames[-1][0], True) if self.check is not None else {})
        return self.last

    def dream(self, on: bool) -> LiveFrame:
        """Dream from the current frame on (``on``), or wake up: the model takes in the true
        frames it missed while dreaming (one step each, from where it fell asleep) and follows
        the truth again."""
        if on == self.dreaming:
            return self.last
        if on:
            self.awake, self.missed = self.state, []
        else:
            state = self.awake
            for action, truth in self.missed:
                _, state = self.model.step(state, action, observed=truth, generator=self.generator)
            self.state, self.missed = state, []
            if self.check is not None:
                self.check.reset(self.env)
        self.dreaming, self.dream_steps = on, 0
        self.last = LiveFrame(self.steps, self.last.truth, self.last.predicted, on, 0, self.last.check,
                              self.last.model_seconds)
        return self.last

    def step(self, action: Tensor | list[float]) -> LiveFrame:
        """Apply ``action`` (clamped to the environment's box) to the truth and to the model."""
        action = torch.as_tensor(action, dtype=torch.float32).reshape(-1)
        if action.shape[0] != self.env.action_dim or not bool(torch.isfinite(action).all()):
            raise ValueError(f"an action is {self.env.action_dim} finite numbers, got {action.tolist()}")
        action = action.clamp(self.env.action_low, self.env.action_high)
        self.env.step(action)
        truth = self.env.observe()
        a, observed = action.to(self.device)[None], frames_to_float(truth).to(self.device)[None]
        start = time.perf_counter()
        if self.dreaming:
            predicted, self.state = self.model.step(self.state, a, generator=self.generator)
            self.missed.append((a, observed))
            self.dream_steps += 1
        else:
            predicted, self.state = self.model.step(self.state, a, observed=observed, generator=self.generator)
        seconds = time.perf_counter() - start
        self.steps += 1
        frame = predicted[0].clamp(0, 1)
        figures = self.check(self.env, frame, not self.dreaming) if self.check is not None else {}
        self.last = LiveFrame(self.steps, truth, (frame * 255).round().to(torch.uint8).cpu(), self.dreaming,
                              self.dream_steps, figures, seconds)
        return self.last


def measure_steps(session: LiveSession, steps: int, policy: Callable[[int], list[float]]) -> dict[str, float]:
    """Drive ``session`` for ``steps`` steps with ``policy(i)``; the model's frames per second
    (its own step time) and the whole step's (environment and checks included)."""
    model, start = 0.0, time.perf_counter()
    for i in range(steps):
        model += session.step(policy(i)).model_seconds
    total = time.perf_counter() - start
    return {"steps": steps, "model_frames_per_s": steps / max(model, 1e-9), "steps_per_s": steps / max(total, 1e-9)}
