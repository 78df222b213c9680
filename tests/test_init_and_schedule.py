"""``train.init_from`` (a run that starts from trained weights) and ``train.lr_schedule``."""
from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_runs import TINY_IMAGE_RUN

from seqvae import pretrained
from seqvae.build import build_data, build_model
from seqvae.checkpoint import load_checkpoint
from seqvae.cli import main as cli_main
from seqvae.config import ConfigError, RunConfig, apply_overrides
from seqvae.data.spec import DataSpec
from seqvae.loading import load_model
from seqvae.training import train
from seqvae.training.lr_schedule import learning_rate
from seqvae.training.session import initialize_from


def _cfg(tmp_path, name, *overrides):
    return RunConfig.from_dict(apply_overrides(TINY_IMAGE_RUN, [f"train.out_dir={tmp_path / name}", *overrides]))


# ------------------------------------------------------------------ the schedule
def test_cosine_schedule_against_its_closed_form():
    lr, steps, final = 2e-3, 1000, 0.1
    assert learning_rate(0, lr, steps, "cosine", 0, final) == pytest.approx(lr)
    assert learning_rate(500, lr, steps, "cosine", 0, final) == pytest.approx(lr * (final + (1 - final) / 2))
    assert learning_rate(250, lr, steps, "cosine", 0, final) == pytest.approx(
        lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi / 4))))
    assert learning_rate(1000, lr, steps, "cosine", 0, final) == pytest.approx(lr * final)
    assert learning_rate(5000, lr, steps, "cosine", 0, final) == pytest.approx(lr * final)   # past the end: stays
    rates = [learning_rate(s, lr, steps, "cosine", 0, final) for s in range(steps)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_warmup_is_linear_then_the_schedule_starts_at_the_peak():
    lr = 1e-3
    assert [learning_rate(s, lr, 100, "constant", 4) for s in range(6)] == pytest.approx(
        [lr / 4, lr / 2, 3 * lr / 4, lr, lr, lr])
    # cosine measured from the end of the warm-up: its midpoint is halfway through the remaining steps
    assert learning_rate(4, lr, 104, "cosine", 4, 0.0) == pytest.approx(lr)
    assert learning_rate(54, lr, 104, "cosine", 4, 0.0) == pytest.approx(lr / 2)


def test_the_trainer_applies_the_schedule_and_logs_it(tmp_path):
    run = train(_cfg(tmp_path, "c", "train.lr_schedule=cosine", "train.lr_warmup_steps=2",
                     "train.lr_final_fraction=0.2", "train.log_every=1"), progress=False)
    logged = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"}
    # the rate logged at step s is the one that made update s (from step s - 1)
    assert logged == pytest.approx({s: learning_rate(s - 1, 1e-3, 6, "cosine", 2, 0.2) for s in range(1, 7)})


@pytest.mark.parametrize("override, message", [("train.lr_schedule=linear", "constant, cosine"),
                                               ("train.lr_final_fraction=1.5", "lr_final_fraction"),
                                               ("train.lr_warmup_steps=-1", "lr_warmup_steps")])
def test_bad_schedule_settings_are_refused_by_name(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, "bad", override)


# ------------------------------------------------------------------ init_from
def _max_difference(a: dict, b: dict) -> float:
    """Largest weight difference (the optimal-σ EMA buffers, which each step updates, aside)."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point() and ".ema_" not in k)


@pytest.mark.parametrize("source", ["run folder", "exported file"])
def test_a_run_starts_from_the_given_weights_with_a_fresh_optimizer(tmp_path, source):
    first = train(_cfg(tmp_path, "first"), progress=False)
    trained = load_checkpoint(first)
    path = first
    if source == "exported file":
        model, cfg, payload = load_model(first)
        path = tmp_path / "first.safetensors"
        pretrained.export(model, cfg, DataSpec(**payload["spec"]), payload["step"], path, dtype=torch.float32)
        reloaded, _, meta = load_model(path)               # what `seqvae eval FILE.safetensors` loads
        assert meta["step"] == 6 and _max_difference(reloaded.state_dict(), trained["model"]) == 0.0
    # one update at lr / 1000 (warm-up) moves no weight by more than ~1e-6 (Adam's first step is ~lr)
    second = train(_cfg(tmp_path, "second", f"train.init_from={path}", "train.steps=1", "train.lr_warmup_steps=1000"),
                   progress=False)
    started = load_checkpoint(second)
    assert started["step"] == 1
    assert _max_difference(started["model"], trained["model"]) < 3e-6
    fresh = train(_cfg(tmp_path, "fresh", "train.steps=1", "train.lr_warmup_steps=1000"), progress=False)
    # same seed, so a fresh run starts where "first" started: 6 updates of ~1e-3 away
    assert _max_difference(load_checkpoint(fresh)["model"], trained["model"]) > 1e-3
    assert json.loads((second / "run.json").read_text())["init_from"] == str(path)


def test_init_from_a_shipped_model_loads_its_weights():
    if "pusher-actions" not in pretrained.available():
        pytest.skip("no shipped pusher-actions model in this copy")
    shipped, shipped_cfg = pretrained.load("pusher-actions")
    raw = apply_overrides(shipped_cfg.to_dict(), ["data.seq_len=30", "model.n_future=28"])   # longer windows
    cfg = RunConfig.from_dict(raw)
    model = build_model(cfg, build_data(cfg, "test").spec)
    initialize_from(model, "pretrained:pusher-actions", cfg)
    assert _max_difference(model.state_dict(), shipped.state_dict()) == 0.0


def test_weights_of_another_shape_or_model_are_clear_errors(tmp_path, capsys):
    first = train(_cfg(tmp_path, "first"), progress=False)
    with pytest.raises(ConfigError, match="do not fit.*shape of"):
        train(_cfg(tmp_path, "wide", f"train.init_from={first}", "model.base_channels=16"), progress=False)
    assert not (tmp_path / "wide").exists()
    with pytest.raises(ConfigError, match="holds a likelihood 'optimal_sigma'"):
        train(_cfg(tmp_path, "other", f"train.init_from={first}", "likelihood.name=shared_sigma"),
              progress=False)
    code = cli_main(["train", "configs/demo/svg.yaml", f"train.out_dir={tmp_path / 'cli'}",
                     f"train.init_from={tmp_path / 'nowhere'}"])
    assert code == 2 and "no checkpoint at" in capsys.readouterr().err
    code = cli_main(["eval", str(tmp_path / "missing.safetensors")])
    assert code == 2 and "no exported weights file at" in capsys.readouterr().err
