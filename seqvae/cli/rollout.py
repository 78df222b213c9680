"""``seqvae rollout CKPT (--index I | --npz FILE | --video FILE) [--actions ACTIONS.npz]``:
predicted futures of a video model from context frames taken from the checkpoint's test
split, an ``.npz`` or a video, written as ``PREFIX.npz`` (``frames`` uint8
``[K, S, horizon, C, H, W]``) and a labelled ``PREFIX.mp4``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqvae.amp import PRECISIONS
from seqvae.cli.common import DEFAULT_DEVICE, add_model_arguments, model_folder
from seqvae.cli.inputs import frames_to_model_layout, load_actions, load_npz
from seqvae.io import frames_to_float, to_uint8
from seqvae.models.base import is_video_model


def run(args: argparse.Namespace) -> None:
    """``seqvae rollout``: predict futures from context frames (and candidate actions)."""
    from seqvae import render
    from seqvae.build import build_data
    from seqvae.control.rollout import rollout
    from seqvae.loading import load_model, model_source

    device = torch.device(args.device)
    sources = [s for s in (args.index is not None, bool(args.npz), bool(args.video)) if s]
    if len(sources) != 1:
        raise ValueError("give exactly one context source: --index I (test split), --npz FILE or --video FILE")
    check_arguments(args)
    for f in (args.npz, args.video, args.actions):
        if f and not Path(f).is_file():
            raise FileNotFoundError(f"no such file: {f}")
    model, cfg, payload = load_model(model_source(args.checkpoint, args.pretrained), device)
    if not is_video_model(model):
        raise ValueError(f"{args.checkpoint} holds an image model ({cfg.model.name}); rollouts need a video model")
    spec = model.spec
    chw = (spec.channels, spec.height, spec.width)
    a_dim = model.action_dim
    n_ctx = args.context or model.n_past
    if n_ctx < 1:
        raise ValueError(f"--context must be at least 1, got {n_ctx}")

    truth = recorded = None
    if args.index is not None:
        dataset = build_data(cfg, "test")
        if not 0 <= args.index < len(dataset):
            raise ValueError(f"--index {args.index} is out of range: the test split has {len(dataset)} sequences")
        item = dataset[args.index]
        video = frames_to_float(item["frames"])
        truth = video
        recorded = item.get("actions")
        source = f"test sequence {args.index}"
    elif args.npz:
        data = load_npz(args.npz, flag="--npz")
        if "frames" not in data:
            raise ValueError(f"{args.npz} has no 'frames' array (keys: {', '.join(data) or 'none'})")
        video = frames_to_model_layout(data["frames"], chw, args.npz)
        source = Path(args.npz).name
    else:
        video = frames_to_model_layout(read_context_video(args.video, args.start + n_ctx), chw, args.video)
        source = Path(args.video).name
    if video.shape[0] < args.start + n_ctx:
        raise ValueError(f"{source} has {video.shape[0]} frames; need --start {args.start} + {n_ctx} context frames")
    context = video[args.start:args.start + n_ctx]

    actions = context_actions = None
    horizon = args.horizon
    if args.actions:
        if not a_dim:
            raise ValueError("this model is not action-conditioned: drop --actions (use --horizon to set the length)")
        actions, context_actions = load_actions(args.actions, a_dim)
        if context_actions is not None and context_actions.shape[0] != n_ctx - 1:
            raise ValueError(f"{args.actions}: context_actions has {context_actions.shape[0]} steps, "
                             f"the context needs {n_ctx - 1}")
        if horizon and horizon != actions.shape[1]:
            raise ValueError(f"--horizon {horizon} but {args.actions} holds {actions.shape[1]}-step action sequences")
        horizon = actions.shape[1]
    elif a_dim:
        if recorded is None:
            raise ValueError(f"this model is action-conditioned (action_dim {a_dim}): pass --actions ACTIONS.npz "
                             "with 'actions' [K, horizon, A] (or use --index, which takes the recorded actions)")
        horizon = horizon or min(model.n_eval, recorded.shape[0] - args.start - n_ctx + 1)
        lo = args.start + n_ctx - 1
        if recorded.shape[0] < lo + horizon:
            raise ValueError(f"test sequence {args.index} records {recorded.shape[0]} actions; --horizon {horizon} "
                             f"from frame {lo} needs {lo + horizon}")
        actions = recorded[lo:lo + horizon][None]
    horizon = horizon or model.n_eval
    if a_dim and context_actions is None and recorded is not None and args.start + n_ctx - 1 <= recorded.shape[0]:
        context_actions = recorded[args.start:args.start + n_ctx - 1]

    generator = torch.Generator().manual_seed(args.seed)
    out = rollout(model, context[None].to(device), None if actions is None else actions[None].to(device), args.samples,
                  generator=generator, horizon=horizon,
                  context_actions=None if context_actions is None else context_actions[None].to(device),
                  precision=args.precision)
    frames = out.frames[0].cpu()                                                  # [K, S, horizon, C, H, W]
    prefix = Path(args.out) if args.out else model_folder(args.checkpoint, args.pretrained) / f"rollout_seed{args.seed}"
    if prefix.suffix in (".npz", ".mp4"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"frames": to_uint8(frames).numpy(), "context": to_uint8(context).numpy()}
    if actions is not None:
        arrays["actions"] = actions.numpy().astype(np.float32)
    np.savez_compressed(prefix.with_suffix(".npz"), **arrays)

    k_show, s_show = min(frames.shape[0], 4), min(frames.shape[1], 4)
    panels = []
    if truth is not None:
        end = min(truth.shape[0], args.start + n_ctx + horizon)
        panels.append(render.Panel(truth[args.start:end], "ground truth", context=n_ctx, ground_truth=True))
    for k in range(k_show):
        for s in range(s_show):
            label = f"cand {k} sample {s}" if actions is not None and frames.shape[0] > 1 else f"sample {s}"
            panels.append(render.Panel(torch.cat([context, frames[k, s]]), label, context=n_ctx))
    video_out = render.compose(panels, columns=s_show + (1 if truth is not None and k_show == 1 else 0),
                               scale=args.scale, title=f"{source}: green = context, red = predicted")
    mp4 = render.write_video(prefix.with_suffix(".mp4"), video_out, fps=args.fps)
    print(f"wrote {prefix.with_suffix('.npz')} (frames {tuple(frames.shape)}) and {mp4}")


def read_context_video(path: str, frames: int) -> np.ndarray:
    """The first ``frames`` frames of ``--video``; a file FFmpeg cannot read is a clear error."""
    import av

    from seqvae import render

    try:
        return render.read_video(path, max_frames=frames)
    except av.error.FFmpegError as err:   # not a video FFmpeg can decode (PyAV's errors carry an FFmpeg errno)
        raise ValueError(f"--video {path} is not a video seqvae can read ({err.strerror or err}); give an MP4, GIF, "
                         "WebM ... file, or its frames as an .npz with --npz") from None


def check_arguments(args: argparse.Namespace) -> None:
    """Numbers the rollout cannot run with, refused before the model loads (each names its flag)."""
    if args.horizon is not None and args.horizon < 1:
        raise ValueError(f"--horizon must be at least 1 (the frames to predict), got {args.horizon}; leave it out to "
                         "predict as many frames as the actions cover (else the model's n_eval)")
    if args.start < 0:
        raise ValueError(f"--start must be 0 or more (the first context frame in the source), got {args.start}")
    if args.context < 0:
        raise ValueError(f"--context must be at least 1 (or 0: the model's n_past), got {args.context}")
    for flag, value in (("--samples", args.samples), ("--scale", args.scale)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if not args.fps > 0:
        raise ValueError(f"--fps must be more than 0, got {args.fps}")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("rollout", help="predict futures of a video model from context frames (and actions)")
    add_model_arguments(p)
    src = p.add_argument_group("context source (exactly one)")
    src.add_argument("--index", type=int, default=None, help="sequence I of the checkpoint's test split")
    src.add_argument("--npz", default="", help=".npz with 'frames' uint8/float [T, C, H, W] or [T, H, W, C]")
    src.add_argument("--video", default="", help="a video file (MP4, GIF, ...) with frames of the model's size")
    p.add_argument("--start", type=int, default=0, help="first context frame in the source")
    p.add_argument("--context", type=int, default=0, help="context frames (0: the model's n_past)")
    p.add_argument("--actions", default="", help=".npz with 'actions' [K, horizon, A] or [horizon, A] "
                                                 "(optional 'context_actions' [n_ctx - 1, A]; default zeros)")
    p.add_argument("--horizon", type=int, default=None,
                   help="predicted frames, at least 1 (default: from the actions, else n_eval)")
    p.add_argument("--samples", type=int, default=4, help="futures per candidate")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    p.add_argument("--out", default="", help="output prefix: PREFIX.npz and PREFIX.mp4")
    p.add_argument("--scale", type=int, default=2, help="MP4: integer upscaling of each frame")
    p.add_argument("--fps", type=float, default=6, help="MP4: frames per second")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="autocast (auto: bf16 where native)")
    p.set_defaults(func=run)
