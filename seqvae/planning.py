"""Visual model-predictive control with the cross-entropy method (CEM), as in visual
foresight (Finn & Levine 2017; Ebert et al. 2018): given what the camera saw, sample
candidate action sequences, predict their futures with a model, score the futures with a
cost, refit the sampling distribution to the best ("elite") candidates, act on the best
plan, observe, replan.

Pieces (each usable alone):

* :class:`CEMConfig` / :func:`cem_plan` — CEM over action sequences ``[horizon, A]`` for
  any ``predict_costs(actions[K, horizon, A]) -> costs[K]``.
* costs — :func:`pixel_distance_to_goal` (goal image), :func:`locate_color` (a soft
  colour-matching centroid: where an object of known colour is in a frame),
  :func:`pusher_object_cost` (object 0 to the goal in table units, with a shaping term
  that draws the gripper behind the object), :func:`frame_pusher_cost` (the same read
  off predicted frames, plus a penalty for the share of the object's colour
  (:func:`locate_color`'s mass) a predicted frame has lost: without it, CEM on a learned model
  finds plans whose predictions smear the object away — the tracker then sees it stay
  put — and pushes the real object off course).
* planner backends for the embedded pushing world (:mod:`seqvae.data.pusher`):
  :class:`TrueSimulatorModel` (the simulator itself: the planner's upper bound) and
  :class:`LearnedModel` (an action-conditioned SVG through :func:`seqvae.rollout.rollout`,
  seeing only camera frames and its own actions).
* :func:`run_mpc_episode` — the closed loop; :func:`evaluate_pusher` — many fixed
  episodes per method, success rates, a markdown table, rendered MP4s.

Everything random takes an explicit ``torch.Generator``; an episode's start state and
goal depend on ``(seed, episode index)`` only, so every method faces the same episodes.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from seqvae.data.pusher import GRIPPER_INNER, PusherConfig, PusherSim, PusherState
from seqvae.rollout import rollout

# ------------------------------------------------------------------------------- CEM


@dataclass
class CEMConfig:
    """Cross-entropy method over action sequences ``[horizon, A]``.

    Each iteration samples ``candidates`` sequences from a diagonal Gaussian (per time
    step and action dimension), clipped to ``[action_low, action_high]``, keeps the
    ``elites`` cheapest and refits mean and std to them:
    ``new = momentum · old + (1 − momentum) · elite statistic`` (std floored at
    ``min_std``). ``noise_smoothing`` β correlates the sampling noise in time
    (``ε_t = β ε_{t−1} + √(1 − β²) n_t``: smoother, more exploratory sequences).
    ``keep_elites``: the previous iteration's elites are evaluated again in place of as
    many fresh samples, so the best cost found never gets worse by resampling.
    ``samples``: futures per candidate a stochastic model averages the cost over.
    """

    iterations: int = 3
    candidates: int = 200
    elites: int = 20
    horizon: int = 10
    samples: int = 1
    init_std: float = 0.6
    min_std: float = 0.05
    momentum: float = 0.1
    noise_smoothing: float = 0.0
    keep_elites: bool = True
    action_low: float = -1.0
    action_high: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.horizon < 1 or self.samples < 1:
            raise ValueError("CEM needs iterations, horizon and samples >= 1")
        if not 1 <= self.elites <= self.candidates:
            raise ValueError(f"need 1 <= elites <= candidates, got elites={self.elites}, candidates={self.candidates}")
        if self.keep_elites and self.elites >= self.candidates:
            raise ValueError("keep_elites needs more candidates than elites (room for fresh samples)")
        if not self.action_low < self.action_high:
            raise ValueError(f"need action_low < action_high, got {self.action_low}, {self.action_high}")
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError("init_std must be positive and min_std non-negative")
        if not 0 <= self.momentum < 1 or not 0 <= self.noise_smoothing < 1:
            raise ValueError("momentum and noise_smoothing must lie in [0, 1)")


@dataclass
class CEMInfo:
    """What happened inside one :func:`cem_plan` call."""

    best_cost: float                 # cost of the returned plan (as evaluated)
    mean: Tensor                     # [horizon, A] final sampling mean
    std: Tensor                      # [horizon, A] final sampling std
    best_per_iteration: list[float]  # lowest cost seen in each iteration
    elite_mean_per_iteration: list[float]
    evaluations: int                 # candidate sequences scored in total


def cem_plan(predict_costs: Callable[[Tensor], Tensor], action_dim: int, cfg: CEMConfig,
             generator: torch.Generator, init_mean: Tensor | None = None) -> tuple[Tensor, CEMInfo]:
    """Minimise ``predict_costs`` over action sequences with the cross-entropy method.

    Args:
        predict_costs: ``actions[K, horizon, A] -> costs[K]`` (lower is better; NaN
            counts as +inf).
        action_dim: ``A``.
        cfg: the CEM settings (:class:`CEMConfig`).
        generator: source of the candidates' noise; candidates live on its device.
        init_mean: ``[horizon, A]`` starting mean (e.g. the previous plan shifted by the
            steps executed since); default the middle of the action box.
    Returns:
        ``(best_actions [horizon, A], info)``: the cheapest candidate evaluated (within the
        bounds) and a :class:`CEMInfo`.
    """
    device = generator.device
    h, a, k = cfg.horizon, action_dim, cfg.candidates
    low, high = cfg.action_low, cfg.action_high
    if init_mean is None:
        mean = torch.full((h, a), 0.5 * (low + high), device=device)
    else:
        if tuple(init_mean.shape) != (h, a):
            raise ValueError(f"init_mean must be [horizon={h}, A={a}], got {tuple(init_mean.shape)}")
        mean = init_mean.detach().to(device, torch.float32).clamp(low, high)
    std = torch.full((h, a), cfg.init_std, device=device)
    best, best_cost = mean.clone(), math.inf
    elites = None
    best_per_iter, elite_mean_per_iter = [], []
    beta = cfg.noise_smoothing
    for _ in range(cfg.iterations):
        eps = torch.randn(k, h, a, generator=generator, device=device)
        if beta > 0:
            for t in range(1, h):
                eps[:, t] = beta * eps[:, t - 1] + math.sqrt(1 - beta * beta) * eps[:, t]
        cand = (mean + std * eps).clamp(low, high)                                  # (K, H, A)
        if cfg.keep_elites and elites is not None:
            cand[: elites.shape[0]] = elites
        costs = predict_costs(cand)
        if not isinstance(costs, Tensor) or costs.shape != (k,):
            got = tuple(costs.shape) if isinstance(costs, Tensor) else type(costs).__name__
            raise ValueError(f"predict_costs must return costs [K={k}], got {got}")
        costs = torch.nan_to_num(costs.detach().float().to(device), nan=math.inf)
        order = torch.argsort(costs, stable=True)
        elites = cand[order[: cfg.elites]]
        if float(costs[order[0]]) < best_cost:
            best_cost, best = float(costs[order[0]]), cand[order[0]].clone()
        best_per_iter.append(float(costs[order[0]]))
        elite_mean_per_iter.append(float(costs[order[: cfg.elites]].mean()))
        m = cfg.momentum
        mean = m * mean + (1 - m) * elites.mean(0)
        std = (m * std + (1 - m) * elites.std(0, unbiased=False)).clamp(min=cfg.min_std)
    info = CEMInfo(best_cost=best_cost, mean=mean, std=std, best_per_iteration=best_per_iter,
                   elite_mean_per_iteration=elite_mean_per_iter, evaluations=cfg.iterations * k)
    return best.clamp(low, high), info


# ----------------------------------------------------------------------------- costs


def pixel_distance_to_goal(frames: Tensor, goal_image: Tensor, reduce_time: str = "final") -> Tensor:
    """Mean squared pixel distance of predicted frames to a goal image.

    Args:
        frames: ``[..., T, C, H, W]`` in [0, 1].
        goal_image: ``[C, H, W]``, or ``[..., C, H, W]`` with the frames' leading dims
            (broadcastable), in [0, 1] (uint8 is scaled).
        reduce_time: ``final`` (the last frame only) or ``sum`` (summed over the T frames).
    Returns:
        ``[...]`` costs.
    """
    if frames.dim() < 4:
        raise ValueError(f"frames must be [..., T, C, H, W], got {tuple(frames.shape)}")
    goal = goal_image.float() / 255.0 if goal_image.dtype == torch.uint8 else goal_image.float()
    if goal.shape[-3:] != frames.shape[-3:]:
        raise ValueError(f"goal image {tuple(goal.shape)} does not match frames {tuple(frames.shape[-3:])}")
    per_frame = ((frames.float() - goal.to(frames.device).unsqueeze(-4)) ** 2).mean(dim=(-3, -2, -1))   # (..., T)
    if reduce_time == "final":
        return per_frame[..., -1]
    if reduce_time == "sum":
        return per_frame.sum(-1)
    raise ValueError(f"reduce_time must be 'final' or 'sum', got {reduce_time!r}")


def pixel_centres(size: int, device: torch.device | str | None = None) -> Tensor:
    """Table coordinates of the pixel centres of a ``size``-pixel axis (the table is [-1, 1])."""
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0


def locate_color(frames: Tensor, color: Tensor, temperature: float = 0.1, prior: Tensor | None = None,
                 prior_weight: float = 2.0, window: float = 0.25, iterations: int = 3,
                 with_mass: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Where a thing of known colour is: a soft colour-matching centroid, in table units.

    Each pixel weighs ``w = exp(−‖pixel − color‖² / (2·temperature²))``. The position is
    first the ``w``-weighted mean of the pixel centres (``x`` right, ``y`` down, the table
    is ``[-1, 1]²``) — or, given a ``prior [..., 2]`` (e.g. where the thing was last
    seen), that position — then ``iterations`` mean-shift steps re-weight the pixels by a
    Gaussian window of std ``window`` around the current estimate, so that table patches
    (or smeared predictions) of a similar colour far from the thing stop pulling at it.
    The prior also adds ``prior_weight`` pixels' worth of mass at its position, so a
    frame where the colour has (nearly) vanished — a blurry prediction, an occlusion —
    returns about the prior instead of noise.

    Args:
        frames: ``[..., 3, H, W]`` floats in [0, 1] (uint8 is scaled).
        color: ``[3]`` or ``[..., 3]`` (broadcast against the frames' leading dims).
        with_mass: also return the colour's mass ``Σ_pixels w`` ``[...]`` (about the visible
            area in pixels of a thing of that colour).
    Returns:
        ``[..., 2]`` positions (and the masses).
    """
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"frames must be [..., 3, H, W], got {tuple(frames.shape)}")
    f = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    c = color.to(f.device, torch.float32)[..., :, None, None]                    # (..., 3, 1, 1)
    w = torch.exp(-((f - c) ** 2).sum(-3) / (2.0 * temperature * temperature))  # (..., H, W)
    xs = pixel_centres(f.shape[-1], f.device)                                    # (W,)
    ys = pixel_centres(f.shape[-2], f.device)                                    # (H,)
    p = prior.to(f.device, torch.float32).expand(*w.shape[:-2], 2) if prior is not None else None

    def centroid(around: Tensor | None) -> Tensor:
        """Mean of the pixel centres weighted by ``w``, times a Gaussian window at ``around``."""
        if around is None:
            col, row, k = w.sum(-2), w.sum(-1), prior_weight                      # (..., W), (..., H)
        else:
            wx = torch.exp(-(xs - around[..., 0:1]) ** 2 / (2 * window**2))      # (..., W)
            wy = torch.exp(-(ys - around[..., 1:2]) ** 2 / (2 * window**2))      # (..., H)
            col = (w * wy[..., :, None]).sum(-2) * wx
            row = (w * wx[..., None, :]).sum(-1) * wy
            k = None if p is None else prior_weight * torch.exp(-((p - around) ** 2).sum(-1) / (2 * window**2))
        mass, mx, my = col.sum(-1), (col * xs).sum(-1), (row * ys).sum(-1)
        if p is not None:
            mass, mx, my = mass + k, mx + k * p[..., 0], my + k * p[..., 1]
        mass = mass.clamp(min=1e-12)
        return torch.stack([mx / mass, my / mass], -1)

    est = centroid(None) if p is None else p
    for _ in range(iterations):
        est = centroid(est)
    return (est, w.sum((-2, -1))) if with_mass else est


@dataclass
class PushCostConfig:
    """Cost of "push object 0 to the goal", in table units (see :func:`pusher_object_cost`)."""

    shaping: float = 0.5          # weight of the gripper's distance to the push point behind the object
    push_margin: float = 0.02     # the push point sits this far beyond touching distance
    color_temperature: float = 0.1    # colour tracker (learned model): tolerance of the colour match ...
    gripper_temperature: float = 0.06  # ... and for the gripper's dark inside
    window: float = 0.25              # tracker's mean-shift window (table units)
    lost_penalty: float = 0.2         # frame costs: added × the share of object 0's colour a predicted
                                      # frame has lost against the latest observation (objects do not
                                      # vanish: a plan whose predicted future loses the object — hidden
                                      # under the arm, smeared by the model — is not to be trusted)
    gripper_source: str = "frames"    # learned model: where the gripper of the shaping term comes from:
                                      # "frames" (tracked in the predicted frames) or "kinematics" (the
                                      # robot's own forward kinematics: observed position + Σ action · max_step)

    def __post_init__(self) -> None:
        if self.gripper_source not in ("frames", "kinematics"):
            raise ValueError(f"gripper_source must be 'frames' or 'kinematics', got {self.gripper_source!r}")


def pusher_object_cost(object_pos: Tensor, goal: Tensor, gripper_pos: Tensor | None = None,
                       sim_cfg: PusherConfig | None = None, cost: PushCostConfig | None = None) -> Tensor:
    """Distance of object 0 to the goal at the end of a plan, plus a shaping term.

    ``cost = ‖o_T − goal‖ + shaping · ‖g_T − p_T‖`` with ``p_T = o_T − (r + h + margin) ·
    (goal − o_T)/‖goal − o_T‖`` the point behind the object from which a push moves it
    towards the goal (``r`` object radius, ``h`` gripper half-side). Without the shaping
    term the cost is flat whenever the gripper cannot reach the object within the
    horizon, and CEM would wander.

    Args:
        object_pos: ``[N, 2]`` final positions of object 0, or ``[N, T, 2]`` (the last is used).
        goal: ``[N, 2]`` or ``[2]``.
        gripper_pos: ``[N, 2]`` / ``[N, T, 2]`` gripper positions (None: no shaping).
    Returns:
        ``[N]`` costs.
    """
    sim_cfg = sim_cfg or PusherConfig()
    cost = cost or PushCostConfig()
    o = object_pos[:, -1] if object_pos.dim() == 3 else object_pos
    goal = goal.to(o).expand_as(o)
    to_goal = goal - o
    dist = to_goal.norm(dim=-1)
    total = dist
    if gripper_pos is not None and cost.shaping > 0:
        g = gripper_pos[:, -1] if gripper_pos.dim() == 3 else gripper_pos
        reach = sim_cfg.object_radius + sim_cfg.gripper_radius + cost.push_margin
        push_point = o - reach * to_goal / dist.clamp(min=1e-6)[:, None]
        total = total + cost.shaping * (g.to(o) - push_point).norm(dim=-1)
    return total


def frame_pusher_cost(frames: Tensor, goal: Tensor, object_color: Tensor, object_prior: Tensor,
                      gripper_prior: Tensor | None, sim_cfg: PusherConfig | None = None,
                      cost: PushCostConfig | None = None, gripper_final: Tensor | None = None,
                      object_mass: Tensor | float | None = None) -> Tensor:
    """:func:`pusher_object_cost` read off predicted frames ``[N, T, 3, H, W]``: object 0
    and the gripper are located in the LAST frame by their colours (:func:`locate_color`,
    the gripper by its dark inside), with their last observed positions as priors.

    Args:
        goal, object_prior, gripper_prior: ``[2]`` or ``[N, 2]`` (table units).
        object_color: ``[3]`` or ``[N, 3]``, the object's colour (``state.object_color[:, 0]``).
        gripper_final: ``[N, 2]`` final gripper positions known otherwise (e.g. from the
            robot's kinematics); then the gripper is not looked for in the frames.
        object_mass: the object's colour mass (:func:`locate_color`) in the latest observed frame; given it,
            ``cost.lost_penalty × max(0, 1 − mass_last / object_mass)`` is added.
    """
    cost = cost or PushCostConfig()
    last = frames[:, -1]
    n = last.shape[0]
    obj, seen = locate_color(last, object_color, cost.color_temperature, prior=object_prior.expand(n, 2),
                             window=cost.window, with_mass=True)
    grip = gripper_final
    if grip is None and gripper_prior is not None and cost.shaping > 0:
        inner = torch.tensor(GRIPPER_INNER, device=last.device)
        grip = locate_color(last, inner, cost.gripper_temperature, prior=gripper_prior.expand(n, 2), window=cost.window)
    total = pusher_object_cost(obj, goal, grip, sim_cfg, cost)
    if object_mass is not None and cost.lost_penalty > 0:
        lost = (1.0 - seen / torch.as_tensor(object_mass, dtype=torch.float32, device=last.device).clamp(min=1e-6)).clamp(min=0.0)
        total = total + cost.lost_penalty * lost
    return total


def gripper_kinematics(start: Tensor, actions: Tensor, sim_cfg: PusherConfig) -> Tensor:
    """Where the gripper ends up after ``actions [K, T, 2]`` from ``start [2]`` if nothing
    blocks it: ``g ← clamp(g + clamp(a, −1, 1) · max_step)`` per step (the robot's own
    forward kinematics; objects jammed against a wall, which stop it, are ignored)."""
    limit = 1.0 - sim_cfg.gripper_radius
    g = start.expand(actions.shape[0], 2)
    for t in range(actions.shape[1]):
        g = (g + actions[:, t].clamp(-1, 1) * sim_cfg.max_step).clamp(-limit, limit)
    return g


# -------------------------------------------------------------------------- backends


class PlannerModel(Protocol):
    """What the MPC loop needs from a model of the world."""

    name: str

    def reset(self, state: PusherState, goal: Tensor, seed: int = 0) -> None:
        """Start an episode at ``state`` (N = 1) with ``goal [1, 2]``; ``seed`` seeds the
        model's own randomness (a stochastic model's latent samples) for the episode."""

    def observe(self, state: PusherState, action: Tensor) -> None:
        """The environment took ``action [A]`` and is now in ``state``."""

    def costs(self, actions: Tensor) -> Tensor:
        """Costs ``[K]`` of candidate plans ``[K, horizon, A]`` from the current situation."""

    def preview(self, actions: Tensor) -> Tensor:
        """The future a plan ``[horizon, A]`` is expected to bring, ``[horizon, 3, H, W]`` in [0, 1]."""


class TrueSimulatorModel:
    """The simulator as the planner's model (knows the true state): the upper bound of
    what a learned model can reach with the same planner and cost."""

    name = "true_sim"

    def __init__(self, sim: PusherSim, cost: PushCostConfig | None = None) -> None:
        self.sim, self.cost = sim, cost or PushCostConfig()
        self.state: PusherState | None = None
        self.goal: Tensor | None = None

    def reset(self, state: PusherState, goal: Tensor, seed: int = 0) -> None:
        self.state, self.goal = state, goal

    def observe(self, state: PusherState, action: Tensor) -> None:
        self.state = state

    def costs(self, actions: Tensor) -> Tensor:
        k = actions.shape[0]
        grip, objs, _ = self.sim.simulate(self.state.repeat(k), actions.to(self.state.device))
        return pusher_object_cost(objs[:, -1, 0], self.goal[0], grip[:, -1], self.sim.cfg, self.cost)

    def preview(self, actions: Tensor) -> Tensor:
        frames, _ = self.sim.rollout(self.state, actions[None].to(self.state.device))
        return frames[0, 1:].float() / 255.0


class LearnedModel:
    """An action-conditioned video predictor as the planner's model.

    It sees only camera frames (rendered without the goal marker, as in training) and its
    own actions, plus what a user would tell it: the goal position and the colour of the
    object to push. It keeps the last ``n_ctx`` frames and the actions between them as
    context; at the start of an episode the first frame is repeated with zero actions
    (exactly what a still scene looks like). Costs are :func:`frame_pusher_cost` on the
    last predicted frame, averaged over ``samples`` futures per candidate (common random
    numbers across candidates, see :mod:`seqvae.rollout`). The object is always located in
    the predicted frames; the gripper of the shaping term too, or, with
    ``cost.gripper_source = "kinematics"``, it is dead-reckoned from its observed position
    and the candidate's actions (what a robot knows of its own arm).
    """

    name = "learned"

    def __init__(self, model: nn.Module, sim: PusherSim, samples: int = 1, seed: int = 0,
                 cost: PushCostConfig | None = None, precision: str = "auto", max_batch: int | None = None) -> None:
        if not getattr(model, "action_dim", 0):
            raise ValueError("LearnedModel needs an action-conditioned model (train with model.action_conditioned=true)")
        self.model, self.sim, self.samples, self.seed = model, sim, samples, seed
        self.cost = cost or PushCostConfig()
        self.precision, self.max_batch = precision, max_batch
        self.n_ctx = int(getattr(model, "n_past", 2))
        self.device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
        self.generator = torch.Generator(device="cpu")          # planning rollouts
        self.preview_generator = torch.Generator(device="cpu")  # previews (do not disturb planning's stream)
        self.frames: list[Tensor] = []
        self.actions: list[Tensor] = []

    def reset(self, state: PusherState, goal: Tensor, seed: int | None = None) -> None:
        self.goal = goal[0].to(self.device)
        self.color = state.object_color[0, 0].to(self.device)
        self.generator.manual_seed(self.seed if seed is None else seed)
        self.preview_generator.manual_seed(self.seed if seed is None else seed)
        if isinstance(self.model, SimulatorVideoModel):
            self.model.set_state(state)
        first = self._camera(state)
        self.frames = [first] * self.n_ctx
        self.actions = [torch.zeros(self.model.action_dim, device=self.device)] * (self.n_ctx - 1)
        self._update_priors()

    def _camera(self, state: PusherState) -> Tensor:
        return self.sim.render(state)[0].to(self.device).float() / 255.0       # (3, H, W), no goal marker

    def _update_priors(self) -> None:
        """Where object 0 and the gripper are in the latest frame (the trackers' priors)."""
        last = self.frames[-1][None]
        prior, mass = locate_color(last, self.color, self.cost.color_temperature, window=self.cost.window, with_mass=True)
        self.object_prior, self.object_mass = prior[0], mass[0]
        inner = torch.tensor(GRIPPER_INNER, device=self.device)
        self.gripper_prior = locate_color(last, inner, self.cost.gripper_temperature, window=self.cost.window)[0]

    def observe(self, state: PusherState, action: Tensor) -> None:
        if isinstance(self.model, SimulatorVideoModel):
            self.model.set_state(state)
        self.frames = (self.frames + [self._camera(state)])[-self.n_ctx:]
        self.actions = (self.actions + [action.to(self.device, torch.float32)])[-(self.n_ctx - 1):] if self.n_ctx > 1 else []
        self._update_priors()

    def _context(self) -> tuple[Tensor, Tensor | None]:
        ctx = torch.stack(self.frames)[None]                                        # (1, n_ctx, 3, H, W)
        acts = torch.stack(self.actions)[None] if self.actions else None           # (1, n_ctx-1, A)
        return ctx, acts

    def _cost_fn(self, frames: Tensor, index: Tensor) -> Tensor:
        final = None
        if self.cost.gripper_source == "kinematics":
            final = gripper_kinematics(self.gripper_prior, self._candidates[index[:, 1]], self.sim.cfg)
        return frame_pusher_cost(frames, self.goal, self.color, self.object_prior, self.gripper_prior,
                                 self.sim.cfg, self.cost, gripper_final=final, object_mass=self.object_mass)

    def costs(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        self._candidates = actions.to(self.device, torch.float32)
        out = rollout(self.model, ctx, actions[None].to(self.device), self.samples, generator=self.generator,
                      context_actions=acts, cost_fn=self._cost_fn, return_frames=False,
                      precision=self.precision, max_batch=self.max_batch)
        return out.costs[0].mean(-1)                                                # (K,)

    def preview(self, actions: Tensor) -> Tensor:
        ctx, acts = self._context()
        out = rollout(self.model, ctx, actions[None, None].to(self.device), 1, generator=self.preview_generator,
                      context_actions=acts, precision=self.precision)
        return out.frames[0, 0, 0]


class SimulatorVideoModel(nn.Module):
    """A perfect action-conditioned video predictor: renders what the simulator does.

    Plugged into :class:`LearnedModel` (which keeps it told of the true state), it runs the
    learned-model planning path — rollouts of frames, the colour-tracker cost, CEM —
    with perfect predictions, separating what the frame-based cost and planner can do
    from what a trained model gets right. It ignores the context frames and latents.
    """

    def __init__(self, sim: PusherSim, n_past: int = 2) -> None:
        super().__init__()
        self.sim, self.n_past, self.action_dim, self.z_dim = sim, n_past, 2, 0
        self.register_buffer("_device_anchor", torch.zeros(1))   # gives rollout a device to check
        self.state: PusherState | None = None

    def set_state(self, state: PusherState) -> None:
        """The true state at the last context frame."""
        self.state = state

    @torch.no_grad()
    def predict(self, context: Tensor, n_future: int, actions: Tensor | None = None,
                generator: torch.Generator | None = None, sample_pixels: bool = False,
                noise: Tensor | None = None) -> Tensor:
        """Frames ``[B, n_future, 3, H, W]`` after ``actions[:, n_ctx - 1:]`` from the known state."""
        if self.state is None:
            raise ValueError("SimulatorVideoModel needs set_state(state) before predicting")
        b, n_ctx = context.shape[:2]
        frames, _ = self.sim.rollout(self.state.repeat(b), actions[:, n_ctx - 1:n_ctx - 1 + n_future].float())
        return frames[:, 1:].float().to(context.device) / 255.0


# ----------------------------------------------------------------------- the MPC loop


@dataclass
class EpisodeRecord:
    """One closed-loop episode."""

    frames: Tensor            # uint8 [steps + 1, 3, H, W] camera view with the goal ring
    actions: Tensor           # [steps, A] executed actions
    distances: Tensor         # [steps + 1] object-0 distance to the goal (table units)
    goal: Tensor              # [2]
    plan_steps: list[int] = field(default_factory=list)      # when each plan was made
    plan_frames: list[Tensor] = field(default_factory=list)  # [horizon, 3, H, W] predicted future of each plan
    plan_costs: list[float] = field(default_factory=list)
    seconds: float = 0.0      # wall time of the episode (planning included)

    @property
    def final_distance(self) -> float:
        return float(self.distances[-1])


def run_mpc_episode(sim: PusherSim, state: PusherState, goal: Tensor, planner: PlannerModel | None,
                    cfg: CEMConfig, steps: int, replan_every: int = 1, generator: torch.Generator | None = None,
                    record_plans: bool = False, episode_seed: int | None = None) -> EpisodeRecord:
    """Run one episode of "push object 0 to the goal" in closed loop.

    Every ``replan_every`` steps CEM plans ``cfg.horizon`` actions with ``planner`` (warm
    started from the rest of the previous plan, padded with zeros) and the first
    ``replan_every`` of them are executed, observing after each. ``planner=None`` takes
    uniformly random actions in the CEM box instead (the baseline).

    Args:
        state: the start (N = 1); ``goal``: ``[1, 2]``.
        generator: CEM's (or the random policy's) noise.
        record_plans: keep each plan's predicted future (``planner.preview``) for rendering.
        episode_seed: seeds the planner model's own randomness (a learned model's latents;
            None: the backend's default seed).
    """
    if state.batch_size != 1:
        raise ValueError(f"run_mpc_episode runs one environment, got a batch of {state.batch_size}")
    if steps < 1 or replan_every < 1 or replan_every > cfg.horizon:
        raise ValueError(f"need steps >= 1 and 1 <= replan_every <= horizon ({cfg.horizon}), "
                         f"got steps={steps}, replan_every={replan_every}")
    start = time.perf_counter()
    generator = generator or torch.Generator().manual_seed(0)
    a_dim = 2
    if planner is not None:
        planner.reset(state, goal, seed=episode_seed)
    frames = [sim.render(state, goal)[0]]
    distances = [float(sim.object_distance(state, goal)[0])]
    actions: list[Tensor] = []
    record = EpisodeRecord(frames=torch.empty(0), actions=torch.empty(0), distances=torch.empty(0), goal=goal[0].clone())
    plan: Tensor | None = None
    offset = 0
    for t in range(steps):
        if planner is None:
            action = torch.rand(a_dim, generator=generator, device=generator.device) \
                * (cfg.action_high - cfg.action_low) + cfg.action_low
        else:
            if plan is None or offset >= replan_every:
                init = None
                if plan is not None:
                    init = torch.cat([plan[offset:], plan.new_zeros(offset, a_dim)])
                plan, info = cem_plan(planner.costs, a_dim, cfg, generator, init_mean=init)
                offset = 0
                if record_plans:
                    record.plan_steps.append(t)
                    record.plan_frames.append(planner.preview(plan).cpu())
                    record.plan_costs.append(info.best_cost)
            action = plan[offset]
            offset += 1
        action = action.to(state.device, torch.float32)
        state = sim.step(state, action[None])
        if planner is not None:
            planner.observe(state, action)
        actions.append(action.cpu())
        frames.append(sim.render(state, goal)[0])
        distances.append(float(sim.object_distance(state, goal)[0]))
    record.frames = torch.stack(frames).cpu()
    record.actions = torch.stack(actions)
    record.distances = torch.tensor(distances)
    record.seconds = time.perf_counter() - start
    return record


# ------------------------------------------------------------------------ evaluation

METHODS = ("random", "true_sim", "sim_frames", "learned")


def episode_start(sim: PusherSim, seed: int, index: int) -> tuple[PusherState, Tensor]:
    """Start state and goal of evaluation episode ``index`` (a function of ``(seed, index)`` only)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    state = sim.reset(1, g)
    return state, sim.sample_goal(state, g)


def sim_for_model(data_cfg: Any) -> PusherSim:
    """The pushing world a checkpoint's ``pusher`` data config describes (sizes, radii, step,
    table appearance)."""
    if getattr(data_cfg, "name", None) != "pusher":
        raise ValueError(f"the planning evaluation needs a model trained on the 'pusher' data set, "
                         f"this one was trained on {getattr(data_cfg, 'name', '?')!r}")
    return PusherSim(data_cfg.world())


@dataclass
class PlanEvalConfig:
    """Settings of :func:`evaluate_pusher` (one closed-loop evaluation)."""

    episodes: int = 50
    steps: int = 40                      # environment steps per episode
    replan_every: int = 1
    seed: int = 0                        # episode i starts from (seed, i)
    success_threshold: float = 0.0       # final distance below this counts (0: one object radius)
    samples: int = 1                     # learned model: futures per candidate
    precision: str = "auto"
    render_episodes: int = 3             # MP4s for the first few episodes (0: none)
    methods: tuple[str, ...] = METHODS
    cem: CEMConfig = field(default_factory=CEMConfig)
    cost: PushCostConfig = field(default_factory=PushCostConfig)


def summarize(distances: Sequence[float], threshold: float) -> dict[str, float]:
    """Success rate and mean/median final distance of one method."""
    d = torch.tensor(list(distances), dtype=torch.float64)
    return {"episodes": len(d), "success_rate": float((d < threshold).double().mean()),
            "mean_final_distance": float(d.mean()), "median_final_distance": float(d.median())}


def evaluate_pusher(cfg: PlanEvalConfig, model: nn.Module | None = None, sim: PusherSim | None = None,
                    out_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Closed-loop "push object 0 to the goal" over ``cfg.episodes`` fixed episodes per method.

    Methods: ``random`` (uniform random actions), ``true_sim`` (CEM with the simulator as
    the model, costs from the true state), ``sim_frames`` (CEM with the simulator's
    rendered frames as a perfect video model, costs from the colour tracker: the learned
    path with perfect predictions), ``learned`` (CEM with ``model``, an action-conditioned
    SVG trained on ``pusher``). Returns ``{"config", "threshold", "methods": {name: summary + per-episode
    final distances + seconds}}``; with ``out_dir`` also writes ``results.json``,
    ``results.md`` and MP4s of the first ``cfg.render_episodes`` episodes.
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
    results: dict[str, Any] = {"config": _jsonable(asdict(cfg)), "threshold": threshold, "methods": {}}
    records: dict[str, list[EpisodeRecord]] = {name: [] for name in cfg.methods}
    for name, backend in backends.items():
        finals, seconds = [], []
        for i in range(cfg.episodes):
            state, goal = episode_start(sim, cfg.seed, i)
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + i)
            rec = run_mpc_episode(sim, state, goal, backend, cfg.cem, cfg.steps, cfg.replan_every, gen,
                                  record_plans=i < cfg.render_episodes, episode_seed=cfg.seed * 104_729 + i)
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
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(results_markdown(results) + "\n")
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


def render_episode(path: str | Path, records: dict[str, EpisodeRecord], threshold: float,
                   title: str = "", scale: int = 3, fps: float = 6, offsets: Sequence[int] = (1, 5, 10)) -> Path:
    """One MP4 of an episode under several methods, one row per method: the camera view
    (goal ring drawn, the object-0 distance under it) and, for planning methods, the
    future the plan being executed predicts ``offsets`` steps ahead of the current step."""
    import numpy as np

    from seqvae import render

    rows = []
    # planning methods first: their rows are the widest and carry the title
    ordered = sorted(records.items(), key=lambda item: not item[1].plan_frames)
    for i, (name, rec) in enumerate(ordered):
        dist = [float(d) for d in rec.distances]
        verdict = "reached" if dist[-1] < threshold else "missed"
        panels = [render.Panel(rec.frames, label=f"{name}: {verdict}", metrics={"d": dist})]
        if rec.plan_frames:
            horizon = rec.plan_frames[0].shape[0]
            panels += [render.Panel(_plan_view(rec, off), label=f"plan +{off}", context=0)
                       for off in offsets if off <= horizon]
        rows.append(render.compose(panels, scale=scale, title=title if i == 0 else None, frame_counter=i == 0))
    width = max(r.shape[2] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, 0), (0, width - r.shape[2]), (0, 0)), constant_values=255) for r in rows]
    return render.write_video(path, np.concatenate(rows, axis=1), fps=fps)


def _plan_view(rec: EpisodeRecord, offset: int) -> Tensor:
    """Per step ``t``: frame ``t + offset`` as predicted by the latest plan, ``[steps + 1, 3, H, W]``."""
    steps = rec.frames.shape[0]
    out = []
    for t in range(steps):
        j = max(i for i, s in enumerate(rec.plan_steps) if s <= t) if any(s <= t for s in rec.plan_steps) else 0
        plan = rec.plan_frames[j]
        k = min(t - rec.plan_steps[j] + offset - 1, plan.shape[0] - 1)
        out.append(plan[max(k, 0)])
    return torch.stack(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
