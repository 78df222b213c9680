"""Rate / mutual information / marginal KL (paper §5.2, Eq. 6) against closed forms.

Linear-Gaussian model: x ~ N(0, I_d), encoder q(z|x) = N(Ax, diag s²), prior N(0, I_k).
Then m(z) = N(0, Σ) with Σ = AAᵀ + diag s², and

    I(x; z)      = ½ log det Σ − ½ Σ_j log s_j²
    KL(m ‖ p)    = ½ (tr Σ − k − log det Σ)
    rate         = I + KL(m ‖ p) = ½ (tr Σ − k − Σ_j log s_j²).
"""
from __future__ import annotations

import math

import pytest
import torch

from seqvae.evaluation.latents import (
    analyze_latents,
    collect_posteriors,
    log_aggregate_posterior,
    marginal_kl,
    mutual_information,
    rate,
)

A = torch.tensor([[1.5, 0.5, 0.0], [-0.4, 1.0, 0.8]], dtype=torch.float64)  # k = 2, d = 3
S2 = torch.tensor([0.3, 0.6], dtype=torch.float64)
SIGMA = A @ A.T + torch.diag(S2)
TRUE_MI = float(0.5 * torch.logdet(SIGMA) - 0.5 * S2.log().sum())              # 1.809 nats
TRUE_MKL = float(0.5 * (SIGMA.trace() - 2 - torch.logdet(SIGMA)))             # 0.648 nats
TRUE_RATE = float(0.5 * (SIGMA.trace() - 2 - S2.log().sum()))                 # 2.457 nats
TOL = 0.05  # nats (≈ 3 Monte Carlo standard errors: 3000 data points, 12 000 samples)


def _whitened_data(n: int, seed: int) -> torch.Tensor:
    """x ~ N(0, I_3), then exactly centred and whitened, so the data set's own mean and
    covariance are 0 and I: the test measures the estimator, not the luck of the draw."""
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / n)
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T


@pytest.fixture(scope="module")
def linear_gaussian():
    x = _whitened_data(3000, seed=0)

    def encode(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = batch @ A.T
        return mu, S2.log().expand_as(mu)

    mu, logvar = collect_posteriors(encode, x.split(1000))
    stats = analyze_latents(mu, logvar, num_samples=12_000, generator=torch.Generator().manual_seed(1))
    return mu, logvar, stats


def test_the_closed_forms_match_independent_computations():
    """The constants the other tests compare with are right: KL(m ‖ p) against torch's
    Gaussian KL, and I(x; z) against a large Monte Carlo estimate from the population
    model itself (x ~ N(0, I), z ~ q(z|x), E[log q(z|x) − log m(z)] with m = N(0, Σ))."""
    from torch.distributions import MultivariateNormal, Normal, kl_divergence

    m = MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=SIGMA)
    p = MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.eye(2, dtype=torch.float64))
    assert float(kl_divergence(m, p)) == pytest.approx(TRUE_MKL, abs=1e-9)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    q = Normal(x @ A.T, S2.sqrt())
    z = q.mean + q.stddev * torch.randn(x.shape[0], 2, generator=g, dtype=torch.float64)
    mi_terms = q.log_prob(z).sum(-1) - m.log_prob(z)
    se = float(mi_terms.std() / math.sqrt(x.shape[0]))
    assert float(mi_terms.mean()) == pytest.approx(TRUE_MI, abs=4 * se)
    assert float((q.log_prob(z).sum(-1) - p.log_prob(z)).mean()) == pytest.approx(TRUE_RATE, abs=0.02)


def test_rate_is_exact_closed_form(linear_gaussian):
    mu, logvar, stats = linear_gaussian
    # whitened data: E_n[(Ax_n)(Ax_n)ᵀ] = AAᵀ exactly, so the empirical rate equals the population rate
    assert rate(mu, logvar) == pytest.approx(TRUE_RATE, abs=1e-9)
    assert stats.rate == pytest.approx(TRUE_RATE, abs=1e-9)


def test_mutual_information_matches_closed_form(linear_gaussian):
    _, _, stats = linear_gaussian
    assert stats.mi_direct_se < 0.02 and stats.marginal_kl_se < 0.02
    assert stats.mi == pytest.approx(TRUE_MI, abs=TOL)
    assert stats.mi_direct == pytest.approx(TRUE_MI, abs=TOL)


def test_marginal_kl_matches_closed_form(linear_gaussian):
    _, _, stats = linear_gaussian
    assert stats.marginal_kl == pytest.approx(TRUE_MKL, abs=TOL)


def test_rate_decomposes_into_mi_plus_marginal_kl_for_the_estimates(linear_gaussian):
    _, _, stats = linear_gaussian
    assert stats.rate == pytest.approx(stats.mi + stats.marginal_kl, abs=1e-12)  # Eq. 6 estimator
    # The direct estimator shares samples with the marginal KL: their sum is the Monte Carlo
    # estimate E[log q(z|x_n) − log p(z)] of the rate (s.e. ≈ 0.02 nats here), so it agrees
    # with the exact rate to within 0.08 nats.
    assert stats.mi_direct + stats.marginal_kl == pytest.approx(stats.rate, abs=0.08)


def test_functional_api_agrees_with_analyze_latents(linear_gaussian):
    mu, logvar, _ = linear_gaussian
    mu, logvar = mu[:300], logvar[:300]
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731 - one random stream for every call
    stats = analyze_latents(mu, logvar, 1000, g())
    assert rate(mu, logvar) == pytest.approx(stats.rate, abs=1e-12)
    assert marginal_kl(mu, logvar, 1000, g()) == pytest.approx(stats.marginal_kl, abs=1e-12)
    assert mutual_information(mu, logvar, 1000, g()) == pytest.approx(stats.mi, abs=1e-12)
    assert mutual_information(mu, logvar, 1000, g(), estimator="direct") == pytest.approx(stats.mi_direct, abs=1e-12)


def test_posterior_equal_to_prior_carries_no_information():
    mu, logvar = torch.zeros(50, 4), torch.zeros(50, 4)
    stats = analyze_latents(mu, logvar, 500, torch.Generator().manual_seed(0))
    assert stats.rate == 0.0
    assert stats.marginal_kl == pytest.approx(0.0, abs=1e-12)  # m(z) = p(z) pointwise
    assert stats.mi_direct == pytest.approx(0.0, abs=1e-12)


def test_separated_sharp_posteriors_saturate_at_log_n():
    # 8 posteriors 55 standard deviations apart: z identifies n, so I = log N exactly (never more).
    n = 8
    mu = torch.zeros(n, 2)
    mu[:, 0] = torch.arange(n) - 3.5
    logvar = torch.full((n, 2), -8.0)
    stats = analyze_latents(mu, logvar, 20_000, torch.Generator().manual_seed(0))
    assert stats.mi_direct == pytest.approx(math.log(n), abs=1e-9)
    assert stats.mi_direct_se < 1e-9
    # and the marginal KL is the rest of the rate (Eq. 6), up to Monte Carlo error
    assert stats.marginal_kl == pytest.approx(stats.rate - math.log(n), abs=4 * stats.marginal_kl_se)
    assert stats.mi == pytest.approx(math.log(n), abs=4 * stats.mi_se)


def test_log_aggregate_posterior_matches_direct_mixture_density():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(30, 3, generator=g), torch.randn(30, 3, generator=g) - 1.0
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    comps = torch.distributions.Normal(mu.double(), (0.5 * logvar.double()).exp())
    direct = torch.logsumexp(comps.log_prob(z[:, None, :]).sum(-1), dim=1) - math.log(30)
    torch.testing.assert_close(log_aggregate_posterior(z, mu, logvar, chunk_size=3), direct, rtol=0, atol=1e-10)
