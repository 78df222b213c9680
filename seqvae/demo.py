"""``seqvae demo`` / ``make demo``: the main job on the embedded default data.

1. Train SVG-LP with the optimal-σ decoder on the procedural pushing videos
   (``configs/demo/svg_pusher.yaml``) for a time budget on CPU (or GPU when present).
2. Predict futures for held-out sequences from their two context frames: N samples each
   from the learned prior; pick the best by PSNR (the SVG protocol).
3. Render an MP4: for each sequence, ground truth | best of N | two random samples,
   labelled, context frames marked green and predicted ones red.
4. Print where everything went and the figures that say how good it is: the test −log p
   bound, σ and effective β, best-of-N PSNR/SSIM against copying the last context
   frame, and how far the predicted objects move against the truth (colour-tracked,
   :mod:`seqvae.motion_eval`; PSNR/SSIM barely see a pushed object).

A finished demo run is reused (its folder is never deleted): delete ``runs/demo`` or pass
another ``--out-dir`` to train again.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from seqvae import amp, render
from seqvae.build import build_data, load_model
from seqvae.checkpoint import load_checkpoint
from seqvae.config import ConfigError, RunConfig
from seqvae.motion_eval import evaluate_object_motion
from seqvae.train import train
from seqvae.video_eval import evaluate_video, sample_futures

DEMO_CONFIG = "configs/demo/svg_pusher.yaml"


def find_config(name: str = DEMO_CONFIG) -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"cannot find {name}; run the demo from the seqvae repository (make demo)")


def last_test_metrics(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    tests = [x for x in lines if x["split"] == "test"]
    return tests[-1] if tests else {}


def run_demo(minutes: float = 10.0, out_dir: str = "runs/demo", num_sequences: int = 4, num_samples: int = 16,
             overrides: tuple[str, ...] = ()) -> Path:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = Path(out_dir)
    fast = ["train.precision=bf16"] if device.type == "cpu" and amp.cpu_supports_bf16() else []
    cfg = RunConfig.load(find_config(), [f"train.out_dir={run_dir}", f"train.time_limit_minutes={minutes}", *fast, *overrides])
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
    items = [test_set[i] for i in range(num_sequences)]
    frames = torch.stack([it["frames"] for it in items]).to(device).float() / 255          # [B, T, C, H, W]
    actions = torch.stack([it["actions"] for it in items]).to(device) if "actions" in items[0] else None
    n_future = min(model.n_eval, frames.shape[1] - n_ctx)
    generator = torch.Generator(device=device).manual_seed(0)
    samples = sample_futures(model, frames[:, :n_ctx], n_future, num_samples, actions, generator).clamp(0, 1)

    from seqvae.metrics import psnr

    truth = frames[:, n_ctx:n_ctx + n_future]
    per_sample = psnr(samples, truth.expand_as(samples), max_db=100.0)                      # [S, B, T]
    best = per_sample.mean(-1).argmax(0)                                                    # [B]
    panels = []
    for b in range(num_sequences):
        context = frames[b, :n_ctx]
        best_video = torch.cat([context, samples[best[b], b]])
        others = [s for s in range(num_samples) if s != int(best[b])][:2]
        panels.append(render.Panel(frames[b, :n_ctx + n_future].cpu(), f"seq {b}: truth", context=n_ctx, ground_truth=True))
        panels.append(render.Panel(best_video.cpu(), f"best of {num_samples}", context=n_ctx))
        for k, s in enumerate(others):
            panels.append(render.Panel(torch.cat([context, samples[s, b]]).cpu(), f"sample {k + 1}", context=n_ctx))
    video = render.compose(panels, columns=2 + len(others), scale=2,
                           title="SVG-LP, optimal sigma: green = context, red = predicted")
    mp4 = render.write_mp4(run_dir / "demo_predictions.mp4", video, fps=6)

    result = evaluate_video(model, test_set, n_samples=num_samples, n_sequences=32, device=device,
                            out_dir=run_dir / "eval")
    figures = result.summary()
    motion = evaluate_object_motion(model, test_set, n_samples=num_samples, n_sequences=32, device=device)
    (run_dir / "eval" / "object_motion.json").write_text(json.dumps(motion.summary(), indent=2) + "\n")
    test = last_test_metrics(run_dir)
    print("\n=== seqvae demo ===")
    print(f"video:        {mp4}")
    print(f"run folder:   {run_dir} (config.yaml, metrics.jsonl, checkpoint.pt, images/, eval/)")
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
    print(f"objects:      {motion.moving} of {motion.objects} move > 0.15 table units in the truth (mean "
          f"{motion.true_displacement:.2f}); the samples move them {motion.predicted_displacement:.2f} "
          f"(objects that stay: {motion.still_predicted_displacement:.2f})")
    print(f"              best sample's final object position is off by {motion.best_error:.2f} "
          f"vs {motion.true_displacement:.2f} if they stayed put (colour tracker; its floor {motion.tracker_error:.2f})")
    return mp4
