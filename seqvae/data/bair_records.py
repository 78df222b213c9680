"""The BAIR robot-pushing TFRecords read directly (no TensorFlow): record framing with
masked CRC-32C checks, the ``tf.train.Example`` fields of one 30-step sequence, validation
(corrupt or implausible records are :class:`CorruptRecordError`), and a writer of files in
exactly this format (for tests and tools)."""
from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import crc32c
import numpy as np
import torch
from torch import Tensor

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

