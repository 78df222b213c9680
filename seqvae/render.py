"""Rendering of videos for people to watch: labelled side-by-side panels, MP4 / GIF / PNG.

Used by training (periodic samples), evaluation, rollouts and planning. Everything here is
CPU-side image work on uint8 arrays; models never import it.

Video layouts
-------------
* Model-side videos are ``[T, C, H, W]`` (float in [0, 1] or uint8, C = 1 or 3), batches
  ``[N, T, C, H, W]``; torch tensors or numpy arrays are both accepted.
* Viewer-side videos (what :func:`compose` returns, what the writers take and
  :func:`read_video` gives back) are numpy ``uint8 [T, H, W, 3]``, channel last.

A composed frame looks like this (one cell per :class:`Panel`, a grid when there are many)::

    title                                        t = 3/30     <- header (title, frame counter)
    ┌ label ─────── [ctx] ┐ ┌ label ────── [pred] ┐           <- label strip + context tag
    │▓▓▓ frame, upscaled ▓│ │▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓│           <- border: green context,
    │▓▓▓ by `scale`      ▓│ │▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓│              red predicted, grey truth
    └─────────────────────┘ └─────────────────────┘
      PSNR 23.41               PSNR 21.07                     <- per-frame metrics strip

Metrics are printed in a strip under the frame rather than on top of it, so that the
(small, 64×64) frames are never covered by text.

Every writer is atomic: it writes a hidden temporary file in the destination folder and
``os.replace``-s it over the destination, so a reader (or a crash) never sees half a file
and a failed write leaves an existing file untouched. Parent folders are created.
"""
from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Union

import av
import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BACKGROUND",
    "CONTEXT_COLOR",
    "PREDICTED_COLOR",
    "TRUTH_COLOR",
    "Layout",
    "Panel",
    "compose",
    "panels_from_batch",
    "plan_layout",
    "read_video",
    "render_prediction",
    "to_uint8_frames",
    "write_gif",
    "write_mp4",
    "write_png_grid",
    "write_video",
]

ArrayLike = Union[torch.Tensor, np.ndarray]
PathLike = Union[str, os.PathLike]
RGB = tuple[int, int, int]

# ---------------------------------------------------------------------------------------
# Look. Colours are public so callers (and tests) can find the markers.
BACKGROUND: RGB = (255, 255, 255)
TEXT_COLOR: RGB = (0, 0, 0)
CONTEXT_COLOR: RGB = (0, 160, 0)        # observed / context frames
PREDICTED_COLOR: RGB = (220, 0, 0)      # model predictions
TRUTH_COLOR: RGB = (140, 140, 140)      # ground-truth future frames (Panel.ground_truth)
TAG_TEXT_COLOR: RGB = (255, 255, 255)
CONTEXT_TAG, PREDICTED_TAG, TRUTH_TAG = "ctx", "pred", "gt"

PAD = 6              # pixels around and between cells
BORDER = 3           # marker border around each frame
MIN_CELL_WIDTH = 72  # so that a label and its tag fit next to tiny frames
MP4_CRF = 12         # libx264 constant-rate factor: low = high quality (18 ≈ "visually lossless")


# ---------------------------------------------------------------------------------------
# Array conversion


def to_uint8_frames(frames: ArrayLike) -> np.ndarray:
    """Convert a model-side video ``[T, C, H, W]`` (C = 1 or 3) to numpy ``uint8 [T, H, W, 3]``.

    Floats are taken to lie in [0, 1]: they are clipped, NaNs become 0, then scaled by 255
    and rounded. uint8 passes through. Grey (C = 1) is repeated to three channels.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype == torch.bfloat16 or frames.dtype == torch.float16:
            frames = frames.float()
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"expected frames [T, C, H, W] with C in (1, 3), got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[2] == 0 or frames.shape[3] == 0:
        raise ValueError(f"empty video, shape {tuple(frames.shape)}")
    frames = _as_uint8(frames)
    frames = rearrange(frames, "t c h w -> t h w c")
    if frames.shape[-1] == 1:
        frames = repeat(frames, "t h w 1 -> t h w c", c=3)
    return np.ascontiguousarray(frames)


def _as_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 unchanged; bool / float in [0, 1] → uint8 (clipped, rounded); anything else rejected."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if np.issubdtype(x.dtype, np.floating):
        x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"expected uint8 or float in [0, 1] pixels, got dtype {x.dtype}")


def _as_viewer_video(video: ArrayLike) -> np.ndarray:
    """Normalise a viewer-side video to contiguous ``uint8 [T, H, W, 3]``.

    Accepts ``[T, H, W, 3]`` / ``[T, H, W, 1]`` / ``[T, H, W]`` (uint8 or float in [0, 1]); a
    channel-first ``[T, C, H, W]`` is recognised when the last axis is not 1 or 3.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        if video.dtype in (torch.bfloat16, torch.float16):
            video = video.float()
        video = video.numpy()
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4:
        raise ValueError(f"expected a video [T, H, W, 3], got shape {tuple(video.shape)}")
    if video.shape[-1] not in (1, 3) and video.shape[1] in (1, 3):
        return to_uint8_frames(video)                       # channel-first [T, C, H, W]
    if video.shape[-1] not in (1, 3):
        raise ValueError(f"expected a video [T, H, W, 3] (or 1 channel), got shape {tuple(video.shape)}")
    if min(video.shape[:3]) == 0:
        raise ValueError(f"empty video, shape {tuple(video.shape)}")
    video = _as_uint8(video)
    if video.shape[-1] == 1:
        video = repeat(video, "t h w 1 -> t h w c", c=3)
    return np.ascontiguousarray(video)


# ---------------------------------------------------------------------------------------
# Panels and layout


@dataclass
class Panel:
    """One labelled video in a composed figure.

    Attributes:
        frames: ``[T, C, H, W]`` float in [0, 1] or uint8, C = 1 or 3 (tensor or array).
        label: text shown in the strip above the video.
        context: if set, the first ``context`` frames are observed/context frames (green
            border, "ctx" tag) and the rest are predictions (red border, "pred" tag).
            ``None``: no marker at all.
        metrics: optional per-frame numbers, ``{"PSNR": [v_0, v_1, ...]}`` indexed by frame;
            printed under the frame. Missing, ``None`` or NaN entries print nothing.
        ground_truth: the frames after ``context`` are the true future, not predictions:
            they get a grey border and a "gt" tag instead of red/"pred".
    """

    frames: ArrayLike
    label: str = ""
    context: int | None = None
    metrics: Mapping[str, Sequence[float | None]] | None = None
    ground_truth: bool = False

    def __post_init__(self) -> None:
        if self.context is not None and self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a composed video; boxes are ``(top, left, height, width)``.

    ``frame_boxes[i]`` is where panel ``i``'s upscaled frame lands (its marker border sits
    ``BORDER`` pixels around it), ``label_boxes[i]`` its label strip, ``metric_boxes[i]``
    its metrics strip (height 0 when no panel has metrics), ``header_box`` the title /
    frame-counter strip (height 0 when neither is shown).
    """

    height: int
    width: int
    frames: int
    header_box: tuple[int, int, int, int]
    frame_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    label_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    metric_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in default font (no file, no download); bitmap if FreeType is absent."""
    return ImageFont.load_default(size=size)


def _text_width(font, text: str) -> int:
    if not text:
        return 0
    left, _, right, _ = font.getbbox(text)
    return int(math.ceil(right - min(left, 0)))


def _line_height(font) -> int:
    _, top, _, bottom = font.getbbox("Ag|t=/0")
    return int(math.ceil(bottom)) + 3


def _elide(font, text: str, width: int) -> str:
    """``text`` cut (with "...") to fit ``width`` pixels."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "...") > width:
        text = text[:-1]
    return text + "..." if text else ""


def _font_size(scale: int) -> int:
    return 10 + max(1, scale)


def _normalise_panels(panels: Sequence[Panel | ArrayLike] | ArrayLike) -> list[Panel]:
    if isinstance(panels, (torch.Tensor, np.ndarray)):
        if panels.ndim == 5:
            return panels_from_batch(panels)
        if panels.ndim == 4:
            return [Panel(panels)]
        raise ValueError(f"expected panels, a video [T, C, H, W] or a batch [N, T, C, H, W], got {tuple(panels.shape)}")
    out = [p if isinstance(p, Panel) else Panel(p) for p in panels]
    if not out:
        raise ValueError("nothing to compose: no panels")
    return out


def panels_from_batch(
    videos: ArrayLike,
    labels: Sequence[str] | None = None,
    context: int | None = None,
) -> list[Panel]:
    """Split a batch ``[N, T, C, H, W]`` into panels (labels default to "0", "1", ...)."""
    if videos.ndim != 5:
        raise ValueError(f"expected a batch [N, T, C, H, W], got shape {tuple(videos.shape)}")
    n = videos.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} videos")
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    return [Panel(videos[i], label=labels[i], context=context) for i in range(n)]


def _default_columns(n: int) -> int:
    """All side by side up to 8 panels, then a near-square grid."""
    return n if n <= 8 else math.ceil(math.sqrt(n))


def plan_layout(
    panels: Sequence[Panel | ArrayLike] | ArrayLike,
    columns: int | None = None,
    scale: int = 2,
    frame_counter: bool = True,
    title: str | None = None,
) -> Layout:
    """Where everything of :func:`compose` goes, for the same arguments (no drawing)."""
    panels = _normalise_panels(panels)
    shapes = [_frames_shape(p.frames) for p in panels]
    return _plan(panels, shapes, columns, scale, frame_counter, title)


def _frames_shape(frames: ArrayLike) -> tuple[int, int, int]:
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ValueError(f"expected frames [T, C, H, W] with C in (1, 3), got shape {shape}")
    return shape[0], shape[2], shape[3]


def _plan(
    panels: list[Panel],
    shapes: list[tuple[int, int, int]],
    columns: int | None,
    scale: int,
    frame_counter: bool,
    title: str | None,
) -> Layout:
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    n = len(panels)
    cols = _default_columns(n) if columns is None else columns
    if cols < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    font = _font(_font_size(scale))
    line = _line_height(font)

    max_h = max(h for _, h, _ in shapes) * scale
    max_w = max(w for _, _, w in shapes) * scale
    n_metric_lines = max((len(p.metrics) for p in panels if p.metrics), default=0)
    header_h = line + 2 if (title or frame_counter) else 0
    label_h = line + 2
    metric_h = n_metric_lines * line + (2 if n_metric_lines else 0)
    cell_w = max(max_w + 2 * BORDER, MIN_CELL_WIDTH)
    cell_h = label_h + max_h + 2 * BORDER + metric_h

    width = PAD + cols * (cell_w + PAD)
    height = header_h + PAD + rows * (cell_h + PAD)
    frame_boxes, label_boxes, metric_boxes = [], [], []
    for i, (_, h, w) in enumerate(shapes):
        r, c = divmod(i, cols)
        top = header_h + PAD + r * (cell_h + PAD)
        left = PAD + c * (cell_w + PAD)
        fh, fw = h * scale, w * scale
        label_boxes.append((top, left, label_h, cell_w))
        frame_boxes.append((top + label_h + BORDER + (max_h - fh) // 2, left + (cell_w - fw) // 2, fh, fw))
        metric_boxes.append((top + label_h + max_h + 2 * BORDER, left, metric_h, cell_w))
    return Layout(
        height=height,
        width=width,
        frames=max(t for t, _, _ in shapes),
        header_box=(0, 0, header_h, width),
        frame_boxes=frame_boxes,
        label_boxes=label_boxes,
        metric_boxes=metric_boxes,
    )


def _marker(panel: Panel, index: int) -> tuple[RGB, str] | None:
    """Border colour and tag for frame ``index`` of ``panel`` (None: unmarked)."""
    if panel.context is None:
        return None
    if index < panel.context:
        return CONTEXT_COLOR, CONTEXT_TAG
    if panel.ground_truth:
        return TRUTH_COLOR, TRUTH_TAG
    return PREDICTED_COLOR, PREDICTED_TAG


def _metric_lines(metrics: Mapping[str, Sequence[float | None]] | None, index: int) -> list[str]:
    lines = []
    for name, values in (metrics or {}).items():
        value = values[index] if index < len(values) else None
        if value is None:
            lines.append("")
            continue
        value = float(value)
        lines.append("" if math.isnan(value) else f"{name} {value:.4g}")
    return lines


def compose(
    panels: Sequence[Panel | ArrayLike] | ArrayLike,
    columns: int | None = None,
    scale: int = 2,
    frame_counter: bool = True,
    title: str | None = None,
) -> np.ndarray:
    """Lay panels out side by side (a grid when many) into one viewer video.

    Args:
        panels: :class:`Panel` objects; bare ``[T, C, H, W]`` videos become unlabelled
            panels, and a whole batch ``[N, T, C, H, W]`` is split into N panels.
        columns: panels per row; default all in one row up to 8 panels, then ~square.
        scale: integer nearest-neighbour upscaling of every frame.
        frame_counter: print "t = 3/30" (1-based) in the header.
        title: optional text at the left of the header.

    Returns:
        ``uint8 [T, H', W', 3]`` with ``T`` the longest panel; shorter panels hold their
        last frame (and its marker and metrics). Use :func:`plan_layout` for the geometry.
    """
    panels = _normalise_panels(panels)
    videos = [to_uint8_frames(p.frames) for p in panels]
    shapes = [(v.shape[0], v.shape[1], v.shape[2]) for v in videos]
    lay = _plan(panels, shapes, columns, scale, frame_counter, title)
    font = _font(_font_size(scale))
    line = _line_height(font)
    tag_w = max(_text_width(font, s) for s in (CONTEXT_TAG, PREDICTED_TAG, TRUTH_TAG)) + 6

    # Static parts, drawn once: background, labels, title.
    base = Image.new("RGB", (lay.width, lay.height), BACKGROUND)
    draw = ImageDraw.Draw(base)
    for panel, (top, left, _, width) in zip(panels, lay.label_boxes):
        room = width - (tag_w + 4 if panel.context is not None else 0)
        draw.text((left + 1, top + 1), _elide(font, panel.label, room), font=font, fill=TEXT_COLOR)
    counter_room = _text_width(font, f"t = {lay.frames}/{lay.frames}") + 2 * PAD if frame_counter else 0
    if title:
        draw.text((PAD, 1), _elide(font, title, lay.width - PAD - counter_room), font=font, fill=TEXT_COLOR)

    out = np.empty((lay.frames, lay.height, lay.width, 3), dtype=np.uint8)
    for t in range(lay.frames):
        image = base.copy()
        draw = ImageDraw.Draw(image)
        if frame_counter:
            text = f"t = {t + 1}/{lay.frames}"
            draw.text((lay.width - PAD - _text_width(font, text), 1), text, font=font, fill=TEXT_COLOR)
        for panel, video, fbox, lbox, mbox in zip(panels, videos, lay.frame_boxes, lay.label_boxes, lay.metric_boxes):
            index = min(t, video.shape[0] - 1)          # shorter panels hold their last frame
            marker = _marker(panel, index)
            if marker is not None:
                colour, tag = marker
                top, left, h, w = fbox
                draw.rectangle((left - BORDER, top - BORDER, left + w + BORDER - 1, top + h + BORDER - 1), fill=colour)
                ltop, lleft, lh, lw = lbox
                x0 = lleft + lw - tag_w
                draw.rectangle((x0, ltop + 1, lleft + lw - 1, ltop + lh - 2), fill=colour)
                tx = x0 + (tag_w - _text_width(font, tag)) // 2
                draw.text((tx, ltop + 1), tag, font=font, fill=TAG_TEXT_COLOR)
            mtop, mleft, _, mw = mbox
            for k, text in enumerate(_metric_lines(panel.metrics, index)):
                if text:
                    draw.text((mleft + 1, mtop + 1 + k * line), _elide(font, text, mw - 2), font=font, fill=TEXT_COLOR)
        frame = np.asarray(image).copy()
        for video, (top, left, h, w) in zip(videos, lay.frame_boxes):
            index = min(t, video.shape[0] - 1)
            frame[top:top + h, left:left + w] = repeat(video[index], "h w c -> (h s1) (w s2) c", s1=scale, s2=scale)
        out[t] = frame
    return out


# ---------------------------------------------------------------------------------------
# Atomic file writing


@contextmanager
def _atomic_target(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success move it over ``path``.

    The temporary file keeps ``path``'s suffix (encoders that look at it still work), is
    created exclusively with the usual ``0o666 & ~umask`` permissions, is fsynced and then
    ``os.replace``-d over the destination. On any error it is removed and the destination is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_fps(fps: float) -> Fraction:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


# ---------------------------------------------------------------------------------------
# Writers


def write_mp4(path: PathLike, video: ArrayLike, fps: float = 8, crf: int = MP4_CRF) -> Path:
    """Write ``uint8 [T, H, W, 3]`` as H.264 MP4 (libx264, yuv420p, tagged BT.709).

    Odd heights/widths are padded to even by repeating the last row/column (yuv420p needs
    even sizes), so the file may be one pixel larger than the input. ``crf`` 12 keeps
    smooth content within a couple of grey levels; the file starts playing before it is
    fully downloaded (``+faststart``). Returns the path written.
    """
    video = _as_viewer_video(video)
    rate = _check_fps(fps)
    t, h, w, _ = video.shape
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with _atomic_target(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = video.shape[2], video.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(int(crf)), "preset": "medium"}
            cc = stream.codec_context
            cc.colorspace, cc.color_range = 1, 1                 # BT.709 matrix, limited range
            cc.color_primaries, cc.color_trc = 1, 1              # BT.709 primaries / transfer
            for frame in video:
                rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
                yuv = rgb.reformat(format="yuv420p", dst_colorspace=1, dst_color_range=1)
                for packet in stream.encode(yuv):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def _palette_image(frame: np.ndarray) -> Image.Image:
    """An exact "P" image when the frame has ≤ 256 colours, else a median-cut quantisation."""
    codes = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
    colours, index = np.unique(codes.ravel(), return_inverse=True)
    if len(colours) > 256:
        return Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image = Image.fromarray(index.reshape(frame.shape[:2]).astype(np.uint8), mode="P")
    palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1)
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    return image


def write_gif(path: PathLike, video: ArrayLike, fps: float = 8, loop: bool = True) -> Path:
    """Write ``uint8 [T, H, W, 3]`` as an animated GIF (Pillow), looping by default.

    Frames with at most 256 colours are stored exactly; richer frames are quantised to 256
    colours each, without dithering. GIF delays are whole centiseconds (so fps are rounded,
    and many viewers slow anything above 50 fps), and identical consecutive frames are
    merged into one longer frame by Pillow. Returns the path written.
    """
    video = _as_viewer_video(video)
    _check_fps(fps)
    images = [_palette_image(f) for f in video]
    options = {"duration": max(10, int(round(1000 / fps))), "disposal": 1}
    if loop:
        options["loop"] = 0                                     # 0 = forever; absent = play once
    with _atomic_target(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], **options)
    return Path(path)


def _tile(images: np.ndarray, nrow: int, padding: int, pad_value: int) -> np.ndarray:
    """``[N, H, W, 3]`` → one image, ``nrow`` tiles per row, ``padding`` pixels around each.

    Tile ``i`` sits at row ``i // nrow``, column ``i % nrow``, top-left corner
    ``(padding + r * (H + padding), padding + c * (W + padding))`` (torchvision's make_grid).
    """
    n, h, w, _ = images.shape
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    grid = np.full((padding + rows * (h + padding), padding + cols * (w + padding), 3), pad_value, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def _save_png(path: PathLike, image: np.ndarray) -> Path:
    with _atomic_target(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def write_png_grid(
    path: PathLike,
    images: ArrayLike,
    nrow: int = 8,
    padding: int = 2,
    pad_value: int = 255,
    scale: int = 1,
) -> Path:
    """Save images as one PNG grid.

    Args:
        images: ``[N, C, H, W]`` (``nrow`` images per row), or video rows
            ``[N, T, C, H, W]`` (one row per video, its T frames left to right; ``nrow`` is
            then ignored). Float in [0, 1] or uint8, C = 1 or 3.
        nrow: images per row for ``[N, C, H, W]``.
        padding: pixels between tiles and around the grid, filled with ``pad_value``.
        scale: integer nearest-neighbour upscaling of each image.

    Tile ``(r, c)`` has its top-left at ``(padding + r·(H·scale + padding),
    padding + c·(W·scale + padding))``. Returns the path written.
    """
    if images.ndim == 5:
        n, t = images.shape[:2]
        flat = to_uint8_frames(rearrange(images, "n t c h w -> (n t) c h w"))
        nrow = t
    elif images.ndim == 4:
        flat = to_uint8_frames(images)
    else:
        raise ValueError(f"expected images [N, C, H, W] or videos [N, T, C, H, W], got {tuple(images.shape)}")
    if scale < 1 or int(scale) != scale or nrow < 1 or padding < 0:
        raise ValueError(f"need scale >= 1 (integer), nrow >= 1, padding >= 0; got {scale}, {nrow}, {padding}")
    flat = repeat(flat, "n h w c -> n (h s1) (w s2) c", s1=scale, s2=scale)
    return _save_png(path, _tile(flat, nrow, padding, pad_value))


def write_video(path: PathLike, video: ArrayLike, fps: float = 8, nrow: int | None = None) -> Path:
    """Write a viewer video ``uint8 [T, H, W, 3]`` in the format named by the suffix.

    ``.mp4`` → :func:`write_mp4`, ``.gif`` → :func:`write_gif`, ``.png`` → a strip of the
    frames, ``nrow`` per row (default: all in one row), 2 white pixels apart.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, video, fps=fps)
    if suffix == ".gif":
        return write_gif(path, video, fps=fps)
    if suffix == ".png":
        video = _as_viewer_video(video)
        return _save_png(path, _tile(video, nrow or video.shape[0], padding=2, pad_value=255))
    raise ValueError(f"unsupported video suffix {suffix!r} for {path}: use .mp4, .gif or .png")


# ---------------------------------------------------------------------------------------
# Reading


def read_video(path: PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video (MP4, GIF, anything FFmpeg reads) to ``uint8 [T, H, W, 3]`` RGB.

    ``max_frames`` stops after that many frames (e.g. to take only the context frames).
    Colour conversion follows the stream's own colour tags (BT.601 when untagged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded")
    return np.stack(frames)


# ---------------------------------------------------------------------------------------
# The common figure


def render_prediction(
    path: PathLike,
    truth: ArrayLike,
    samples: ArrayLike,
    context: int,
    best_index: int | None = None,
    metrics: Mapping[str, ArrayLike] | None = None,
    scale: int = 2,
    fps: float = 8,
) -> Path:
    """Render ground truth | best sample | the other samples, labelled, context marked.

    Args:
        path: ``.mp4``, ``.gif`` or ``.png`` (strip of composed frames).
        truth: ``[T, C, H, W]``; its first ``context`` frames are the observed ones.
        samples: ``[S, T', C, H, W]`` predicted videos (their first ``context`` frames are
            taken to be the given context, as in SVG's rollouts).
        best_index: the sample to show second, labelled "best"; ``None`` keeps the order.
        metrics: per-sample, per-frame numbers ``{"PSNR": [S, T']}``; a length of
            ``T' - context`` is aligned to the predicted frames. Shown under each sample.
        scale, fps: upscaling and frame rate.

    Returns:
        The path written.
    """
    if samples.ndim != 5:
        raise ValueError(f"expected samples [S, T, C, H, W], got shape {tuple(samples.shape)}")
    s, t_samples = samples.shape[:2]
    if best_index is not None and not 0 <= best_index < s:
        raise ValueError(f"best_index {best_index} out of range for {s} samples")

    def sample_metrics(i: int) -> dict[str, list[float]] | None:
        if not metrics:
            return None
        out = {}
        for name, values in metrics.items():
            row = [float(v) for v in np.asarray(torch.as_tensor(values).detach().cpu().float())[i]]
            if len(row) == t_samples - context and context > 0:
                row = [math.nan] * context + row
            out[name] = row
        return out

    order = list(range(s))
    if best_index is not None:
        order.remove(best_index)
        order.insert(0, best_index)
    panels = [Panel(truth, label="ground truth", context=context, ground_truth=True)]
    for i in order:
        label = f"best sample ({i})" if i == best_index else f"sample {i}"
        panels.append(Panel(samples[i], label=label, context=context, metrics=sample_metrics(i)))
    return write_video(path, compose(panels, scale=scale), fps=fps)
