"""Anti-aliased drawing on batches of frames: 1-D edge coverages, discs through the
linearised signed distance ``(r² − d²) / 2r`` (no square root), boxes as separable
products, and patches that composite a shape only inside its bounding box (gathered,
painted and scattered back for all frames at once)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def coverage(center: Tensor, half: Tensor | float, grid: Tensor, soft: float) -> Tensor:
    """Anti-aliased 1-D coverage of the interval ``center ± half`` at ``grid`` points.

    ``center``: ``[M]``; ``grid``: ``[M, G]`` -> ``[M, G]`` in [0, 1] with an edge ramp
    of width ``soft`` (table units).
    """
    dist = (grid - center[:, None]).abs()
    if isinstance(half, Tensor):
        half = half[:, None]
    return (0.5 + (half - dist) / soft).clamp_(0.0, 1.0)


def disc_alpha(center: Tensor, radius: float, xs: Tensor, ys: Tensor, soft: float) -> Tensor:
    """Anti-aliased coverage ``[M, h, w]`` of discs centred at ``[M, 2]`` on the pixel
    centres ``xs [M, w]`` × ``ys [M, h]``, with an edge ramp of width ``soft``.

    Uses the linearised signed distance ``(r² − d²) / 2r`` (exact at the edge to first
    order), so each pixel costs one add and one clamp on top of separable terms.
    """
    scale = 1.0 / (2.0 * radius * soft)
    dx = xs - center[:, 0:1]
    dy = ys - center[:, 1:2]
    ex = (0.5 + radius * radius * scale) - dx * dx * scale
    ey = -(dy * dy * scale)
    return (ey[:, :, None] + ex[:, None, :]).clamp_(0.0, 1.0)



def patch_size(extent: float, px: float) -> int:
    """Side (pixels) of a patch that holds a shape reaching ``extent`` from its centre."""
    return 2 * int(math.ceil(extent / px + 0.5)) + 2


class Canvas:
    """``M`` frames being painted, stored planar as float ``[3, M·S·S]``.

    A shape touches only the pixels of its bounding patch (:class:`Patch`): select them,
    composite, copy them back.
    """

    def __init__(self, table: Tensor, T: int) -> None:
        E, _, S, _ = table.shape
        self.S, self.M, self.px = S, E * T, 2.0 / S
        planes = table.transpose(0, 1)[:, :, None].expand(3, E, T, S, S)
        self.buf = planes.reshape(3, self.M * S * S)   # a copy: every frame gets its own pixels
        self.base = torch.arange(self.M, device=table.device)[:, None] * (S * S)

    def patch(self, cx: Tensor, cy: Tensor, w: int, h: int) -> "Patch":
        """The ``w × h`` pixels around ``(cx, cy)`` (table units, ``[M]``) of every frame. A
        patch that would hang over the border is shifted inside (it still holds every
        visible pixel of a shape it was sized for)."""
        S, dev = self.S, cx.device
        w, h = min(w, S), min(h, S)
        col0 = (torch.floor((cx + 1.0) / self.px) - (w // 2)).clamp(0, S - w)
        row0 = (torch.floor((cy + 1.0) / self.px) - (h // 2)).clamp(0, S - h)
        cols = col0[:, None] + torch.arange(w, device=dev, dtype=torch.float32)
        rows = row0[:, None] + torch.arange(h, device=dev, dtype=torch.float32)
        idx = ((rows.long() * S + self.base)[:, :, None] + cols.long()[:, None, :]).view(-1)
        return Patch(self, idx, (cols + 0.5) * self.px - 1.0, (rows + 0.5) * self.px - 1.0)

    def frames(self) -> Tensor:
        """The painted images as ``uint8 [M, 3, S, S]`` (rounded)."""
        S = self.S
        img = self.buf.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
        return img.view(3, self.M, S, S).transpose(0, 1).contiguous()


class Patch:
    """Pixels of one patch per frame, planar ``[3, M, h, w]``, with their centres
    ``xs [M, w]``, ``ys [M, h]`` (table units). Paint into it, then :meth:`commit` it."""

    def __init__(self, canvas: Canvas, idx: Tensor, xs: Tensor, ys: Tensor) -> None:
        self.canvas, self.idx, self.xs, self.ys = canvas, idx, xs, ys
        self.pixels = canvas.buf.index_select(1, idx).view(3, canvas.M, ys.shape[1], xs.shape[1])

    def disc(self, centre: Tensor, radius: float, edge: float) -> Tensor:
        return disc_alpha(centre, radius, self.xs, self.ys, edge)

    def box(self, centre: Tensor, half: float, edge: float) -> Tensor:
        """Coverage ``[M, h, w]`` of axis-aligned squares ``centre ± half``."""
        return coverage(centre[:, 1], half, self.ys, edge)[:, :, None] * \
            coverage(centre[:, 0], half, self.xs, edge)[:, None, :]

    def paint(self, alpha: Tensor, color: Tensor) -> None:
        """Composite ``color`` (``[3]``, ``[M, 3]``, or ``[M, w, 3]`` per column) with
        coverage ``alpha [M, h, w]``."""
        if color.dim() == 1:
            color = color[:, None, None, None]
        elif color.dim() == 2:
            color = color.t()[:, :, None, None]
        else:
            color = color.permute(2, 0, 1)[:, :, None, :]
        self.pixels.lerp_(color.expand_as(self.pixels), alpha)

    def darken(self, alpha: Tensor, strength: float) -> None:
        """Multiply by ``1 − strength·alpha`` (a shadow)."""
        self.pixels.mul_(1.0 - strength * alpha)

    def commit(self) -> None:
        self.canvas.buf.index_copy_(1, self.idx, self.pixels.view(3, -1))
