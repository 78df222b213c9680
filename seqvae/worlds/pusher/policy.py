"""The random pushing policy that makes the data set's episodes, and episode sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import EPS, PusherState, sq_norm


@dataclass
class PushPolicyConfig:
    """A smooth random policy that heads for objects often enough to push them."""

    target_probability: float = 0.7  # chance a new segment heads through an object (else: random velocity)
    min_segment: int = 3             # segment lengths (steps) are uniform in [min_segment, max_segment]
    max_segment: int = 8
    inertia: float = 0.4             # action_t = inertia·action_{t−1} + (1 − inertia)·desired + noise
    noise: float = 0.2               # uniform noise amplitude per action component
    min_speed: float = 0.4           # random-velocity segments: speed uniform in [min_speed, 1]
    overshoot: float = 2.5           # targets lie this many object radii past the object's centre


@dataclass
class PolicyState:
    """Memory of :class:`RandomPushPolicy` (batched; passed in and returned)."""

    steps_left: Tensor  # [N] steps left in the current segment
    use_target: Tensor  # [N] bool: heading for ``target`` (else: constant ``velocity``)
    target: Tensor      # [N, 2]
    velocity: Tensor    # [N, 2]
    action: Tensor      # [N, 2] the previous action


class RandomPushPolicy:
    """Piecewise-constant random intentions, smoothed: each segment either heads through a
    random active object (to a point ``overshoot`` radii beyond it, so it gets pushed) or
    moves with a random constant velocity. Consumes ``UNIFORMS_PER_STEP`` uniforms per act."""

    UNIFORMS_PER_STEP = 8

    def __init__(self, sim: PusherSim, cfg: PushPolicyConfig | None = None) -> None:
        self.sim = sim
        self.cfg = cfg or PushPolicyConfig()
        if not 1 <= self.cfg.min_segment <= self.cfg.max_segment:
            raise ValueError("need 1 <= min_segment <= max_segment")

    def init(self, state: PusherState) -> PolicyState:
        """Fresh memory: the first call to :meth:`act` starts a segment."""
        N, dev = state.batch_size, state.device
        z = torch.zeros(N, 2, device=dev)
        return PolicyState(torch.zeros(N, device=dev), torch.zeros(N, dtype=torch.bool, device=dev), z, z, z)

    def act(self, state: PusherState, memory: PolicyState, u: Tensor) -> tuple[Tensor, PolicyState]:
        """Action ``[N, 2]`` in [-1, 1] and the new memory, from uniforms ``u: [N, 8]``."""
        c, sc = self.cfg, self.sim.cfg
        N, dev = state.batch_size, state.device
        g = state.gripper_pos
        new = memory.steps_left <= 0

        length = c.min_segment + torch.floor(u[:, 0] * (c.max_segment - c.min_segment + 1))
        length = length.clamp(max=float(c.max_segment))
        use_target = u[:, 1] < c.target_probability

        count = state.object_active.long().sum(dim=1)
        pick = torch.minimum(torch.floor(u[:, 2] * count.float()).long(), count - 1)
        obj = state.object_pos[torch.arange(N, device=dev), pick]
        away = obj - g
        norm = sq_norm(away).sqrt()
        down = torch.tensor([0.0, 1.0], device=dev)
        away = torch.where((norm > EPS)[:, None], away / norm.clamp(min=EPS)[:, None], down)
        target = (obj + away * (c.overshoot * sc.object_radius)).clamp(-self.sim.gripper_limit,
                                                                       self.sim.gripper_limit)

        rv = u[:, 3:5] * 2.0 - 1.0
        rn = sq_norm(rv).sqrt()
        right = torch.tensor([1.0, 0.0], device=dev)
        rdir = torch.where((rn > 1e-3)[:, None], rv / rn.clamp(min=1e-3)[:, None], right)
        velocity = rdir * (c.min_speed + (1.0 - c.min_speed) * u[:, 5:6])

        steps_left = torch.where(new, length, memory.steps_left) - 1.0
        use_target = torch.where(new, use_target, memory.use_target)
        target = torch.where(new[:, None], target, memory.target)
        velocity = torch.where(new[:, None], velocity, memory.velocity)

        seek = (target - g) / sc.max_step
        biggest = torch.maximum(seek[:, 0].abs(), seek[:, 1].abs()).clamp(min=1.0)
        desired = torch.where(use_target[:, None], seek / biggest[:, None], velocity)
        action = c.inertia * memory.action + (1.0 - c.inertia) * desired + c.noise * (u[:, 6:8] * 2.0 - 1.0)
        action = action.clamp(-1.0, 1.0)
        return action, PolicyState(steps_left, use_target, target, velocity, action)


@dataclass
class Episode:
    """Episodes of the random policy: ``seq_len`` observed time steps."""

    start: PusherState   # the first state (its appearance holds for every frame)
    actions: Tensor      # [N, T, 2]; actions[:, t] moves frame t to t+1 (the last: the next action)
    gripper_pos: Tensor  # [N, T, 2]
    object_pos: Tensor   # [N, T, K, 2]


def episode_uniforms(sim: PusherSim, seq_len: int) -> int:
    """How many uniforms :func:`sample_episodes` needs per episode."""
    return sim.reset_uniforms + seq_len * RandomPushPolicy.UNIFORMS_PER_STEP


def sample_episodes(sim: PusherSim, seq_len: int, uniforms: Tensor,
                    policy: RandomPushPolicy | None = None) -> Episode:
    """Run the random policy from fresh resets; row i of ``uniforms [N, episode_uniforms]``
    alone determines episode i (bit-identically, whatever the batch)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    need = episode_uniforms(sim, seq_len)
    if uniforms.dim() != 2 or uniforms.shape[1] != need:
        raise ValueError(f"sample_episodes needs [N, {need}] uniforms, got {tuple(uniforms.shape)}")
    policy = policy or RandomPushPolicy(sim)
    state = sim.reset_from_uniforms(uniforms[:, :sim.reset_uniforms])
    start = state
    steps = uniforms[:, sim.reset_uniforms:].float().view(-1, seq_len, RandomPushPolicy.UNIFORMS_PER_STEP)
    memory = policy.init(state)
    actions, grip, objs = [], [], []
    for t in range(seq_len):
        grip.append(state.gripper_pos)
        objs.append(state.object_pos)
        action, memory = policy.act(state, memory, steps[:, t])
        actions.append(action)
        if t + 1 < seq_len:
            state = sim.step(state, action)
    return Episode(start, torch.stack(actions, 1), torch.stack(grip, 1), torch.stack(objs, 1))
