"""The Python API, re-exported at the top level (``seqvae.load``, ``seqvae.rollout``,
``seqvae.plan``, ``seqvae.train``, ``seqvae.evaluate``)::

    import seqvae
    model = seqvae.load("pusher-actions")                        # shipped name, checkpoint, run folder or .safetensors
    futures = seqvae.rollout(model, context, actions, samples=4)  # RolloutResult: frames [B, K, S, T, C, H, W]
    episode = seqvae.plan(env, model)                            # one closed-loop episode in your own environment
    run_dir = seqvae.train("configs/demo/svg.yaml", train={"steps": 300, "out_dir": "runs/api"})
    figures = seqvae.evaluate(run_dir, samples=4, sequences=8)

Each function is a thin layer over the library's own (:func:`seqvae.loading.load_model`,
:func:`seqvae.control.rollout.rollout`, :func:`seqvae.control.mpc.run_episode`,
:func:`seqvae.training.train`, :mod:`seqvae.evaluation`), with defaults a user expects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from seqvae import amp, pretrained
from seqvae.build import build_data, validation_split
from seqvae.config import RunConfig
from seqvae.control.cem import CEMConfig
from seqvae.control.costs import GoalImageCost
from seqvae.control.environment import Environment, FrameCost
from seqvae.control.mpc import EpisodeRecord, run_episode
from seqvae.control.mppi import MPPIConfig
from seqvae.control.optimizers import PlanOptimizer
from seqvae.control.planner import VideoModelPlanner
from seqvae.control.rollout import RolloutResult
from seqvae.control.rollout import rollout as rollout_futures
from seqvae.evaluation.elbo import can_calibrate_sigma, evaluate_elbo, validation_sigma_bound
from seqvae.evaluation.video import evaluate_video
from seqvae.loading import PRETRAINED_PREFIX, load_model
from seqvae.models.base import SequenceVAE, is_video_model
from seqvae.registry import video_metrics_for
from seqvae.training import train as train_run

__all__ = ["load", "rollout", "plan", "train", "evaluate"]


def load(name_or_path: str | Path, device: torch.device | str = "cpu",
         overrides: list[str] | tuple[str, ...] = ()) -> SequenceVAE:
    """A trained model in eval mode: a shipped name (``"pusher-actions"``, see
    :func:`seqvae.pretrained.available`), a checkpoint or run folder, or an exported
    ``.safetensors`` file. Its run config is ``model.run_config`` (a :class:`RunConfig`);
    ``overrides`` (``key=value``) may change data or evaluation settings."""
    source = str(name_or_path)
    if source in pretrained.available() and not Path(source).exists():
        source = f"{PRETRAINED_PREFIX}{source}"
    model, cfg, _ = load_model(source, device, overrides)
    model.run_config = cfg
    return model


def rollout(model: SequenceVAE, context: Tensor, actions: Tensor | None = None, samples: int = 1, *,
            horizon: int | None = None, seed: int = 0, context_actions: Tensor | None = None,
            **options: Any) -> RolloutResult:
    """``samples`` futures of ``model`` from ``context [B, n_ctx, C, H, W]`` (uint8 or float
    in [0, 1]) for each candidate of ``actions [B, K, horizon, A]`` (action-free models:
    ``actions=None`` and ``horizon``), reproducible from ``seed``. ``options`` go to
    :func:`seqvae.control.rollout.rollout` (``cost_fn``, ``precision``, ``return_frames``, ...)."""
    return rollout_futures(model, context, actions, samples, generator=torch.Generator().manual_seed(seed),
                           horizon=horizon, context_actions=context_actions, **options)


def plan(env: Environment, model: SequenceVAE, *, cost: str | FrameCost = "goal_mse", optimizer: str = "cem",
         steps: int = 30, replan_every: int = 2, seed: int = 0, samples: int = 1,
         settings: CEMConfig | MPPIConfig | dict[str, Any] | None = None, record_plans: bool = False,
         end_aware: bool = True) -> EpisodeRecord:
    """One closed-loop episode in ``env`` (any :class:`~seqvae.control.environment.Environment`),
    planning with an action-conditioned video ``model``: ``env.reset(seed)``, then every
    ``replan_every`` steps the optimizer (``"cem"`` or ``"mppi"``, with ``settings``) plans
    on the model's rollouts scored by ``cost`` — ``"goal_mse"`` / ``"goal_ssim"`` (distance
    of the last predicted frame to ``env.goal_image()``) or any
    :class:`~seqvae.control.environment.FrameCost`. Returns the
    :class:`~seqvae.control.mpc.EpisodeRecord` (frames, actions, distances, success, seconds)."""
    if isinstance(cost, str):
        metrics = {"goal_mse": "mse", "goal_ssim": "ssim"}
        if cost not in metrics:
            raise ValueError(f"cost must be 'goal_mse', 'goal_ssim' or a FrameCost, got {cost!r}")
        cost = GoalImageCost(metrics[cost])
    if isinstance(settings, dict):
        settings = (CEMConfig if optimizer == "cem" else MPPIConfig)(**settings)
    chosen = PlanOptimizer.choose(optimizer, settings if isinstance(settings, CEMConfig) else None,
                                  settings if isinstance(settings, MPPIConfig) else None)
    planner = VideoModelPlanner(model, cost, samples=samples, seed=seed)
    env.reset(seed)
    return run_episode(env, planner, chosen, steps, replan_every, torch.Generator().manual_seed(seed),
                       record_plans=record_plans, episode_seed=seed, end_aware=end_aware)


def _overrides(values: dict[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` strings from keyword overrides: nested mappings (``train={"steps": 3}``)
    or dotted names (``**{"train.steps": 3}``)."""
    out = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _overrides(value, f"{name}.")
        else:
            out.append(f"{name}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def train(config: str | Path | RunConfig, resume: bool = False, **overrides: Any) -> Path:
    """Train a run config (a YAML path or a :class:`RunConfig`) with keyword overrides, e.g.
    ``seqvae.train("configs/demo/svg.yaml", train={"steps": 300, "out_dir": "runs/x"})``;
    returns the run folder. ``resume`` continues the run in ``train.out_dir``."""
    extra = _overrides(overrides)
    if isinstance(config, RunConfig):
        from seqvae.config import apply_overrides

        cfg = RunConfig.from_dict(apply_overrides(config.to_dict(), extra))
    else:
        cfg = RunConfig.load(config, extra)
    return train_run(cfg, resume=resume, progress=False, overrides=extra if resume else None)


def evaluate(model: SequenceVAE | str | Path, *, split: str = "test", samples: int = 16, sequences: int = 64,
             batch_size: int = 8, device: torch.device | str = "cpu", seed: int = 0,
             precision: str | None = None) -> dict[str, Any]:
    """Held-out figures of a model (or anything :func:`load` takes), as ``seqvae eval`` gives
    them: the bound (nats, bits/dim) on ``split``, computed in the run's own precision
    (``train.precision``; ``precision`` to choose another); with an optimal-σ decoder whose data
    have a validation split, also the bound with σ² set to the validation reconstruction error
    (``val_sigma_*``), the held-out estimate to quote (``bound["quote"]`` names it). For video
    models best-of-``samples`` PSNR/SSIM against the copy-last-frame baseline over
    ``sequences`` sequences, with the data set's own metrics (e.g. object motion in the
    pushing world)."""
    if not isinstance(model, torch.nn.Module):
        model = load(model, device)
    cfg = getattr(model, "run_config", None)
    if cfg is None:
        raise ValueError("evaluate needs a model from seqvae.load (it carries its run config) or a path/name")
    device = torch.device(device)
    chosen, _ = amp.follow_run(precision, cfg.train.precision, device)
    dtype = amp.resolve(chosen, device)
    dataset = build_data(cfg, split)
    bound = evaluate_elbo(model, dataset, batch_size, device, dtype)
    bound.update(precision=chosen, quote="neg_elbo")
    if split != "val" and can_calibrate_sigma(model):
        val, _ = validation_split(cfg)   # None: the EMA-σ bound is all there is
        if val is not None:
            bound.update(validation_sigma_bound(model, val, dataset, batch_size, device, dtype))
            bound["quote"] = "val_sigma_neg_elbo"
    figures: dict[str, Any] = {"bound": bound}
    if is_video_model(model):
        result = evaluate_video(model, dataset, n_samples=samples, n_sequences=sequences, batch_size=batch_size,
                                device=device, precision=chosen, metrics=video_metrics_for(cfg.data.name), seed=seed)
        figures["video"] = result.summary()
    return figures
