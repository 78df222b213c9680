"""Data set ``pusher``: random-policy episodes of the procedural pushing world
(:mod:`seqvae.worlds.pusher`), the toolkit's no-download default for video prediction.

Item ``i`` of split ``s`` is a pure function of ``(seed, s, i)``: its episode is
simulated and rendered on the fly from uniforms drawn from a ``torch.Generator`` seeded
with a 64-bit mix of the three (:func:`item_seed`); nothing is cached or written to disk.
Train, val and test use different seed streams, so they do not overlap.

An item::

    {"frames":      uint8   [T, 3, S, S],
     "actions":     float32 [T, 2],      # only if action_conditioned; actions[t] moves
                                         # frame t to t+1, actions[T-1] is the next action
     "gripper_pos": float32 [T, 2],      # table units, the table is [-1, 1]², y downward
     "object_pos":  float32 [T, K, 2],   # K = num_objects slots ...
     "object_mask": bool    [K],         # ... of which these exist in this episode
     "object_color": float32 [K, 3]}     # their colours in [0, 1] (for colour tracking)

Training items can be windows of longer episodes, as BAIR's training windows are
(``episode_len`` > ``seq_len``): the train item simulates an ``episode_len``-step episode
from a reset and keeps ``seq_len`` consecutive frames at an offset drawn from the same
seeded uniforms, so that late-episode states (the gripper among the objects, objects
already pushed) are seen in training as they are in a long test sequence. Val and test
items always start at the reset, like BAIR's ordered test sequences.

Without actions (``action_conditioned: false``) the unobserved random policy makes the
future genuinely stochastic, as in BAIR.

The data set implements ``__getitems__``, so a ``DataLoader`` generates a whole batch in
one vectorized pass (bit-identical to generating the items one by one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.data.spec import DataSpec
from seqvae.registry import DATASETS, ComponentConfig
from seqvae.worlds.pusher.policy import PushPolicyConfig, RandomPushPolicy, episode_uniforms, sample_episodes
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import ACTION_DIM, PusherConfig

SPLITS = ("train", "val", "test")
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer (a bijection on 64-bit integers)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def item_seed(seed: int, split: str, index: int) -> int:
    """The generator seed of item ``index`` of ``split``: distinct streams per split."""
    stream = _splitmix64(_splitmix64(seed & _MASK64) ^ (SPLITS.index(split) + 1) * 0xD1B54A32D192ED03)
    return _splitmix64((stream + index) & _MASK64)


@dataclass
class PusherDataConfig(ComponentConfig):
    """The procedural pushing world as a video data set (no download)."""

    name: str = "pusher"
    seq_len: int = 30                # frames per item
    eval_seq_len: int = 0            # frames per val/test item (0: seq_len), e.g. train on 12, evaluate on 30
    episode_len: int = 0             # train items: seq_len-frame windows of episodes this long
                                     # (0: whole episodes of seq_len)
    num_train: int = 100_000         # virtual items per split (generated on demand)
    num_val: int = 256
    num_test: int = 256
    seed: int = 0                    # data seed: item i of split s depends on (seed, s, i) only
    action_conditioned: bool = True  # False: items carry no "actions" (stochastic future)
    target_probability: float = 0.7  # random policy: chance a motion segment heads through an object
    world: PusherConfig = field(default_factory=PusherConfig)  # the simulated world (sizes, table, ...)


def upgrade_pusher_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Configs written before the world was nested (e.g. in older checkpoints) had the
    world's fields beside the data set's: move them into ``world``."""
    world_keys = {f.name for f in dataclasses.fields(PusherConfig)}
    flat = {k: v for k, v in raw.items() if k in world_keys}
    if not flat:
        return raw
    rest = {k: v for k, v in raw.items() if k not in world_keys}
    return {**rest, "world": {**flat, **(rest.get("world") or {})}}


class PusherDataset(Dataset):
    """Map-style data set of random pushing episodes, generated on demand."""

    def __init__(self, cfg: PusherDataConfig, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.seq_len = cfg.eval_seq_len if split != "train" and cfg.eval_seq_len > 0 else cfg.seq_len
        if self.seq_len < 1:
            raise ValueError(f"data.seq_len must be at least 1, got {cfg.seq_len}")
        self.episode_len = cfg.episode_len if split == "train" and cfg.episode_len > 0 else self.seq_len
        if self.episode_len < self.seq_len:
            raise ValueError(f"data.episode_len ({cfg.episode_len}) must be 0 or at least data.seq_len "
                             f"({cfg.seq_len}): training windows are cut from episodes of episode_len steps")
        self.cfg, self.split = cfg, split
        self.length = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]
        if self.length < 0:
            raise ValueError(f"data.num_{split} must be non-negative, got {self.length}")
        self.sim = PusherSim(cfg.world)
        self.policy = RandomPushPolicy(self.sim, PushPolicyConfig(target_probability=cfg.target_probability))
        # the episode's uniforms, then one that picks the window's first step
        self.num_uniforms = episode_uniforms(self.sim, self.episode_len) + 1
        self.spec = DataSpec(3, cfg.world.image_size, cfg.world.image_size, self.seq_len,
                             action_dim=ACTION_DIM if cfg.action_conditioned else 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Tensor]]:
        """Generate several items in one vectorized pass (used by ``DataLoader``)."""
        rows = []
        for i in indices:
            i = int(i)
            if i < 0:
                i += self.length
            if not 0 <= i < self.length:
                raise IndexError(f"pusher {self.split} index {i} out of range [0, {self.length})")
            gen = torch.Generator().manual_seed(item_seed(self.cfg.seed, self.split, i))
            rows.append(torch.rand(self.num_uniforms, generator=gen))
        if not rows:
            return []
        uniforms = torch.stack(rows)
        episode = sample_episodes(self.sim, self.episode_len, uniforms[:, :-1], self.policy)
        num_offsets = self.episode_len - self.seq_len + 1
        first = (uniforms[:, -1] * num_offsets).long().clamp(max=num_offsets - 1)      # [N]
        steps = first[:, None] + torch.arange(self.seq_len)                              # [N, T]
        rows_idx = torch.arange(len(rows))[:, None]
        gripper_pos, object_pos = episode.gripper_pos[rows_idx, steps], episode.object_pos[rows_idx, steps]
        frames = self.sim.render_trajectory(episode.start, gripper_pos, object_pos)     # only the window
        items = []
        for b in range(len(rows)):
            item = {"frames": frames[b]}
            if self.cfg.action_conditioned:
                item["actions"] = episode.actions[b, steps[b]]
            item["gripper_pos"] = gripper_pos[b]
            item["object_pos"] = object_pos[b]
            item["object_mask"] = episode.start.object_active[b]
            item["object_color"] = episode.start.object_color[b]
            items.append(item)
        return items


@DATASETS.register("pusher", PusherDataConfig, upgrade=upgrade_pusher_config)
def build_pusher(cfg: PusherDataConfig, split: str) -> PusherDataset:
    return PusherDataset(cfg, split)
