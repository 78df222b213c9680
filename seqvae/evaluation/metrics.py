"""Frame metrics of the SVG evaluation protocol: PSNR, SSIM, LPIPS, best-of-N, curves.

Video prediction is scored per predicted frame (Denton & Fergus 2018, §5; the σ-VAE
paper, §5.1 and Table 3, follows the same protocol on BAIR): draw N samples per test
sequence, score each against the ground truth frame by frame, keep for every sequence the
sample whose *mean* score over the predicted frames is best ("best of N"), and report the
per-timestep mean (and standard error) of those curves.

* :func:`psnr` — peak signal-to-noise ratio per frame, ``10·log10(range² / MSE)``.
* :func:`ssim` — structural similarity per frame (Wang et al. 2004) with the definitions of
  the kept library ``pytorch_msssim`` (11×11 Gaussian window, σ = 1.5, K = (0.01, 0.03), no
  padding), its separable Gaussian blur done as two banded matrix products: 4–6× faster than
  the library's grouped convolutions on a CPU core, where they were most of a video
  evaluation's time; ``tests/test_metrics.py`` holds it to the library's figures (1e-6).
* :class:`LPIPS` — learned perceptual distance (Zhang et al. 2018) from the ``lpips``
  package; its linear calibration layers ship with the package, its ImageNet backbone
  (AlexNet by default) comes from torchvision and is never downloaded implicitly.

The best-of-N selection and the per-timestep curves are in :mod:`seqvae.evaluation.curves`.

All frame tensors are ``[..., C, H, W]`` floats in [0, 1] (videos ``[B, T, C, H, W]``);
every metric returns one value per frame, ``[...]`` (``[B, T]`` for videos). Clamp model
outputs to [0, 1] before scoring if the likelihood head's mean can leave that range.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from seqvae.evaluation.weights import (
    MissingWeightsError,
    WeightsSource,
    find_weights,
    hub_checkpoint,
    load_state_dict_file,
)

__all__ = [
    "MissingWeightsError",
    "psnr",
    "ssim",
    "LPIPS",
    "SSIM_WINDOW",
]

SSIM_WINDOW = 11  # pytorch_msssim's default Gaussian window (Wang et al. 2004)
SSIM_SIGMA = 1.5  # its standard deviation (pixels)
SSIM_K = (0.01, 0.03)  # the stabilising constants' factors
FRAME_CHUNK = 256  # frames scored at once: bounds the temporaries (SSIM's filtered maps) whatever the input size


def _frames(pred: Tensor, target: Tensor, name: str) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Check shapes and flatten ``[..., C, H, W]`` to ``[N, C, H, W]`` float32; return the lead shape."""
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"{name}: expected frames [..., C, H, W], got shape {tuple(pred.shape)}")
    lead = tuple(pred.shape[:-3])
    c, h, w = pred.shape[-3:]
    return pred.reshape(-1, c, h, w).float(), target.reshape(-1, c, h, w).float(), lead


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, max_db: float | None = None) -> Tensor:
    """Peak signal-to-noise ratio per frame: ``10·log10(data_range² / MSE)`` in dB.

    ``pred``, ``target``: ``[..., C, H, W]`` (videos ``[B, T, C, H, W]``) in [0, data_range].
    The MSE is taken over C·H·W of each frame. Returns ``[...]`` (``[B, T]``), float32.

    Identical frames (MSE = 0) give ``+inf`` — the exact value, never NaN and no warning —
    unless ``max_db`` is set, in which case every value is capped at ``max_db`` (use a cap
    when averaging curves that may contain perfect reconstructions).
    """
    p, t, lead = _frames(pred, target, "psnr")
    # float32 differences, squared errors summed in float64, FRAME_CHUNK frames at a time
    # (no float64 copy of the inputs)
    sums = [(p[i:i + FRAME_CHUNK] - t[i:i + FRAME_CHUNK]).square().flatten(1).sum(1, dtype=torch.float64)
            for i in range(0, p.shape[0], FRAME_CHUNK)]
    mse = (torch.cat(sums) if sums else p.new_zeros(0, dtype=torch.float64)) / (p.shape[1] * p.shape[2] * p.shape[3])
    # 10·log10(r²/mse); where mse == 0 the quotient is +inf by IEEE rules, so no division guard
    # is needed beyond doing it explicitly (torch.where keeps autograd / NaN-free).
    zero = mse == 0
    out = torch.where(zero, torch.full_like(mse, math.inf),
                      10.0 * torch.log10(data_range**2 / torch.where(zero, torch.ones_like(mse), mse)))
    if max_db is not None:
        out = out.clamp(max=max_db)
    return out.float().reshape(lead)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per frame (Wang et al. 2004), as ``pytorch_msssim.ssim`` computes it.

    The library's defaults (11×11 Gaussian window, σ = 1.5, K = (0.01, 0.03), no padding),
    averaged over the pixels of each channel, then over the channels (its
    ``size_average=False``). ``pred``, ``target``: ``[..., C, H, W]`` in [0, data_range];
    returns ``[...]``. Frames must be at least 11×11 pixels (the window is applied without padding).
    """
    p, t, lead = _frames(pred, target, "ssim")
    h, w = p.shape[-2:]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"ssim: the {SSIM_WINDOW}×{SSIM_WINDOW} Gaussian window of SSIM needs frames of at least "
            f"{SSIM_WINDOW}×{SSIM_WINDOW} pixels; got {h}×{w}"
        )
    if p.shape[0] == 0:
        return p.new_zeros(lead)
    window = gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(p.device)
    rows, cols = banded(h, window), banded(w, window)
    out = torch.cat([_ssim(p[i:i + FRAME_CHUNK], t[i:i + FRAME_CHUNK], data_range, rows, cols)
                     for i in range(0, p.shape[0], FRAME_CHUNK)])
    return out.reshape(lead)


def gaussian_window(size: int, sigma: float) -> Tensor:
    """The normalised 1-D Gaussian of ``size`` taps (float32), as ``pytorch_msssim`` builds it."""
    coords = torch.arange(size, dtype=torch.float) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def banded(n: int, window: Tensor) -> Tensor:
    """``[n, n − k + 1]``: ``x @ banded(n, g)`` is the valid (unpadded) correlation of the last
    axis of ``x`` (length ``n``) with the ``k``-tap ``g``."""
    k = window.numel()
    out = window.new_zeros(n, n - k + 1)
    for j in range(n - k + 1):
        out[j:j + k, j] = window
    return out


def _ssim(x: Tensor, y: Tensor, data_range: float, rows: Tensor, cols: Tensor) -> Tensor:
    """SSIM of frames ``x``, ``y`` ``[n, C, H, W]`` → ``[n]``; ``rows``/``cols`` from :func:`banded`."""
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    maps = torch.stack([x, y, x * x, y * y, x * y])                  # [5, n, C, H, W]
    mu_x, mu_y, xx, yy, xy = rows.T @ maps @ cols                    # blurred: [5, n, C, H − 10, W − 10]
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    cs = (2 * (xy - mu_xy) + c2) / ((xx - mu_xx) + (yy - mu_yy) + c2)
    ssim_map = ((2 * mu_xy + c1) / (mu_xx + mu_yy + c1)) * cs
    return ssim_map.flatten(2).mean(-1).mean(1)                      # pixels of each channel, then channels


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------

# lpips trunk name -> (torchvision builder, torchvision weights enum) of its ImageNet backbone.
_LPIPS_BACKBONES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def lpips_backbone_url(net: str = "alex") -> str:
    """The URL torchvision downloads the ImageNet weights of LPIPS's ``net`` backbone from."""
    import torchvision.models as tvm

    if net not in _LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
    return getattr(tvm, _LPIPS_BACKBONES[net][1]).IMAGENET1K_V1.url


def lpips_backbone_cache_path(net: str = "alex") -> Path:
    """Where torchvision caches that backbone: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return hub_checkpoint(os.path.basename(lpips_backbone_url(net)))


def lpips_backbone_source(net: str = "alex") -> WeightsSource:
    """Where LPIPS's ``net`` backbone comes from (for :func:`~seqvae.evaluation.weights.find_weights`):
    torchvision's ImageNet weights in its cache, downloadable from :func:`lpips_backbone_url`."""
    url, arch = lpips_backbone_url(net), _LPIPS_BACKBONES[net][0]
    return WeightsSource(
        metric="LPIPS",
        needs=f"the ImageNet-pretrained {arch} backbone (torchvision)",
        accepts=f"a torchvision {arch} state_dict such as {os.path.basename(url)} (from {url})",
        cache=lpips_backbone_cache_path(net),
        cache_note="torch.hub.get_dir()/checkpoints/, torchvision's cache; move it with $TORCH_HOME",
        flags="`seqvae eval --lpips-weights FILE` or backbone_weights=FILE (LPIPS)",
        url=url,
    )


def _load_backbone_state(net: str, backbone_weights: str | os.PathLike | None, download: bool) -> dict[str, Tensor]:
    """The backbone's state_dict from :func:`~seqvae.evaluation.weights.find_weights` (explicit path,
    else the torch hub cache; never fetched unless asked), read as tensors only
    (:func:`~seqvae.evaluation.weights.load_state_dict_file`)."""
    return load_state_dict_file(find_weights(lpips_backbone_source(net), backbone_weights, download), "LPIPS backbone")


def _lpips_linear_state(net: str) -> dict[str, Tensor]:
    """The calibration (linear) layers LPIPS v0.1 ships inside the ``lpips`` package, read as tensors only."""
    import lpips

    return load_state_dict_file(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", "LPIPS linear layers")


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018), one value per frame.

    Wraps ``lpips.LPIPS(net=net)`` (version 0.1): the linear calibration weights come from
    the ``lpips`` package (read here as tensors only); the ImageNet backbone is loaded from
    ``backbone_weights`` (a torchvision state_dict, e.g. ``alexnet-owt-7be5be79.pth``) or
    else from torchvision's cache ``torch.hub.get_dir()/checkpoints/``. If neither holds it
    a :class:`MissingWeightsError` is raised; nothing is downloaded unless ``download=True``.

    ``forward(pred, target)``: ``[..., C, H, W]`` in [0, 1] with C = 3 (or 1, repeated to
    RGB) → ``[...]``; inputs are scaled to [-1, 1] as LPIPS expects. Lower is more similar.
    Frames are processed ``batch_size`` at a time on the module's device.
    """

    def __init__(
        self,
        backbone_weights: str | os.PathLike | None = None,
        net: str = "alex",
        batch_size: int = 64,
        download: bool = False,
    ) -> None:
        super().__init__()
        import lpips  # lazy: pulls in torchvision

        state = _load_backbone_state(net, backbone_weights, download)
        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore")
            # pnet_rand=True: build the trunk without weights (no download); pretrained=False: lpips
            # does not load its own files either. Both are loaded below, as tensors only.
            model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        # lpips loads its linear layers with strict=False (the file holds only lin*.model.1.weight)
        missing = set(model.load_state_dict(_lpips_linear_state(net), strict=False).unexpected_keys)
        if missing:
            raise ValueError(f"LPIPS: unexpected entries in the package's linear layers: {sorted(missing)[:4]}")
        self.model = model.eval().requires_grad_(False)
        self._load_trunk(state)
        self.batch_size = batch_size

    def _load_trunk(self, state: dict[str, Tensor]) -> None:
        """Copy torchvision ``features.<i>.*`` tensors into lpips's ``slice<k>.<i>.*`` trunk."""
        if any(k.startswith("features.") for k in state):
            feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        else:
            feats = dict(state)
        mapped, missing = {}, []
        for name in self.model.net.state_dict():
            key = name.split(".", 1)[1]  # "slice2.3.weight" -> "3.weight" (index into .features)
            if key in feats:
                mapped[name] = feats[key]
            else:
                missing.append(f"features.{key}")
        if missing:
            raise ValueError(f"LPIPS: backbone state_dict lacks {missing[:4]}{'…' if len(missing) > 4 else ''}; "
                             f"expected a torchvision {self.model.pnet_type} state_dict")
        self.model.net.load_state_dict(mapped)

    def train(self, mode: bool = True) -> "LPIPS":
        """A metric: the wrapped network stays in eval mode (its linear layers carry dropout)."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        p, t, lead = _frames(pred, target, "LPIPS")
        if p.shape[1] == 1:
            p, t = p.expand(-1, 3, -1, -1), t.expand(-1, 3, -1, -1)
        elif p.shape[1] != 3:
            raise ValueError(f"LPIPS: expected 1 or 3 channels, got {p.shape[1]}")
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, p.shape[0], self.batch_size):
            a = p[i:i + self.batch_size].to(device) * 2.0 - 1.0  # [0, 1] -> [-1, 1]
            b = t[i:i + self.batch_size].to(device) * 2.0 - 1.0
            out.append(self.model(a, b).flatten())  # lpips returns [n, 1, 1, 1]
        res = torch.cat(out) if out else p.new_zeros(0)
        return res.to(pred.device).reshape(lead)
