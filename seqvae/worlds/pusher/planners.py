"""World models the MPC loop plans with: the true simulator (the upper bound), a learned
action-conditioned video predictor seen through the camera, and the simulator's frames
as a perfect video predictor (the learned path with perfect predictions)."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from seqvae.control.rollout import rollout
from seqvae.data.spec import DataSpec
from seqvae.io import frames_to_float
from seqvae.models.base import VideoPredictor
from seqvae.worlds.pusher.costs import PushCostConfig, frame_pusher_cost, gripper_kinematics, pusher_object_cost
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.tracking import locate_color
from seqvae.worlds.pusher.world import ACTION_DIM, GRIPPER_INNER, PusherState


class PlannerModel(Protocol):
    """What the MPC loop needs from a model of the world."""

    name: str

    def reset(self, state: PusherState, goal: Tensor, seed: int = 0) -> None:
        """Start an episode at ``state`` (N = 1) with ``goal [1, 2]``; ``seed`` seeds the
        model's own randomness (a stochastic model's latent samples) for the episode."""

    def observe(self, state: PusherState, action: Tensor) -> None:
        """The environment took ``action [A]`` and is now in ``state``."""

    def costs(self, actions: Tensor) -> Tensor:
        """Costs ``[K]`` of candidate plans ``[K, horizon, A]`` from the current situation."""

    def preview(self, actions: Tensor) -> Tensor:
        """The future a plan ``[horizon, A]`` is expected to bring, ``[horizon, 3, H, W]`` in [0, 1]."""


class TrueSimulatorModel:
    """The simulator as the planner's model (knows the true state): the upper bound of
    what a learned model can reach with the same planner and cost."""

    name = "true_sim"

    def __init__(self, sim: PusherSim, cost: PushCostConfig | None = None) -> None:
        self.sim, self.cost = sim, cost or PushCostConfig()
        self.state: PusherState | None = None
        self.goal: Tensor | None = None

    def reset(self, state: PusherState, goal: Tensor, seed: int = 0) -> None:
        self.state, self.goal = state, goal

    def observe(self, state: PusherState, action: Tensor) -> None:
        self.state = state

    def costs(self, actions: Tensor) -> Tensor:
        k = actions.shape[0]
        grip, objs, _ = self.sim.simulate(self.state.repeat(k), actions.to(self.state.device))
        return pusher_object_cost(objs[:, -1, 0], self.goal[0], grip[:, -1], self.sim.cfg, self.cost)

    def preview(self, actions: Tensor) -> Tensor:
        frames, _ = self.sim.rollout(self.state, actions[None].to(self.state.device))
        return frames_to_float(frames[0, 1:])


class LearnedModel:
    """An action-conditioned video predictor as the planner's model.

    It sees only camera frames (rendered without the goal marker, as in training) and its
    own actions, plus what a user would tell it: the goal position and the colour of the
    object to push. It keeps the last ``n_ctx`` frames and the actions between them as
    context; at the start of an episode the first frame is repeated with zero actions
    (exactly what a still scene looks like). Costs are :func:`frame_pusher_cost` on the
    last predicted frame, averaged over ``samples`` futures per candidate (common random
    numbers across candidates, see :mod:`seqvae.control.rollout`). The object is always located in
    the predicted frames; the gripper of the shaping term is dead-reckoned from its observed
    position and the candidate's actions (``cost.gripper_source = "kinematics"``, the default:
    what a robot knows of its own arm) or, with ``"frames"``, located in the predicted frames too.
    """

    name = "learned"

    def __init__(self, model: VideoPredictor, sim: PusherSim, samples: int = 1, seed: int = 0,
                 cost: PushCostConfig | None = None, precision: str = "auto", max_batch: int | None = None) -> None:
        if not model.action_dim:
            raise ValueError("LearnedModel needs an action-conditioned model (train with model.action_conditioned=true)")
        self.model, self.sim, self.samples, self.seed = model, sim, samples, seed
        self.cost = cost or PushCostConfig()
        self.precision, self.max_batch = precision, max_batch
        self.n_ctx = model.n_past
        self.device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
        self.generator = torch.Generator(device="cpu")          # planning rollouts
        self.preview_generator = torch.Generator(device="cpu")  # previews (do not disturb planning's stream)
        self.frames: list[Tensor] = []
        self.actions: list[Tensor] = []

    def reset(self, state: PusherState, goal: Tensor, seed: int | None = None) -> None:
        self.goal = goal[0].to(self.device)
        self.color = state.object_color[0, 0].to(self.device)
        self.generator.manual_seed(self.seed if seed is None else seed)
        self.preview_generator.manual_seed(self.seed if seed is None else seed)
        if isinstance(self.model, SimulatorVideoModel):
            self.model.set_state(state)
        first = self._camera(state)
        self.frames = [first] * self.n_ctx
        self.actions = [torch.zeros(self.model.action_dim, device=self.device)] * (self.n_ctx - 1)
        self._update_priors()

    def _camera(self, state: PusherState) -> Tensor:
        return frames_to_float(self.sim.render(state)[0].to(self.device))       # [3, H, W], no goal marker

    def _update_priors(self) -> None:
        """Where object 0 and the gripper are in the latest frame (the trackers' priors)."""
        last = self.frames[-1][None]
        prior, mass = locate_color(last, self.color, self.cost.color_temperature, window=self.cost.window, with_mass=True)
        self.object_prior, self.object_mass = prior[0], mass[0]
        inner = torch.tensor(GRIPPER_INNER, device=self.device)
        self.gripper_prior = locate_color(last, inner, self.cost.gripper_temperature, window=self.cost.window)[0]

    def observe(self, state: PusherState, action: Tensor) -> None:
        if isinstance(self.model, SimulatorVideoModel):
            self.model.set_state(state)
        self.frames = (self.frames + [self._camera(state)])[-self.n_ctx:]
        self.actions = (self.actions + [action.to(self.device, torch.float32)])[-(self.n_ctx - 1):] if self.n_ctx > 1 else []
        self._update_priors()

    def _context(self) -> tuple[Tensor, Tensor | None]:
        ctx = torch.stack(self.frames)[None]                                        # [1, n_ctx, 3, H, W]
        acts = torch.stack(self.actions)[None] if self.actions else None           # [1, n_ctx-1, A]
        return ctx, acts

    def _cost_fn(self, frames: Tensor, index: Tensor) -> Tensor:
        final = None
        if self.cost.gripper_source == "kinematics":
            final = gripper_kinematics(self.gripper_prior, self._candidates[index[:, 1]], self.sim.cfg)
        return frame_pusher_cost(frames, self.goal, self.color, self.object_prior, self.gripper_prior,
                                 self.sim.cfg, self.cost, gripper_final=final, object_mass=self.object_mass)

    def costs(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        self._candidates = actions.to(self.device, torch.float32)
        out = rollout(self.model, ctx, actions[None].to(self.device), self.samples, generator=self.generator,
                      context_actions=acts, cost_fn=self._cost_fn, return_frames=False,
                      precision=self.precision, max_batch=self.max_batch)
        return out.costs[0].mean(-1)                                                # (K,)

    def preview(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        out = rollout(self.model, ctx, actions[None, None].to(self.device), 1, generator=self.preview_generator,
                      context_actions=acts, precision=self.precision)
        return out.frames[0, 0, 0]


class SimulatorVideoModel(nn.Module):
    """A perfect action-conditioned video predictor: renders what the simulator does.

    Plugged into :class:`LearnedModel` (which keeps it told of the true state), it runs the
    learned-model planning path — rollouts of frames, the colour-tracker cost, CEM —
    with perfect predictions, separating what the frame-based cost and planner can do
    from what a trained model gets right. It ignores the context frames and latents.
    """

    def __init__(self, sim: PusherSim, n_past: int = 2, n_eval: int = 10) -> None:
        super().__init__()
        size = sim.cfg.image_size
        self.sim, self.n_past, self.n_eval, self.action_dim, self.z_dim = sim, n_past, n_eval, ACTION_DIM, 0
        self.spec = DataSpec(3, size, size, n_past + n_eval, action_dim=ACTION_DIM)
        self.register_buffer("_device_anchor", torch.zeros(1))   # gives rollout a device to check
        self.state: PusherState | None = None

    def encode(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        """No codes; the frames themselves stand for the features (rollout sizes its chunks by them)."""
        return frames.new_zeros(*frames.shape[:2], 0), [frames]

    def set_state(self, state: PusherState) -> None:
        """The true state at the last context frame."""
        self.state = state

    @torch.no_grad()
    def predict(self, context: Tensor, n_future: int, actions: Tensor | None = None,
                generator: torch.Generator | None = None, sample_pixels: bool = False,
                noise: Tensor | None = None) -> Tensor:
        """Frames ``[B, n_future, 3, H, W]`` after ``actions[:, n_ctx - 1:]`` from the known state."""
        if self.state is None:
            raise ValueError("SimulatorVideoModel needs set_state(state) before predicting")
        b, n_ctx = context.shape[:2]
        frames, _ = self.sim.rollout(self.state.repeat(b), actions[:, n_ctx - 1:n_ctx - 1 + n_future].float())
        return frames_to_float(frames[:, 1:]).to(context.device)
