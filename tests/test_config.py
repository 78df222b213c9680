"""Typed configs: YAML + overrides, unknown keys rejected with a suggestion, round trip."""
import pytest
import yaml

from seqvae.config import ConfigError, RunConfig, apply_overrides

BASE = {
    "data": {"name": "shapes", "image_size": 16},
    "model": {"name": "conv_vae", "latent_dim": 8},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 10},
}


def test_overrides_are_typed_and_applied():
    cfg = RunConfig.from_dict(apply_overrides(BASE, ["train.lr=3e-4", "model.latent_dim=4", "train.tensorboard=true"]))
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.latent_dim == 4 and cfg.train.tensorboard is True
    assert BASE["model"]["latent_dim"] == 8  # the input mapping is not mutated


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.latnt_dim'.*Did you mean 'model\.latent_dim'"):
        RunConfig.from_dict(apply_overrides(BASE, ["model.latnt_dim=4"]))
    with pytest.raises(ConfigError, match=r"Did you mean 'train'"):
        RunConfig.from_dict({**BASE, "trian": {}})


def test_unknown_component_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'optimal_sigma'"):
        RunConfig.from_dict(apply_overrides(BASE, ["likelihood.name=optimal_sigm"]))


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        RunConfig.from_dict(apply_overrides(BASE, ["train.steps=ten"]))
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(BASE, ["train.steps"])


def test_switching_component_validates_against_the_new_one():
    cfg = RunConfig.from_dict(apply_overrides(BASE, ["likelihood.name=beta_vae", "likelihood.beta=0.01"]))
    assert cfg.likelihood.beta == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="beta"):
        RunConfig.from_dict(apply_overrides(BASE, ["likelihood.beta=0.01"]))  # optimal_sigma has no beta


def test_saved_config_round_trips(tmp_path):
    cfg = RunConfig.from_dict(BASE)
    cfg.save(tmp_path / "config.yaml")
    again = RunConfig.load(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["steps"] == 10


def test_every_shipped_plan_config_loads():
    """Run configs are built and trained in tests/test_configs_learn.py; the command configs
    of `seqvae plan` load as their typed config."""
    from pathlib import Path

    from seqvae.cli.plan import load_plan_config

    configs = sorted((Path(__file__).parents[1] / "configs" / "plan").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_plan_config(str(path), [])
        assert cfg.plan.episodes > 0 and cfg.plan.cem.elites <= cfg.plan.cem.candidates



def test_precision_names_are_one_list(monkeypatch):
    """train.precision, amp.resolve and the commands' --precision take exactly seqvae.amp.PRECISIONS,
    and a wrong name is refused naming the setting and every valid choice."""
    import argparse
    import re

    import torch

    from seqvae import amp
    from seqvae.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("eval", "rollout"):
        (option,) = [a for a in commands[name]._actions if "--precision" in a.option_strings]
        assert option.choices is amp.PRECISIONS
    message = "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.from_dict(apply_overrides(BASE, ["train.precision=fp8"]))
    with pytest.raises(ValueError, match=re.escape(message)):
        amp.resolve("fp8", torch.device("cpu"))
    # the config's check reads that list: a name added to it is accepted, one left out refused
    monkeypatch.setattr(amp, "PRECISIONS", ("fp32", "fp8"))
    assert RunConfig.from_dict(apply_overrides(BASE, ["train.precision=fp8"])).train.precision == "fp8"
    with pytest.raises(ConfigError, match=re.escape("train.precision must be one of fp32, fp8, got 'bf16'")):
        RunConfig.from_dict(apply_overrides(BASE, ["train.precision=bf16"]))
