"""Rendering of the pushing world: a procedural table texture (wood planks with grain,
or tiles; per-episode colours, lighting and fine noise, all deterministic from the
episode's random numbers), then shadows, objects, arm and gripper painted with
:mod:`~seqvae.worlds.pusher.canvas`. Used through :class:`~seqvae.worlds.pusher.sim.PusherSim`."""
from __future__ import annotations

import torch
from torch import Tensor

from seqvae.worlds.pusher.canvas import Canvas, coverage, patch_size
from seqvae.worlds.pusher.world import (
    ARM_COLOR,
    GRIPPER_INNER,
    GRIPPER_OUTLINE,
    TEX_GRAIN_FREQ,
    TEX_LIGHT_X,
    TEX_LIGHT_Y,
    TEX_NOISE_SEED,
    TEX_OFFSET_U,
    TEX_OFFSET_V,
    TEX_PHASE,
    TEX_SCALE,
    TEX_STYLE,
    TEX_VERTICAL,
    TEX_WARP_AMP,
    TEX_WARP_FREQ,
    PusherConfig,
    PusherState,
)


def _hash_uniform(x: Tensor) -> Tensor:
    """A uniform in [0, 1) from non-negative int64 ``x`` by an integer hash (exact on any device)."""
    m = 0xFFFFFFFF  # every product below stays under 2^63: no int64 overflow
    h = ((x & m) * 0x2C9277B5 + 0x6A09E667) & m
    h = h ^ (h >> 15)
    h = (h * 0x5BD1E995) & m
    h = h ^ (h >> 13)
    h = (h * 0x27D4EB2F) & m
    h = h ^ (h >> 16)
    return h.float() * (1.0 / 4294967296.0)


def _wave(x: Tensor) -> Tensor:
    """A smooth periodic bump in [0, 1] with period 1 (a parabolic stand-in for a sine)."""
    f = x - torch.floor(x)
    return 4.0 * f * (1.0 - f)


def pixel_centres(size: int, device: torch.device | str | None = None) -> Tensor:
    """Table coordinates of the pixel centres of a ``size``-pixel axis (the table is [-1, 1])."""
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0


def render_trajectory(c: PusherConfig, state: PusherState, gripper_pos: Tensor, object_pos: Tensor,
                      goal: Tensor | None = None, chunk_frames: int = 64) -> Tensor:
    """Render ``T`` time steps per episode: ``gripper_pos [N, T, 2]``, ``object_pos
    [N, T, K, 2]`` with the appearance (colours, texture, active objects) of ``state``
    -> ``uint8 [N, T, 3, H, W]``. Works in chunks of about ``chunk_frames`` frames to
    bound memory (planning may render thousands of rollouts)."""
    N, T = gripper_pos.shape[:2]
    S = c.image_size
    out = torch.empty(N, T, 3, S, S, dtype=torch.uint8, device=state.device)
    per_chunk = max(1, chunk_frames // max(T, 1))
    for lo in range(0, N, per_chunk):
        hi = min(N, lo + per_chunk)
        g = goal[lo:hi] if goal is not None else None
        out[lo:hi] = _render_chunk(c, state.index(slice(lo, hi)), gripper_pos[lo:hi], object_pos[lo:hi], g)
    return out


def table_image(c: PusherConfig, state: PusherState) -> Tensor:
    """The bare table of each episode: float ``[N, 3, H, W]`` in [0, 1]."""
    S, px = c.image_size, c.pixel
    grid = pixel_centres(S, state.device)
    tex = state.texture
    col = lambda i: tex[:, i][:, None, None]  # noqa: E731  [N, 1, 1]
    x = grid[None, None, :].expand(tex.shape[0], S, S)
    y = grid[None, :, None].expand(tex.shape[0], S, S)
    vertical = col(TEX_VERTICAL) > 0.5
    u_, v_ = torch.where(vertical, y, x), torch.where(vertical, x, y)  # along / across the grain
    scale = col(TEX_SCALE)

    # Wood: planks across v with a per-plank shade and dark seams; warped grain lines.
    pv = (v_ + col(TEX_OFFSET_V)) / scale
    plank = torch.floor(pv)
    seam = ((pv - plank) * scale / px).clamp(0.0, 1.0)         # 0 on the seam, 1 a pixel away
    seed = col(TEX_NOISE_SEED).long()
    shade = 0.92 + 0.16 * _hash_uniform(plank.long() + 4096 + seed * 8191)
    warp = col(TEX_WARP_AMP) * _wave(col(TEX_WARP_FREQ) * u_ + col(TEX_PHASE) + 0.37 * plank)
    grain = _wave(col(TEX_GRAIN_FREQ) * (v_ + warp) + 0.53 * plank)
    wood_mix = 0.55 * grain * grain
    wood_gain = shade * (0.70 + 0.30 * seam)

    # Tiles: a two-tone checkerboard with light grout lines.
    tu = (x + col(TEX_OFFSET_U)) / scale
    tv = (y + col(TEX_OFFSET_V)) / scale
    fu, fv = torch.floor(tu), torch.floor(tv)
    checker = torch.remainder(fu + fv, 2.0)
    edge = torch.minimum(torch.minimum(tu - fu, 1.0 - (tu - fu)), torch.minimum(tv - fv, 1.0 - (tv - fv)))
    grout = (1.0 - edge * scale / (0.75 * px)).clamp(0.0, 1.0)
    tile_gain = 1.0 + 0.25 * grout

    tiles = col(TEX_STYLE) > 0.5
    mix = torch.where(tiles, 0.65 * checker, wood_mix)
    gain = torch.where(tiles, tile_gain, wood_gain)

    # Fine per-pixel noise and a gentle light gradient with vignetting.
    pix = torch.arange(S * S, device=state.device).view(1, S, S)
    noise = _hash_uniform(pix + seed * 65536) - 0.5
    light = 1.0 + col(TEX_LIGHT_X) * x + col(TEX_LIGHT_Y) * y - 0.06 * (x * x + y * y)
    gain = gain * light * (1.0 + 0.06 * noise)

    if c.texture_contrast != 1.0:                              # pull the pattern towards its base
        mix = mix * c.texture_contrast
        gain = 1.0 + (gain - 1.0) * c.texture_contrast
    base = state.table_color[:, 0, :, None, None]
    second = state.table_color[:, 1, :, None, None]
    img = base + (second - base) * mix[:, None]
    return (img * gain[:, None]).clamp(0.0, 1.0)


def _render_chunk(c: PusherConfig, state: PusherState, gripper_pos: Tensor, object_pos: Tensor,
                  goal: Tensor | None) -> Tensor:
    """Paint ``E`` episodes × ``T`` steps onto their tables -> ``uint8 [E, T, 3, S, S]``."""
    E, T = gripper_pos.shape[:2]
    K, S, px = state.num_objects, c.image_size, c.pixel
    dev = state.device
    M = E * T
    g = gripper_pos.reshape(M, 2).float()
    active = state.object_active.repeat_interleave(T, dim=0)                 # [M, K]
    objs = object_pos.reshape(M, K, 2).float()
    colors = state.object_color.repeat_interleave(T, dim=0)                  # [M, K, 3]
    h, r = c.gripper_radius, c.object_radius
    arm_half = 0.45 * h
    soft = 2.5 * px                                                          # shadow edge width
    off = torch.tensor([0.035, 0.045], device=dev)                           # shadow offset (down-right)
    shade = c.shadow_strength
    canvas = Canvas(table_image(c, state), T)

    # Goal ring (under the objects).
    if goal is not None:
        gg = goal.to(dev).float().repeat_interleave(T, dim=0)
        patch = canvas.patch(gg[:, 0], gg[:, 1], patch_size(r + px, px), patch_size(r + px, px))
        ring = patch.disc(gg, r, px) - patch.disc(gg, r - 1.5 * px, px)
        patch.paint(ring.clamp_(0.0, 1.0), (0.5 + 0.5 * colors[:, 0]).clamp(0.0, 1.0))
        patch.commit()

    # Objects, each in one patch: its soft shadow, a darker rim, then the body shifted
    # up-left (a hint of relief).
    size = patch_size(r + soft / 2 + 0.3 * 0.045, px)
    for k in range(K):
        on = active[:, k, None, None].float()
        centre = objs[:, k]
        mid = centre + 0.3 * off
        patch = canvas.patch(mid[:, 0], mid[:, 1], size, size)
        if shade > 0:
            patch.darken(patch.disc(centre + 0.6 * off, r, soft) * on, shade)
        patch.paint(patch.disc(centre, r, px) * on, colors[:, k] * 0.55)
        patch.paint(patch.disc(centre - 0.35 * px, r - 1.2 * px, px) * on, colors[:, k])
        patch.commit()

    # The robot, in one full-height strip: shadows of arm and gripper, a vertical arm to
    # the top edge with cylindrical shading, the gripper (light outline, dark inside).
    width = patch_size(h + soft / 2 + 0.5 * 0.035 + px, px)
    mid = g[:, 0] + 0.5 * off[0]
    patch = canvas.patch(mid, torch.zeros_like(mid), width, S)
    top = torch.full((M,), -1.0 - 4.0 * px, device=dev)                      # the arm leaves the image

    def arm(centre: Tensor, edge: float) -> Tensor:
        ay = coverage((top + centre[:, 1]) / 2, (centre[:, 1] - top) / 2, patch.ys, edge)
        return ay[:, :, None] * coverage(centre[:, 0], arm_half, patch.xs, edge)[:, None, :]

    if shade > 0:
        patch.darken(torch.maximum(arm(g + off, soft), patch.box(g + off, h, soft)), shade)
    across = ((patch.xs - g[:, 0:1]) / arm_half).clamp(-1.0, 1.0)            # [M, w]
    lit = 0.70 + 0.40 * (1.0 - across * across) - 0.10 * across
    arm_color = (lit[:, :, None] * torch.tensor(ARM_COLOR, device=dev)).clamp(0.0, 1.0)
    patch.paint(arm(g, px), arm_color)                                       # [M, w, 3]
    patch.paint(patch.box(g, h, px), torch.tensor(GRIPPER_OUTLINE, device=dev))
    patch.paint(patch.box(g, h - 1.5 * px, px), torch.tensor(GRIPPER_INNER, device=dev))
    patch.commit()

    return canvas.frames().view(E, T, 3, S, S)

