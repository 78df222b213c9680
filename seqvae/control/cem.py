"""The cross-entropy method (CEM) over action sequences, the optimiser of visual MPC
(Finn & Levine 2017; Ebert et al. 2018): sample candidate action sequences, score their
predicted futures, refit the sampling distribution to the cheapest ("elite") ones.
Works with any ``predict_costs(actions[K, horizon, A]) -> costs[K]``."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CEMConfig:
    """Cross-entropy method over action sequences ``[horizon, A]``.

    Each iteration samples ``candidates`` sequences from a diagonal Gaussian (per time
    step and action dimension), clipped to ``[action_low, action_high]``, keeps the
    ``elites`` cheapest and refits mean and std to them:
    ``new = momentum · old + (1 − momentum) · elite statistic`` (std floored at
    ``min_std``). ``noise_smoothing`` β correlates the sampling noise in time
    (``ε_t = β ε_{t−1} + √(1 − β²) n_t``: smoother, more exploratory sequences).
    ``keep_elites``: the previous iteration's elites take the place of as many fresh
    samples, so the best cost found never gets worse by resampling; with
    ``rescore_kept_elites`` they are scored again (right for a noisy cost, which then gets a
    second opinion), else they keep the cost they were found with and only the fresh
    samples are scored (right when a plan's cost does not change between the iterations of
    one call: a deterministic model, or a stochastic one that scores every iteration with
    the same latents, e.g. :class:`~seqvae.control.planner.VideoModelPlanner` with
    ``redraw_latents=False``; it saves ``elites`` rollouts per iteration after the first).

    Two settings of iCEM (Pinneri et al. 2020, "Sample-efficient cross-entropy method for
    real-time planning") spend fewer rollouts for the same plan quality:
    ``population_decay`` γ samples ``max(candidates · γ^−i, 2 · elites)`` candidates in
    iteration ``i`` (the distribution has narrowed, fewer samples suffice), and the elites of
    the previous planning call, shifted by the steps executed since (``init_elites`` of
    :func:`cem_plan`, kept by the MPC loop), compete in the first iteration in place of as
    many fresh samples, so a good plan found earlier is not lost to resampling (with
    ``carry_elites``; see :class:`seqvae.control.optimizers.PlanOptimizer`).
    """

    iterations: int = 3
    candidates: int = 200
    elites: int = 20
    horizon: int = 10
    init_std: float = 0.6
    min_std: float = 0.05
    momentum: float = 0.1
    noise_smoothing: float = 0.0
    keep_elites: bool = True
    rescore_kept_elites: bool = True
    population_decay: float = 1.0
    carry_elites: bool = False
    action_low: float = -1.0
    action_high: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.horizon < 1:
            raise ValueError("CEM needs iterations and horizon >= 1")
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
        if self.population_decay < 1:
            raise ValueError(f"population_decay must be at least 1 (1: every iteration samples `candidates`), "
                             f"got {self.population_decay}")

    def population(self, iteration: int) -> int:
        """Candidates scored in ``iteration`` (0-based): ``candidates`` decayed by
        ``population_decay`` per iteration, never below twice the elites (or ``candidates``)."""
        floor = min(self.candidates, 2 * self.elites)
        return max(floor, round(self.candidates / self.population_decay ** iteration))

    def evaluations(self) -> int:
        """Candidate sequences one :func:`cem_plan` call scores (the elites kept from one
        iteration to the next are not scored again without ``rescore_kept_elites``)."""
        return sum(self.scored_in(i) for i in range(self.iterations))

    def scored_in(self, iteration: int) -> int:
        """Candidates :func:`cem_plan` scores in ``iteration``: its population, less the
        elites kept from the iteration before when they keep their costs."""
        kept = self.elites if iteration > 0 and self.keep_elites and not self.rescore_kept_elites else 0
        return self.population(iteration) - kept


@dataclass
class CEMInfo:
    """What happened inside one :func:`cem_plan` call."""

    best_cost: float                 # cost of the returned plan (as evaluated)
    mean: Tensor                     # [horizon, A] final sampling mean
    std: Tensor                      # [horizon, A] final sampling std
    best_per_iteration: list[float]  # lowest cost seen in each iteration
    elite_mean_per_iteration: list[float]
    evaluations: int                 # candidate sequences scored in total
    elites: Tensor | None = None     # [elites, horizon, A] the last iteration's elites, cheapest first


def start_mean(init_mean: Tensor | None, horizon: int, action_dim: int, low: float, high: float,
               device: torch.device) -> Tensor:
    """The sampling mean an optimizer starts from: ``init_mean [horizon, A]`` (e.g. the
    previous plan shifted) clipped to the box, or the middle of the box."""
    if init_mean is None:
        return torch.full((horizon, action_dim), 0.5 * (low + high), device=device)
    if tuple(init_mean.shape) != (horizon, action_dim):
        raise ValueError(f"init_mean must be [horizon={horizon}, A={action_dim}], got {tuple(init_mean.shape)}")
    return init_mean.detach().to(device, torch.float32).clamp(low, high)


def start_elites(init_elites: Tensor | None, horizon: int, action_dim: int, low: float, high: float,
                 device: torch.device, population: int) -> Tensor | None:
    """``init_elites [E, horizon, A]`` checked and clipped to the box (None stays None); at
    most ``population - 1`` of them (the cheapest first), so that fresh samples remain."""
    if init_elites is None:
        return None
    if init_elites.dim() != 3 or tuple(init_elites.shape[1:]) != (horizon, action_dim):
        raise ValueError(f"init_elites must be [E, horizon={horizon}, A={action_dim}], "
                         f"got {tuple(init_elites.shape)}")
    return init_elites[: population - 1].detach().to(device, torch.float32).clamp(low, high)


def scored(predict_costs: Callable[[Tensor], Tensor], candidates: Tensor) -> Tensor:
    """``predict_costs(candidates)`` checked to be one cost per candidate, float32 on the
    candidates' device, NaN counted as +inf."""
    k = candidates.shape[0]
    costs = predict_costs(candidates)
    if not isinstance(costs, Tensor) or costs.shape != (k,):
        got = tuple(costs.shape) if isinstance(costs, Tensor) else type(costs).__name__
        raise ValueError(f"predict_costs must return costs [K={k}], got {got}")
    return torch.nan_to_num(costs.detach().float().to(candidates.device), nan=math.inf)


def cem_plan(predict_costs: Callable[[Tensor], Tensor], action_dim: int, cfg: CEMConfig,
             generator: torch.Generator, init_mean: Tensor | None = None,
             init_elites: Tensor | None = None) -> tuple[Tensor, CEMInfo]:
    """Minimise ``predict_costs`` over action sequences with the cross-entropy method.

    Args:
        predict_costs: ``actions[K, horizon, A] -> costs[K]`` (lower is better; NaN
            counts as +inf).
        action_dim: ``A``.
        cfg: the CEM settings (:class:`CEMConfig`).
        generator: source of the candidates' noise; candidates live on its device.
        init_mean: ``[horizon, A]`` starting mean (e.g. the previous plan shifted by the
            steps executed since); default the middle of the action box.
        init_elites: ``[E, horizon, A]`` candidates scored in the first iteration in place of
            as many fresh samples (e.g. the previous call's elites, shifted like the mean);
            at most the first iteration's population less one.
    Returns:
        ``(best_actions [horizon, A], info)``: the cheapest candidate evaluated (within the
        bounds) and a :class:`CEMInfo`.
    """
    device = generator.device
    h, a = cfg.horizon, action_dim
    low, high = cfg.action_low, cfg.action_high
    mean = start_mean(init_mean, h, a, low, high, device)
    std = torch.full((h, a), cfg.init_std, device=device)
    best, best_cost = mean.clone(), math.inf
    elites = start_elites(init_elites, h, a, low, high, device, cfg.population(0))
    elite_costs = torch.empty(0, device=device)                     # the elites' costs (once scored)
    best_per_iter, elite_mean_per_iter = [], []
    beta = cfg.noise_smoothing
    for i in range(cfg.iterations):
        k = cfg.population(i)
        eps = torch.randn(k, h, a, generator=generator, device=device)
        if beta > 0:
            for t in range(1, h):
                eps[:, t] = beta * eps[:, t - 1] + math.sqrt(1 - beta * beta) * eps[:, t]
        cand = (mean + std * eps).clamp(low, high)                                  # [K, H, A]
        if elites is not None and (i == 0 or cfg.keep_elites):   # carried in, or kept from the last iteration
            cand[: elites.shape[0]] = elites
        if i > 0 and cfg.keep_elites and not cfg.rescore_kept_elites:   # kept elites keep their costs
            costs = torch.cat([elite_costs, scored(predict_costs, cand[elites.shape[0]:])])
        else:
            costs = scored(predict_costs, cand)
        order = torch.argsort(costs, stable=True)
        elites, elite_costs = cand[order[: cfg.elites]], costs[order[: cfg.elites]]
        if float(costs[order[0]]) < best_cost:
            best_cost, best = float(costs[order[0]]), cand[order[0]].clone()
        best_per_iter.append(float(costs[order[0]]))
        elite_mean_per_iter.append(float(costs[order[: cfg.elites]].mean()))
        m = cfg.momentum
        mean = m * mean + (1 - m) * elites.mean(0)
        std = (m * std + (1 - m) * elites.std(0, unbiased=False)).clamp(min=cfg.min_std)
    info = CEMInfo(best_cost=best_cost, mean=mean, std=std, best_per_iteration=best_per_iter,
                   elite_mean_per_iteration=elite_mean_per_iter, evaluations=cfg.evaluations(), elites=elites)
    return best.clamp(low, high), info
