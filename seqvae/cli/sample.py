"""``seqvae sample CKPT``: a grid of samples from an image model's prior."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from seqvae.cli.common import DEFAULT_DEVICE
from seqvae.config import ConfigError


def run(args: argparse.Namespace) -> None:
    from seqvae.evaluation.images import prior_samples
    from seqvae.loading import load_model
    from seqvae.render import write_png_grid

    model, _, _ = load_model(args.checkpoint, torch.device(args.device))
    if model.spec.seq_len != 1:
        raise ConfigError("seqvae sample draws image grids from image models; "
                          "for video models use seqvae eval / rollout")
    samples = prior_samples(model, args.num, args.seed, args.device)
    out = Path(args.out or Path(args.checkpoint).parent / f"samples_seed{args.seed}.png")
    write_png_grid(out, samples, nrow=int(args.num**0.5 + 0.999))
    print(f"wrote {args.num} samples to {out}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sample", help="draw an image grid from an image model's prior")
    p.add_argument("checkpoint", help="checkpoint.pt or a run folder of an image model")
    p.add_argument("--num", type=int, default=64, help="number of samples (a square grid)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    p.add_argument("--out", default="", help="PNG path (default: samples_seedS.png beside the checkpoint)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    p.set_defaults(func=run)
