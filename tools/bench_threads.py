#!/usr/bin/env python
"""Training throughput under each thread policy with 0, 1, 2 competing busy processes.

    python tools/bench_threads.py                 # demo config, 40 s per cell
    python tools/bench_threads.py --seconds 15 --policies default,one,auto --repeats 3

Each cell runs in a fresh process (OpenMP reads its settings when torch loads): it builds
the demo config's model (``configs/demo/svg.yaml``, bf16 where the CPU has it), warms up,
then times training steps (forward + backward + Adam, the trainer's own step) for
``--seconds`` while ``k`` busy-loop processes compete for the cores. Prints steps/s and
the ratio to the same policy's idle figure and to the best idle figure. With ``--repeats
R`` the whole grid is run R times in rounds (policies interleaved, so a slow minute on a
shared machine hits every policy alike) and each cell reports the median of its rounds.

Policies:
  default  torch's defaults (threads = cores, OpenMP's default wait policy)
  one      1 thread
  passive  threads = cores, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning)
  auto     seqvae's policy: seqvae.threads.ThreadGovernor picks the count from step times
           (what `seqvae train` does with train.threads=0)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
policy, seconds = sys.argv[1], float(sys.argv[2])
if policy == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import torch
from seqvae import amp, threads
governor = threads.ThreadGovernor.for_this_process() if policy == "auto" else None
if policy == "one":
    torch.set_num_threads(1)
from seqvae.build import build_data, build_model
from seqvae.config import RunConfig, find_repo_file
from seqvae.data.spec import batch_to_device
cfg = RunConfig.load(find_repo_file("configs/demo/svg.yaml"))
ds = build_data(cfg, "train")
torch.manual_seed(0)
model = build_model(cfg, ds.spec).train()
opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
dtype = torch.bfloat16 if amp.cpu_supports_bf16() else None
batch = batch_to_device({k: v for k, v in __import__("torch").utils.data.default_collate(
    ds.__getitems__(list(range(cfg.train.batch_size)))).items() if k in ("frames", "actions")}, "cpu")
def train_step():
    with amp.autocast(torch.device("cpu"), dtype):
        loss = model(batch).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
def step():
    if governor is None:
        return train_step()
    with governor.step():
        train_step()
for _ in range(3):
    step()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    step(); n += 1
print(json.dumps({"steps_per_s": n / (time.perf_counter() - start),
                  "threads": governor.current if governor else torch.get_num_threads()}))
"""


def busy() -> None:
    while True:
        pass


def cell(policy: str, competitors: int, seconds: float) -> dict:
    procs = [mp.Process(target=busy, daemon=True) for _ in range(competitors)]
    for p in procs:
        p.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        out = subprocess.run([sys.executable, "-c", CHILD, policy, str(seconds)], capture_output=True, text=True,
                             env=env, timeout=seconds * 20 + 300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            p.terminate()
            p.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="timed training per cell")
    parser.add_argument("--policies", default="default,one,passive,auto")
    parser.add_argument("--competitors", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the whole grid; cells report the median")
    args = parser.parse_args()
    policies = args.policies.split(",")
    loads = [int(x) for x in args.competitors.split(",")]
    print(f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}; {args.seconds:g} s per cell, "
          f"{args.repeats} round(s)")
    rounds: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.repeats):
        for k in loads:
            for policy in policies:
                res = cell(policy, k, args.seconds)
                rounds.setdefault((policy, k), []).append(res)
                print(f"  round {r + 1}: {policy:8s} {k} busy: {res['steps_per_s']:.2f} steps/s "
                      f"({res['threads']} threads)", flush=True)
    results = {key: {"steps_per_s": statistics.median(x["steps_per_s"] for x in runs),
                     "threads": "/".join(sorted({str(x["threads"]) for x in runs}))}
               for key, runs in rounds.items()}
    best_idle = max(results[p, 0]["steps_per_s"] for p in policies) if 0 in loads else float("nan")
    print("\n| policy | threads | " + " | ".join(f"{k} busy: steps/s (vs own idle)" for k in loads)
          + " | idle vs best idle |")
    print("|---|---:|" + "---:|" * len(loads) + "---:|")
    for p in policies:
        idle = results[p, loads[0]]["steps_per_s"]
        cells = " | ".join(f"{results[p, k]['steps_per_s']:.2f} ({results[p, k]['steps_per_s'] / idle:.0%})"
                           for k in loads)
        print(f"| {p} | {results[p, loads[0]]['threads']} | {cells} | {idle / best_idle:.0%} |")


if __name__ == "__main__":
    main()
