"""A decode-once cache of a video's frames at training size, served memory-mapped.

Decoding a clip from the previous key frame costs 0.1–0.9 s; a training step needs a
batch of clips. The first time a video is used, every frame is decoded in one sequential
pass, resized and centre-cropped (:class:`seqvae.data.video_decoding.FrameSquarer`) and stored as
``uint8 [N, 3, S, S]`` in one file; later clips are slices of a memory map. The file's
name is a hash of everything its content depends on (absolute path, size and mtime of the
source, the frame size, the format version), so a changed source or another size never
reads a stale entry; entries of the same source with other keys are removed when a new
one is written. Entries are written to a temporary file and renamed (atomic), so
concurrent DataLoader workers may build the same entry without harm.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # bump when the stored frames change (e.g. the resize)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seqvae/video_frames`` (``~/.cache/seqvae/video_frames``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqvae" / "video_frames"


class FrameCache:
    """Frames of videos at ``image_size``, decoded once into ``cache_dir``."""

    def __init__(self, cache_dir: str | Path, image_size: int) -> None:
        self.dir = Path(cache_dir).expanduser()
        self.size = image_size
        self._maps: dict[Path, np.memmap] = {}   # per process; not pickled to DataLoader workers

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def _source_key(self, path: Path) -> str:
        return hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:16]

    def entry_path(self, path: Path) -> Path:
        """Where ``path``'s frames at this size live (changes whenever the source does)."""
        stat = path.stat()
        key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, self.size, FORMAT_VERSION])
        return self.dir / f"{self._source_key(path)}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.u8"

    def frames(self, path: Path, num_frames: int) -> np.memmap:
        """``uint8 [num_frames, 3, S, S]`` frames of ``path`` (built on first use)."""
        entry = self.entry_path(path)
        cached = self._maps.get(entry)
        if cached is not None:
            return cached
        frame_bytes = 3 * self.size * self.size
        if not entry.is_file() or entry.stat().st_size != num_frames * frame_bytes:
            self._build(path, entry, num_frames)
        data = np.memmap(entry, dtype=np.uint8, mode="r", shape=(num_frames, 3, self.size, self.size))
        self._maps[entry] = data
        return data

    def _build(self, path: Path, entry: Path, num_frames: int) -> None:
        from seqvae.data.video_decoding import FrameSquarer, VideoDecodeError, _av
        from seqvae.io import atomic_path

        self.dir.mkdir(parents=True, exist_ok=True)
        av = _av()
        written = 0
        with atomic_path(entry) as tmp:
            with open(tmp, "wb") as out:
                try:
                    with av.open(str(path)) as container:
                        stream = container.streams.video[0]
                        stream.thread_type = "AUTO"
                        square = FrameSquarer(stream, self.size)
                        for frame in container.decode(stream):
                            if written >= num_frames:
                                break
                            out.write(square(frame).tobytes())
                            written += 1
                except Exception as err:  # FFmpeg errors come in many classes
                    raise VideoDecodeError(f"cannot decode video file {path} into the frame cache: {err}") from err
            if written != num_frames:
                raise VideoDecodeError(f"video file {path} decoded to {written} frames, {num_frames} expected by "
                                       "demuxing; is the file damaged?")
        for old in self.dir.glob(f"{self._source_key(path)}-*.u8"):   # the same source at other keys
            if old != entry:
                old.unlink(missing_ok=True)
