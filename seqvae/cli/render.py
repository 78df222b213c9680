"""``seqvae render INPUT.npz --out FILE.mp4|.gif|.png``: arrays of videos as labelled panels."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from seqvae.cli.inputs import load_npz


def videos_from_npz(data: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, list[str] | None, int | None]:
    """``frames`` ``[N, T, C, H, W]`` / ``[T, C, H, W]`` (or a rollout's ``[K, S, T, C, H, W]``
    with its ``context`` prepended) -> (``[N, T, C, H, W]``, labels, context length)."""
    if "frames" not in data:
        raise ValueError(f"{source} has no 'frames' array (keys: {', '.join(data) or 'none'})")
    frames = np.asarray(data["frames"])
    labels = [str(x) for x in np.asarray(data["labels"]).reshape(-1)] if "labels" in data else None
    context = None
    if frames.ndim == 6:                                                          # a rollout: K × S videos
        k, s = frames.shape[:2]
        frames = rearrange(frames, "k s t c h w -> (k s) t c h w")
        labels = labels or [f"cand {i} sample {j}" for i in range(k) for j in range(s)]
        if "context" in data:
            ctx = np.asarray(data["context"])
            if ctx.ndim != 4 or ctx.shape[1:] != frames.shape[2:]:
                raise ValueError(f"{source}: context {ctx.shape} does not match the frames {frames.shape[2:]}")
            frames = np.concatenate([np.broadcast_to(ctx, (frames.shape[0], *ctx.shape)).astype(frames.dtype),
                                     frames], 1)
            context = ctx.shape[0]
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] not in (1, 3):
        raise ValueError(f"{source}: frames must be [N, T, C, H, W] or [T, C, H, W] with C = 1 or 3, "
                         f"got shape {np.asarray(data['frames']).shape}")
    if labels is not None and len(labels) != frames.shape[0]:
        raise ValueError(f"{source}: {len(labels)} labels for {frames.shape[0]} videos")
    return frames, labels, context


def run(args: argparse.Namespace) -> None:
    """``seqvae render``: arrays of videos -> labelled panels in an MP4 / GIF / PNG strip."""
    from seqvae import render

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif", ".png"):
        raise ValueError(f"--out must end in .mp4, .gif or .png, got {out.name!r}")
    frames, labels, context = videos_from_npz(load_npz(args.input), args.input)
    if args.context is not None:
        if not 0 <= args.context <= frames.shape[1]:
            raise ValueError(f"--context {args.context} is outside 0..{frames.shape[1]} (frames per video)")
        context = args.context
    panels = render.panels_from_batch(frames, labels, context)
    if out.suffix.lower() == ".png":   # a still: rows = videos, columns = (subsampled) time steps
        path = render.write_panel_grid(out, panels, max_columns=args.max_columns, scale=args.scale,
                                       title=args.title or None)
    else:
        video = render.compose(panels, columns=args.columns or None, scale=args.scale, title=args.title or None)
        path = render.write_video(out, video, fps=args.fps)
    print(f"wrote {path} ({frames.shape[0]} videos of {frames.shape[1]} frames)")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("render", help="render arrays of videos (.npz 'frames') as labelled panels")
    p.add_argument("input", help=".npz with 'frames' [N, T, C, H, W] or [T, C, H, W] (optional 'labels' [N])")
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif or FILE.png")
    p.add_argument("--context", type=int, default=None, help="mark the first N frames as context")
    p.add_argument("--scale", type=int, default=2, help="integer upscaling of each frame")
    p.add_argument("--fps", type=float, default=6, help="MP4/GIF: frames per second")
    p.add_argument("--columns", type=int, default=0, help="MP4/GIF: panels per row (0: automatic)")
    p.add_argument("--max-columns", type=int, default=12, help="PNG: time steps shown per row (evenly subsampled)")
    p.add_argument("--title", default="", help="text above the panels")
    p.set_defaults(func=run)
