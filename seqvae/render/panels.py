"""Labelled side-by-side panels: one cell per video, context frames framed green,
predictions red, ground truth grey, per-frame metrics in a strip under each frame."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from einops import repeat
from PIL import Image, ImageDraw, ImageFont

from seqvae.render.arrays import RGB, ArrayLike, to_uint8_frames

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


def cut_labels(panels: Sequence[Panel | ArrayLike] | ArrayLike, columns: int | None = None, scale: int = 2,
               frame_counter: bool = True, title: str | None = None) -> list[str]:
    """The labels (and the title) that :func:`compose` with these arguments would cut short
    with "...": empty when every text fits its strip."""
    panels = _normalise_panels(panels)
    shapes = [_frames_shape(p.frames) for p in panels]
    lay = _plan(panels, shapes, columns, scale, frame_counter, title)
    font = _font(_font_size(scale))
    tag_w = max(_text_width(font, s) for s in (CONTEXT_TAG, PREDICTED_TAG, TRUTH_TAG)) + 6
    cut = [p.label for p, (_, _, _, width) in zip(panels, lay.label_boxes)
           if _elide(font, p.label, width - (tag_w + 4 if p.context is not None else 0)) != p.label]
    counter_room = _text_width(font, f"t = {lay.frames}/{lay.frames}") + 2 * PAD if frame_counter else 0
    if title and _elide(font, title, lay.width - PAD - counter_room) != title:
        cut.append(title)
    return cut


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
