"""The embedded pushing world: a procedural robot-pushing table (state, physics,
rendering, random policy), its video data set ``pusher`` (no download), colour tracking,
push costs, the planning task "push object 0 to the goal" (environment, costs, a perfect
video model) and the object-motion video metric. Importing the package registers the data
set, the metric and the planning world ``pusher``."""
from seqvae.registry import register_video_metric
from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset
from seqvae.worlds.pusher.motion import ObjectMotionMetric
from seqvae.worlds.pusher.planning import PusherEnv
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import PusherConfig, PusherState

register_video_metric("pusher", ObjectMotionMetric)

__all__ = ["PusherConfig", "PusherDataConfig", "PusherDataset", "PusherEnv", "PusherSim", "PusherState"]
