"""``seqvae plan [CONFIG.yaml] [key=value ...]``: closed-loop planning in a registered world
(:mod:`seqvae.control.harness`): random actions, the optimizer with the true simulator and
with a learned action-conditioned video model, on the same fixed episodes.

Settings come from a typed config (``configs/plan/<world>.yaml`` by default, ``world=pusher``
unless another is named) with dotted overrides, checked like a training config:
``seqvae plan pretrained=pusher-actions plan.episodes=10``,
``seqvae plan world=pointmass checkpoint=runs/pointmass plan.optimizer=mppi``.

Progress: a bar over every method's episodes on a terminal, one line per episode (with the
time left) in a log.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae import registry
from seqvae.cli.common import DEFAULT_DEVICE, check_device
from seqvae.config import ConfigError, apply_overrides, build_section, find_repo_file, read_yaml, to_yaml
from seqvae.control.harness import PlanEvalConfig, evaluate_planning, results_markdown
from seqvae.io import atomic_write_text, plain
from seqvae.progress import Bar

DEFAULT_WORLD = "pusher"


def default_config(world: str) -> str:
    return f"configs/plan/{world}.yaml"


@dataclass
class PlanCommandConfig:
    """Everything ``seqvae plan`` does, as one typed config."""

    world: str = DEFAULT_WORLD         # the planning world (registered: seqvae.registry.WORLDS)
    checkpoint: str = ""               # an action-conditioned model trained on the world's data (run folder, .pt,
    pretrained: str = ""               # .safetensors) or a shipped model (e.g. pusher-actions);
                                       # neither: 'learned' is dropped
    out_dir: str = ""                  # results.md, results.json, config.yaml, episode_XXX.mp4
                                       # (default runs/plan_<world>)
    device: str = DEFAULT_DEVICE
    threads: int = 0                   # torch CPU threads (0: chosen from measured step times, seqvae.threads)
    plan: PlanEvalConfig = field(default_factory=PlanEvalConfig)


def load_plan_config(path: str | None, overrides: list[str]) -> PlanCommandConfig:
    """The command's config: ``path`` (default ``configs/plan/<world>.yaml`` when it exists)
    plus overrides; ``plan.cost`` is checked against the world's own cost settings."""
    raw: dict[str, Any] = {}
    world_name = apply_overrides({}, [o for o in overrides if o.startswith("world=")]).get("world")
    if path is None:
        try:
            path = str(find_repo_file(default_config(world_name or DEFAULT_WORLD)))
        except ConfigError:
            path = None
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"plan config {path} does not exist (plan configs live under configs/plan/)")
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    name = raw.get("world", DEFAULT_WORLD)
    try:
        world = registry.world(str(name))
    except ValueError as err:
        raise ConfigError(f"world={name}: {err}") from None
    plan_raw = raw.get("plan") or {}
    cost_raw = plan_raw.pop("cost", None) if isinstance(plan_raw, dict) else None
    cfg = build_section(PlanCommandConfig, raw, "")
    cfg.plan.cost = build_section(world.cost_config, cost_raw or {}, "plan.cost")
    if not cfg.out_dir:
        cfg.out_dir = f"runs/plan_{cfg.world}"
    return cfg


def run(args: argparse.Namespace) -> dict:
    from seqvae.loading import load_model, model_source

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:      # no config file given: the first word is an override
        config, overrides = None, [config, *overrides]
    cfg = load_plan_config(config, overrides)
    check_device(cfg.device, "device")
    if cfg.checkpoint and cfg.pretrained:
        raise ConfigError(f"checkpoint={cfg.checkpoint} and pretrained={cfg.pretrained}: give one model, not both")
    if cfg.threads < 0:
        raise ConfigError(f"threads must be 0 (chosen from measured step times) or more, got {cfg.threads}")
    world = registry.world(cfg.world)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if "learned" in cfg.plan.methods and not (cfg.checkpoint or cfg.pretrained):
        cfg.plan = dataclasses.replace(cfg.plan, methods=tuple(m for m in cfg.plan.methods if m != "learned"))
        print("no checkpoint=... or pretrained=...: skipping the learned-model planner")
    model = env = payload = None
    if cfg.checkpoint or cfg.pretrained:   # every method plans in the world the model was trained in
        source = model_source(cfg.checkpoint, cfg.pretrained)
        model, run_cfg, payload = load_model(source, torch.device(cfg.device))
        if not getattr(model, "action_dim", 0):
            raise ValueError(f"{source} is not an action-conditioned video model; planning needs one trained with "
                             "model.action_conditioned=true")
        env = world.make_env(run_cfg.data)
        print(f"learned model: {source}, step {payload['step']}" if "learned" in cfg.plan.methods else
              f"the world of {source} (its data config); the learned planner is not among plan.methods")
    out_dir = Path(cfg.out_dir)
    with Bar(len(cfg.plan.methods) * cfg.plan.episodes, "plan", "episodes", interval=0) as bar:
        results = evaluate_planning(world, cfg.plan, model=model, env=env, out_dir=out_dir, threads=cfg.threads,
                                    log=bar.write, progress=bar)
    results["command_config"] = plain(asdict(cfg))
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
        "plan", help="closed-loop planning in a world: random vs true simulator vs learned video model",
        description="Closed-loop planning in a registered world (world=pusher by default): random actions, the "
                    "optimizer (CEM or MPPI) with the true simulator and with a learned action-conditioned video "
                    "model on the same fixed episodes. Settings: a typed YAML config (default "
                    f"{default_config('<world>')}) and dotted key=value overrides.")
    p.add_argument("config", nargs="?", default=None,
                   help=f"YAML plan config (default {default_config('<world>')}); keys: world, checkpoint, pretrained, "
                        "out_dir, device, threads, plan.{episodes, steps, replan_every, end_aware, seed, methods, "
                        "samples, optimizer, objective, cem.*, mppi.*, cost.*}")
    p.add_argument("overrides", nargs="*",
                   help="dotted key=value overrides, e.g. pretrained=pusher-actions plan.episodes=10")
    p.set_defaults(func=run)
