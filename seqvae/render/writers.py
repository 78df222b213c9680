"""Writers (MP4, GIF, PNG grids and strips, all atomic) and a reader of videos."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from einops import rearrange, repeat
from PIL import Image

from seqvae.io import atomic_path
from seqvae.render.arrays import ArrayLike, PathLike, as_viewer_video, to_uint8_frames

MP4_CRF = 12         # libx264 constant-rate factor: low = high quality (18 ≈ "visually lossless")


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
    import av  # PyAV only where video is written or read: training and PNG figures do not need it

    video = as_viewer_video(video)
    rate = _check_fps(fps)
    t, h, w, _ = video.shape
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
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
    video = as_viewer_video(video)
    _check_fps(fps)
    images = [_palette_image(f) for f in video]
    options = {"duration": max(10, int(round(1000 / fps))), "disposal": 1}
    if loop:
        options["loop"] = 0                                     # 0 = forever; absent = play once
    with atomic_path(path) as tmp:
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


def save_png(path: PathLike, image: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
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
    return save_png(path, _tile(flat, nrow, padding, pad_value))


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
        video = as_viewer_video(video)
        return save_png(path, _tile(video, nrow or video.shape[0], padding=2, pad_value=255))
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
    import av

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
