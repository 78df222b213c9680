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

Every writer is atomic (:func:`seqvae.io.atomic_path`): a reader (or a crash) never sees
half a file and a failed write leaves an existing file untouched. Parent folders are created.
"""
from seqvae.render.arrays import to_uint8_frames
from seqvae.render.figures import prediction_panels, render_prediction
from seqvae.render.grid import compose_grid, write_panel_grid
from seqvae.render.panels import (
    BACKGROUND,
    CONTEXT_COLOR,
    PREDICTED_COLOR,
    TRUTH_COLOR,
    Layout,
    Panel,
    compose,
    cut_labels,
    panels_from_batch,
    plan_layout,
)
from seqvae.render.writers import read_video, write_gif, write_mp4, write_png_grid, write_video

__all__ = [
    "BACKGROUND", "CONTEXT_COLOR", "compose_grid", "write_panel_grid", "PREDICTED_COLOR", "TRUTH_COLOR", "Layout",
    "Panel", "compose", "cut_labels", "panels_from_batch", "plan_layout", "prediction_panels", "read_video",
    "render_prediction",
    "to_uint8_frames", "write_gif", "write_mp4", "write_png_grid", "write_video",
]
