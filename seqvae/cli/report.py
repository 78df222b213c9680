"""``seqvae report RUN``: write the run's page, ``RUN/index.html`` (:mod:`seqvae.render.report`):
training curves (train and test on the same window), the latest prediction video and
sample grids, every evaluation under ``RUN/eval/`` with its figures and plots, the resolved
config and ``run.json``. The trainer writes the same page at each evaluation; this command
writes it for any run folder (e.g. after ``seqvae eval`` added an evaluation).

A run trained before the trainer saved prediction videos gets one made from its checkpoint
(``--no-video`` skips that)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoint import CheckpointError
from seqvae.cli.common import DEFAULT_DEVICE, check_device


def prediction_video(run_dir: Path, device: torch.device) -> Path | None:
    """``images/step_XXXXXXX_predictions.mp4`` from the run's checkpoint (video models)."""
    from seqvae.build import build_data
    from seqvae.loading import load_model
    from seqvae.models.base import is_video_model
    from seqvae.training.figures import save_prediction_video

    model, cfg, payload = load_model(run_dir, device)
    if not is_video_model(model):
        return None
    model.eval()
    return save_prediction_video(model, build_data(cfg, "test"), run_dir, payload["step"], cfg.train.seed, device)


def run(args: argparse.Namespace) -> Path:
    from seqvae.render.report import write_run_page

    run_dir = Path(args.run)
    if run_dir.is_file():                       # checkpoint.pt given: its folder
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a run folder (it does not exist)")
    if not any((run_dir / name).exists() for name in ("metrics.jsonl", "config.yaml", "checkpoint.pt")):
        raise ValueError(f"{run_dir} holds no seqvae run (no metrics.jsonl, config.yaml or checkpoint.pt)")
    check_device(args.device)
    has_video = any((run_dir / "images").glob("step_*_predictions.mp4"))
    if args.video and not has_video and (run_dir / "checkpoint.pt").is_file():
        try:
            made = prediction_video(run_dir, torch.device(args.device))
            if made is not None:
                print(f"wrote {made} (predictions of test sequences from the checkpoint)")
        except (OSError, ValueError, CheckpointError) as err:   # e.g. its data set is not on this machine
            print(f"note: no prediction video: {err}")
    page = write_run_page(run_dir)
    print(f"wrote {page}")
    return page


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write RUN/index.html: curves, predictions, evaluations, config of a run")
    p.add_argument("run", help="a run folder (or its checkpoint.pt)")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                   help="make a prediction video from the checkpoint when the run has none (default: on)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda (for the prediction video)")
    p.set_defaults(func=run)
