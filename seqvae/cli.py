"""The ``seqvae`` command line.

    seqvae train CONFIG [key=value ...] [--resume] [--dry-run]
    seqvae eval CKPT [--split test] [--batches N] [key=value ...]
    seqvae sample CKPT [--num N] [--seed S] [--out FILE]
    seqvae demo [--minutes M]
    seqvae analyze CKPT                     (rate, MI, marginal KL, FID)
    seqvae rollout CKPT / plan / render     (see seqvae.plan_cli)

Under ``torchrun --nproc_per_node=N -m seqvae.cli train ...`` training runs with DDP.
Errors a user can fix (bad config, missing data, corrupt checkpoint, a training run whose
updates are all being skipped) print one clear message and exit with status 2; nothing in
the run folder is overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from seqvae.checkpoint import CheckpointError
from seqvae.config import ConfigError
from seqvae.train import RunFolderError
from seqvae.update_guard import UpdatesSkippedError


def cmd_train(args: argparse.Namespace) -> None:
    from seqvae.config import RunConfig
    from seqvae.train import train

    cfg = RunConfig.load(args.config, args.overrides)
    if args.resume:  # the run folder's own config wins unless overridden
        run_cfg = Path(cfg.train.out_dir) / "config.yaml"
        if run_cfg.exists():
            cfg = RunConfig.load(run_cfg, args.overrides)
    run_dir = train(cfg, resume=args.resume, dry_run=args.dry_run)
    print(f"run folder: {run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from seqvae import amp
    from seqvae.build import build_data, load_model
    from seqvae.eval import evaluate_elbo

    device = torch.device(args.device)
    model, cfg, payload = load_model(args.checkpoint, device, args.overrides)
    dataset = build_data(cfg, args.split)
    dtype = amp.resolve(args.precision, device)
    result = evaluate_elbo(model, dataset, args.batch_size or cfg.train.batch_size, device, dtype, args.batches)
    result["step"] = payload["step"]
    result["split"] = args.split
    if hasattr(model, "predict"):  # video model: best-of-N frame metrics (SVG protocol)
        result.update(video_metrics(model, dataset, args, device, dtype))
    note = "" if result["valid_bound"] else "  (per-image σ looks at x: not a true bound)"
    print(f"-log p bound: {result['neg_elbo']:.2f} nats per example, {result['bpd']:.4f} bits/dim{note}")
    print(f"  NLL {result['nll']:.2f}  KL {result['kl']:.2f}  "
          + "  ".join(f"{k} {result[k]:.4g}" for k in ("sigma", "sigma_ema", "beta_eff") if k in result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def video_metrics(model, dataset, args: argparse.Namespace, device: torch.device, dtype) -> dict:
    from seqvae.video_eval import evaluate_video

    lpips = None
    if args.lpips:
        from seqvae.metrics import LPIPS

        lpips = LPIPS(backbone_weights=args.lpips_weights or None).to(device)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).with_suffix("") / "eval"
    if Path(args.checkpoint).is_dir():
        out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint) / "eval"
    result = evaluate_video(model, dataset, n_samples=args.samples, n_sequences=args.sequences, device=device,
                            dtype=dtype, lpips=lpips, out_dir=out_dir)
    summary = result.summary()
    if args.fid:
        from seqvae.video_eval import video_fid

        summary["fid"] = video_fid(model, dataset, n_sequences=args.sequences, device=device, dtype=dtype,
                                   weights_path=args.inception_weights or None)
    print(f"best of {args.samples} samples over {result.curves['psnr'].shape[0]} sequences: "
          + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    if len(dataset) and "object_color" in dataset[0]:      # the embedded pusher world: do objects move?
        from seqvae.motion_eval import evaluate_object_motion

        motion = evaluate_object_motion(model, dataset, n_samples=args.samples, n_sequences=args.sequences,
                                        device=device, dtype=dtype)
        summary.update({f"object_motion_{k}": v for k, v in motion.summary().items()})
        print(f"object motion (colour-tracked, {motion.moving} of {motion.objects} objects move > 0.15): true "
              f"{motion.true_displacement:.3f}, predicted {motion.predicted_displacement:.3f} table units; best "
              f"sample's final-position error {motion.best_error:.3f} (tracker floor {motion.tracker_error:.3f})")
    print(f"per-timestep curves (CSV, PNG): {out_dir}")
    return summary


def cmd_sample(args: argparse.Namespace) -> None:
    from einops import rearrange
    from torchvision.utils import save_image

    from seqvae.build import load_model

    device = torch.device(args.device)
    model, cfg, payload = load_model(args.checkpoint, device)
    spec = model.spec
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if spec.seq_len != 1:
        raise ConfigError("seqvae sample draws image grids from image models; for video models use seqvae eval / rollout")
    dummy = {"frames": torch.zeros(args.num, 1, spec.channels, spec.height, spec.width, device=device)}
    samples = model.generate(dummy, generator=generator)
    out = Path(args.out or Path(args.checkpoint).parent / f"samples_seed{args.seed}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(rearrange(samples.float(), "n 1 c h w -> n c h w"), out, nrow=int(args.num**0.5 + 0.999))
    print(f"wrote {args.num} samples to {out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from seqvae.demo import run_demo

    run_demo(minutes=args.minutes, out_dir=args.out_dir, overrides=tuple(args.overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file under configs/")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its checkpoint")
    p.add_argument("--dry-run", action="store_true", help="build everything and run one step; write nothing")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: -log p bound (nats, bits/dim), σ, effective β")
    p.add_argument("checkpoint", help="checkpoint.pt or a run folder")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.root=...)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batches", type=int, default=0, help="evaluate at most this many batches (0: all)")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--samples", type=int, default=100, help="video models: samples per sequence for best-of-N metrics")
    p.add_argument("--sequences", type=int, default=256, help="video models: test sequences for the frame metrics")
    p.add_argument("--lpips", action="store_true", help="video models: also compute LPIPS (needs AlexNet weights)")
    p.add_argument("--lpips-weights", default="", help="local AlexNet state_dict for LPIPS (no download)")
    p.add_argument("--fid", action="store_true", help="video models: per-frame FID of predicted frames (needs Inception weights)")
    p.add_argument("--inception-weights", default="", help="local Inception weights file for FID (no download)")
    p.add_argument("--out-dir", default="", help="video models: where curves (CSV/PNG) go (default: next to the checkpoint)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="draw an image grid from an image model's prior")
    p.add_argument("checkpoint")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=cmd_sample)

    from seqvae.analysis import add_analyze_parser
    from seqvae.plan_cli import add_parsers as add_planning_parsers

    add_analyze_parser(sub)
    add_planning_parsers(sub)  # rollout, plan, render

    p = sub.add_parser("demo", help="train on the embedded default data, sample, render an MP4")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--out-dir", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/demo/svg_pusher.yaml")
    p.set_defaults(func=cmd_demo)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may also follow the flags
    (``seqvae train CONFIG --resume train.steps=9000``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        args.func(args)
    except (ConfigError, CheckpointError, RunFolderError, UpdatesSkippedError, FileNotFoundError, ValueError) as err:
        print(f"seqvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
