"""The σ-VAE family (paper §3.1, §4) against closed forms and torch.distributions."""
import math

import pytest
import torch
from torch.distributions import Normal

from seqvae.likelihoods.gaussian import (
    FixedSigmaGaussian,
    OptimalSigmaGaussian,
    PerPixelSigmaGaussian,
    SharedSigmaGaussian,
    gaussian_nll,
    soft_clip,
)


def _data(n=4, c=3, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(n, c, h, w, generator=g)
    x = torch.rand(n, c, h, w, generator=g)
    return params, x


def test_fixed_sigma_matches_normal_log_prob():
    params, x = _data()
    head = FixedSigmaGaussian(0.3)
    expected = -Normal(torch.sigmoid(params), 0.3).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), expected)


def test_unit_gaussian_is_half_sse_plus_constant():
    params, x = _data()
    head = FixedSigmaGaussian(1.0)
    d = x[0].numel()
    sse = ((x - torch.sigmoid(params)) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), 0.5 * sse + 0.5 * d * math.log(2 * math.pi))


def test_shared_sigma_matches_normal_and_learns_sigma():
    params, x = _data()
    head = SharedSigmaGaussian(init_log_sigma=math.log(0.7))
    expected = -Normal(torch.sigmoid(params), 0.7).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), expected)
    head.nll(params, x).sum().backward()
    # σ = 0.7 is far above the RMSE here (~0.3): the gradient pushes log σ down
    assert head._log_sigma.grad > 0


def test_optimal_sigma_is_batch_rmse_and_nll_matches_normal():
    params, x = _data()
    head = OptimalSigmaGaussian().train()
    mu = torch.sigmoid(params)
    rmse = ((x - mu) ** 2).mean().sqrt()
    nll = head.nll(params, x)
    torch.testing.assert_close(nll, -Normal(mu, rmse).log_prob(x).sum((1, 2, 3)))
    torch.testing.assert_close(head.scalars()["sigma"], rmse)
    head.commit_pending(True)  # the trainer commits the step's σ* once its update is accepted
    torch.testing.assert_close(head.scalars()["beta_eff"], 2 * rmse**2)  # first update sets the EMA


def test_per_image_sigma_is_rmse_of_each_image():
    params, x = _data()
    head = OptimalSigmaGaussian(per_image=True).train()
    mu = torch.sigmoid(params)
    rmse = ((x - mu) ** 2).mean((1, 2, 3)).sqrt()
    expected = -Normal(mu, rmse[:, None, None, None]).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), expected)
    assert not head.valid_bound


def test_optimal_sigma_uses_ema_at_evaluation():
    head = OptimalSigmaGaussian(ema_decay=0.5).train()
    mses = []
    for seed in range(3):
        params, x = _data(seed=seed)
        mses.append(((x - torch.sigmoid(params)) ** 2).mean())
        head.nll(params, x)
        head.commit_pending(True)  # the trainer commits after an accepted update
    ema = mses[0]
    for n, m in enumerate(mses[1:], start=1):
        decay = min(0.5, (1 + n) / (10 + n))   # the warm-up of ema_decay_at
        ema = decay * ema + (1 - decay) * m
    torch.testing.assert_close(head.ema_sigma2, ema)
    head.eval()
    params, x = _data(seed=7)
    expected = -Normal(torch.sigmoid(params), ema.sqrt()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), expected)
    torch.testing.assert_close(head.ema_sigma2, ema)  # evaluation does not move the EMA


def test_loss_derivative_wrt_sigma_vanishes_at_optimum():
    params, x = _data()
    mu = torch.sigmoid(params)
    sigma_star = ((x - mu) ** 2).mean().sqrt()
    for scale, sign in ((1.0, 0), (0.8, -1), (1.25, 1)):
        log_sigma = torch.log(sigma_star * scale).clone().requires_grad_(True)
        gaussian_nll(x, mu, log_sigma).sum().backward()
        if sign == 0:
            assert abs(log_sigma.grad.item()) < 1e-3
        else:
            assert math.copysign(1, log_sigma.grad.item()) == sign


def test_beta_vae_objective_is_scaled_sigma_vae_elbo():
    """Σ(x−μ)² + β·KL  ==  β · (NLL_σ + KL) − β·const   with σ = √(β/2)  (paper §3.1)."""
    params, x = _data()
    kl = torch.rand(params.shape[0]) * 10
    d = x[0].numel()
    for beta in (1e-3, 0.1, 1.0, 10.0):
        sigma = math.sqrt(beta / 2)
        head = FixedSigmaGaussian(sigma)
        sse = ((x - torch.sigmoid(params)) ** 2).sum((1, 2, 3))
        beta_objective = sse + beta * kl
        const = d * math.log(sigma) + 0.5 * d * math.log(2 * math.pi)
        torch.testing.assert_close(beta_objective, beta * (head.nll(params, x) + kl - const), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(head.scalars()["beta_eff"], torch.tensor(beta))


def test_per_pixel_sigma_soft_clip_and_normal():
    n, c = 2, 3
    params = torch.randn(n, 2 * c, 4, 4) * 5
    params[:, c:] = torch.linspace(-30, 30, n * c * 16).reshape(n, c, 4, 4)
    x = torch.rand(n, c, 4, 4)
    head = PerPixelSigmaGaussian(min_log_sigma=-6.0, max_log_sigma=2.0)
    log_sigma = soft_clip(params[:, c:], -6.0, 2.0)
    # the lower clip runs after the upper one, so the top may exceed λmax by softplus(λmin − λmax)
    assert log_sigma.min() >= -6.0 and log_sigma.max() <= 2.0 + 1e-3
    assert log_sigma.min() < -5.9 and log_sigma.max() > 1.9  # soft, not squashed
    expected = -Normal(torch.sigmoid(params[:, :c]), log_sigma.exp()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), expected)


def test_nll_is_float32_under_bf16_autocast():
    params, x = _data()
    params16 = params.bfloat16()
    head = FixedSigmaGaussian(0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head.nll(params16, x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head.nll(params16.float(), x))


def test_sample_reproducible_and_centred():
    params, _ = _data(n=1, h=64, w=64)
    head = FixedSigmaGaussian(0.05)
    a = head.sample(params, torch.Generator().manual_seed(1))
    b = head.sample(params, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    mean = head.mean(params)
    assert (a - mean).abs().mean() < 0.06 and (a - mean).std() > 0.02


def test_wrong_param_channels_is_a_clear_error():
    head = PerPixelSigmaGaussian()
    with pytest.raises(ValueError, match="needs params"):
        head.nll(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))


def test_optimal_sigma_ema_moves_only_when_the_step_is_committed():
    """A NaN pixel must not poison the EMA (issue 11.7): σ*² is pending until the trainer
    commits the step, and a skipped (non-finite) step is dropped."""
    from seqvae.data.spec import DataSpec
    from seqvae.models.conv_vae import ConvVAE, ConvVAEConfig

    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(base_channels=8, latent_dim=4), OptimalSigmaGaussian(), DataSpec(3, 16, 16)).train()
    x = torch.rand(4, 1, 3, 16, 16)
    model({"frames": x})
    model.commit_step(True)
    ema = model.likelihood.ema_sigma2.clone()
    assert torch.isfinite(ema) and ema != 1.0
    bad = x.clone()
    bad[0, 0, 0, 3, 5] = float("nan")
    assert not torch.isfinite(model({"frames": bad}).loss)
    assert torch.equal(model.likelihood.ema_sigma2, ema)   # recorded, not applied
    model.commit_step(False)                                # the trainer skipped this update
    assert torch.equal(model.likelihood.ema_sigma2, ema)
    model.commit_step(True)                                 # nothing pending is left to apply
    assert torch.equal(model.likelihood.ema_sigma2, ema)
    model.eval()
    assert torch.isfinite(model({"frames": x}).loss)        # the next evaluation is finite

