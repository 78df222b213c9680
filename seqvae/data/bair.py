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
import struct
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import crc32c
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from seqvae.registry import ComponentConfig
from seqvae.data.spec import DataSpec
from seqvae.registry import DATASETS

STEPS = 30                      # steps per recorded sequence
HEIGHT = WIDTH = 64
CHANNELS = 3
ACTION_DIM = 4
EEF_DIM = 3
FRAME_BYTES = HEIGHT * WIDTH * CHANNELS
SUBDIR = "softmotion30_44k"
IMAGE_KEY = "{t}/image_aux1/encoded"
ACTION_KEY = "{t}/action"
EEF_KEY = "{t}/endeffector_pos"
DOWNLOAD_SCRIPT = "tools/download_bair.py"

_KEYS = [(IMAGE_KEY.format(t=t), ACTION_KEY.format(t=t), EEF_KEY.format(t=t)) for t in range(STEPS)]
MAX_ABS_VALUE = 1e6             # larger actions / end-effector positions are corrupt (real ones are below ~10)
_HEADER = 12                    # uint64 length + uint32 masked CRC of the length
_FOOTER = 4                     # uint32 masked CRC of the data
_CRC_MASK = 0xA282EAD8


class CorruptRecordError(ValueError):
    """A TFRecord is truncated or malformed; the message names the file and record index
    (``path``, ``index``).

    It pickles with its fields, and keeps them when a DataLoader worker raised it: torch
    re-raises a worker's error as ``CorruptRecordError(<formatted traceback>)``, from which
    the original message and fields are recovered.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, index: int | None = None,
                 brief: str | None = None) -> None:
        if path is None and index is None:
            message, path, index, brief = _from_worker(message)
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.index = index
        self.brief = brief or message   # the message without the advice, for warnings

    def __reduce__(self):
        return type(self), (str(self), self.path, self.index, self.brief)


_ADVICE = (". Re-extract the file from the tar (python {script} --root <root>) or set data.skip_corrupt=true to "
           "skip such records")
_BRIEF = re.compile(r"corrupt BAIR TFRecord (?P<path>.+?), record (?P<index>\d+): .*")


def _from_worker(message: str) -> tuple[str, str | None, int | None, str | None]:
    """(message, path, index, brief) of a CorruptRecordError from its own message, or from
    torch's ``Caught CorruptRecordError in DataLoader worker process N ...`` wrapping of it."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        lines = [line for line in message.splitlines() if "CorruptRecordError: " in line]
        if lines:
            message = lines[-1].split("CorruptRecordError: ", 1)[1].strip()
    advice = _ADVICE.format(script=DOWNLOAD_SCRIPT)
    brief = message[:-len(advice)] if message.endswith(advice) else message
    match = _BRIEF.fullmatch(brief)
    if match is None:
        return message, None, None, None
    return message, match["path"], int(match["index"]), brief


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


# --------------------------------------------------------------------- records
def masked_crc32c(data: bytes | memoryview) -> int:
    """The masked CRC32C that TFRecord stores after the length and after the data."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK) & 0xFFFFFFFF


def _problem(path: Path, index: int, what: str) -> CorruptRecordError:
    brief = f"corrupt BAIR TFRecord {path}, record {index}: {' '.join(what.split())}"
    return CorruptRecordError(brief + _ADVICE.format(script=DOWNLOAD_SCRIPT), path, index, brief)


def scan_tfrecord(path: str | os.PathLike, skip_corrupt: bool = False) -> np.ndarray:
    """Byte offsets of the records of one TFRecord file, read from their 12-byte headers.

    A truncated record or a header whose CRC fails raises :class:`CorruptRecordError`;
    with ``skip_corrupt`` it ends the scan with a warning (the records after a bad
    header cannot be located) and the records before it are kept.
    """
    path = Path(path)
    size = path.stat().st_size
    offsets: list[int] = []
    with open(path, "rb", buffering=0) as f:
        offset = 0
        while offset < size:
            index = len(offsets)
            f.seek(offset)
            header = f.read(_HEADER)
            problem = None
            if len(header) < _HEADER:
                problem = f"file ends inside the record header ({len(header)} of {_HEADER} bytes)"
            else:
                (length,) = struct.unpack("<Q", header[:8])
                if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
                    problem = "length header fails its CRC check"
                elif offset + _HEADER + length + _FOOTER > size:
                    problem = (f"truncated: the record needs {_HEADER + length + _FOOTER} bytes but the file "
                               f"has {size - offset} left")
            if problem is not None:
                error = _problem(path, index, problem)
                if not skip_corrupt:
                    raise error
                warnings.warn(f"{error.brief}; skipping it and the rest of the "
                              f"file ({index} records kept)", stacklevel=2)
                break
            offsets.append(offset)
            offset += _HEADER + length + _FOOTER
    return np.asarray(offsets, dtype=np.int64)


def read_record(f: BinaryIO, path: Path, offset: int, index: int) -> bytes:
    """The data of the record at ``offset``, its length and data CRCs checked."""
    f.seek(offset)
    header = f.read(_HEADER)
    if len(header) < _HEADER:
        raise _problem(path, index, "file ends inside the record header")
    (length,) = struct.unpack("<Q", header[:8])
    if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
        raise _problem(path, index, "length header fails its CRC check")
    body = f.read(length + _FOOTER)
    if len(body) < length + _FOOTER:
        raise _problem(path, index, f"truncated: {len(body)} of {length + _FOOTER} bytes present")
    data = body[:length]
    if masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
        raise _problem(path, index, "data fails its CRC check")
    return data


def decode_example(data: bytes, path: Path, index: int, start: int = 0, length: int = STEPS) -> dict[str, Tensor]:
    """Decode steps ``start .. start+length-1`` of one serialized BAIR example.

    All 30 steps are checked (present, right type and size) so that a broken record
    fails whichever window is asked for.
    """
    from tfrecord import example_pb2  # protobuf classes shipped with the tfrecord package

    try:
        example = example_pb2.Example.FromString(data)
    except Exception as err:  # protobuf's DecodeError
        raise _problem(path, index, f"not a tf.train.Example ({err})") from None
    feature = example.features.feature
    images, actions, eefs = [], [], []
    for t, names in enumerate(_KEYS):
        for name, kind, size, out in zip(names, ("bytes_list", "float_list", "float_list"),
                                         (FRAME_BYTES, ACTION_DIM, EEF_DIM), (images, actions, eefs)):
            if name not in feature:
                raise _problem(path, index, f"feature {name!r} is missing")
            values = getattr(feature[name], kind).value
            if kind == "bytes_list":
                got = len(values[0]) if len(values) == 1 else None
                if got != size:
                    what = f"{got} bytes" if got is not None else f"{len(values)} byte strings"
                    raise _problem(path, index, f"feature {name!r} has {what}, expected one {HEIGHT}x{WIDTH}x"
                                                f"{CHANNELS} uint8 image of {size} bytes")
                if start <= t < start + length:
                    out.append(values[0])
            else:
                if len(values) != size:
                    raise _problem(path, index, f"feature {name!r} has {len(values)} floats, expected {size}")
                out.append(list(values))   # every step: all are checked below
    window = slice(start, start + length)
    arrays = {}
    for key, name, values in (("actions", ACTION_KEY, actions), ("endeffector_pos", EEF_KEY, eefs)):
        array = np.asarray(values, dtype=np.float32)                                   # [30, D]
        bad = ~(np.abs(array) <= MAX_ABS_VALUE)                                         # NaN, ±Inf, 1e38 ...
        if bad.any():
            t, d = map(int, np.argwhere(bad)[0])
            raise _problem(path, index, f"feature {name.format(t=t)!r} holds {float(array[t, d])!r} "
                                        f"({int(bad.sum())} value(s) not finite or beyond ±{MAX_ABS_VALUE:g})")
        arrays[key] = torch.from_numpy(np.ascontiguousarray(array[window]))
    frames = np.frombuffer(b"".join(images), dtype=np.uint8).reshape(length, HEIGHT, WIDTH, CHANNELS)
    return {
        "frames": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),  # [T, C, H, W]
        "actions": arrays["actions"],                                                     # [T, 4]
        "endeffector_pos": arrays["endeffector_pos"],                                     # [T, 3]
    }


def write_bair_records(path: str | os.PathLike, frames: np.ndarray, actions: np.ndarray,
                       endeffector_pos: np.ndarray) -> None:
    """Write sequences in the original BAIR format (for fixtures and benchmarks).

    ``frames`` uint8 [N, T, 64, 64, 3] (HWC, as stored), ``actions`` [N, T, 4],
    ``endeffector_pos`` [N, T, 3]. Refuses to overwrite an existing file.
    """
    from tfrecord import TFRecordWriter

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; write_bair_records never overwrites a file")
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 5 or frames.shape[2:] != (HEIGHT, WIDTH, CHANNELS):
        raise ValueError(f"frames must be uint8 [N, T, {HEIGHT}, {WIDTH}, {CHANNELS}], got {frames.shape}")
    writer = TFRecordWriter(str(path))
    try:
        for seq, act, eef in zip(frames, actions, endeffector_pos):
            datum = {}
            for t in range(seq.shape[0]):
                datum[IMAGE_KEY.format(t=t)] = (seq[t].tobytes(), "byte")
                datum[ACTION_KEY.format(t=t)] = (np.asarray(act[t], np.float32).tolist(), "float")
                datum[EEF_KEY.format(t=t)] = (np.asarray(eef[t], np.float32).tolist(), "float")
            writer.write(datum)
    finally:
        writer.close()


# ------------------------------------------------------------------- data sets
def _check_len(value: int, what: str) -> None:
    if not 1 <= value <= STEPS:
        raise ValueError(f"{what} must be between 1 and {STEPS} (BAIR sequences have {STEPS} steps), got {value}")


class _RecordIndex:
    """Every record of a list of files as (file number, byte offset), in file order."""

    def __init__(self, files: Sequence[str | os.PathLike], skip_corrupt: bool) -> None:
        self.files = [Path(f) for f in files]
        per_file = [scan_tfrecord(f, skip_corrupt) for f in self.files]
        self.file_of = np.concatenate([np.full(len(o), i, np.int64) for i, o in enumerate(per_file)] or [np.zeros(0, np.int64)])
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
