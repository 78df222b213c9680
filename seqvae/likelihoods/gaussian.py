"""Gaussian decoders: the σ-VAE family (paper §3.1 and §4).

Per-dimension NLL: ``0.5·((x−μ)/σ)² + log σ + 0.5·log 2π``, summed over every pixel
and channel (§3.1 "Loss implementation details"). The heads differ only in where σ
comes from:

* ``unit_gaussian``        σ = 1 (the plain MSE VAE);
* ``beta_vae``             constant σ = √(β/2): the β-VAE objective ``Σ(x−μ)² + β·KL``
                           is ``β·`` this head's negative ELBO up to a constant (§3.1);
* ``shared_sigma``         one learned ``log σ`` parameter (Eq. 2–3);
* ``optimal_sigma``        σ*² = mean((x − μ)²) over the batch, analytic (Eq. 5); an EMA
                           of it is used at evaluation (§4, App. C);
* ``per_image_sigma``      the same mean taken per example (per frame for video);
* ``per_pixel_sigma``      the network outputs ``log σ`` per pixel, soft-clipped (§3.1).

The effective β of a Gaussian head is ``2σ²`` (§5.1).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from seqvae.likelihoods.base import LOG_2PI, LikelihoodHead, randn
from seqvae.registry import LIKELIHOODS, ComponentConfig


def gaussian_nll(x: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Elementwise Gaussian NLL in nats (broadcasting ``log_sigma``)."""
    return 0.5 * ((x - mu) * torch.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * LOG_2PI


def soft_clip(value: Tensor, low: float, high: float) -> Tensor:
    """Soft clipping of Chua et al. (2018), as in paper §3.1 (upper bound first)."""
    value = high - F.softplus(high - value)
    return low + F.softplus(value - low)


def mean_activation(raw: Tensor, activation: str) -> Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(raw)
    if activation == "identity":
        return raw
    raise ValueError(f"mean_activation must be 'sigmoid' or 'identity', got {activation!r}")


class GaussianHead(LikelihoodHead):
    """Shared machinery: params carry μ (one channel per data channel) and maybe log σ."""

    def __init__(self, mean_activation: str = "sigmoid") -> None:
        super().__init__()
        self.mean_activation = mean_activation

    def num_params(self, data_channels: int) -> int:
        return data_channels

    def _mu(self, params: Tensor) -> Tensor:
        return mean_activation(params, self.mean_activation)

    def log_sigma(self, params: Tensor, x: Tensor | None) -> Tensor:
        """log σ broadcastable to x; ``x`` is None when sampling (no data to look at)."""
        raise NotImplementedError

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        mu = self._mu(params)
        nll = gaussian_nll(x, mu, self.log_sigma(params, x))
        return reduce(nll, "n c h w -> n", "sum")

    def _mean(self, params: Tensor) -> Tensor:
        return self._mu(params).clamp(0, 1)

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        mu = self._mu(params)
        sigma = torch.exp(self.log_sigma(params, None))
        return (mu + sigma * randn(mu.shape, mu, generator)).clamp(0, 1)


def _sigma_scalars(log_sigma: Tensor) -> dict[str, Tensor]:
    sigma = log_sigma.detach().exp().mean()
    return {"sigma": sigma, "beta_eff": 2 * sigma**2}


# --------------------------------------------------------------------- fixed σ
class FixedSigmaGaussian(GaussianHead):
    """Constant σ. σ = 1 is the unit-variance (MSE) VAE; σ = √(β/2) is the β-VAE."""

    def __init__(self, sigma: float, mean_activation: str = "sigmoid") -> None:
        super().__init__(mean_activation)
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.register_buffer("_log_sigma", torch.tensor(math.log(sigma)))

    def log_sigma(self, params: Tensor, x: Tensor | None) -> Tensor:
        return self._log_sigma

    def scalars(self) -> dict[str, Tensor]:
        return _sigma_scalars(self._log_sigma)


@dataclass
class UnitGaussianConfig(ComponentConfig):
    name: str = "unit_gaussian"
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("unit_gaussian", UnitGaussianConfig)
def build_unit_gaussian(cfg: UnitGaussianConfig) -> LikelihoodHead:
    return FixedSigmaGaussian(1.0, cfg.mean_activation)


@dataclass
class BetaVAEConfig(ComponentConfig):
    """β-VAE as a Gaussian with constant σ = √(β/2) (paper §3.1, Eq. 4)."""

    name: str = "beta_vae"
    beta: float = 1.0
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("beta_vae", BetaVAEConfig)
def build_beta_vae(cfg: BetaVAEConfig) -> LikelihoodHead:
    if cfg.beta <= 0:
        raise ValueError(f"likelihood.beta must be positive, got {cfg.beta}")
    return FixedSigmaGaussian(math.sqrt(cfg.beta / 2.0), cfg.mean_activation)


# -------------------------------------------------------------------- shared σ
class SharedSigmaGaussian(GaussianHead):
    """One learned log σ shared by every pixel and image (paper Eq. 2–3)."""

    def __init__(self, init_log_sigma: float = 0.0, mean_activation: str = "sigmoid") -> None:
        super().__init__(mean_activation)
        self._log_sigma = nn.Parameter(torch.tensor(float(init_log_sigma)))

    def log_sigma(self, params: Tensor, x: Tensor | None) -> Tensor:
        return self._log_sigma.float()

    def scalars(self) -> dict[str, Tensor]:
        return _sigma_scalars(self._log_sigma)


@dataclass
class SharedSigmaConfig(ComponentConfig):
    name: str = "shared_sigma"
    init_log_sigma: float = 0.0
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("shared_sigma", SharedSigmaConfig)
def build_shared_sigma(cfg: SharedSigmaConfig) -> LikelihoodHead:
    return SharedSigmaGaussian(cfg.init_log_sigma, cfg.mean_activation)


# ------------------------------------------------------------------- optimal σ
MAX_PENDING = 16  # forward passes per training step whose σ*² wait for the step's verdict


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA's decay for its ``updates``-th accepted update (0-based): ``min(decay, (1 + n)/(10 + n))``,
    the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=n)``. Early in training
    σ* falls fast and a fixed 0.99 lags it by ~100 steps; with the warm-up the EMA averages over
    about the last n/9 steps until that window reaches 1/(1 − decay) (n ≈ 900 for 0.99).
    Measured on a small SVG on the pushing videos (``tools/sigma_ema_lag.py``): a fixed 0.99
    put the EMA's σ 120 % above the batch σ* at step 100, 31 % at 300 and 6 % at 500; with
    the warm-up it stays within 4 %."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class OptimalSigmaGaussian(GaussianHead):
    """Analytic σ*² = mean((x − μ)²) (paper Eq. 5), no gradient step.

    In training mode σ* is the batch estimate (all-reduced across DDP ranks, so a
    distributed step equals one process on the joined batch); it is recorded as pending
    and folded into the EMA by :meth:`apply_pending` only when the training step's update
    is accepted, so a skipped non-finite step (one NaN pixel) cannot poison the EMA; the EMA's
    decay warms up (:func:`ema_decay_at`) so that short runs do not evaluate with a σ that
    lags far behind the batch σ*. In eval mode, and when sampling, the EMA is used (App. C),
    unless :meth:`evaluation_sigma2` sets σ² for a block (e.g. calibrated on a validation
    split, :func:`seqvae.evaluation.elbo.calibrate_sigma`). ``per_image=True``
    takes the mean per example instead (per-image optimal σ-VAE, §4); the EMA then
    tracks the batch-mean σ² for sampling and logs. σ is floored at ``exp(min_log_sigma)``
    so that a perfect reconstruction cannot send log σ to −∞.
    """

    def __init__(self, per_image: bool = False, ema_decay: float = 0.99, min_log_sigma: float = -6.0,
                 mean_activation: str = "sigmoid") -> None:
        super().__init__(mean_activation)
        self.per_image = per_image
        self.valid_bound = not per_image
        self.ema_decay = ema_decay
        self.min_log_sigma = min_log_sigma
        self.register_buffer("ema_sigma2", torch.tensor(1.0))
        self.register_buffer("ema_steps", torch.tensor(0, dtype=torch.long))
        self._last_log_sigma: Tensor | None = None
        self._pending: list[Tensor] = []   # batch σ*² of this step's forward passes, not yet in the EMA
        self._measure: Tensor | None = None  # Σ (x − μ)², count while measuring()

    def batch_sigma2(self, mu: Tensor, x: Tensor) -> Tensor:
        """σ*² of this batch: scalar, or ``[N, 1, 1, 1]`` per image. No gradient."""
        with torch.no_grad():
            sq = (x - mu) ** 2
            if self.per_image:
                return reduce(sq, "n c h w -> n 1 1 1", "mean")
            # the count made on the device (torch.tensor(n, device=...) would be a synchronising copy)
            total = torch.stack([sq.sum(), torch.full((), float(sq.numel()), device=sq.device)])
            if self.training and dist.is_available() and dist.is_initialized():
                dist.all_reduce(total)
            return total[0] / total[1]

    def apply_pending(self, accepted: bool | Tensor) -> None:
        """Fold this step's batch σ*² into the EMA if the update was accepted; drop it otherwise.
        Every DDP rank holds the same all-reduced value, so the EMAs stay equal.

        ``accepted`` may be a 0-dim bool tensor (the trainer's verdict, on the device): then
        the fold is computed and kept or dropped there, with the same arithmetic as
        :func:`ema_decay_at` (in float64, the decay then cast as a Python float would be), and
        nothing is read on the host."""
        pending, self._pending = self._pending, []
        if isinstance(accepted, bool) and not accepted:
            return
        for value in pending:
            take = torch.isfinite(value)     # belt and braces: an accepted step has a finite loss
            if not isinstance(accepted, bool):
                take = take & accepted.to(take.device)
            n = self.ema_steps.to(torch.float64)
            decay = ((1.0 + n) / (10.0 + n)).clamp(max=self.ema_decay)          # ema_decay_at(ema_decay, n)
            folded = self.ema_sigma2 * decay.float() + (1 - decay).float() * value
            new = torch.where(self.ema_steps == 0, value, folded)
            self.ema_sigma2.copy_(torch.where(take, new, self.ema_sigma2))
            self.ema_steps.add_(take.long())

    @contextmanager
    def measuring(self) -> Iterator[Tensor]:
        """Within the block every ``nll`` also adds Σ(x − μ)² and the number of scored values to the
        yielded ``[2]`` float64 tensor: their quotient is the σ*² that minimises the bound on what
        was scored (paper Eq. 5). Nothing else changes."""
        self._measure = torch.zeros(2, dtype=torch.float64, device=self.ema_sigma2.device)
        try:
            yield self._measure
        finally:
            self._measure = None

    @contextmanager
    def evaluation_sigma2(self, sigma2: float) -> Iterator[None]:
        """Evaluate with σ² = ``sigma2`` instead of the EMA within the block (the EMA is restored)."""
        if self.per_image:
            raise ValueError("the per-image optimal σ takes σ from each image; there is no evaluation σ to set")
        saved = self.ema_sigma2.clone()
        self.ema_sigma2.fill_(float(sigma2))
        try:
            yield
        finally:
            self.ema_sigma2.copy_(saved)

    def _floor(self, log_sigma: Tensor) -> Tensor:
        return log_sigma.clamp_min(self.min_log_sigma)

    def log_sigma(self, params: Tensor, x: Tensor | None) -> Tensor:
        if x is not None and self._measure is not None:
            with torch.no_grad():
                sq = (x - self._mu(params)) ** 2
                self._measure += torch.stack([sq.sum().double(), torch.tensor(float(sq.numel()), dtype=torch.float64,
                                                                              device=sq.device)])
        if x is not None and (self.training or self.per_image):
            sigma2 = self.batch_sigma2(self._mu(params), x)
            if self.training:
                # at most the last MAX_PENDING forwards of a step (a loop that never commits cannot grow it)
                self._pending = [*self._pending[-(MAX_PENDING - 1):], sigma2.mean().detach().float()]
        else:
            sigma2 = self.ema_sigma2
        log_sigma = self._floor(0.5 * torch.log(sigma2))
        self._last_log_sigma = log_sigma.detach()
        return log_sigma

    def scalars(self) -> dict[str, Tensor]:
        out = {"sigma_ema": self.ema_sigma2.sqrt(), "beta_eff": 2 * self.ema_sigma2.clone()}
        if self._last_log_sigma is not None:
            out["sigma"] = self._last_log_sigma.exp().mean()
        return out


@dataclass
class OptimalSigmaConfig(ComponentConfig):
    name: str = "optimal_sigma"
    ema_decay: float = 0.99
    min_log_sigma: float = -6.0
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("optimal_sigma", OptimalSigmaConfig)
def build_optimal_sigma(cfg: OptimalSigmaConfig) -> LikelihoodHead:
    return OptimalSigmaGaussian(False, cfg.ema_decay, cfg.min_log_sigma, cfg.mean_activation)


@dataclass
class PerImageSigmaConfig(ComponentConfig):
    name: str = "per_image_sigma"
    ema_decay: float = 0.99
    min_log_sigma: float = -6.0
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("per_image_sigma", PerImageSigmaConfig)
def build_per_image_sigma(cfg: PerImageSigmaConfig) -> LikelihoodHead:
    return OptimalSigmaGaussian(True, cfg.ema_decay, cfg.min_log_sigma, cfg.mean_activation)


# ----------------------------------------------------------------- per-pixel σ
class PerPixelSigmaGaussian(GaussianHead):
    """The network outputs μ and log σ per pixel and channel (paper Eq. 1), log σ
    soft-clipped into [min_log_sigma, max_log_sigma] (§3.1, λmin = −6)."""

    def __init__(self, min_log_sigma: float = -6.0, max_log_sigma: float = 2.0,
                 mean_activation: str = "sigmoid") -> None:
        super().__init__(mean_activation)
        self.min_log_sigma = min_log_sigma
        self.max_log_sigma = max_log_sigma
        self._last_log_sigma: Tensor | None = None

    def num_params(self, data_channels: int) -> int:
        return 2 * data_channels

    def _mu(self, params: Tensor) -> Tensor:
        return mean_activation(params.chunk(2, dim=1)[0], self.mean_activation)

    def log_sigma(self, params: Tensor, x: Tensor | None) -> Tensor:
        log_sigma = soft_clip(params.chunk(2, dim=1)[1], self.min_log_sigma, self.max_log_sigma)
        self._last_log_sigma = log_sigma.detach()
        return log_sigma

    def scalars(self) -> dict[str, Tensor]:
        return _sigma_scalars(self._last_log_sigma) if self._last_log_sigma is not None else {}


@dataclass
class PerPixelSigmaConfig(ComponentConfig):
    name: str = "per_pixel_sigma"
    min_log_sigma: float = -6.0
    max_log_sigma: float = 2.0
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("per_pixel_sigma", PerPixelSigmaConfig)
def build_per_pixel_sigma(cfg: PerPixelSigmaConfig) -> LikelihoodHead:
    return PerPixelSigmaGaussian(cfg.min_log_sigma, cfg.max_log_sigma, cfg.mean_activation)
