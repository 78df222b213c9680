"""Data set ``video_folder``: clips cut from a folder of the user's own videos.

Every file under ``root`` (recursively; hidden files skipped) whose extension is in
``extensions`` is one video, decoded with PyAV (FFmpeg). Frames are centre-cropped to a
square and resized to ``image_size`` (bilinear with antialiasing), and each video is cut
into clips of ``seq_len`` frames (every ``frame_step``-th frame) starting every
``stride`` frames. Videos shorter than one clip are skipped. A video whose square crop is
smaller than ``image_size`` is upscaled, with a warning naming it (a 64×8 video becomes
8×8 blown up 8×); one smaller than ``min_size`` is refused (skipped with a warning under
``skip_broken``). Under ``skip_broken`` every video is also decoded once when the data set
is built (with the cache on, that pass builds its cache entry), and one whose frames do not
all decode (a truncated file whose index still lists them) is skipped with a warning, with
the cache on or off alike.

Splits are by file, so no clip of a video leaks into another split: the first 32 bits of
``sha1(relative path)`` as a fraction ``h`` in [0, 1) put the file in ``test`` if
``h < test_fraction``, else in ``val`` if ``h < test_fraction + val_fraction``, else in
``train``. Adding or removing files never moves the others. ``split_by: none`` puts every
file in every split (for a single video or a quick demo).

Building the data set indexes only its own split's files: frame counts and presentation
timestamps come from demuxing (no decoding) and stay in the index, so a clip is decoded
on demand: from the frame cache (:mod:`seqvae.data.video_cache`; each video decoded once
at ``image_size``, memory-mapped; ``cache: false`` turns it off), or by seeking to the
key frame before its first frame. Items are ``{"frames": uint8 [seq_len, 3, image_size,
image_size]}``.
"""
from __future__ import annotations

import bisect
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.data.spec import DataSpec
from seqvae.data.video_cache import FrameCache, default_cache_dir
from seqvae.data.video_decoding import FrameSquarer, VideoDecodeError, _av
from seqvae.registry import DATASETS, ComponentConfig, require_at_least

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "mkv")


@dataclass
class VideoFolderConfig(ComponentConfig):
    """Clips from a folder of video files (see the module docstring)."""

    name: str = "video_folder"
    root: str = "datasets/videos"     # folder searched recursively for videos
    seq_len: int = 30                 # frames per clip
    stride: int | None = None         # frames between clip starts (None: seq_len, i.e. no overlap)
    frame_step: int = 1               # keep every frame_step-th frame (temporal subsampling)
    image_size: int = 64              # centre-crop to a square, then resize to this
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    val_fraction: float = 0.1         # share of files (by path hash) in val ...
    test_fraction: float = 0.1        # ... and in test
    split_by: str = "file"            # "file": split by path hash; "none": every file in every split
    skip_broken: bool = False         # warn and skip unreadable, damaged or too small files instead of failing
    min_size: int = 0                 # refuse videos whose shorter side is below this (0: any size; smaller
                                      # than image_size is upscaled with a warning)
    cache: bool = True                # decode each video once into a memory-mapped frame cache (fast clips)
    cache_dir: str = ""               # where ("": $XDG_CACHE_HOME/seqvae/video_frames)

    def __post_init__(self) -> None:
        require_at_least(self, "data", 1, "seq_len", "stride", "frame_step", "image_size")
        require_at_least(self, "data", 0, "min_size")
        if self.split_by not in ("file", "none"):
            raise ValueError(f"data.split_by must be 'file' or 'none', got {self.split_by!r}")
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction <= 1):
            raise ValueError("data.val_fraction and data.test_fraction must be >= 0 and sum to at most 1")


def split_of(relative_path: str, val_fraction: float, test_fraction: float) -> str:
    """The split of a file, from the SHA-1 of its path relative to the root (``/``-separated)."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()
    h = int(digest[:8], 16) / 2.0**32
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass(frozen=True)
class VideoInfo:
    """One indexed video: its path, frame count and presentation timestamps (sorted)."""

    path: Path
    relative: str
    num_frames: int
    pts: tuple[int, ...] | None   # None when the container gives no timestamps (decode from the start)
    width: int = 0                # frame size from the stream's parameters (0: unknown)
    height: int = 0


class Probe(NamedTuple):
    num_frames: int
    pts: tuple[int, ...] | None
    width: int
    height: int


def probe_video(path: Path) -> Probe:
    """Frame count, sorted presentation timestamps and frame size of the first video
    stream, by demuxing only. Raises :class:`VideoDecodeError` naming the file."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"cannot decode video file {path}: it has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
            pts: list[int | None] = [p.pts for p in container.demux(stream) if p.size > 0]
    except VideoDecodeError:
        raise
    except Exception as err:  # FFmpeg errors come in many classes
        raise VideoDecodeError(f"cannot decode video file {path}: {err}") from err
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return Probe(len(pts), None, width, height)
    return Probe(len(pts), tuple(sorted(pts)), width, height)  # type: ignore[arg-type]


def decode_frames(video: VideoInfo, indices: list[int], size: int | None = None) -> Tensor:
    """Decode the frames ``indices`` (increasing) of ``video``: ``uint8 [len, H, W, 3]``, or
    with ``size`` ``uint8 [len, 3, size, size]`` (:class:`FrameSquarer`).

    Seeks to the key frame before the first wanted frame when timestamps are known and
    identifies frames by timestamp; otherwise (or if seeking misbehaves) decodes from
    the start and counts frames.
    """
    first, last = indices[0], indices[-1]
    try:
        out = None
        if video.pts is not None and first > 0:
            out = _collect(video, indices, seek=True, size=size)
        if out is None:
            out = _collect(video, indices, seek=False, size=size)
    except Exception as err:
        raise VideoDecodeError(f"cannot decode video file {video.path} (frames {first}..{last}): {err}") from err
    if len(out) != len(indices):
        raise VideoDecodeError(
            f"video file {video.path} ended after {len(out)} of the frames {first}..{last} the index "
            f"promised ({video.num_frames} frames by demuxing); is the file damaged?"
        )
    return torch.stack([out[i] for i in indices])


def _collect(video: VideoInfo, indices: list[int], seek: bool, size: int | None = None) -> dict[int, Tensor] | None:
    """Frames ``indices`` by index; None if a seek did not land before the first of them."""
    av = _av()
    wanted, first, last = set(indices), indices[0], indices[-1]
    out: dict[int, Tensor] = {}
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        square = FrameSquarer(stream, size) if size else None
        if seek:
            container.seek(video.pts[first], stream=stream, backward=True, any_frame=False)
        counter = 0
        for frame in container.decode(stream):
            if seek:
                index = bisect.bisect_left(video.pts, frame.pts) if frame.pts is not None else -1
                if index < 0 or index >= len(video.pts) or video.pts[index] != frame.pts:
                    return None  # a frame the index does not know: fall back to counting
                if index > first and not out:
                    return None  # landed after the first wanted frame
            else:
                index = counter
                counter += 1
            if index in wanted:
                out[index] = torch.from_numpy(square(frame) if square else frame.to_ndarray(format="rgb24"))
            if index >= last:
                break
    return out


def check_decodes(video: VideoInfo) -> None:
    """Decode every frame of ``video`` once, keeping none: a :class:`VideoDecodeError` when fewer
    than the demuxed frames come out (e.g. a truncated file whose index still lists them all)."""
    av = _av()
    decoded = 0
    try:
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                decoded += 1
    except Exception as err:  # FFmpeg errors come in many classes
        raise VideoDecodeError(f"cannot decode video file {video.path}: {err}") from err
    if decoded < video.num_frames:
        raise VideoDecodeError(f"video file {video.path} decoded to {decoded} frames, {video.num_frames} expected by "
                               "demuxing; is the file damaged?")


class VideoFolderDataset(Dataset):
    """Map-style data set of fixed-length clips from the videos of one split."""

    def __init__(self, cfg: VideoFolderConfig, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        cfg.__post_init__()  # a config built by hand and changed afterwards is checked again
        stride = cfg.stride if cfg.stride is not None else cfg.seq_len
        self.cfg, self.split = cfg, split
        self.spec = DataSpec(3, cfg.image_size, cfg.image_size, cfg.seq_len, action_dim=0)
        self.cache = FrameCache(cfg.cache_dir or default_cache_dir(), cfg.image_size) if cfg.cache else None

        root = Path(cfg.root).expanduser()
        exts = {e.lower().lstrip(".") for e in cfg.extensions}
        pattern = ", ".join(f"*.{e}" for e in sorted(exts))
        if not root.is_dir():
            raise FileNotFoundError(
                f"video_folder: data root {root.resolve()} does not exist or is not a folder "
                f"(looked for {pattern} under it); set data.root to your video folder "
                "(see datasets/videos/README.md)"
            )
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and p.suffix.lower().lstrip(".") in exts
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise FileNotFoundError(f"video_folder: no video files ({pattern}) under {root.resolve()}")
        self.root = root
        mine = [p for p in files
                if cfg.split_by == "none"
                or split_of(p.relative_to(root).as_posix(), cfg.val_fraction, cfg.test_fraction) == split]
        if not mine:
            raise ValueError(
                f"video_folder: none of the {len(files)} videos under {root.resolve()} falls in split "
                f"{split!r} (val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}, split by "
                "path hash); add videos, change the fractions, or set data.split_by=none"
            )

        # Index: frame counts and timestamps (demux only), then clip start frames.
        self.videos: list[VideoInfo] = []
        for path in mine:
            try:
                count, pts, width, height = probe_video(path)
                if 0 < min(width, height) < cfg.min_size:
                    raise ValueError(f"video_folder: {path} is {width}×{height}, smaller than data.min_size="
                                     f"{cfg.min_size} on its shorter side; remove it or lower data.min_size")
                info = VideoInfo(path, path.relative_to(root).as_posix(), count, pts, width, height)
                if cfg.skip_broken:   # a damaged file is found now, not by the clip that reaches it
                    self.check_decodes(info)
            except (VideoDecodeError, ValueError) as err:
                if not cfg.skip_broken:
                    raise
                warnings.warn(f"video_folder: skipping {err}", stacklevel=2)
                continue
            self.videos.append(info)
        if not self.videos:
            raise ValueError(
                f"video_folder: every one of the {len(mine)} videos of split {split!r} under {root.resolve()} was "
                "skipped as unreadable or too small (data.skip_broken=true; the warnings above name each one), "
                "so no clip is left"
            )
        small = sorted((min(v.width, v.height), v.relative) for v in self.videos
                       if 0 < min(v.width, v.height) < cfg.image_size)
        if small:
            shown = ", ".join(f"{name} ({side} px)" for side, name in small[:3]) + (" ..." if len(small) > 3 else "")
            warnings.warn(
                f"video_folder: {len(small)} of the {len(self.videos)} videos of split {split!r} are smaller than "
                f"data.image_size={cfg.image_size} on their shorter side and are upscaled (up to "
                f"{cfg.image_size / small[0][0]:.1f}×): {shown}. Set data.min_size to refuse such videos, or lower "
                "data.image_size", stacklevel=2)
        span = (cfg.seq_len - 1) * cfg.frame_step + 1
        self.clips: list[tuple[int, int]] = [
            (v, start)
            for v, info in enumerate(self.videos)
            for start in range(0, info.num_frames - span + 1, stride)
        ]
        if not self.clips:
            counts = sorted(v.num_frames for v in self.videos) or [0]
            raise ValueError(
                f"video_folder: no video of split {split!r} under {root.resolve()} has the {span} frames "
                f"a clip needs (seq_len={cfg.seq_len}, frame_step={cfg.frame_step}); the longest has "
                f"{counts[-1]}"
            )

    def check_decodes(self, video: VideoInfo) -> None:
        """Every demuxed frame of ``video`` decodes (:class:`VideoDecodeError` otherwise): with the
        cache by building its entry (which training reads anyway), else by decoding it once."""
        if self.cache is not None:
            self.cache.frames(video.path, video.num_frames)
        else:
            check_decodes(video)

    def __len__(self) -> int:
        return len(self.clips)

    def clip_info(self, index: int) -> tuple[Path, int]:
        """The file and first frame of clip ``index``."""
        v, start = self.clips[index]
        return self.videos[v].path, start

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"video_folder {self.split} index {index} out of range [0, {len(self)})")
        v, start = self.clips[index]
        step = self.cfg.frame_step
        if self.cache is not None:   # a slice of the decoded-once frames
            video = self.videos[v]
            frames = self.cache.frames(video.path, video.num_frames)[start:start + self.cfg.seq_len * step:step]
            return {"frames": torch.from_numpy(np.array(frames))}   # a copy: the map is read-only
        indices = [start + j * step for j in range(self.cfg.seq_len)]
        return {"frames": decode_frames(self.videos[v], indices, self.cfg.image_size)}


@DATASETS.register("video_folder", VideoFolderConfig)
def build_video_folder(cfg: VideoFolderConfig, split: str) -> VideoFolderDataset:
    return VideoFolderDataset(cfg, split)
