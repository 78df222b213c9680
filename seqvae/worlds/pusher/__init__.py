"""The embedded pushing world: a procedural robot-pushing table (state, physics,
rendering, random policy), its video data set ``pusher`` (no download), colour tracking,
push costs, planners and the closed-loop planning evaluation, and the object-motion video
metric. Importing the package registers the data set, the metric and ``seqvae plan``."""
from seqvae.registry import register_command, register_video_metric
from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset
from seqvae.worlds.pusher.motion import ObjectMotionMetric
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import PusherConfig, PusherState

register_video_metric("pusher", ObjectMotionMetric)


def _add_plan_command(subparsers) -> None:
    from seqvae.worlds.pusher.plan_command import add_parser

    add_parser(subparsers)


register_command(_add_plan_command)

__all__ = ["PusherConfig", "PusherDataConfig", "PusherDataset", "PusherSim", "PusherState"]
