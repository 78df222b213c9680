"""Decoding user videos with PyAV: the error a damaged file gives (:class:`VideoDecodeError`)
and the one resize of the ``video_folder`` data set (:class:`FrameSquarer`), shared by the
data set (:mod:`seqvae.data.videos`) and its frame cache (:mod:`seqvae.data.video_cache`)."""
from __future__ import annotations

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video file could not be opened or decoded (the message names the file)."""


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a declared dependency
        raise ImportError("the video_folder data set needs PyAV: pip install av") from err
    return av


class FrameSquarer:
    """Decoded frames of one stream → ``uint8 [3, size, size]``: centre-cropped to a square
    and scaled by FFmpeg's filters (``crop``, then ``scale`` with area averaging, i.e.
    antialiased) — the one resize of this data set, cached or not, at about the speed of
    decoding itself."""

    def __init__(self, stream, size: int) -> None:
        self.stream, self.size, self.graph = stream, size, None

    def _build(self, frame) -> None:
        av = _av()
        side = min(frame.width, frame.height)
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(template=self.stream),
                 graph.add("crop", f"{side}:{side}:(iw-{side})/2:(ih-{side})/2"),
                 graph.add("scale", f"{self.size}:{self.size}:flags=area"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        self.graph = graph

    def __call__(self, frame) -> np.ndarray:
        if self.graph is None:
            self._build(frame)
        self.graph.push(frame)
        return np.ascontiguousarray(self.graph.pull().to_ndarray().transpose(2, 0, 1))
