#!/usr/bin/env python
"""``video_folder`` clip speed: seeking decode vs the decode-once frame cache.

    python tools/bench_video_cache.py                       # writes a 640×480 H.264 test video
    python tools/bench_video_cache.py --video my_clip.mp4

One thread for torch. Prints frames/s of (1) PyAV decoding the whole video sequentially,
without converting frames (the ceiling of any first pass), (2) building the cache (decode + crop + resize + write), \
(3) serving random
training clips by seeking and decoding (``cache: false``), (4) serving them from a warm cache.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from seqvae.data.videos import VideoFolderConfig, VideoFolderDataset  # noqa: E402


def write_test_video(path: Path, frames: int, width: int = 640, height: int = 480) -> None:
    """A moving gradient with noise (so the codec has real work), H.264, key frame every 30."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "g": "30"}
        for i in range(frames):
            img = np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], -1).astype(np.uint8)
            img = np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sequential_decode_fps(path: Path) -> float:
    start, n = time.perf_counter(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):   # decoding only: no colour conversion
            n += 1
    return n / (time.perf_counter() - start)


def clips_fps(dataset: VideoFolderDataset, clips: int, seq_len: int) -> float:
    rng = random.Random(0)
    order = [rng.randrange(len(dataset)) for _ in range(clips)]
    start = time.perf_counter()
    for i in order:
        dataset[i]
    return clips * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="", help="an existing video (default: write a 640×480, 900-frame one)")
    parser.add_argument("--frames", type=int, default=900, help="frames of the written test video")
    parser.add_argument("--seq-len", type=int, default=12)
    parser.add_argument("--clips", type=int, default=40, help="random clips timed without the cache")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        if args.video:
            (root / Path(args.video).name).symlink_to(Path(args.video).resolve())
        else:
            write_test_video(root / "test.mp4", args.frames)
        video = next(root.iterdir())
        common = dict(root=str(root), seq_len=args.seq_len, stride=1, split_by="none")
        plain = VideoFolderDataset(VideoFolderConfig(cache=False, **common), "train")
        cached = VideoFolderDataset(VideoFolderConfig(cache_dir=str(Path(tmp) / "cache"), **common), "train")
        n_frames = cached.videos[0].num_frames
        print(f"video: {video.name}, {n_frames} frames; clips of {args.seq_len} frames at 64×64; 1 thread")
        decode = sequential_decode_fps(video)
        print(f"  PyAV sequential decode, no conversion (ceiling): {decode:10.0f} frames/s")
        start = time.perf_counter()
        cached[0]
        build = n_frames / (time.perf_counter() - start)
        print(f"  first pass: build the cache                    : {build:10.0f} frames/s "
              f"({build / decode:.0%} of decoding alone)")
        seek = clips_fps(plain, args.clips, args.seq_len)
        print(f"  clips without the cache (seek + decode)        : {seek:10.0f} frames/s")
        warm = clips_fps(cached, 20 * args.clips * 10, args.seq_len)
        print(f"  clips from the warm cache                      : {warm:10.0f} frames/s ({warm / seek:.0f}× uncached)")


if __name__ == "__main__":
    main()
