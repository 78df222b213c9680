"""How far the optimal-σ EMA lags the batch σ* early in training (issue 14.3).

    python tools/sigma_ema_lag.py [CONFIG] [--steps N] [key=value ...]

Trains CONFIG (default: a small SVG on the embedded pushing videos) for N steps with the
plain loop, records every step's batch σ* (paper Eq. 5), and replays two EMA rules on that
sequence: a fixed decay of 0.99 (seqvae before) and the warm-up ``min(0.99, (1+n)/(10+n))``
(now). The lag is ``σ_EMA / σ*_now − 1`` where σ*_now is the batch σ* averaged over the 21
steps around that step (the noise of single batches removed).
"""
from __future__ import annotations

import argparse
import math

import torch

from seqvae.build import build_data, build_model
from seqvae.config import RunConfig, apply_overrides, find_repo_file
from seqvae.data.loader import batch_stream
from seqvae.data.spec import batch_to_device
from seqvae.likelihoods.gaussian import ema_decay_at

SMALL_SVG = {
    "data": {"name": "pusher", "seq_len": 8, "eval_seq_len": 8, "action_conditioned": False, "num_objects": 1},
    "model": {"name": "svg", "backbone": "dcgan64", "width": 16, "g_dim": 64, "z_dim": 8, "rnn_size": 64,
              "n_past": 2, "n_future": 6, "n_eval": 6},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"batch_size": 16, "lr": 2e-3},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    if args.config:
        cfg = RunConfig.load(find_repo_file(args.config), args.overrides)
    else:
        cfg = RunConfig.from_dict(apply_overrides(SMALL_SVG, args.overrides))
    torch.manual_seed(0)
    data = build_data(cfg, "train")
    model = build_model(cfg, data.spec)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    batches = batch_stream(data, cfg.train.batch_size, seed=0)
    sigma2 = []
    for step in range(args.steps):
        out = model(batch_to_device(next(batches), "cpu"))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sigma2.append(float(model.likelihood._pending[-1]))
        model.commit_step()
    fixed, warm = [sigma2[0]], [sigma2[0]]
    for n, v in enumerate(sigma2[1:], start=1):
        fixed.append(0.99 * fixed[-1] + 0.01 * v)
        d = ema_decay_at(0.99, n)
        warm.append(d * warm[-1] + (1 - d) * v)
    print("step  batch σ*(avg)  EMA 0.99 lag  warm-up lag")
    for step in [s for s in (50, 100, 200, 300, 400, 500, 750, 1000, 1500, 2000) if s + 10 < args.steps]:
        now = sum(sigma2[step - 10:step + 11]) / 21
        print(f"{step:5d}  {math.sqrt(now):.4f}        {math.sqrt(fixed[step] / now) - 1:+7.1%}      "
              f"{math.sqrt(warm[step] / now) - 1:+7.1%}")


if __name__ == "__main__":
    main()
