"""The pushing world as a planning task ("push object 0 to the goal"): its environment
(:class:`PusherEnv`), its costs — from the true state (:class:`TrueSimulatorModel`, the
upper bound) or read off predicted frames by the colour tracker (:class:`PushTrackerCost`) —
and a perfect video model (:class:`SimulatorVideoModel`). Registered as world ``pusher``
for the generic planning room (:mod:`seqvae.control`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqvae.control.environment import PlanningWorld
from seqvae.data.spec import DataSpec
from seqvae.io import frames_to_float
from seqvae.registry import register_world
from seqvae.worlds.pusher.costs import PushCostConfig, frame_pusher_cost, gripper_kinematics, pusher_path_cost
from seqvae.worlds.pusher.dataset import PusherDataConfig
from seqvae.worlds.pusher.live import ObjectPositionCheck
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.tracking import locate_color
from seqvae.worlds.pusher.world import ACTION_DIM, GRIPPER_INNER, PusherState


class PusherEnv:
    """One episode of "push object 0 to the goal" (:class:`~seqvae.control.environment.Environment`).

    ``reset(seed)`` draws the start state and the goal from ``torch.Generator().manual_seed(seed)``;
    the camera frame is rendered without the goal ring (as in training), the episode view with it.
    Success: object 0 within one object radius of the goal.
    """

    action_dim = ACTION_DIM
    action_low, action_high = -1.0, 1.0

    def __init__(self, sim: PusherSim | None = None) -> None:
        self.sim = sim or PusherSim()
        self.success_threshold = self.sim.cfg.object_radius
        self.state: PusherState | None = None
        self.goal: Tensor | None = None     # [1, 2]

    def reset(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.state = self.sim.reset(1, generator)
        self.goal = self.sim.sample_goal(self.state, generator)

    def step(self, action: Tensor) -> None:
        self.state = self.sim.step(self.state, action.to(self.state.device, torch.float32)[None])

    def observe(self) -> Tensor:
        return self.sim.render(self.state)[0]

    def view(self) -> Tensor:
        return self.sim.render(self.state, self.goal)[0]

    def goal_image(self) -> Tensor:
        """The scene with object 0 on the goal and the gripper just behind it, where a push
        toward the goal ends; the other objects as they are now."""
        state = self.state.clone()
        start, goal = state.object_pos[:, 0], self.goal.to(state.object_pos)
        direction = (goal - start) / (goal - start).norm(dim=-1, keepdim=True).clamp(min=1e-6)
        reach = self.sim.cfg.object_radius + self.sim.cfg.gripper_radius
        limit = 1.0 - self.sim.cfg.gripper_radius
        state.object_pos[:, 0] = goal
        state.gripper_pos = (goal - reach * direction).clamp(-limit, limit)
        return self.sim.render(state)[0]

    def distance(self) -> float:
        return float(self.sim.object_distance(self.state, self.goal)[0])

    def success(self) -> bool:
        return self.distance() < self.success_threshold


class TrueSimulatorModel:
    """The simulator as the planner's model (knows the true state): the upper bound of
    what a learned model can reach with the same planner and cost."""

    name = "true_sim"

    def __init__(self, env: PusherEnv, cost: PushCostConfig | None = None) -> None:
        self.env, self.cost = env, cost or PushCostConfig()

    def reset(self, env: PusherEnv, seed: int = 0) -> None:
        self.env = env

    def observe(self, env: PusherEnv, action: Tensor) -> None:
        self.env = env

    def costs(self, actions: Tensor) -> Tensor:
        state, sim = self.env.state, self.env.sim
        grip, objs, _ = sim.simulate(state.repeat(actions.shape[0]), actions.to(state.device))
        return pusher_path_cost(objs[:, 1:, 0], self.env.goal[0], grip[:, 1:], sim.cfg, self.cost)

    def preview(self, actions: Tensor) -> Tensor:
        frames, _ = self.env.sim.rollout(self.env.state, actions[None].to(self.env.state.device))
        return frames_to_float(frames[0, 1:])


class PushTrackerCost:
    """The push cost read off predicted frames (:func:`frame_pusher_cost`: the last frame, or
    every frame with a running cost).

    It knows what a user would tell the robot — the goal position and the colour of the
    object to push — and, from the latest observed frame, where object 0 and the gripper
    are (the trackers' priors). The gripper of the shaping term is dead-reckoned from its
    observed position and the candidate's actions (``cost.gripper_source = "kinematics"``,
    the default: what a robot knows of its own arm) or, with ``"frames"``, located in the
    predicted frames too, or with ``"kinematics_then_frames"`` looked for in them from the
    dead-reckoned position (an arm an object blocked is where the frames show it).
    """

    def __init__(self, env: PusherEnv, cost: PushCostConfig | None = None) -> None:
        self.sim_cfg, self.cost = env.sim.cfg, cost or PushCostConfig()

    def reset(self, env: PusherEnv) -> None:
        self.goal = env.goal[0].float()
        self.color = env.state.object_color[0, 0].float()

    def observe(self, frame: Tensor) -> None:
        last = frame[None]
        device = frame.device
        self.goal, self.color = self.goal.to(device), self.color.to(device)
        prior, mass = locate_color(last, self.color, self.cost.color_temperature, window=self.cost.window,
                                   with_mass=True)
        self.object_prior, self.object_mass = prior[0], mass[0]
        inner = torch.tensor(GRIPPER_INNER, device=device)
        self.gripper_prior = locate_color(last, inner, self.cost.gripper_temperature, window=self.cost.window)[0]

    def __call__(self, frames: Tensor, actions: Tensor) -> Tensor:
        final = None
        if self.cost.gripper_source in ("kinematics", "kinematics_then_frames"):
            final = gripper_kinematics(self.gripper_prior, actions, self.sim_cfg, path=self.cost.running > 0)
        return frame_pusher_cost(frames, self.goal, self.color, self.object_prior, self.gripper_prior,
                                 self.sim_cfg, self.cost, gripper_final=final, object_mass=self.object_mass)


class SimulatorVideoModel(nn.Module):
    """A perfect action-conditioned video predictor: renders what the simulator does from
    the environment's current state (an ordinary video model to the planner).

    Planned with, it runs the learned-model path — rollouts of frames, the tracker cost,
    the optimizer — with perfect predictions, separating what the frame-based cost and
    planner can do from what a trained model gets right. It ignores the context frames and
    latents: the last context frame is always the environment's current state.
    """

    def __init__(self, env: PusherEnv, n_past: int = 2, n_eval: int = 10) -> None:
        super().__init__()
        size = env.sim.cfg.image_size
        self.env, self.n_past, self.n_eval, self.action_dim, self.z_dim = env, n_past, n_eval, ACTION_DIM, 0
        self.spec = DataSpec(3, size, size, n_past + n_eval, action_dim=ACTION_DIM)

    def rollout_row_bytes(self, horizon: int, keep_frames: bool) -> int:
        """Working memory of one rollout row: the simulated frames (uint8, then float32)."""
        return 5 * self.spec.channels * self.spec.height * self.spec.width * (horizon + 1)

    @torch.no_grad()
    def predict(self, context: Tensor, n_future: int, actions: Tensor | None = None,
                generator: torch.Generator | None = None, sample_pixels: bool = False,
                noise: Tensor | None = None) -> Tensor:
        """Frames ``[B, n_future, 3, H, W]`` after ``actions[:, n_ctx - 1:]`` from the current state."""
        b, n_ctx = context.shape[:2]
        state = self.env.state
        frames, _ = self.env.sim.rollout(state.repeat(b),
                                         actions[:, n_ctx - 1:n_ctx - 1 + n_future].float().to(state.device))
        return frames_to_float(frames[:, 1:]).to(context.device)


def make_env(data_cfg: Any = None) -> PusherEnv:
    """The pushing world a model trained on ``data_cfg`` (a ``pusher`` data config) plans in:
    its sizes, radii, step and table appearance (None: the default world)."""
    if data_cfg is None:
        return PusherEnv()
    if not isinstance(data_cfg, PusherDataConfig):
        raise ValueError(f"planning in world 'pusher' needs a model trained on the 'pusher' data set, "
                         f"this one was trained on {data_cfg.name!r}")
    return PusherEnv(PusherSim(data_cfg.world))


register_world(PlanningWorld(
    name="pusher", data_name="pusher", cost_config=PushCostConfig, make_env=make_env,
    frame_cost=lambda env, cost: PushTrackerCost(env, cost), true_model=lambda env, cost: TrueSimulatorModel(env, cost),
    perfect_video_model=lambda env: SimulatorVideoModel(env), task="push the object to the ring",
    prediction_check=ObjectPositionCheck))
