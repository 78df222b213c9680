"""The sampling optimizers MPC can plan with, behind one call: CEM
(:mod:`seqvae.control.cem`) or MPPI (:mod:`seqvae.control.mppi`), chosen by name, each warm
started from the previous plan (:meth:`PlanOptimizer.optimize`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae.control.cem import CEMConfig, cem_plan
from seqvae.control.mppi import MPPIConfig, mppi_plan

OPTIMIZERS = ("cem", "mppi")


@dataclass
class Planned:
    """What one planning call found."""

    actions: Tensor                  # [horizon, A] the plan
    best_cost: float                 # the cheapest candidate's cost (as scored)
    elites: Tensor | None = None     # [E, horizon, A] CEM's last elites, cheapest first (None: MPPI)

    def shifted(self, steps: int) -> tuple[Tensor, Tensor | None]:
        """The plan and the elites with their first ``steps`` actions executed: the rest,
        padded with zero actions at the end (where the next call starts from)."""
        def shift(x: Tensor) -> Tensor:
            return torch.cat([x[..., steps:, :], x.new_zeros(*x.shape[:-2], steps, x.shape[-1])], dim=-2)

        return shift(self.actions), None if self.elites is None else shift(self.elites)


@dataclass(frozen=True)
class PlanOptimizer:
    """One optimizer with its settings: ``optimize(costs, action_dim, generator, previous,
    executed)`` returns a :class:`Planned` (the plan ``[horizon, A]`` and its cost)."""

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
                 previous: Planned | None = None, executed: int = 0) -> Planned:
        """Plan ``horizon`` actions minimising ``predict_costs``. With ``previous`` (the last
        call's result, of which ``executed`` actions have been taken since) the search starts
        from what is left of that plan, and CEM with ``carry_elites`` also scores what is left
        of its elites (iCEM's shifted elites)."""
        init_mean = init_elites = None
        if previous is not None:
            init_mean, init_elites = previous.shifted(executed)
        if self.name == "cem":
            carried = init_elites if self.settings.carry_elites else None
            plan, info = cem_plan(predict_costs, action_dim, self.settings, generator, init_mean=init_mean,
                                  init_elites=carried)
            return Planned(plan, info.best_cost, info.elites)
        plan, info = mppi_plan(predict_costs, action_dim, self.settings, generator, init_mean=init_mean)
        return Planned(plan, info.best_cost)

    def describe(self) -> str:
        """The settings in words (as model cards state them)."""
        s = self.settings
        if self.name == "cem":
            sizes = " + ".join(str(s.population(i)) for i in range(s.iterations))
            counts = f"{s.iterations} × {s.candidates}" if s.population_decay == 1 else sizes
            carried = ", elites carried to the next plan" if s.carry_elites else ""
            smooth = f", noise smoothed by {s.noise_smoothing:g}" if s.noise_smoothing else ""
            kept = ", kept elites not scored again" if s.keep_elites and not s.rescore_kept_elites else ""
            return f"CEM {counts} candidates, {s.elites} elites{smooth}{carried}{kept}"
        return (f"MPPI {s.iterations} × {s.samples} samples, noise std {s.std:g} smoothed by {s.noise_smoothing:g}, "
                f"temperature {s.temperature:g}")
