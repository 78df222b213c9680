"""``seqvae demo`` / ``make demo``: the main job on the embedded default data.

1. Train SVG-LP with the optimal-σ decoder on the procedural pushing videos
   (``configs/demo/svg.yaml``) for a time budget on CPU (or GPU when present).
2. Predict futures for held-out sequences from their two context frames: N samples each
   from the learned prior; pick the best by PSNR (the SVG protocol).
3. Render an MP4: for each sequence, ground truth | best of N | two random samples,
   labelled, context frames marked green and predicted ones red.
4. Print where everything went and the figures that say how good it is: the test −log p
   bound, σ and effective β, best-of-N PSNR/SSIM against copying the last context
   frame, and how far the predicted objects move against the truth (colour-tracked,
   the data set's own video metric; PSNR/SSIM barely see a pushed object).

A finished demo run is reused (its folder is never deleted): delete ``runs/demo`` or pass
another ``--out-dir`` to train again.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from einops import repeat

from seqvae import render
from seqvae.build import build_data, load_model
from seqvae.cli.evaluate import new_folder
from seqvae.checkpoint import load_checkpoint
from seqvae.config import RunConfig, find_repo_file
from seqvae.evaluation.curves import best_of_n
from seqvae.evaluation.metrics import psnr
from seqvae.evaluation.video import MAX_DB, draw_futures, evaluate_video
from seqvae.io import atomic_write_text
from seqvae.registry import video_metrics_for
from seqvae.train import train

DEMO_CONFIG = "configs/demo/svg.yaml"


def last_test_metrics(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    tests = [x for x in lines if x["split"] == "test"]
    return tests[-1] if tests else {}


def run_demo(minutes: float = 10.0, out_dir: str = "runs/demo", num_sequences: int = 4, num_samples: int = 16,
             overrides: tuple[str, ...] = ()) -> Path:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = Path(out_dir)
    cfg = RunConfig.load(find_repo_file(DEMO_CONFIG), [f"train.out_dir={run_dir}", f"train.time_limit_minutes={minutes}",
                                                       *overrides])
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        step = load_checkpoint(ckpt)["step"]
        print(f"found a trained demo model in {run_dir} (step {step}); reusing it. "
              f"Delete {run_dir} or pass --out-dir to train a new one.")
    else:
        print(f"training SVG-LP + optimal-σ decoder on the embedded pushing videos for ~{minutes:g} min on {device} ...")
        train(cfg)

    model, cfg, payload = load_model(ckpt, device)
    test_set = build_data(cfg, "test")
    n_ctx = model.n_past
    batch = {k: torch.stack([test_set[i][k] for i in range(num_sequences)]).to(device)
             for k in test_set[0] if k in ("frames", "actions")}
    batch["frames"] = batch["frames"].float() / 255                                           # [B, T, C, H, W]
    n_future = min(model.n_eval, batch["frames"].shape[1] - n_ctx)
    samples = draw_futures(model, batch, n_future, num_samples, torch.Generator(device=device).manual_seed(0))
    frames = batch["frames"]
    truth = frames[:, n_ctx:n_ctx + n_future]
    best = best_of_n(psnr(samples, repeat(truth, "b t c h w -> s b t c h w", s=num_samples), max_db=MAX_DB),
                     higher_is_better=True).index                                           # [B]
    panels = []
    for b in range(num_sequences):
        videos = torch.cat([repeat(frames[b, :n_ctx], "t c h w -> s t c h w", s=num_samples), samples[:, b]], 1)
        panels += render.prediction_panels(frames[b, :n_ctx + n_future].cpu(), videos.cpu(), n_ctx,
                                           best_index=int(best[b]), max_samples=3, prefix=f"seq {b}: ")
    video = render.compose(panels, columns=4, scale=2, title="SVG-LP, optimal sigma: green = context, red = predicted")
    mp4 = render.write_mp4(run_dir / "demo_predictions.mp4", video, fps=6)

    extra = video_metrics_for(cfg.data.name)
    eval_dir = new_folder(run_dir / "eval", f"demo-{n_ctx}ctx-{model.n_eval}pred-{num_samples}samples-32seq")
    result = evaluate_video(model, test_set, n_samples=num_samples, n_sequences=32, device=device,
                            metrics=extra, out_dir=eval_dir)
    figures = result.summary()
    atomic_write_text(eval_dir / "eval.json", json.dumps({
        "command": "seqvae demo", "checkpoint": str(ckpt), "step": payload["step"], "split": "test",
        "protocol": "default", "counts": result.counts, "results": {**figures, **result.extra}}, indent=2) + "\n")
    test = last_test_metrics(run_dir)
    print("\n=== seqvae demo ===")
    print(f"video:        {mp4}")
    print(f"run folder:   {run_dir} (config.yaml, metrics.jsonl, checkpoint.pt, images/)")
    print(f"evaluation:   {eval_dir} (eval.json, curves.csv, psnr.png, ssim.png)")
    print(f"trained for:  {payload['step']} steps")
    if test:
        print(f"test bound:   -log p <= {test['neg_elbo']:.1f} nats per sequence ({test['bpd']:.3f} bits/dim), "
              f"KL {test['kl']:.1f} nats")
        print(f"decoder:      sigma {test.get('sigma_ema', float('nan')):.4f}, effective beta = 2 sigma^2 = "
              f"{test.get('beta_eff', float('nan')):.2e}")
    print(f"prediction:   best of {num_samples} PSNR {figures['psnr_mean']:.2f} dB, SSIM {figures['ssim_mean']:.3f} "
          f"over {n_future} predicted frames of 32 test sequences")
    print(f"baseline:     copy last context frame PSNR {figures['copy_last_psnr_mean']:.2f} dB, "
          f"SSIM {figures['copy_last_ssim_mean']:.3f}")
    for metric in extra:
        for line in metric.report():
            print(f"{metric.name + ':':<14}{line}")
    return mp4


def run(args: argparse.Namespace) -> None:
    run_demo(minutes=args.minutes, out_dir=args.out_dir, overrides=tuple(args.overrides))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train on the embedded default data, sample, render an MP4")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--out-dir", default="runs/demo", help="run folder (an existing trained run is reused)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/demo/svg.yaml")
    p.set_defaults(func=run)
