"""The figures the trainer saves every ``train.image_every`` steps: labelled grids of the
batch's truth, its reconstructions and samples (``images/step_XXXXXXX_*.png``) and, for
video models, a video of predictions of held-out sequences
(``images/step_XXXXXXX_predictions.mp4``), which the run's page shows."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange

from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.models.base import SequenceVAE, is_video_model
from seqvae.render import Panel, compose, write_mp4, write_panel_grid, write_png_grid

ROWS = 8  # sequences shown per video grid
VIDEO_SEQUENCES, VIDEO_SAMPLES = 4, 2   # held-out sequences and samples of each in the prediction video


def save_image_grids(model: SequenceVAE, batch: dict[str, torch.Tensor], run_dir: Path, step: int, seed: int) -> None:
    """Images: (truth, reconstruction) pairs and a grid of prior samples. Videos: per
    sequence a truth row and its reconstruction (posterior latents), and a truth row and
    a sample (context frames given, the rest predicted) — labelled, context framed green."""
    frames = batch["frames"]
    b, t = frames.shape[:2]
    devices = [frames.device.index or 0] if frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # never disturb the training RNG stream
        recon = model.reconstruct(batch).float()
        generator = torch.Generator(device=frames.device).manual_seed(seed)
        samples = model.generate(batch, generator=generator).float()
    out = run_dir / "images"
    if t == 1:
        pairs = rearrange(torch.stack([frames[:, 0], recon[:, 0]], 1), "b two c h w -> (b two) c h w")
        write_png_grid(out / f"step_{step:07d}_reconstructions.png", pairs.cpu(), nrow=16)
        write_png_grid(out / f"step_{step:07d}_samples.png", samples[:, 0].cpu(), nrow=int(math.ceil(math.sqrt(b))))
        return
    n_ctx = model.n_past if is_video_model(model) else 0
    for name, other, label in (("reconstructions", recon, "reconstruction"), ("samples", samples, "sample")):
        panels = []
        for i in range(min(b, ROWS)):
            panels.append(Panel(frames[i].cpu(), f"seq {i}: truth", context=n_ctx, ground_truth=True))
            panels.append(Panel(other[i].cpu(), f"seq {i}: {label}", context=n_ctx if name == "samples" else None))
        title = (f"step {step}: truth and {label}s" + (f" ({n_ctx} context frames given)" if name == "samples" else
                                                        " (posterior latents)"))
        write_panel_grid(out / f"step_{step:07d}_{name}.png", panels, max_columns=t, title=title)


def save_prediction_video(model: SequenceVAE, test_set, run_dir: Path, step: int, seed: int,
                          device: torch.device) -> Path | None:
    """``images/step_XXXXXXX_predictions.mp4``: the first held-out (test split) sequences at
    their full length, each as the truth beside ``VIDEO_SAMPLES`` samples predicted from its
    context frames (and its true actions, for an action-conditioned model). None for image
    models."""
    if not is_video_model(model):
        return None
    batch = batch_to_device(next(iter(eval_loader(test_set, VIDEO_SEQUENCES))), device)
    frames = batch["frames"]
    n_ctx = model.n_past
    devices = [frames.device.index or 0] if frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        generator = torch.Generator(device=frames.device).manual_seed(seed)
        samples = [model.generate(batch, generator=generator).float() for _ in range(VIDEO_SAMPLES)]
    panels = []
    for i in range(frames.shape[0]):
        panels.append(Panel(frames[i].cpu(), f"{i}: truth", context=n_ctx, ground_truth=True))
        panels += [Panel(sample[i].cpu(), f"{i}: sample {k + 1}", context=n_ctx) for k, sample in enumerate(samples)]
    video = compose(panels, columns=1 + VIDEO_SAMPLES, scale=2,
                    title=f"step {step}: test sequences, {n_ctx} context frames given")
    return write_mp4(run_dir / "images" / f"step_{step:07d}_predictions.mp4", video, fps=6)
