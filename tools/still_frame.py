#!/usr/bin/env python
"""One frame of a rendered MP4 as a PNG (the README's still frames of the demo's videos).

    python tools/still_frame.py runs/demo/predictions_actions.mp4 --frame 20 --out still.png
    python tools/still_frame.py runs/demo/planning/episode_000.mp4 --frame -1 --out plan.png --width 480

``--frame`` counts from 0 (negative: from the end); ``--width`` scales the frame down
(area averaging) to keep the PNG small. The output is written atomically and an existing
file is replaced only with ``--force``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="an MP4 (or any video PyAV reads)")
    parser.add_argument("--frame", type=int, default=-1, help="frame index (negative: from the end)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=0, help="scale down to this width (0: as is)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from seqvae.render.writers import read_video, save_png

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"still_frame: error: {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    try:
        frames = read_video(args.video)
    except (OSError, ValueError) as err:
        print(f"still_frame: error: cannot read video {args.video}: {err}", file=sys.stderr)
        return 2
    if not -len(frames) <= args.frame < len(frames):
        print(f"still_frame: error: --frame {args.frame} is outside the video's {len(frames)} frames",
              file=sys.stderr)
        return 2
    frame = frames[args.frame]
    if 0 < args.width < frame.shape[1]:
        height = round(frame.shape[0] * args.width / frame.shape[1])
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
        frame = F.interpolate(x, size=(height, args.width), mode="area")[0].permute(1, 2, 0).round().clamp(0, 255)
        frame = frame.to(torch.uint8).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(out, np.ascontiguousarray(frame))
    print(f"wrote {out} (frame {args.frame % len(frames)} of {len(frames)}, {frame.shape[1]}×{frame.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
