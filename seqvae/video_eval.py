"""Video evaluation in the SVG protocol (Denton & Fergus 2018, §4): for each test sequence
draw N futures from the learned prior given the context frames, keep for each metric the
sample whose mean over predicted frames is best, and report per-frame curves of PSNR,
SSIM and (optionally) LPIPS of those best samples, next to the "copy the last context
frame" baseline. Curves are written as CSV and PNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor
from torch.utils.data import Dataset

from seqvae import amp
from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.metrics import psnr, save_curves, ssim

MAX_DB = 100.0  # PSNR of (near-)identical frames is capped so that means stay finite


@torch.no_grad()
def sample_futures(model, context: Tensor, n_future: int, n_samples: int, actions: Tensor | None = None,
                   generator: torch.Generator | None = None, max_batch: int = 256) -> Tensor:
    """``n_samples`` predicted futures per sequence: ``[S, B, n_future, C, H, W]``.

    The S·B rollouts run in chunks of at most ``max_batch`` sequences.
    """
    b = context.shape[0]
    ctx = repeat(context, "b t c h w -> (s b) t c h w", s=n_samples)
    acts = None if actions is None else repeat(actions, "b t a -> (s b) t a", s=n_samples)
    outs = []
    for start in range(0, ctx.shape[0], max_batch):
        stop = start + max_batch
        outs.append(model.predict(ctx[start:stop], n_future, None if acts is None else acts[start:stop],
                                  generator=generator).float())
    return rearrange(torch.cat(outs), "(s b) t c h w -> s b t c h w", b=b)


def pick_best(values: Tensor, higher_is_better: bool) -> tuple[Tensor, Tensor]:
    """``values[S, B, T]`` → (curve of the best sample ``[B, T]``, its index ``[B]``), best by mean over T."""
    score = values.mean(-1)
    index = score.argmax(0) if higher_is_better else score.argmin(0)
    curve = values.gather(0, index[None, :, None].expand(1, *values.shape[1:]))[0]
    return curve, index


@dataclass
class VideoResult:
    curves: dict[str, Tensor] = field(default_factory=dict)   # name -> [num_sequences, n_future]
    best_psnr_index: Tensor | None = None                     # [num_sequences]

    def summary(self) -> dict[str, float]:
        return {f"{name}_mean": float(curve.mean()) for name, curve in self.curves.items()}


def eval_batches(model, dataset: Dataset, n_sequences: int, batch_size: int, device: torch.device):
    """Yield ``(batch, n_future)`` for the first ``n_sequences`` sequences of an evaluation
    split: the batch on ``device`` (frames float in [0, 1]), every tensor cut to the
    sequences still wanted; ``n_future`` = frames to predict after the context."""
    n_ctx = model.n_past
    seen = 0
    for batch in eval_loader(dataset, batch_size):
        if seen >= n_sequences:
            return
        batch = {k: v[: n_sequences - seen] if isinstance(v, Tensor) else v
                 for k, v in batch_to_device(batch, device).items()}
        n_future = min(model.n_eval, batch["frames"].shape[1] - n_ctx)
        if n_future < 1:
            raise ValueError(f"test sequences have {batch['frames'].shape[1]} frames; "
                             f"need more than the {n_ctx} context frames")
        yield batch, n_future
        seen += batch["frames"].shape[0]
    if seen == 0:
        raise ValueError("the evaluation split is empty")


def eval_sequences(model, dataset: Dataset, n_sequences: int, batch_size: int, device: torch.device):
    """Yield ``(frames [b, T, C, H, W], actions [b, T, A] | None, n_future)`` for the first
    ``n_sequences`` sequences of an evaluation split, on ``device``."""
    for batch, n_future in eval_batches(model, dataset, n_sequences, batch_size, device):
        yield batch["frames"], batch.get("actions"), n_future


@torch.no_grad()
def evaluate_video(model, dataset: Dataset, *, n_samples: int = 100, n_sequences: int = 256, batch_size: int = 8,
                   device: torch.device, dtype: torch.dtype | None = None, lpips=None,
                   out_dir: str | Path | None = None, seed: int = 0) -> VideoResult:
    """Best-of-N PSNR/SSIM(/LPIPS) curves over the first ``n_sequences`` test sequences."""
    model.eval()
    n_ctx = model.n_past
    generator = torch.Generator(device=device).manual_seed(seed)
    collected: dict[str, list[Tensor]] = {}
    best_index = []
    for frames, actions, n_future in eval_sequences(model, dataset, n_sequences, batch_size, device):
        truth = frames[:, n_ctx:n_ctx + n_future]
        with amp.autocast(device, dtype):
            samples = sample_futures(model, frames[:, :n_ctx], n_future, n_samples, actions, generator)
        samples = samples.clamp(0, 1)
        target = repeat(truth, "b t c h w -> s b t c h w", s=n_samples)
        per_metric = {"psnr": (psnr(samples, target, max_db=MAX_DB), True), "ssim": (ssim(samples, target), True)}
        if lpips is not None:
            per_metric["lpips"] = (lpips(samples, target), False)
        for name, (values, higher) in per_metric.items():
            curve, index = pick_best(values, higher)
            collected.setdefault(name, []).append(curve.cpu())
            if name == "psnr":
                best_index.append(index.cpu())
        last = repeat(frames[:, n_ctx - 1], "b c h w -> b t c h w", t=n_future)
        collected.setdefault("copy_last_psnr", []).append(psnr(last, truth, max_db=MAX_DB).cpu())
        collected.setdefault("copy_last_ssim", []).append(ssim(last, truth).cpu())
    result = VideoResult({k: torch.cat(v) for k, v in collected.items()}, torch.cat(best_index))
    if out_dir is not None:
        save_curves(result.curves, out_dir, x_offset=n_ctx)
    return result


@torch.no_grad()
def video_fid(model, dataset: Dataset, *, n_sequences: int = 256, batch_size: int = 8, device: torch.device,
              dtype: torch.dtype | None = None, weights_path: str | None = None, seed: int = 0) -> float:
    """Per-frame FID (the paper's BAIR column): every predicted frame of one prior sample
    per test sequence against the true frames at the same time steps."""
    from seqvae.fid import compute_fid

    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    fake, real = [], []
    n_ctx = model.n_past
    for frames, actions, n_future in eval_sequences(model, dataset, n_sequences, batch_size, device):
        with amp.autocast(device, dtype):
            pred = model.predict(frames[:, :n_ctx], n_future, actions, generator=generator)
        to_uint8 = lambda x: (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # noqa: E731
        fake.append(to_uint8(rearrange(pred, "b t c h w -> (b t) c h w")))
        real.append(to_uint8(rearrange(frames[:, n_ctx:n_ctx + n_future], "b t c h w -> (b t) c h w")))
    return compute_fid(torch.cat(fake), torch.cat(real), weights_path=weights_path, device=device)
