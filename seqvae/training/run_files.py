"""Which files in a run folder are seqvae's: by name (what the trainer writes) and, where a
user may keep a file of the same name, by content. A folder is a seqvae run only if its files
say so: a user's own ``config.yaml`` is not "a run that stopped before its first checkpoint",
and a user's PNG under ``images/`` is not one of the trainer's figures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from seqvae import checkpoint, io

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RUN_RECORD = "run.json"
LOCK = "train.lock"              # held by the one training process writing the folder (seqvae.training.run_lock)
IMAGES = "images"
# what seqvae itself writes into a run folder (a file of one of these names may still be the user's: see below)
OWN_NAMES = {CONFIG, RUN_RECORD, METRICS, CHECKPOINT, LOCK, IMAGES, "tensorboard", "eval", "demo_predictions.mp4",
             "index.html", "report"}
# the files the trainer writes at the top of the folder, replacing one of the same name
WRITTEN = (CONFIG, RUN_RECORD, METRICS, "index.html")
RUN_SECTIONS = ("data", "model", "likelihood", "train")
_MOVED_METRICS = re.compile(r"metrics\.\d{8}-\d{6}(-\d+)?\.jsonl")
_FIGURE = re.compile(r"step_\d{7}_\w+\.(png|mp4)")


def is_own_file(path: Path) -> bool:
    """Whether seqvae writes a file of this name into a run folder (run files, moved-aside
    metrics, temporary files of interrupted writes)."""
    name = path.name
    return name in OWN_NAMES or bool(_MOVED_METRICS.fullmatch(name)) or is_stale_temporary(path)


def is_stale_temporary(path: Path) -> bool:
    """A temporary file of seqvae's writers into a run folder (checkpoint, config, run.json,
    metrics; PNG grids in images/), left behind by a process killed while writing."""
    if path.parent.name == IMAGES:
        return io.is_atomic_temporary(path) and path.name.startswith(".step_")
    return checkpoint.is_temporary(path, CHECKPOINT) or any(
        io.is_atomic_temporary(path, target) for target in (CONFIG, RUN_RECORD, METRICS))


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a config seqvae wrote (the resolved config: a mapping with the
    data, model, likelihood and train sections, the first three naming their component)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (isinstance(raw, dict) and all(isinstance(raw.get(s), dict) for s in RUN_SECTIONS)
            and all(isinstance(raw[s].get("name"), str) for s in RUN_SECTIONS[:3]))


def is_metrics_log(path: Path) -> bool:
    """Whether ``path`` is a metrics log seqvae wrote: every line a JSON object with an integer
    ``step`` and a ``split`` (the last line may be cut short by a kill; an empty log counts)."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return False
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                continue   # the line a kill cut short
            return False
        if not (isinstance(record, dict) and isinstance(record.get("step"), int) and "split" in record):
            return False
    return True


def is_run_record(path: Path) -> bool:
    """Whether ``path`` is the ``run.json`` seqvae writes (device, precision, torch, ...)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(raw, dict) and {"device", "precision", "torch"} <= set(raw)


def run_files(run_dir: Path) -> tuple[list[str], list[str]]:
    """The files that make ``run_dir`` a run that stopped before its first checkpoint
    (``config.yaml``, ``metrics.jsonl``) split into seqvae's and the user's (same name, other
    content): ``(seqvae's, the user's)``."""
    checks = {CONFIG: is_run_config, METRICS: is_metrics_log}
    present = [name for name in checks if (run_dir / name).is_file()]
    return ([n for n in present if checks[n](run_dir / n)], [n for n in present if not checks[n](run_dir / n)])


def foreign_entries(run_dir: Path) -> list[str]:
    """What in ``run_dir`` (which holds no seqvae run) is not seqvae's: files of other names,
    files of seqvae's names whose content is not seqvae's, and what ``images/`` holds besides
    the trainer's figures (``images/NAME``); seqvae's folders count only when empty. Temporary
    files of interrupted writes, the lock file and moved-aside metrics are seqvae's."""
    if not run_dir.is_dir():
        return []
    foreign = []
    for path in sorted(run_dir.iterdir()):
        name = path.name
        if is_stale_temporary(path) or name == LOCK or _MOVED_METRICS.fullmatch(name):
            continue
        if name == IMAGES and path.is_dir():
            foreign += [f"{IMAGES}/{p.name}" for p in sorted(path.iterdir())
                        if not (_FIGURE.fullmatch(p.name) or is_stale_temporary(p))]
        elif path.is_file() and ((name == RUN_RECORD and is_run_record(path))
                                 or (name == METRICS and is_metrics_log(path))):
            continue
        elif name in OWN_NAMES and path.is_dir() and not any(path.iterdir()):
            continue
        else:
            foreign.append(f"{name} (not seqvae's)" if name in OWN_NAMES else name)
    return foreign
