"""A run folder's life cycle before training starts: what the folder holds, and getting it
ready without losing anything (:mod:`seqvae.training` then writes into it; one training
process at a time holds it: :mod:`seqvae.training.run_lock`).

What ``train.out_dir`` may hold when training starts (which files are seqvae's, by name and
content: :mod:`seqvae.training.run_files`):

* nothing (absent, empty, or only seqvae's own files without a run): a **new** run;
* seqvae's ``config.yaml`` / ``metrics.jsonl`` but no ``checkpoint.pt`` — a run that stopped
  before its first checkpoint: it is **restarted** from step 0 (with or without ``--resume``);
  its ``metrics.jsonl`` is moved aside to ``metrics.<date>-<time>.jsonl``, never deleted;
* ``checkpoint.pt``: continued with ``--resume`` only, never overwritten;
* other files (a user's own ``config.yaml`` among them) and no run: refused, unless the caller
  forces it (``seqvae train --force``); then a user's file of a name the trainer writes
  (``config.yaml``, ``run.json``, ``metrics.jsonl``, ``index.html``) is moved aside to
  ``<name>.<date>-<time>.<ext>`` first, and every other file is left alone.

Getting it ready (rank 0, only after a resumed checkpoint has loaded): temporary files left
by interrupted atomic writes are removed; on resume the lines of ``metrics.jsonl`` past
the checkpoint's step are dropped (atomically), so the log stays one monotone history;
``images/`` is created and ``config.yaml`` is written atomically.
"""
from __future__ import annotations

import errno
import json
import time
from pathlib import Path

from seqvae import io
from seqvae.training import run_files
from seqvae.training.run_files import CHECKPOINT, CONFIG, METRICS, RUN_RECORD

NEW, RESTART, RESUME = "new", "restart", "resume"


class RunFolderError(RuntimeError):
    """Refusing to touch a run folder (it holds a previous run or other files, or another
    process trains in it), or unable to write it."""


def check_is_folder(run_dir: Path) -> None:
    """``train.out_dir`` must be a folder, or not exist yet."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"train.out_dir={run_dir} is a file, not a folder; choose another train.out_dir")


def inspect(run_dir: Path, resume: bool, force: bool = False) -> str:
    """Decide what training does with ``run_dir`` (:data:`NEW`, :data:`RESTART` or
    :data:`RESUME`); raise :class:`RunFolderError` when it must not touch it. Writes nothing."""
    check_is_folder(run_dir)
    if (run_dir / CHECKPOINT).exists():
        if not resume:
            raise RunFolderError(
                f"{run_dir} already holds a run (checkpoint.pt). Nothing was overwritten: pass --resume to continue "
                "it, or choose another folder with train.out_dir=..."
            )
        return RESUME
    ours, theirs = run_files.run_files(run_dir)
    if ours and not theirs:
        return RESTART   # it stopped before its first checkpoint: start it afresh (metrics moved aside)
    if resume:
        raise RunFolderError(f"--resume: {run_dir} holds no seqvae run (no checkpoint.pt, and no config.yaml or "
                             "metrics.jsonl written by seqvae); start without --resume, or point train.out_dir at "
                             "the run folder")
    others = run_files.foreign_entries(run_dir)
    if others and not force:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise RunFolderError(
            f"{run_dir} is not empty and holds no seqvae run ({shown}); training writes config.yaml, run.json, "
            "metrics.jsonl, checkpoint.pt and images/ there. Nothing was changed. Choose an empty or new "
            "train.out_dir, or pass --force (train(..., force=True)) to use this folder anyway (your files are kept: "
            "one with a name training writes is renamed to NAME.<date>-<time>.EXT first)"
        )
    return NEW


def prepare(run_dir: Path, kind: str, config_text: str, step: int) -> list[str]:
    """Get ``run_dir`` ready for training from ``step`` (rank 0); returns notes for the user.

    Removes stale temporary files, moves an unfinished run's metrics aside (:data:`RESTART`)
    or drops metric lines past ``step`` (:data:`RESUME`), creates ``images/`` and writes
    ``config.yaml`` atomically. An ``OSError`` (read-only or full disk, a file in the way) is
    a :class:`RunFolderError` naming the path.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        notes = clean(run_dir)
        metrics = run_dir / METRICS
        if kind == RESTART:
            what = ", ".join(name for name in (CONFIG, METRICS) if (run_dir / name).exists())
            note = (f"{run_dir} holds a run that stopped before its first checkpoint ({what}, no checkpoint.pt); "
                    "starting it afresh from step 0")
            if metrics.exists():
                moved = move_aside(metrics)
                note += f"; its metrics were moved to {moved.name} (nothing was deleted)"
            notes.append(note)
        elif kind == NEW:   # a forced folder: the user's files of the names training writes are kept aside
            for name in run_files.WRITTEN:
                path = run_dir / name
                if path.is_file() and not (name == RUN_RECORD and run_files.is_run_record(path)):
                    notes.append(f"{path} is not seqvae's: renamed to {move_aside(path).name} (nothing was deleted)")
        elif kind == RESUME and metrics.exists():
            dropped = trim_metrics(metrics, step)
            if dropped:
                notes.append(f"dropped {dropped} line(s) of {METRICS} past the checkpoint's step {step} "
                             "(they are recomputed now)")
        (run_dir / "images").mkdir(exist_ok=True)
        io.atomic_write_text(run_dir / CONFIG, config_text)
    except OSError as err:
        raise RunFolderError(f"cannot write the run folder {run_dir}: {describe_os_error(err)}") from None
    return notes


def clean(run_dir: Path) -> list[str]:
    """Remove the temporary files of interrupted writes (see :func:`remove_stale_temporaries`);
    returns a note for the user when there were some."""
    removed = remove_stale_temporaries(run_dir)
    if not removed:
        return []
    return [f"removed {len(removed)} temporary file(s) left by an interrupted write: "
            + ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else "")]


def move_aside(path: Path) -> Path:
    """Rename ``NAME.EXT`` (e.g. ``metrics.jsonl``) to ``NAME.<date>-<time>.EXT`` (a free name); return it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}")
        n += 1
    path.rename(target)
    return target


def trim_metrics(path: Path, step: int) -> int:
    """Drop the lines of a metrics JSONL file past ``step`` (and unreadable ones, e.g. a line
    cut by a kill), atomically; return how many were dropped."""
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", step + 1)) <= step and line.endswith("\n")
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
    if len(kept) != len(lines):
        io.atomic_write_text(path, "".join(kept))
    return len(lines) - len(kept)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of interrupted checkpoint and atomic writes in the run
    folder and its ``images/`` (only names seqvae's writers produce); return them."""
    removed = []
    for folder in (run_dir, run_dir / "images"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and run_files.is_stale_temporary(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def describe_os_error(err: OSError) -> str:
    """An ``OSError`` as one sentence with the path and what to do about it."""
    where = f"{err.filename}: " if err.filename else ""
    what = err.strerror or str(err)
    hint = {
        errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
        errno.EDQUOT: "the disk quota is exhausted; free some space or choose a folder on another disk",
        errno.EACCES: "the location is not writable; choose a folder you can write to",
        errno.EPERM: "the location is not writable; choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose a folder on a writable disk",
        errno.EEXIST: "a file is in the way where a folder is needed; choose another path",
        errno.ENOTDIR: "a file is in the way where a folder is needed; choose another path",
        errno.EISDIR: "a folder is in the way where a file is needed; choose another path",
    }.get(err.errno or -1)
    return f"{where}{what}" + (f" ({hint})" if hint else "")
