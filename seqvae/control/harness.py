"""Closed-loop evaluation in any registered world: many fixed episodes per planning method
(random actions, the optimizer with the true simulator, with a perfect video model, with a
learned video model), success rates and a markdown table (:func:`evaluate_planning`).
An episode's start and goal depend on ``(seed, episode index)`` only, so every method
faces the same episodes."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.control.cem import CEMConfig
from seqvae.control.costs import GoalImageCost
from seqvae.control.environment import Environment, FrameCost, PlanningWorld
from seqvae.control.episode_video import render_episode, row_order
from seqvae.control.mpc import EpisodeRecord, run_episode
from seqvae.control.mppi import MPPIConfig
from seqvae.control.optimizers import OPTIMIZERS, PlanOptimizer
from seqvae.control.planner import LATENTS, PlanningModel, VideoModelPlanner
from seqvae.io import atomic_write_text, plain
from seqvae.models.base import VideoPredictor
from seqvae.progress import Bar
from seqvae.threads import ThreadGovernor, loop_governor

METHODS = ("random", "true_sim", "sim_frames", "learned")
OBJECTIVES = ("world", "goal_mse", "goal_ssim")


@dataclass
class PlanEvalConfig:
    """Settings of :func:`evaluate_planning` (one closed-loop evaluation)."""

    episodes: int = 50
    steps: int = 30                      # environment steps per episode
    replan_every: int = 2                # execute this many actions of each plan
    end_aware: bool = True               # score plans where the episode ends when that comes before the horizon
                                         # (pusher validation, seed 500, 30 episodes: learned 63 % vs 40 %,
                                         # true simulator 93 % vs 83 %)
    seed: int = 0                        # episode i starts from (seed, i)
    success_threshold: float = 0.0       # final distance below this counts (0: the world's own)
    samples: int = 1                     # learned model: futures per candidate the cost is averaged over
    latent: str = "sample"               # learned model: latents drawn from the prior ("sample") or its mean
    redraw_latents: bool = True          # learned model: new latents for every scoring call (true) or once per
                                         # step, shared by the iterations of its plan (false; see
                                         # VideoModelPlanner)
    precision: str = "auto"              # learned model's rollouts (seqvae.amp)
    render_episodes: int = 3             # MP4s for the first few episodes (0: none)
    methods: tuple[str, ...] = METHODS
    optimizer: str = "cem"               # cem | mppi
    objective: str = "world"             # what the learned planner scores: the world's own cost read off the
                                         # frames, or the distance of the last frame to the goal image
                                         # (goal_mse, goal_ssim: no world knowledge)
    cem: CEMConfig = field(default_factory=CEMConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)
    cost: Any = None                     # the world's own cost settings (its PlanningWorld.cost_config)

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.steps < 1:
            raise ValueError(f"plan.episodes and plan.steps must be at least 1, got {self.episodes} and {self.steps}")
        if self.replan_every < 1:
            raise ValueError(f"plan.replan_every must be at least 1, got {self.replan_every}")
        if self.samples < 1:
            raise ValueError(f"plan.samples must be at least 1, got {self.samples}")
        if self.latent not in LATENTS:
            raise ValueError(f"plan.latent must be one of {', '.join(LATENTS)}, got {self.latent!r}")
        if self.latent == "mean" and self.samples != 1:
            raise ValueError(f"plan.latent=mean gives one future per candidate: set plan.samples=1 "
                             f"(got {self.samples})")
        if self.render_episodes < 0:
            raise ValueError(f"plan.render_episodes must be 0 or more, got {self.render_episodes}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"plan.methods: unknown {unknown}; choose from {', '.join(METHODS)}" if unknown
                             else "plan.methods is empty; choose from " + ", ".join(METHODS))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"plan.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"plan.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def plan_optimizer(self) -> PlanOptimizer:
        return PlanOptimizer.choose(self.optimizer, self.cem, self.mppi)


def world_cost(world: PlanningWorld, cost: Any) -> Any:
    """The world's cost settings from ``plan.cost``: its dataclass as given, its defaults
    for None, or a mapping checked key by key like any config section."""
    if cost is None:
        return world.cost_config()
    if isinstance(cost, world.cost_config):
        return cost
    if isinstance(cost, dict):
        from_dict = getattr(world.cost_config, "from_dict", None)
        if from_dict is not None:
            return from_dict(cost)
        return world.cost_config(**cost)
    raise ValueError(f"plan.cost must be the settings of world {world.name!r} ({world.cost_config.__name__}), "
                     f"got {type(cost).__name__}")


def describe_protocol(cfg: PlanEvalConfig) -> str:
    """The planner settings of ``cfg`` in words (as model cards state them)."""
    optimizer = cfg.plan_optimizer()
    horizon = f"horizon {optimizer.horizon}" + (" (cut at the episode's end)" if cfg.end_aware else "")
    text = f"{optimizer.describe()}, {horizon}, replan every {cfg.replan_every} of {cfg.steps} steps"
    if not cfg.redraw_latents and cfg.latent == "sample":
        text += ", the learned model's latents drawn once per step"
    if cfg.objective != "world":
        text += f", cost {cfg.objective}"
    describe_cost = getattr(cfg.cost, "describe", None)
    return text + (f", {describe_cost()}" if describe_cost is not None and cfg.objective == "world" else "")


def episode_seed(seed: int, index: int) -> int:
    """The seed ``env.reset`` gets for evaluation episode ``index`` of ``seed``."""
    return seed * 1_000_003 + index


def evaluation_episode(env: Environment, backend: PlanningModel | None, optimizer: PlanOptimizer,
                       cfg: PlanEvalConfig, index: int, governor: ThreadGovernor | None = None) -> EpisodeRecord:
    """Episode ``index`` of ``cfg``'s evaluation with ``backend`` (None: random actions): the
    environment reset from ``(cfg.seed, index)``, the optimizer's noise and the backend's own
    randomness seeded from them too, so every method meets the same episode and a rerun is
    the same run."""
    env.reset(episode_seed(cfg.seed, index))
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + index)
    return run_episode(env, backend, optimizer, cfg.steps, cfg.replan_every, generator,
                       record_plans=index < cfg.render_episodes, episode_seed=cfg.seed * 104_729 + index,
                       governor=governor, end_aware=cfg.end_aware)


def summarize(distances: Sequence[float], threshold: float) -> dict[str, float]:
    """Success rate and mean/median final distance of one method."""
    d = torch.tensor(list(distances), dtype=torch.float64)
    return {"episodes": len(d), "success_rate": float((d < threshold).double().mean()),
            "mean_final_distance": float(d.mean()), "median_final_distance": float(d.median())}


def planning_cost(world: PlanningWorld, env: Environment, cfg: PlanEvalConfig) -> FrameCost:
    """What a video-model planner scores with under ``cfg.objective``."""
    if cfg.objective == "goal_mse":
        return GoalImageCost("mse")
    if cfg.objective == "goal_ssim":
        return GoalImageCost("ssim")
    return world.frame_cost(env, cfg.cost)


def planning_models(world: PlanningWorld, env: Environment, cfg: PlanEvalConfig,
                    model: VideoPredictor | None) -> dict[str, PlanningModel | None]:
    """The model each method of ``cfg.methods`` plans with (None: random actions)."""
    backends: dict[str, PlanningModel | None] = {}
    for name in cfg.methods:
        if name == "random":
            backends[name] = None
        elif name == "true_sim":
            if world.true_model is None:
                raise ValueError(f"world {world.name!r} has no true-simulator planner; "
                                 "drop 'true_sim' from plan.methods")
            backends[name] = world.true_model(env, cfg.cost)
        elif name == "sim_frames":
            if world.perfect_video_model is None:
                raise ValueError(f"world {world.name!r} has no perfect video model; "
                                 "drop 'sim_frames' from plan.methods")
            backends[name] = VideoModelPlanner(world.perfect_video_model(env), planning_cost(world, env, cfg),
                                               seed=cfg.seed, name="sim_frames")
        else:
            if model is None:
                raise ValueError("method 'learned' needs a trained action-conditioned model (checkpoint=... or "
                                 "pretrained=...)")
            backends[name] = VideoModelPlanner(model, planning_cost(world, env, cfg), samples=cfg.samples,
                                               seed=cfg.seed, precision=cfg.precision, latent=cfg.latent,
                                               redraw_latents=cfg.redraw_latents)
    return backends


def evaluate_planning(world: PlanningWorld, cfg: PlanEvalConfig, model: VideoPredictor | None = None,
                      env: Environment | None = None, out_dir: str | Path | None = None,
                      log: Callable[[str], None] = print, threads: int = 0,
                      progress: Bar | None = None) -> dict[str, Any]:
    """Closed-loop episodes of ``world``'s task for every method of ``cfg.methods``.

    Methods: ``random`` (uniform random actions), ``true_sim`` (the optimizer with the true
    simulator as the model), ``sim_frames`` (a perfect video model, costs read off its
    frames: the learned path with perfect predictions), ``learned`` (the optimizer with
    ``model``, an action-conditioned video model trained on the world's data set). Returns
    ``{"config", "world", "threshold", "methods": {name: summary + per-episode final
    distances + seconds}}``; with ``out_dir`` also writes ``results.json``, ``results.md``
    and MP4s of the first ``cfg.render_episodes`` episodes. On the CPU the video models'
    planning calls run with threads chosen by a :class:`seqvae.threads.ThreadGovernor`
    (``threads`` > 0 or ``OMP_NUM_THREADS`` fixes the count). ``progress`` (a
    :class:`seqvae.progress.Bar` over ``len(cfg.methods) * cfg.episodes`` episodes) is told of
    every episode, with its line; without it the line goes to ``log``.
    """
    cfg = dataclasses.replace(cfg, cost=world_cost(world, cfg.cost))
    env = env or world.make_env(None)
    threshold = cfg.success_threshold or env.success_threshold
    optimizer = cfg.plan_optimizer()
    backends = planning_models(world, env, cfg, model)
    results: dict[str, Any] = {"config": plain(asdict(cfg)), "world": world.name, "threshold": threshold,
                               "protocol": describe_protocol(cfg), "methods": {}}
    records: dict[str, list[EpisodeRecord]] = {name: [] for name in cfg.methods}
    for name, backend in backends.items():
        finals, seconds = [], []
        # video-model planning calls are seconds long and alike: CPU threads chosen from their times
        device = getattr(backend, "device", None)
        governor = loop_governor(device, threads) if device is not None else None
        for i in range(cfg.episodes):
            rec = evaluation_episode(env, backend, optimizer, cfg, i, governor)
            finals.append(rec.final_distance)
            seconds.append(rec.seconds)
            if i < cfg.render_episodes:
                records[name].append(rec)
            line = (f"[{name}] episode {i + 1}/{cfg.episodes}: start {float(rec.distances[0]):.3f} -> "
                    f"final {rec.final_distance:.3f} ({rec.seconds:.1f} s)")
            if progress is not None:
                progress.update(1, message=line)
            else:
                log(line)
        summary = summarize(finals, threshold)
        summary.update(final_distances=finals, seconds_per_episode=sum(seconds) / len(seconds), seconds=seconds)
        results["methods"][name] = summary
        log(f"[{name}] success {summary['success_rate']:.0%}, mean final distance {summary['mean_final_distance']:.3f}")
    starts = []
    for i in range(cfg.episodes):
        env.reset(episode_seed(cfg.seed, i))
        starts.append(env.distance())
    results["start_distances"] = starts
    results["mean_start_distance"] = sum(starts) / len(starts)
    rendered = min(cfg.render_episodes, cfg.episodes)
    if rendered:   # the rows of every episode MP4, top to bottom (what a page showing them must say)
        results["video_rows"] = row_order({n: records[n][0] for n in cfg.methods})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "results.md", results_markdown(results) + "\n")
        for i in range(rendered):
            path = render_episode(out / f"episode_{i:03d}.mp4", {n: records[n][i] for n in cfg.methods},
                                  threshold, title=f"episode {i}: {world.task}")
            log(f"wrote {path}")
    return results


METHOD_LABELS = {"random": "random actions", "true_sim": "planner + true simulator (state cost)",
                 "sim_frames": "planner + simulator frames (frame cost)", "learned": "planner + learned video model"}


def results_markdown(results: dict[str, Any]) -> str:
    """The per-method table: success rate and mean/median final distance."""
    thr = results["threshold"]
    lines = [f"| method | episodes | success (final distance < {thr:.2f}) | mean final distance | "
             f"median final distance | s / episode |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in results["methods"].items():
        lines.append(f"| {METHOD_LABELS.get(name, name)} | {s['episodes']} | {s['success_rate']:.0%} | "
                     f"{s['mean_final_distance']:.3f} | {s['median_final_distance']:.3f} | "
                     f"{s['seconds_per_episode']:.1f} |")
    lines.append(f"\nPlanner: {results.get('protocol', '')}. Mean start distance "
                 f"{results.get('mean_start_distance', float('nan')):.3f}.")
    return "\n".join(lines)
