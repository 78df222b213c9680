"""Data set ``pointmass``: random-force episodes of the point-mass world (no download).
Item ``i`` of a split is a pure function of ``(seed, split, i)``; forces are smooth random
walks, so the mass crosses the table and meets the walls."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from seqvae.data.spec import DataSpec
from seqvae.registry import DATASETS, ComponentConfig
from seqvae.worlds.pointmass.world import ACTION_DIM, PointMassConfig, render, step

SPLITS = ("train", "val", "test")


@dataclass
class PointMassDataConfig(ComponentConfig):
    name: str = "pointmass"
    seq_len: int = 12
    num_train: int = 100_000         # virtual items per split (generated on demand)
    num_val: int = 256
    num_test: int = 256
    seed: int = 0
    action_conditioned: bool = True
    world: PointMassConfig = field(default_factory=PointMassConfig)


class PointMassDataset(Dataset):
    def __init__(self, cfg: PointMassDataConfig, split: str) -> None:
        if split not in SPLITS or cfg.seq_len < 1:
            raise ValueError(f"pointmass: split must be one of {SPLITS} and data.seq_len at least 1")
        self.cfg, self.split = cfg, split
        self.length = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]
        size = cfg.world.image_size
        self.spec = DataSpec(3, size, size, cfg.seq_len, action_dim=ACTION_DIM if cfg.action_conditioned else 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"pointmass {self.split} index {index} out of range [0, {self.length})")
        g = torch.Generator().manual_seed((self.cfg.seed * 3 + SPLITS.index(self.split)) * 1_000_003 + index)
        pos, vel = torch.rand(1, 2, generator=g) * 1.4 - 0.7, torch.zeros(1, 2)
        force, positions, actions = torch.zeros(1, 2), [], []
        for _ in range(self.cfg.seq_len):
            positions.append(pos)
            force = (0.8 * force + 0.6 * torch.randn(1, 2, generator=g)).clamp(-1, 1)
            actions.append(force)
            pos, vel = step(self.cfg.world, pos, vel, force)
        item = {"frames": render(self.cfg.world, torch.cat(positions)), "positions": torch.cat(positions)}
        if self.cfg.action_conditioned:
            item["actions"] = torch.cat(actions)
        return item


@DATASETS.register("pointmass", PointMassDataConfig)
def build_pointmass(cfg: PointMassDataConfig, split: str) -> PointMassDataset:
    return PointMassDataset(cfg, split)
