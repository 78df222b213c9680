"""The closed loop for any :class:`~seqvae.control.environment.Environment`: plan with a
sampling optimizer over a :class:`~seqvae.control.planner.PlanningModel`, act, observe,
replan (:func:`run_episode`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqvae.control.environment import Environment
from seqvae.control.optimizers import Planned, PlanOptimizer
from seqvae.control.planner import PlanningModel
from seqvae.threads import ThreadGovernor, governed


@dataclass
class EpisodeRecord:
    """One closed-loop episode."""

    frames: Tensor            # uint8 [steps + 1, C, H, W] the episode's view (env.view(), the goal may be drawn)
    actions: Tensor           # [steps, A] executed actions
    distances: Tensor         # [steps + 1] env.distance() after each step (the first: at the start)
    success: bool = False     # env.success() at the end
    plan_steps: list[int] = field(default_factory=list)      # when each plan was made
    plan_frames: list[Tensor] = field(default_factory=list)  # [horizon, C, H, W] predicted future of each plan
    plan_costs: list[float] = field(default_factory=list)
    seconds: float = 0.0      # wall time of the episode (planning included)

    @property
    def final_distance(self) -> float:
        return float(self.distances[-1])


def run_episode(env: Environment, model: PlanningModel | None, optimizer: PlanOptimizer, steps: int,
                replan_every: int = 1, generator: torch.Generator | None = None, record_plans: bool = False,
                episode_seed: int | None = None, governor: ThreadGovernor | None = None,
                end_aware: bool = True) -> EpisodeRecord:
    """Run one episode of ``env`` (already :meth:`~Environment.reset`) in closed loop.

    Every ``replan_every`` steps the optimizer plans ``optimizer.horizon`` actions with
    ``model`` (warm started from the rest of the previous plan, padded with zeros; see
    :meth:`~seqvae.control.optimizers.PlanOptimizer.optimize`) and the
    first ``replan_every`` of them are executed, observing after each. ``model=None`` takes
    uniformly random actions in the optimizer's box instead (the baseline).

    Args:
        generator: the optimizer's (or the random policy's) noise.
        record_plans: keep each plan's predicted future (``model.preview``) for rendering.
        episode_seed: seeds the model's own randomness (a learned model's latents; None:
            the model's default seed).
        governor: picks the CPU threads of each planning call from their times (see
            :mod:`seqvae.threads`; share one across episodes).
        end_aware: when fewer than ``optimizer.horizon`` steps of the episode remain, plans
            are scored on those steps only: the cost is read where the episode ends, not
            beyond it (the later actions of the plan are never executed). Off: every plan is
            scored ``horizon`` steps ahead, and a plan that would reach the goal after the
            episode has ended looks as good as one that reaches it in time.
    """
    horizon = optimizer.horizon
    if steps < 1 or replan_every < 1 or replan_every > horizon:
        raise ValueError(f"need steps >= 1 and 1 <= replan_every <= horizon ({horizon}), "
                         f"got steps={steps}, replan_every={replan_every}")
    start = time.perf_counter()
    generator = generator or torch.Generator().manual_seed(0)
    a_dim = env.action_dim
    low, high = optimizer.bounds
    if model is not None:
        model.reset(env, seed=episode_seed)
    frames, distances, actions = [env.view()], [env.distance()], []
    record = EpisodeRecord(frames=torch.empty(0), actions=torch.empty(0), distances=torch.empty(0))
    planned: Planned | None = None
    offset = 0
    for t in range(steps):
        if model is None:
            action = torch.rand(a_dim, generator=generator, device=generator.device) * (high - low) + low
        else:
            if planned is None or offset >= replan_every:
                remaining = steps - t
                costs = model.costs
                if end_aware and remaining < horizon:
                    def costs(candidates: Tensor, n: int = remaining) -> Tensor:
                        return model.costs(candidates[:, :n])
                with governed(governor):   # warm started from what is left of the last plan
                    planned = optimizer.optimize(costs, a_dim, generator, previous=planned, executed=offset)
                offset = 0
                if record_plans:
                    record.plan_steps.append(t)
                    record.plan_frames.append(model.preview(planned.actions).cpu())
                    record.plan_costs.append(planned.best_cost)
            action = planned.actions[offset]
            offset += 1
        action = action.cpu().float()
        env.step(action)
        if model is not None:
            model.observe(env, action)
        actions.append(action)
        frames.append(env.view())
        distances.append(env.distance())
    record.frames = torch.stack(frames).cpu()
    record.actions = torch.stack(actions)
    record.distances = torch.tensor(distances)
    record.success = bool(env.success())
    record.seconds = time.perf_counter() - start
    return record
