"""The sampling optimizers MPC can plan with, behind one call: CEM
(:mod:`seqvae.control.cem`) or MPPI (:mod:`seqvae.control.mppi`), chosen by name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae.control.cem import CEMConfig, cem_plan
from seqvae.control.mppi import MPPIConfig, mppi_plan

OPTIMIZERS = ("cem", "mppi")


@dataclass(frozen=True)
class PlanOptimizer:
    """One optimizer with its settings: ``optimize(costs, action_dim, generator, init)``
    returns ``(plan [horizon, A], cost of the best candidate scored)``."""

    name: str
    settings: CEMConfig | MPPIConfig

    @classmethod
    def choose(cls, name: str, cem: CEMConfig | None = None, mppi: MPPIConfig | None = None) -> "PlanOptimizer":
        """``name`` (``cem`` | ``mppi``) with its settings (defaults when None)."""
        if name == "cem":
            return cls("cem", cem or CEMConfig())
        if name == "mppi":
            return cls("mppi", mppi or MPPIConfig())
        raise ValueError(f"the planning optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")

    @property
    def horizon(self) -> int:
        return self.settings.horizon

    @property
    def bounds(self) -> tuple[float, float]:
        return self.settings.action_low, self.settings.action_high

    def optimize(self, predict_costs: Callable[[Tensor], Tensor], action_dim: int, generator: torch.Generator,
                 init_mean: Tensor | None = None) -> tuple[Tensor, float]:
        if self.name == "cem":
            plan, info = cem_plan(predict_costs, action_dim, self.settings, generator, init_mean=init_mean)
        else:
            plan, info = mppi_plan(predict_costs, action_dim, self.settings, generator, init_mean=init_mean)
        return plan, info.best_cost

    def describe(self) -> str:
        """The settings in words (as model cards state them)."""
        s = self.settings
        if self.name == "cem":
            return f"CEM {s.iterations} × {s.candidates} candidates, {s.elites} elites"
        return (f"MPPI {s.iterations} × {s.samples} samples, noise std {s.std:g} smoothed by {s.noise_smoothing:g}, "
                f"temperature {s.temperature:g}")
