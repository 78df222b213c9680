"""Dynamics of the pushing world, batched over ``N`` environments in torch (CPU or GPU).

:meth:`PusherSim.step` is kinematic: the action ``a ∈ [-1, 1]²`` moves the gripper by
``a · max_step`` (clamped to the table); an object the gripper overlaps is displaced out
of it along the contact normal; objects push each other the same way (an object against
the gripper passes the whole push on, so a pushed chain keeps the gripper's speed; free
objects share an overlap equally); everything stays inside the table; objects that
cannot move push the gripper back out instead. A few relaxation sweeps resolve chains of
contacts. All randomness comes from uniforms drawn up front (``*_from_uniforms``) and
only exactly rounded element-wise operations are used, so an environment's trajectory
and frames are bit-identical whatever batch it is simulated in.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from seqvae.worlds.pusher import render
from seqvae.worlds.pusher.world import (
    EPS,
    OBJECT_PALETTE,
    SPAWN_CANDIDATES,
    TABLE_PALETTE,
    TEX_GRAIN_FREQ,
    TEX_LIGHT_X,
    TEX_LIGHT_Y,
    TEX_NOISE_SEED,
    TEX_OFFSET_U,
    TEX_OFFSET_V,
    TEX_PHASE,
    TEX_SCALE,
    TEX_STYLE,
    TEX_VERTICAL,
    TEX_WARP_AMP,
    TEX_WARP_FREQ,
    TEXTURE_PARAMS,
    PusherConfig,
    PusherState,
    pick_rows,
    sq_norm,
)


class PusherSim:
    """Batched simulator and renderer of the pushing world (see the module docstring)."""

    def __init__(self, cfg: PusherConfig | None = None) -> None:
        self.cfg = cfg or PusherConfig()
        c = self.cfg
        self.gripper_limit = 1.0 - c.gripper_radius   # |gripper_pos| <= this, per axis
        self.object_limit = 1.0 - c.object_radius     # |object_pos| <= this, per axis
        self.goal_limit = 1.0 - c.object_radius - 0.5 * c.spawn_clearance
        K = c.num_objects
        # Uniforms consumed by reset_from_uniforms, by role.
        self._reset_layout = {
            "count": 1,
            "objects": K * SPAWN_CANDIDATES * 2,
            "gripper": SPAWN_CANDIDATES * 2,
            "object_order": len(OBJECT_PALETTE),
            "object_jitter": K * 3,
            "table": 1 + 3 + 1,
            "texture": TEXTURE_PARAMS,
        }
        self.reset_uniforms = sum(self._reset_layout.values())
        self._coincident: dict[tuple[int, torch.device], Tensor] = {}

    # ------------------------------------------------------------------- reset
    def reset(self, n: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> PusherState:
        """``n`` fresh episodes. Random numbers are drawn on the generator's device (CPU by
        default) and the state is then moved to ``device``, so a seed gives the same
        episodes on every device."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, self.reset_uniforms, generator=generator, device=gen_device)
        return self.reset_from_uniforms(u.to(device) if device is not None else u)

    def reset_from_uniforms(self, u: Tensor) -> PusherState:
        """Episodes from ``u: [N, reset_uniforms]`` uniforms in [0, 1) (row i -> episode i)."""
        c = self.cfg
        if u.dim() != 2 or u.shape[1] != self.reset_uniforms:
            raise ValueError(f"reset_from_uniforms needs [N, {self.reset_uniforms}] uniforms, got {tuple(u.shape)}")
        u = u.float()
        N, K, C = u.shape[0], c.num_objects, SPAWN_CANDIDATES
        parts = dict(zip(self._reset_layout, u.split(list(self._reset_layout.values()), dim=1)))

        # Number of objects (a prefix of the K slots is active).
        span = c.num_objects - c.min_objects + 1
        count = c.min_objects + (parts["count"][:, 0] * span).long().clamp_(0, span - 1)
        active = torch.arange(K, device=u.device)[None, :] < count[:, None]

        # Objects: the first of C candidates clear of those already placed.
        limit = c.spawn_limit
        cands = (parts["objects"].view(N, K, C, 2) * 2.0 - 1.0) * limit
        placed: list[Tensor] = []
        need = 2.0 * c.object_radius + c.spawn_clearance
        for k in range(K):
            clearance = torch.full((N, C), float("inf"), device=u.device)
            for prev in placed:
                gap = (sq_norm(cands[:, k] - prev[:, None, :])).sqrt()
                clearance = torch.minimum(clearance, gap)
            placed.append(self._choose(cands[:, k], clearance, need))
        object_pos = torch.stack(placed, dim=1)

        # Gripper: anywhere on the table, clear of the active objects.
        gl = self.gripper_limit
        gcands = (parts["gripper"].view(N, C, 2) * 2.0 - 1.0) * gl
        clearance = torch.full((N, C), float("inf"), device=u.device)
        for k in range(K):
            gap = self._box_disc_gap(gcands, object_pos[:, k:k + 1, :])
            gap = torch.where(active[:, k:k + 1], gap, torch.full_like(gap, float("inf")))
            clearance = torch.minimum(clearance, gap)
        gripper_pos = self._choose(gcands, clearance, c.object_radius + c.spawn_clearance)

        # Appearance: distinct object colours, jittered; table colours and texture.
        order = torch.argsort(parts["object_order"], dim=1, stable=True)[:, :K]
        palette = torch.tensor(OBJECT_PALETTE, device=u.device)
        jitter = (parts["object_jitter"].view(N, K, 3) - 0.5) * 0.12
        object_color = (palette[order] + jitter).clamp(0.0, 1.0)

        t = parts["table"]
        base = pick_rows(u, TABLE_PALETTE, t[:, 0]) + (t[:, 1:4] - 0.5) * 0.10
        second = base * (0.72 + 0.14 * t[:, 4:5])
        table_color = torch.stack([base, second], dim=1).clamp(0.0, 1.0)

        x = parts["texture"]
        texture = torch.stack([
            (x[:, TEX_STYLE] < c.tile_probability).float(),      # 1: tiles, 0: wood
            (x[:, TEX_VERTICAL] < 0.5).float(),                  # planks/grain along y instead of x
            0.30 + 0.30 * x[:, TEX_SCALE],                       # plank width / tile size
            x[:, TEX_OFFSET_U] * 4.0,
            x[:, TEX_OFFSET_V] * 4.0,
            6.0 + 10.0 * x[:, TEX_GRAIN_FREQ],                   # grain lines per table unit
            0.02 + 0.10 * x[:, TEX_WARP_AMP],
            0.5 + 2.5 * x[:, TEX_WARP_FREQ],
            x[:, TEX_PHASE],
            torch.floor(x[:, TEX_NOISE_SEED] * 16777216.0),      # integer noise seed < 2^24
            (x[:, TEX_LIGHT_X] - 0.5) * 0.16,                    # light gradient
            (x[:, TEX_LIGHT_Y] - 0.5) * 0.16,
        ], dim=1)
        return PusherState(gripper_pos, object_pos, active, object_color, table_color, texture)

    @staticmethod
    def _choose(cands: Tensor, clearance: Tensor, need: float) -> Tensor:
        """The first candidate ``[N, C, 2]`` with ``clearance >= need``, else the clearest."""
        ok = clearance >= need
        C = cands.shape[1]
        rank = torch.where(ok, torch.arange(C, device=cands.device).float()[None, :],
                           C + 1.0 / (1.0 + clearance.clamp(max=1e6)))
        pick = rank.argmin(dim=1)
        return cands[torch.arange(cands.shape[0], device=cands.device), pick]

    def _box_disc_gap(self, box: Tensor, disc: Tensor) -> Tensor:
        """Distance from disc centres to the gripper square's surface (0 inside), broadcast."""
        h = self.cfg.gripper_radius
        d = disc - box
        return sq_norm(d - d.clamp(-h, h)).sqrt()

    # -------------------------------------------------------------------- step
    def step(self, state: PusherState, action: Tensor) -> PusherState:
        """Advance every environment one step with ``action: [N, 2]`` (clamped to [-1, 1]).

        Pure: returns a new state; ``state`` is not modified.
        """
        c = self.cfg
        N = state.batch_size
        if action.shape != (N, 2):
            raise ValueError(f"step needs actions of shape [{N}, 2], got {tuple(action.shape)}")
        delta = action.to(state.gripper_pos).clamp(-1.0, 1.0) * (c.max_step / c.substeps)
        g, objs, active = state.gripper_pos, state.object_pos, state.object_active
        for _ in range(c.substeps):
            g = (g + delta).clamp(-self.gripper_limit, self.gripper_limit)
            for _ in range(c.solver_iterations):
                objs = objs + self._gripper_push(g, objs, active)
                held = self._box_disc_gap(g[:, None, :], objs) <= c.object_radius + 1e-4
                objs = objs + self._object_push(objs, active, held)
                objs = objs.clamp(-self.object_limit, self.object_limit)
                # Objects that could not get out of the way (walls, jams) block the gripper.
                push = self._gripper_push(g, objs, active)
                back = push[:, 0]
                for k in range(1, push.shape[1]):
                    back = back + push[:, k]
                g = (g - back).clamp(-self.gripper_limit, self.gripper_limit)
        return dataclasses.replace(state, gripper_pos=g, object_pos=objs)

    def _gripper_push(self, g: Tensor, objs: Tensor, active: Tensor) -> Tensor:
        """Displacement ``[N, K, 2]`` that moves each object disc out of the gripper square."""
        h, r = self.cfg.gripper_radius, self.cfg.object_radius
        d = objs - g[:, None, :]
        e = d - d.clamp(-h, h)                 # closest square point -> disc centre
        dist = sq_norm(e).sqrt()
        outside = dist > EPS
        move_out = e * ((r - dist).clamp(min=0.0) / dist.clamp(min=EPS))[..., None]
        # Centre inside the square: leave along the axis of least penetration.
        pen = (h + r) - d.abs()
        sign = torch.where(d >= 0, 1.0, -1.0)
        along_x = pen[..., 0] <= pen[..., 1]
        axis = torch.stack([along_x, ~along_x], dim=-1)
        move_in = torch.where(axis, sign * pen, torch.zeros_like(pen))
        move = torch.where(outside[..., None], move_out, move_in)
        return torch.where(active[..., None], move, torch.zeros_like(move))

    def _object_push(self, objs: Tensor, active: Tensor, held: Tensor) -> Tensor:
        """Displacement ``[N, K, 2]`` separating overlapping objects.

        Each pair shares its overlap by mobility: an object resting against the wall it
        would be pushed into does not move; one ``held`` against the gripper yields only to
        such an object (the gripper is then held back); free objects give way to both;
        equals split the overlap in half. So a pushed chain moves at the gripper's speed
        and a jam against a wall stops the gripper.
        """
        K = objs.shape[1]
        if K < 2:
            return torch.zeros_like(objs)
        d = objs[:, :, None, :] - objs[:, None, :, :]          # [N, K, K, 2]: i - j
        dist = sq_norm(d).sqrt()
        fallback = self._coincident_dir(K, objs.device)
        normal = torch.where((dist > EPS)[..., None], d / dist.clamp(min=EPS)[..., None], fallback)
        pair = active[:, :, None] & active[:, None, :]
        overlap = (2.0 * self.cfg.object_radius - dist).clamp(min=0.0)
        overlap = torch.where(pair, overlap, torch.zeros_like(overlap))
        # Mobility of i when pushed along normal[i, j] (away from j).
        lim = self.object_limit - 1e-5
        pos = objs[:, :, None, :]
        into_wall = ((normal > 0.1) & (pos >= lim)) | ((normal < -0.1) & (pos <= -lim))
        free = torch.where(held, 1.0, 1000.0)[:, :, None].expand_as(overlap)
        mobility = torch.where(into_wall.any(dim=-1), torch.zeros_like(free), free)
        total = mobility + mobility.transpose(1, 2)
        share = torch.where(total > 0, mobility / total.clamp(min=EPS), torch.full_like(total, 0.5))
        disp = normal * (overlap * share)[..., None]           # i's share, pushed away from j
        total = disp[:, :, 0]
        for j in range(1, K):
            total = total + disp[:, :, j]
        return total

    def _coincident_dir(self, K: int, device: torch.device) -> Tensor:
        """Separation directions ``[K, K, 2]`` for coincident centres: ±x, antisymmetric."""
        key = (K, device)
        if key not in self._coincident:
            idx = torch.arange(K, device=device)
            sign = torch.sign((idx[:, None] - idx[None, :]).float())
            self._coincident[key] = torch.stack([sign, torch.zeros_like(sign)], dim=-1)
        return self._coincident[key]

    # ----------------------------------------------------------------- rollout
    def simulate(self, state: PusherState, actions: Tensor) -> tuple[Tensor, Tensor, PusherState]:
        """Step through ``actions: [N, T, 2]`` without rendering.

        Returns ``gripper_pos [N, T+1, 2]``, ``object_pos [N, T+1, K, 2]`` (start included)
        and the final state.
        """
        if actions.dim() != 3 or actions.shape[0] != state.batch_size or actions.shape[2] != 2:
            raise ValueError(f"actions must be [{state.batch_size}, T, 2], got {tuple(actions.shape)}")
        grip, objs = [state.gripper_pos], [state.object_pos]
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t])
            grip.append(state.gripper_pos)
            objs.append(state.object_pos)
        return torch.stack(grip, 1), torch.stack(objs, 1), state

    def rollout(self, state: PusherState, actions: Tensor,
                goal: Tensor | None = None) -> tuple[Tensor, PusherState]:
        """Frames ``uint8 [N, T+1, 3, H, W]`` (the start frame first) and the final state."""
        grip, objs, final = self.simulate(state, actions)
        return self.render_trajectory(state, grip, objs, goal), final

    # ------------------------------------------------------------------- goals
    def sample_goal(self, state: PusherState, generator: torch.Generator | None = None) -> Tensor:
        """A goal ``[N, 2]`` for "push object 0 to the goal": between ``goal_min_distance``
        and ``goal_max_distance`` object diameters from its position, inside the table."""
        c = self.cfg
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(state.batch_size, SPAWN_CANDIDATES, 3, generator=generator, device=gen_device)
        u = u.to(state.device)
        v = u[..., :2] * 2.0 - 1.0
        norm = sq_norm(v).sqrt()
        v = torch.where((norm > 1e-3)[..., None], v / norm.clamp(min=1e-3)[..., None],
                        torch.tensor([1.0, 0.0], device=u.device))
        lo, hi = c.goal_min_distance, c.goal_max_distance
        dist = (lo + (hi - lo) * u[..., 2]) * 2.0 * c.object_radius
        cands = state.object_pos[:, 0:1, :] + v * dist[..., None]   # [N, C, 2]
        inside = (cands.abs() <= self.goal_limit).all(dim=-1)
        rank = torch.where(inside, torch.arange(cands.shape[1], device=u.device).float()[None, :],
                           torch.full_like(dist, float(cands.shape[1])))
        pick = rank.argmin(dim=1)
        goal = cands[torch.arange(cands.shape[0], device=u.device), pick]
        return goal.clamp(-self.goal_limit, self.goal_limit)

    @staticmethod
    def object_distance(state: PusherState, goal: Tensor, index: int = 0) -> Tensor:
        """Euclidean distance ``[N]`` of object ``index`` to ``goal: [N, 2]`` (table units)."""
        return sq_norm(state.object_pos[:, index] - goal.to(state.object_pos)).sqrt()

    # ------------------------------------------------------------------ render
    def render(self, state: PusherState, goal: Tensor | None = None) -> Tensor:
        """Frames ``uint8 [N, 3, H, W]`` of the states (``goal [N, 2]``: draw a goal ring)."""
        return self.render_trajectory(state, state.gripper_pos[:, None], state.object_pos[:, None], goal)[:, 0]

    def render_trajectory(self, state: PusherState, gripper_pos: Tensor, object_pos: Tensor,
                          goal: Tensor | None = None, chunk_frames: int = 64) -> Tensor:
        """Frames ``uint8 [N, T, 3, H, W]`` of ``T`` steps per episode (see
        :func:`seqvae.worlds.pusher.render.render_trajectory`)."""
        return render.render_trajectory(self.cfg, state, gripper_pos, object_pos, goal, chunk_frames)

    def table_image(self, state: PusherState) -> Tensor:
        """The bare table of each episode: float ``[N, 3, H, W]`` in [0, 1]."""
        return render.table_image(self.cfg, state)
