"""Model-predictive path integral control (MPPI) over action sequences, in the form visual
MPC benchmarks use it (VP2, Tian et al. 2023: 200 samples, horizon 10, correlated noise;
the filtered noise and cost weighting of PDDM, Nagabandi et al. 2019): sample sequences
around the current mean with time-correlated noise, weight each by ``exp(−(cost −
min cost) / temperature)``, and move the mean to the weighted average. Works with any
``predict_costs(actions[K, horizon, A]) -> costs[K]``, like :func:`seqvae.control.cem.cem_plan`."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae.control.cem import scored, start_mean


@dataclass
class MPPIConfig:
    """MPPI over action sequences ``[horizon, A]`` (see the module).

    Noise ``n_t ~ N(0, std²)`` is filtered in time, ``u_t = β·u_{t−1} + (1 − β)·n_t``
    (``noise_smoothing`` β): smooth sequences that explore further than white noise.
    ``temperature`` sets how sharply the weights favour the cheapest samples, in the cost's
    own units (smaller: closer to taking the best sample).
    """

    iterations: int = 1
    samples: int = 200
    horizon: int = 10
    std: float = 0.5
    noise_smoothing: float = 0.5
    temperature: float = 0.05
    action_low: float = -1.0
    action_high: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.horizon < 1 or self.samples < 2:
            raise ValueError("MPPI needs iterations >= 1, horizon >= 1 and samples >= 2")
        if self.std <= 0 or self.temperature <= 0:
            raise ValueError("MPPI needs a positive std and temperature")
        if not 0 <= self.noise_smoothing < 1:
            raise ValueError("noise_smoothing must lie in [0, 1)")
        if not self.action_low < self.action_high:
            raise ValueError(f"need action_low < action_high, got {self.action_low}, {self.action_high}")


@dataclass
class MPPIInfo:
    """What happened inside one :func:`mppi_plan` call."""

    best_cost: float                 # the cheapest sample's cost (the plan itself is their weighted mean)
    best_per_iteration: list[float]
    effective_samples: list[float]   # 1 / Σ w² per iteration: how many samples the mean really averages
    evaluations: int


def mppi_plan(predict_costs: Callable[[Tensor], Tensor], action_dim: int, cfg: MPPIConfig,
              generator: torch.Generator, init_mean: Tensor | None = None) -> tuple[Tensor, MPPIInfo]:
    """Minimise ``predict_costs`` over action sequences with MPPI.

    Args:
        predict_costs: ``actions[K, horizon, A] -> costs[K]`` (lower is better; NaN counts as +inf).
        action_dim: ``A``.
        cfg: the MPPI settings (:class:`MPPIConfig`).
        generator: source of the noise; samples live on its device.
        init_mean: ``[horizon, A]`` starting mean (e.g. the previous plan shifted); default
            the middle of the action box.
    Returns:
        ``(plan [horizon, A], info)``: the cost-weighted mean of the last iteration's samples
        (within the bounds) and an :class:`MPPIInfo`.
    """
    device = generator.device
    h, a, k = cfg.horizon, action_dim, cfg.samples
    low, high = cfg.action_low, cfg.action_high
    mean = start_mean(init_mean, h, a, low, high, device)
    beta = cfg.noise_smoothing
    best_per_iter, effective, best_cost = [], [], math.inf
    for _ in range(cfg.iterations):
        white = cfg.std * torch.randn(k, h, a, generator=generator, device=device)
        noise = torch.empty_like(white)
        noise[:, 0] = white[:, 0]
        for t in range(1, h):
            noise[:, t] = beta * noise[:, t - 1] + (1 - beta) * white[:, t]
        samples = (mean + noise).clamp(low, high)                                  # [K, H, A]
        samples[0] = mean                                                          # the current mean competes too
        costs = scored(predict_costs, samples)
        lowest = float(costs.min())
        if math.isinf(lowest):   # nothing scored: the mean stays where it was
            best_per_iter.append(lowest)
            effective.append(0.0)
            continue
        weights = torch.softmax(-(costs - lowest) / cfg.temperature, dim=0)        # [K]
        mean = torch.einsum("k,kha->ha", weights, samples)
        best_per_iter.append(lowest)
        effective.append(float(1.0 / (weights ** 2).sum()))
        best_cost = min(best_cost, lowest)
    info = MPPIInfo(best_cost=best_cost, best_per_iteration=best_per_iter, effective_samples=effective,
                    evaluations=cfg.iterations * k)
    return mean.clamp(low, high), info
