"""``seqvae analyze CKPT``: what the latents of a trained image VAE carry (paper §5.2,
Fig. 4): rate = I(x; z) + KL(m(z) ‖ p(z)) (Eq. 6) with standard errors, and FID of prior
samples when the Inception weights are on disk (never downloaded)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from seqvae.evaluation.images import sample_fid, split_posteriors
from seqvae.models.base import SingleLatentVAE


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seqvae analyze`` on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "analyze", help="rate, mutual information and marginal KL of an image VAE's latents (paper §5.2); FID",
        description="Rate = I(x; z) + KL(m(z) ‖ p(z)) (paper Eq. 6) over a data split, with standard errors, "
                    "and FID of prior samples vs that split when Inception weights are on disk.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or a run folder of an image model with an encoder (conv_vae)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. data.root=...)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the data split to score")
    p.add_argument("--max-examples", type=int, default=10000,
                   help="posteriors of at most this many examples (0: all); MI can be at most log N")
    p.add_argument("--num-samples", type=int, default=10000, help="Monte Carlo samples z ~ m(z)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples and the FID prior samples")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--inception-weights", default=None,
                   help="Inception-v3 weights for FID (default: the torch hub cache; FID is skipped with a "
                        "message when absent — nothing is downloaded)")
    p.add_argument("--fid-samples", type=int, default=10000, help="prior samples and split images for FID")
    p.add_argument("--no-fid", action="store_true", help="skip FID even when weights exist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``seqvae analyze``: print rate, MI, marginal KL (± s.e.) and FID or why it is unavailable.

    Returns the figures as a dict (also written to ``--json`` when given).
    """
    from seqvae.build import build_data
    from seqvae.evaluation.fid import inception_weights_path
    from seqvae.evaluation.latents import analyze_latents
    from seqvae.evaluation.metrics import MissingWeightsError
    from seqvae.loading import load_model

    device = torch.device(args.device)
    model, cfg, payload = load_model(args.checkpoint, device, args.overrides)
    if not isinstance(model, SingleLatentVAE):
        raise ValueError(f"model {cfg.model.name!r} has no single Gaussian latent to read; `seqvae analyze` works "
                         "with image VAEs such as conv_vae")
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
