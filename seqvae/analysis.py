"""``seqvae analyze CKPT``: what the latents of a trained image VAE carry (paper §5.2, Fig. 4).

For an image model with an encoder ``encode(x[N, C, H, W]) -> (mu, logvar)`` (the conv
VAE), the posteriors of a data split give (Eq. 6)::

    rate = E_x KL(q(z|x) ‖ p(z)) = I(x; z) + KL(m(z) ‖ p(z))

estimated by :func:`seqvae.latent_analysis.analyze_latents` (exact rate, Monte Carlo
marginal KL as in Rosca et al. 2018, MI = rate − marginal KL), each with a standard error.
Optionally FID (Heusel et al. 2017) of prior samples against the same split, when the
Inception weights are on disk — they are never downloaded here.

The helpers (:func:`prior_samples`, :func:`real_images`, :func:`sample_fid`,
:func:`split_posteriors`) are reused by the paper-reproduction tools in ``tools/experiments``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.models.base import SequenceVAE

__all__ = [
    "prior_samples", "to_uint8", "real_images", "sample_fid", "split_posteriors",
    "add_analyze_parser", "cmd_analyze",
]


def _image_spec(model: SequenceVAE):
    spec = getattr(model, "spec", None)
    if spec is None or spec.seq_len != 1:
        raise ValueError("this needs an image model (seq_len 1); video models are evaluated with `seqvae eval`")
    return spec


@torch.no_grad()
def prior_samples(model: SequenceVAE, num: int, seed: int = 0, device: torch.device | str | None = None,
                  batch_size: int = 256) -> Tensor:
    """``num`` images from the model's prior (the head's mean of p(x|z), z ~ N(0, I)): ``[num, C, H, W]``
    float32 in [0, 1] on the CPU. One generator seeded with ``seed`` serves all batches."""
    spec = _image_spec(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        dummy = {"frames": torch.zeros(n, 1, spec.channels, spec.height, spec.width, device=device)}
        out.append(model.generate(dummy, generator=generator)[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, spec.channels, spec.height, spec.width)


def to_uint8(images: Tensor) -> Tensor:
    """Floats in [0, 1] → uint8 in [0, 255] (rounded, clamped)."""
    return (images.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def real_images(dataset: Dataset, num: int, batch_size: int = 256) -> Tensor:
    """The first ``num`` images of ``dataset`` (fixed order) as uint8 ``[n, C, H, W]``, n ≤ num."""
    out, have = [], 0
    for batch in eval_loader(dataset, batch_size):
        frames = batch["frames"]
        if frames.dim() != 5 or frames.shape[1] != 1:
            raise ValueError(f"expected image items [B, 1, C, H, W], got {tuple(frames.shape)}")
        frames = frames[:, 0]
        if frames.dtype != torch.uint8:
            frames = to_uint8(frames)
        out.append(frames[: num - have])
        have += out[-1].shape[0]
        if have >= num:
            break
    if not out:
        raise ValueError("the data split is empty")
    return torch.cat(out)


def sample_fid(model: SequenceVAE, dataset: Dataset, num: int, weights_path: str | None = None,
               device: torch.device | str | None = None, batch_size: int = 100, seed: int = 0) -> float:
    """FID between ``n`` prior samples of ``model`` and the first ``n`` images of ``dataset``,
    ``n = min(num, len(dataset))`` so both sets have one size (FID depends on it).

    Raises :class:`seqvae.metrics.MissingWeightsError` (before sampling anything) when the
    Inception weights are absent; never downloads.
    """
    from seqvae.fid import compute_fid, inception_weights_path

    path = inception_weights_path(weights_path, download=False)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    real = real_images(dataset, num, batch_size)
    fake = to_uint8(prior_samples(model, real.shape[0], seed, device, batch_size))
    return compute_fid(fake, real, weights_path=path, batch_size=batch_size, device=device)


@torch.no_grad()
def split_posteriors(model: SequenceVAE, dataset: Dataset, max_examples: int = 0, batch_size: int = 256,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Posterior means and log-variances ``[N, D]`` (float64, CPU) of the first ``max_examples``
    images of ``dataset`` (0: all), in the data set's fixed order."""
    from seqvae.latent_analysis import collect_posteriors

    if not hasattr(model, "encode"):
        raise ValueError(f"{type(model).__name__} has no encode(x) -> (mu, logvar); analyze works with image VAEs "
                         "such as conv_vae")
    _image_spec(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()

    def images():
        seen = 0
        for batch in eval_loader(dataset, batch_size):
            x = batch_to_device(batch, device)["frames"][:, 0]
            if max_examples:
                x = x[: max_examples - seen]
            if x.shape[0] == 0:
                return
            seen += x.shape[0]
            yield x
            if max_examples and seen >= max_examples:
                return

    def encode(x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = model.encode(x)
        return mu.float(), logvar.float()

    mu, logvar = collect_posteriors(encode, images())
    model.train(was_training)
    return mu, logvar


# ---------------------------------------------------------------------- CLI
def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seqvae analyze`` on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "analyze", help="rate, mutual information and marginal KL of an image VAE's latents (paper §5.2); FID",
        description="Rate = I(x; z) + KL(m(z) ‖ p(z)) (paper Eq. 6) over a data split, with standard errors, "
                    "and FID of prior samples vs that split when Inception weights are on disk.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or a run folder of an image model with an encoder (conv_vae)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.root=...)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--max-examples", type=int, default=10000,
                   help="posteriors of at most this many examples (0: all); MI can be at most log N")
    p.add_argument("--num-samples", type=int, default=10000, help="Monte Carlo samples z ~ m(z)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples and the FID prior samples")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--inception-weights", default=None,
                   help="Inception-v3 weights for FID (default: the torch hub cache; FID is skipped with a "
                        "message when absent — nothing is downloaded)")
    p.add_argument("--fid-samples", type=int, default=10000, help="prior samples and split images for FID")
    p.add_argument("--no-fid", action="store_true", help="skip FID even when weights exist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_analyze)
    return p


def cmd_analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``seqvae analyze``: print rate, MI, marginal KL (± s.e.) and FID or why it is unavailable.

    Returns the figures as a dict (also written to ``--json`` when given).
    """
    from seqvae.build import build_data, load_model
    from seqvae.fid import inception_weights_path
    from seqvae.latent_analysis import analyze_latents
    from seqvae.metrics import MissingWeightsError

    device = torch.device(args.device)
    model, cfg, payload = load_model(args.checkpoint, device, args.overrides)
    if not hasattr(model, "encode"):
        raise ValueError(f"model {cfg.model.name!r} has no encode(x) -> (mu, logvar); `seqvae analyze` works with "
                         "image VAEs such as conv_vae")
    dataset = build_data(cfg, args.split)
    mu, logvar = split_posteriors(model, dataset, args.max_examples, args.batch_size, device)
    generator = torch.Generator().manual_seed(args.seed)
    stats = analyze_latents(mu, logvar, num_samples=args.num_samples, generator=generator)
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "step": int(payload["step"]), "split": args.split,
                              **stats.as_dict()}

    n = stats.num_data
    print(f"{cfg.model.name} + {cfg.likelihood.name} on {cfg.data.name} (step {payload['step']}): "
          f"{n} {args.split} examples, {stats.num_samples} Monte Carlo samples, latent dim {mu.shape[1]}")
    print(f"  rate          {stats.rate:10.3f} ± {stats.rate_se:.3f} nats   E KL(q(z|x) ‖ p(z))")
    print(f"  MI I(x; z)    {stats.mi:10.3f} ± {stats.mi_se:.3f} nats   rate − marginal KL "
          f"(saturates near log N = {math.log(n):.2f})")
    print(f"  marginal KL   {stats.marginal_kl:10.3f} ± {stats.marginal_kl_se:.3f} nats   KL(m(z) ‖ p(z))")
    print(f"  MI (direct)   {stats.mi_direct:10.3f} ± {stats.mi_direct_se:.3f} nats   E[log q(z|x) − log m(z)]")
    scalars = {k: float(v) for k, v in model.scalars().items()}
    if "beta_eff" in scalars:
        result["beta_eff"] = scalars["beta_eff"]
        print(f"  effective β   {scalars['beta_eff']:10.4g}        2σ² of the decoder")

    result["fid"] = None
    if args.no_fid:
        result["fid_note"] = "skipped (--no-fid)"
        print("  FID: skipped (--no-fid)")
    else:
        try:
            weights = inception_weights_path(args.inception_weights, download=False)
        except MissingWeightsError as err:
            if args.inception_weights:  # asked for explicitly: a user error
                raise
            result["fid_note"] = f"unavailable: {err}"
            print(f"  FID: unavailable — no Inception weights on this machine (nothing was downloaded). {err}")
        else:
            fid = sample_fid(model, dataset, args.fid_samples, weights, device, min(args.batch_size, 100), args.seed)
            count = min(args.fid_samples, len(dataset))
            result["fid"], result["fid_samples"] = fid, count
            print(f"  FID           {fid:10.2f}        {count} prior samples vs {count} {args.split} images")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result
