"""``seqvae train CONFIG [key=value ...] [--resume] [--dry-run] [--force]``: the one training loop
(:mod:`seqvae.training`) on a YAML config; under ``torchrun`` it runs with DDP."""
from __future__ import annotations

import argparse
import shlex
from typing import Any

from seqvae import dist
from seqvae.config import RunConfig


def run(args: argparse.Namespace) -> None:
    """``seqvae train``. With ``--resume`` the run continues with the config stored in its
    checkpoint plus the command line's overrides (CONFIG only says where the run folder is,
    through ``train.out_dir``); the folder's ``config.yaml`` is rewritten after the
    checkpoint has loaded."""
    from seqvae.training import TrainingInterrupted, train

    cfg = RunConfig.load(args.config, args.overrides)
    try:
        run_dir = train(cfg, resume=args.resume, dry_run=args.dry_run,
                        overrides=args.overrides if args.resume else None, force=args.force)
    except TrainingInterrupted as stop:   # Ctrl-C / SIGTERM: say how to continue
        launcher = (["seqvae"] if dist.world() == 1
                    else ["torchrun", f"--nproc_per_node={dist.world()}", "-m", "seqvae.cli"])
        stop.resume_command = " ".join(shlex.quote(x) for x in [*launcher, "train", args.config, "--resume",
                                                                f"train.out_dir={cfg.train.out_dir}"])
        raise
    if dist.is_main() and not args.dry_run:
        print(f"run folder: {run_dir}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file under configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its checkpoint")
    p.add_argument("--dry-run", action="store_true", help="build everything and run one step; write nothing")
    p.add_argument("--force", action="store_true",
                   help="train in a non-empty train.out_dir that holds no seqvae run (your files are left alone)")
    p.set_defaults(func=run)
