"""BAIR robot pushing, read straight from the original TFRecords (no TensorFlow).

Source: ``bair_robot_pushing_dataset_v0.tar`` (Ebert et al. 2017), the data set of
SVG-LP (Denton & Fergus 2018, §4). Fetch it with ``python tools/download_bair.py``;
``datasets/bair/README.md`` describes the layout and every rule below.

On disk::

    <root>/softmotion30_44k/train/*.tfrecords   # 30-step sequences, one per record
    <root>/softmotion30_44k/test/*.tfrecords

Each record is a ``tf.train.Example`` with, for t = 0..29,
``"{t}/image_aux1/encoded"`` (64·64·3 raw uint8 bytes, HWC), ``"{t}/action"`` (4 floats)
and ``"{t}/endeffector_pos"`` (3 floats). An item (see :mod:`seqvae.data.spec`) is::

    {"frames": uint8 [T, 3, 64, 64], "actions": float32 [T, 4], "endeffector_pos": float32 [T, 3]}

Splits
------
* ``train``: :class:`BairTrainDataset`, an ``IterableDataset``. Every epoch the records
  of all training files are permuted from ``(seed, epoch)``; the permuted list is dealt
  to DDP ranks (``perm[rank::world]``) and then to DataLoader workers
  (``mine[worker::workers]``), so each sequence is yielded exactly once per epoch
  whatever the number of files, ranks or workers (ranks differ by at most one
  sequence). With ``random_windows`` each sequence yields one window of ``seq_len``
  consecutive steps whose start is drawn from ``(seed, epoch, record id)`` — the same
  whatever the sharding. Call :meth:`BairTrainDataset.set_epoch` before each epoch.
* ``val``: the last ``round(val_fraction · #train files)`` training files (files sorted
  by the numbers in their names); ``train`` then excludes them. Off by default.
* ``test`` / ``val``: :class:`BairEvalDataset`, map-style, in file order, every sequence
  from step 0 with ``eval_seq_len`` steps.

Records are located by scanning their 12-byte headers once (an in-memory index of byte
offsets); each read checks the record's CRC32C, and every action and end-effector value
must be finite and of plausible size (``|x| <= MAX_ABS_VALUE``: a bit flip in a float's
exponent makes 1e38, which the model turns into Inf/NaN). A truncated or corrupt record
raises :class:`CorruptRecordError` naming the file and record index (also when raised in a
DataLoader worker), or with ``skip_corrupt=True`` is skipped with a warning naming them.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from seqvae.data.bair_records import (  # noqa: F401  (the record layer, re-exported for users and tools)
    ACTION_DIM,
    CHANNELS,
    DOWNLOAD_SCRIPT,
    EEF_DIM,
    FRAME_BYTES,
    HEIGHT,
    MAX_ABS_VALUE,
    STEPS,
    SUBDIR,
    WIDTH,
    CorruptRecordError,
    decode_example,
    masked_crc32c,
    read_record,
    scan_tfrecord,
    write_bair_records,
)
from seqvae.data.spec import DataSpec
from seqvae.registry import DATASETS, ComponentConfig


# ---------------------------------------------------------------------- config
@dataclass
class BairConfig(ComponentConfig):
    """BAIR robot pushing from the original TFRecords (``datasets/bair/README.md``)."""

    name: str = "bair"
    root: str = "datasets/bair"      # holds softmotion30_44k/{train,test}/*.tfrecords
    seq_len: int = 12                # training frames per example (SVG: 2 past + 10 future)
    eval_seq_len: int = 30           # val/test frames per example, from step 0 (SVG evaluates 2 + 28)
    val_fraction: float = 0.0        # hold out the last round(f * #files) train files as "val" (0: no val split)
    random_windows: bool = True      # train: random window of seq_len steps per sequence (False: steps 0..seq_len-1)
    skip_corrupt: bool = False       # skip truncated/corrupt records with a warning instead of raising
    seed: int = 0                    # shuffling and window seed; epoch e uses (seed, e)

    def __post_init__(self) -> None:
        _check_len(self.seq_len, "data.seq_len")
        _check_len(self.eval_seq_len, "data.eval_seq_len")


@DATASETS.register("bair", BairConfig)
def build_bair(cfg: BairConfig, split: str) -> Dataset:
    """Build the ``train`` (iterable), ``val`` or ``test`` (map-style) BAIR data set."""
    files = bair_files(cfg.root, split, cfg.val_fraction)
    if split == "train":
        return BairTrainDataset(files, cfg.seq_len, random_windows=cfg.random_windows,
                                seed=cfg.seed, skip_corrupt=cfg.skip_corrupt)
    return BairEvalDataset(files, cfg.eval_seq_len, skip_corrupt=cfg.skip_corrupt)


# ----------------------------------------------------------------------- files
def _natural_key(path: Path) -> list:
    """Sort ``traj_256_to_511`` before ``traj_1024_to_1279`` (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def bair_files(root: str | os.PathLike, split: str, val_fraction: float = 0.0) -> list[Path]:
    """The sorted ``.tfrecords`` files of ``split`` ("train", "val" or "test").

    The validation split is the last ``max(1, round(val_fraction · n))`` of the ``n``
    training files in natural order; ``train`` excludes them.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"BAIR split must be 'train', 'val' or 'test', got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    folder = Path(root) / SUBDIR / ("test" if split == "test" else "train")
    files = sorted(folder.glob("*.tfrecords"), key=_natural_key) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"BAIR {split} data not found: no *.tfrecords in {folder.resolve()} "
            f"(data root {Path(root).resolve()}). Download and extract it with:\n"
            f"    python {DOWNLOAD_SCRIPT} --root {root}\n"
            f"or set data.root to the folder that holds {SUBDIR}/."
        )
    if split == "test":
        return files
    n_val = max(1, round(val_fraction * len(files))) if val_fraction > 0 else 0
    if split == "val" and n_val == 0:
        raise ValueError("BAIR has no validation split with data.val_fraction=0; "
                         "set e.g. data.val_fraction=0.02 to hold out the last train files")
    if n_val >= len(files):
        raise ValueError(f"data.val_fraction={val_fraction} would hold out {n_val} of the {len(files)} "
                         f"training files in {folder}, leaving none to train on; lower it")
    return files[len(files) - n_val:] if split == "val" else files[:len(files) - n_val]


# ------------------------------------------------------------------- data sets
def _check_len(value: int, what: str) -> None:
    if not 1 <= value <= STEPS:
        raise ValueError(f"{what} must be between 1 and {STEPS} (BAIR sequences have {STEPS} steps), got {value}")


class _RecordIndex:
    """Every record of a list of files as (file number, byte offset), in file order."""

    def __init__(self, files: Sequence[str | os.PathLike], skip_corrupt: bool) -> None:
        self.files = [Path(f) for f in files]
        per_file = [scan_tfrecord(f, skip_corrupt) for f in self.files]
        self.file_of = np.concatenate([np.full(len(o), i, np.int64) for i, o in enumerate(per_file)]
                                      or [np.zeros(0, np.int64)])
        self.offset = np.concatenate(per_file or [np.zeros(0, np.int64)])
        self.record_in_file = np.concatenate([np.arange(len(o)) for o in per_file] or [np.zeros(0, np.int64)])

    def __len__(self) -> int:
        return len(self.offset)

    def where(self, i: int) -> tuple[Path, int, int]:
        """(file, byte offset, record index within the file) of record ``i``."""
        return self.files[int(self.file_of[i])], int(self.offset[i]), int(self.record_in_file[i])


class _Handles:
    """A few open files, least recently used closed first (opened lazily, so fork-safe)."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self.open: OrderedDict[Path, BinaryIO] = OrderedDict()

    def get(self, path: Path) -> BinaryIO:
        if path in self.open:
            self.open.move_to_end(path)
            return self.open[path]
        if len(self.open) >= self.limit:
            self.open.popitem(last=False)[1].close()
        f = self.open[path] = open(path, "rb")
        return f

    def close(self) -> None:
        while self.open:
            self.open.popitem()[1].close()


def _read_item(handles: _Handles, index: _RecordIndex, i: int, start: int, length: int) -> dict[str, Tensor]:
    path, offset, rec = index.where(i)
    return decode_example(read_record(handles.get(path), path, offset, rec), path, rec, start, length)


def _warn_skip(err: CorruptRecordError) -> None:
    warnings.warn(f"skipping {err.brief}", stacklevel=3)


def _nothing_readable(files: Sequence[Path], skip_corrupt: bool, located: int) -> ValueError:
    """The error for a split with no usable record."""
    names = ", ".join(str(f) for f in files)
    if skip_corrupt:
        return ValueError(
            f"every BAIR record was skipped as corrupt ({located} located in {len(files)} file(s): {names}; "
            "data.skip_corrupt=true, the warnings name each one), so nothing is left. Re-extract the files from the "
            f"tar (python {DOWNLOAD_SCRIPT} --root <root>)")
    return ValueError(f"no BAIR records in {names}: the files are empty")


class BairTrainDataset(IterableDataset):
    """Training sequences: each record once per epoch, shuffled from ``(seed, epoch)``.

    Sharding: the epoch's permutation of all records is dealt to DDP ranks
    (``perm[rank::world]``) and then to DataLoader workers (``mine[worker::workers]``).
    ``rank``/``world_size`` default to ``torch.distributed`` when it is initialized.
    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); with
    ``persistent_workers=True`` the workers keep the epoch they started with.
    """

    def __init__(self, files: Sequence[str | os.PathLike], seq_len: int = 12, *, random_windows: bool = True,
                 seed: int = 0, skip_corrupt: bool = False, rank: int | None = None,
                 world_size: int | None = None) -> None:
        _check_len(seq_len, "data.seq_len")
        self.index = _RecordIndex(files, skip_corrupt)
        if len(self.index) == 0:
            raise _nothing_readable(self.index.files, skip_corrupt, 0)
        self.seq_len = seq_len
        self.random_windows = random_windows
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        self.epoch = 0
        self._rank, self._world = rank, world_size
        self.spec = DataSpec(CHANNELS, HEIGHT, WIDTH, seq_len, action_dim=ACTION_DIM)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle and windows of ``epoch`` for the next iteration."""
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        if self._world is not None:
            rank, world = (self._rank or 0), self._world
        elif dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world size {world}")
        return rank, world

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """Record numbers (into the file-ordered index) of this epoch, before sharding."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.index))

    def shard(self, epoch: int | None = None, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """The record numbers this rank's ``worker`` yields in ``epoch``, in order."""
        rank, world = self._rank_world()
        return self.epoch_order(epoch)[rank::world][worker::num_workers]

    def window_start(self, record: int, epoch: int | None = None) -> int:
        """First step of the window of ``record`` in ``epoch`` (independent of sharding)."""
        if not self.random_windows or self.seq_len == STEPS:
            return 0
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, int(record)])
        return int(rng.integers(0, STEPS - self.seq_len + 1))

    def __len__(self) -> int:
        """Sequences this rank yields per epoch (all workers together; fewer if records are skipped)."""
        rank, world = self._rank_world()
        return len(range(rank, len(self.index), world))

    def why_empty(self, batch_size: int) -> str:
        """Why an epoch gave no full batch (asked by the loader): reads this rank's records
        until ``batch_size`` readable ones are found."""
        records = self.shard(self.epoch)
        good, handles = 0, _Handles()
        try:
            for i in records:
                try:
                    _read_item(handles, self.index, i, 0, STEPS)
                    good += 1
                except CorruptRecordError:
                    continue
                if good >= batch_size:
                    break
        finally:
            handles.close()
        if good == 0 and self.skip_corrupt:
            return str(_nothing_readable(self.index.files, True, len(records)))
        return (f"only {good} of this process's {len(records)} BAIR records are readable, fewer than one batch; "
                "lower train.batch_size or add data")

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        handles = _Handles()
        try:
            for i in self.shard(epoch, worker, workers):
                try:
                    yield _read_item(handles, self.index, i, self.window_start(i, epoch), self.seq_len)
                except CorruptRecordError as err:
                    if not self.skip_corrupt:
                        raise
                    _warn_skip(err)
        finally:
            handles.close()


class BairEvalDataset(Dataset):
    """Validation/test sequences in file order, each from step 0 with ``seq_len`` steps.

    With ``skip_corrupt`` every record is read and checked once here, and the broken
    ones are left out of the index (with a warning); otherwise a broken record raises
    when it is fetched.
    """

    def __init__(self, files: Sequence[str | os.PathLike], seq_len: int = 30, *, skip_corrupt: bool = False) -> None:
        _check_len(seq_len, "data.eval_seq_len")
        self.index = _RecordIndex(files, skip_corrupt)
        self.seq_len = seq_len
        self._handles: _Handles | None = None
        self._pid = -1
        self.records = np.arange(len(self.index))
        if skip_corrupt:
            good = []
            for i in self.records:
                try:
                    _read_item(self._get_handles(), self.index, i, 0, seq_len)
                    good.append(i)
                except CorruptRecordError as err:
                    _warn_skip(err)
            self.records = np.asarray(good, dtype=np.int64)
            self._close()
        if len(self.records) == 0:
            raise _nothing_readable(self.index.files, skip_corrupt, len(self.index))
        self.spec = DataSpec(CHANNELS, HEIGHT, WIDTH, seq_len, action_dim=ACTION_DIM)

    def _get_handles(self) -> _Handles:
        if self._handles is None or self._pid != os.getpid():  # a forked worker opens its own files
            self._handles, self._pid = _Handles(), os.getpid()
        return self._handles

    def _close(self) -> None:
        if self._handles is not None:
            self._handles.close()
            self._handles = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = None, -1  # open files do not travel to spawned workers
        return state

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"BAIR index {i} out of range for {len(self)} sequences")
        return _read_item(self._get_handles(), self.index, int(self.records[i]), 0, self.seq_len)

    def location(self, i: int) -> tuple[Path, int]:
        """(file, record index within it) of item ``i``."""
        path, _, rec = self.index.where(int(self.records[i]))
        return path, rec
