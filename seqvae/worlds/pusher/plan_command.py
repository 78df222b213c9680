"""``seqvae plan [CONFIG.yaml] [key=value ...]``: the closed-loop pushing evaluation
(:mod:`seqvae.worlds.pusher.planning_eval`): random actions, CEM with the true simulator
and CEM with a learned action-conditioned model on the same fixed episodes.

Settings come from a typed config (``configs/plan/pusher.yaml`` by default) with dotted
overrides, checked like a training config: ``seqvae plan checkpoint=runs/x
plan.episodes=10 plan.cem.candidates=100``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.cli.common import DEFAULT_DEVICE
from seqvae.config import ConfigError, find_repo_file, load_dataclass, to_yaml
from seqvae.io import atomic_write_text
from seqvae.worlds.pusher.planning_eval import PlanEvalConfig

DEFAULT_CONFIG = "configs/plan/pusher.yaml"


@dataclass
class PlanCommandConfig:
    """Everything ``seqvae plan`` does, as one typed config."""

    checkpoint: str = ""               # action-conditioned SVG trained on 'pusher' (run folder or .pt) ...
    pretrained: str = ""               # ... or a shipped model (e.g. pusher-actions); neither: 'learned' is dropped
    out_dir: str = "runs/plan_pusher"  # results.md, results.json, config.yaml, episode_XXX.mp4
    device: str = DEFAULT_DEVICE
    threads: int = 0                   # torch CPU threads (0: chosen from measured step times, seqvae.threads)
    plan: PlanEvalConfig = field(default_factory=PlanEvalConfig)


def load_plan_config(path: str | None, overrides: list[str]) -> PlanCommandConfig:
    """The command's config: ``path`` (default ``configs/plan/pusher.yaml`` when it exists)
    plus overrides."""
    if path is None:
        try:
            path = str(find_repo_file(DEFAULT_CONFIG))
        except ConfigError:
            path = None
    return load_dataclass(PlanCommandConfig, path, overrides)


def run(args: argparse.Namespace) -> dict:
    from seqvae.worlds.pusher.planning_eval import evaluate_pusher, results_markdown, sim_for_model

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:      # no config file given: the first word is an override
        config, overrides = None, [config, *overrides]
    cfg = load_plan_config(config, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    methods = cfg.plan.methods
    if "learned" in methods and not (cfg.checkpoint or cfg.pretrained):
        cfg.plan.methods = tuple(m for m in methods if m != "learned")
        print("no checkpoint=... or pretrained=...: skipping the learned-model planner")
    model = sim = payload = None
    if "learned" in cfg.plan.methods:
        from seqvae.build import load_model, model_source

        source = model_source(cfg.checkpoint, cfg.pretrained)
        model, run_cfg, payload = load_model(source, torch.device(cfg.device))
        if not model.action_dim:
            raise ValueError(f"{source} is not action-conditioned; planning needs model.action_conditioned=true")
        sim = sim_for_model(run_cfg.data)
        print(f"learned model: {source}, step {payload['step']}")
    out_dir = Path(cfg.out_dir)
    results = evaluate_pusher(cfg.plan, model=model, sim=sim, out_dir=out_dir, threads=cfg.threads)
    results["command_config"] = json.loads(json.dumps(asdict(cfg)))
    if payload is not None:
        results["checkpoint"] = {"path": source, "step": payload["step"]}
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "config.yaml", to_yaml(cfg))
    print()
    print(results_markdown(results))
    print(f"\nresults: {out_dir / 'results.md'}, {out_dir / 'results.json'}")
    return results


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan", help="closed-loop CEM planning on the pushing world: random vs true simulator vs learned model",
        description="The closed-loop pushing evaluation: random actions, CEM with the true simulator and CEM "
                    "with a learned action-conditioned model on the same fixed episodes. Settings: a typed YAML "
                    f"config (default {DEFAULT_CONFIG}) and dotted key=value overrides.")
    p.add_argument("config", nargs="?", default=None,
                   help=f"YAML plan config (default {DEFAULT_CONFIG}); keys: checkpoint, pretrained, out_dir, device, threads, "
                        "plan.{episodes, steps, replan_every, end_aware, seed, methods, samples, cem.*, cost.*}")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. checkpoint=runs/x plan.episodes=10")
    p.set_defaults(func=run)
