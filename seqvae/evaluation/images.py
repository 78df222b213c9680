"""Image-model evaluation helpers: prior samples, real images, sample FID and the
posteriors of a split (for the latent analysis of paper §5.2, Fig. 4).

For an image model with an encoder ``encode(x[N, C, H, W]) -> (mu, logvar)`` (the conv
VAE), the posteriors of a data split give (Eq. 6)::

    rate = E_x KL(q(z|x) ‖ p(z)) = I(x; z) + KL(m(z) ‖ p(z))

estimated by :func:`seqvae.evaluation.latents.analyze_latents` (exact rate, Monte Carlo
marginal KL as in Rosca et al. 2018, MI = rate − marginal KL), each with a standard error.
Optionally FID (Heusel et al. 2017) of prior samples against the same split, when the
Inception weights are on disk — they are never downloaded here.

Used by ``seqvae analyze`` and the paper-reproduction tools in ``tools/experiments``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.io import to_uint8
from seqvae.models.base import SequenceVAE, SingleLatentVAE, eval_mode


def _image_spec(model: SequenceVAE):
    spec = model.spec
    if spec.seq_len != 1:
        raise ValueError("this needs an image model (seq_len 1); video models are evaluated with `seqvae eval`")
    return spec


@torch.no_grad()
def prior_samples(model: SequenceVAE, num: int, seed: int = 0, device: torch.device | str | None = None,
                  batch_size: int = 256) -> Tensor:
    """``num`` images from the model's prior (the head's mean of p(x|z), z ~ N(0, I)): ``[num, C, H, W]``
    float32 in [0, 1] on the CPU. One generator seeded with ``seed`` serves all batches."""
    spec = _image_spec(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    with eval_mode(model):
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            dummy = {"frames": torch.zeros(n, 1, spec.channels, spec.height, spec.width, device=device)}
            out.append(model.generate(dummy, generator=generator)[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, spec.channels, spec.height, spec.width)


def real_images(dataset: Dataset, num: int, batch_size: int = 256) -> Tensor:
    """The first ``num`` images of ``dataset`` (fixed order) as uint8 ``[n, C, H, W]``, n ≤ num."""
    out, have = [], 0
    for batch in eval_loader(dataset, batch_size):
        frames = batch["frames"]
        if frames.dim() != 5 or frames.shape[1] != 1:
            raise ValueError(f"expected image items [B, 1, C, H, W], got {tuple(frames.shape)}")
        frames = frames[:, 0]
        if frames.dtype != torch.uint8:
            frames = to_uint8(frames)
        out.append(frames[: num - have])
        have += out[-1].shape[0]
        if have >= num:
            break
    if not out:
        raise ValueError("the data split is empty")
    return torch.cat(out)


def sample_fid(model: SequenceVAE, dataset: Dataset, num: int, weights_path: str | None = None,
               device: torch.device | str | None = None, batch_size: int = 100, seed: int = 0) -> float:
    """FID between ``n`` prior samples of ``model`` and the first ``n`` images of ``dataset``,
    ``n = min(num, len(dataset))`` so both sets have one size (FID depends on it).

    Raises :class:`seqvae.evaluation.metrics.MissingWeightsError` (before sampling anything) when the
    Inception weights are absent; never downloads.
    """
    from seqvae.evaluation.fid import compute_fid, inception_weights_path

    path = inception_weights_path(weights_path, download=False)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    real = real_images(dataset, num, batch_size)
    fake = to_uint8(prior_samples(model, real.shape[0], seed, device, batch_size))
    return compute_fid(fake, real, weights_path=path, batch_size=batch_size, device=device)


@torch.no_grad()
def split_posteriors(model: SequenceVAE, dataset: Dataset, max_examples: int = 0, batch_size: int = 256,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Posterior means and log-variances ``[N, D]`` (float64, CPU) of the first ``max_examples``
    images of ``dataset`` (0: all), in the data set's fixed order."""
    from seqvae.evaluation.latents import collect_posteriors

    if not isinstance(model, SingleLatentVAE):
        raise ValueError(f"{type(model).__name__} has no single Gaussian latent to read; analyze works with image "
                         "VAEs such as conv_vae")
    _image_spec(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device

    def images():
        seen = 0
        for batch in eval_loader(dataset, batch_size):
            x = batch_to_device(batch, device)["frames"][:, 0]
            if max_examples:
                x = x[: max_examples - seen]
            if x.shape[0] == 0:
                return
            seen += x.shape[0]
            yield x
            if max_examples and seen >= max_examples:
                return

    def encode(x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = model.encode(x)
        return mu.float(), logvar.float()

    with eval_mode(model):
        return collect_posteriors(encode, images())
