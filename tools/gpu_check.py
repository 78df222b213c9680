"""The prepared device check (issue 15.3): one JSON report of the GPU path.

    tools/gpu_check.sh [--out report.json]            # on a CUDA machine, within ~8 minutes
    tools/gpu_check.sh --cpu-dry-run [--out r.json]   # the same code on CPU at tiny sizes (~1 min)

Sections of the report (written after every measurement, so a run stopped at its time
limit still leaves what it measured):

* ``env``: torch, device name, CUDA, the bf16 peak assumed for that GPU.
* ``cuda_tests``: the tests marked ``cuda`` (tests/test_cuda.py), per test outcome.
* ``train``: steps/s and peak memory of the BAIR SVG-LP training step (2 + 10 frames,
  64×64, g 128, z 64, rnn 256, width 64) for vgg64 and dcgan64 at batch 16/64/100,
  eager vs compiled, fp32 vs bf16; random frames already on the device (no loader),
  fused Adam on CUDA. Measurements run in priority order (the vgg64 batch-100 bf16 goal
  first) and those that would pass the time budget are listed as skipped.
* ``flops``: FLOPs of one vgg64 forward + backward (``FlopCounterMode``) and the fraction
  of the assumed bf16 peak the fastest measured vgg64 step at that batch reaches.
* ``rollout``: predicted frames/s of planning batches (B×K×S rows, horizon 10) with the
  BAIR-size action-conditioned dcgan64 model, graph path and graph-free path.

The dry run uses width 4, batch 2, 2 + 2 training frames, horizon 3, and compiles with the ``aot_eager`` backend
(dynamo + AOT autograd without inductor's code generation, which costs minutes of CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqvae import compiled  # noqa: E402
from seqvae.control.rollout import rollout  # noqa: E402
from seqvae.data.spec import DataSpec  # noqa: E402
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian  # noqa: E402
from seqvae.models.svg import SVGConfig, build_svg  # noqa: E402

# Dense bf16 tensor-core peak per GPU (NVIDIA data sheets, SXM parts, no sparsity), FLOP/s.
# The device README of this workplace quotes ≈ 790 TFLOP/s as what an H200 reaches in practice.
BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362.1e12, "L4": 121e12, "A10": 125e12}
N_PAST, N_FUTURE, ACTION_DIM = 2, 10, 4


def peak_for(name: str) -> float | None:
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


class Report:
    def __init__(self, path: Path, budget_s: float) -> None:
        self.path, self.t0, self.budget_s = path, time.perf_counter(), budget_s
        self.data: dict = {"sections_done": []}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.data["wall_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def svg_model(backbone: str, width: int, device: torch.device, actions: bool = False, n_future: int = N_FUTURE):
    torch.manual_seed(0)
    cfg = SVGConfig(backbone=backbone, width=width, g_dim=128, z_dim=64, rnn_size=256, n_past=N_PAST,
                    n_future=n_future, action_conditioned=actions)
    spec = DataSpec(3, 64, 64, N_PAST + n_future, ACTION_DIM if actions else 0)
    return build_svg(cfg, OptimalSigmaGaussian(), spec).to(device)


def run_cuda_tests(report: Report, timeout_s: float) -> None:
    xml = report.path.with_name("cuda_tests.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           str(ROOT / "tests/test_cuda.py"), f"--junitxml={xml}"]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        out = {"returncode": proc.returncode, "tail": proc.stdout[-1500:] + proc.stderr[-500:]}
    except subprocess.TimeoutExpired:
        out = {"returncode": None, "error": f"timed out after {timeout_s:.0f} s"}
    cases = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            status = "passed"
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    out.setdefault("messages", {})[case.get("name")] = (node.get("message") or "")[:800]
            cases[case.get("name")] = status
        xml.unlink()
    out.update(tests=cases, wall_s=round(time.perf_counter() - t, 1))
    report.data["cuda_tests"] = out


def train_step_fn(model, device, dtype, compile_backend: str | None):
    fwd = compiled.compile_step(model, backend=compile_backend) if compile_backend else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True if device.type == "cuda" else None)

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = fwd(batch)
        out.loss.backward()
        opt.step()
        model.commit_step(True)
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()
    return step


def bench_train(report: Report, cfg: dict, device: torch.device) -> None:
    rows = report.data.setdefault("train", [])
    combos = []
    for precision in cfg["precisions"]:           # priority: the goal (vgg64, largest batch, bf16) first
        for backbone in ("vgg64", "dcgan64"):
            for batch in sorted(cfg["batches"], reverse=True):
                for comp in cfg["compile"]:
                    combos.append((backbone, batch, precision, comp))
    # every row at the largest batch first (bf16, vgg64, compiled first), then the eager rows at
    # the other batches, then the compiled ones (each compile costs about a minute on a GPU)
    top = max(cfg["batches"])
    combos = [c for c in combos if not c[3] or c[2] in cfg["compile_precisions"]]
    combos.sort(key=lambda c: (c[1] != top, c[1] != top and c[3], c[2] != "bf16", c[0] != "vgg64", -c[1], not c[3]))
    for backbone, batch, precision, comp in combos:
        row = {"backbone": backbone, "batch": batch, "precision": precision,
               "compiled": cfg["compile_backend"] if comp else False}
        if comp and backbone not in cfg["compile_backbones"]:
            continue
        if report.left() < cfg["min_left_s"] + (cfg["compile_cost_s"] if comp else 0):
            rows.append({**row, "skipped": "time budget"})
            report.save()
            continue
        try:
            torch._dynamo.reset()
            model = svg_model(backbone, cfg["width"], device, n_future=cfg["n_future"]).train()
            if device.type == "cuda" and cfg.get("channels_last"):
                model = model.to(memory_format=torch.channels_last)
            dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
            step = train_step_fn(model, device, dtype, cfg["compile_backend"] if comp else None)
            x = torch.rand(batch, N_PAST + cfg["n_future"], 3, 64, 64, device=device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            for _ in range(cfg["warmup"]):
                loss = step({"frames": x})
            sync(device)
            row["warmup_s"] = round(time.perf_counter() - t, 2)
            graphs = compiled.graph_count()
            t = time.perf_counter()
            for _ in range(cfg["steps"]):
                loss = step({"frames": x})
            sync(device)
            dt = (time.perf_counter() - t) / cfg["steps"]
            row.update(steps_per_s=round(1 / dt, 3), step_ms=round(1e3 * dt, 2), loss_finite=bool(torch.isfinite(loss)),
                       recompiled_while_timed=compiled.graph_count() != graphs)
            if device.type == "cuda":
                row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            del model, step, x
        except Exception as err:  # one failure must not lose the rest of the report
            row["error"] = f"{type(err).__name__}: {err}"[:500]
            row["trace"] = traceback.format_exc()[-1500:]
        rows.append(row)
        report.save()


def count_flops(report: Report, cfg: dict, device: torch.device) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    batch = max(cfg["batches"])
    model = svg_model("vgg64", cfg["width"], device, n_future=cfg["n_future"]).train()
    x = torch.rand(batch, N_PAST + cfg["n_future"], 3, 64, 64, device=device)
    with FlopCounterMode(display=False) as counter:
        model({"frames": x}).loss.backward()
    flops = counter.get_total_flops()
    name = report.data["env"]["device_name"]
    peak = peak_for(name) if device.type == "cuda" else None
    timed = [r for r in report.data.get("train", []) if r["backbone"] == "vgg64" and r["batch"] == batch
             and r["precision"] == "bf16" and "steps_per_s" in r]
    best = max(timed, key=lambda r: r["steps_per_s"]) if timed else None
    out = {"vgg64_batch": batch, "width": cfg["width"], "frames": N_PAST + cfg["n_future"], "flops_fwd_bwd": flops,
           "tflop_per_step": round(flops / 1e12, 3), "assumed_bf16_peak_tflops": peak and peak / 1e12,
           "peak_source": "NVIDIA data sheet, dense bf16 (SXM); matched by name in the device name" if peak else
           "no peak known for this device", "best_bf16_step": best}
    if best:
        achieved = flops * best["steps_per_s"]
        out["achieved_tflops"] = round(achieved / 1e12, 6)
        out["fraction_of_peak"] = round(achieved / peak, 4) if peak else None
    report.data["flops"] = out
    del model, x


def bench_rollout(report: Report, cfg: dict, device: torch.device) -> None:
    rows = report.data.setdefault("rollout", [])
    model = svg_model("dcgan64", cfg["width"], device, actions=True).eval()
    horizon = cfg["horizon"]
    precision = "bf16" if device.type == "cuda" else "fp32"
    for b, k, s in cfg["plans"]:
        for graphs in ((True, False) if device.type == "cuda" else (False, True)):
            row = {"rows": f"{b}x{k}x{s}", "n_rows": b * k * s, "horizon": horizon, "precision": precision,
                   "cuda_graphs": graphs}
            if report.left() < cfg["min_left_s"]:
                rows.append({**row, "skipped": "time budget"})
                report.save()
                continue
            try:
                ctx = torch.rand(b, N_PAST, 3, 64, 64, device=device)
                actions = torch.rand(b, k, horizon, ACTION_DIM, device=device) * 2 - 1

                def run():
                    return rollout(model, ctx, actions, s, generator=torch.Generator().manual_seed(0),
                                   precision=precision, return_frames=False,
                                   cost_fn=lambda f, i: f.mean(dim=(1, 2, 3, 4)), cuda_graphs=graphs)
                t = time.perf_counter()
                for _ in range(cfg["rollout_warmup"]):
                    run()
                sync(device)
                row["warmup_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                for _ in range(cfg["rollout_repeats"]):
                    out = run()
                sync(device)
                dt = (time.perf_counter() - t) / cfg["rollout_repeats"]
                row.update(s_per_call=round(dt, 4), frames_per_s=round(b * k * s * horizon / dt, 1),
                           costs_finite=bool(torch.isfinite(out.costs).all()))
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:500]
                row["trace"] = traceback.format_exc()[-1500:]
            rows.append(row)
            report.save()


GPU = dict(width=64, n_future=N_FUTURE, batches=[16, 64, 100], precisions=["bf16", "fp32"], compile=[False, True],
           compile_backend="inductor", compile_backbones=("vgg64", "dcgan64"), compile_precisions=("bf16", "fp32"),
           warmup=3, steps=15, compile_cost_s=60, min_left_s=20, horizon=10, plans=[(1, 1000, 1), (4, 200, 4)],
           rollout_warmup=2, rollout_repeats=5, channels_last=True, budget_s=450, tests_timeout_s=150)
DRY = dict(width=4, n_future=2, batches=[2], precisions=["bf16", "fp32"], compile=[False, True],
           compile_backend="aot_eager", compile_backbones=("dcgan64",), compile_precisions=("fp32",), warmup=1, steps=2,
           compile_cost_s=5, min_left_s=2, horizon=3, plans=[(1, 8, 1), (2, 4, 2)],
           rollout_warmup=1, rollout_repeats=1, channels_last=False, budget_s=120, tests_timeout_s=60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same checks on CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole check (default 450 / 120)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the cuda test subset")
    args = parser.parse_args(argv)
    cfg = dict(DRY if args.cpu_dry_run else GPU)
    if args.budget_s:
        cfg["budget_s"] = args.budget_s
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("no CUDA device found; use --cpu-dry-run on a CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, cfg["budget_s"])
    if device.type == "cuda":
        from seqvae import amp

        amp.setup_backends(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report.data["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device_name": name,
                          "dry_run": args.cpu_dry_run, "threads": torch.get_num_threads(),
                          "config": {k: v for k, v in cfg.items()}, "bf16_peak_assumed": peak_for(name)}
    report.save()
    # rollouts before the training grid, which fills what time is left
    sections = [("rollout", bench_rollout), ("train", bench_train), ("flops", count_flops)]
    if not args.skip_tests:
        sections.insert(0, ("cuda_tests", lambda r, c, d: run_cuda_tests(r, c["tests_timeout_s"])))
    status = 0
    for label, fn in sections:
        t = time.perf_counter()
        try:
            fn(report, cfg, device)
            report.data["sections_done"].append(label)
        except Exception as err:
            report.data.setdefault("errors", {})[label] = traceback.format_exc()[-2000:]
            print(f"{label}: {type(err).__name__}: {err}", file=sys.stderr)
            status = 1
        report.data.setdefault("section_s", {})[label] = round(time.perf_counter() - t, 1)
        report.save()
    print(json.dumps({k: report.data.get(k) for k in ("sections_done", "wall_s", "flops")}, indent=1))
    print(f"report: {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
