"""What planning needs from an environment (:class:`Environment`), and what a world gives
the planning harness besides it (:class:`PlanningWorld`).

An environment is one episode at a time: :meth:`~Environment.reset` starts the episode a
seed names (start state and goal are a function of the seed only, so every planner meets
the same episodes), :meth:`~Environment.step` applies one action, :meth:`~Environment.observe`
is the camera frame a video model sees, :meth:`~Environment.goal_image` the frame of the
scene as it should end (for costs that know nothing of the world), and
:meth:`~Environment.distance` / :meth:`~Environment.success` measure the task. Any
simulator (or robot) with these methods can be planned in with
:func:`seqvae.control.mpc.run_episode` and a :class:`seqvae.control.planner.VideoModelPlanner`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Environment(Protocol):
    """One episode of a task with a camera; actions are vectors in a box."""

    action_dim: int                # A
    action_low: float              # every action component lies in [action_low, action_high]
    action_high: float
    success_threshold: float       # success(): distance() below this

    def reset(self, seed: int) -> None:
        """Start the episode ``seed`` names (its start state and goal depend on it alone)."""

    def step(self, action: Tensor) -> None:
        """Apply ``action [A]`` (float32, in the box)."""

    def observe(self) -> Tensor:
        """The camera frame now, ``uint8 [C, H, W]``: what a video model sees (no goal marker)."""

    def goal_image(self) -> Tensor:
        """The camera frame of the scene as it should end, ``uint8 [C, H, W]``."""

    def distance(self) -> float:
        """How far the task is from done (the world's own units; 0: done exactly)."""

    def success(self) -> bool:
        """Whether the task counts as done now."""

    def view(self) -> Tensor:
        """The frame shown in episode videos, ``uint8 [C, H, W]`` (the goal may be drawn in)."""


@runtime_checkable
class FrameCost(Protocol):
    """A planning cost read off predicted frames (see :mod:`seqvae.control.costs`).

    The planner tells it about the episode (:meth:`reset`, what a user would tell: the goal)
    and each observed frame (:meth:`observe`); :meth:`__call__` scores rollouts.
    """

    def reset(self, env: Environment) -> None:
        """A new episode in ``env`` (read the goal here)."""

    def observe(self, frame: Tensor) -> None:
        """The latest observed camera frame, float ``[C, H, W]`` in [0, 1]."""

    def __call__(self, frames: Tensor, actions: Tensor) -> Tensor:
        """Costs ``[n]`` of predicted frames ``[n, T, C, H, W]`` (in [0, 1]) that the actions
        ``[n, T, A]`` lead to (lower is better)."""


@dataclass(frozen=True)
class PlanningWorld:
    """What a world registers for ``seqvae plan`` (:data:`seqvae.registry.WORLDS`).

    Attributes:
        name: the world's name (``seqvae plan world=NAME``).
        data_name: the data set its video models are trained on (a learned model must have been).
        cost_config: the dataclass of the world's own cost settings (``plan.cost.*``).
        make_env: ``make_env(data_cfg) -> Environment`` for a model trained on ``data_cfg``
            (None: the world's default settings).
        frame_cost: ``frame_cost(env, cost_cfg) -> FrameCost``, the world's cost read off
            predicted frames (what the learned planner scores with by default).
        true_model: ``true_model(env, cost_cfg) -> PlanningModel`` that plans with the true
            simulator state (the upper bound), or None.
        perfect_video_model: ``perfect_video_model(env) -> VideoPredictor`` rendering what the
            simulator does (the learned path with perfect predictions), or None.
        task: the task in a few words, for episode videos ("push the object to the ring").
        prediction_check: ``prediction_check() -> PredictionCheck`` (:mod:`seqvae.control.live`):
            how far a model's live prediction is from the environment's truth, or None.
    """

    name: str
    data_name: str
    cost_config: type
    make_env: Callable[[Any], Environment]
    frame_cost: Callable[[Environment, Any], FrameCost]
    true_model: Callable[[Environment, Any], Any] | None = None
    perfect_video_model: Callable[[Environment], Any] | None = None
    task: str = "reach the goal"
    prediction_check: Callable[[], Any] | None = None
