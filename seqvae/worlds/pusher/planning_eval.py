"""Closed-loop evaluation: many fixed episodes per planning method (random actions, CEM
with the true simulator, CEM with a learned model), success rates and a markdown table.
An episode's start and goal depend on ``(seed, episode index)`` only, so every method
faces the same episodes."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqvae.control.cem import CEMConfig
from seqvae.io import atomic_write_text, plain
from seqvae.models.base import VideoPredictor
from seqvae.threads import loop_governor
from seqvae.worlds.pusher.costs import PushCostConfig
from seqvae.worlds.pusher.dataset import PusherDataConfig
from seqvae.worlds.pusher.episode_video import render_episode
from seqvae.worlds.pusher.mpc import EpisodeRecord, run_mpc_episode
from seqvae.worlds.pusher.planners import LearnedModel, PlannerModel, SimulatorVideoModel, TrueSimulatorModel
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import PusherState


METHODS = ("random", "true_sim", "sim_frames", "learned")


def episode_start(sim: PusherSim, seed: int, index: int) -> tuple[PusherState, Tensor]:
    """Start state and goal of evaluation episode ``index`` (a function of ``(seed, index)`` only)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    state = sim.reset(1, g)
    return state, sim.sample_goal(state, g)


def sim_for_model(data_cfg: Any) -> PusherSim:
    """The pushing world a checkpoint's ``pusher`` data config describes (sizes, radii, step,
    table appearance)."""
    if not isinstance(data_cfg, PusherDataConfig):
        raise ValueError(f"the planning evaluation needs a model trained on the 'pusher' data set, "
                         f"this one was trained on {data_cfg.name!r}")
    return PusherSim(data_cfg.world)


@dataclass
class PlanEvalConfig:
    """Settings of :func:`evaluate_pusher` (one closed-loop evaluation)."""

    episodes: int = 50
    steps: int = 40                      # environment steps per episode
    replan_every: int = 1
    end_aware: bool = True               # score plans where the episode ends when that comes before the horizon
                                         # (validation, seed 500, 30 episodes, shipped model: learned 63 % vs 40 %,
                                         # true simulator 93 % vs 83 %)
    seed: int = 0                        # episode i starts from (seed, i)
    success_threshold: float = 0.0       # final distance below this counts (0: one object radius)
    samples: int = 1                     # learned model: futures per candidate
    precision: str = "auto"
    render_episodes: int = 3             # MP4s for the first few episodes (0: none)
    methods: tuple[str, ...] = METHODS
    cem: CEMConfig = field(default_factory=CEMConfig)
    cost: PushCostConfig = field(default_factory=PushCostConfig)


def card_plan_config(**settings: Any) -> PlanEvalConfig:
    """A :class:`PlanEvalConfig` with the planner settings of the shipped model's figures (its
    card, the README, the demo): CEM 2 × 100 candidates, 10 elites, horizon 10 cut at the
    episode's end, replanning every 2 of 30 steps; chosen on validation episodes (seed 500),
    not on the held-out seed 1000. ``settings`` set the rest (episodes, seed, methods, ...)."""
    return PlanEvalConfig(steps=30, replan_every=2, end_aware=True,
                          cem=CEMConfig(iterations=2, candidates=100, elites=10, horizon=10), **settings)


def describe_planner(cfg: PlanEvalConfig) -> str:
    """The planner settings of ``cfg`` in words (as model cards state them)."""
    c = cfg.cem
    horizon = f"horizon {c.horizon}" + (" (cut at the episode's end)" if cfg.end_aware else "")
    return (f"CEM {c.iterations} × {c.candidates} candidates, {c.elites} elites, {horizon}, "
            f"replan every {cfg.replan_every} of {cfg.steps} steps, gripper from {cfg.cost.gripper_source}")


def summarize(distances: Sequence[float], threshold: float) -> dict[str, float]:
    """Success rate and mean/median final distance of one method."""
    d = torch.tensor(list(distances), dtype=torch.float64)
    return {"episodes": len(d), "success_rate": float((d < threshold).double().mean()),
            "mean_final_distance": float(d.mean()), "median_final_distance": float(d.median())}


def evaluate_pusher(cfg: PlanEvalConfig, model: VideoPredictor | None = None, sim: PusherSim | None = None,
                    out_dir: str | Path | None = None, log: Callable[[str], None] = print,
                    threads: int = 0) -> dict[str, Any]:
    """Closed-loop "push object 0 to the goal" over ``cfg.episodes`` fixed episodes per method.

    Methods: ``random`` (uniform random actions), ``true_sim`` (CEM with the simulator as
    the model, costs from the true state), ``sim_frames`` (CEM with the simulator's
    rendered frames as a perfect video model, costs from the colour tracker: the learned
    path with perfect predictions), ``learned`` (CEM with ``model``, an action-conditioned
    SVG trained on ``pusher``). Returns ``{"config", "threshold", "methods": {name: summary + per-episode
    final distances + seconds}}``; with ``out_dir`` also writes ``results.json``,
    ``results.md`` and MP4s of the first ``cfg.render_episodes`` episodes. On the CPU the
    video models' planning calls run with threads chosen by a :class:`seqvae.threads.ThreadGovernor`
    (``threads`` > 0 or ``OMP_NUM_THREADS`` fixes the count).
    """
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown planning methods {unknown}; choose from {METHODS}")
    if "learned" in cfg.methods and model is None:
        raise ValueError("method 'learned' needs a trained action-conditioned model (--checkpoint)")
    sim = sim or PusherSim()
    threshold = cfg.success_threshold or sim.cfg.object_radius
    backends: dict[str, PlannerModel | None] = {}
    for name in cfg.methods:
        if name == "random":
            backends[name] = None
        elif name == "true_sim":
            backends[name] = TrueSimulatorModel(sim, cfg.cost)
        elif name == "sim_frames":
            backends[name] = LearnedModel(SimulatorVideoModel(sim), sim, seed=cfg.seed, cost=cfg.cost)
        else:
            backends[name] = LearnedModel(model, sim, samples=cfg.samples, seed=cfg.seed, cost=cfg.cost,
                                          precision=cfg.precision)
    results: dict[str, Any] = {"config": plain(asdict(cfg)), "threshold": threshold, "methods": {}}
    records: dict[str, list[EpisodeRecord]] = {name: [] for name in cfg.methods}
    for name, backend in backends.items():
        finals, seconds = [], []
        # video-model planning calls are seconds long and alike: CPU threads chosen from their times
        governor = loop_governor(backend.device, threads) if isinstance(backend, LearnedModel) else None
        for i in range(cfg.episodes):
            state, goal = episode_start(sim, cfg.seed, i)
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + i)
            rec = run_mpc_episode(sim, state, goal, backend, cfg.cem, cfg.steps, cfg.replan_every, gen,
                                  record_plans=i < cfg.render_episodes, episode_seed=cfg.seed * 104_729 + i,
                                  governor=governor, end_aware=cfg.end_aware)
            finals.append(rec.final_distance)
            seconds.append(rec.seconds)
            if i < cfg.render_episodes:
                records[name].append(rec)
            log(f"[{name}] episode {i + 1}/{cfg.episodes}: start {float(rec.distances[0]):.3f} -> "
                f"final {rec.final_distance:.3f} ({rec.seconds:.1f} s)")
        summary = summarize(finals, threshold)
        summary.update(final_distances=finals, seconds_per_episode=sum(seconds) / len(seconds))
        results["methods"][name] = summary
        log(f"[{name}] success {summary['success_rate']:.0%}, mean final distance {summary['mean_final_distance']:.3f}")
    starts = [float(sim.object_distance(*episode_start(sim, cfg.seed, i))[0]) for i in range(cfg.episodes)]
    results["start_distances"] = starts
    results["mean_start_distance"] = sum(starts) / len(starts)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "results.md", results_markdown(results) + "\n")
        for i in range(min(cfg.render_episodes, cfg.episodes)):
            path = render_episode(out / f"episode_{i:03d}.mp4", {n: records[n][i] for n in cfg.methods},
                                  threshold, title=f"episode {i}: push the object to the ring")
            log(f"wrote {path}")
    return results


def results_markdown(results: dict[str, Any]) -> str:
    """The per-method table: success rate and mean/median final distance."""
    thr = results["threshold"]
    lines = [f"| method | episodes | success (final distance < {thr:.2f}) | mean final distance | "
             f"median final distance | s / episode |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    labels = {"random": "random actions", "true_sim": "CEM + true simulator (state cost)",
              "sim_frames": "CEM + simulator frames (tracker cost)", "learned": "CEM + learned SVG-LP (tracker cost)"}
    for name, s in results["methods"].items():
        lines.append(f"| {labels.get(name, name)} | {s['episodes']} | {s['success_rate']:.0%} | "
                     f"{s['mean_final_distance']:.3f} | {s['median_final_distance']:.3f} | {s['seconds_per_episode']:.1f} |")
    lines.append(f"\nMean start distance {results.get('mean_start_distance', float('nan')):.3f} table units "
                 f"(the table is [-1, 1]²).")
    return "\n".join(lines)
