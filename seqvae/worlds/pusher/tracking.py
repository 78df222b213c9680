"""Where a thing of known colour is in a frame: a soft colour-matching centroid with
mean-shift refinement, used to track the pusher's objects and gripper in true and
predicted frames (planning costs, object-motion metrics)."""
from __future__ import annotations

import torch
from torch import Tensor

from seqvae.io import frames_to_float
from seqvae.worlds.pusher.render import pixel_centres


def locate_color(frames: Tensor, color: Tensor, temperature: float = 0.1, prior: Tensor | None = None,
                 prior_weight: float = 2.0, window: float = 0.25, iterations: int = 3,
                 with_mass: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Where a thing of known colour is: a soft colour-matching centroid, in table units.

    Each pixel weighs ``w = exp(−‖pixel − color‖² / (2·temperature²))``. The position is
    first the ``w``-weighted mean of the pixel centres (``x`` right, ``y`` down, the table
    is ``[-1, 1]²``) — or, given a ``prior [..., 2]`` (e.g. where the thing was last
    seen), that position — then ``iterations`` mean-shift steps re-weight the pixels by a
    Gaussian window of std ``window`` around the current estimate, so that table patches
    (or smeared predictions) of a similar colour far from the thing stop pulling at it.
    The prior also adds ``prior_weight`` pixels' worth of mass at its position, so a
    frame where the colour has (nearly) vanished — a blurry prediction, an occlusion —
    returns about the prior instead of noise.

    Args:
        frames: ``[..., 3, H, W]`` floats in [0, 1] (uint8 is scaled).
        color: ``[3]`` or ``[..., 3]`` (broadcast against the frames' leading dims).
        with_mass: also return the colour's mass ``Σ_pixels w`` ``[...]`` (about the visible
            area in pixels of a thing of that colour).
    Returns:
        ``[..., 2]`` positions (and the masses).
    """
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"frames must be [..., 3, H, W], got {tuple(frames.shape)}")
    f = frames_to_float(frames)
    c = color.to(f.device, torch.float32)[..., :, None, None]                    # (..., 3, 1, 1)
    w = torch.exp(-((f - c) ** 2).sum(-3) / (2.0 * temperature * temperature))  # (..., H, W)
    xs = pixel_centres(f.shape[-1], f.device)                                    # (W,)
    ys = pixel_centres(f.shape[-2], f.device)                                    # (H,)
    p = prior.to(f.device, torch.float32).expand(*w.shape[:-2], 2) if prior is not None else None

    def centroid(around: Tensor | None) -> Tensor:
        """Mean of the pixel centres weighted by ``w``, times a Gaussian window at ``around``."""
        if around is None:
            col, row, k = w.sum(-2), w.sum(-1), prior_weight                      # (..., W), (..., H)
        else:
            wx = torch.exp(-(xs - around[..., 0:1]) ** 2 / (2 * window**2))      # (..., W)
            wy = torch.exp(-(ys - around[..., 1:2]) ** 2 / (2 * window**2))      # (..., H)
            col = (w * wy[..., :, None]).sum(-2) * wx
            row = (w * wx[..., None, :]).sum(-1) * wy
            k = None if p is None else prior_weight * torch.exp(-((p - around) ** 2).sum(-1) / (2 * window**2))
        mass, mx, my = col.sum(-1), (col * xs).sum(-1), (row * ys).sum(-1)
        if p is not None:
            mass, mx, my = mass + k, mx + k * p[..., 0], my + k * p[..., 1]
        mass = mass.clamp(min=1e-12)
        return torch.stack([mx / mass, my / mass], -1)

    est = centroid(None) if p is None else p
    for _ in range(iterations):
        est = centroid(est)
    return (est, w.sum((-2, -1))) if with_mass else est
