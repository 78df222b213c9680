"""The embedded pushing world: a procedural robot-pushing table (state, physics,
rendering, random policy), its video data set ``pusher`` (no download), colour tracking,
push costs, planners and the closed-loop planning evaluation, and the object-motion video
metric. Importing the package registers the data set, the metric, ``seqvae demo`` and
``seqvae plan``."""
from seqvae.registry import register_command, register_video_metric
from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset
from seqvae.worlds.pusher.motion import ObjectMotionMetric
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import PusherConfig, PusherState

register_video_metric("pusher", ObjectMotionMetric)


def _add_commands(subparsers) -> None:
    """``seqvae demo`` (the main job on this embedded world) and ``seqvae plan``."""
    from seqvae.worlds.pusher import demo, plan_command

    demo.add_parser(subparsers)
    plan_command.add_parser(subparsers)


register_command(_add_commands)

__all__ = ["PusherConfig", "PusherDataConfig", "PusherDataset", "PusherSim", "PusherState"]
