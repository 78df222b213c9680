"""Benchmark SVG-LP training and generation on CPU against the reference code's structure.

BAIR configuration (64×64×3, g_dim 128, z_dim 64, rnn 256, predictor 2 layers, prior and
posterior 1 layer, n_past 2, n_future 10, Adam lr 2e-3, shared-σ Gaussian head, random
frames in [0, 1]). Each configuration runs in its own worker process, so peak RSS is per
configuration; the workers' runs are interleaved round-robin (``--sequential`` to run one
at a time), so load from other processes on the shared cores hits every variant alike.
Two structures of the SAME network are timed in one run:

* ``ours``: :class:`seqvae.models.svg.SVG` as is (one encoder call over all frames, one
  decoder call over all predicted frames, sequence LSTMs, shared skip maps convolved once);
* ``reference``: the original SVG training/generation loop (per step: encode x_{t-1} and
  x_t separately, i.e. 22 encoder passes for 12 frames, decode one step at a time; in
  generation encode the previous frame every step and the true frame during warm-up).

Speed-ups are printed as ratios measured in this run (same machine state) and against the
numbers of ``/work/shared/baselines/reference_svg_cpu.md``.

    python tools/bench_svg.py                                   # dcgan64 b4/b16 + vgg64 b4
    python tools/bench_svg.py --backbones vgg64 --batches 16 --reps 3 --warmup 1
    python tools/bench_svg.py --profile --backbones vgg64 --batches 4   # where the time goes
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

# The baseline file's numbers (reference SVG-LP, fp32, 2 threads, same machine type).
BASELINE_TRAIN_S = {("dcgan64", 4): 1.12, ("dcgan64", 16): 3.16, ("vgg64", 4): 6.78, ("vgg64", 16): 22.9}
BASELINE_RSS_GB = {("dcgan64", 4): 0.75, ("dcgan64", 16): 1.31, ("vgg64", 4): 2.08, ("vgg64", 16): 6.20}
BASELINE_GEN_S = {"dcgan64": 2.24, "vgg64": 15.6}  # batch 16, 30 frames (28 predicted)
GEN_FRAMES, GEN_CONTEXT = 30, 2


# ----------------------------------------------------------------------- model
def build(backbone: str, channels_last: bool):
    from seqvae.data.spec import DataSpec
    from seqvae.likelihoods.gaussian import SharedSigmaGaussian
    from seqvae.models.svg import SVGConfig, build_svg

    cfg = SVGConfig(backbone=backbone, g_dim=128, z_dim=64, rnn_size=256, predictor_layers=2,
                    prior_layers=1, posterior_layers=1, n_past=2, n_future=10)
    model = build_svg(cfg, SharedSigmaGaussian(), DataSpec(3, 64, 64, seq_len=12))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def param_counts(model) -> dict[str, float]:
    def count(m) -> float:
        return sum(p.numel() for p in m.parameters()) / 1e6 if m is not None else 0.0

    parts = {name: count(getattr(model, name)) for name in ("encoder", "decoder", "predictor", "posterior", "prior")}
    parts["total"] = count(model)
    return parts


# ------------------------------------------------------- the reference structure
def reference_loss(model, x: torch.Tensor) -> torch.Tensor:
    """The original SVG-LP ``train()`` loop on our modules: two encoder calls per step."""
    b, t = x.shape[:2]
    state = model.init_state(b, x.device)
    nll = kl = 0.0
    for i in range(1, t):
        h, skip_i = model.encoder(x[:, i - 1])
        h_target, _ = model.encoder(x[:, i])
        if i < model.n_past:
            skip = skip_i
        out, state = model.transition(h[:, None], state, h_next=h_target[:, None])
        params = model.decoder(out.g[:, 0], model.decoder.skip_terms(skip))
        nll = nll + model.likelihood.nll(params, x[:, i])
        kl = kl + model.kl(out)[:, 0]
    return (nll + kl).mean()


@torch.no_grad()
def reference_generate(model, x: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The original SVG-LP generation loop: encode the previous frame every step."""
    b = x.shape[0]
    state = model.init_state(b, x.device)
    x_in, out_frames = x[:, 0], [x[:, 0]]
    for i in range(1, n_frames):
        h, skip_i = model.encoder(x_in)
        if i < model.n_past:
            skip = skip_i
            h_target, _ = model.encoder(x[:, i])
            _, state = model.transition(h[:, None], state, h_next=h_target[:, None])
            x_in = x[:, i]
        else:
            out, state = model.transition(h[:, None], state)
            x_in = model.likelihood.mean(model.decoder(out.g[:, 0], model.decoder.skip_terms(skip)))
        out_frames.append(x_in)
    return torch.stack(out_frames, 1)


# ---------------------------------------------------------------------- workers
def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KB on Linux


def make_job(a: argparse.Namespace):
    """Build one configuration; return (one-run callable, parameter counts)."""
    torch.manual_seed(0)
    model = build(a.backbone, a.channels_last)
    if a.worker == "gen":
        model.eval()
        x = torch.rand(a.batch, GEN_FRAMES, 3, 64, 64)
        gen = torch.Generator().manual_seed(0)

        def run() -> None:
            with autocast(a.precision):
                if a.style == "ours":
                    model.generate({"frames": x}, gen)
                else:
                    reference_generate(model, x, GEN_FRAMES)
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.999))
        x = torch.rand(a.batch, 12, 3, 64, 64)

        def run() -> None:
            with autocast(a.precision):
                loss = model({"frames": x}).loss if a.style == "ours" else reference_loss(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.commit_step()  # the optimal-σ EMA takes the step's σ* (seqvae.models.base)
    return run, param_counts(model)


def serve(a: argparse.Namespace) -> None:
    """Worker loop: build, then answer 'run' (one timed run) / 'quit' (peak RSS) on stdin."""
    run, params = make_job(a)
    print(json.dumps({"params": params}), flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            run()
            print(json.dumps({"t": time.perf_counter() - t0}), flush=True)
        else:
            print(json.dumps({"rss_gb": peak_rss_gb()}), flush=True)
            return


def worker_profile(a: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity, profile

    run, _ = make_job(a)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# ------------------------------------------------------------------------ driver
class Worker:
    """One configuration in its own process (so its peak RSS is its own)."""

    def __init__(self, kind: str, backbone: str, batch: int, style: str, precision: str,
                 channels_last: bool, threads: int) -> None:
        cmd = [sys.executable, __file__, "--worker", kind, "--backbone", backbone, "--batch", str(batch),
               "--style", style, "--precision", precision, "--threads", str(threads),
               "--channels-last", "yes" if channels_last else "no"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.params = self._read()["params"]
        self.times: list[float] = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died (exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()["t"]

    def finish(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        rss = self._read()["rss_gb"]
        self.proc.wait()
        return rss


def measure(kind: str, backbone: str, batch: int, variants: list[tuple[str, str, bool]], reps: int,
            warmup: int, threads: int, sequential: bool) -> dict[str, dict]:
    """Time every variant (style, precision, channels_last); by default the variants' runs
    are interleaved round-robin so that load from other processes hits all of them alike."""
    results = {}

    def collect(name: str, w: Worker) -> None:
        results[name] = {"median_s": statistics.median(w.times), "min_s": min(w.times),
                         "rss_gb": w.finish(), "params": w.params}

    names = [f"{style} {prec}" + (" channels_last" if cl else "") for style, prec, cl in variants]
    if sequential:
        for name, (style, prec, cl) in zip(names, variants):
            w = Worker(kind, backbone, batch, style, prec, cl, threads)
            w.times = [w.run() for _ in range(warmup + reps)][warmup:]
            collect(name, w)
        return results
    workers = [Worker(kind, backbone, batch, style, prec, cl, threads) for style, prec, cl in variants]
    for r in range(warmup + reps):
        for w in workers:
            t = w.run()
            if r >= warmup:
                w.times.append(t)
    for name, w in zip(names, workers):
        collect(name, w)
    return results


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="dcgan64,vgg64", help="comma list of dcgan64, vgg64")
    p.add_argument("--batches", default="4,16", help="comma list of training batch sizes")
    p.add_argument("--skip-configs", default="vgg64:16",
                   help="backbone:batch pairs to leave out (comma list; '' for none)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 for 'ours'")
    p.add_argument("--reference-precisions", default="fp32",
                   help="comma list of precisions for the reference structure")
    p.add_argument("--reference-style", action="store_true",
                   help="only time the reference structure (same network, the original per-step loop)")
    p.add_argument("--no-reference", action="store_true", help="only time 'ours'")
    p.add_argument("--channels-last", default="no", choices=["no", "yes", "both"], help="channels_last for 'ours'")
    p.add_argument("--reps", type=int, default=10, help="timed training steps per config")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per config")
    p.add_argument("--gen-batch", type=int, default=16, help="generation batch size (0: skip generation)")
    p.add_argument("--gen-reps", type=int, default=3)
    p.add_argument("--gen-warmup", type=int, default=1)
    p.add_argument("--no-train", action="store_true", help="only time generation")
    p.add_argument("--sequential", action="store_true",
                   help="one worker at a time (less memory) instead of interleaving the variants' runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="profile one 'ours' training step per config and exit")
    # worker-only arguments
    p.add_argument("--worker", choices=["train", "gen"], help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--style", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker:
        torch.set_num_threads(a.threads)
        a.channels_last = a.channels_last == "yes"
        serve(a)
        return

    backbones = a.backbones.split(",")
    batches = [int(b) for b in a.batches.split(",")]
    skip = {tuple(s.split(":")) for s in a.skip_configs.split(",") if s}
    cl_options = {"no": [False], "yes": [True], "both": [False, True]}[a.channels_last]
    variants: list[tuple[str, str, bool]] = []
    if not a.reference_style:
        variants += [("ours", prec, cl) for prec in a.precisions.split(",") for cl in cl_options]
    if not a.no_reference:
        variants += [("reference", prec, False) for prec in a.reference_precisions.split(",")]

    if a.profile:
        torch.set_num_threads(a.threads)
        for bb in backbones:
            for b in batches:
                if (bb, str(b)) in skip:
                    continue
                for style, prec, cl in variants:
                    if style != "ours":
                        continue
                    print(f"\n## profile: {bb} batch {b} {prec}{' channels_last' if cl else ''}", flush=True)
                    worker_profile(argparse.Namespace(worker="train", backbone=bb, batch=b, style="ours",
                                                      precision=prec, channels_last=cl))
        return

    print(f"# SVG-LP CPU benchmark: torch {torch.__version__}, {a.threads} threads, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.1f}; "
          f"runs {'one config at a time' if a.sequential else 'interleaved round-robin'}")
    params_printed = set()
    if not a.no_train:
        print(f"\n## Training step (forward + backward + Adam): median of {a.reps} after {a.warmup} warm-ups\n")
        print("| backbone | batch | variant | median s | min s | peak RSS GB | × vs in-run reference fp32 "
              "| × vs baseline file | baseline s / GB |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for bb in backbones:
            for b in batches:
                if (bb, str(b)) in skip:
                    continue
                results = measure("train", bb, b, variants, a.reps, a.warmup, a.threads, a.sequential)
                ref = results.get("reference fp32")
                base = BASELINE_TRAIN_S.get((bb, b))
                for name, r in results.items():
                    inrun = ref["median_s"] / r["median_s"] if ref else None
                    vs_base = base / r["median_s"] if base else None
                    print(f"| {bb} | {b} | {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['rss_gb']:.2f} | "
                          f"{fmt(inrun)} | {fmt(vs_base)} | {fmt(base)} / {fmt(BASELINE_RSS_GB.get((bb, b)))} |",
                          flush=True)
                if bb not in params_printed:
                    params_printed.add(bb)
                    counts = ", ".join(f"{k} {v:.2f} M" for k, v in next(iter(results.values()))["params"].items())
                    print(f"\n{bb} parameters: {counts}\n", flush=True)

    if a.gen_batch:
        n_pred = GEN_FRAMES - GEN_CONTEXT
        print(f"\n## Generation: batch {a.gen_batch}, {GEN_FRAMES} frames "
              f"({GEN_CONTEXT} context + {n_pred} predicted), no grad, eval mode; "
              f"median of {a.gen_reps} after {a.gen_warmup}\n")
        print("| backbone | variant | median s | min s | predicted frames/s | peak RSS GB "
              "| × vs in-run reference fp32 | × vs baseline file | baseline s |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for bb in backbones:
            results = measure("gen", bb, a.gen_batch, variants, a.gen_reps, a.gen_warmup, a.threads, a.sequential)
            ref = results.get("reference fp32")
            base = BASELINE_GEN_S.get(bb) if a.gen_batch == 16 else None
            for name, r in results.items():
                fps = a.gen_batch * n_pred / r["median_s"]
                inrun = ref["median_s"] / r["median_s"] if ref else None
                vs_base = base / r["median_s"] if base else None
                print(f"| {bb} | {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {fps:.1f} | {r['rss_gb']:.2f} | "
                      f"{fmt(inrun)} | {fmt(vs_base)} | {fmt(base)} |", flush=True)
        print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores; "
              "compare ratios measured in one run)")


if __name__ == "__main__":
    main()
