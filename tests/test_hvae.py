"""Tests of the hierarchical VAE (seqvae.models.hvae): ELBO bookkeeping, per-layer KL against
independent closed forms, reproducible ancestral sampling, gradients, bf16 autocast, and
that it learns a small procedurally drawn image set."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import FixedSigmaGaussian, SharedSigmaGaussian
from seqvae.models.hvae import (
    HVAE,
    DiagGaussian,
    HVAEConfig,
    build_hvae,
    precision_weighted,
    resolution_schedule,
)
from seqvae.models.output import ELBO
from seqvae.registry import MODELS

SPEC16 = DataSpec(channels=3, height=16, width=16)
MODES = ["bottom_up", "top_down"]




def small(inference: str, head=None, layers: int = 4, spec: DataSpec = SPEC16) -> HVAE:
    cfg = HVAEConfig(num_layers=layers, channels=16, latent_channels=4, blocks=1, inference=inference)
    return build_hvae(cfg, head if head is not None else SharedSigmaGaussian(), spec)


def squares(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` images ``[n, 1, 3, size, size]``: a dark random background with one bright
    random-coloured square of random side (4 … size/2) at a random position."""
    g = torch.Generator().manual_seed(seed)
    imgs = (torch.rand(n, 3, 1, 1, generator=g) * 0.3).expand(n, 3, size, size).clone()
    for i in range(n):
        side = int(torch.randint(4, size // 2 + 1, (1,), generator=g))
        r, c = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        imgs[i, :, r:r + side, c:c + side] = torch.rand(3, 1, 1, generator=g) * 0.6 + 0.4
    return imgs.unsqueeze(1)


def normal(d: DiagGaussian) -> Normal:
    return Normal(d.mu, torch.exp(0.5 * d.logvar))


# ------------------------------------------------------------------ schedule / building
def test_resolution_schedule() -> None:
    assert resolution_schedule(15, 32) == [16] * 5 + [8] * 5 + [4] * 5
    assert resolution_schedule(4, 16) == [8, 8, 4, 2]          # the remainder goes to the finest group
    assert resolution_schedule(2, 32) == [16, 8]
    assert resolution_schedule(5, 32, num_scales=2) == [16, 16, 16, 8, 8]
    with pytest.raises(ValueError):
        resolution_schedule(0, 32)


def test_default_config_matches_paper_baseline() -> None:
    torch.manual_seed(0)
    model = MODELS.build(HVAEConfig(), SharedSigmaGaussian(), DataSpec(3, 32, 32))
    assert isinstance(model, HVAE)
    assert model.num_layers == 15 and model.inference == "bottom_up"
    states = model.posterior(torch.rand(1, 3, 32, 32))
    assert [s.z.shape[-1] for s in states] == [16] * 5 + [8] * 5 + [4] * 5
    assert all(s.z.shape[1] == 8 for s in states)


@pytest.mark.parametrize(
    "spec, match",
    [
        (DataSpec(3, 32, 16), "square"),
        (DataSpec(3, 20, 20), "divisible by 8"),
        (DataSpec(3, 32, 32, seq_len=4), "seq_len"),
    ],
)
def test_build_rejects_unsupported_data(spec: DataSpec, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_hvae(HVAEConfig(), SharedSigmaGaussian(), spec)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"inference": "ladder"}, "model.inference must be one of bottom_up, top_down, got 'ladder'"),
        ({"num_layers": 0}, "model.num_layers must be at least 1, got 0"),
        ({"num_scales": 0}, "model.num_scales must be at least 1, got 0"),
        ({"blocks": -1}, "model.blocks must be at least 0, got -1"),
    ],
)
def test_config_rejects_bad_settings_when_created(settings: dict, message: str) -> None:
    """A bad setting is refused by the config itself, before any data or model exists."""
    with pytest.raises(ValueError) as info:
        HVAEConfig(**settings)
    assert str(info.value) == message


def test_wrong_frame_shape_is_rejected() -> None:
    model = small("bottom_up")
    with pytest.raises(ValueError, match="frames"):
        model({"frames": torch.rand(2, 2, 3, 16, 16)})


# ----------------------------------------------------------------------- the bound
@pytest.mark.parametrize("inference", MODES)
def test_elbo_is_nll_plus_sum_of_layer_kls(inference: str) -> None:
    torch.manual_seed(0)
    model = small(inference)
    x = torch.rand(3, 1, 3, 16, 16)
    torch.manual_seed(7)
    out = model({"frames": x})
    assert isinstance(out, ELBO)
    kl_layers = out.extras["kl_per_layer"]
    assert out.nll.shape == (3, 1) and out.kl.shape == (3, 1) and kl_layers.shape == (3, 4)
    assert out.dims == 3 * 16 * 16
    torch.testing.assert_close(out.kl[:, 0], kl_layers.sum(1))
    torch.testing.assert_close(out.neg_elbo, out.nll[:, 0] + kl_layers.sum(1))
    # the NLL is the head's NLL of the decoded first-layer sample, recomputed independently
    torch.manual_seed(7)
    states = model.posterior(x[:, 0])
    torch.testing.assert_close(out.nll[:, 0], model.likelihood.nll(model.decode(states[0].z), x[:, 0]))
    assert torch.all(kl_layers.isfinite())


def test_top_down_kl_per_layer_matches_closed_form() -> None:
    torch.manual_seed(1)
    model = small("top_down")
    x = torch.rand(4, 1, 3, 16, 16)
    torch.manual_seed(3)
    out = model({"frames": x})
    torch.manual_seed(3)
    states = model.posterior(x[:, 0])
    assert all(s.analytic for s in states)
    expected = torch.stack([kl_divergence(normal(s.q), normal(s.p)).flatten(1).sum(1) for s in states], 1)
    torch.testing.assert_close(out.extras["kl_per_layer"], expected, rtol=1e-4, atol=1e-3)
    assert torch.all(expected >= 0)
    # the top prior is N(0, I) and the lower priors really depend on the sample above
    assert torch.all(states[-1].p.mu == 0) and torch.all(states[-1].p.logvar == 0)
    assert not torch.allclose(states[0].p.mu, torch.zeros_like(states[0].p.mu))


def test_bottom_up_kl_single_sample_and_analytic_top() -> None:
    torch.manual_seed(2)
    model = small("bottom_up")
    x = torch.rand(4, 1, 3, 16, 16)
    torch.manual_seed(5)
    out = model({"frames": x})
    torch.manual_seed(5)
    states = model.posterior(x[:, 0])
    assert [s.analytic for s in states] == [False, False, False, True]
    expected = []
    for s in states[:-1]:   # log q(z_l | z_{l-1}) − log p(z_l | z_{l+1}) at the sampled z_l
        expected.append((normal(s.q).log_prob(s.z) - normal(s.p).log_prob(s.z)).flatten(1).sum(1))
    top = states[-1]        # KL(q(z_L | z_{L-1}) ‖ N(0, I)) in closed form
    expected.append((0.5 * (top.q.mu**2 + top.q.logvar.exp() - 1 - top.q.logvar)).flatten(1).sum(1))
    torch.testing.assert_close(out.extras["kl_per_layer"], torch.stack(expected, 1), rtol=1e-4, atol=1e-2)


def test_precision_weighted_is_the_normalised_product() -> None:
    g = torch.Generator().manual_seed(0)
    a = DiagGaussian(torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g))
    b = DiagGaussian(torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g))
    ab = precision_weighted(a, b)
    # log N(z; a) + log N(z; b) − log N(z; ab) does not depend on z
    diffs = []
    for _ in range(3):
        z = torch.randn(2, 3, 4, 4, generator=g) * 3
        diffs.append(normal(a).log_prob(z) + normal(b).log_prob(z) - normal(ab).log_prob(z))
    torch.testing.assert_close(diffs[0], diffs[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(diffs[0], diffs[2], rtol=1e-4, atol=1e-4)
    assert torch.all(ab.logvar < torch.minimum(a.logvar, b.logvar))


# ------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("inference", MODES)
def test_generate_reproducible_with_generator(inference: str) -> None:
    torch.manual_seed(0)
    model = small(inference)
    batch = {"frames": torch.zeros(3, 1, 3, 16, 16)}
    torch.manual_seed(11)
    first = model.generate(batch, torch.Generator().manual_seed(42))
    torch.manual_seed(99)  # the global RNG must not matter, nor the batch's content
    second = model.generate({"frames": torch.ones(3, 1, 3, 16, 16)}, torch.Generator().manual_seed(42))
    other = model.generate(batch, torch.Generator().manual_seed(43))
    assert first.shape == (3, 1, 3, 16, 16)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert (first - other).abs().max() > 1e-4
    assert first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize("inference", MODES)
def test_finite_nonzero_gradients_for_every_parameter(inference: str) -> None:
    torch.manual_seed(0)
    model = small(inference, layers=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = squares(8, 16, seed=1)
    for _ in range(3):  # past step 0 the zero-initialised residual convs pass gradient on
        opt.zero_grad()
        out = model({"frames": x})
        out.loss.backward()
        opt.step()
        model.commit_step()  # the optimal-σ EMA takes the step's σ* (seqvae.models.base)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.all(p.grad.isfinite()), name
        assert p.grad.abs().max() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("inference", MODES)
def test_runs_under_bf16_autocast(inference: str) -> None:
    torch.manual_seed(0)
    model = small(inference)
    x = squares(4, 16, seed=2)
    torch.manual_seed(3)
    ref = model({"frames": x})
    torch.manual_seed(3)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model({"frames": x})
    assert out.nll.dtype == torch.float32 and out.kl.dtype == torch.float32
    assert out.extras["kl_per_layer"].dtype == torch.float32
    assert torch.all(out.neg_elbo.isfinite())
    torch.testing.assert_close(out.neg_elbo, ref.neg_elbo, rtol=0.05, atol=1.0)
    out.loss.backward()
    assert all(p.grad is None or torch.all(p.grad.isfinite()) for p in model.parameters())


# -------------------------------------------------------------------------- learning
@pytest.mark.parametrize("inference", MODES)
def test_learns_coloured_squares(inference: str) -> None:
    """150 Adam steps on 64 images 16×16: −ELBO falls by > 4 nats per dim, and the
    reconstructions beat the best latent-free guess (the mean image) by 3×, so the
    latents carry the image."""
    torch.manual_seed(0)
    x = squares(64, 16, seed=0)
    batch = {"frames": x}
    model = small(inference, head=FixedSigmaGaussian(0.1), layers=3)
    mean_image_mse = float(((x - x.mean(0, keepdim=True)) ** 2).mean())

    def evaluate() -> tuple[float, float]:
        torch.manual_seed(123)
        with torch.no_grad():
            bound = float(model(batch).neg_elbo.mean()) / SPEC16.frame_dims
            mse = float(((model.reconstruct(batch) - x) ** 2).mean())
        return bound, mse

    before, _ = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
        model.commit_step()  # the optimal-σ EMA takes the step's σ* (seqvae.models.base)
    after, mse = evaluate()
    assert math.isfinite(after)
    assert before - after > 4.0, (before, after)
    assert mse < mean_image_mse / 3, (mse, mean_image_mse)
