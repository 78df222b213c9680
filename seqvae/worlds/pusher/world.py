"""The pushing world's configuration and state: a square table ``[-1, 1]²`` (*table
units*; ``x`` right, ``y`` down, like image columns and rows) seen from above, with a
square gripper on an arm and a few coloured disc objects. Dynamics are in
:mod:`~seqvae.worlds.pusher.sim`, drawing in :mod:`~seqvae.worlds.pusher.render`.
"""
from __future__ import annotations

import dataclasses
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
ACTION_DIM = 2  # an action moves the gripper by (a_x, a_y) · max_step
GRIPPER_OUTLINE = (0.78, 0.80, 0.84)
GRIPPER_INNER = (0.13, 0.14, 0.17)
ARM_COLOR = (0.62, 0.64, 0.68)

# Columns of ``PusherState.texture``.
TEX_STYLE, TEX_VERTICAL, TEX_SCALE, TEX_OFFSET_U, TEX_OFFSET_V, TEX_GRAIN_FREQ, \
    TEX_WARP_AMP, TEX_WARP_FREQ, TEX_PHASE, TEX_NOISE_SEED, TEX_LIGHT_X, TEX_LIGHT_Y = range(12)
TEXTURE_PARAMS = 12

EPS = 1e-9
SPAWN_CANDIDATES = 16  # rejection-sampling candidates per placed body (fixed: fixed RNG use)


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



def sq_norm(v: Tensor) -> Tensor:
    """``x² + y²`` of ``[..., 2]`` vectors (a two-term sum rounds alike in any order, so
    every batch size gives the same bits)."""
    return (v * v).sum(dim=-1)


def pick_rows(values: Tensor, table: Sequence[Sequence[float]], u: Tensor) -> Tensor:
    """Entries of ``table`` chosen by uniforms ``u`` (any shape) -> ``[*u.shape, len(row)]``."""
    rows = torch.tensor(table, dtype=torch.float32, device=values.device)
    idx = (u * len(table)).long().clamp_(0, len(table) - 1)
    return rows[idx]

