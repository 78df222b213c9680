#!/usr/bin/env python
"""Rollout throughput (predicted frames per second) and the time of one CEM planning step.

    python tools/bench_rollout.py                 # everything (vgg64 at 1024 rows takes minutes on CPU)
    python tools/bench_rollout.py --quick         # vgg64 only at 256 rows, timed once
    python tools/bench_rollout.py --rows 256 --backbones dcgan64 --precisions fp32 bf16 --repeats 3

Models have random weights at the BAIR SVG-LP size (g_dim 128, z_dim 64, rnn 256, 64×64×3,
action-conditioned with 4-D actions); each rollout predicts ``--horizon`` (10) frames from
2 context frames through :func:`seqvae.control.rollout.rollout` (one batched pass over
B·K·S rows, chunked to its memory budget; the chunk size is reported). ``bf16`` runs
under ``torch.autocast("cpu", torch.bfloat16)`` (pays on CPUs with AVX512-BF16 / AMX).
Rows are timed as the median of ``--repeats`` runs after a small warm-up run (8 rows).

The planning rows time one full CEM planning step (``--iterations`` × ``--candidates``
candidates × ``--horizon`` steps, S = 1) with the dcgan64 model and with the pushing
world's true simulator as the model.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqvae.control.cem import CEMConfig, cem_plan
from seqvae.control.rollout import auto_max_batch, rollout
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.models.svg import SVGConfig, build_svg
from seqvae.worlds.pusher.planning import PusherEnv, TrueSimulatorModel

N_CTX, ACTION_DIM = 2, 4


def bair_sized(backbone: str) -> torch.nn.Module:
    """SVG-LP at the original BAIR size with random weights, in eval mode."""
    torch.manual_seed(0)
    cfg = SVGConfig(backbone=backbone, g_dim=128, z_dim=64, rnn_size=256, n_past=N_CTX, action_conditioned=True)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 12, ACTION_DIM)).eval()


def time_runs(fn, repeats: int, warmup=None) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one call of ``warmup`` (default
    ``fn`` itself; a small call creates the kernels just as well)."""
    (warmup or fn)()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_rollout(model, rows: int, horizon: int, precision: str, repeats: int) -> dict:
    """One row: B = 1 context, K = rows candidates, S = 1 (the planner's shape)."""
    context = torch.rand(1, N_CTX, 3, 64, 64)
    actions = torch.rand(1, rows, horizon, ACTION_DIM) * 2 - 1

    def run(k: int = rows):
        rollout(model, context, actions[:, :k], 1, generator=torch.Generator().manual_seed(0), precision=precision,
                return_frames=False, cost_fn=lambda f, b: f[:, -1].mean(dim=(1, 2, 3)))

    seconds = time_runs(run, repeats, warmup=lambda: run(8))
    chunk = auto_max_batch(model, horizon, torch.device("cpu"), keep_frames=False)
    return {"seconds": seconds, "frames_per_s": rows * horizon / seconds, "chunk": min(chunk, rows)}


def bench_cem_model(model, cfg: CEMConfig, precision: str, repeats: int) -> float:
    context = torch.rand(1, N_CTX, 3, 64, 64)

    def costs(actions):
        out = rollout(model, context, actions[None], 1, generator=torch.Generator().manual_seed(0), precision=precision,
                      return_frames=False, cost_fn=lambda f, b: f[:, -1].mean(dim=(1, 2, 3)))
        return out.costs[0, :, 0]

    small = CEMConfig(iterations=1, candidates=8, elites=2, horizon=cfg.horizon)
    return time_runs(lambda: cem_plan(costs, ACTION_DIM, cfg, torch.Generator().manual_seed(0)), repeats,
                     warmup=lambda: cem_plan(costs, ACTION_DIM, small, torch.Generator().manual_seed(0)))


def bench_cem_sim(cfg: CEMConfig, repeats: int) -> float:
    env = PusherEnv()
    env.reset(0)
    backend = TrueSimulatorModel(env)
    return time_runs(lambda: cem_plan(backend.costs, 2, cfg, torch.Generator().manual_seed(0)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 1024], help="B·K·S rollouts per call")
    parser.add_argument("--backbones", nargs="+", default=["dcgan64", "vgg64"], choices=["dcgan64", "vgg64"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median), after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="vgg64 only at 256 rows and timed once")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--no-plan", action="store_true", help="skip the CEM planning-step rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, horizon {args.horizon}, "
          f"{N_CTX} context frames, BAIR-sized SVG-LP (g 128, z 64, rnn 256), random weights\n")

    print("| backbone | rows (B·K·S) | precision | chunk | seconds / call | predicted frames / s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    skipped = []
    for backbone in args.backbones:
        model = bair_sized(backbone)
        for rows in args.rows:
            if args.quick and backbone == "vgg64" and rows > 256:
                skipped.append(f"{backbone} at {rows} rows")
                continue
            for precision in args.precisions:
                repeats = 1 if args.quick and backbone == "vgg64" else args.repeats
                r = bench_rollout(model, rows, args.horizon, precision, repeats)
                print(f"| {backbone} | {rows} | {precision} | {r['chunk']} | {r['seconds']:.2f} | "
                      f"{r['frames_per_s']:.0f} |", flush=True)
    if skipped:
        print(f"\n(--quick: skipped {', '.join(skipped)}; vgg64 rows timed once)")

    if not args.no_plan:
        cem = CEMConfig(iterations=args.iterations, candidates=args.candidates, elites=max(1, args.candidates // 10),
                        horizon=args.horizon)
        print(f"\nOne CEM planning step: {cem.iterations} iterations × {cem.candidates} candidates × "
              f"horizon {cem.horizon}, S = 1\n")
        print("| model | precision | seconds / plan |")
        print("| --- | --- | ---: |")
        model = bair_sized("dcgan64")
        for precision in args.precisions:
            print(f"| dcgan64 SVG-LP (BAIR size) | {precision} | "
                  f"{bench_cem_model(model, cem, precision, args.repeats):.2f} |", flush=True)
        torch.set_num_threads(1)  # the simulator's many small ops run best on one thread
        print(f"| true simulator (1 thread) | fp32 | {bench_cem_sim(cem, args.repeats):.3f} |")


if __name__ == "__main__":
    main()
