#!/usr/bin/env python
"""Closed-loop planning on the embedded pushing world: "push object 0 to the goal".

    python tools/plan_pusher.py --checkpoint runs/pusher_actions          # 50 episodes, 3 methods
    python tools/plan_pusher.py --methods random,true_sim --episodes 10   # no model needed
    python tools/plan_pusher.py --checkpoint runs/pusher_actions --replan-every 2 --candidates 100

Methods, on the same fixed episodes (episode i starts from (seed, i)): random actions,
CEM with the true simulator as the model (the planner's upper bound) and CEM with a
trained action-conditioned SVG-LP (``--checkpoint``, e.g. trained with
``configs/demo/svg_pusher_actions.yaml``). Prints a markdown table (success rate:
final object-goal distance below one object radius unless ``--threshold``; mean and
median final distance) and writes results.md, results.json and MP4s of the first
``--render`` episodes to ``--out-dir``. Same as ``seqvae plan``.
"""
from __future__ import annotations

import argparse
import sys

from seqvae.plan_cli import add_plan_arguments, cmd_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_plan_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cmd_plan(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"plan_pusher: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
