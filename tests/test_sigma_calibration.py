"""σ at test time (issue 14.3): σ*² set analytically on a validation split gives the minimum of
the bound over σ on the split it was measured on, and a better bound than the EMA on held-out
data when the model overfits; the EMA's warm-up keeps short runs from lagging the batch σ*."""
from __future__ import annotations

import math

import pytest
import torch

from seqvae.build import build_data, build_model
from seqvae.config import RunConfig
from seqvae.data.loader import batch_stream
from seqvae.data.spec import batch_to_device
from seqvae.evaluation.elbo import calibrate_sigma, evaluate_elbo, evaluation_sigma2
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian, ema_decay_at

RAW = {
    "data": {"name": "shapes", "image_size": 16, "train_size": 8, "test_size": 64, "val_size": 64},
    "model": {"name": "conv_vae", "base_channels": 16, "latent_dim": 16},
    "likelihood": {"name": "optimal_sigma"},
    "train": {},
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def overfit():
    """A conv VAE trained on 8 images for 400 steps: its training error falls well below the held-out one."""
    torch.manual_seed(0)
    cfg = RunConfig.from_dict(RAW)
    train_set = build_data(cfg, "train")
    model = build_model(cfg, train_set.spec)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = batch_stream(train_set, 8, seed=0)
    for _ in range(400):
        loss = model(batch_to_device(next(batches), CPU)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.commit_step()
    return model.eval(), cfg


def test_validation_sigma_is_the_analytic_optimum_of_the_split_it_was_measured_on(overfit):
    model, cfg = overfit
    val = build_data(cfg, "val")
    sigma2 = calibrate_sigma(model, val, 16, CPU)
    dims = 3 * 16 * 16
    with evaluation_sigma2(model, sigma2):
        at_optimum = evaluate_elbo(model, val, 16, CPU)
    # closed form at σ² = MSE: the Gaussian NLL per example is D·(½ + ½ log σ² + ½ log 2π)
    assert at_optimum["nll"] == pytest.approx(dims * (0.5 + 0.5 * math.log(sigma2) + 0.5 * math.log(2 * math.pi)),
                                              abs=1e-3)
    for factor in (0.8, 0.95, 1.05, 1.25):   # any other σ scores the same reconstructions worse
        with evaluation_sigma2(model, sigma2 * factor):
            assert evaluate_elbo(model, val, 16, CPU)["neg_elbo"] > at_optimum["neg_elbo"]
    assert float(model.likelihood.ema_sigma2) != sigma2   # the EMA is restored after the block


def test_validation_sigma_bound_beats_the_ema_bound_when_the_model_overfits(overfit):
    model, cfg = overfit
    train_mse = calibrate_sigma(model, build_data(cfg, "train"), 8, CPU)
    sigma2 = calibrate_sigma(model, build_data(cfg, "val"), 16, CPU)
    ema = float(model.likelihood.ema_sigma2)
    assert sigma2 > 2 * train_mse and ema < sigma2       # overfit: the EMA follows the training error
    test = build_data(cfg, "test")
    ema_bound = evaluate_elbo(model, test, 16, CPU)["neg_elbo"]
    with evaluation_sigma2(model, sigma2):
        val_bound = evaluate_elbo(model, test, 16, CPU)["neg_elbo"]
    assert val_bound <= ema_bound
    print(f"train RMSE {train_mse ** 0.5:.4f}, EMA σ {ema ** 0.5:.4f}, val σ {sigma2 ** 0.5:.4f}; "
          f"test bound {ema_bound:.1f} (EMA σ) vs {val_bound:.1f} nats (val σ)")


def test_calibration_needs_the_optimal_sigma_head():
    cfg = RunConfig.from_dict({**RAW, "likelihood": {"name": "shared_sigma"}})
    model = build_model(cfg, build_data(cfg, "train").spec)
    with pytest.raises(ValueError, match="optimal_sigma"):
        calibrate_sigma(model, build_data(cfg, "val"), 16, CPU)


def test_ema_warm_up_follows_a_falling_sigma_closely():
    assert ema_decay_at(0.99, 0) == pytest.approx(0.1) and ema_decay_at(0.99, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.99, 5000) == 0.99
    # σ*² falling like a training curve: 0.05·(1 + t/50)^-1 + 0.003; EMA fed one value per accepted step
    head = OptimalSigmaGaussian(ema_decay=0.99)
    fixed = None
    for t in range(500):
        value = torch.tensor(0.05 / (1 + t / 50) + 0.003)
        head._pending = [value]
        head.apply_pending(True)
        fixed = value.clone() if fixed is None else 0.99 * fixed + 0.01 * value
    lag_warm = float(head.ema_sigma2 / value - 1)
    lag_fixed = float(fixed / value - 1)
    assert lag_warm < 0.1 < lag_fixed, (lag_warm, lag_fixed)
    # a rejected step still leaves it alone
    before = head.ema_sigma2.clone()
    head._pending = [torch.tensor(5.0)]
    head.apply_pending(False)
    assert torch.equal(head.ema_sigma2, before)


def test_seqvae_eval_reports_both_bounds(tmp_path, capsys):
    import json

    from seqvae.cli import main as cli_main
    from seqvae.config import apply_overrides
    from seqvae.training import train

    raw = apply_overrides(RAW, [f"train.out_dir={tmp_path / 'run'}", "train.steps=2", "train.batch_size=8",
                                "train.eval_every=2", "train.eval_batches=1", "train.image_every=0",
                                "train.log_every=1"])
    train(RunConfig.from_dict(raw), progress=False)
    assert cli_main(["eval", str(tmp_path / "run"), "--calibrate-sigma", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "σ set on the validation split" in out
    result = json.loads((tmp_path / "e.json").read_text())
    model, cfg, _ = __import__("seqvae.loading", fromlist=["load_model"]).load_model(tmp_path / "run")
    from seqvae import amp

    sigma2 = calibrate_sigma(model, build_data(cfg, "val"), 8, CPU, amp.resolve("auto", CPU))   # as the command runs
    assert result["val_sigma"] == pytest.approx(sigma2 ** 0.5, rel=1e-6)
    assert result["val_sigma_neg_elbo"] != result["neg_elbo"] and "sigma_ema" in result
    (folder,) = (tmp_path / "run" / "eval").iterdir()
    assert folder.name == "default-test"        # the validation-σ bound is part of the bound report
    assert cli_main(["eval", str(tmp_path / "run"), "--calibrate-sigma", "--split", "val"]) == 2
