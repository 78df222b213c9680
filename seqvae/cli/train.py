"""``seqvae train CONFIG [key=value ...] [--resume] [--dry-run]``: the one training loop
(:mod:`seqvae.train`) on a YAML config; under ``torchrun`` it runs with DDP."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqvae.config import RunConfig


def run(args: argparse.Namespace) -> None:
    from seqvae.train import train

    cfg = RunConfig.load(args.config, args.overrides)
    if args.resume:  # the run folder's own config wins unless overridden
        run_cfg = Path(cfg.train.out_dir) / "config.yaml"
        if run_cfg.exists():
            cfg = RunConfig.load(run_cfg, args.overrides)
    run_dir = train(cfg, resume=args.resume, dry_run=args.dry_run)
    print(f"dry run: nothing was written (the run folder would be {run_dir})" if args.dry_run
          else f"run folder: {run_dir}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file under configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its checkpoint")
    p.add_argument("--dry-run", action="store_true", help="build everything and run one step; write nothing")
    p.set_defaults(func=run)
