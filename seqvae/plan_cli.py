"""Command-line front ends of rollouts, planning and rendering (wired into ``seqvae``).

    seqvae rollout CKPT (--index I | --npz FILE | --video FILE) [--actions ACTIONS.npz]
                   [--samples S] [--seed N] [--out PREFIX]
    seqvae plan [--checkpoint CKPT] [--episodes 50] [--steps 40] [--horizon 10] ...
    seqvae render INPUT.npz --out FILE.mp4|.gif|.png [--context N] [--scale S] [--fps F]

``rollout`` predicts futures of an action-conditioned (or action-free) video model from
context frames taken from the checkpoint's test split, an ``.npz`` or a video, and
writes them as ``PREFIX.npz`` (``frames`` uint8 ``[K, S, horizon, C, H, W]``) and a
labelled ``PREFIX.mp4``. ``plan`` runs the closed-loop pushing evaluation of
:mod:`seqvae.planning` (``tools/plan_pusher.py`` is the same command). ``render`` turns
arrays of videos into labelled panels.

Errors a user can fix raise ``ValueError`` / ``FileNotFoundError`` with a message saying
what is wrong; ``seqvae.cli.main`` prints them and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------- array inputs


def _load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err})") from None


def frames_to_model_layout(frames: np.ndarray, chw: tuple[int, int, int], source: str) -> torch.Tensor:
    """``[T, C, H, W]`` or ``[T, H, W, C]`` (uint8, or float in [0, 1]) -> float ``[T, C, H, W]``
    in [0, 1], checked against the model's frame shape ``chw``."""
    arr = np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"{source}: frames must be [T, C, H, W] or [T, H, W, C], got shape {arr.shape}")
    c, h, w = chw
    if tuple(arr.shape[1:]) == (c, h, w):
        pass
    elif tuple(arr.shape[1:]) == (h, w, c):
        arr = rearrange(arr, "t h w c -> t c h w")
    else:
        raise ValueError(f"{source}: frames of shape {arr.shape} do not match the model's {c}×{h}×{w} frames "
                         f"(expected [T, {c}, {h}, {w}] or [T, {h}, {w}, {c}]; resize the video first)")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).clamp(0, 1)
    raise ValueError(f"{source}: frames must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def load_actions(path: str | Path, action_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``actions`` ``[K, horizon, A]`` or ``[horizon, A]`` (-> K = 1) and the optional
    ``context_actions`` ``[n_ctx - 1, A]`` from an ``.npz``."""
    data = _load_npz(path)
    if "actions" not in data:
        raise ValueError(f"{path} has no 'actions' array (keys: {', '.join(data) or 'none'})")
    acts = torch.as_tensor(np.asarray(data["actions"], dtype=np.float32))
    if acts.dim() == 2:
        acts = acts[None]
    if acts.dim() != 3 or acts.shape[1] < 1:
        raise ValueError(f"{path}: actions must be [K, horizon, A] or [horizon, A], got shape {tuple(data['actions'].shape)}")
    if acts.shape[-1] != action_dim:
        raise ValueError(f"{path}: actions have {acts.shape[-1]} dimensions but the model takes {action_dim}")
    ctx_acts = None
    if "context_actions" in data:
        ctx_acts = torch.as_tensor(np.asarray(data["context_actions"], dtype=np.float32))
        if ctx_acts.dim() != 2 or ctx_acts.shape[-1] != action_dim:
            raise ValueError(f"{path}: context_actions must be [n_ctx - 1, {action_dim}], got {tuple(ctx_acts.shape)}")
    return acts, ctx_acts


# ------------------------------------------------------------------------- rollout


def cmd_rollout(args: argparse.Namespace) -> None:
    """``seqvae rollout``: predict futures from context frames (and candidate actions)."""
    from seqvae import render
    from seqvae.build import build_data, load_model
    from seqvae.rollout import rollout

    device = torch.device(args.device)
    sources = [s for s in (args.index is not None, bool(args.npz), bool(args.video)) if s]
    if len(sources) != 1:
        raise ValueError("give exactly one context source: --index I (test split), --npz FILE or --video FILE")
    for f in (args.npz, args.video, args.actions):
        if f and not Path(f).is_file():
            raise FileNotFoundError(f"no such file: {f}")
    model, cfg, payload = load_model(args.checkpoint, device)
    if not hasattr(model, "predict"):
        raise ValueError(f"{args.checkpoint} holds an image model ({cfg.model.name}); rollouts need a video model")
    spec = model.spec
    chw = (spec.channels, spec.height, spec.width)
    a_dim = int(getattr(model, "action_dim", 0))
    n_ctx = args.context or model.n_past
    if n_ctx < 1:
        raise ValueError(f"--context must be at least 1, got {n_ctx}")

    truth = recorded = None
    if args.index is not None:
        dataset = build_data(cfg, "test")
        if not 0 <= args.index < len(dataset):
            raise ValueError(f"--index {args.index} is out of range: the test split has {len(dataset)} sequences")
        item = dataset[args.index]
        video = item["frames"].float() / 255.0
        truth = video
        recorded = item.get("actions")
        source = f"test sequence {args.index}"
    elif args.npz:
        data = _load_npz(args.npz)
        if "frames" not in data:
            raise ValueError(f"{args.npz} has no 'frames' array (keys: {', '.join(data) or 'none'})")
        video = frames_to_model_layout(data["frames"], chw, args.npz)
        source = Path(args.npz).name
    else:
        video = frames_to_model_layout(render.read_video(args.video, max_frames=args.start + n_ctx), chw, args.video)
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
    frames = out.frames[0].cpu()                                                  # (K, S, horizon, C, H, W)
    prefix = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / f"rollout_seed{args.seed}"
    if prefix.suffix in (".npz", ".mp4"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    to_u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    arrays: dict[str, Any] = {"frames": to_u8(frames), "context": to_u8(context)}
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


# ---------------------------------------------------------------------------- plan


def plan_config_from_args(args: argparse.Namespace):
    """A :class:`seqvae.planning.PlanEvalConfig` from ``seqvae plan`` arguments."""
    from seqvae.planning import CEMConfig, PlanEvalConfig, PushCostConfig

    cem = CEMConfig(iterations=args.iterations, candidates=args.candidates, elites=args.elites, horizon=args.horizon,
                    samples=args.samples, init_std=args.init_std, momentum=args.momentum)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if "learned" in methods and not args.checkpoint:
        methods = tuple(m for m in methods if m != "learned")
        print("no --checkpoint: skipping the learned-model planner")
    return PlanEvalConfig(episodes=args.episodes, steps=args.steps, replan_every=args.replan_every, seed=args.seed,
                          success_threshold=args.threshold, samples=args.samples, precision=args.precision,
                          render_episodes=args.render, methods=methods, cem=cem,
                          cost=PushCostConfig(shaping=args.shaping, gripper_source=args.gripper_source,
                                              color_temperature=args.color_temperature,
                                              lost_penalty=args.lost_penalty))


def cmd_plan(args: argparse.Namespace) -> dict:
    """``seqvae plan``: closed-loop pushing evaluation (random / true simulator / learned model)."""
    from seqvae.planning import evaluate_pusher, results_markdown, sim_for_model

    torch.set_num_threads(args.threads) if args.threads > 0 else None
    cfg = plan_config_from_args(args)
    model = sim = None
    if "learned" in cfg.methods:
        from seqvae.build import load_model

        model, run_cfg, payload = load_model(args.checkpoint, torch.device(args.device))
        if not getattr(model, "action_dim", 0):
            raise ValueError(f"{args.checkpoint} is not action-conditioned; planning needs model.action_conditioned=true")
        sim = sim_for_model(run_cfg.data)
        print(f"learned model: {args.checkpoint}, step {payload['step']}")
    out_dir = Path(args.out_dir)
    results = evaluate_pusher(cfg, model=model, sim=sim, out_dir=out_dir)
    if model is not None:
        results["checkpoint"] = {"path": str(args.checkpoint), "step": payload["step"]}
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(results_markdown(results))
    print(f"\nresults: {out_dir / 'results.md'}, {out_dir / 'results.json'}")
    return results


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seqvae plan`` / ``tools/plan_pusher.py``."""
    p.add_argument("--checkpoint", default="", help="action-conditioned SVG trained on 'pusher' (run folder or .pt)")
    p.add_argument("--methods", default="random,true_sim,learned",
                   help="comma-separated: random, true_sim, sim_frames (a perfect video model with the learned "
                        "model's frame cost), learned")
    p.add_argument("--episodes", type=int, default=50, help="episodes per method (the same ones for every method)")
    p.add_argument("--steps", type=int, default=40, help="environment steps per episode")
    p.add_argument("--horizon", type=int, default=10, help="CEM planning horizon (steps)")
    p.add_argument("--candidates", type=int, default=200, help="CEM candidates per iteration")
    p.add_argument("--elites", type=int, default=20, help="CEM elites")
    p.add_argument("--iterations", type=int, default=3, help="CEM iterations per plan")
    p.add_argument("--samples", type=int, default=1, help="learned model: futures per candidate")
    p.add_argument("--init-std", type=float, default=0.6, help="CEM initial action std")
    p.add_argument("--momentum", type=float, default=0.1, help="CEM mean/std smoothing")
    p.add_argument("--replan-every", type=int, default=1, help="execute this many actions of each plan")
    p.add_argument("--shaping", type=float, default=0.5, help="weight of the gripper-to-push-point term of the cost")
    p.add_argument("--gripper-source", default="frames", choices=["frames", "kinematics"],
                   help="learned model: the shaping term's gripper from the predicted frames or from the "
                        "arm's own kinematics (observed position + actions)")
    p.add_argument("--color-temperature", type=float, default=0.1, help="learned model: colour tracker tolerance")
    p.add_argument("--lost-penalty", type=float, default=0.2,
                   help="frame costs: penalty × share of the object's colour a predicted frame has lost")
    p.add_argument("--threshold", type=float, default=0.0, help="success: final distance below this (0: one object radius)")
    p.add_argument("--seed", type=int, default=0, help="episode seed (episode i starts from (seed, i))")
    p.add_argument("--render", type=int, default=3, help="render the first N episodes to MP4")
    p.add_argument("--out-dir", default="runs/plan_pusher", help="results.md, results.json, episode_XXX.mp4")
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")


# -------------------------------------------------------------------------- render


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
            frames = np.concatenate([np.broadcast_to(ctx, (frames.shape[0], *ctx.shape)).astype(frames.dtype), frames], 1)
            context = ctx.shape[0]
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] not in (1, 3):
        raise ValueError(f"{source}: frames must be [N, T, C, H, W] or [T, C, H, W] with C = 1 or 3, "
                         f"got shape {np.asarray(data['frames']).shape}")
    if labels is not None and len(labels) != frames.shape[0]:
        raise ValueError(f"{source}: {len(labels)} labels for {frames.shape[0]} videos")
    return frames, labels, context


def cmd_render(args: argparse.Namespace) -> None:
    """``seqvae render``: arrays of videos -> labelled panels in an MP4 / GIF / PNG strip."""
    from seqvae import render

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif", ".png"):
        raise ValueError(f"--out must end in .mp4, .gif or .png, got {out.name!r}")
    frames, labels, context = videos_from_npz(_load_npz(args.input), args.input)
    if args.context is not None:
        if not 0 <= args.context <= frames.shape[1]:
            raise ValueError(f"--context {args.context} is outside 0..{frames.shape[1]} (frames per video)")
        context = args.context
    panels = render.panels_from_batch(frames, labels, context)
    video = render.compose(panels, columns=args.columns or None, scale=args.scale, title=args.title or None)
    path = render.write_video(out, video, fps=args.fps)
    print(f"wrote {path} ({frames.shape[0]} videos of {frames.shape[1]} frames)")


# ------------------------------------------------------------------------- parsers


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rollout``, ``plan`` and ``render`` on the ``seqvae`` sub-command parser."""
    p = subparsers.add_parser("rollout", help="predict futures of a video model from context frames (and actions)")
    p.add_argument("checkpoint", help="checkpoint.pt or a run folder")
    src = p.add_argument_group("context source (exactly one)")
    src.add_argument("--index", type=int, default=None, help="sequence I of the checkpoint's test split")
    src.add_argument("--npz", default="", help=".npz with 'frames' uint8/float [T, C, H, W] or [T, H, W, C]")
    src.add_argument("--video", default="", help="a video file (MP4, GIF, ...) with frames of the model's size")
    p.add_argument("--start", type=int, default=0, help="first context frame in the source")
    p.add_argument("--context", type=int, default=0, help="context frames (0: the model's n_past)")
    p.add_argument("--actions", default="", help=".npz with 'actions' [K, horizon, A] or [horizon, A] "
                                                 "(optional 'context_actions' [n_ctx - 1, A]; default zeros)")
    p.add_argument("--horizon", type=int, default=0, help="predicted frames (default: from the actions, else n_eval)")
    p.add_argument("--samples", type=int, default=4, help="futures per candidate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="output prefix: PREFIX.npz and PREFIX.mp4")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--fps", type=float, default=6)
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.set_defaults(func=cmd_rollout)

    p = subparsers.add_parser("plan", help="closed-loop CEM planning on the pushing world: random vs "
                                           "true simulator vs learned model")
    add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)

    p = subparsers.add_parser("render", help="render arrays of videos (.npz 'frames') as labelled panels")
    p.add_argument("input", help=".npz with 'frames' [N, T, C, H, W] or [T, C, H, W] (optional 'labels' [N])")
    p.add_argument("--out", required=True, help="FILE.mp4, FILE.gif or FILE.png")
    p.add_argument("--context", type=int, default=None, help="mark the first N frames as context")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--fps", type=float, default=6)
    p.add_argument("--columns", type=int, default=0, help="panels per row (0: automatic)")
    p.add_argument("--title", default="")
    p.set_defaults(func=cmd_render)
