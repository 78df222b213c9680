"""``seqvae eval CKPT``: the −log p bound on a split (nats, bits/dim), σ and effective β;
for video models also best-of-N PSNR/SSIM(/LPIPS) curves against copy-last-frame, the
data set's own video metrics on the same samples, and optionally per-frame FID."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from seqvae.cli.common import DEFAULT_DEVICE, PRECISIONS, add_model_arguments, model_folder
from seqvae.io import atomic_write_text
from seqvae.models.base import is_video_model


def run(args: argparse.Namespace) -> None:
    from seqvae import amp
    from seqvae.build import build_data, load_model, model_source
    from seqvae.evaluation.elbo import evaluate_elbo

    device = torch.device(args.device)
    model, cfg, payload = load_model(model_source(args.checkpoint, args.pretrained), device, args.overrides)
    dataset = build_data(cfg, args.split)
    dtype = amp.resolve(args.precision, device)
    result = evaluate_elbo(model, dataset, args.batch_size or cfg.train.batch_size, device, dtype, args.batches)
    result["step"] = payload["step"]
    result["split"] = args.split
    if is_video_model(model):
        result.update(video_metrics(model, cfg, dataset, args, device))
    note = "" if result["valid_bound"] else "  (per-image σ looks at x: not a true bound)"
    print(f"-log p bound: {result['neg_elbo']:.2f} nats per example, {result['bpd']:.4f} bits/dim{note}")
    print(f"  NLL {result['nll']:.2f}  KL {result['kl']:.2f}  "
          + "  ".join(f"{k} {result[k]:.4g}" for k in ("sigma", "sigma_ema", "beta_eff") if k in result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def video_metrics(model, cfg, dataset, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Best-of-N frame metrics, the data set's own video metrics and (``--fid``) FID."""
    from seqvae.evaluation.video import evaluate_video
    from seqvae.registry import video_metrics_for

    lpips = None
    if args.lpips:
        from seqvae.evaluation.metrics import LPIPS

        lpips = LPIPS(backbone_weights=args.lpips_weights or None).to(device)
    out_dir = Path(args.out_dir) if args.out_dir else model_folder(args.checkpoint, args.pretrained) / "eval"
    extra = video_metrics_for(cfg.data.name)
    result = evaluate_video(model, dataset, n_samples=args.samples, n_sequences=args.sequences, device=device,
                            precision=args.precision, lpips=lpips, metrics=extra, out_dir=out_dir)
    summary: dict[str, Any] = dict(result.summary())
    if args.fid:
        from seqvae.evaluation.video import video_fid

        summary["fid"] = video_fid(model, dataset, n_sequences=args.sequences, device=device, precision=args.precision,
                                   weights_path=args.inception_weights or None)
    print(f"best of {args.samples} samples over {result.curves['psnr'].shape[0]} sequences: "
          + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    for metric in extra:
        figures = metric.summary()
        summary.update({f"{metric.name}_{k}": v for k, v in figures.items()})
        for line in metric.report():
            print(f"{metric.name}: {line}")
    print(f"per-timestep curves (CSV, PNG): {out_dir}")
    return summary


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: -log p bound (nats, bits/dim), σ, effective β")
    add_model_arguments(p)
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.root=...)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the data split to score")
    p.add_argument("--batches", type=int, default=0, help="evaluate at most this many batches (0: all)")
    p.add_argument("--batch-size", type=int, default=0, help="batch size of the bound (0: the run's train.batch_size)")
    p.add_argument("--samples", type=int, default=100, help="video models: samples per sequence for best-of-N metrics")
    p.add_argument("--sequences", type=int, default=256, help="video models: test sequences for the frame metrics")
    p.add_argument("--lpips", action="store_true", help="video models: also compute LPIPS (needs AlexNet weights)")
    p.add_argument("--lpips-weights", default="", help="local AlexNet state_dict for LPIPS (no download)")
    p.add_argument("--fid", action="store_true", help="video models: per-frame FID of predicted frames (needs Inception weights)")
    p.add_argument("--inception-weights", default="", help="local Inception weights file for FID (no download)")
    p.add_argument("--out-dir", default="", help="video models: where curves (CSV/PNG) go (default: RUN/eval)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="autocast (auto: bf16 where native)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help="cpu or cuda")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(func=run)
