"""Discretized Gaussian / logistic σ-VAE decoders (paper Table 4, App. D) and their bin math.

Level ``v ∈ {0..255}`` sits at ``v/255`` on the [0, 1] scale and owns the bin
``[(v − ½)/255, (v + ½)/255]``, except the edge bins, which take the tails: level 0 owns
``(−∞, ½/255]`` and level 255 owns ``[254.5/255, ∞)`` (Salimans et al. 2017, as App. D
describes). A level's probability is the continuous distribution's mass on its bin, so
the 256 masses sum to one and the NLL is that of the 8-bit data.

Table 4's heads have one *scalar* scale:

* ``scale="optimal"``: σ*² = mean((x − μ)²) over the batch, analytically, with an EMA used
  at evaluation and for sampling (paper §4, App. C) — delegated to an
  :class:`~seqvae.likelihoods.gaussian.OptimalSigmaGaussian` held inside the head;
* ``scale="shared"``: one learned log-scale (paper Eq. 2–3).

For the logistic the optimal σ is turned into the logistic scale ``s = σ·√3/π``, whose
variance ``s²π²/3`` is σ²; ``scalars()`` reports σ (the distribution's standard
deviation) and β_eff = 2σ² for both.

Numerics, all in log space and float32:

* logistic: ``σ(b) − σ(a) = σ(b)·σ(−a)·(1 − e^(a−b))`` for standardized edges a < b, so
  ``log mass = logsigmoid(b) + logsigmoid(−a) + log1mexp(b − a)`` with ``b − a = w/s``
  taken from log s directly. No difference of CDFs is ever formed, so PixelCNN++'s
  mid-bin-density fallback (needed there because it subtracts CDFs in probability space)
  is not needed: the formula stays exact deep in the tails and for huge scales.
* Gaussian: bins right of the mean are mirrored to the left (Φ(b) − Φ(a) = Φ(−a) − Φ(−b))
  and ``log mass = log Φ(b) + log1mexp(t)``, ``t = log Φ(b) − log Φ(a)``. For a wide bin
  t is that difference of ``log_ndtr``s; for a narrow one (``w/σ < 0.1``, where the
  difference would cancel) t comes from the midpoint expansion
  ``t = d·r(m)·(1 + d²·((m + r)(m + 2r) − 1)/24)`` with d = w/σ, m the bin's
  standardized midpoint and r = φ(m)/Φ(m) = √(2/π)/erfcx(−m/√2) (error O(d⁵)). This
  plays the part of PixelCNN++'s mid-bin density fallback (its leading term is exactly
  the mid-bin density), with the next order kept so it joins the exact branch seamlessly.
  ``log Φ`` itself goes through :func:`log_ndtr`, whose gradient survives the far tail.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from seqvae.likelihoods.base import LikelihoodHead, rand, randn, to_uint8_levels
from seqvae.likelihoods.categorical import LEVELS, DiscreteHead
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian, mean_activation
from seqvae.registry import LIKELIHOODS, ComponentConfig

HALF_BIN = 0.5 / 255.0
LOG_BIN = math.log(2 * HALF_BIN)            # log of the bin width 1/255
LOG_SQRT3_OVER_PI = 0.5 * math.log(3.0) - math.log(math.pi)  # logistic s = σ·√3/π
SERIES_BELOW = 0.1                           # Gaussian: series for log Φ(b) − log Φ(a) when w/σ is below this


# ------------------------------------------------------------------ bin math
def log1mexp(d: Tensor) -> Tensor:
    """``log(1 − e^(−d))`` for d > 0, accurate for small and large d (Mächler 2012)."""
    big = d > math.log(2.0)
    # each branch sees only inputs it is accurate for, so neither yields inf/NaN (nor NaN
    # gradients through torch.where); the clamp covers d underflowing to 0
    d_big = torch.where(big, d, torch.ones_like(d))
    d_small = torch.where(big, torch.ones_like(d), d).clamp_min(1e-30)
    return torch.where(big, torch.log1p(-torch.exp(-d_big)), torch.log(-torch.expm1(-d_small)))


def log1mexp_from_log(log_d: Tensor) -> Tensor:
    """``log(1 − e^(−d))`` from ``log d``: equal to ``log d`` (to float32) once d < e^(−40)."""
    tiny = log_d < -40.0
    return torch.where(tiny, log_d, log1mexp(torch.exp(torch.where(tiny, torch.zeros_like(log_d), log_d))))


def log_ndtr(z: Tensor) -> Tensor:
    """``log Φ(z)`` with a usable gradient in the far left tail.

    ``torch.special.log_ndtr``'s backward loses the inverse Mills ratio below z ≈ −1000
    (it returns ≈ 0.4 instead of ≈ |z|); for z < 0 we use ``log(½·erfcx(−z/√2)) − z²/2``,
    whose autograd is accurate, and torch's function elsewhere.
    """
    neg = z < 0
    z_neg = torch.where(neg, z, torch.zeros_like(z))
    z_pos = torch.where(neg, torch.zeros_like(z), z)
    left = torch.log(0.5 * torch.special.erfcx(-z_neg / math.sqrt(2.0))) - 0.5 * z_neg**2
    return torch.where(neg, left, torch.special.log_ndtr(z_pos))


def standardized_edges(levels: Tensor, mu: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Bin edges of ``levels`` standardized by the location/scale: ``(a, b)``, a < b, finite.

    Edge bins are handled by the callers (which use only one of the two edges there).
    """
    centered = levels.to(mu.dtype) / 255.0 - mu
    inv_scale = torch.exp(-log_scale)
    return (centered - HALF_BIN) * inv_scale, (centered + HALF_BIN) * inv_scale


def _edge_select(levels: Tensor, low_edge: Tensor, high_edge: Tensor, interior: Tensor) -> Tensor:
    return torch.where(levels == 0, low_edge, torch.where(levels == LEVELS - 1, high_edge, interior))


def logistic_log_mass(levels: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """log P(level) under a logistic(μ, s) discretized into the 256 bins (broadcasting)."""
    a, b = standardized_edges(levels, mu, log_scale)
    log_width = LOG_BIN - log_scale                     # log((b − a)) without cancellation
    interior = F.logsigmoid(b) + F.logsigmoid(-a) + log1mexp_from_log(log_width)
    return _edge_select(levels, F.logsigmoid(b), F.logsigmoid(-a), interior)


def gaussian_log_mass(levels: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """log P(level) under a Normal(μ, σ) discretized into the 256 bins (broadcasting)."""
    a, b = standardized_edges(levels, mu, log_scale)
    # mirror bins right of the mean into the left half: Φ(b) − Φ(a) = Φ(−a) − Φ(−b)
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = log_ndtr(hi)
    # wide bin: t = log Φ(hi) − log Φ(lo) directly
    exact = log_hi + log1mexp(log_hi - log_ndtr(lo))
    # narrow bin: t from the midpoint series, in log space (d may underflow)
    log_width = LOG_BIN - log_scale                           # log d, d = hi − lo
    narrow = log_width < math.log(SERIES_BELOW)
    width = torch.exp(torch.where(narrow, log_width, torch.zeros_like(log_width)))
    m = torch.where(narrow, 0.5 * (lo + hi), torch.zeros_like(lo))        # m ≤ 0
    log_r = 0.5 * math.log(2.0 / math.pi) - torch.log(torch.special.erfcx(-m / math.sqrt(2.0)))
    r = torch.exp(log_r)                                      # inverse Mills ratio φ(m)/Φ(m)
    log_t = log_width + log_r + torch.log1p(width**2 * ((m + r) * (m + 2 * r) - 1.0) / 24.0)
    series = log_hi + log1mexp_from_log(log_t)
    interior = torch.where(narrow, series, exact)
    return _edge_select(levels, log_ndtr(b), log_ndtr(-a), interior)


def expected_level(survival: Callable[[Tensor], Tensor], like: Tensor, chunk: int = 16) -> Tensor:
    """``E[v] = Σ_{i=1}^{255} P(v ≥ i)`` for a discretized continuous variable X.

    ``P(v ≥ i) = P(X > (i − ½)/255)`` (the edge bins make this exact); ``survival(t)``
    maps thresholds ``t[m]`` to ``P(X > t)`` stacked on a new leading dim ``[m, ...]``.
    Thresholds go in chunks so memory stays ``chunk ×`` one image, never 256×.
    """
    thresholds = (torch.arange(1, LEVELS, device=like.device, dtype=torch.float32) - 0.5) / 255.0
    total = torch.zeros((), device=like.device)
    for t in thresholds.split(chunk):
        total = total + survival(t).sum(0)
    return total


def check_activation(name: str) -> None:
    """Raise ValueError now for an unknown mean activation (not at the first forward)."""
    mean_activation(torch.zeros(()), name)


# --------------------------------------------------------------------- heads
class DiscretizedHead(DiscreteHead):
    """Single discretized Gaussian or logistic per pixel with one scalar scale (Table 4)."""

    def __init__(self, family: str, scale: str = "optimal", init_log_scale: float = 0.0,
                 ema_decay: float = 0.99, min_log_sigma: float = -6.0,
                 mean_activation: str = "sigmoid") -> None:
        super().__init__()
        if family not in ("gaussian", "logistic"):
            raise ValueError(f"family must be 'gaussian' or 'logistic', got {family!r}")
        if scale not in ("optimal", "shared"):
            raise ValueError(f"likelihood.scale must be 'optimal' or 'shared', got {scale!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"likelihood.ema_decay must be in [0, 1), got {ema_decay}")
        check_activation(mean_activation)
        self.family = family
        self.scale_mode = scale
        self.mean_activation = mean_activation
        self.optimal: OptimalSigmaGaussian | None = None
        self.shared_log_scale: nn.Parameter | None = None
        if scale == "optimal":
            self.optimal = OptimalSigmaGaussian(False, ema_decay, min_log_sigma, mean_activation)
        else:
            self.shared_log_scale = nn.Parameter(torch.tensor(float(init_log_scale)))
        self._log_mass = gaussian_log_mass if family == "gaussian" else logistic_log_mass

    def num_params(self, data_channels: int) -> int:
        return data_channels

    def _mu(self, params: Tensor) -> Tensor:
        return mean_activation(params, self.mean_activation)

    def log_scale(self, params: Tensor, x: Tensor | None) -> Tensor:
        """Scalar log of the family's scale (σ, or the logistic s); ``x`` None: no data.

        With ``scale="optimal"`` the batch σ* is used in training and the EMA otherwise
        (and whenever ``x`` is None), exactly as in the optimal σ-VAE head.
        """
        if self.optimal is not None:
            log_sigma = self.optimal.log_sigma(params, x)
            return log_sigma + LOG_SQRT3_OVER_PI if self.family == "logistic" else log_sigma
        return self.shared_log_scale.float()

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        log_mass = self._log_mass(to_uint8_levels(x), self._mu(params), self.log_scale(params, x))
        return -reduce(log_mass, "n c h w -> n", "sum")

    def _log_probs_256(self, params: Tensor) -> Tensor:
        levels = rearrange(torch.arange(LEVELS, device=params.device), "k -> 1 1 k 1 1")
        mu = rearrange(self._mu(params), "n c h w -> n c 1 h w")
        return self._log_mass(levels, mu, self.log_scale(params, None))

    def _mean(self, params: Tensor) -> Tensor:
        mu, log_scale = self._mu(params), self.log_scale(params, None)
        inv_scale = torch.exp(-log_scale)
        cdf = torch.special.ndtr if self.family == "gaussian" else torch.sigmoid

        def survival(t: Tensor) -> Tensor:  # P(X > t) = F((μ − t)/s), [m, N, C, H, W]
            return cdf((mu - rearrange(t, "m -> m 1 1 1 1")) * inv_scale)

        return expected_level(survival, params) / 255.0

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        mu, scale = self._mu(params), torch.exp(self.log_scale(params, None))
        if self.family == "gaussian":
            noise = randn(mu.shape, mu, generator)
        else:
            eps = torch.finfo(mu.dtype).eps
            u = rand(mu.shape, mu, generator).clamp(eps, 1 - eps)
            noise = torch.log(u) - torch.log1p(-u)      # standard logistic by inversion
        return to_uint8_levels(mu + scale * noise).float() / 255.0

    def scalars(self) -> dict[str, Tensor]:
        if self.optimal is not None:
            out = self.optimal.scalars()                 # σ of the (EMA) optimal estimate
            if self.family == "logistic":
                out["scale_ema"] = out["sigma_ema"] * math.exp(LOG_SQRT3_OVER_PI)
            return out
        with torch.no_grad():
            scale = self.shared_log_scale.float().exp()
            sigma = scale if self.family == "gaussian" else scale * math.exp(-LOG_SQRT3_OVER_PI)
        out = {"sigma": sigma, "beta_eff": 2 * sigma**2}
        if self.family == "logistic":
            out["scale"] = scale
        return out


@dataclass
class DiscretizedGaussianConfig(ComponentConfig):
    """Discretized Gaussian σ-VAE (Table 4)."""

    name: str = "discretized_gaussian"
    scale: str = "optimal"          # optimal (analytic σ*, EMA at eval) | shared (learned log σ)
    init_log_scale: float = 0.0     # shared: initial log σ
    ema_decay: float = 0.99         # optimal: EMA decay of σ*²
    min_log_sigma: float = -6.0     # optimal: floor on log σ*
    mean_activation: str = "sigmoid"


@dataclass
class DiscretizedLogisticConfig(ComponentConfig):
    """Discretized logistic σ-VAE (Table 4); optimal: s = σ*·√3/π."""

    name: str = "discretized_logistic"
    scale: str = "optimal"          # optimal (analytic σ*, EMA at eval) | shared (learned log s)
    init_log_scale: float = 0.0     # shared: initial log s (the logistic's own scale)
    ema_decay: float = 0.99         # optimal: EMA decay of σ*²
    min_log_sigma: float = -6.0     # optimal: floor on log σ* (before the √3/π factor)
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("discretized_gaussian", DiscretizedGaussianConfig)
def build_discretized_gaussian(cfg: DiscretizedGaussianConfig) -> LikelihoodHead:
    return DiscretizedHead("gaussian", cfg.scale, cfg.init_log_scale, cfg.ema_decay,
                           cfg.min_log_sigma, cfg.mean_activation)


@LIKELIHOODS.register("discretized_logistic", DiscretizedLogisticConfig)
def build_discretized_logistic(cfg: DiscretizedLogisticConfig) -> LikelihoodHead:
    return DiscretizedHead("logistic", cfg.scale, cfg.init_log_scale, cfg.ema_decay,
                           cfg.min_log_sigma, cfg.mean_activation)
