"""What ``seqvae eval`` does when told nothing (issue 23): it computes in the run's own precision,
reports the bound with σ set on the validation split beside the EMA-σ bound and names it the
figure to quote, says so where there is no validation split, and its video defaults stay a few
minutes' work."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_runs import TINY_IMAGE_RUN

from seqvae import amp
from seqvae.build import build_data
from seqvae.cli import main as cli_main
from seqvae.config import RunConfig, apply_overrides
from seqvae.data.loader import eval_loader
from seqvae.data.spec import batch_to_device
from seqvae.evaluation.elbo import calibrate_sigma
from seqvae.loading import load_model
from seqvae.training import train

CPU = torch.device("cpu")


def _run(tmp_path_factory, name: str, *overrides: str) -> Path:
    out = tmp_path_factory.mktemp("runs") / name
    raw = apply_overrides(TINY_IMAGE_RUN, [f"train.out_dir={out}", *overrides])
    return train(RunConfig.from_dict(raw), progress=False)


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory) -> Path:
    """A tiny optimal-σ conv VAE trained in fp32, on data with a validation split (8 images)."""
    return _run(tmp_path_factory, "fp32", "train.precision=fp32")


def _eval(run: Path, tmp_path: Path, name: str, *args: str) -> dict:
    """``seqvae eval RUN ARGS`` into its own folder; its ``eval.json``."""
    out = tmp_path / name
    assert cli_main(["eval", str(run), "--out-dir", str(out), *args]) == 0
    (folder,) = out.iterdir()
    return json.loads((folder / "eval.json").read_text())


# ------------------------------------------------------------------------------------- precision
def test_an_fp32_run_is_evaluated_in_fp32_unless_asked(fp32_run, tmp_path):
    default = _eval(fp32_run, tmp_path, "default")
    fp32 = _eval(fp32_run, tmp_path, "fp32", "--precision", "fp32")
    bf16 = _eval(fp32_run, tmp_path, "bf16", "--precision", "bf16")
    assert (default["precision"], default["autocast"]) == ("fp32", "fp32")
    assert default["precision_from"] == "the run's train.precision"
    assert default["results"]["neg_elbo"] == fp32["results"]["neg_elbo"]         # exactly: the same computation
    assert default["results"]["val_sigma_neg_elbo"] == fp32["results"]["val_sigma_neg_elbo"]
    assert (bf16["precision"], bf16["autocast"], bf16["precision_from"]) == ("bf16", "bf16", "--precision")
    assert bf16["results"]["neg_elbo"] != default["results"]["neg_elbo"]         # the explicit flag wins
    override = _eval(fp32_run, tmp_path, "override", "train.precision=bf16")      # so does an override
    assert override["autocast"] == "bf16" and "override" in override["precision_from"]
    assert override["results"]["neg_elbo"] == bf16["results"]["neg_elbo"]


def test_follow_run_precision():
    assert amp.follow_run(None, "fp32", CPU) == ("fp32", "the run's train.precision")
    assert amp.follow_run(None, "auto", CPU)[0] == "auto"
    assert amp.follow_run("bf16", "fp32", CPU) == ("bf16", "--precision")
    assert amp.follow_run(None, "fp16", CPU)[0] == "fp32"      # trained on a GPU in fp16: fp32 on a CPU
    with pytest.raises(ValueError, match="--precision fp16 needs a GPU"):
        amp.follow_run("fp16", "fp32", CPU)


def test_precision_fp16_on_a_cpu_is_a_usage_error(fp32_run, capsys):
    assert cli_main(["eval", str(fp32_run), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "needs a GPU" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- the σ to quote
def test_the_validation_sigma_bound_is_reported_by_default_and_named_the_one_to_quote(fp32_run, tmp_path, capsys):
    default = _eval(fp32_run, tmp_path, "default")
    out = capsys.readouterr().out
    explicit = _eval(fp32_run, tmp_path, "explicit", "--calibrate-sigma")
    results = default["results"]
    assert default["calibrate_sigma"] and results["quote"] == "val_sigma_neg_elbo"
    for key in ("val_sigma", "val_sigma_neg_elbo", "val_sigma_nll", "val_sigma_kl", "val_sigma_bpd"):
        assert results[key] == explicit["results"][key]                           # the same figure, exactly
    assert results["val_sigma_kl"] == results["kl"]                               # only σ differs
    assert results["val_sigma_neg_elbo"] != results["neg_elbo"]
    assert "σ set on the validation split" in out and "quote this one, the held-out estimate" in out
    assert results["neg_elbo"] == pytest.approx(results["nll"] + results["kl"], abs=1e-3)
    off = _eval(fp32_run, tmp_path, "off", "--no-calibrate-sigma")
    assert not off["calibrate_sigma"] and "val_sigma" not in off["results"] and off["results"]["quote"] == "neg_elbo"
    assert off["results"]["neg_elbo"] == results["neg_elbo"]


def test_calibrated_sigma_is_the_mean_squared_error_of_the_validation_reconstructions(fp32_run):
    """σ² = mean over every validation pixel of (x − reconstruction)², with the posterior samples
    the bound draws (seed 1234): the closed form, computed here without the head."""
    model, cfg, _ = load_model(fp32_run)
    val = build_data(cfg, "val")
    sigma2 = calibrate_sigma(model, val, 4, CPU)
    total, count = 0.0, 0
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        for batch in eval_loader(val, 4):
            batch = batch_to_device(batch, CPU)
            recon = model.reconstruct(batch)                                      # [B, 1, C, H, W]
            total += float(((batch["frames"] - recon).double() ** 2).sum())
            count += recon.numel()
    assert count == 8 * 3 * 16 * 16
    assert sigma2 == pytest.approx(total / count, rel=1e-6)
    assert sigma2 != pytest.approx(float(model.likelihood.ema_sigma2), rel=1e-3)  # not the training EMA


def test_without_a_validation_split_the_output_says_so(fp32_run, tmp_path, capsys):
    record = _eval(fp32_run, tmp_path, "noval", "data.val_size=0")
    out = capsys.readouterr().out
    assert "no validation split" in out and "training EMA of σ" in out
    assert not record["calibrate_sigma"] and record["results"]["quote"] == "neg_elbo"
    assert record["results"]["sigma_calibration"].startswith("no validation split")
    assert cli_main(["eval", str(fp32_run), "data.val_size=0", "--calibrate-sigma"]) == 2   # asked for: an error
    err = capsys.readouterr().err
    assert "needs a validation split" in err and "Traceback" not in err
    assert cli_main(["eval", str(fp32_run), "--split", "val", "--calibrate-sigma"]) == 2
    val = _eval(fp32_run, tmp_path, "val", "--split", "val")                      # by default: said, not an error
    assert "validation split itself" in val["results"]["sigma_calibration"]


def test_heads_without_a_training_average_of_sigma_have_nothing_to_calibrate(tmp_path_factory, tmp_path, capsys):
    run = _run(tmp_path_factory, "shared", "likelihood.name=shared_sigma", "train.precision=fp32")
    record = _eval(run, tmp_path, "shared")
    out = capsys.readouterr().out
    assert "no validation split" not in out and "val_sigma" not in record["results"]
    assert record["results"]["quote"] == "neg_elbo" and "not applicable" in record["results"]["sigma_calibration"]
    assert cli_main(["eval", str(run), "--calibrate-sigma"]) == 2
    assert "optimal_sigma" in capsys.readouterr().err


def test_no_earlier_evaluation_is_replaced(fp32_run, tmp_path):
    out = tmp_path / "evals"
    for _ in range(2):
        assert cli_main(["eval", str(fp32_run), "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["default-test", "default-test-2"]
    assert all(math.isfinite(json.loads((p / "eval.json").read_text())["results"]["neg_elbo"]) for p in out.iterdir())
