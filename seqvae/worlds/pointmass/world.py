"""A point mass that a force pushes to a target on a 64×64 table: dynamics, rendering,
the environment (:class:`PointMassEnv`), its costs and a true-state planning model."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae.io import frames_to_float

BACKGROUND, MASS, RING = (0.16, 0.18, 0.22), (1.0, 0.55, 0.1), (0.3, 0.85, 0.4)
ACTION_DIM = 2


@dataclass
class PointMassConfig:
    """The table is [-1, 1]²; an action [2] in [-1, 1] is the force of one step."""

    image_size: int = 64
    radius: float = 0.12            # of the mass
    force: float = 0.05             # velocity added per step by a unit action
    damping: float = 0.8            # share of the velocity kept per step
    goal_radius: float = 0.15       # success: the mass's centre within this of the goal (the ring drawn)
    goal_min_distance: float = 0.6  # goals lie at least this far from the start

    def __post_init__(self) -> None:
        if not (0 < self.radius < 0.5 and self.force > 0 and 0 <= self.damping < 1 and self.image_size >= 16):
            raise ValueError("pointmass world: need 0 < radius < 0.5, force > 0, 0 <= damping < 1, image_size >= 16")


def step(cfg: PointMassConfig, pos: Tensor, vel: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
    """One step of ``[N, 2]`` positions and velocities under forces ``[N, 2]``; the walls
    stop the mass and reverse half its velocity."""
    vel = cfg.damping * vel + cfg.force * action.clamp(-1, 1)
    pos = pos + vel
    limit = 1.0 - cfg.radius
    hit = pos.abs() > limit
    return pos.clamp(-limit, limit), torch.where(hit, -0.5 * vel, vel)


def render(cfg: PointMassConfig, pos: Tensor, goal: Tensor | None = None) -> Tensor:
    """Frames ``uint8 [N, 3, S, S]`` of masses at ``pos [N, 2]`` (``goal [N, 2]``: a ring)."""
    s = cfg.image_size
    axis = (torch.arange(s, device=pos.device) + 0.5) / s * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")                                  # y downward
    pixel = 2.0 / s

    def coverage(centre: Tensor, radius: float) -> Tensor:                              # antialiased disc [N, S, S]
        d = ((xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2).sqrt()
        return ((radius - d) / pixel + 0.5).clamp(0, 1)

    image = torch.tensor(BACKGROUND, device=pos.device)[None, :, None, None].expand(pos.shape[0], 3, s, s)
    if goal is not None:
        ring = (coverage(goal, cfg.goal_radius) - coverage(goal, cfg.goal_radius - 1.5 * pixel))[:, None]
        image = image * (1 - ring) + torch.tensor(RING, device=pos.device)[None, :, None, None] * ring
    disc = coverage(pos, cfg.radius)[:, None]
    image = image * (1 - disc) + torch.tensor(MASS, device=pos.device)[None, :, None, None] * disc
    return (image * 255).round().to(torch.uint8)


def locate_mass(frames: Tensor, prior: Tensor, temperature: float = 0.15) -> Tensor:
    """Where the mass is in float frames ``[N, 3, S, S]``: the centroid of pixels weighted
    by their closeness to its colour, or ``prior [N, 2]`` where none is seen."""
    n, _, s, _ = frames.shape
    axis = (torch.arange(s, device=frames.device) + 0.5) / s * 2 - 1
    colour = torch.tensor(MASS, device=frames.device)[None, :, None, None]
    w = torch.exp(-((frames - colour) ** 2).sum(1) / temperature ** 2)                 # [N, S, S]
    mass = w.sum((1, 2))
    x, y = (w * axis[None, None, :]).sum((1, 2)), (w * axis[None, :, None]).sum((1, 2))
    found = torch.stack([x, y], -1) / mass.clamp(min=1e-6)[:, None]
    return torch.where((mass > 1.0)[:, None], found, prior.expand(n, 2))


class PointMassEnv:
    """Bring the mass to the goal (:class:`~seqvae.control.environment.Environment`)."""

    action_dim, action_low, action_high = ACTION_DIM, -1.0, 1.0

    def __init__(self, cfg: PointMassConfig | None = None) -> None:
        self.cfg = cfg or PointMassConfig()
        self.success_threshold = self.cfg.goal_radius

    def reset(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.pos, self.vel = torch.rand(1, 2, generator=g) * 1.4 - 0.7, torch.zeros(1, 2)
        goal = torch.rand(16, 2, generator=g) * 1.4 - 0.7
        far = (goal - self.pos).norm(dim=-1) >= self.cfg.goal_min_distance
        self.goal = goal[int(far.float().argmax())][None]

    def step(self, action: Tensor) -> None:
        self.pos, self.vel = step(self.cfg, self.pos, self.vel, action.float()[None])

    def observe(self) -> Tensor:
        return render(self.cfg, self.pos)[0]

    def view(self) -> Tensor:
        return render(self.cfg, self.pos, self.goal)[0]

    def goal_image(self) -> Tensor:
        return render(self.cfg, self.goal)[0]

    def distance(self) -> float:
        return float((self.pos - self.goal).norm())

    def success(self) -> bool:
        return self.distance() < self.success_threshold


@dataclass
class PointMassCostConfig:
    """``plan.cost`` of this world: the final distance plus ``speed`` × the final speed."""

    speed: float = 1.0
    temperature: float = 0.15       # the colour match of :func:`locate_mass`


class TrackerCost:
    """The final distance to the goal read off predicted frames (:func:`locate_mass`), plus
    the speed between the last two frames (a mass still moving will not stay at the goal)."""

    def __init__(self, env: PointMassEnv, cost: PointMassCostConfig | None = None) -> None:
        self.cost = cost or PointMassCostConfig()

    def reset(self, env: PointMassEnv) -> None:
        self.goal = env.goal[0]

    def observe(self, frame: Tensor) -> None:
        self.prior = locate_mass(frame[None], torch.zeros(1, 2, device=frame.device), self.cost.temperature)[0]

    def __call__(self, frames: Tensor, actions: Tensor) -> Tensor:
        last = locate_mass(frames[:, -1], self.prior, self.cost.temperature)
        before = locate_mass(frames[:, -2], self.prior, self.cost.temperature) if frames.shape[1] > 1 else last
        return (last - self.goal.to(last)).norm(dim=-1) + self.cost.speed * (last - before).norm(dim=-1)


class TrueModel:
    """The true dynamics as the planner's model: the same cost from the true state."""

    name = "true_sim"

    def __init__(self, env: PointMassEnv, cost: PointMassCostConfig | None = None) -> None:
        self.env, self.cost = env, cost or PointMassCostConfig()

    def reset(self, env: PointMassEnv, seed: int = 0) -> None:
        self.env = env

    def observe(self, env: PointMassEnv, action: Tensor) -> None:
        self.env = env

    def _roll(self, actions: Tensor) -> list[Tensor]:
        k = actions.shape[0]
        pos, vel, path = self.env.pos.expand(k, 2), self.env.vel.expand(k, 2), []
        for t in range(actions.shape[1]):
            pos, vel = step(self.env.cfg, pos, vel, actions[:, t])
            path.append(pos)
        return path

    def costs(self, actions: Tensor) -> Tensor:
        path = self._roll(actions)
        before = path[-2] if len(path) > 1 else self.env.pos.expand_as(path[-1])
        return (path[-1] - self.env.goal).norm(dim=-1) + self.cost.speed * (path[-1] - before).norm(dim=-1)

    def preview(self, actions: Tensor) -> Tensor:
        return frames_to_float(render(self.env.cfg, torch.cat(self._roll(actions[None]))))
