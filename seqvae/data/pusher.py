"""A procedural robot-pushing world: the embedded default for video prediction and the
environment the CEM planner controls.

The world is a square table ``[-1, 1]²`` (*table units*; ``x`` grows to the right and
``y`` downward, like image columns and rows) seen from above. On it:

* a **gripper**: an axis-aligned square of half-side ``gripper_radius`` (dark, with a
  light outline), hanging from a grey **arm** that runs to the top edge of the image;
  both cast a soft shadow;
* ``min_objects``–``num_objects`` **objects**: coloured discs of radius ``object_radius``;
* a **table texture** (wood planks with grain, or tiles) with per-episode colours,
  lighting and fine noise, all deterministic from the episode's random numbers.

Dynamics (:meth:`PusherSim.step`) are kinematic: the action ``a ∈ [-1, 1]²`` moves the
gripper by ``a · max_step`` (clamped to the table); an object the gripper overlaps is
displaced out of it along the contact normal; objects push each other the same way (an
object against the gripper passes the whole push on, so a pushed chain keeps the
gripper's speed; free objects share an overlap equally); everything stays inside the
table; objects that cannot move (against a wall, jammed) push the gripper back out
instead. A few relaxation sweeps resolve chains of contacts; afterwards the gripper
never overlaps an object and objects overlap each other by far less than a pixel.

Everything is batched over ``N`` environments in torch (CPU or GPU) without loops over
pixels; the only Python loops run over the (≤ a few) objects and the fixed number of
solver sweeps. All randomness comes from uniforms drawn up front (``*_from_uniforms``),
and the code uses only exactly rounded element-wise operations, so an environment's
trajectory and frames are bit-identical whatever batch it is simulated in.

Rendering evaluates anti-aliased shape masks on the pixel grid: discs through the
linearised signed distance ``(r² − d²) / 2r`` (no square root) and boxes as separable
products of 1-D edge coverages. Each shape is composited only inside its bounding patch
(gathered, painted and scattered back for all frames at once), which keeps the data set
at a few hundred 30-frame sequences per second on one CPU thread.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

# Object colours (RGB in [0, 1]); an episode draws distinct ones, jittered.
OBJECT_PALETTE = (
    (0.86, 0.16, 0.14),  # red
    (0.16, 0.66, 0.26),  # green
    (0.16, 0.36, 0.86),  # blue
    (0.96, 0.80, 0.12),  # yellow
    (0.96, 0.50, 0.10),  # orange
    (0.58, 0.24, 0.74),  # purple
    (0.10, 0.74, 0.80),  # cyan
    (0.94, 0.46, 0.70),  # pink
)
# Table base colours: light oak, walnut, maple, grey laminate, pale concrete.
TABLE_PALETTE = (
    (0.74, 0.57, 0.38),
    (0.50, 0.34, 0.22),
    (0.84, 0.72, 0.54),
    (0.62, 0.62, 0.60),
    (0.78, 0.77, 0.72),
)
GRIPPER_OUTLINE = (0.78, 0.80, 0.84)
GRIPPER_INNER = (0.13, 0.14, 0.17)
ARM_COLOR = (0.62, 0.64, 0.68)

# Columns of ``PusherState.texture``.
TEX_STYLE, TEX_VERTICAL, TEX_SCALE, TEX_OFFSET_U, TEX_OFFSET_V, TEX_GRAIN_FREQ, \
    TEX_WARP_AMP, TEX_WARP_FREQ, TEX_PHASE, TEX_NOISE_SEED, TEX_LIGHT_X, TEX_LIGHT_Y = range(12)
TEXTURE_PARAMS = 12

_EPS = 1e-9
_SPAWN_CANDIDATES = 16  # rejection-sampling candidates per placed body (fixed: fixed RNG use)


@dataclass
class PusherConfig:
    """World parameters. Lengths are in table units (the table is ``[-1, 1]²``)."""

    image_size: int = 64            # rendered frames are image_size × image_size RGB
    num_objects: int = 3            # K: the most objects an episode has (width of object tensors)
    min_objects: int = 1            # the fewest; the count is uniform in [min_objects, num_objects]
    gripper_radius: float = 0.13    # half the side of the square gripper
    object_radius: float = 0.16     # radius of the disc objects
    max_step: float = 0.08          # gripper displacement per step for a unit action component
    substeps: int = 1               # motion sub-steps per step (more: finer contact)
    solver_iterations: int = 3      # relaxation sweeps per sub-step (chains of contacts)
    spawn_clearance: float = 0.04   # free space between bodies at reset
    goal_min_distance: float = 1.0  # goals lie this many object diameters from object 0 or more …
    goal_max_distance: float = 2.5  # … and at most this many
    tile_probability: float = 0.3   # chance that an episode's table is tiled rather than wooden
    shadow_strength: float = 0.35   # how much shadows darken the table (0: no shadows)
    texture_contrast: float = 1.0   # strength of grain, planks, tiles and noise (0: a plain table)

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if not 1 <= self.min_objects <= self.num_objects:
            raise ValueError(
                f"need 1 <= min_objects <= num_objects, got min_objects={self.min_objects}, "
                f"num_objects={self.num_objects}"
            )
        if self.num_objects > len(OBJECT_PALETTE):
            raise ValueError(f"num_objects must be at most {len(OBJECT_PALETTE)}, got {self.num_objects}")
        for name in ("gripper_radius", "object_radius", "max_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.substeps < 1 or self.solver_iterations < 1:
            raise ValueError("substeps and solver_iterations must be at least 1")
        if not 0 < self.goal_min_distance <= self.goal_max_distance:
            raise ValueError("need 0 < goal_min_distance <= goal_max_distance")
        if not 0.0 <= self.texture_contrast <= 1.0:
            raise ValueError(f"texture_contrast must be in [0, 1], got {self.texture_contrast}")
        if self.spawn_limit <= 0:
            raise ValueError(
                "bodies too large for the table: objects need room for the gripper behind them "
                f"(1 - object_radius - 2*gripper_radius - spawn_clearance = {self.spawn_limit:.3f} <= 0)"
            )

    @property
    def spawn_limit(self) -> float:
        """Objects spawn with ``|x|, |y| <= spawn_limit``: the gripper fits between any object
        and any wall, so object 0 can be pushed in every direction at the start."""
        return 1.0 - self.object_radius - 2.0 * self.gripper_radius - self.spawn_clearance

    @property
    def pixel(self) -> float:
        """One pixel in table units."""
        return 2.0 / self.image_size


@dataclass
class PusherState:
    """A batch of ``N`` world states (all tensors share a device; floats are float32).

    ``object_active`` is a prefix mask (objects ``0 .. n-1`` of an episode exist; object 0
    always does); inactive objects keep finite positions but neither collide nor render.
    """

    gripper_pos: Tensor    # [N, 2]    gripper centre (x, y)
    object_pos: Tensor     # [N, K, 2] object centres
    object_active: Tensor  # [N, K]    bool
    object_color: Tensor   # [N, K, 3] RGB in [0, 1]
    table_color: Tensor    # [N, 2, 3] the table's base and grain/second-tile colours
    texture: Tensor        # [N, TEXTURE_PARAMS] texture parameters (columns TEX_*)

    @property
    def batch_size(self) -> int:
        return self.gripper_pos.shape[0]

    @property
    def num_objects(self) -> int:
        return self.object_pos.shape[1]

    @property
    def device(self) -> torch.device:
        return self.gripper_pos.device

    def map(self, fn) -> "PusherState":
        """A new state with ``fn`` applied to every tensor field."""
        return PusherState(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def index(self, i: int | slice | Tensor | Sequence[int]) -> "PusherState":
        """Select environments (an int keeps the batch dimension: ``index(3)`` has N = 1)."""
        if isinstance(i, int):
            i = slice(i, i + 1) if i != -1 else slice(-1, None)
        elif not isinstance(i, (slice, Tensor)):
            i = torch.as_tensor(list(i), dtype=torch.long, device=self.device)
        return self.map(lambda t: t[i])

    def repeat(self, n: int) -> "PusherState":
        """Each environment ``n`` times in a row: ``[e0, e0, …, e1, e1, …]`` (N·n states),
        e.g. one start state per CEM candidate."""
        return self.map(lambda t: t.repeat_interleave(n, dim=0))

    def to(self, device: torch.device | str) -> "PusherState":
        return self.map(lambda t: t.to(device))

    def clone(self) -> "PusherState":
        return self.map(lambda t: t.clone())

    @staticmethod
    def cat(states: Sequence["PusherState"]) -> "PusherState":
        """Concatenate batches of states along the environment dimension."""
        if not states:
            raise ValueError("PusherState.cat needs at least one state")
        names = [f.name for f in dataclasses.fields(PusherState)]
        return PusherState(**{n: torch.cat([getattr(s, n) for s in states]) for n in names})


# ---------------------------------------------------------------------- helpers
def _sq_norm(v: Tensor) -> Tensor:
    """``x² + y²`` of ``[..., 2]`` vectors (a two-term sum rounds alike in any order, so
    every batch size gives the same bits)."""
    return (v * v).sum(dim=-1)


def _pick(values: Tensor, table: Sequence[Sequence[float]], u: Tensor) -> Tensor:
    """Entries of ``table`` chosen by uniforms ``u`` (any shape) -> ``[*u.shape, len(row)]``."""
    rows = torch.tensor(table, dtype=torch.float32, device=values.device)
    idx = (u * len(table)).long().clamp_(0, len(table) - 1)
    return rows[idx]


def _hash_uniform(x: Tensor) -> Tensor:
    """A uniform in [0, 1) from non-negative int64 ``x`` by an integer hash (exact on any device)."""
    m = 0xFFFFFFFF  # every product below stays under 2^63: no int64 overflow
    h = ((x & m) * 0x2C9277B5 + 0x6A09E667) & m
    h = h ^ (h >> 15)
    h = (h * 0x5BD1E995) & m
    h = h ^ (h >> 13)
    h = (h * 0x27D4EB2F) & m
    h = h ^ (h >> 16)
    return h.float() * (1.0 / 4294967296.0)


def _wave(x: Tensor) -> Tensor:
    """A smooth periodic bump in [0, 1] with period 1 (a parabolic stand-in for a sine)."""
    f = x - torch.floor(x)
    return 4.0 * f * (1.0 - f)


def _coverage(center: Tensor, half: Tensor | float, grid: Tensor, soft: float) -> Tensor:
    """Anti-aliased 1-D coverage of the interval ``center ± half`` at ``grid`` points.

    ``center``: ``[M]``; ``grid``: ``[M, G]`` -> ``[M, G]`` in [0, 1] with an edge ramp
    of width ``soft`` (table units).
    """
    dist = (grid - center[:, None]).abs()
    if isinstance(half, Tensor):
        half = half[:, None]
    return (0.5 + (half - dist) / soft).clamp_(0.0, 1.0)


def _disc_alpha(center: Tensor, radius: float, xs: Tensor, ys: Tensor, soft: float) -> Tensor:
    """Anti-aliased coverage ``[M, h, w]`` of discs centred at ``[M, 2]`` on the pixel
    centres ``xs [M, w]`` × ``ys [M, h]``, with an edge ramp of width ``soft``.

    Uses the linearised signed distance ``(r² − d²) / 2r`` (exact at the edge to first
    order), so each pixel costs one add and one clamp on top of separable terms.
    """
    scale = 1.0 / (2.0 * radius * soft)
    dx = xs - center[:, 0:1]
    dy = ys - center[:, 1:2]
    ex = (0.5 + radius * radius * scale) - dx * dx * scale
    ey = -(dy * dy * scale)
    return (ey[:, :, None] + ex[:, None, :]).clamp_(0.0, 1.0)


# ------------------------------------------------------------------- simulator
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
            "objects": K * _SPAWN_CANDIDATES * 2,
            "gripper": _SPAWN_CANDIDATES * 2,
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
        N, K, C = u.shape[0], c.num_objects, _SPAWN_CANDIDATES
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
                gap = (_sq_norm(cands[:, k] - prev[:, None, :])).sqrt()
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
        base = _pick(u, TABLE_PALETTE, t[:, 0]) + (t[:, 1:4] - 0.5) * 0.10
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
        return _sq_norm(d - d.clamp(-h, h)).sqrt()

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
        dist = _sq_norm(e).sqrt()
        outside = dist > _EPS
        move_out = e * ((r - dist).clamp(min=0.0) / dist.clamp(min=_EPS))[..., None]
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
        dist = _sq_norm(d).sqrt()
        fallback = self._coincident_dir(K, objs.device)
        normal = torch.where((dist > _EPS)[..., None], d / dist.clamp(min=_EPS)[..., None], fallback)
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
        share = torch.where(total > 0, mobility / total.clamp(min=_EPS), torch.full_like(total, 0.5))
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
        u = torch.rand(state.batch_size, _SPAWN_CANDIDATES, 3, generator=generator, device=gen_device)
        u = u.to(state.device)
        v = u[..., :2] * 2.0 - 1.0
        norm = _sq_norm(v).sqrt()
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
        return _sq_norm(state.object_pos[:, index] - goal.to(state.object_pos)).sqrt()

    # ------------------------------------------------------------------ render
    def render(self, state: PusherState, goal: Tensor | None = None) -> Tensor:
        """Frames ``uint8 [N, 3, H, W]`` of the states (``goal [N, 2]``: draw a goal ring)."""
        return self.render_trajectory(state, state.gripper_pos[:, None], state.object_pos[:, None], goal)[:, 0]

    def render_trajectory(self, state: PusherState, gripper_pos: Tensor, object_pos: Tensor,
                          goal: Tensor | None = None, chunk_frames: int = 64) -> Tensor:
        """Render ``T`` time steps per episode: ``gripper_pos [N, T, 2]``, ``object_pos
        [N, T, K, 2]`` with the appearance (colours, texture, active objects) of ``state``
        -> ``uint8 [N, T, 3, H, W]``. Works in chunks of about ``chunk_frames`` frames to
        bound memory (planning may render thousands of rollouts)."""
        N, T = gripper_pos.shape[:2]
        S = self.cfg.image_size
        out = torch.empty(N, T, 3, S, S, dtype=torch.uint8, device=state.device)
        per_chunk = max(1, chunk_frames // max(T, 1))
        for lo in range(0, N, per_chunk):
            hi = min(N, lo + per_chunk)
            part = state.index(slice(lo, hi))
            g = goal[lo:hi] if goal is not None else None
            out[lo:hi] = self._render_chunk(part, gripper_pos[lo:hi], object_pos[lo:hi], g)
        return out

    def _grid(self, device: torch.device) -> Tensor:
        S = self.cfg.image_size
        return (torch.arange(S, device=device, dtype=torch.float32) + 0.5) * (2.0 / S) - 1.0

    def table_image(self, state: PusherState) -> Tensor:
        """The bare table of each episode: float ``[N, 3, H, W]`` in [0, 1]."""
        c = self.cfg
        S, px = c.image_size, c.pixel
        grid = self._grid(state.device)
        tex = state.texture
        col = lambda i: tex[:, i][:, None, None]  # noqa: E731  [N, 1, 1]
        x = grid[None, None, :].expand(tex.shape[0], S, S)
        y = grid[None, :, None].expand(tex.shape[0], S, S)
        vertical = col(TEX_VERTICAL) > 0.5
        u_, v_ = torch.where(vertical, y, x), torch.where(vertical, x, y)  # along / across the grain
        scale = col(TEX_SCALE)

        # Wood: planks across v with a per-plank shade and dark seams; warped grain lines.
        pv = (v_ + col(TEX_OFFSET_V)) / scale
        plank = torch.floor(pv)
        seam = ((pv - plank) * scale / px).clamp(0.0, 1.0)         # 0 on the seam, 1 a pixel away
        seed = col(TEX_NOISE_SEED).long()
        shade = 0.92 + 0.16 * _hash_uniform(plank.long() + 4096 + seed * 8191)
        warp = col(TEX_WARP_AMP) * _wave(col(TEX_WARP_FREQ) * u_ + col(TEX_PHASE) + 0.37 * plank)
        grain = _wave(col(TEX_GRAIN_FREQ) * (v_ + warp) + 0.53 * plank)
        wood_mix = 0.55 * grain * grain
        wood_gain = shade * (0.70 + 0.30 * seam)

        # Tiles: a two-tone checkerboard with light grout lines.
        tu = (x + col(TEX_OFFSET_U)) / scale
        tv = (y + col(TEX_OFFSET_V)) / scale
        fu, fv = torch.floor(tu), torch.floor(tv)
        checker = torch.remainder(fu + fv, 2.0)
        edge = torch.minimum(torch.minimum(tu - fu, 1.0 - (tu - fu)), torch.minimum(tv - fv, 1.0 - (tv - fv)))
        grout = (1.0 - edge * scale / (0.75 * px)).clamp(0.0, 1.0)
        tile_gain = 1.0 + 0.25 * grout

        tiles = col(TEX_STYLE) > 0.5
        mix = torch.where(tiles, 0.65 * checker, wood_mix)
        gain = torch.where(tiles, tile_gain, wood_gain)

        # Fine per-pixel noise and a gentle light gradient with vignetting.
        pix = torch.arange(S * S, device=state.device).view(1, S, S)
        noise = _hash_uniform(pix + seed * 65536) - 0.5
        light = 1.0 + col(TEX_LIGHT_X) * x + col(TEX_LIGHT_Y) * y - 0.06 * (x * x + y * y)
        gain = gain * light * (1.0 + 0.06 * noise)

        if c.texture_contrast != 1.0:                              # pull the pattern towards its base
            mix = mix * c.texture_contrast
            gain = 1.0 + (gain - 1.0) * c.texture_contrast
        base = state.table_color[:, 0, :, None, None]
        second = state.table_color[:, 1, :, None, None]
        img = base + (second - base) * mix[:, None]
        return (img * gain[:, None]).clamp(0.0, 1.0)

    def _render_chunk(self, state: PusherState, gripper_pos: Tensor, object_pos: Tensor,
                      goal: Tensor | None) -> Tensor:
        """Paint ``E`` episodes × ``T`` steps onto their tables -> ``uint8 [E, T, 3, S, S]``."""
        c = self.cfg
        E, T = gripper_pos.shape[:2]
        K, S, px = state.num_objects, c.image_size, c.pixel
        dev = state.device
        M = E * T
        g = gripper_pos.reshape(M, 2).float()
        active = state.object_active.repeat_interleave(T, dim=0)                 # [M, K]
        objs = object_pos.reshape(M, K, 2).float()
        colors = state.object_color.repeat_interleave(T, dim=0)                  # [M, K, 3]
        h, r = c.gripper_radius, c.object_radius
        arm_half = 0.45 * h
        soft = 2.5 * px                                                          # shadow edge width
        off = torch.tensor([0.035, 0.045], device=dev)                           # shadow offset (down-right)
        shade = c.shadow_strength
        canvas = _Canvas(self.table_image(state), T)

        # Goal ring (under the objects).
        if goal is not None:
            gg = goal.to(dev).float().repeat_interleave(T, dim=0)
            patch = canvas.patch(gg[:, 0], gg[:, 1], _patch_size(r + px, px), _patch_size(r + px, px))
            ring = patch.disc(gg, r, px) - patch.disc(gg, r - 1.5 * px, px)
            patch.paint(ring.clamp_(0.0, 1.0), (0.5 + 0.5 * colors[:, 0]).clamp(0.0, 1.0))
            patch.commit()

        # Objects, each in one patch: its soft shadow, a darker rim, then the body shifted
        # up-left (a hint of relief).
        size = _patch_size(r + soft / 2 + 0.3 * 0.045, px)
        for k in range(K):
            on = active[:, k, None, None].float()
            centre = objs[:, k]
            mid = centre + 0.3 * off
            patch = canvas.patch(mid[:, 0], mid[:, 1], size, size)
            if shade > 0:
                patch.darken(patch.disc(centre + 0.6 * off, r, soft) * on, shade)
            patch.paint(patch.disc(centre, r, px) * on, colors[:, k] * 0.55)
            patch.paint(patch.disc(centre - 0.35 * px, r - 1.2 * px, px) * on, colors[:, k])
            patch.commit()

        # The robot, in one full-height strip: shadows of arm and gripper, a vertical arm to
        # the top edge with cylindrical shading, the gripper (light outline, dark inside).
        width = _patch_size(h + soft / 2 + 0.5 * 0.035 + px, px)
        mid = g[:, 0] + 0.5 * off[0]
        patch = canvas.patch(mid, torch.zeros_like(mid), width, S)
        top = torch.full((M,), -1.0 - 4.0 * px, device=dev)                      # the arm leaves the image

        def arm(centre: Tensor, edge: float) -> Tensor:
            ay = _coverage((top + centre[:, 1]) / 2, (centre[:, 1] - top) / 2, patch.ys, edge)
            return ay[:, :, None] * _coverage(centre[:, 0], arm_half, patch.xs, edge)[:, None, :]

        if shade > 0:
            patch.darken(torch.maximum(arm(g + off, soft), patch.box(g + off, h, soft)), shade)
        across = ((patch.xs - g[:, 0:1]) / arm_half).clamp(-1.0, 1.0)            # [M, w]
        lit = 0.70 + 0.40 * (1.0 - across * across) - 0.10 * across
        arm_color = (lit[:, :, None] * torch.tensor(ARM_COLOR, device=dev)).clamp(0.0, 1.0)
        patch.paint(arm(g, px), arm_color)                                       # [M, w, 3]
        patch.paint(patch.box(g, h, px), torch.tensor(GRIPPER_OUTLINE, device=dev))
        patch.paint(patch.box(g, h - 1.5 * px, px), torch.tensor(GRIPPER_INNER, device=dev))
        patch.commit()

        return canvas.frames().view(E, T, 3, S, S)


def _patch_size(extent: float, px: float) -> int:
    """Side (pixels) of a patch that holds a shape reaching ``extent`` from its centre."""
    return 2 * int(math.ceil(extent / px + 0.5)) + 2


class _Canvas:
    """``M`` frames being painted, stored planar as float ``[3, M·S·S]``.

    A shape touches only the pixels of its bounding patch (:class:`_Patch`): select them,
    composite, copy them back.
    """

    def __init__(self, table: Tensor, T: int) -> None:
        E, _, S, _ = table.shape
        self.S, self.M, self.px = S, E * T, 2.0 / S
        planes = table.transpose(0, 1)[:, :, None].expand(3, E, T, S, S)
        self.buf = planes.reshape(3, self.M * S * S)   # a copy: every frame gets its own pixels
        self.base = torch.arange(self.M, device=table.device)[:, None] * (S * S)

    def patch(self, cx: Tensor, cy: Tensor, w: int, h: int) -> "_Patch":
        """The ``w × h`` pixels around ``(cx, cy)`` (table units, ``[M]``) of every frame. A
        patch that would hang over the border is shifted inside (it still holds every
        visible pixel of a shape it was sized for)."""
        S, dev = self.S, cx.device
        w, h = min(w, S), min(h, S)
        col0 = (torch.floor((cx + 1.0) / self.px) - (w // 2)).clamp(0, S - w)
        row0 = (torch.floor((cy + 1.0) / self.px) - (h // 2)).clamp(0, S - h)
        cols = col0[:, None] + torch.arange(w, device=dev, dtype=torch.float32)
        rows = row0[:, None] + torch.arange(h, device=dev, dtype=torch.float32)
        idx = ((rows.long() * S + self.base)[:, :, None] + cols.long()[:, None, :]).view(-1)
        return _Patch(self, idx, (cols + 0.5) * self.px - 1.0, (rows + 0.5) * self.px - 1.0)

    def frames(self) -> Tensor:
        """The painted images as ``uint8 [M, 3, S, S]`` (rounded)."""
        S = self.S
        img = self.buf.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
        return img.view(3, self.M, S, S).transpose(0, 1).contiguous()


class _Patch:
    """Pixels of one patch per frame, planar ``[3, M, h, w]``, with their centres
    ``xs [M, w]``, ``ys [M, h]`` (table units). Paint into it, then :meth:`commit` it."""

    def __init__(self, canvas: _Canvas, idx: Tensor, xs: Tensor, ys: Tensor) -> None:
        self.canvas, self.idx, self.xs, self.ys = canvas, idx, xs, ys
        self.pixels = canvas.buf.index_select(1, idx).view(3, canvas.M, ys.shape[1], xs.shape[1])

    def disc(self, centre: Tensor, radius: float, edge: float) -> Tensor:
        return _disc_alpha(centre, radius, self.xs, self.ys, edge)

    def box(self, centre: Tensor, half: float, edge: float) -> Tensor:
        """Coverage ``[M, h, w]`` of axis-aligned squares ``centre ± half``."""
        return _coverage(centre[:, 1], half, self.ys, edge)[:, :, None] * \
            _coverage(centre[:, 0], half, self.xs, edge)[:, None, :]

    def paint(self, alpha: Tensor, color: Tensor) -> None:
        """Composite ``color`` (``[3]``, ``[M, 3]``, or ``[M, w, 3]`` per column) with
        coverage ``alpha [M, h, w]``."""
        if color.dim() == 1:
            color = color[:, None, None, None]
        elif color.dim() == 2:
            color = color.t()[:, :, None, None]
        else:
            color = color.permute(2, 0, 1)[:, :, None, :]
        self.pixels.lerp_(color.expand_as(self.pixels), alpha)

    def darken(self, alpha: Tensor, strength: float) -> None:
        """Multiply by ``1 − strength·alpha`` (a shadow)."""
        self.pixels.mul_(1.0 - strength * alpha)

    def commit(self) -> None:
        self.canvas.buf.index_copy_(1, self.idx, self.pixels.view(3, -1))


# --------------------------------------------------------------- random policy
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
        norm = _sq_norm(away).sqrt()
        down = torch.tensor([0.0, 1.0], device=dev)
        away = torch.where((norm > _EPS)[:, None], away / norm.clamp(min=_EPS)[:, None], down)
        target = (obj + away * (c.overshoot * sc.object_radius)).clamp(-self.sim.gripper_limit,
                                                                       self.sim.gripper_limit)

        rv = u[:, 3:5] * 2.0 - 1.0
        rn = _sq_norm(rv).sqrt()
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
