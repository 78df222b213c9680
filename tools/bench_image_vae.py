"""Benchmark: conv VAE training throughput for every likelihood head (SVHN-shaped config).

The paper's App. B model (3 conv layers from 32 channels doubling, 20-dim latent) on
28×28×3 images, batch 128, Adam 1e-3. Each head runs in its own subprocess so that its
peak RSS is its own; a step is forward + backward + Adam on random 8-bit images.
Reported: median images/s over ``--steps`` steps after ``--warmup`` steps, the
ratio to the unit Gaussian measured in the same run, and peak RSS.

    python tools/bench_image_vae.py                 # every head, 2 threads
    python tools/bench_image_vae.py --heads optimal_sigma categorical --steps 30
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def run_one(head_name: str, batch: int, size: int, steps: int, warmup: int, threads: int, precision: str) -> dict:
    import torch

    import seqvae.components  # noqa: F401
    from seqvae import amp
    from seqvae.data.spec import DataSpec
    from seqvae.models.conv_vae import ConvVAE, ConvVAEConfig
    from seqvae.registry import LIKELIHOODS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    head = LIKELIHOODS.build(LIKELIHOODS.config_class(head_name)())
    model = ConvVAE(ConvVAEConfig(base_channels=32, latent_dim=20), head, DataSpec(3, size, size))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.randint(0, 256, (batch, 1, 3, size, size)).float() / 255
    dtype = amp.resolve(precision, torch.device("cpu"))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with amp.autocast(torch.device("cpu"), dtype):
            loss = model({"frames": frames}).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.commit_step()  # the optimal-σ EMA takes the step's σ* (seqvae.models.base)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"head": head_name, "step_s": step, "images_per_s": batch / step,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="*", default=None, help="default: every registered head")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_one(args.child, args.batch, args.size, args.steps, args.warmup, args.threads,
                                 args.precision)))
        return

    import seqvae.components  # noqa: F401
    from seqvae.registry import LIKELIHOODS

    heads = args.heads or LIKELIHOODS.names()
    if "unit_gaussian" not in heads:
        heads = ["unit_gaussian", *heads]
    results = []
    for name in heads:
        cmd = [sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--size", str(args.size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--precision", args.precision]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {name}: {results[-1]['images_per_s']:.0f} images/s", file=sys.stderr, flush=True)
    base = next(r for r in results if r["head"] == "unit_gaussian")["images_per_s"]
    print(f"\nconv VAE (App. B), {args.size}×{args.size}×3, batch {args.batch}, {args.threads} threads, "
          f"{args.precision}, median of {args.steps} steps after {args.warmup} warm-ups\n")
    print("| head | params | step (ms) | images/s | vs unit Gaussian | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['head']} | {r['params'] / 1e3:.0f} k | {r['step_s'] * 1e3:.1f} | {r['images_per_s']:.0f} | "
              f"{r['images_per_s'] / base:.2f}× | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
