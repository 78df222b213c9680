#!/usr/bin/env python
"""Fault trials for issue 11: what a kill, a signal or a damaged data file costs.

    OMP_NUM_THREADS=1 python tools/fault_trials.py                 # 20 kills, 3 signals each, 320 records
    python tools/fault_trials.py --kills 5 --signals 1 --mutations 60 --seed 1

(a) **kill -9**: a tiny training run (shapes + conv_vae, fp32, one thread) is started as
    ``python -m seqvae.cli train`` and killed with SIGKILL at a random moment of its
    training; then it is continued the way a user would (``--resume``, or a plain restart
    when the folder holds no run yet) to the end. Reported: the steps lost (the last
    step in ``metrics.jsonl`` at the kill minus the checkpoint's step: at most one
    ``checkpoint_every``), unreadable checkpoints, temporary files left by the kill and
    after the restart (0), whether ``metrics.jsonl`` is one monotone history, and whether
    the final weights and every logged loss are bit-identical to an uninterrupted run.
(b) **SIGINT / SIGTERM** at random moments: exit status (130 / 143), steps lost (0: the
    checkpoint holds the last finished step), a traceback on stderr (none), then the
    same continuation and comparison as (a).
(c) **damaged BAIR TFRecords**: files written by :func:`seqvae.data.bair.write_bair_records`
    are damaged (bit flips anywhere, truncation, NaN/Inf/1e38 written into actions or
    end-effector positions with valid CRCs) and read through the test split (with and
    without ``skip_corrupt``), the training stream (in the main process and in a
    DataLoader worker) and ``seqvae train`` on a subset. Reported: clean refusals,
    tracebacks (any other exception; 0), silent NaNs (a non-finite value handed out; 0)
    and silently altered items (0).

Everything runs in a temporary folder, removed afterwards. It prints one table.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqvae.checkpoint import CheckpointError, is_temporary, load_checkpoint  # noqa: E402
from seqvae.cli import main as cli_main  # noqa: E402
from seqvae.data.bair import BairConfig, CorruptRecordError, build_bair, scan_tfrecord, write_bair_records  # noqa: E402
from seqvae.data.loader import batch_stream  # noqa: E402
from seqvae.io import is_atomic_temporary  # noqa: E402

STEPS, CHECKPOINT_EVERY = 100, 10
RUN = {
    "data": {"name": "shapes", "image_size": 16, "train_size": 64, "test_size": 16, "val_size": 8},
    "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": STEPS, "batch_size": 8, "log_every": 1, "eval_every": 0, "eval_batches": 1, "image_every": 0,
              "checkpoint_every": CHECKPOINT_EVERY, "precision": "fp32", "threads": 1},
}


# ------------------------------------------------------------------ training runs
def write_config(folder: Path, run: Path) -> Path:
    raw = json.loads(json.dumps(RUN))
    raw["train"]["out_dir"] = str(run)
    path = folder / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def launch(config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "seqvae.cli", "train", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> float:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{path} never appeared: {proc.communicate()[1]}")
        time.sleep(0.01)
    return time.monotonic()


def train_lines(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("split") == "train":
            out.append(record)
    return out


def temporaries(run: Path) -> list[Path]:
    folders = [run, run / "images"]
    return [p for f in folders if f.is_dir() for p in f.iterdir() if is_temporary(p) or is_atomic_temporary(p)]


def continue_run(config: Path, run: Path) -> int:
    """What a user does next: --resume when the folder holds a run, else start it."""
    has_run = any((run / n).exists() for n in ("checkpoint.pt", "config.yaml", "metrics.jsonl"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli_main(["train", str(config), *(["--resume"] if has_run else [])])


def compare(run: Path, reference: dict) -> dict:
    """Final weights and logged losses against the uninterrupted run; one monotone history."""
    final = load_checkpoint(run / "checkpoint.pt")
    same_weights = final["step"] == reference["step"] and all(
        torch.equal(final["model"][k], v) for k, v in reference["model"].items())
    lines = train_lines(run)
    steps = [r["step"] for r in lines]
    monotone = steps == list(range(1, STEPS + 1))
    same_losses = monotone and [r["loss"] for r in lines] == reference["losses"]
    return {"identical": same_weights and same_losses, "monotone": monotone}


def kill_trials(n: int, folder: Path, rng: random.Random, reference: dict, window: float) -> list[dict]:
    rows = []
    for i in range(n):
        run = folder / f"kill{i}"
        config = write_config(folder, run)
        proc = launch(config)
        wait_for(run / "config.yaml", proc)          # the folder is prepared: training starts now
        time.sleep(rng.uniform(0, window))
        finished_first = proc.poll() is not None
        proc.kill()
        proc.wait()
        done = train_lines(run)[-1]["step"] if train_lines(run) else 0
        try:
            ckpt_step = load_checkpoint(run / "checkpoint.pt")["step"] if (run / "checkpoint.pt").exists() else 0
            corrupt = False
        except CheckpointError:
            ckpt_step, corrupt = 0, True
        left = len(temporaries(run))
        code = continue_run(config, run)
        rows.append({"lost": done - ckpt_step, "corrupt": corrupt, "tmp_after_kill": left,
                     "tmp_after_restart": len(temporaries(run)), "resume_code": code, "finished_first": finished_first,
                     **compare(run, reference)})
    return rows


def signal_trials(n: int, folder: Path, rng: random.Random, reference: dict) -> list[dict]:
    rows = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        for i in range(n):
            run = folder / f"{signal.Signals(signum).name.lower()}{i}"
            config = write_config(folder, run)
            proc = launch(config)
            wait_for(run / "metrics.jsonl", proc)
            target = rng.randint(1, STEPS - 20)
            while proc.poll() is None and len(train_lines(run)) < target:
                time.sleep(0.005)
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=120)
            done = train_lines(run)[-1]["step"]
            ckpt_step = load_checkpoint(run / "checkpoint.pt")["step"]
            code = continue_run(config, run)
            rows.append({"signal": signal.Signals(signum).name, "exit": proc.returncode, "lost": done - ckpt_step,
                         "traceback": "Traceback" in err,
                         "last_line": err.strip().splitlines()[-1] if err.strip() else "",
                         "resume_code": code, **compare(run, reference)})
    return rows


def reference_run(folder: Path) -> tuple[dict, float]:
    run = folder / "reference"
    proc = launch(write_config(folder, run))
    start = wait_for(run / "config.yaml", proc)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed: {err}")
    payload = load_checkpoint(run / "checkpoint.pt")
    return ({"step": payload["step"], "model": payload["model"], "losses": [r["loss"] for r in train_lines(run)]},
            time.monotonic() - start)


# ------------------------------------------------------------------ BAIR records
RECORDS = 3


def base_sequences(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"frames": rng.integers(0, 256, (RECORDS, 30, 64, 64, 3), dtype=np.uint8),
            "actions": rng.standard_normal((RECORDS, 30, 4)).astype(np.float32),
            "eef": rng.standard_normal((RECORDS, 30, 3)).astype(np.float32)}


def mutate(kind: str, original: bytes, seqs: dict, path: Path, rng: random.Random) -> None:
    """Write a damaged copy of the file to ``path``."""
    if kind == "bit flips":
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif kind == "header bit flip":               # the length fields: huge or shifted records
        data = bytearray(original)
        offsets = scan_tfrecord_bytes(original)
        start = rng.choice(offsets)
        data[start + rng.randrange(12)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif kind == "truncation":
        path.write_bytes(original[:rng.randrange(len(original))])
    else:                                          # a value with valid CRCs: NaN, ±Inf, 1e38
        value = {"NaN": np.nan, "Inf": np.inf, "-Inf": -np.inf, "1e38": 1e38}[kind.split()[0]]
        key = "actions" if "action" in kind else "eef"
        arrays = {k: v.copy() for k, v in seqs.items()}
        r, t = rng.randrange(RECORDS), rng.randrange(30)
        arrays[key][r, t, rng.randrange(arrays[key].shape[-1])] = value
        write_bair_records(path, arrays["frames"], arrays["actions"], arrays["eef"])


def scan_tfrecord_bytes(data: bytes) -> list[int]:
    with tempfile.NamedTemporaryFile(suffix=".tfrecords") as f:
        f.write(data)
        f.flush()
        return [int(x) for x in scan_tfrecord(f.name)]


CLEAN = ("every BAIR record was skipped", "no BAIR records in")


def classify(read, seqs: dict, windows: bool) -> tuple[str, list[str]]:
    """Run ``read`` (returns items); 'refused' (a clear error), 'read' (items handed out)
    or 'traceback'; plus problems with the items: 'nan' / 'altered'."""
    problems = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = read()
    except CorruptRecordError as err:
        return ("refused" if err.path is not None and err.index is not None else "traceback"), problems
    except ValueError as err:
        return ("refused" if str(err).startswith(CLEAN) or "yielded no full batch" in str(err)
                else "traceback"), problems
    except Exception as err:  # noqa: BLE001 - anything else reaches the user as a traceback
        return f"traceback ({type(err).__name__}: {str(err)[:80]})", problems
    for item in items:
        values = [item["actions"], item["endeffector_pos"]]
        if not all(torch.isfinite(v).all() for v in values):
            problems.append("nan")
        # the item must be an exact window of one original sequence
        matches = [r for r in range(RECORDS)
                   if any(np.array_equal(item["actions"].numpy(), seqs["actions"][r, s:s + len(item["actions"])])
                          for s in (range(0, 31 - len(item["actions"])) if windows else [0]))]
        if not matches:
            problems.append("altered")
    return "read", problems


def record_trials(n: int, folder: Path, rng: random.Random, cli_every: int) -> list[dict]:
    seqs = base_sequences()
    source = folder / "source.tfrecords"
    write_bair_records(source, seqs["frames"], seqs["actions"], seqs["eef"])
    original = source.read_bytes()
    kinds = ["bit flips", "header bit flip", "truncation"] + [f"{v} {k}" for v in ("NaN", "Inf", "-Inf", "1e38")
                                                               for k in ("action", "endeffector_pos")]
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        root = folder / f"bair{i}"
        for split in ("train", "test"):
            (root / "softmotion30_44k" / split).mkdir(parents=True)
        damaged = root / "softmotion30_44k" / "test" / "traj_0_to_2.tfrecords"
        mutate(kind, original, seqs, damaged, rng)
        shutil.copy(damaged, root / "softmotion30_44k" / "train" / damaged.name)
        outcomes = {}
        for name, read, windows in (
            ("test", lambda: (lambda d: [d[j] for j in range(len(d))])(
                build_bair(BairConfig(root=str(root)), "test")), False),
            ("test skip", lambda: (lambda d: [d[j] for j in range(len(d))])(
                build_bair(BairConfig(root=str(root), skip_corrupt=True), "test")), False),
            ("train", lambda: list(build_bair(BairConfig(root=str(root)), "train")), True),
            ("train skip", lambda: list(build_bair(BairConfig(root=str(root), skip_corrupt=True), "train")), True),
        ):
            outcomes[name] = classify(read, seqs, windows)
        if i % 10 == 0:   # a DataLoader worker re-raises with file and record
            def worker_read():
                stream = batch_stream(build_bair(BairConfig(root=str(root)), "train"), 1, 0, num_workers=1)
                try:
                    return [{k: v[0] for k, v in next(stream).items()} for _ in range(RECORDS)]
                finally:   # shut the worker down now (not in the gc of a later fork)
                    stream.close()
            outcomes["train worker"] = classify(worker_read, seqs, True)
            gc.collect()   # the loader of a refused read sits in a reference cycle: collect it before the next fork
        if cli_every and i % cli_every == 0:
            outcomes["seqvae train"] = cli_outcome(folder, root)
        rows.append({"kind": kind, **{k: v for k, v in outcomes.items()}})
    return rows


def cli_outcome(folder: Path, root: Path) -> tuple[str, list[str]]:
    cfg = {"data": {"name": "bair", "root": str(root), "seq_len": 4, "eval_seq_len": 4},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16,
                     "n_past": 2, "n_future": 2, "n_eval": 2, "action_conditioned": True},
           "likelihood": {"name": "optimal_sigma"},
           "train": {"out_dir": str(root / "run"), "steps": 2, "batch_size": 1, "log_every": 1, "eval_every": 0,
                     "eval_batches": 1, "image_every": 0, "checkpoint_every": 0, "precision": "fp32", "threads": 1}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = cli_main(["train", str(path)])
    except Exception as exc:  # noqa: BLE001
        return f"traceback ({type(exc).__name__})", []
    if "Traceback" in err.getvalue():
        return "traceback", []
    if code == 2:
        return "refused", []
    problems = []
    if code == 0:
        ckpt = load_checkpoint(root / "run" / "checkpoint.pt")
        if not all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point()):
            problems.append("nan")
    return ("read" if code == 0 else f"exit {code}"), problems


# ------------------------------------------------------------------ report
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kill -9 trials")
    p.add_argument("--signals", type=int, default=3, help="trials per signal (SIGINT, SIGTERM)")
    p.add_argument("--mutations", type=int, default=320, help="damaged TFRecord files")
    p.add_argument("--cli-every", type=int, default=16, help="also run `seqvae train` on every N-th damaged file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault_trials_") as tmp:
        folder = Path(tmp)
        reference, window = reference_run(folder)
        kills = kill_trials(args.kills, folder, rng, reference, window)
        signals = signal_trials(args.signals, folder, rng, reference)
        records = record_trials(args.mutations, folder, rng, args.cli_every)
    print(f"\nfault trials (seed {args.seed}, {time.monotonic() - t0:.0f} s): tiny run of {STEPS} steps, "
          f"checkpoint every {CHECKPOINT_EVERY}\n")
    print("| trial | count | result |")
    print("|---|---|---|")
    if kills:
        lost = [r["lost"] for r in kills]
        print(f"| kill -9 at a random moment | {len(kills)} | steps lost max {max(lost)} (≤ {CHECKPOINT_EVERY}), "
              f"mean {np.mean(lost):.1f}; unreadable checkpoints {sum(r['corrupt'] for r in kills)}; "
              f"temp files left by the kill {sum(r['tmp_after_kill'] for r in kills)}, "
              f"after restart {sum(r['tmp_after_restart'] for r in kills)}; "
              f"continued with exit 0: {sum(r['resume_code'] == 0 for r in kills)}/{len(kills)}; monotone metrics "
              f"{sum(r['monotone'] for r in kills)}/{len(kills)}; bit-identical to the uninterrupted run (weights and "
              f"every logged loss) {sum(r['identical'] for r in kills)}/{len(kills)} |")
    for name in ("SIGINT", "SIGTERM"):
        rows = [r for r in signals if r["signal"] == name]
        if rows:
            print(f"| {name} at a random step | {len(rows)} | exit codes {sorted(set(r['exit'] for r in rows))}; "
                  f"steps lost {sorted(set(r['lost'] for r in rows))}; tracebacks {sum(r['traceback'] for r in rows)}; "
                  f"continued with exit 0: {sum(r['resume_code'] == 0 for r in rows)}/{len(rows)}; bit-identical "
                  f"{sum(r['identical'] for r in rows)}/{len(rows)} |")
    if signals:
        print(f"| (last line printed) | | `{signals[0]['last_line']}` |")
    if records:
        paths = list(dict.fromkeys(k for r in records for k in r if k != "kind"))
        reads = [r[k] for r in records for k in paths if k in r]
        tracebacks = [o for o, _ in reads if o.startswith("traceback")]
        print(f"| damaged BAIR TFRecords | {len(records)} files, {len(reads)} reads | "
              f"tracebacks {len(tracebacks)}; silent NaNs {sum('nan' in p for _, p in reads)}; silently altered items "
              f"{sum('altered' in p for _, p in reads)} |")
        for kind in dict.fromkeys(r["kind"] for r in records):
            mine = [r for r in records if r["kind"] == kind]
            counts = {}
            for r in mine:
                for k in paths:
                    if k in r:
                        counts.setdefault(k, {}).setdefault(r[k][0].split(" (")[0], 0)
                        counts[k][r[k][0].split(" (")[0]] += 1
            shown = "; ".join(f"{k}: " + ", ".join(f"{o} {c}" for o, c in sorted(v.items())) for k, v in counts.items())
            print(f"| · {kind} | {len(mine)} | {shown} |")
        for o in sorted(set(tracebacks))[:5]:
            print(f"| traceback | | {o} |")


if __name__ == "__main__":
    main()
