"""The ``video_folder`` data set (seqvae.data.videos) on tiny videos written with PyAV."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from seqvae.data.videos import (
    VideoDecodeError,
    VideoFolderConfig,
    VideoFolderDataset,
    _collect,
    probe_video,
    split_of,
)
from seqvae.registry import DATASETS

TOL = 12  # codec (YUV 4:2:0, lossy) tolerance on 0..255 colours




def colour(i: int) -> np.ndarray:
    """The solid colour of frame i: far apart for neighbouring frames."""
    return np.array([20 + 11 * i, 230 - 9 * i, 40 + 30 * (i % 6)], dtype=np.uint8)


def write_video(path: Path, codec: str, frames: int, width: int, height: int, border: int,
                options: dict[str, str]) -> None:
    """Frame i: colour(i) in the middle, black bars ``border`` pixels wide left and right
    (a centre crop to a square must remove them)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, border:width - border] = colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    # H.264 with B-frames and short GOPs (seeking matters), MPEG-4 Part 2 in AVI, MKV.
    write_video(root / "a.mp4", "libx264", 20, 128, 96, 16, {"crf": "12", "g": "6"})
    (root / "sub").mkdir()
    write_video(root / "sub" / "b.avi", "mpeg4", 12, 96, 64, 16, {"b": "2000000", "g": "5"})
    write_video(root / "c.mkv", "libx264", 15, 64, 64, 0, {"crf": "12", "g": "4"})
    (root / "notes.txt").write_text("not a video")
    (root / ".hidden.mp4").write_bytes(b"editor junk")
    return root


def config(root: Path, **kw) -> VideoFolderConfig:
    kw.setdefault("split_by", "none")
    return VideoFolderConfig(root=str(root), **kw)


def test_clip_count_order_size_and_crop(folder):
    ds = VideoFolderDataset(config(folder, seq_len=5, stride=3), "train")
    # a.mp4: 20 frames -> starts 0..15 step 3 (6); c.mkv: 15 -> 0..9 (4); b.avi: 12 -> 0, 3, 6 (3).
    assert len(ds) == 13
    assert sorted(v.relative for v in ds.videos) == ["a.mp4", "c.mkv", "sub/b.avi"]
    assert [v.num_frames for v in sorted(ds.videos, key=lambda v: v.relative)] == [20, 15, 12]
    for i in range(len(ds)):
        path, start = ds.clip_info(i)
        frames = ds[i]["frames"]
        assert frames.shape == (5, 3, 64, 64) and frames.dtype == torch.uint8
        for j in range(5):
            expected = torch.from_numpy(colour(start + j)).float()[:, None, None]
            # Every pixel: the black bars were cropped away, the order is right.
            err = (frames[j].float() - expected).abs().max().item()
            assert err <= TOL, f"{path.name} frame {start + j}: off by {err}"


def test_default_stride_and_frame_step(folder):
    ds = VideoFolderDataset(config(folder, seq_len=4, frame_step=2), "train")
    # A clip spans 7 frames, clips start every seq_len = 4 frames.
    starts = sorted((ds.videos[v].relative, s) for v, s in ds.clips)
    assert starts == [("a.mp4", 0), ("a.mp4", 4), ("a.mp4", 8), ("a.mp4", 12),
                      ("c.mkv", 0), ("c.mkv", 4), ("c.mkv", 8), ("sub/b.avi", 0), ("sub/b.avi", 4)]
    i = ds.clips.index(next(c for c in ds.clips if ds.videos[c[0]].relative == "a.mp4" and c[1] == 8))
    frames = ds[i]["frames"]
    for j, index in enumerate((8, 10, 12, 14)):
        assert (frames[j].float() - torch.from_numpy(colour(index)).float()[:, None, None]).abs().max() <= TOL


def test_seeking_agrees_with_decoding_from_the_start(folder):
    ds = VideoFolderDataset(config(folder, seq_len=3), "train")
    for video in ds.videos:
        assert video.pts is not None, video.relative
        for first in (1, video.num_frames // 2, video.num_frames - 3):
            indices = [first, first + 1, first + 2]
            sought = _collect(video, indices, seek=True)
            assert sought is not None, f"{video.relative}: seek fell back"
            counted = _collect(video, indices, seek=False)
            assert all(torch.equal(sought[i], counted[i]) for i in indices)


def test_probe_counts_match_decoded_frames(folder):
    for name in ("a.mp4", "sub/b.avi", "c.mkv"):
        count, _, width, height = probe_video(folder / name)
        assert (width, height) == {"a.mp4": (128, 96), "sub/b.avi": (96, 64), "c.mkv": (64, 64)}[name]
        with av.open(str(folder / name)) as container:
            assert count == sum(1 for _ in container.decode(video=0))


def test_split_by_file_partitions_the_folder(folder):
    assert split_of("x/y.mp4", 0.1, 0.1) == split_of("x/y.mp4", 0.1, 0.1)
    names = [f"clip_{i:04d}.mp4" for i in range(2000)]
    shares = {s: sum(split_of(n, 0.2, 0.1) == s for n in names) / len(names) for s in ("train", "val", "test")}
    assert abs(shares["test"] - 0.1) < 0.03 and abs(shares["val"] - 0.2) < 0.03
    seen = {}
    for split in ("train", "val", "test"):
        try:
            ds = VideoFolderDataset(config(folder, seq_len=3, split_by="file", val_fraction=0.3,
                                           test_fraction=0.3), split)
        except ValueError as err:
            assert "falls in split" in str(err)
            continue
        seen[split] = {v.relative for v in ds.videos}
        expected = {n for n in ("a.mp4", "c.mkv", "sub/b.avi") if split_of(n, 0.3, 0.3) == split}
        assert seen[split] == expected
    files = [f for s in seen.values() for f in s]
    assert sorted(files) == sorted(set(files))  # no file in two splits


def test_errors_name_what_is_wrong(folder, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolderDataset(config(missing), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no video files.*empty"):
        VideoFolderDataset(config(tmp_path / "empty"), "train")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        VideoFolderDataset(config(broken), "train")
    with pytest.raises(ValueError, match="frames a clip needs"):
        VideoFolderDataset(config(folder, seq_len=50), "train")
    # skip_broken: warn, and use the rest.
    (broken / "good.mkv").symlink_to(folder / "c.mkv")
    with pytest.warns(UserWarning, match="bad.mp4"):
        ds = VideoFolderDataset(config(broken, seq_len=5, skip_broken=True), "train")
    assert [v.relative for v in ds.videos] == ["good.mkv"] and len(ds) == 3


def test_registered(folder):
    cfg = DATASETS.config_class("video_folder")(root=str(folder), seq_len=4, split_by="none")
    ds = DATASETS.build(cfg, "val")
    assert ds.spec.seq_len == 4 and ds.spec.action_dim == 0 and len(ds) > 0
    with pytest.raises(IndexError):
        ds[len(ds)]


# ------------------------------------------------------------------ frame cache
def test_cached_clips_equal_decoded_clips_and_each_video_is_decoded_once(folder, tmp_path, monkeypatch):
    import seqvae.data.video_cache as video_cache

    plain = VideoFolderDataset(config(folder, seq_len=4, frame_step=2, cache=False), "train")
    cached = VideoFolderDataset(config(folder, seq_len=4, frame_step=2, cache_dir=str(tmp_path)), "train")
    builds = []
    real_build = video_cache.FrameCache._build
    monkeypatch.setattr(video_cache.FrameCache, "_build",
                        lambda self, path, entry, n: builds.append(path.name) or real_build(self, path, entry, n))
    for i in range(len(plain)):
        assert torch.equal(cached[i]["frames"], plain[i]["frames"]), i
    assert sorted(builds) == ["a.mp4", "b.avi", "c.mkv"]            # one sequential decode per video
    again = VideoFolderDataset(config(folder, seq_len=4, frame_step=2, cache_dir=str(tmp_path)), "train")
    assert torch.equal(again[len(again) - 1]["frames"], plain[len(plain) - 1]["frames"])
    assert len(builds) == 3                                          # a new data set reads the files
    assert len(list(tmp_path.glob("*.u8"))) == 3


def test_a_changed_video_is_decoded_again_and_its_old_entry_removed(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "v.mp4", "libx264", 8, 64, 64, 0, {"crf": "12", "g": "4"})
    cfg = config(root, seq_len=8, cache_dir=str(tmp_path / "cache"))
    first = VideoFolderDataset(cfg, "train")[0]["frames"]
    old = list((tmp_path / "cache").glob("*.u8"))
    write_video(root / "v.mp4", "libx264", 8, 64, 64, 16, {"crf": "12", "g": "4"})   # black bars now
    os.utime(root / "v.mp4", ns=(0, 10**18))                                       # a new mtime for sure
    second = VideoFolderDataset(cfg, "train")[0]["frames"]
    new = list((tmp_path / "cache").glob("*.u8"))
    assert len(old) == len(new) == 1 and old != new
    assert not torch.equal(first, second)
    assert torch.equal(second, VideoFolderDataset(config(root, seq_len=8, cache=False), "train")[0]["frames"])


# ------------------------------------------------------ issue 11: small, broken, all skipped
def test_small_videos_are_upscaled_with_a_warning_or_refused_below_min_size(tmp_path):
    write_video(tmp_path / "thin.mp4", "libx264", 6, 64, 8, 0, {"crf": "12"})
    with pytest.warns(UserWarning, match=r"1 of the 1 videos .* upscaled \(up to 8\.0×\): thin\.mp4 \(8 px\)"):
        ds = VideoFolderDataset(config(tmp_path, seq_len=3), "train")
    assert ds[0]["frames"].shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match=r"thin\.mp4 is 64×8, smaller than data\.min_size=16"):
        VideoFolderDataset(config(tmp_path, seq_len=3, min_size=16), "train")
    with pytest.raises(ValueError, match="data.min_size must be at least 0"):
        config(tmp_path, min_size=-1)


def test_every_video_skipped_as_broken_says_so(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mkv").write_text("not a video")
    with pytest.warns(UserWarning, match="skipping"), \
            pytest.raises(ValueError, match=r"every one of the 2 videos of split 'train' .* was skipped") as err:
        VideoFolderDataset(config(tmp_path, seq_len=3, skip_broken=True), "train")
    assert "the longest has" not in str(err.value)


def test_broken_video_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    import yaml

    from seqvae.cli import main as cli_main

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "zero.mp4").write_bytes(b"")
    cfg = {"data": {"name": "video_folder", "root": str(tmp_path / "videos"), "seq_len": 3, "split_by": "none"},
           "model": {"name": "svg"}, "likelihood": {"name": "optimal_sigma"},
           "train": {"out_dir": str(tmp_path / "run"), "steps": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", str(tmp_path / "cfg.yaml")]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("seqvae train: error: cannot decode video file") and "zero.mp4" in captured.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cache", [True, False])
def test_a_truncated_faststart_mp4_is_skipped_with_the_cache_on_or_off(tmp_path, cache):
    """The index at the front of a faststart MP4 still lists every frame after the file was cut:
    demuxing finds them all, decoding does not (issue 23, item 8). skip_broken skips it at once,
    with the frame cache on or off; without skip_broken it is a clear error naming the file."""
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "good.mp4", "libx264", 8, 64, 64, 0, {"crf": "12", "g": "4"})
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "12", "g": "6"}
        for i in range(24):
            noise = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = whole.read_bytes()
    (root / "cut.mp4").write_bytes(data[:int(len(data) * 0.98)])
    assert probe_video(root / "cut.mp4").num_frames == 24                   # demuxing promises every frame
    cfg = config(root, seq_len=4, skip_broken=True, cache=cache, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"skipping video file .*cut\.mp4 decoded to \d+ frames, 24 expected"):
        ds = VideoFolderDataset(cfg, "train")
    assert [v.relative for v in ds.videos] == ["good.mp4"] and len(ds) == 2
    assert all(ds[i]["frames"].shape == (4, 3, 64, 64) for i in range(len(ds)))
    strict = VideoFolderDataset(config(root, seq_len=4, cache=cache, cache_dir=str(tmp_path / "cache")), "train")
    cut = [i for i in range(len(strict)) if strict.clip_info(i)[0].name == "cut.mp4"]
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        for i in cut:
            strict[i]
