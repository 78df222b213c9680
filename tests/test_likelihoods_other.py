"""The non-Gaussian decoders of paper Tables 2 and 4 (§3.2, App. D): values against closed
forms and torch.distributions, normalization over the 256 levels, sampling, autocast."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import distributions as D

import seqvae.likelihoods.bernoulli  # noqa: F401  (registers the heads)
import seqvae.likelihoods.bitwise  # noqa: F401
import seqvae.likelihoods.categorical  # noqa: F401
import seqvae.likelihoods.discretized  # noqa: F401
import seqvae.likelihoods.logistic_mixture  # noqa: F401
import seqvae.likelihoods.student_t  # noqa: F401
from seqvae.likelihoods.discretized import HALF_BIN, gaussian_log_mass, logistic_log_mass
from seqvae.likelihoods.student_t import standard_t
from seqvae.registry import LIKELIHOODS

# (name, config overrides) for every head of this file; discrete ones get log_probs_256
DISCRETE = [
    ("categorical", {}),
    ("bitwise_categorical", {}),
    ("logistic_mixture", {"components": 3}),
    ("discretized_gaussian", {}),
    ("discretized_gaussian", {"scale": "shared", "init_log_scale": -3.0}),
    ("discretized_logistic", {}),
    ("discretized_logistic", {"scale": "shared", "init_log_scale": -3.5}),
]
CONTINUOUS = [("student_t", {"init_log_scale": -2.5, "init_df": 4.0}), ("bernoulli", {})]
ALL = CONTINUOUS + DISCRETE


def build(name: str, **overrides):
    head = LIKELIHOODS.build(LIKELIHOODS.config_class(name)(**overrides))
    return head


def ready(name: str, overrides: dict, seed: int = 0):
    """A head in eval mode; optimal-σ heads get a fitted EMA (σ ≈ 0.06) first."""
    head = build(name, **overrides)
    if getattr(head, "optimal", None) is not None:
        head.optimal.ema_sigma2.fill_(0.06**2)
        head.optimal.ema_steps.fill_(1)
    return head.eval()


def random_params(head, n: int, c: int, h: int, w: int, seed: int, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, head.num_params(c), h, w, generator=g)


def ids(cases):
    return [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" if o else n for n, o in cases]


# --------------------------------------------------------------- registry / config
def test_registered_with_flags():
    expected = {  # name: (discrete, valid_bound)
        "student_t": (False, True),
        "bernoulli": (False, False),  # cross-entropy of gray levels is not a normalized likelihood
        "categorical": (True, True),
        "bitwise_categorical": (True, True),
        "logistic_mixture": (True, True),
        "discretized_gaussian": (True, True),
        "discretized_logistic": (True, True),
    }
    for name, (discrete, valid) in expected.items():
        assert name in LIKELIHOODS.names()
        head = build(name)
        assert (head.discrete, head.valid_bound) == (discrete, valid), name
        assert LIKELIHOODS.config_class(name)().name == name


@pytest.mark.parametrize("name, overrides, match", [
    ("student_t", {"init_df": 2.0}, "init_df"),
    ("student_t", {"init_df": 1.0}, "init_df"),
    ("student_t", {"mean_activation": "relu"}, "mean_activation"),
    ("logistic_mixture", {"components": 0}, "components"),
    ("logistic_mixture", {"mean_activation": "tanh"}, "mean_activation"),
    ("discretized_gaussian", {"scale": "learned"}, "scale"),
    ("discretized_logistic", {"ema_decay": 1.0}, "ema_decay"),
    ("discretized_logistic", {"mean_activation": "softplus"}, "mean_activation"),
])
def test_bad_config_values_raise(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        build(name, **overrides)


def test_wrong_param_channels_raise():
    head = build("logistic_mixture", components=4)
    with pytest.raises(ValueError, match="params"):
        head.nll(torch.zeros(1, 4 * 7 - 1, 2, 2), torch.zeros(1, 3, 2, 2))


# ---------------------------------------------------------------------- Student-t
def test_student_t_nll_and_grads_match_torch():
    head = build("student_t", init_log_scale=-1.3, init_df=3.7)
    params = random_params(head, 3, 3, 4, 5, seed=1).requires_grad_()
    x = torch.rand(3, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    nll = head.nll(params, x)
    nll.sum().backward()
    ours = [params.grad.clone(), head.log_scale.grad.clone(), head.df_raw.grad.clone()]

    params.grad = None
    head.zero_grad()
    dist = D.StudentT(head.df(), torch.sigmoid(params), head.log_scale.exp())
    ref = -dist.log_prob(x).sum(dim=(1, 2, 3))
    ref.sum().backward()
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(ours, [params.grad, head.log_scale.grad, head.df_raw.grad]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_student_t_scalars_and_df_above_two():
    head = build("student_t", init_log_scale=math.log(0.2), init_df=6.0)
    s = head.scalars()
    assert float(s["df"]) == pytest.approx(6.0, rel=1e-5)
    assert float(s["scale"]) == pytest.approx(0.2, rel=1e-5)
    sigma = 0.2 * math.sqrt(6.0 / 4.0)
    assert float(s["sigma"]) == pytest.approx(sigma, rel=1e-5)
    assert float(s["beta_eff"]) == pytest.approx(2 * sigma**2, rel=1e-5)
    with torch.no_grad():
        head.df_raw.fill_(-8.0)
    assert 2.0 < float(head.df().detach()) < 2.001


@pytest.mark.parametrize("df", [2.5, 30.0])
def test_student_t_sampler_matches_density(df: float):
    """Bailey's polar draws: P(|T| < c) against the integrated StudentT density."""
    n = 60_000
    t = standard_t(torch.Size([n]), torch.tensor(df), torch.zeros(()), torch.Generator().manual_seed(5))
    dist = D.StudentT(torch.tensor(df, dtype=torch.float64))
    for c in (0.5, 1.0, 2.0, 4.0):
        grid = torch.linspace(-c, c, 20001, dtype=torch.float64)
        p = float(torch.trapezoid(dist.log_prob(grid).exp(), grid))
        emp = float((t.abs() < c).double().mean())
        assert abs(emp - p) < 5 * math.sqrt(p * (1 - p) / n), (c, emp, p)


# ---------------------------------------------------------------------- Bernoulli
def test_bernoulli_binary_matches_torch_and_fractional_matches_formula():
    head = build("bernoulli")
    params = random_params(head, 2, 3, 4, 4, seed=3, scale=3.0)
    g = torch.Generator().manual_seed(4)
    binary = (torch.rand(2, 3, 4, 4, generator=g) < 0.5).float()
    ref = -D.Bernoulli(logits=params).log_prob(binary).sum(dim=(1, 2, 3))
    torch.testing.assert_close(head.nll(params, binary), ref, rtol=1e-6, atol=1e-4)

    gray = torch.rand(2, 3, 4, 4, generator=g)
    p = torch.sigmoid(params.double())
    ce = -(gray * torch.log(p) + (1 - gray) * torch.log1p(-p)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(head.nll(params, gray).double(), ce, rtol=1e-5, atol=1e-4)
    # gray targets are not normalized: the "likelihood" of x = 0.5 everywhere under p = 0.5
    # is 2^-D, not a density that integrates to one over [0, 1]^D
    half = torch.full((1, 1, 2, 2), 0.5)
    assert float(head.nll(torch.zeros(1, 1, 2, 2), half)) == pytest.approx(4 * math.log(2), rel=1e-6)
    torch.testing.assert_close(head.mean(params), torch.sigmoid(params))


# -------------------------------------------------------------------- categorical
def test_categorical_matches_torch_categorical():
    head = build("categorical")
    params = random_params(head, 2, 3, 3, 4, seed=5)
    g = torch.Generator().manual_seed(6)
    levels = torch.randint(0, 256, (2, 3, 3, 4), generator=g)
    x = levels.float() / 255.0 + 0.3 / 255.0 * (torch.rand(2, 3, 3, 4, generator=g) - 0.5)  # rounds back
    logits = rearrange(params, "n (c k) h w -> n c h w k", k=256)
    ref = -D.Categorical(logits=logits).log_prob(levels).sum(dim=(1, 2, 3))
    torch.testing.assert_close(head.nll(params, x), ref, rtol=1e-6, atol=1e-4)


# ------------------------------------------------- every discrete head: normalization
@pytest.mark.parametrize("name, overrides", DISCRETE, ids=ids(DISCRETE))
def test_discrete_heads_normalized_and_nll_consistent(name, overrides):
    head = ready(name, overrides)
    c = 1 if name == "logistic_mixture" else 2  # the mixture's joint over channels: next test
    params = random_params(head, 1, c, 2, 3, seed=7)
    log_probs = head.log_probs_256(params)                                  # [1, C, 256, 2, 3]
    assert log_probs.shape == (1, c, 256, 2, 3)
    torch.testing.assert_close(log_probs.logsumexp(dim=2), torch.zeros(1, c, 2, 3), atol=2e-6, rtol=0)
    # NLL of each of the 256 constant images = −Σ log p(v) over pixels and channels
    x = torch.arange(256).float().div(255).view(256, 1, 1, 1).expand(256, c, 2, 3)
    nll = head.nll(params.expand(256, -1, -1, -1), x)
    torch.testing.assert_close(nll, -log_probs[0].sum(dim=(0, 2, 3)), rtol=1e-5, atol=1e-4)
    # and a random image: the NLL is the log-probs gathered at its levels
    levels = torch.randint(0, 256, (1, c, 2, 3), generator=torch.Generator().manual_seed(8))
    gathered = log_probs.gather(2, levels.unsqueeze(2)).sum()
    torch.testing.assert_close(head.nll(params, levels.float() / 255), -gathered.view(1), rtol=1e-5, atol=1e-4)
    # mean = the expected level / 255
    expected = (log_probs.exp() * torch.arange(256.0).view(1, 1, 256, 1, 1)).sum(2) / 255
    torch.testing.assert_close(head.mean(params), expected, rtol=1e-5, atol=2e-6)


def test_logistic_mixture_joint_over_two_channels_is_normalized():
    """Components are shared by the channels: the joint over 256² colour pairs sums to 1,
    and its marginals are log_probs_256."""
    head = build("logistic_mixture", components=4, min_log_scale=-4.0)
    params = random_params(head, 1, 2, 1, 1, seed=9, scale=1.0)
    params[:, 4 + 8:] -= 3.0                                     # log-scales around e^-3: sharp, still overlapping
    v = torch.arange(256).float() / 255
    x = torch.stack(torch.meshgrid(v, v, indexing="ij"), dim=-1).view(-1, 2, 1, 1)
    joint = -head.nll(params.expand(x.shape[0], -1, -1, -1), x).double().view(256, 256)
    assert float(joint.logsumexp(dim=(0, 1))) == pytest.approx(0.0, abs=1e-5)
    marginals = head.log_probs_256(params)[0, :, :, 0, 0].double()      # [2, 256]
    torch.testing.assert_close(joint.logsumexp(dim=1), marginals[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(joint.logsumexp(dim=0), marginals[1], rtol=1e-4, atol=1e-4)
    # not a product of marginals: the channels are dependent through the shared component
    assert (joint - (marginals[0][:, None] + marginals[1][None, :])).abs().max() > 0.1


# ------------------------------------------------------------------------ bitwise
def test_bitwise_equals_its_implied_categorical():
    head = build("bitwise_categorical")
    params = random_params(head, 3, 2, 4, 4, seed=10, scale=2.0)
    levels = torch.randint(0, 256, (3, 2, 4, 4), generator=torch.Generator().manual_seed(11))
    from_bits = head.nll(params, levels.float() / 255)
    log_probs = head.log_probs_256(params)
    torch.testing.assert_close(from_bits, -log_probs.gather(2, levels.unsqueeze(2)).sum(dim=(1, 2, 3, 4)),
                               rtol=1e-5, atol=1e-4)
    # the 8 bits as independent Bernoullis, bit b = (v >> b) & 1, LSB first
    logits = rearrange(params, "n (c b) h w -> n c h w b", b=8)
    bits = ((levels.unsqueeze(-1) >> torch.arange(8)) & 1).float()
    ref = -D.Bernoulli(logits=logits).log_prob(bits).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(from_bits, ref, rtol=1e-5, atol=1e-4)


def test_bitwise_bit_order():
    head = build("bitwise_categorical")
    params = torch.full((1, 8, 1, 1), -30.0)
    params[0, [0, 2]] = 30.0                                     # bits 0 and 2 on: level 5
    assert float(head.sample(params, torch.Generator().manual_seed(0))) == pytest.approx(5 / 255)
    assert float(head.nll(params, torch.full((1, 1, 1, 1), 5 / 255))) < 1e-10
    assert float(head.mean(params)) == pytest.approx(5 / 255, abs=1e-9)


# ------------------------------------------------ discretized logistic / Gaussian
def test_discretized_logistic_equals_mixture_with_one_component():
    log_s = -3.2
    single = build("discretized_logistic", scale="shared", init_log_scale=log_s)
    mixture = build("logistic_mixture", components=1)
    g = torch.Generator().manual_seed(12)
    raw_mean = 2 * torch.randn(2, 3, 4, 4, generator=g)
    mix_params = torch.cat([torch.randn(2, 1, 4, 4, generator=g), raw_mean, torch.full((2, 3, 4, 4), log_s)], dim=1)
    x = torch.rand(2, 3, 4, 4, generator=g)
    torch.testing.assert_close(single.nll(raw_mean, x), mixture.nll(mix_params, x), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(single.log_probs_256(raw_mean), mixture.log_probs_256(mix_params), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(single.mean(raw_mean), mixture.mean(mix_params), rtol=1e-6, atol=1e-6)


def test_discretized_gaussian_bins_are_normal_cdf_differences():
    sigma = 0.05
    head = build("discretized_gaussian", scale="shared", init_log_scale=math.log(sigma))
    params = random_params(head, 2, 3, 2, 2, seed=13)
    probs = head.log_probs_256(params).double().exp()                       # [2, 3, 256, 2, 2]
    normal = D.Normal(torch.sigmoid(params.double()).unsqueeze(2), sigma)
    v = torch.arange(256, dtype=torch.float64).view(1, 1, 256, 1, 1)
    mass = normal.cdf((v + 0.5) / 255) - normal.cdf((v - 0.5) / 255)
    torch.testing.assert_close(probs[:, :, 1:255], mass[:, :, 1:255], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(probs[:, :, 0], normal.cdf(torch.tensor(HALF_BIN)).squeeze(2), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(probs[:, :, 255], 1 - normal.cdf(torch.tensor(1 - HALF_BIN)).squeeze(2),
                               rtol=1e-4, atol=1e-9)


def _reference_log_mass(family: str, levels: torch.Tensor, mu: torch.Tensor, log_scale: float) -> torch.Tensor:
    """float64 reference: log(F(b) − F(a)), bins right of the mean mirrored to the left."""
    scale = math.exp(log_scale)
    centered = levels / 255.0 - mu
    a, b = (centered - HALF_BIN) / scale, (centered + HALF_BIN) / scale
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    if family == "gaussian":
        log_cdf = torch.special.log_ndtr
        log_hi, log_lo = log_cdf(hi), log_cdf(lo)
        interior = log_hi + torch.log(-torch.expm1(log_lo - log_hi))
    else:
        log_cdf = F.logsigmoid
        interior = torch.log(torch.sigmoid(hi) - torch.sigmoid(lo))
    return torch.where(levels == 0, log_cdf(b), torch.where(levels == 255, log_cdf(-a), interior))


@pytest.mark.parametrize("family", ["gaussian", "logistic"])
def test_bin_log_mass_float32_accuracy_from_tails_to_huge_scales(family: str):
    fn = gaussian_log_mass if family == "gaussian" else logistic_log_mass
    levels = torch.arange(256).view(256, 1)
    mu = torch.linspace(-0.2, 1.2, 57).view(1, -1)
    for log_scale in (-12.0, -8.0, -6.0, -4.0, -3.3, -3.0, -2.0, -1.0, 0.0, 2.0, 8.0):
        ours = fn(levels, mu, torch.tensor(log_scale)).double()
        ref = _reference_log_mass(family, levels, mu.double(), log_scale)
        known = torch.isfinite(ref)          # the logistic reference underflows below e^-745
        err = (ours - ref).abs() / (1 + ref.abs())
        # float32 resolution; at σ = e^-12 the rounding of x − μ itself is 1e-5 of a bin
        bound = 2e-5 if log_scale < -10 else 3e-6
        assert float(err[known].max()) < bound, (log_scale, float(err[known].max()))
        assert torch.isfinite(ours).all()
        assert (ours[~known] < -700).all()


@pytest.mark.parametrize("fn", [gaussian_log_mass, logistic_log_mass], ids=["gaussian", "logistic"])
def test_bin_log_mass_gradients_finite_and_correct(fn):
    levels = torch.tensor([0, 1, 76, 77, 78, 200, 254, 255])
    for log_scale in (-30.0, -12.0, -5.0, 0.0, 5.0, 60.0, 100.0):
        mu = torch.tensor([0.3], requires_grad=True)
        ls = torch.tensor(log_scale, requires_grad=True)
        fn(levels, mu, ls).sum().backward()
        assert torch.isfinite(mu.grad).all() and torch.isfinite(ls.grad).all(), log_scale
        if log_scale >= 40:  # σ ≫ bin: each interior mass ∝ 1/σ, the edges hold ½ each
            assert float(ls.grad) == pytest.approx(-6.0, rel=1e-4)
    # against float64 autograd in the ordinary regime
    for log_scale in (-6.0, -3.0, 0.0):
        mu = torch.tensor([0.43], requires_grad=True)
        ls = torch.tensor(log_scale, requires_grad=True)
        fn(levels, mu, ls).sum().backward()
        mu64 = torch.tensor([0.43], dtype=torch.float64, requires_grad=True)
        ls64 = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)
        fn(levels, mu64, ls64).sum().backward()
        torch.testing.assert_close(mu.grad.double(), mu64.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ls.grad.double(), ls64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["gaussian", "logistic"])
def test_optimal_scale_uses_batch_sigma_in_training_and_ema_in_eval(family: str):
    name = f"discretized_{family}"
    head = build(name, ema_decay=0.5)
    g = torch.Generator().manual_seed(14)
    params = random_params(head, 4, 3, 5, 5, seed=15)
    x = torch.rand(4, 3, 5, 5, generator=g)
    mu = torch.sigmoid(params)
    sigma2 = float(((x - mu) ** 2).mean())
    offset = math.log(math.sqrt(3) / math.pi) if family == "logistic" else 0.0    # logistic s = σ√3/π

    def shared(log_sigma: float):
        return build(name, scale="shared", init_log_scale=log_sigma + offset)

    head.train()
    torch.testing.assert_close(head.nll(params, x), shared(0.5 * math.log(sigma2)).nll(params, x))
    assert float(head.scalars()["sigma"]) == pytest.approx(math.sqrt(sigma2), rel=1e-5)
    head.commit_pending(True)   # as the trainer does after an accepted update (reaches the inner estimator)
    x2 = torch.rand(4, 3, 5, 5, generator=g)
    sigma2_b = float(((x2 - mu) ** 2).mean())
    head.nll(params, x2)
    head.commit_pending(True)
    from seqvae.likelihoods.gaussian import ema_decay_at

    decay = ema_decay_at(0.5, 1)                                    # the EMA's warm-up: min(0.5, 2/11)
    ema = decay * sigma2 + (1 - decay) * sigma2_b
    assert float(head.scalars()["sigma_ema"]) == pytest.approx(math.sqrt(ema), rel=1e-5)
    assert float(head.scalars()["beta_eff"]) == pytest.approx(2 * ema, rel=1e-5)
    head.eval()                                                     # the EMA, whatever the batch
    torch.testing.assert_close(head.nll(params, x), shared(0.5 * math.log(ema)).nll(params, x))
    torch.testing.assert_close(head.log_probs_256(params), shared(0.5 * math.log(ema)).log_probs_256(params))


def test_shared_logistic_scalars_report_its_standard_deviation():
    head = build("discretized_logistic", scale="shared", init_log_scale=math.log(0.1))
    s = head.scalars()
    sigma = 0.1 * math.pi / math.sqrt(3)
    assert float(s["scale"]) == pytest.approx(0.1, rel=1e-6)
    assert float(s["sigma"]) == pytest.approx(sigma, rel=1e-6)
    assert float(s["beta_eff"]) == pytest.approx(2 * sigma**2, rel=1e-6)


def test_logistic_mixture_extreme_params_stay_finite():
    head = build("logistic_mixture", components=5)
    params = random_params(head, 2, 3, 4, 4, seed=16, scale=40.0).requires_grad_()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(17))
    nll = head.nll(params, x)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and (nll > 0).all()
    assert torch.isfinite(params.grad).all()


# ------------------------------------------------------------------------ samples
def _sharp(name: str):
    """A head and params whose distribution sits on one known value per pixel."""
    g = torch.Generator().manual_seed(18)
    levels = torch.randint(1, 255, (2, 3, 3, 3), generator=g)
    target = levels.float() / 255
    if name == "student_t":
        head = build(name, init_log_scale=-25.0)
        return head, torch.logit(target.double()).float(), target, 1e-6
    if name == "bernoulli":
        bits = (torch.rand(2, 3, 3, 3, generator=g) < 0.5).float()
        return build(name), 40.0 * (2 * bits - 1), bits, 0.0
    if name == "categorical":
        params = F.one_hot(levels, 256).float() * 60.0
        return build(name), rearrange(params, "n c h w k -> n (c k) h w"), target, 0.0
    if name == "bitwise_categorical":
        bits = ((levels.unsqueeze(-1) >> torch.arange(8)) & 1).float()
        return build(name), rearrange(40.0 * (2 * bits - 1), "n c h w b -> n (c b) h w"), target, 0.0
    if name == "logistic_mixture":
        head = build(name, components=3, min_log_scale=-14.0, mean_activation="identity")
        logits = torch.randn(2, 3, 3, 3, generator=g)
        means = (target.repeat_interleave(3, dim=1) + 0.3 * torch.randn(2, 9, 3, 3, generator=g))
        means[:, 0::3] = target                                  # component 0 on the target...
        logits[:, 0] = 50.0                                      # ...and it carries all the weight
        return head, torch.cat([logits, means, torch.full((2, 9, 3, 3), -14.0)], dim=1), target, 0.0
    scale = {"scale": "shared", "init_log_scale": -14.0}
    return build(name, mean_activation="identity", **scale), target, target, 0.0


@pytest.mark.parametrize("name", ["student_t", "bernoulli", "categorical", "bitwise_categorical", "logistic_mixture",
                                  "discretized_gaussian", "discretized_logistic"])
def test_sharp_distribution_samples_its_mode(name: str):
    head, params, mode, tol = _sharp(name)
    a = head.sample(params, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, mode, rtol=0, atol=tol)


@pytest.mark.parametrize("name, overrides", ALL, ids=ids(ALL))
def test_samples_reproducible_and_empirical_mean_matches_mean(name, overrides):
    head = ready(name, overrides)
    c = 2
    params = random_params(head, 1, c, 2, 2, seed=19, scale=1.0)
    if name == "student_t":
        params = params.clamp(-1, 1)                             # locations away from the clamp at 0 / 1
    a = head.sample(params, torch.Generator().manual_seed(3))
    b = head.sample(params, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    draws = 4000
    many = head.sample(params.expand(draws, -1, -1, -1), torch.Generator().manual_seed(4))
    assert not torch.equal(many[0], many[1])
    assert many.min() >= 0 and many.max() <= 1
    if head.discrete:                                            # draws sit on the 256 levels
        assert torch.equal(many * 255, (many * 255).round())
    emp, std = many.mean(0, keepdim=True), many.std(0, keepdim=True)
    tol = 5 * std / math.sqrt(draws) + 1e-4
    assert ((emp - head.mean(params)).abs() <= tol).all(), (emp - head.mean(params)).abs().max()


@pytest.mark.parametrize("name, overrides", DISCRETE, ids=ids(DISCRETE))
def test_discrete_samples_follow_log_probs_256(name, overrides):
    """Kolmogorov distance between sampled levels and exp(log_probs_256), one pixel."""
    head = ready(name, overrides)
    params = random_params(head, 1, 1, 1, 1, seed=20, scale=1.0)
    draws = 20_000
    levels = (head.sample(params.expand(draws, -1, -1, -1), torch.Generator().manual_seed(5)) * 255).round().long()
    emp = torch.bincount(levels.flatten(), minlength=256).double().cumsum(0) / draws
    cdf = head.log_probs_256(params)[0, 0, :, 0, 0].detach().double().exp().cumsum(0)
    assert float((emp - cdf).abs().max()) < 1.8 / math.sqrt(draws)


# ------------------------------------------------------------------------ autocast
@pytest.mark.parametrize("name, overrides", ALL, ids=ids(ALL))
def test_bf16_autocast_gives_float32_nll_of_the_rounded_params(name, overrides):
    head = ready(name, overrides)
    params = random_params(head, 2, 3, 4, 4, seed=21).bfloat16()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(22))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = head.nll(params, x)
        mean = head.mean(params)
    assert nll.dtype == torch.float32 and mean.dtype == torch.float32
    torch.testing.assert_close(nll, head.nll(params.float(), x), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(mean, head.mean(params.float()), rtol=1e-6, atol=1e-6)
    if head.discrete:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_probs = head.log_probs_256(params)
        assert log_probs.dtype == torch.float32
        torch.testing.assert_close(log_probs, head.log_probs_256(params.float()), rtol=1e-6, atol=1e-6)
