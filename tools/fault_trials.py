#!/usr/bin/env python
"""Fault trials for issues 11 and 23: what a kill, a signal, a full disk, a second writer, a
foreign folder, a damaged data or weights file, or a misused command costs.

    OMP_NUM_THREADS=1 python tools/fault_trials.py                 # 20 kills, 3 signals each, 320 records, ...
    python tools/fault_trials.py --kills 5 --signals 1 --mutations 60 --seed 1
    python tools/fault_trials.py --cases new --trials 2              # only issue 23's cases

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

Issue 23's cases (``--cases new`` runs only these; ``--trials`` sets their counts):

(d) **SIGINT / SIGTERM to the process group** of a run with two DataLoader workers (a
    terminal's Ctrl-C, ``kill -TERM -- -PGID``): exit status, steps lost, tracebacks, worker
    death messages, workers outliving the trainer (all 0), then ``--resume``.
(e) **a disk that fills up** inside ``torch.save`` after the first checkpoint fitted: on a real
    3 MB tmpfs where the process may mount one, and simulated (the file's writes fail with
    ENOSPC) always: one line saying the disk is full, exit 2, the first checkpoint kept.
(f) **two writers**: a second ``seqvae train`` (the same command, another run, ``--resume``)
    on the folder of a running run: refused in one line naming its pid; the first run goes on
    and its ``metrics.jsonl`` stays its own history.
(g) **foreign folders**: the user's own ``config.yaml``, ``metrics.jsonl``, ``run.json``,
    ``index.html``, a PNG under ``images/``: refused with every byte intact; with ``--force``
    trained with every one of the user's files still there.
(h) **bad exports**: the shipped action model's ``.safetensors`` with a tensor dropped, added
    or resized, through ``load_model``, ``seqvae eval``, ``rollout`` and ``plan``.
(i) **misuse**: planning, rollout and ``--device`` misuse, ``tools/evaluate_pretrained.py`` on
    crafted runs: one line naming the input, exit 2.
(j) **BAIR strict mode with workers** and one corrupt record: the one line and exit 2, nothing
    printed after it.

Everything runs in a temporary folder, removed afterwards. It prints one table.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
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


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def launch(config: Path, *args: str, session: bool = False) -> subprocess.Popen:
    """``seqvae train CONFIG ARGS`` in the background (``session``: as the leader of its own
    process group, as a shell's job is, so that a signal can reach the whole group)."""
    return subprocess.Popen([sys.executable, "-m", "seqvae.cli", "train", str(config), *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=session)


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


# ------------------------------------------------------------------ issue 23: the cases that broke
def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def quiet_cli(argv: list[str]) -> tuple[int | str, str]:
    """``seqvae ARGV`` in this process: its exit status (or the exception that escaped) and stderr."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code: int | str = cli_main(argv)
    except Exception as exc:  # noqa: BLE001 - reaches a user as a traceback
        code = f"traceback ({type(exc).__name__}: {str(exc)[:60]})"
    return code, err.getvalue()


def one_line_refusal(code: int | str, err: str) -> bool:
    return code == 2 and len(stderr_lines(err)) == 1 and "Traceback" not in err


def group_signal_trials(n: int, folder: Path, rng: random.Random) -> list[dict]:
    """(d) SIGINT / SIGTERM to the whole process group of a run with two DataLoader workers."""
    rows = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(signum).name
        for i in range(n):
            run = folder / f"group_{name.lower()}{i}"
            config = write_config(folder, run)
            proc = launch(config, "train.num_workers=2", "train.steps=100000", session=True)
            wait_for(run / "metrics.jsonl", proc)
            target = rng.randint(3, 60)
            while proc.poll() is None and len(train_lines(run)) < target:
                time.sleep(0.005)
            os.killpg(proc.pid, signum)
            _, err = proc.communicate(timeout=120)
            time.sleep(0.5)
            try:
                os.killpg(proc.pid, 0)
                left_behind = True            # a worker outlived its trainer
            except ProcessLookupError:
                left_behind = False
            done = train_lines(run)[-1]["step"]
            ckpt_step = load_checkpoint(run / "checkpoint.pt")["step"]
            code, _ = quiet_cli(["train", str(config), "--resume", f"train.steps={ckpt_step + 3}"])
            noise = "killed by signal" in err or "Exception ignored" in err
            rows.append({"signal": name, "exit": proc.returncode, "lost": done - ckpt_step,
                         "traceback": "Traceback" in err, "noise": noise,
                         "left_behind": left_behind, "last_line": (stderr_lines(err) or [""])[-1], "resume_code": code})
    return rows


class FillingDisk:
    """A file on a disk that fills up after ``room`` bytes (its write raises ENOSPC)."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def full_disk_trials(folder: Path) -> list[dict]:
    """(e) A disk that fills up while a checkpoint is written, after the first checkpoint fitted:
    a real 3 MB tmpfs when this process may mount one, and torch.save writing into a file
    whose disk fills up (simulated) in any case."""
    rows = []
    mount = folder / "tmpfs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            run = mount / "run"
            proc = launch(write_config(folder, run), "model.base_channels=24", "train.steps=40")   # ~2.3 MB each
            _, err = proc.communicate(timeout=300)
            rows.append(disk_row("3 MB tmpfs, ~2.3 MB checkpoints", proc.returncode, err, run))
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)
    run = folder / "simulated_disk"
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(obj["step"])
        return real_save(obj, f if len(saves) == 1 else FillingDisk(f, room=4096), *args, **kwargs)

    torch.save = save
    try:
        code, err = quiet_cli(["train", str(write_config(folder, run)), "train.steps=40"])
    finally:
        torch.save = real_save
    rows.append(disk_row("simulated (torch.save's writes fail with ENOSPC)", code, err, run))
    return rows


def disk_row(mode: str, code, err: str, run: Path) -> dict:
    try:
        kept = load_checkpoint(run / "checkpoint.pt")["step"]
    except (CheckpointError, FileNotFoundError):
        kept = None
    return {"mode": mode, "exit": code, "one_line": one_line_refusal(code, err), "disk_full": "the disk is full" in err,
            "kept_step": kept, "tmp_left": len(temporaries(run)), "last_line": (stderr_lines(err) or [""])[-1]}


WRITER_MODES = {"the same command twice": [], "another run (lr 2e-3)": ["train.lr=0.002"],
                "--resume beside it": ["--resume"]}


def writer_trials(n: int, folder: Path) -> list[dict]:
    """(f) A second ``seqvae train`` on the run folder of a running one."""
    rows = []
    for mode, extra in WRITER_MODES.items():
        for i in range(n):
            run = folder / f"writers_{len(rows)}"
            config = write_config(folder, run)
            first = launch(config, "train.steps=100000")
            wait_for(run / "checkpoint.pt", first)
            second = subprocess.run([sys.executable, "-m", "seqvae.cli", "train", str(config), *extra], env=ENV,
                                    capture_output=True, text=True, timeout=300)
            undisturbed = first.poll() is None
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=120)
            lines = train_lines(run)
            rows.append({"mode": mode, "refused": one_line_refusal(second.returncode, second.stderr)
                         and f"(pid {first.pid})" in second.stderr, "undisturbed": undisturbed,
                         "first_exit": first.returncode,
                         "one_history": [r["step"] for r in lines] == list(range(1, len(lines) + 1))
                         and {r["lr"] for r in lines} == {1e-3},
                         "last_line": (stderr_lines(second.stderr) or [""])[-1]})
    return rows


FOREIGN = {
    "own config.yaml + images/photo.png": {"config.yaml": b"learning_rate: 0.1\nlayers: [64, 64]\n",
                                            "images/photo.png": b"\x89PNG\r\n\x1a\n my photo"},
    "another tool's metrics.jsonl": {"metrics.jsonl": b'{"epoch": 1, "acc": 0.5}\n'},
    "own run.json + index.html": {"run.json": b'{"name": "mine"}', "index.html": b"<html>my page</html>"},
    "seqvae-looking config.yaml without names": {"config.yaml": b"data: {}\nmodel: {}\nlikelihood: {}\ntrain: {}\n"},
}


def foreign_folder_trials(folder: Path) -> list[dict]:
    """(g) A folder of the user's own files, some named like seqvae's: refused, every byte kept;
    with --force trained, every file of the user's still in the folder."""
    rows = []
    for i, (what, files) in enumerate(FOREIGN.items()):
        run = folder / f"foreign{i}"
        for name, data in files.items():
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_bytes(data)
        config = write_config(folder, run)
        code, err = quiet_cli(["train", str(config), "train.steps=3"])
        intact = all((run / name).read_bytes() == data for name, data in files.items())
        untouched = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == sorted(files)
        forced, _ = quiet_cli(["train", str(config), "train.steps=3", "--force"])
        contents = [p.read_bytes() for p in run.rglob("*") if p.is_file()]
        rows.append({"what": what, "refused": one_line_refusal(code, err) and "holds no seqvae run" in err,
                     "intact": intact and untouched, "forced_exit": forced,
                     "kept_when_forced": all(data in contents for data in files.values())})
    return rows


def bad_export_trials(folder: Path) -> list[dict]:
    """(h) The shipped action model's .safetensors with a tensor dropped, added or resized,
    through load_model, seqvae eval, rollout and plan."""
    from safetensors.torch import load_file, safe_open, save_file

    from seqvae import pretrained
    from seqvae.loading import load_model

    source = pretrained.HERE / pretrained.info("pusher-actions").file
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(source))
    name = next(k for k in sorted(tensors) if tensors[k].dim() == 2)
    edits = {"a tensor dropped": {k: v for k, v in tensors.items() if k != name},
             "a tensor added": {**tensors, "extra.weight": torch.zeros(3)},
             "a tensor resized": {**tensors, name: torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])}}
    rows = []
    for what, edited in edits.items():
        path = folder / f"edited_{len(rows)}.safetensors"
        save_file(edited, str(path), metadata=metadata)
        try:
            load_model(path)
            api = "loaded"
        except pretrained.PretrainedError as err:
            api = "clear" if "do not fit" in str(err) else "other"
        except Exception as err:  # noqa: BLE001
            api = f"traceback ({type(err).__name__})"
        outcomes = {}
        for command in (["eval", str(path)], ["rollout", str(path), "--index", "0", "--out", str(folder / "ro")],
                        ["plan", f"checkpoint={path}", "plan.episodes=1", f"out_dir={folder / 'plan'}"]):
            code, err = quiet_cli(command)
            outcomes[command[0]] = one_line_refusal(code, err) and "do not fit" in err
        rows.append({"what": what, "load_model": api, **outcomes})
    return rows


def misuse_trials(folder: Path) -> list[dict]:
    """(i) Planning, rollout and device misuse, and tools/evaluate_pretrained.py on crafted runs:
    each must be one line naming the input, exit 2."""
    image_run = folder / "image_run"
    quiet_cli(["train", str(write_config(folder, image_run)), "train.steps=2"])
    notes = folder / "notes.txt"
    notes.write_text("my notes\n")
    rollout = ["rollout", "--pretrained", "pusher-actions", "--index", "0", "--out", str(folder / "misuse")]
    cases = {
        "plan plan.episodes=0": ["plan", "pretrained=pusher-actions", "plan.episodes=0"],
        "plan plan.episodes=-1": ["plan", "pretrained=pusher-actions", "plan.episodes=-1"],
        "plan checkpoint=<image run>": ["plan", f"checkpoint={image_run}"],
        "plan threads=-1": ["plan", "pretrained=pusher-actions", "threads=-1"],
        "rollout --horizon 0": [*rollout, "--horizon", "0"],
        "rollout --horizon -3": [*rollout, "--horizon", "-3"],
        "rollout --start -5": [*rollout, "--start", "-5"],
        "rollout --samples 0": [*rollout, "--samples", "0"],
        "rollout --actions <text file>": [*rollout, "--actions", str(notes)],
        "rollout --actions <checkpoint>": [*rollout, "--actions", str(image_run / "checkpoint.pt")],
        "rollout --video <text file>": [*rollout[:3], "--video", str(notes)],
        "rollout <image run>": ["rollout", str(image_run), "--index", "0"],
        "rollout --device gpu": [*rollout, "--device", "gpu"],
    }
    if not torch.cuda.is_available():   # cuda where there is none
        cases.update({f"{c} --device cuda": [c, str(image_run), "--device", "cuda"]
                      for c in ("eval", "sample", "analyze")})
        cases["rollout --device cuda"] = [*rollout, "--device", "cuda"]
        cases["plan device=cuda"] = ["plan", "pretrained=pusher-actions", "device=cuda"]
    rows = []
    for what, argv in cases.items():
        code, err = quiet_cli(argv)
        rows.append({"what": what, "ok": one_line_refusal(code, err), "outcome": code,
                     "last_line": (stderr_lines(err) or [""])[-1]})
    crafted = folder / "crafted_run"
    crafted.mkdir()
    torch.save({"format": "seqvae", "version": 1, "step": 0, "model": {}, "config": CraftedCode(folder / "ran")},
               crafted / "checkpoint.pt")
    (folder / "empty.pt").write_bytes(b"")
    for what, target in (("evaluate_pretrained <crafted run>", crafted), ("evaluate_pretrained <empty .pt>",
                                                                          folder / "empty.pt"),
                         ("evaluate_pretrained <image run>", image_run)):
        done = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_pretrained.py"), str(target),
                               "--episodes", "0"], env=ENV, capture_output=True, text=True, timeout=300)
        rows.append({"what": what, "ok": one_line_refusal(done.returncode, done.stderr)
                     and not (folder / "ran").exists(), "outcome": done.returncode,
                     "last_line": (stderr_lines(done.stderr) or [""])[-1]})
    return rows


class CraftedCode:
    """A pickled object that would run a command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bair_worker_trials(n: int, folder: Path) -> list[dict]:
    """(j) BAIR strict mode, two DataLoader workers, one record failing its CRC: the one line and
    exit 2, and nothing after it (no worker killed at exit)."""
    seqs = base_sequences()
    root = folder / "bair_workers"
    for split in ("train", "test"):
        (root / "softmotion30_44k" / split).mkdir(parents=True)
        write_bair_records(root / "softmotion30_44k" / split / "traj_0_to_2.tfrecords", seqs["frames"],
                           seqs["actions"], seqs["eef"])
    damaged = root / "softmotion30_44k" / "train" / "traj_0_to_2.tfrecords"
    data = bytearray(damaged.read_bytes())
    data[scan_tfrecord_bytes(bytes(data))[1] + 5000] ^= 0xFF      # inside record 1's data: its CRC fails
    damaged.write_bytes(bytes(data))
    cli_outcome(folder, root)                                       # writes root/cfg.yaml (num_workers 0)
    rows = []
    for i in range(n):
        shutil.rmtree(root / "run", ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "seqvae.cli", "train", str(root / "cfg.yaml"),
                               "train.num_workers=2", "train.steps=20"], env=ENV, capture_output=True, text=True,
                              timeout=300)
        rows.append({"exit": done.returncode, "one_line": one_line_refusal(done.returncode, done.stderr),
                     "noise": "Exception ignored" in done.stderr or "killed by signal" in done.stderr,
                     "last_line": (stderr_lines(done.stderr) or [""])[-1]})
    return rows


def report_issue23(group, disks, writers, foreign, exports, misuse, bair) -> None:
    for name in ("SIGINT", "SIGTERM"):
        rows = [r for r in group if r["signal"] == name]
        if rows:
            print(f"| {name} to the process group, 2 DataLoader workers | {len(rows)} | exit codes "
                  f"{sorted(set(r['exit'] for r in rows))}; steps lost {sorted(set(r['lost'] for r in rows))}; "
                  f"tracebacks {sum(r['traceback'] for r in rows)}; worker-death messages "
                  f"{sum(r['noise'] for r in rows)}; workers left behind {sum(r['left_behind'] for r in rows)}; "
                  f"resumed with exit 0: {sum(r['resume_code'] == 0 for r in rows)}/{len(rows)} |")
    if group:
        print(f"| (last line printed) | | `{group[-1]['last_line']}` |")
    for r in disks:
        print(f"| disk full during a checkpoint: {r['mode']} | 1 | exit {r['exit']}; one line {r['one_line']}; "
              f"says the disk is full {r['disk_full']}; checkpoint kept at step {r['kept_step']} "
              f"(the first, {CHECKPOINT_EVERY}); temporary files left {r['tmp_left']} |")
    if disks:
        print(f"| (last line printed) | | `{disks[-1]['last_line']}` |")
    for mode in WRITER_MODES:
        rows = [r for r in writers if r["mode"] == mode]
        if rows:
            print(f"| second train on a running run: {mode} | {len(rows)} | refused in one line naming the pid "
                  f"{sum(r['refused'] for r in rows)}/{len(rows)}; first run undisturbed "
                  f"{sum(r['undisturbed'] for r in rows)}/{len(rows)}, its exit codes "
                  f"{sorted(set(r['first_exit'] for r in rows))}; metrics one run's history "
                  f"{sum(r['one_history'] for r in rows)}/{len(rows)} |")
    if writers:
        print(f"| (last line printed) | | `{writers[-1]['last_line']}` |")
    for r in foreign:
        print(f"| foreign folder: {r['what']} | 1 | refused in one line {r['refused']}; every byte intact "
              f"{r['intact']}; --force exit {r['forced_exit']}, the user's files kept {r['kept_when_forced']} |")
    for r in exports:
        print(f"| exported .safetensors with {r['what']} | 1 | load_model: {r['load_model']}; one line, exit 2: "
              f"eval {r['eval']}, rollout {r['rollout']}, plan {r['plan']} |")
    if misuse:
        bad = [r for r in misuse if not r["ok"]]
        print(f"| planning / rollout / device misuse, evaluate_pretrained on crafted runs | {len(misuse)} | one line "
              f"and exit 2: {len(misuse) - len(bad)}/{len(misuse)}"
              + (f"; not: {', '.join(r['what'] + ' (' + str(r['outcome']) + ')' for r in bad)}" if bad else "") + " |")
    if bair:
        print(f"| BAIR strict mode, 2 workers, one corrupt record | {len(bair)} | exit codes "
              f"{sorted(set(r['exit'] for r in bair))}; one line {sum(r['one_line'] for r in bair)}/{len(bair)}; "
              f"worker-death messages after it {sum(r['noise'] for r in bair)} |")
        print(f"| (last line printed) | | `{bair[-1]['last_line'][:160]}` |")


# ------------------------------------------------------------------ report
CASES = ("kills", "signals", "records", "group-signals", "full-disk", "writers", "foreign", "exports", "misuse",
         "bair-workers")
ISSUE_23 = CASES[3:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kill -9 trials")
    p.add_argument("--signals", type=int, default=3, help="trials per signal (SIGINT, SIGTERM)")
    p.add_argument("--mutations", type=int, default=320, help="damaged TFRecord files")
    p.add_argument("--cli-every", type=int, default=16, help="also run `seqvae train` on every N-th damaged file")
    p.add_argument("--trials", type=int, default=3, help="issue 23 cases: trials per signal to the process group, "
                                                         "per second-writer mode, and BAIR runs with workers")
    p.add_argument("--cases", default="all", help=f"comma-separated, of {', '.join(CASES)}; 'all', or 'new' "
                                                  f"(issue 23: {', '.join(ISSUE_23)})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    chosen = set(CASES if args.cases == "all" else ISSUE_23 if args.cases == "new" else args.cases.split(","))
    if chosen - set(CASES):
        p.error(f"unknown cases {', '.join(sorted(chosen - set(CASES)))}; choose from {', '.join(CASES)}")
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault_trials_") as tmp:
        folder = Path(tmp)
        kills = signals = records = []
        if chosen & {"kills", "signals"}:
            reference, window = reference_run(folder)
            kills = kill_trials(args.kills, folder, rng, reference, window) if "kills" in chosen else []
            signals = signal_trials(args.signals, folder, rng, reference) if "signals" in chosen else []
        records = record_trials(args.mutations, folder, rng, args.cli_every) if "records" in chosen else []
        group = group_signal_trials(args.trials, folder, rng) if "group-signals" in chosen else []
        disks = full_disk_trials(folder) if "full-disk" in chosen else []
        writers = writer_trials(args.trials, folder) if "writers" in chosen else []
        foreign = foreign_folder_trials(folder) if "foreign" in chosen else []
        exports = bad_export_trials(folder) if "exports" in chosen else []
        misuse = misuse_trials(folder) if "misuse" in chosen else []
        bair = bair_worker_trials(args.trials, folder) if "bair-workers" in chosen else []
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
    report_issue23(group, disks, writers, foreign, exports, misuse, bair)


if __name__ == "__main__":
    main()
