"""The one prepared GPU run (issue 27.1): measure first, then train, in one device call.

Started by tools/gpu_run.sh (its header holds the device tool's call). One JSON report,
``$OUT/report.json``, rewritten after every measurement, so a run stopped at any moment
still returns what it measured:

1. **Measurements, in priority order, within ``--measure-s`` (≈ 4 minutes):**
   ``train``: steps/s of the real training step (seqvae.training.loop.train_step: forward,
   backward, update guard on the device, fused Adam, σ-EMA) of BAIR SVG-LP vgg64 at batch
   100 (2 + 10 frames, 64×64, bf16, channels_last), eager then compiled (inductor), on
   random frames already on the device; ``profile``: the faster one under the profiler
   (kernel launches per step, GPU busy fraction, top kernels); ``flops``: its FLOPs and the
   fraction of the bf16 peak; ``rollout``: predicted frames/s of dcgan64 planning batches
   1×1000×1 and 4×200×4 at horizon 10 (graph path, then graph-free); ``cuda_tests``: the
   ``cuda``-marked tests (tests/test_cuda.py), per test outcome and message; then, if time
   is left, the pusher step (dcgan64, batch 64, 30 frames).
2. **Training, in the time left:** every pack in ``--carry`` (``gpu_carry/<name>/``, made by
   tools/gpu_pack.py from a run folder) is unpacked and continued with ``seqvae train
   <run>/config.yaml --resume train.time_limit_minutes=<what is left>`` plus the pack's own
   overrides, all runs at once (they share the GPU; a launch-bound step leaves room).
3. **What comes back** (``$OUT``: at most 8 files of ≤ 16 MiB, 64 MiB in all): the report,
   the log, and per run, in the packs' order, its pack again (the checkpoint with bf16
   moments, split into ≤ 16 MiB parts: ``gpu_pack.py unpack`` makes it a run folder that
   resumes) where it fits, else its weights as fp16 safetensors (``train.init_from`` starts
   from them; the optimizer state is lost), else nothing; the report says which.

``--cpu-dry-run``: the same code on CPU at tiny sizes (width 4, batch 2, aot_eager
compiles, a few seconds of training of a tiny run made on the spot when ``--carry`` holds
no pack, 256 KiB parts so the splitting is exercised); tests/test_gpu_check.py runs it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import gpu_check  # noqa: E402
import gpu_pack  # noqa: E402

from seqvae import amp, compiled  # noqa: E402
from seqvae.build import build_model  # noqa: E402
from seqvae.config import RunConfig  # noqa: E402
from seqvae.data.spec import DataSpec  # noqa: E402
from seqvae.training import loop  # noqa: E402
from seqvae.training.session import Session  # noqa: E402
from seqvae.training.update_guard import UpdateGuard  # noqa: E402

MIB = 1 << 20
ACTION_DIM = 4
# the shipped pusher models (configs/pusher/svg_pusher_actions_finetune30.yaml)
PUSHER_MODEL = {"backbone": "dcgan64", "width": 32, "g_dim": 128, "z_dim": 16, "rnn_size": 128,
                "action_conditioned": True}
# what the device tool brings back from $OUT (its README's limits)
LIMITS = {"files": 8, "file_bytes": 16 * MIB, "total_bytes": 64 * MIB}
GPU = dict(width=64, n_future=10, batches=[100], backbone="vgg64", precision="bf16", compile_backend="inductor",
           steps=20, warmup=3, profile_steps=3, horizon=10, plans=[(1, 1000, 1), (4, 200, 4)], rollout_warmup=2,
           rollout_repeats=5, min_left_s=15, compile_cost_s=45, tests_min_s=60, pusher=dict(batch=64, n_future=28),
           budget_s=540, measure_s=250, return_reserve_s=60, part_mib=16.0, channels_last=True)
DRY = dict(width=4, n_future=2, batches=[2], backbone="vgg64", precision="bf16", compile_backend="eager",
           steps=2, warmup=1, profile_steps=1, horizon=3, plans=[(1, 8, 1), (2, 4, 2)], rollout_warmup=1,
           rollout_repeats=1, min_left_s=1, compile_cost_s=3, tests_min_s=30, pusher=dict(batch=2, n_future=2),
           budget_s=240, measure_s=150, return_reserve_s=25, part_mib=0.5, channels_last=False, train_s=4)


class Report:
    """The report file; ``left()`` is the time to the current phase's deadline (what the
    gpu_check measurements ask before each row)."""

    def __init__(self, path: Path) -> None:
        self.path, self.t0, self.deadline = path, time.perf_counter(), 0.0
        self.data: dict = {"sections_done": [], "left_out": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.deadline - self.elapsed()

    def save(self) -> None:
        self.data["wall_s"] = round(self.elapsed(), 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


# ---------------------------------------------------------------------------------------- measuring
def step_session(model_cfg: dict, batch: int, n_future: int, cfg: dict, device: torch.device,
                 compile_backend: str | None) -> Session:
    """A training session around the real train_step, on random frames (no data set)."""
    torch.manual_seed(0)
    run = RunConfig.from_dict({
        "data": {"name": "bair"},
        "model": {"name": "svg", "n_past": 2, "n_future": n_future, **model_cfg},
        "likelihood": {"name": "optimal_sigma"},
        "train": {"batch_size": batch, "precision": cfg["precision"], "steps": 10 ** 9,
                  "channels_last": bool(cfg["channels_last"] and device.type == "cuda")}})
    actions = ACTION_DIM if model_cfg.get("action_conditioned") else 0
    model = build_model(run, DataSpec(3, 64, 64, 2 + n_future, actions)).to(device).train()
    if run.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.train.lr, fused=True)
    dtype = amp.resolve(run.train.precision, device)
    known = dict(cfg=run, run_dir=Path(tempfile.gettempdir()), device=device, dtype=dtype, model=model, net=model,
                 step_fn=compiled.compile_step(model, backend=compile_backend) if compile_backend else model,
                 optimizer=optimizer, scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
                 guard=UpdateGuard.from_config(run.train, warn=False), governor=None, train_set=None, test_set=None,
                 batches=None, log=None, step=0, resumed=False, dry_run=True)
    # fields a later Session may add start empty (this bench needs none of them)
    return Session(**{f.name: known.get(f.name) for f in dataclasses.fields(Session)})


def time_steps(session: Session, batch: dict, warmup: int, steps: int) -> dict:
    frames = batch["frames"]
    t = time.perf_counter()
    for _ in range(warmup):
        result = loop.train_step(session, batch)
    gpu_check.sync(frames.device)
    out = {"warmup_s": round(time.perf_counter() - t, 2)}
    graphs = compiled.graph_count()
    t = time.perf_counter()
    for _ in range(steps):
        result = loop.train_step(session, batch)
    gpu_check.sync(frames.device)
    dt = (time.perf_counter() - t) / steps
    session.guard.sync()
    out.update(steps_per_s=round(1 / dt, 3), step_ms=round(1e3 * dt, 2), loss_finite=bool(torch.isfinite(result.loss)),
               skipped=session.guard.window_stats()["skipped"], recompiled_while_timed=compiled.graph_count() != graphs)
    return out


def bench_step(report: Report, cfg: dict, device: torch.device, model_cfg: dict, batch: int, n_future: int,
               compile_backend: str | None, section: str = "train") -> Session | None:
    row = {"backbone": model_cfg["backbone"], "model": model_cfg, "batch": batch, "frames": 2 + n_future,
           "precision": cfg["precision"], "compiled": compile_backend or False,
           "step": "seqvae.training.loop.train_step"}
    rows = report.data.setdefault(section, [])
    if report.left() < cfg["min_left_s"] + (cfg["compile_cost_s"] if compile_backend else 0):
        rows.append({**row, "skipped": "time budget"})
        report.save()
        return None
    session = None
    try:
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        session = step_session(model_cfg, batch, n_future, cfg, device, compile_backend)
        data = {"frames": torch.rand(batch, 2 + n_future, 3, 64, 64, device=device)}
        if model_cfg.get("action_conditioned"):
            data["actions"] = torch.rand(batch, 2 + n_future, ACTION_DIM, device=device) * 2 - 1
        row.update(time_steps(session, data, cfg["warmup"], cfg["steps"]))
        if device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        session.batch = data
    except Exception as err:  # one failure must not lose the rest of the report
        row["error"] = f"{type(err).__name__}: {err}"[:500]
        row["trace"] = traceback.format_exc()[-1500:]
        session = None
    rows.append(row)
    report.save()
    return session


def profile_step(report: Report, cfg: dict, session: Session, label: str) -> None:
    """Kernel launches per step, the GPU's busy fraction and the top kernels of a few steps."""
    from torch.profiler import ProfilerActivity, profile

    device, n = session.device, cfg["profile_steps"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batch = session.batch
    gpu_check.sync(device)
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        for _ in range(n):
            loop.train_step(session, batch)
        gpu_check.sync(device)
        wall = time.perf_counter() - t
    session.guard.sync()
    events = prof.key_averages()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total for e in kernels)
        key = "self_device_time_total"
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        busy_us = sum(e.self_cpu_time_total for e in kernels)
        key = "self_cpu_time_total"
    top = sorted(kernels, key=lambda e: getattr(e, key), reverse=True)[:15]
    report.data["profile"] = {
        "of": label, "steps": n, "wall_ms_per_step": round(1e3 * wall / n, 2),
        "launches_per_step": round(sum(e.count for e in kernels) / n, 1),
        "busy_fraction": round(busy_us / 1e6 / max(wall, 1e-9), 3),
        "what": "CUDA kernels" if device.type == "cuda" else "aten ops (CPU dry run)",
        "top": [{"name": e.key[:120], "calls_per_step": round(e.count / n, 1),
                 "ms_per_step": round(getattr(e, key) / 1e3 / n, 3)} for e in top]}
    report.save()


def measure(report: Report, cfg: dict, device: torch.device, skip_tests: bool) -> None:
    batch, backbone, n_future = max(cfg["batches"]), cfg["backbone"], cfg["n_future"]
    bair = {"backbone": backbone, "width": cfg["width"], "g_dim": 128, "z_dim": 64, "rnn_size": 256}
    sessions = {}
    for backend in (None, cfg["compile_backend"]):          # the goal step, eager first, then compiled
        sessions[backend] = bench_step(report, cfg, device, bair, batch, n_future, backend)
    timed = [(r["steps_per_s"], r["compiled"]) for r in report.data["train"] if "steps_per_s" in r]
    if timed:
        best = max(timed)[1] or None
        try:
            profile_step(report, cfg, sessions[best], f"{backbone} batch {batch} {'compiled' if best else 'eager'}")
        except Exception as err:
            report.data["profile"] = {"error": f"{type(err).__name__}: {err}"[:500]}
    sessions.clear()
    report.data["sections_done"].append("train")
    for label, fn in (("flops", gpu_check.count_flops), ("rollout", gpu_check.bench_rollout)):
        try:
            fn(report, cfg, device)
            report.data["sections_done"].append(label)
        except Exception as err:
            report.data.setdefault("errors", {})[label] = traceback.format_exc()[-2000:]
            print(f"{label}: {type(err).__name__}: {err}", file=sys.stderr)
        report.save()
    if not skip_tests:
        gpu_check.run_cuda_tests(report, max(cfg["tests_min_s"], report.left()))
        report.data["sections_done"].append("cuda_tests")
        report.save()
    pusher = cfg["pusher"]
    bench_step(report, cfg, device, {**PUSHER_MODEL, "width": min(cfg["width"], PUSHER_MODEL["width"])},
               pusher["batch"], pusher["n_future"], None, section="pusher_step")
    report.data["sections_done"].append("pusher_step")
    report.save()


def release(device: torch.device) -> None:
    import gc

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------- training
def tiny_pack(carry: Path) -> None:
    """The dry run's own pack: a tiny pusher SVG trained for 2 steps on the CPU."""
    from seqvae.training import train

    raw = {"data": {"name": "pusher", "seq_len": 4, "num_test": 4, "num_train": 64, "action_conditioned": True},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                     "n_past": 2, "n_future": 2, "n_eval": 2, "action_conditioned": True},
           "likelihood": {"name": "optimal_sigma"},
           "train": {"steps": 2, "batch_size": 4, "log_every": 1, "eval_every": 0, "eval_batches": 1,
                     "image_every": 0, "checkpoint_every": 0, "threads": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "tiny_pusher"
        train(RunConfig.from_dict({**raw, "train": {**raw["train"], "out_dir": str(run)}}), progress=False)
        gpu_pack.pack(run, carry, part_mib=DRY["part_mib"], overrides=["train.steps=100000", "train.log_every=5",
                                                                        "train.compile=false"])


def last_metrics(run: Path, start_step: int) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    train_lines = [x for x in lines if x.get("split") == "train" and x["step"] > start_step]
    tests = [x for x in lines if x.get("split") == "test" and x["step"] > start_step]
    out = {}
    if train_lines:
        last = train_lines[-1]
        out.update(last_train={k: last[k] for k in ("step", "neg_elbo", "loss", "grad_norm", "skipped_frac",
                                                    "examples_per_s") if k in last})
    if tests:
        out["last_test"] = {k: tests[-1][k] for k in ("step", "neg_elbo", "bpd") if k in tests[-1]}
    return out


def train_packs(report: Report, cfg: dict, carry: Path, work: Path, end_s: float) -> list[dict]:
    """Continue every pack's run until ``end_s`` (seconds since the start); rows for the report."""
    rows = report.data.setdefault("training", [])
    procs = []
    for pack_dir in sorted(p.parent for p in carry.glob(f"*/{gpu_pack.PART_PREFIX}00")):
        row = {"name": pack_dir.name}
        rows.append(row)
        try:
            run = work / pack_dir.name
            row["start_step"] = gpu_pack.unpack(pack_dir, run, force=True)
            # the trainer's clock starts once its run is open (~10-20 s); then its last checkpoint,
            # evaluation and figures: 45 s before end_s, else SIGTERM stops it (it checkpoints first)
            minutes = max(0.05, (end_s - report.elapsed() - 45) / 60) if "train_s" not in cfg \
                else cfg["train_s"] / 60
            overrides = gpu_pack.overrides_of(pack_dir)
            cmd = [sys.executable, "-m", "seqvae.cli", "train", str(run / "config.yaml"), "--resume",
                   f"train.out_dir={run}", *overrides, f"train.time_limit_minutes={minutes:.3f}"]
            row.update(command=" ".join(cmd[1:]), time_limit_minutes=round(minutes, 3))
            log = open(work / f"{pack_dir.name}.log", "w")
            procs.append((row, run, log, time.perf_counter(),
                          subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"[:500]
    report.save()
    for row, run, log, started, proc in procs:
        try:
            proc.wait(timeout=max(1.0, end_s - report.elapsed()))
        except subprocess.TimeoutExpired:     # SIGTERM: the trainer finishes its step and checkpoints
            proc.send_signal(signal.SIGTERM)
            row["stopped"] = "SIGTERM at the time budget"
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                row["stopped"] = "killed (no checkpoint of the last steps)"
        log.close()
        row["returncode"] = proc.returncode
        row["wall_s"] = round(time.perf_counter() - started, 1)
        row["log_tail"] = (work / f"{row['name']}.log").read_text()[-1500:]
        try:
            end = int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
            row.update(end_step=end, steps=end - row["start_step"])
            row.update(last_metrics(run, row["start_step"]))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"[:500]
        report.save()
    return [(row, work / row["name"]) for row in rows if "end_step" in row]


# ---------------------------------------------------------------------------------------- bringing back
def plan_return(options: list[tuple[str, list[list[tuple[str, int]]]]], *, files: int, file_bytes: int,
                total_bytes: int) -> tuple[dict[str, int], list[str]]:
    """Per run (in priority order) the first of its options (lists of (file, bytes)) that fits
    what is left of the limits; returns {run: chosen option's index} and what was left out."""
    chosen, left_out = {}, []
    for name, alternatives in options:
        for i, option in enumerate(alternatives):
            size = sum(b for _, b in option)
            if all(b <= file_bytes for _, b in option) and len(option) <= files and size <= total_bytes:
                chosen[name] = i
                files -= len(option)
                total_bytes -= size
                break
        else:
            left_out.append(name)
    return chosen, left_out


def bring_back(report: Report, cfg: dict, trained: list, out: Path, work: Path) -> None:
    """Packs (else fp16 weights) of the trained runs into ``out`` within the device tool's limits."""
    reserved_files, reserved_bytes = 2, 2 * MIB        # report.json and the log
    options, staged = [], {}
    for row, run in trained:
        stage = work / "back" / row["name"]
        manifest = gpu_pack.pack(run, stage.parent, part_mib=cfg["part_mib"], overrides=[], name=row["name"])
        weights = work / "back" / f"{row['name']}.safetensors"
        gpu_pack.export_weights(run, weights)
        staged[row["name"]] = (row, stage, manifest, weights)
        options.append((row["name"], [[(p["file"], p["bytes"]) for p in manifest["parts"]],
                                      [(weights.name, weights.stat().st_size)]]))
    chosen, left_out = plan_return(options, files=LIMITS["files"] - reserved_files, file_bytes=LIMITS["file_bytes"],
                                   total_bytes=LIMITS["total_bytes"] - reserved_bytes)
    for name, (row, stage, manifest, weights) in staged.items():
        dest = out / name
        if name not in chosen:
            row["came_back"] = "nothing (over the device tool's limits of files back)"
            continue
        dest.mkdir(parents=True, exist_ok=True)
        if chosen[name] == 0:
            for part in manifest["parts"]:
                shutil.copyfile(stage / part["file"], dest / part["file"])
            row["came_back"] = {"pack": manifest}
        else:
            shutil.copyfile(weights, dest / "weights-fp16.safetensors")
            row["came_back"] = {"weights_fp16": f"{name}/weights-fp16.safetensors",
                                "note": "the pack did not fit; train.init_from starts from these (optimizer fresh)"}
    report.data["left_out"] += left_out
    report.save()


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same run on CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_run_out")))
    parser.add_argument("--carry", type=Path, default=ROOT / "gpu_carry", help="folder of packs (gpu_pack.py)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for everything (540 / 240)")
    parser.add_argument("--measure-s", type=float, default=None, help="seconds for the measurements (250 / 150)")
    parser.add_argument("--skip-measure", action="store_true", help="train only")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the cuda tests")
    args = parser.parse_args(argv)
    cfg = dict(DRY if args.cpu_dry_run else GPU)
    budget = args.budget_s or cfg["budget_s"]
    measure_s = 0.0 if args.skip_measure else (args.measure_s or cfg["measure_s"])
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("no CUDA device found; use --cpu-dry-run on a CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "report.json")
    amp.setup_backends(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report.data["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device_name": name,
                          "dry_run": args.cpu_dry_run, "threads": torch.get_num_threads(),
                          "bf16_peak_assumed": gpu_check.peak_for(name), "budget_s": budget, "measure_s": measure_s,
                          "config": cfg}
    report.save()
    work = Path(tempfile.mkdtemp(prefix="gpu_run_"))
    carry = args.carry
    if args.cpu_dry_run and not any(carry.glob(f"*/{gpu_pack.PART_PREFIX}00")):
        carry = work / "carry"
        tiny_pack(carry)
    if measure_s:
        report.deadline = measure_s
        measure(report, cfg, device, args.skip_tests)
    release(device)   # the trainers get the GPU's memory: graphs, compiled code and cached blocks of the benches
    end_train = budget - cfg["return_reserve_s"]
    report.deadline = end_train
    trained = []
    if report.left() > 30 or args.cpu_dry_run:
        trained = train_packs(report, cfg, carry, work / "runs", end_train)
    else:
        report.data["training"] = {"skipped": "no time left after the measurements"}
    report.data["sections_done"].append("training")
    report.save()
    bring_back(report, cfg, trained, args.out, work)
    report.data["sections_done"].append("returned")
    report.save()
    shutil.rmtree(work, ignore_errors=True)
    summary = {"sections_done": report.data["sections_done"], "wall_s": report.data["wall_s"],
               "train": [{k: r.get(k) for k in ("compiled", "steps_per_s", "error", "skipped")}
                         for r in report.data.get("train", [])],
               "training": [{k: r.get(k) for k in ("name", "start_step", "end_step", "returncode")}
                            for r in report.data.get("training", []) if isinstance(r, dict)]}
    print(json.dumps(summary, indent=1))
    print(f"report: {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
