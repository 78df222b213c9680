"""The closed loop: plan with CEM, act, observe, replan ("push object 0 to the goal")."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqvae.control.cem import CEMConfig, cem_plan
from seqvae.threads import ThreadGovernor, governed
from seqvae.worlds.pusher.planners import PlannerModel
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import ACTION_DIM, PusherState


@dataclass
class EpisodeRecord:
    """One closed-loop episode."""

    frames: Tensor            # uint8 [steps + 1, 3, H, W] camera view with the goal ring
    actions: Tensor           # [steps, A] executed actions
    distances: Tensor         # [steps + 1] object-0 distance to the goal (table units)
    goal: Tensor              # [2]
    plan_steps: list[int] = field(default_factory=list)      # when each plan was made
    plan_frames: list[Tensor] = field(default_factory=list)  # [horizon, 3, H, W] predicted future of each plan
    plan_costs: list[float] = field(default_factory=list)
    seconds: float = 0.0      # wall time of the episode (planning included)

    @property
    def final_distance(self) -> float:
        return float(self.distances[-1])


def run_mpc_episode(sim: PusherSim, state: PusherState, goal: Tensor, planner: PlannerModel | None,
                    cfg: CEMConfig, steps: int, replan_every: int = 1, generator: torch.Generator | None = None,
                    record_plans: bool = False, episode_seed: int | None = None,
                    governor: ThreadGovernor | None = None, end_aware: bool = True) -> EpisodeRecord:
    """Run one episode of "push object 0 to the goal" in closed loop.

    Every ``replan_every`` steps CEM plans ``cfg.horizon`` actions with ``planner`` (warm
    started from the rest of the previous plan, padded with zeros) and the first
    ``replan_every`` of them are executed, observing after each. ``planner=None`` takes
    uniformly random actions in the CEM box instead (the baseline).

    Args:
        state: the start (N = 1); ``goal``: ``[1, 2]``.
        generator: CEM's (or the random policy's) noise.
        record_plans: keep each plan's predicted future (``planner.preview``) for rendering.
        episode_seed: seeds the planner model's own randomness (a learned model's latents;
            None: the backend's default seed).
        governor: picks the CPU threads of each planning call from their times (see
            :mod:`seqvae.threads`; share one across episodes).
        end_aware: when fewer than ``cfg.horizon`` steps of the episode remain, plans are
            scored on those steps only: the cost is read where the episode ends, not beyond
            it (the later actions of the plan are never executed). Off: every plan is
            scored ``cfg.horizon`` steps ahead, past the end of the episode, and a plan that
            would reach the goal after the episode has ended looks as good as one that
            reaches it in time.
    """
    if state.batch_size != 1:
        raise ValueError(f"run_mpc_episode runs one environment, got a batch of {state.batch_size}")
    if steps < 1 or replan_every < 1 or replan_every > cfg.horizon:
        raise ValueError(f"need steps >= 1 and 1 <= replan_every <= horizon ({cfg.horizon}), "
                         f"got steps={steps}, replan_every={replan_every}")
    start = time.perf_counter()
    generator = generator or torch.Generator().manual_seed(0)
    a_dim = ACTION_DIM
    if planner is not None:
        planner.reset(state, goal, seed=episode_seed)
    frames = [sim.render(state, goal)[0]]
    distances = [float(sim.object_distance(state, goal)[0])]
    actions: list[Tensor] = []
    record = EpisodeRecord(frames=torch.empty(0), actions=torch.empty(0), distances=torch.empty(0), goal=goal[0].clone())
    plan: Tensor | None = None
    offset = 0
    for t in range(steps):
        if planner is None:
            action = torch.rand(a_dim, generator=generator, device=generator.device) \
                * (cfg.action_high - cfg.action_low) + cfg.action_low
        else:
            if plan is None or offset >= replan_every:
                init = None
                if plan is not None:
                    init = torch.cat([plan[offset:], plan.new_zeros(offset, a_dim)])
                remaining = steps - t
                costs = planner.costs
                if end_aware and remaining < cfg.horizon:
                    def costs(actions: Tensor, n: int = remaining) -> Tensor:
                        return planner.costs(actions[:, :n])
                with governed(governor):
                    plan, info = cem_plan(costs, a_dim, cfg, generator, init_mean=init)
                offset = 0
                if record_plans:
                    record.plan_steps.append(t)
                    record.plan_frames.append(planner.preview(plan).cpu())
                    record.plan_costs.append(info.best_cost)
            action = plan[offset]
            offset += 1
        action = action.to(state.device, torch.float32)
        state = sim.step(state, action[None])
        if planner is not None:
            planner.observe(state, action)
        actions.append(action.cpu())
        frames.append(sim.render(state, goal)[0])
        distances.append(float(sim.object_distance(state, goal)[0]))
    record.frames = torch.stack(frames).cpu()
    record.actions = torch.stack(actions)
    record.distances = torch.tensor(distances)
    record.seconds = time.perf_counter() - start
    return record
