"""A second, small world: a point mass that a force moves to a target, rendered at 64×64 —
its environment, data set ``pointmass`` and cost; registered as planning world ``pointmass``."""
from typing import Any

from seqvae.control.environment import PlanningWorld
from seqvae.registry import register_world
from seqvae.worlds.pointmass.dataset import PointMassDataConfig, PointMassDataset
from seqvae.worlds.pointmass.world import PointMassConfig, PointMassCostConfig, PointMassEnv, TrackerCost, TrueModel


def make_env(data_cfg: Any = None) -> PointMassEnv:
    """The world a model trained on ``data_cfg`` (a ``pointmass`` data config) plans in."""
    if data_cfg is None:
        return PointMassEnv()
    if not isinstance(data_cfg, PointMassDataConfig):
        raise ValueError(f"planning in world 'pointmass' needs a model trained on the 'pointmass' data set, "
                         f"this one was trained on {data_cfg.name!r}")
    return PointMassEnv(data_cfg.world)


register_world(PlanningWorld(name="pointmass", data_name="pointmass", cost_config=PointMassCostConfig,
                             make_env=make_env, frame_cost=TrackerCost, true_model=TrueModel,
                             task="bring the mass to the ring"))

__all__ = ["PointMassConfig", "PointMassDataConfig", "PointMassDataset", "PointMassEnv"]
