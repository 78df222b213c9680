"""The Python API (seqvae.api) gives what the commands give."""
from __future__ import annotations

import json

import pytest

import seqvae
from seqvae.cli import main as cli_main


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A tiny fp32 conv-VAE run with the optimal-σ decoder on shapes (which has a validation split)."""
    out = tmp_path_factory.mktemp("api") / "run"
    return seqvae.train("configs/shapes/conv_vae_optimal_sigma.yaml",
                        train={"steps": 30, "out_dir": str(out), "eval_every": 0, "image_every": 0,
                               "precision": "fp32", "threads": 1},
                        data={"test_size": 64, "val_size": 64})


def test_evaluate_follows_the_run_and_quotes_the_validation_sigma_bound_as_seqvae_eval_does(shapes_run):
    """The bound in the run's precision, with the validation-σ bound named as the one to
    quote; the same figures as ``seqvae eval`` writes into eval.json."""
    figures = seqvae.evaluate(shapes_run, batch_size=16)["bound"]
    assert figures["precision"] == "fp32" and figures["quote"] == "val_sigma_neg_elbo"
    assert figures["val_sigma"] != pytest.approx(figures["sigma"], rel=1e-3)   # σ really was set anew
    assert cli_main(["eval", str(shapes_run), "--batch-size", "16"]) in (0, None)
    (record,) = [json.loads(p.read_text())["results"] for p in shapes_run.glob("eval/*/eval.json")]
    for key in ("neg_elbo", "val_sigma", "val_sigma_neg_elbo"):
        assert figures[key] == pytest.approx(record[key], rel=1e-6), key
    assert record["quote"] == figures["quote"]
