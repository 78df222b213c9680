"""Rendering: codecs round-trip, layout puts pixels where it says, markers, atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from seqvae import render
from seqvae.render import (
    CONTEXT_COLOR,
    PREDICTED_COLOR,
    TRUTH_COLOR,
    Panel,
    compose,
    plan_layout,
    read_video,
    render_prediction,
    write_gif,
    write_mp4,
    write_png_grid,
    write_video,
)
from seqvae.render.panels import BORDER

MP4_MEAN_TOL = 3.0    # mean |error| in grey levels after H.264 (crf 12, yuv420p) on smooth content
MP4_P99_TOL = 10      # 99% of values within this; only colour edges (4:2:0 chroma) go further


def smooth_video(t: int = 10, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 [T, H, W, 3]: colour ramps plus a grey block that moves right 3 px a frame."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    video = np.empty((t, h, w, 3), dtype=np.float64)
    for k in range(t):
        video[k, ..., 0] = 40 + 170 * xx
        video[k, ..., 1] = 40 + 170 * yy
        video[k, ..., 2] = 60 + 12 * k              # every frame differs globally too
        video[k, 8:24, 3 * k: 3 * k + 16] = 128
    return np.rint(video).astype(np.uint8)


def flat_video(values: list[tuple[int, int, int]], h: int = 6, w: int = 5) -> torch.Tensor:
    """uint8 [T, 3, H, W], frame k one flat colour ``values[k]``."""
    v = torch.tensor(values, dtype=torch.uint8)[:, :, None, None]
    return v.expand(-1, -1, h, w).contiguous()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- codecs


def test_mp4_round_trip_frames_size_pixels(tmp_path: Path) -> None:
    video = smooth_video()
    path = write_mp4(tmp_path / "a" / "b" / "clip.mp4", video, fps=8)   # parents created
    assert path.is_file()
    back = read_video(path)
    assert back.shape == video.shape
    err = np.abs(back.astype(np.int16) - video.astype(np.int16))
    assert err.mean() < MP4_MEAN_TOL, err.mean()
    assert np.percentile(err, 99) <= MP4_P99_TOL, np.percentile(err, 99)
    # frames come back in order: each decoded frame is nearest to its own source frame
    dist = np.abs(back[:, None].astype(np.int16) - video[None].astype(np.int16)).mean(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == np.arange(len(video))).all()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 8
    assert len(read_video(path, max_frames=3)) == 3


def test_mp4_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    video = smooth_video(t=4, h=33, w=47)
    back = read_video(write_mp4(tmp_path / "odd.mp4", video))
    assert back.shape == (4, 34, 48, 3)
    err = np.abs(back[:, :33, :47].astype(np.int16) - video.astype(np.int16))
    assert err.mean() < MP4_MEAN_TOL
    # the padding repeats the last row / column
    assert np.abs(back[:, 33].astype(np.int16) - back[:, 32].astype(np.int16)).mean() < MP4_MEAN_TOL


def test_gif_round_trip_exact(tmp_path: Path) -> None:
    video = np.zeros((6, 20, 30, 3), dtype=np.uint8)
    colours = [(255, 0, 0), (0, 200, 0), (10, 20, 250), (250, 250, 0), (0, 0, 0), (128, 128, 128)]
    for k, c in enumerate(colours):
        video[k] = 30 * k
        video[k, 5:10, 4 * k: 4 * k + 6] = c
    path = write_gif(tmp_path / "clip.gif", video, fps=10)
    back = read_video(path)
    assert back.shape == video.shape
    np.testing.assert_array_equal(back, video)
    with Image.open(path) as im:
        assert im.n_frames == 6
        assert im.info["duration"] == 100
        assert im.info["loop"] == 0


def test_gif_many_colours_is_close(tmp_path: Path) -> None:
    video = smooth_video(t=3, h=24, w=32)            # > 256 colours per frame: quantised
    back = read_video(write_gif(tmp_path / "ramp.gif", video, fps=4))
    assert back.shape == video.shape
    assert np.abs(back.astype(np.int16) - video.astype(np.int16)).mean() < 4


def test_png_grid_of_images_tile_positions(tmp_path: Path) -> None:
    n, h, w = 5, 4, 6
    images = torch.zeros(n, 3, h, w)
    for i in range(n):
        images[i, 0] = i / 10            # red channel encodes the index
        images[i, 1, 1, 2] = 1.0         # one marked pixel per tile
    path = write_png_grid(tmp_path / "grid.png", images, nrow=3, padding=2)
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (2 + 2 * (h + 2), 2 + 3 * (w + 2), 3)
    for i in range(n):
        r, c = divmod(i, 3)
        top, left = 2 + r * (h + 2), 2 + c * (w + 2)
        assert tuple(grid[top, left]) == (round(255 * i / 10), 0, 0)
        assert tuple(grid[top + 1, left + 2]) == (round(255 * i / 10), 255, 0)
    assert tuple(grid[0, 0]) == (255, 255, 255)                         # padding
    assert tuple(grid[2 + h + 2, 2 + 2 * (w + 2)]) == (255, 255, 255)    # empty 6th slot


def test_png_grid_of_video_rows_with_scale(tmp_path: Path) -> None:
    n, t, h, w, s = 2, 3, 3, 4, 2
    videos = torch.zeros(n, t, 1, h, w, dtype=torch.uint8)
    for i in range(n):
        for k in range(t):
            videos[i, k] = 50 * i + 20 * k + 10                     # grey, C = 1
    grid = np.asarray(Image.open(write_png_grid(tmp_path / "rows.png", videos, padding=1, scale=s)))
    assert grid.shape == (1 + n * (h * s + 1), 1 + t * (w * s + 1), 3)
    for i in range(n):
        for k in range(t):
            top, left = 1 + i * (h * s + 1), 1 + k * (w * s + 1)
            tile = grid[top:top + h * s, left:left + w * s]
            assert (tile == 50 * i + 20 * k + 10).all()


def test_write_video_dispatches_on_suffix(tmp_path: Path) -> None:
    video = np.zeros((3, 8, 10, 3), dtype=np.uint8)
    video[:, :, :, 0] = np.array([0, 100, 200], dtype=np.uint8)[:, None, None]
    strip = np.asarray(Image.open(write_video(tmp_path / "strip.png", video)))
    assert strip.shape == (2 + 8 + 2, 2 + 3 * (10 + 2), 3)
    assert [strip[2, 2 + k * 12, 0] for k in range(3)] == [0, 100, 200]
    assert len(read_video(write_video(tmp_path / "v.gif", video, fps=5))) == 3
    assert read_video(write_video(tmp_path / "v.mp4", video)).shape == (3, 8, 10, 3)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.avi", video)
    assert not (tmp_path / "v.avi").exists()


# --------------------------------------------------------------------------- compose


def test_compose_places_and_upscales_each_panel() -> None:
    a = torch.zeros(2, 3, 4, 5)
    a[:, 0] = 1.0                                   # pure red panel ...
    a[:, :, 1, 3] = torch.tensor([0.0, 0.0, 1.0])      # ... with one blue pixel at (1, 3)
    b = torch.zeros(2, 1, 4, 5)
    b[:] = 0.5                                      # grey panel, single channel
    c = flat_video([(0, 255, 255)] * 2, h=4, w=5)  # cyan, uint8
    scale = 3
    out = compose([Panel(a, "a"), Panel(b, "b"), Panel(c, "c")], columns=2, scale=scale)
    lay = plan_layout([Panel(a, "a"), Panel(b, "b"), Panel(c, "c")], columns=2, scale=scale)
    assert out.shape == (2, lay.height, lay.width, 3) and out.dtype == np.uint8

    # find panel a by its colour, independently of the layout
    red = np.all(out[0] == (255, 0, 0), axis=-1) | np.all(out[0] == (0, 0, 255), axis=-1)
    rows, cols = np.nonzero(red)
    top, left = rows.min(), cols.min()
    assert (rows.max() - top + 1, cols.max() - left + 1) == (4 * scale, 5 * scale)
    assert lay.frame_boxes[0] == (top, left, 4 * scale, 5 * scale)
    blue = np.all(out[0] == (0, 0, 255), axis=-1)
    assert blue.sum() == scale * scale                                   # nearest upscaling
    by, bx = np.nonzero(blue)
    assert (by.min() - top, bx.min() - left) == (1 * scale, 3 * scale)

    grey = np.all(out[0] == (128, 128, 128), axis=-1)
    gy, gx = np.nonzero(grey)
    assert lay.frame_boxes[1] == (gy.min(), gx.min(), 4 * scale, 5 * scale)
    assert gy.min() == top and gx.min() > left + 5 * scale               # side by side
    cyan = np.all(out[0] == (0, 255, 255), axis=-1)
    cy, cx = np.nonzero(cyan)
    assert cx.min() == left and cy.min() > top + 4 * scale               # next row of the grid
    assert cyan.sum() == grey.sum() == 4 * 5 * scale * scale


def test_context_and_prediction_markers() -> None:
    frames = torch.full((5, 3, 6, 6), 0.25)
    truth = Panel(frames, "truth", context=2, ground_truth=True)
    pred = Panel(frames, "pred", context=2)
    plain = Panel(frames, "plain")
    out = compose([truth, pred, plain], scale=2)
    lay = plan_layout([truth, pred, plain], scale=2)
    for t in range(5):
        for i, expected in enumerate([TRUTH_COLOR, PREDICTED_COLOR]):
            top, left, h, w = lay.frame_boxes[i]
            colour = CONTEXT_COLOR if t < 2 else expected
            # all four sides of the border carry the marker colour
            for y, x in [(top - 1, left + w // 2), (top + h, left), (top, left - BORDER), (top + h - 1, left + w)]:
                assert tuple(out[t, y, x]) == colour, (t, i, y, x)
        top, left, h, w = lay.frame_boxes[2]
        assert tuple(out[t, top - 1, left]) == render.BACKGROUND           # unmarked panel
    # the ctx / pred tag sits in the label strip and changes when prediction starts
    ltop, lleft, lh, lw = lay.label_boxes[1]
    strip = out[:, ltop:ltop + lh, lleft:lleft + lw]
    assert np.array_equal(strip[0], strip[1]) and np.array_equal(strip[2], strip[4])
    assert not np.array_equal(strip[1], strip[2])
    assert np.all(strip[0] == CONTEXT_COLOR, axis=-1).sum() > 50
    assert np.all(strip[2] == PREDICTED_COLOR, axis=-1).sum() > 50


def test_labels_draw_in_their_strip_only() -> None:
    frames = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    blank = compose([Panel(frames, "")], scale=2)
    named = compose([Panel(frames, "sample 7")], scale=2)
    lay = plan_layout([Panel(frames, "")], scale=2)
    top, left, h, w = lay.label_boxes[0]
    strip = (slice(None), slice(top, top + h), slice(left, left + w))
    assert (blank[strip] == 255).all()
    assert (named[strip] < 128).sum() > 20                  # dark text pixels
    outside = np.ones(blank.shape[:3], dtype=bool)
    outside[strip] = False
    assert np.array_equal(blank[outside], named[outside])


def test_shorter_panel_holds_last_frame_and_counter_ticks() -> None:
    long = flat_video([(10 * k, 0, 0) for k in range(5)])
    short = flat_video([(0, 100, 0), (0, 200, 0)])
    out = compose([Panel(long, "long"), Panel(short, "short", context=1)], scale=1)
    lay = plan_layout([Panel(long, "long"), Panel(short, "short", context=1)], scale=1)
    assert len(out) == 5
    (t0, l0, h0, w0), (t1, l1, h1, w1) = lay.frame_boxes
    assert [tuple(out[t, t0, l0]) for t in range(5)] == [(10 * k, 0, 0) for k in range(5)]
    assert [tuple(out[t, t1, l1]) for t in range(5)] == [(0, 100, 0)] + [(0, 200, 0)] * 4
    assert tuple(out[4, t1 - 1, l1]) == PREDICTED_COLOR                 # held frame keeps its marker
    top, left, h, w = lay.header_box
    header = out[:, top:top + h, left:left + w]
    assert all(not np.array_equal(header[t], header[t + 1]) for t in range(4))
    still = flat_video([(7, 7, 7)] * 3)
    quiet = compose([Panel(still, "still")], scale=1, frame_counter=False)
    assert plan_layout([Panel(still, "still")], scale=1, frame_counter=False).header_box[2] == 0
    assert len(quiet) == 3 and np.array_equal(quiet[0], quiet[2])      # nothing ticks


def test_metrics_print_per_frame() -> None:
    frames = torch.zeros(4, 3, 8, 8)
    panel = Panel(frames, "m", context=1, metrics={"PSNR": [float("nan"), 20.0, 20.0, 31.5]})
    out = compose([panel, Panel(frames, "none")], scale=2)
    lay = plan_layout([panel, Panel(frames, "none")], scale=2)
    top, left, h, w = lay.metric_boxes[0]
    assert h > 0
    strip = out[:, top:top + h, left:left + w]
    assert (strip[0] == 255).all()                      # NaN prints nothing
    assert (strip[1] < 128).sum() > 20
    assert np.array_equal(strip[1], strip[2]) and not np.array_equal(strip[2], strip[3])
    top, left, h, w = lay.metric_boxes[1]
    assert (out[:, top:top + h, left:left + w] == 255).all()


def test_compose_accepts_batches_and_rejects_bad_frames() -> None:
    batch = torch.rand(3, 2, 3, 4, 4)
    out = compose(batch, scale=1, frame_counter=False)
    lay = plan_layout(batch, scale=1, frame_counter=False)
    for i in range(3):
        top, left, h, w = lay.frame_boxes[i]
        expected = np.rint(batch[i, 1].numpy().transpose(1, 2, 0) * 255)
        assert np.array_equal(out[1, top:top + h, left:left + w], expected)
    with pytest.raises(ValueError):
        compose([Panel(torch.rand(2, 4, 4, 4))])        # 4 channels
    with pytest.raises(ValueError):
        compose([Panel(torch.zeros(2, 3, 4, 4, dtype=torch.int64))])


# --------------------------------------------------------------------------- atomic writes


def test_overwrite_is_atomic_and_failed_write_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.mp4"
    first, second = smooth_video(t=3), 255 - smooth_video(t=5)
    write_mp4(target, first)
    write_mp4(target, second)                              # replaces
    assert np.abs(read_video(target).astype(int) - second.astype(int)).mean() < MP4_MEAN_TOL
    assert leftovers(tmp_path) == []
    before = target.read_bytes()

    with pytest.raises(ValueError):
        write_mp4(target, np.zeros((3, 8, 8, 5), dtype=np.uint8))     # invalid frames
    with pytest.raises(ValueError):
        write_video(target, np.zeros((0, 8, 8, 3), dtype=np.uint8))   # empty video

    # failure in the middle of encoding, after the temporary file exists
    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(flaky))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_mp4(target, smooth_video(t=6))
    assert calls["n"] == 3
    monkeypatch.undo()

    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask           # not mkstemp's 0600

    png = tmp_path / "grid.png"
    write_png_grid(png, torch.zeros(2, 3, 4, 4))
    old = png.read_bytes()
    with pytest.raises(ValueError):
        write_png_grid(png, torch.zeros(2, 2, 4, 4))       # 2 channels
    assert png.read_bytes() == old and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- the common figure


def test_render_prediction_order_labels_markers(tmp_path: Path) -> None:
    t, context = 4, 2
    truth = flat_video([(250, 250, 250)] * t, h=8, w=8)
    greys = [40, 80, 120]
    samples = torch.stack([flat_video([(0, 0, g)] * t, h=8, w=8) for g in greys])
    metrics = {"PSNR": torch.tensor([[21.0, 22.0], [23.0, 24.0], [25.0, 26.0]])}   # predicted frames only
    path = render_prediction(tmp_path / "fig" / "pred.gif", truth, samples, context=context,
                             best_index=1, metrics=metrics, scale=2, fps=4)
    assert path == tmp_path / "fig" / "pred.gif"
    video = read_video(path)
    assert len(video) == t

    def column_of(colour: tuple[int, int, int]) -> int:
        _, xs = np.nonzero(np.all(video[0] == colour, axis=-1))
        return xs.min()

    cols = [column_of((250, 250, 250))] + [column_of((0, 0, g)) for g in (80, 40, 120)]
    assert cols == sorted(cols)                          # truth | best (1) | 0 | 2
    panels = [Panel(truth, "ground truth", context, ground_truth=True)] + [
        Panel(samples[i], "x", context, metrics={"PSNR": [0.0] * t}) for i in (1, 0, 2)]
    lay = plan_layout(panels, scale=2)
    assert lay.height == video.shape[1] and lay.width == video.shape[2]
    top, left, h, w = lay.frame_boxes[0]
    assert tuple(video[0, top - 1, left]) == CONTEXT_COLOR and tuple(video[3, top - 1, left]) == TRUTH_COLOR
    top, left, h, w = lay.frame_boxes[1]
    assert tuple(video[3, top - 1, left]) == PREDICTED_COLOR
    mtop, mleft, mh, mw = lay.metric_boxes[1]
    assert (video[0, mtop:mtop + mh, mleft:mleft + mw] == 255).all()       # context: no PSNR
    assert (video[2, mtop:mtop + mh, mleft:mleft + mw] < 128).any()        # predicted: PSNR shown
    with pytest.raises(ValueError):
        render_prediction(tmp_path / "bad.mp4", truth, samples, context=2, best_index=5)
    assert not (tmp_path / "bad.mp4").exists()


def test_panel_grid_places_every_shown_frame_with_its_marker():
    from seqvae.render.grid import LABEL_WIDTH, compose_grid, shown_steps
    from seqvae.render.panels import BORDER, PAD

    assert shown_steps(5, 12) == [0, 1, 2, 3, 4]
    assert shown_steps(30, 4) == [0, 10, 19, 29]                  # evenly spaced, first and last kept
    T, size = 30, 8
    video = np.zeros((T, 3, size, size), np.uint8)
    video[:, 0] = np.arange(T)[:, None, None] * 8                 # frame t is red level 8 t
    grid = compose_grid([Panel(video, "a", context=2), Panel(video, "b", context=2, ground_truth=True)], max_columns=4)
    steps = shown_steps(T, 4)
    cell_w, cell_h = size + 2 * BORDER + PAD, size + 2 * BORDER + PAD
    header = 16
    for r, after in enumerate((PREDICTED_COLOR, TRUTH_COLOR)):
        for c, t in enumerate(steps):
            top, left = header + r * cell_h, PAD + LABEL_WIDTH + c * cell_w
            assert grid[top + BORDER + size // 2, left + BORDER + size // 2, 0] == 8 * t          # the frame itself
            assert tuple(grid[top, left]) == (CONTEXT_COLOR if t < 2 else after)               # its marker


def test_render_names_the_wrong_inputs_people_give_it(tmp_path, capsys):
    """Text, a checkpoint, a video or an image instead of an .npz: one line saying what the
    file is and what the command reads (never numpy's advice to allow pickles)."""
    import torch

    from seqvae.cli import main
    from seqvae.render import write_mp4

    (tmp_path / "notes.md").write_text("# not arrays\n")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "checkpoint.pt")
    write_mp4(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frame.png")
    (tmp_path / "empty.npz").write_bytes(b"")
    expected = {"notes.md": "a text file", "checkpoint.pt": "a torch checkpoint", "clip.mp4": "a video",
                "frame.png": "an image", "empty.npz": "an empty file"}
    for name, kind in expected.items():
        assert main(["render", str(tmp_path / name), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert f"is {kind}" in err and "reads an .npz" in err and "allow_pickle" not in err, err


def test_still_frame_tool_picks_the_frame_scales_and_never_overwrites(tmp_path: Path) -> None:
    """tools/still_frame.py (the README's stills): frame k of an MP4 whose frames are solid
    colours is that colour; --width averages down; an existing PNG needs --force."""
    import subprocess
    import sys

    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)
    video = np.broadcast_to(colours[:, None, None, :], (4, 64, 96, 3)).copy()
    render.write_mp4(tmp_path / "v.mp4", video)
    root = Path(__file__).resolve().parents[1]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(root / "tools" / "still_frame.py"), str(tmp_path / "v.mp4"), *args],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})

    assert run("--frame", "2", "--out", str(tmp_path / "s.png")).returncode == 0
    still = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(float)
    assert still.shape == (64, 96, 3) and np.abs(still.mean(axis=(0, 1)) - colours[2]).max() < 6
    again = run("--frame", "-1", "--out", str(tmp_path / "s.png"), "--width", "48")
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert run("--frame", "-1", "--out", str(tmp_path / "s.png"), "--width", "48", "--force").returncode == 0
    small = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(float)
    assert small.shape == (32, 48, 3) and np.abs(small.mean(axis=(0, 1)) - colours[3]).max() < 6
    outside = run("--frame", "9", "--out", str(tmp_path / "t.png"))
    assert outside.returncode == 2 and "4 frames" in outside.stderr and not (tmp_path / "t.png").exists()
