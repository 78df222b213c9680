"""Fréchet Inception Distance (Heusel et al. 2017) with torch-fidelity's Inception.

    FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

between Gaussians fitted to Inception-v3 pool3 features (2048-d) of two image sets. The
features come from ``torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3``
(the TF-compatible port used by torch-fidelity and pytorch-fid): it takes uint8 RGB
``[N, 3, H, W]``, resizes to 299×299 with TF1-style bilinear interpolation (so 32×32 or
64×64 frames go in as they are) and scales to [-1, 1] itself. Grayscale input is repeated
to three channels here. Its weights
(``weights-inception-2015-12-05-6726825d.pth``) are looked up locally and never
downloaded implicitly: pass ``weights_path``, or put the file in
``torch.hub.get_dir()/checkpoints/``; otherwise :class:`~seqvae.evaluation.weights.MissingWeightsError`.

The trace of the matrix square root is computed by default from the eigenvalues of the
symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (same spectrum as Σ₁Σ₂), which is real, stable for
the rank-deficient covariances of small sets and ~4× faster than ``scipy.linalg.sqrtm``
(available as ``method="sqrtm"``, the pytorch-fid recipe). For sets smaller than the
feature dimension :func:`frechet_distance_features` gets the same trace exactly from an
n_a×n_b SVD of the centred features.
"""
from __future__ import annotations

import os
from typing import Iterable, Literal

import numpy as np
import torch
from torch import Tensor

from seqvae.evaluation.weights import (
    MissingWeightsError,  # noqa: F401  (what inception_weights_path raises)
    WeightsSource,
    find_weights,
    hub_checkpoint,
    load_state_dict_file,
)

__all__ = [
    "INCEPTION_URL",
    "frechet_distance",
    "feature_statistics",
    "frechet_distance_features",
    "inception_source",
    "inception_weights_path",
    "load_inception",
    "inception_features",
    "compute_fid",
]

try:  # torch-fidelity is a declared dependency; keep import errors readable anyway
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3 as INCEPTION_URL
except ImportError:  # pragma: no cover
    INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                     "weights-inception-2015-12-05-6726825d.pth")

Images = Tensor | Iterable[Tensor]


def _np64(x: np.ndarray | Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues → 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray | Tensor,
    sigma1: np.ndarray | Tensor,
    mu2: np.ndarray | Tensor,
    sigma2: np.ndarray | Tensor,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982).

    ``‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}``, in float64.
    ``method="eigh"``: tr (Σ₁Σ₂)^{1/2} = Σ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}), a symmetric PSD eigenproblem.
    ``method="sqrtm"``: ``scipy.linalg.sqrtm(Σ₁Σ₂)`` as in pytorch-fid, adding ``eps·I`` to
    both covariances if the result is not finite and dropping a negligible imaginary part.
    """
    m1, m2 = np.atleast_1d(_np64(mu1)), np.atleast_1d(_np64(mu2))
    s1, s2 = np.atleast_2d(_np64(sigma1)), np.atleast_2d(_np64(sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"frechet_distance: shapes disagree: mu {m1.shape}, {m2.shape}; sigma {s1.shape}, {s2.shape}")
    diff = m1 - m2
    if method == "eigh":
        r = _sqrt_psd(s1)
        inner = r @ s2 @ r
        lam = np.linalg.eigvalsh((inner + inner.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    elif method == "sqrtm":
        import warnings

        from scipy import linalg

        with warnings.catch_warnings():  # singular input: judged below by finiteness / imaginary part
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm(s1 @ s2)
            if not np.isfinite(covmean).all():
                offset = np.eye(s1.shape[0]) * eps
                covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            imag = np.max(np.abs(covmean.imag))
            if imag > 1e-3 * max(1.0, np.max(np.abs(covmean.real))):
                raise ValueError(f"frechet_distance: sqrtm has a large imaginary component {imag:.3g}; "
                                 "try method='eigh'")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"frechet_distance: method must be 'eigh' or 'sqrtm', got {method!r}")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_features(features_a: np.ndarray | Tensor, features_b: np.ndarray | Tensor) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets.

    Identical in value to ``frechet_distance(*feature_statistics(a), *feature_statistics(b))``.
    When a set has fewer points than dimensions the covariances are low rank and the trace
    term is computed exactly in the small space: with centred features X_a [n_a, D],
    X_b [n_b, D], the non-zero eigenvalues of Σ_aΣ_b are the squared singular values of
    X_a X_bᵀ / √((n_a−1)(n_b−1)), so tr (Σ_aΣ_b)^{1/2} is that matrix's nuclear norm —
    an n_a×n_b SVD instead of two D×D eigendecompositions.
    """
    fa, fb = _np64(features_a), _np64(features_b)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1] or min(fa.shape[0], fb.shape[0]) < 2:
        raise ValueError(f"frechet_distance_features: need [N ≥ 2, D] sets of one D, got {fa.shape}, {fb.shape}")
    d = fa.shape[1]
    if max(fa.shape[0], fb.shape[0]) > d:
        return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    ca, cb = fa.shape[0] - 1, fb.shape[0] - 1
    xa, xb = fa - fa.mean(0), fb - fb.mean(0)
    diff = fa.mean(0) - fb.mean(0)
    tr_covmean = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum()) / np.sqrt(ca * cb)
    return float(diff @ diff + (xa * xa).sum() / ca + (xb * xb).sum() / cb - 2.0 * tr_covmean)


def feature_statistics(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov``, rowvar=False) of ``[N, D]`` features, float64."""
    f = _np64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics: need [N ≥ 2, D] features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def inception_source() -> WeightsSource:
    """Where FID's Inception weights come from (for :func:`~seqvae.evaluation.weights.find_weights`):
    torch-fidelity's file in ``torch.hub.get_dir()/checkpoints/``, downloadable from :data:`INCEPTION_URL`."""
    fname = os.path.basename(INCEPTION_URL)
    return WeightsSource(
        metric="FID",
        needs=f"torch-fidelity's Inception-v3 weights {fname}",
        accepts=f"torch-fidelity's Inception-v3 state_dict {fname} (from {INCEPTION_URL})",
        cache=hub_checkpoint(fname),
        cache_note="torch.hub.get_dir()/checkpoints/, torch-fidelity's cache; move it with $TORCH_HOME",
        flags="`--inception-weights FILE` (seqvae eval, seqvae analyze) "
              "or weights_path=FILE (compute_fid, load_inception)",
        url=INCEPTION_URL,
    )


def inception_weights_path(weights_path: str | os.PathLike | None = None, download: bool = False) -> str:
    """Resolve the Inception weights file, never touching the network unless ``download``.

    Order: ``weights_path`` → ``torch.hub.get_dir()/checkpoints/<file>`` (torch-fidelity's
    cache) → download (only if ``download=True``). Raises :class:`MissingWeightsError`
    naming the URL, the searched path and the setting otherwise (the lookup is
    :func:`~seqvae.evaluation.weights.find_weights`).
    """
    return str(find_weights(inception_source(), weights_path, download))


def load_inception(
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
) -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` giving the 2048-d pool3 features, on ``device``.

    The weights file is read here as tensors only (``weights_only=True`` or safetensors); torch-fidelity,
    which would unpickle a path with ``weights_only=False``, only ever receives those tensors.
    """
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    path = inception_weights_path(weights_path, download)
    state = load_state_dict_file(path, "FID Inception")
    # The extractor's constructor loads its weights itself: from the path (unsafely) or from
    # load_state_dict_from_url. Hand it our tensors through the latter, with no path and no download.
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *args, **kwargs: state):
        try:
            model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=None)
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys, wrong shapes
            raise ValueError(f"FID: {path} is not torch-fidelity's Inception-v3 state_dict "
                             f"({str(err).splitlines()[0][:200]})") from None
    return model.to(device).eval()


def _batches(images: Images, batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        flat = images.reshape(-1, *images.shape[-3:]) if images.dim() > 4 else images
        for i in range(0, flat.shape[0], batch_size):
            yield flat[i:i + batch_size]
    else:
        for batch in images:
            yield from _batches(batch, batch_size)


@torch.no_grad()
def inception_features(
    images: Images,
    extractor: torch.nn.Module,
    batch_size: int = 50,
    device: str | torch.device | None = None,
) -> Tensor:
    """Pool3 features ``[N, 2048]`` (float64, CPU) of uint8 images.

    ``images``: a uint8 tensor ``[..., C, H, W]`` with C ∈ {1, 3} (leading dims flattened,
    so videos ``[B, T, C, H, W]`` work) or an iterable of such batches. C = 1 is repeated
    to RGB; any H×W is resized to 299×299 by the extractor.
    """
    dev = torch.device(device) if device is not None else next(extractor.parameters()).device
    feats = []
    for batch in _batches(images, batch_size):
        if batch.dtype != torch.uint8:
            raise TypeError(f"FID expects uint8 images in [0, 255], got {batch.dtype}; convert floats in [0, 1] "
                            f"with (x * 255).round().clamp(0, 255).to(torch.uint8)")
        if batch.dim() != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(f"FID expects images [N, 1 or 3, H, W], got {tuple(batch.shape)}")
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        (f,) = extractor(batch.to(dev))
        feats.append(f.double().cpu())
    if not feats:
        raise ValueError("FID: no images given")
    return torch.cat(feats)


def compute_fid(
    images_a: Images,
    images_b: Images,
    weights_path: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    download: bool = False,
    method: Literal["eigh", "sqrtm"] = "eigh",
) -> float:
    """FID between two sets of uint8 images (see :func:`inception_features` for the input forms).

    Inception weights: ``weights_path`` or the torch hub cache (see
    :func:`inception_weights_path`); :class:`MissingWeightsError` before any network access
    otherwise. Use ≥ 2048 images per set for a full-rank covariance (FID is biased upward
    for small sets; compare values only at equal set sizes).
    """
    extractor = load_inception(weights_path, device, download)
    feats_a = inception_features(images_a, extractor, batch_size, device)
    feats_b = inception_features(images_b, extractor, batch_size, device)
    if method == "eigh":
        return frechet_distance_features(feats_a, feats_b)  # low-rank route for sets smaller than 2048
    return frechet_distance(*feature_statistics(feats_a), *feature_statistics(feats_b), method=method)
