"""A still, labelled grid of videos: one row per panel (its label at the left), one column
per shown time step (numbered 1, 2, … like the MP4s' frame counter), frames framed by the
same markers as the videos (green context, red predicted, grey ground truth). Long videos
are subsampled to at most ``max_columns`` evenly spaced steps (the first and last kept)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from einops import repeat
from PIL import Image, ImageDraw

from seqvae.render.arrays import PathLike, to_uint8_frames
from seqvae.render.panels import BACKGROUND, BORDER, PAD, TEXT_COLOR, Panel, _elide, _font, _marker, _text_width
from seqvae.render.writers import save_png

LABEL_WIDTH = 150  # pixels of the label column


def shown_steps(length: int, max_columns: int) -> list[int]:
    """At most ``max_columns`` evenly spaced indices of ``range(length)``, first and last included."""
    if length <= max_columns:
        return list(range(length))
    if max_columns < 2:
        return [0]
    return sorted({round(i * (length - 1) / (max_columns - 1)) for i in range(max_columns)})


def compose_grid(panels: Sequence[Panel], max_columns: int = 12, scale: int = 1,
                 title: str | None = None) -> np.ndarray:
    """The grid as ``uint8 [H, W, 3]`` (see the module docstring)."""
    if not panels:
        raise ValueError("nothing to draw: no panels")
    videos = [to_uint8_frames(p.frames) for p in panels]                        # each [T, h, w, 3]
    length = max(v.shape[0] for v in videos)
    steps = shown_steps(length, max_columns)
    h, w = videos[0].shape[1] * scale, videos[0].shape[2] * scale
    font = _font(11)
    cell_w, cell_h = w + 2 * BORDER + PAD, h + 2 * BORDER + PAD
    header = 16 + (16 if title else 0)
    width = PAD + LABEL_WIDTH + len(steps) * cell_w
    height = header + len(panels) * cell_h + PAD
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((PAD, 2), _elide(font, title, width - 2 * PAD), fill=TEXT_COLOR, font=font)
    for c, t in enumerate(steps):
        x = PAD + LABEL_WIDTH + c * cell_w + BORDER
        text = f"t={t + 1}"
        draw.text((x + (w - _text_width(font, text)) // 2, header - 15), text, fill=TEXT_COLOR, font=font)
    for r, (panel, video) in enumerate(zip(panels, videos)):
        top = header + r * cell_h
        draw.text((PAD, top + BORDER + h // 2 - 6), _elide(font, panel.label, LABEL_WIDTH - 6), fill=TEXT_COLOR,
                  font=font)
        for c, t in enumerate(steps):
            if t >= video.shape[0]:
                continue
            left = PAD + LABEL_WIDTH + c * cell_w
            marker = _marker(panel, t)
            if marker is not None:
                draw.rectangle([left, top, left + w + 2 * BORDER - 1, top + h + 2 * BORDER - 1], fill=marker[0])
            frame = repeat(video[t], "h w c -> (h s1) (w s2) c", s1=scale, s2=scale)
            image.paste(Image.fromarray(np.ascontiguousarray(frame)), (left + BORDER, top + BORDER))
    return np.asarray(image)


def write_panel_grid(path: PathLike, panels: Sequence[Panel], max_columns: int = 12, scale: int = 1,
                     title: str | None = None) -> Path:
    """Save :func:`compose_grid` as a PNG (atomically); returns the path."""
    return save_png(path, compose_grid(panels, max_columns, scale, title))
