"""Rate, mutual information and marginal KL of a Gaussian encoder (paper §5.2, Eq. 6).

For a data set {x_n}, n = 1..N, an encoder with diagonal Gaussian posteriors
q(z|x_n) = N(μ_n, diag(exp(logvar_n))) and the prior p(z) = N(0, I), the rate splits as
(Hoffman & Johnson 2016; Alemi et al. 2017; σ-VAE paper Eq. 6)::

    rate = E_n KL(q(z|x_n) ‖ p(z)) = I(x; z) + KL(m(z) ‖ p(z)),   m(z) = (1/N) Σ_n q(z|x_n).

* ``rate`` is exact (closed-form Gaussian KL, averaged over the data).
* ``marginal_kl`` = E_{z~m}[log m(z) − log p(z)] is estimated by Monte Carlo as in Rosca et
  al. (2018): draw n uniformly, z ~ q(z|x_n), and evaluate log m(z) exactly as a logsumexp
  over **all** N mixture components — including the component n that z was drawn from
  (the standard estimator). Chunked over z, so memory is O(chunk · N).
* ``mi`` = rate − marginal_kl (Eq. 6); ``mi_direct`` = E[log q(z|x_n) − log m(z)] on the same
  samples. Both target the same number; ``mi`` uses the exact rate and has lower variance.

Bias. m(z) is the mixture over the *given* N points, i.e. the aggregate posterior of the
empirical data distribution. For that distribution log m(z) is evaluated exactly and the
estimates are unbiased up to Monte Carlo noise (reported as standard errors). As estimates
of the population quantities they are biased at finite N: the mixture can carry at most
log N nats (``mi_direct ≤ log N`` always), so a sharp encoder's MI saturates near log N and
its marginal KL is overestimated; leaving component n out of the sum would bias the other
way (log m(z) → −∞ for sharp posteriors). Use as many data points as memory allows and
compare models at equal N. The standard errors cover Monte Carlo noise only, not the
sampling of the data set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

import torch
from torch import Tensor

__all__ = [
    "LatentStats",
    "collect_posteriors",
    "kl_per_example",
    "rate",
    "log_aggregate_posterior",
    "sample_aggregate_posterior",
    "marginal_kl",
    "mutual_information",
    "analyze_latents",
]

_LOG2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class LatentStats:
    """Eq. 6 quantities in nats per example, with standard errors (``*_se``)."""

    rate: float             # E_n KL(q(z|x_n) ‖ p(z)), closed form
    rate_se: float          # std_n(KL_n) / √N
    marginal_kl: float      # KL(m ‖ p), Monte Carlo
    marginal_kl_se: float
    mi: float               # rate − marginal_kl (Eq. 6)
    mi_se: float            # √(rate_se² + marginal_kl_se²)
    mi_direct: float        # E[log q(z|x_n) − log m(z)], Monte Carlo
    mi_direct_se: float
    num_data: int           # N (mi_direct ≤ log N)
    num_samples: int        # Monte Carlo samples z ~ m

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _check(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    if mu.shape != logvar.shape or mu.dim() < 2 or mu.shape[0] < 1:
        raise ValueError(f"expected mu, logvar [N, ...] of one shape, got {tuple(mu.shape)}, {tuple(logvar.shape)}")
    return mu.detach().flatten(1).double(), logvar.detach().flatten(1).double()


@torch.no_grad()
def collect_posteriors(
    encode: Callable[[Tensor], tuple[Tensor, Tensor]],
    batches: Iterable[Tensor],
) -> tuple[Tensor, Tensor]:
    """Run ``encode(x) -> (mu, logvar)`` over ``batches``; return ``[N, D]`` float64 on CPU.

    Latent dims after the first are flattened (a video model's ``[B, T, Z]`` becomes one
    ``T·Z`` vector per sequence).
    """
    mus, lvs = [], []
    for x in batches:
        mu, lv = encode(x)
        m, logvar = _check(mu, lv)
        mus.append(m.cpu())
        lvs.append(logvar.cpu())
    return torch.cat(mus), torch.cat(lvs)


def kl_per_example(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ_n, diag e^{logvar_n}) ‖ N(0, I)) = ½ Σ_d (μ² + e^{logvar} − logvar − 1): ``[N]`` float64."""
    mu, logvar = _check(mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(1)


def rate(mu: Tensor, logvar: Tensor) -> float:
    """The rate E_n KL(q(z|x_n) ‖ p(z)) in nats (closed form, mean over the N examples)."""
    return float(kl_per_example(mu, logvar).mean())


def log_aggregate_posterior(z: Tensor, mu: Tensor, logvar: Tensor, chunk_size: int | None = None) -> Tensor:
    """log m(z) = logsumexp_n log N(z; μ_n, diag e^{logvar_n}) − log N for ``z [M, D]`` → ``[M]``.

    All N components are used. The quadratic form is expanded into matrix products,
    Σ_d (z−μ)²/σ² = z²·(1/σ²)ᵀ − 2 z·(μ/σ²)ᵀ + Σ_d μ²/σ², in float64, ``chunk_size`` rows
    of z at a time (memory ~ a few × ``chunk_size × N`` doubles; default keeps
    ``chunk_size × N`` ≈ 2²² elements, 32 MB).
    """
    mu, logvar = _check(mu, logvar)
    z = z.to(mu).flatten(1)
    n = mu.shape[0]
    if chunk_size is None:
        chunk_size = max(1, 2**22 // n)
    prec = torch.exp(-logvar)                                   # [N, D]
    prec_mu = mu * prec                                          # [N, D]
    const = -0.5 * ((mu * prec_mu).sum(1) + logvar.sum(1) + mu.shape[1] * _LOG2PI)  # [N]
    out = []
    for zc in z.split(chunk_size):
        quad = zc.pow(2) @ prec.T - 2.0 * (zc @ prec_mu.T)      # [c, N] (without Σ μ²/σ², in const)
        out.append(torch.logsumexp(const - 0.5 * quad, dim=1) - math.log(n))
    return torch.cat(out) if out else z.new_zeros(0)


def sample_aggregate_posterior(
    mu: Tensor, logvar: Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw z ~ m(z): n ~ Uniform{1..N}, z = μ_n + e^{logvar_n/2} ε. Returns ``(z [M, D], n [M], ε [M, D])``."""
    mu, logvar = _check(mu, logvar)
    gdev = generator.device if generator is not None else mu.device
    idx = torch.randint(mu.shape[0], (num_samples,), generator=generator, device=gdev).to(mu.device)
    eps = torch.randn(num_samples, mu.shape[1], generator=generator, device=gdev, dtype=torch.float64).to(mu.device)
    z = mu[idx] + torch.exp(0.5 * logvar[idx]) * eps
    return z, idx, eps


def _mc_terms(
    mu: Tensor, logvar: Tensor, num_samples: int, generator: torch.Generator | None, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """Per-sample terms (log m − log p, log q − log m), each ``[M]``."""
    mu, logvar = _check(mu, logvar)
    z, idx, eps = sample_aggregate_posterior(mu, logvar, num_samples, generator)
    d = mu.shape[1]
    log_m = log_aggregate_posterior(z, mu, logvar, chunk_size)
    log_p = -0.5 * (z.pow(2).sum(1) + d * _LOG2PI)
    log_q = -0.5 * (eps.pow(2).sum(1) + logvar[idx].sum(1) + d * _LOG2PI)  # log q(z | x_n), z from component n
    return log_m - log_p, log_q - log_m


def _mean_se(x: Tensor) -> tuple[float, float]:
    se = float(x.std(unbiased=True)) / math.sqrt(x.numel()) if x.numel() > 1 else float("nan")
    return float(x.mean()), se


def marginal_kl(
    mu: Tensor,
    logvar: Tensor,
    num_samples: int = 10_000,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> float:
    """KL(m(z) ‖ p(z)) = E_{z~m}[log m(z) − log p(z)] by Monte Carlo (Rosca et al. 2018)."""
    return _mean_se(_mc_terms(mu, logvar, num_samples, generator, chunk_size)[0])[0]


def mutual_information(
    mu: Tensor,
    logvar: Tensor,
    num_samples: int = 10_000,
    generator: torch.Generator | None = None,
    estimator: Literal["decomposition", "direct"] = "decomposition",
    chunk_size: int | None = None,
) -> float:
    """I(x; z) under the encoder and the empirical data distribution, in nats.

    ``"decomposition"``: rate − KL(m ‖ p) (Eq. 6, exact rate). ``"direct"``:
    E_{n, z~q(z|x_n)}[log q(z|x_n) − log m(z)]. See the module docstring on bias.
    """
    mkl_terms, mi_terms = _mc_terms(mu, logvar, num_samples, generator, chunk_size)
    if estimator == "decomposition":
        return rate(mu, logvar) - float(mkl_terms.mean())
    if estimator == "direct":
        return float(mi_terms.mean())
    raise ValueError(f"estimator must be 'decomposition' or 'direct', got {estimator!r}")


def analyze_latents(
    mu: Tensor,
    logvar: Tensor,
    num_samples: int = 10_000,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> LatentStats:
    """All Eq. 6 quantities from one set of Monte Carlo samples (``mu``, ``logvar``: ``[N, ...]``)."""
    kl = kl_per_example(mu, logvar)
    r, r_se = _mean_se(kl)
    if kl.numel() == 1:
        r_se = 0.0
    mkl_terms, mi_terms = _mc_terms(mu, logvar, num_samples, generator, chunk_size)
    mkl, mkl_se = _mean_se(mkl_terms)
    mi_d, mi_d_se = _mean_se(mi_terms)
    return LatentStats(
        rate=r, rate_se=r_se,
        marginal_kl=mkl, marginal_kl_se=mkl_se,
        mi=r - mkl, mi_se=math.sqrt(r_se**2 + mkl_se**2),
        mi_direct=mi_d, mi_direct_se=mi_d_se,
        num_data=int(kl.numel()), num_samples=int(num_samples),
    )
